"""Making untrusted strings storable in PostgreSQL without losing them.

Caller numbers and names come from the network and are never trusted. Python
strings can hold two things a PostgreSQL ``text`` (or ``jsonb``) value cannot:

- ``NUL`` (U+0000): PostgreSQL text is NUL-terminated internally;
- lone surrogates (U+D800..U+DFFF): what ``surrogateescape`` decoding of bad
  UTF-8 produces, and what a JSON ``"\\udcff"`` escape yields.

Everything else (quotes, SQL, other control characters, any length) is stored
exactly as given; every query is parameterised, so content is never SQL.

``storable(s)`` returns the text with those characters replaced by U+FFFD and,
only when something had to be replaced, the original as bytes (``raw_bytes``),
so the evidence is kept bit-exact in a ``bytea`` column beside the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["has_unstorable", "raw_bytes", "storable", "storable_detail", "storable_json"]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unstorable(s: str) -> bool:
    """True if ``s`` holds NUL or a lone surrogate."""
    return _UNSTORABLE.search(s) is not None


def _join_surrogate_pairs(s: str) -> str:
    # "\ud83d\ude00" as two code points is really one character; join such
    # pairs first so only truly lone surrogates are replaced.
    try:
        return s.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return s


def raw_bytes(s: str) -> bytes:
    """The bytes ``s`` most likely came from.

    ``surrogateescape`` maps U+DC80..U+DCFF back to the original undecodable
    bytes; any other lone surrogate is kept as its (ill-formed) UTF-8 form.
    """
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def storable(s: str) -> tuple[str, bytes | None]:
    """``(text PostgreSQL accepts, original bytes if the text had to change)``."""
    if not has_unstorable(s):
        return s, None
    joined = _join_surrogate_pairs(s)
    return _UNSTORABLE.sub("\ufffd", joined), raw_bytes(s)


def storable_text(s: str) -> str:
    """Just the storable text (for free-form detail where raw bytes do not matter)."""
    return storable(s)[0]


def storable_detail(detail: Mapping[str, object]) -> dict[str, object]:
    """A copy of a JSON-safe mapping whose strings (keys too) are all storable."""
    return {storable_text(k): _storable_value(v) for k, v in detail.items()}


def storable_json(v: object) -> object:
    """A copy of any JSON document whose strings (keys too) are all storable."""
    return _storable_value(v)


def _storable_value(v: object) -> object:
    if isinstance(v, str):
        return storable_text(v)
    if isinstance(v, Mapping):
        return storable_detail(v)
    if isinstance(v, list | tuple):
        return [_storable_value(x) for x in v]
    return v
