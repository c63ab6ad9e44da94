"""Outbox operations: what the service asks the incident store to record.

Each op is a small frozen dataclass that checks its own fields when built, so
a malformed value is the *caller's* error, raised at ``Outbox.append`` time in
the service, never a surprise deep in the relay. Ops carry no op id: the outbox
gives each one its sequence number when it is appended.

Ops are stored in the outbox as ``(kind, JSON)``. ``json.dumps`` escapes
everything to ASCII, so untrusted caller strings (lone surrogates included)
survive the round trip unchanged; making them storable in PostgreSQL happens
only when the op is applied (see ``_text``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Literal, TypeAlias

from ._text import has_unstorable

__all__ = [
    "AUDIT_OUTCOMES",
    "AddCallbackEntry",
    "AppendAudit",
    "AppendTimeline",
    "CloseCall",
    "DetailValue",
    "Op",
    "OpenIncident",
    "RegisterRecording",
    "ResolveCallbackEntry",
    "decode_op",
    "encode_op",
]

DetailValue: TypeAlias = str | int | float | bool

# 1970-01-01 .. 9999-12-31: what both Python datetimes and PostgreSQL hold.
_MAX_EPOCH = 253402300799.0
_STAGE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_RAW_HEADER = 8192  # bytes of one raw SIP header (the column's CHECK too)
# Fields held as bytes: base64 in the outbox's JSON.
_BYTES_FIELDS = ("from_header_raw", "pai_header_raw")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_call_id(value: object) -> None:
    _require(isinstance(value, str), "call_id must be a string")
    assert isinstance(value, str)
    _require(0 < len(value) <= 128, "call_id must be 1..128 chars")
    _require(value.isprintable() and " " not in value, "call_id must be printable, no spaces")


def _check_epoch(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    _require(
        isinstance(value, int | float) and not isinstance(value, bool),
        f"{name} must be UNIX epoch seconds (a number)",
    )
    assert isinstance(value, int | float)
    _require(math.isfinite(value) and 0 <= value <= _MAX_EPOCH, f"{name} out of range: {value}")


def _check_str(name: str, value: object, max_len: int | None = None) -> None:
    _require(isinstance(value, str), f"{name} must be a string")
    assert isinstance(value, str)
    if max_len is not None:
        _require(len(value) <= max_len, f"{name} longer than {max_len} chars")


def _check_detail(detail: object) -> None:
    _require(isinstance(detail, Mapping), "detail must be a mapping")
    assert isinstance(detail, Mapping)
    for k, v in detail.items():
        _require(isinstance(k, str), "detail keys must be strings")
        _require(
            isinstance(v, str | int | float | bool), f"detail[{k!r}] must be str/int/float/bool"
        )
        if isinstance(v, float):
            _require(math.isfinite(v), f"detail[{k!r}] must be finite")


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """A call reached the system: open its incident (or attach the call to an
    existing incident when ``incident_id`` is already known, e.g. a mass event).

    Caller strings are stored verbatim, untrusted and unlimited in length.
    """

    kind: ClassVar[str] = "open_incident"

    call_id: str
    incident_id: uuid.UUID
    arrived_at: float
    caller_number: str = ""
    caller_name: str = ""
    pai: str = ""
    trunk: str = ""
    queue: str = ""
    language: str = ""
    # Found again by a restarted service: open the incident only if no run
    # did before (then with its 'arrived' timeline entry), never twice.
    recovered: bool = False
    # The From / P-Asserted-Identity headers' exact bytes (evidence beside the
    # cleaned text above); stored base64 in the outbox's JSON.
    from_header_raw: bytes = b""
    pai_header_raw: bytes = b""

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        _require(isinstance(self.incident_id, uuid.UUID), "incident_id must be a UUID")
        _require(isinstance(self.recovered, bool), "recovered must be a bool")
        _check_epoch("arrived_at", self.arrived_at)
        for name in ("caller_number", "caller_name", "pai"):
            _check_str(name, getattr(self, name))
        _check_str("trunk", self.trunk, 256)
        _check_str("queue", self.queue, 128)
        _check_str("language", self.language, 35)  # longest BCP 47 tag in practice
        for name in ("from_header_raw", "pai_header_raw"):
            raw = getattr(self, name)
            _require(isinstance(raw, bytes), f"{name} must be bytes")
            _require(len(raw) <= _MAX_RAW_HEADER, f"{name} longer than {_MAX_RAW_HEADER} bytes")

    @property
    def best_number(self) -> str:
        """PAI is network-asserted, so it wins over the From number."""
        return self.pai or self.caller_number


@dataclass(frozen=True, slots=True)
class AppendTimeline:
    """One timeline entry of a call (``stage`` is a ``CallStage`` value or any
    lower_snake_case word). ``detail`` holds flat JSON-safe values."""

    kind: ClassVar[str] = "append_timeline"

    call_id: str
    stage: str
    at: float
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        if isinstance(self.stage, Enum):  # CallStage is a str Enum: keep the plain value
            object.__setattr__(self, "stage", str(self.stage.value))
        _require(
            isinstance(self.stage, str) and _STAGE.match(self.stage) is not None,
            f"stage must be lower_snake_case, 1..64 chars: {self.stage!r}",
        )
        _check_epoch("at", self.at)
        _check_detail(self.detail)
        object.__setattr__(self, "detail", dict(self.detail))


@dataclass(frozen=True, slots=True)
class RegisterRecording:
    """A finished recording file with its checksum (see ``describe_recording``)."""

    kind: ClassVar[str] = "register_recording"

    call_id: str
    path: str
    started_at: float
    ended_at: float | None
    duration_s: float | None
    size_bytes: int
    sha256: str
    # The file holds no audio (a WAV header only): registered, marked as such.
    empty: bool = False

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        _check_str("path", self.path, 4096)
        _require(bool(self.path) and not has_unstorable(self.path), "path must be non-empty UTF-8")
        _check_epoch("started_at", self.started_at)
        _check_epoch("ended_at", self.ended_at, optional=True)
        if self.duration_s is not None:
            _require(
                isinstance(self.duration_s, int | float)
                and math.isfinite(self.duration_s)
                and self.duration_s >= 0,
                "duration_s must be a finite number >= 0",
            )
        _require(
            isinstance(self.size_bytes, int)
            and not isinstance(self.size_bytes, bool)
            and self.size_bytes >= 0,
            "size_bytes must be an int >= 0",
        )
        _require(
            isinstance(self.sha256, str) and _SHA256.match(self.sha256) is not None,
            "sha256 must be 64 lowercase hex digits",
        )
        _require(isinstance(self.empty, bool), "empty must be a bool")


@dataclass(frozen=True, slots=True)
class AddCallbackEntry:
    """An abandoned caller the centre must call back (the core's ``CallbackEntry``)."""

    kind: ClassVar[str] = "add_callback"

    call_id: str
    number: str
    arrived_at: float
    abandoned_at: float
    queue: str
    where: Literal["waiting", "ringing"]

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        _check_str("number", self.number)
        _check_epoch("arrived_at", self.arrived_at)
        _check_epoch("abandoned_at", self.abandoned_at)
        _check_str("queue", self.queue, 128)
        _require(self.where in ("waiting", "ringing"), "where must be 'waiting' or 'ringing'")


RESOLUTIONS = ("called_back", "called_again", "unreachable", "not_needed")


@dataclass(frozen=True, slots=True)
class ResolveCallbackEntry:
    """A pending callback was dealt with (the core's ``ResolveCallback``):
    how (``resolution``), by whom (an audit name, never a secret), when."""

    kind: ClassVar[str] = "resolve_callback"

    call_id: str
    resolution: str
    resolved_by: str
    resolved_at: float
    note: str = ""

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        if isinstance(self.resolution, Enum):  # core.CallbackResolution: keep the plain value
            object.__setattr__(self, "resolution", str(self.resolution.value))
        _require(self.resolution in RESOLUTIONS, f"resolution must be one of {RESOLUTIONS}")
        _check_str("resolved_by", self.resolved_by, 128)
        _require(bool(self.resolved_by), "resolved_by must not be empty")
        _check_epoch("resolved_at", self.resolved_at)
        _check_str("note", self.note, 500)


@dataclass(frozen=True, slots=True)
class CloseCall:
    """The call is over: when, who hung up (caller/taker/system) and the cause."""

    kind: ClassVar[str] = "close_call"

    call_id: str
    ended_at: float
    hangup_side: str = ""
    hangup_cause: str = ""

    def __post_init__(self) -> None:
        _check_call_id(self.call_id)
        _check_epoch("ended_at", self.ended_at)
        _check_str("hangup_side", self.hangup_side, 32)
        _check_str("hangup_cause", self.hangup_cause, 64)


AUDIT_OUTCOMES = ("accepted", "refused", "failed")
# A configuration document (the whole queue list) fits with room to spare; an
# audit row is never the place for bulk data.
_MAX_AUDIT_JSON = 256 * 1024


def _check_json(name: str, value: object) -> None:
    """``value`` is None or a JSON document (objects with string keys, finite numbers)."""
    if value is None:
        return
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON (string keys, finite numbers): {exc}") from None
    _require(len(text) <= _MAX_AUDIT_JSON, f"{name} longer than {_MAX_AUDIT_JSON} chars as JSON")


@dataclass(frozen=True, slots=True)
class AppendAudit:
    """One action somebody took (or tried to take): the audit row (migration 0008).

    ``who`` names the actor for humans (a username, ``role:<fingerprint>`` for a
    configuration token, ``cli:<os user>``, ``taker:<id>`` for a handset);
    ``user_id``/``username`` are empty unless a signed-in user acted.
    ``before``/``after`` are JSON documents (or None)."""

    kind: ClassVar[str] = "append_audit"

    at: float
    who: str
    role: str
    action: str
    target: str = ""
    outcome: str = "accepted"
    status: int | None = None
    reason: str = ""
    user_id: str = ""
    username: str = ""
    source: str = ""
    request_id: str = ""
    before: object = None
    after: object = None

    def __post_init__(self) -> None:
        _check_epoch("at", self.at)
        for name, max_len in (
            ("who", 256),
            ("role", 64),
            ("action", 128),
            ("target", 512),
            ("reason", 2000),
            ("user_id", 128),
            ("username", 256),
            ("source", 256),
            ("request_id", 128),
        ):
            _check_str(name, getattr(self, name), max_len)
        _require(bool(self.who), "who must not be empty")
        _require(bool(self.action), "action must not be empty")
        _require(self.outcome in AUDIT_OUTCOMES, f"outcome must be one of {AUDIT_OUTCOMES}")
        _require(
            self.status is None
            or (isinstance(self.status, int) and not isinstance(self.status, bool)),
            "status must be an int or None",
        )
        _check_json("before", self.before)
        _check_json("after", self.after)

    @property
    def call_id(self) -> None:
        """An audit row belongs to no call (the relay logs ops by call)."""
        return None


Op: TypeAlias = (
    OpenIncident
    | AppendTimeline
    | RegisterRecording
    | AddCallbackEntry
    | ResolveCallbackEntry
    | CloseCall
    | AppendAudit
)

_KINDS: dict[str, type[Op]] = {
    cls.kind: cls
    for cls in (
        OpenIncident,
        AppendTimeline,
        RegisterRecording,
        AddCallbackEntry,
        ResolveCallbackEntry,
        CloseCall,
        AppendAudit,
    )
}


def encode_op(op: Op) -> tuple[str, str]:
    """``(kind, JSON payload)`` for the outbox. ASCII-only, lossless for any str."""
    payload: dict[str, object] = {}
    for f in dataclasses.fields(op):
        value = getattr(op, f.name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        payload[f.name] = value
    return op.kind, json.dumps(payload, ensure_ascii=True, allow_nan=False, sort_keys=True)


def decode_op(kind: str, payload: str) -> Op:
    """The op stored by ``encode_op``. Raises ``ValueError`` if it cannot be
    rebuilt (unknown kind from a newer version, corrupt payload)."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown op kind {kind!r}")
    try:
        data = json.loads(payload)
        _require(isinstance(data, dict), "payload is not a JSON object")
        if cls is OpenIncident and "incident_id" in data:
            data["incident_id"] = uuid.UUID(str(data["incident_id"]))
        for name in _BYTES_FIELDS:
            if cls is OpenIncident and name in data:
                data[name] = base64.b64decode(str(data[name]), validate=True)
        return cls(**data)
    except (TypeError, json.JSONDecodeError, binascii.Error) as exc:
        raise ValueError(f"corrupt {kind} payload: {exc}") from exc
