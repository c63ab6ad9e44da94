"""The agency directory the conference core works from.

Plain frozen dataclasses, checked where they are built, so that a bad row in
the database or a bad setting is refused before it reaches a live call.
``siaga_pbx.adapters.conference`` builds them from PostgreSQL (migration
0004) or from pydantic settings; the core receives new ones in
``DirectoryChanged``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A dispatcher's phone: a PJSIP endpoint of ours, never a dial string with a
# host or trunk in it (the API must not become a way to dial out).
ENDPOINT = re.compile(r"^PJSIP/[A-Za-z0-9_.-]{1,64}$")


class Role(StrEnum):
    """How a party takes part in a call."""

    TALK = "talk"  # in the call bridge, heard by everyone
    LISTEN = "listen"  # in the call bridge, muted: hears everyone, heard by nobody
    WHISPER = "whisper"  # on a snoop of the taker: hears the call, heard by the taker only


class SuperviseMode(StrEnum):
    LISTEN = "listen"  # spy on the caller's channel (both directions): hears everyone
    WHISPER = "whisper"  # spy + whisper on the taker's channel: heard by the taker only
    BARGE = "barge"  # joins the call bridge and talks


class RingStrategy(StrEnum):
    RINGALL = "ringall"  # all endpoints at once, first to answer joins
    ORDERED = "ordered"  # one after the other, ``ring_timeout_s`` each


@dataclass(frozen=True, slots=True)
class Agency:
    """One OPD: fire brigade, ambulance, police ... and how to reach its dispatchers."""

    code: str
    name: str
    endpoints: tuple[str, ...]
    digit: int | None = None  # taker keypad: *<digit> adds the agency
    strategy: RingStrategy = RingStrategy.RINGALL
    ring_timeout_s: float = 20.0
    fallback: str = ""  # the agency rung when nobody here answers
    role: Role = Role.TALK  # how its dispatcher joins by default
    mass_incident: bool = False  # rung by *0 (mass incident)

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"agency code {self.code!r}: 1..32 of a-z 0-9 _, a letter first")
        if not 0 < len(self.name) <= 100:
            raise ValueError(f"agency {self.code}: name must be 1..100 chars")
        if not self.endpoints:
            raise ValueError(f"agency {self.code}: at least one dispatcher endpoint")
        for e in self.endpoints:
            if not ENDPOINT.match(e):
                raise ValueError(f"agency {self.code}: endpoint {e!r} is not PJSIP/<name>")
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"agency {self.code}: an endpoint is listed twice")
        if self.digit is not None and not 1 <= self.digit <= 9:
            raise ValueError(f"agency {self.code}: keypad digit must be 1..9")
        if not 0 < self.ring_timeout_s <= 300:
            raise ValueError(f"agency {self.code}: ring_timeout_s must be in (0, 300]")
        if self.fallback == self.code:
            raise ValueError(f"agency {self.code}: cannot fall back to itself")


@dataclass(frozen=True, slots=True)
class AgencyDirectory:
    """Every agency, by code. Digits are unique; fallbacks name known agencies."""

    agencies: tuple[Agency, ...] = ()
    by_code: Mapping[str, Agency] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = [a.code for a in self.agencies]
        if len(set(codes)) != len(codes):
            raise ValueError("agency codes must be unique")
        digits = [a.digit for a in self.agencies if a.digit is not None]
        if len(set(digits)) != len(digits):
            raise ValueError("agency keypad digits must be unique")
        for a in self.agencies:
            if a.fallback and a.fallback not in codes:
                raise ValueError(f"agency {a.code}: fallback {a.fallback!r} is not an agency")
        object.__setattr__(self, "by_code", {a.code: a for a in self.agencies})

    def get(self, code: str) -> Agency | None:
        return self.by_code.get(code)

    def by_digit(self, digit: int) -> Agency | None:
        return next((a for a in self.agencies if a.digit == digit), None)

    def mass_incident(self) -> list[Agency]:
        return [a for a in self.agencies if a.mass_incident]
