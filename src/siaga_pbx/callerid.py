"""Parse caller identity from raw SIP header values (From, P-Asserted-Identity).

The values arrive from a cellular operator's trunk and are never trusted: they
may be malformed, enormous, carry control characters or quotes. Parsing never
raises; it returns what it could make out, cleaned for display and storage:
control characters become U+FFFD, lengths are capped, and a number keeps only
characters a dialable number may have.

The cleaned text is not the evidence. ARI delivers channel variables as JSON,
so Asterisk has already replaced invalid UTF-8 before we see ``SIAGA_FROM``;
the dialplan therefore also passes each header base64-encoded
(``SIAGA_FROM_B64``), and ``raw_header`` turns that back into the exact bytes
the network sent, which the incident keeps beside the text.
"""

from __future__ import annotations

import binascii
import re
import unicodedata

from .core import CallerIdentity

MAX_NAME = 2048
MAX_NUMBER = 32
_MAX_RAW = 8192
# The most raw header bytes kept per header. Asterisk's dialplan function
# buffers already cut a header near 4 KB; this bounds what a misbehaving
# channel variable can make us hold per waiting caller.
MAX_RAW_HEADER = 6144
_MAX_RAW_B64 = MAX_RAW_HEADER * 4 // 3
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
# [siaga-raw-header] escapes these three before encoding (see the dialplan).
_ESCAPED = re.compile(rb"%(25|28|29)")
_UNESCAPE = {b"25": b"%", b"28": b"(", b"29": b")"}

# name-addr: [display-name] <URI>  or addr-spec: URI  (RFC 3261 §20.10)
_NAME_ADDR = re.compile(
    r'^\s*(?:"(?P<qname>(?:[^"\\]|\\.)*)"|(?P<name>[^<"]*?))\s*<(?P<uri>[^>]*)>'
)
_URI_USER = re.compile(r"^(?:sips?|tel):(?P<user>[^@;?>]*)", re.IGNORECASE)
_DIALABLE = re.compile(r"[^0-9+*#]")


def clean_text(value: str, limit: int) -> str:
    """Printable text, at most ``limit`` characters; control chars -> U+FFFD."""
    out = []
    for ch in value[:limit]:
        if ch.isprintable():
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":
            out.append(" ")  # no-break and other spaces
        else:  # control, format, surrogate, unassigned, line/paragraph separators
            out.append("\ufffd")
    return "".join(out).strip()


def clean_number(value: str) -> str:
    """Only + digits * #, at most 32 of them."""
    return _DIALABLE.sub("", value)[:MAX_NUMBER]


def parse_header(raw: str) -> tuple[str, str]:
    """Return (display name, number) from a From or P-Asserted-Identity value.

    A PAI may list two identities (a sip: and a tel: URI) separated by a comma;
    the first that yields a number wins.
    """
    parsed = [_parse_one(part) for part in _split_identities(raw[:_MAX_RAW])]
    name = next((n for n, _ in parsed if n), "")
    number = next((num for _, num in parsed if num), "")
    return name, number


def _split_identities(raw: str) -> list[str]:
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(raw):
        if ch == '"' and (i == 0 or raw[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return [p for p in parts if p.strip()]


def _parse_one(part: str) -> tuple[str, str]:
    m = _NAME_ADDR.match(part)
    if m:
        name = m["qname"] if m["qname"] is not None else (m["name"] or "")
        name = re.sub(r"\\(.)", r"\1", name)
        uri = m["uri"]
    else:
        name, uri = "", part.strip().split(";", 1)[0]
    um = _URI_USER.match(uri.strip())
    number = clean_number(um["user"]) if um else ""
    return clean_text(name, MAX_NAME), number


def raw_header(b64: str) -> bytes:
    """The exact header bytes from the dialplan's copy (``SIAGA_*_B64``):
    base64 of the header with ``%``, ``(`` and ``)`` escaped as ``%25``,
    ``%28`` and ``%29`` ([siaga-raw-header] says why).

    Never raises. At most ``MAX_RAW_HEADER`` bytes; padding and anything that
    is not base64 are dropped, and a copy Asterisk cut short (its buffers hold
    about 4 KB) yields the bytes up to the cut rather than nothing.
    """
    data = _NOT_BASE64.sub(b"", b64[: _MAX_RAW_B64 + 64].encode("ascii", "ignore"))
    data = data[:_MAX_RAW_B64]
    whole = len(data) - len(data) % 4
    rest = data[whole:]  # a cut-short last quantum: 2 or 3 chars still hold bytes
    tail = rest + b"=" * (4 - len(rest)) if len(rest) >= 2 else b""
    try:
        escaped = binascii.a2b_base64(data[:whole] + tail)
    except binascii.Error:  # pragma: no cover - the input was cleaned above
        return b""
    return _ESCAPED.sub(lambda m: _UNESCAPE[m[1]], escaped)[:MAX_RAW_HEADER]


def identity(
    *,
    from_header: str,
    pai_header: str,
    channel_number: str,
    channel_name: str,
    from_b64: str = "",
    pai_b64: str = "",
) -> CallerIdentity:
    """Combine the raw headers with what Asterisk put on the channel.

    The channel's caller id is the fallback when the dialplan could not read the
    headers (the fallback path, or a non-PJSIP channel). ``from_b64`` and
    ``pai_b64`` are the dialplan's base64 copies: kept as the exact bytes.
    """
    from_name, from_number = parse_header(from_header) if from_header else ("", "")
    _pai_name, pai_number = parse_header(pai_header) if pai_header else ("", "")
    number = from_number or clean_number(channel_number)
    name = from_name or clean_text(channel_name, MAX_NAME)
    return CallerIdentity(
        number=number,
        name=name,
        pai=pai_number,
        from_raw=raw_header(from_b64),
        pai_raw=raw_header(pai_b64),
    )
