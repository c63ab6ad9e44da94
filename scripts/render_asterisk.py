#!/usr/bin/env python3
"""Render the Siaga 112 Asterisk configuration for one profile.

Usage: render_asterisk.py PROFILE OUTDIR
       render_asterisk.py --get PROFILE KEY

Every ``asterisk/*.conf`` is a plain Asterisk file with ``${VAR}`` placeholders. The values
come from ``asterisk/profiles/PROFILE.env`` and are substituted with ``string.Template``
in strict mode: a missing value is an error, never an empty string. A literal ``$`` in a
template is written ``$$``. The dialplan (``dialplan/*.conf``) uses Asterisk's own ``${}``
syntax, so it is copied verbatim into ``OUTDIR/dialplan/``; its per-profile values arrive as
``[globals]`` rendered from ``asterisk/extensions.conf``.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from string import Template

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO / "asterisk"
DIALPLAN_DIR = REPO / "dialplan"
PROFILE_DIR = TEMPLATE_DIR / "profiles"


class RenderError(Exception):
    """A profile or template problem that stops rendering."""


def load_profile(profile: str) -> dict[str, str]:
    """Read ``asterisk/profiles/<profile>.env`` (shell-compatible KEY=VALUE lines)."""
    path = PROFILE_DIR / f"{profile}.env"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.env"))
        raise RenderError(f"unknown profile {profile!r}: no {path} (known: {known})")
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        if not sep or not key.isidentifier():
            raise RenderError(f"{path}:{lineno}: expected KEY=VALUE, got {raw!r}")
        parts = shlex.split(rest, comments=True)
        values[key] = " ".join(parts)
    return with_derived(values)


def with_derived(values: dict[str, str]) -> dict[str, str]:
    """Add values computed from the profile (a contact line per handset AOR)."""
    out = dict(values)
    for key, value in values.items():
        if key.startswith("CONTACT_"):
            out[f"{key}_LINE"] = (
                f"contact={value}" if value else "; no static contact: the handset registers"
            )
    return out


def render_text(name: str, text: str, values: dict[str, str]) -> str:
    """Substitute ``values`` into one template, strictly."""
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise RenderError(f"{name}: no value for ${{{exc.args[0]}}} in the profile") from exc
    except ValueError as exc:
        raise RenderError(f"{name}: bad placeholder ({exc}); write a literal $ as $$") from exc


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def render(profile: str, outdir: Path) -> list[Path]:
    """Render every template of ``profile`` into ``outdir``; returns the files written."""
    values = load_profile(profile)
    written: list[Path] = []
    templates = sorted(TEMPLATE_DIR.glob("*.conf"))
    if not templates:
        raise RenderError(f"no templates in {TEMPLATE_DIR}")
    for tpl in templates:
        text = render_text(tpl.name, tpl.read_text(encoding="utf-8"), values)
        dest = outdir / tpl.name
        write_atomic(dest, text)
        written.append(dest)
    for conf in sorted(DIALPLAN_DIR.glob("*.conf")):
        dest = outdir / "dialplan" / conf.name
        write_atomic(dest, conf.read_text(encoding="utf-8"))
        written.append(dest)
    return written


def get_value(profile: str, key: str) -> str:
    """One value of a profile (for shell scripts)."""
    values = load_profile(profile)
    if key not in values:
        raise RenderError(f"profile {profile!r} has no {key}")
    return values[key]


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "--get":
            print(get_value(argv[1], argv[2]))
            return 0
        if len(argv) != 2:
            print(__doc__, file=sys.stderr)
            return 2
        written = render(argv[0], Path(argv[1]))
    except RenderError as exc:
        print(f"render_asterisk: {exc}", file=sys.stderr)
        return 1
    print(f"render_asterisk: {len(written)} files for profile {argv[0]} in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
