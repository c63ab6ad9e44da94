"""The audit of every action: what routes call, and what an audit row says.

Theory of operation
-------------------
Every state-changing route declares its action and target
(``routes.RouteTable``: ``audited=("taker.login", "taker:{taker_id}")``), and
the route table wraps everything after authentication in ``audited``. The
wrapper lets validation and the handler run, then writes ONE ``AuditEntry``
from what came out: 2xx is ``accepted``; 4xx ``refused``, with the reason the
caller was told (a returned or raised RFC 9457 problem: its ``detail`` and
field errors), invalid input included; 5xx or any other exception ``failed``.
A request that never got past authentication or its role check (401/403)
names nobody it could be pinned on and writes nothing: the route table puts
the authenticated ``auth.Caller`` on the request (``request[CALLER]``) only
once it is allowed. A handler adds what only it knows with ``note(request,
before=..., after=..., target=...)`` (the queue list before and after a
change, the agency a dispatcher was added for).

The entry goes to the app's ``AuditSink``. In the service that is the durable
local outbox (``incidents.OutboxAuditSink``): ``write`` returns once the row
is fsynced locally, never waiting for PostgreSQL, and the relay carries it to
the ``audit`` table exactly once, whenever PostgreSQL is up. If even the local
write fails the action stands (it was taken already); the entry is logged at
error level in full so it is not lost.

The row carries the request's id (``problems.request_id``: the
``X-Request-ID`` header of the response, on every log line of the request).

This module imports no database code: the incident package depends on it,
not the other way round.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog
from aiohttp import web

from .adapters import problems
from .auth import Caller

__all__ = [
    "AUDIT",
    "CALLER",
    "AuditEntry",
    "AuditSink",
    "MemorySink",
    "Outcome",
    "audited",
    "command_line",
    "handset_feature",
    "install",
    "note",
    "record",
]

log = structlog.get_logger(__name__)

Outcome = Literal["accepted", "refused", "failed"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Where the route table leaves the authenticated caller of a request.
CALLER: web.RequestKey[Caller] = web.RequestKey("siaga_caller", Caller)
_NOTE: web.RequestKey[dict[str, Any]] = web.RequestKey("audit_note", dict)
_REASON_MAX = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action somebody took or tried to take (a row of the ``audit`` table)."""

    at: float
    who: str
    role: str
    action: str
    target: str = ""
    outcome: Outcome = "accepted"
    status: int | None = None
    reason: str = ""
    user_id: str = ""
    username: str = ""
    source: str = ""
    request_id: str = ""
    before: Any = None
    after: Any = None


class AuditSink(Protocol):
    """Where audit entries go. ``write`` returns once the entry is durable."""

    async def write(self, entry: AuditEntry) -> None: ...


@dataclass
class MemorySink:
    """Keeps entries in a list: for tests and apps built without a database."""

    entries: list[AuditEntry] = field(default_factory=list)

    async def write(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


AUDIT: web.AppKey[AuditSink] = web.AppKey("audit_sink", object)  # type: ignore[arg-type]


def install(app: web.Application, sink: AuditSink) -> None:
    """Give ``app`` its audit sink."""
    app[AUDIT] = sink


def note(
    request: web.Request,
    *,
    before: Any = None,
    after: Any = None,
    target: str | None = None,
    action: str | None = None,
) -> None:
    """What the route knows and the audit row should say (kept for ``audited``):
    the state before and after, and the exact target or action when the
    declaration could only name them roughly (a created item's name)."""
    noted: dict[str, Any] = request.get(_NOTE, {})
    if action is not None:
        noted["action"] = action
    if before is not None:
        noted["before"] = before
    if after is not None:
        noted["after"] = after
    if target is not None:
        noted["target"] = target
    request[_NOTE] = noted


async def record(
    request: web.Request,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    outcome: Outcome = "accepted",
    status: int | None = None,
    reason: str = "",
) -> AuditEntry | None:
    """Write one audit row for ``request``, naming its caller. None (and
    nothing written) when the request has no authenticated caller."""
    caller = request.get(CALLER)
    if caller is None:
        return None
    entry = AuditEntry(
        at=time.time(),
        who=caller.who,
        role=caller.role,
        action=action[:128],
        target=target[:512],
        outcome=outcome,
        status=status,
        reason=reason[:_REASON_MAX],
        user_id=caller.user_id,
        username=caller.username,
        source=request.remote or "",
        request_id=problems.request_id(request) or uuid.uuid4().hex,
        before=before,
        after=after,
    )
    await _write(request.app.get(AUDIT), entry)
    return entry


async def _write(sink: AuditSink | None, entry: AuditEntry) -> None:
    if sink is None:
        log.error("audit.no_sink", **_loggable(entry))
        return
    try:
        await sink.write(entry)
    except Exception as exc:  # noqa: BLE001 - the action stands; the log keeps the entry
        log.error("audit.write_failed", error=repr(exc)[:300], **_loggable(entry))  # noqa: TRY400


def _loggable(entry: AuditEntry) -> dict[str, Any]:
    return {
        "audit_" + name: getattr(entry, name)
        for name in AuditEntry.__slots__
        if name not in ("before", "after")
    }


def _fill(template: str, request: web.Request) -> str:
    """``template`` with ``{name}`` replaced by the route's path parameters."""
    try:
        return template.format_map(dict(request.match_info))
    except (KeyError, ValueError, IndexError):
        return template


def audited(action: str, target: str = "") -> Callable[[Handler], Handler]:
    """Decorator: write one audit row for every authenticated call of a route.

    ``action`` and ``target`` may name path parameters (``"taker.{action}"``,
    ``"taker:{taker_id}"``). The route table applies it (``audited=``), after auth."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except problems.Problem as exc:
                reason = _problem_reason(exc.detail, [e.as_json() for e in exc.errors])
                await _settle(request, action, target, exc.status, reason)
                raise
            except web.HTTPException as exc:
                await _settle(request, action, target, exc.status, exc.reason)
                raise
            except Exception as exc:
                await _settle(request, action, target, 500, f"{type(exc).__name__}")
                raise
            await _settle(request, action, target, response.status, _reason(response))
            return response

        return wrapped

    return wrap


async def _settle(request: web.Request, action: str, target: str, status: int, reason: str) -> None:
    noted: Mapping[str, Any] = request.get(_NOTE, {})
    outcome: Outcome = "accepted" if status < 400 else "refused" if status < 500 else "failed"
    await record(
        request,
        noted.get("action", _fill(action, request)),
        noted.get("target", _fill(target, request)),
        before=noted.get("before"),
        after=noted.get("after"),
        outcome=outcome,
        status=status,
        reason="" if outcome == "accepted" else reason,
    )


def _reason(response: web.StreamResponse) -> str:
    """What a returned refusal told the caller (a problem's ``detail`` and field errors)."""
    if response.status < 400 or not isinstance(response, web.Response) or not response.text:
        return ""
    try:
        data = json.loads(response.text)
    except ValueError:
        return response.text[:_REASON_MAX]
    if not isinstance(data, dict):
        return response.text[:_REASON_MAX]
    errors = data.get("errors")
    return _problem_reason(
        str(data.get("detail") or data.get("error") or data.get("title") or ""),
        errors if isinstance(errors, list) else [],
    )


def _problem_reason(detail: str, errors: list[Any]) -> str:
    """``detail``, then each invalid field as ``field: message``."""
    fields = [
        f"{e.get('field') or '(' + str(e.get('in', 'input')) + ')'}: {e.get('message', '')}"
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join([detail, *fields] if detail else fields)[:_REASON_MAX]


async def note_change(
    request: web.Request, action: str, target: str, before: Any, after: Any
) -> None:
    """The centre configuration's audit seam (``centre.AUDIT``): a change it
    made, noted for the route's ``audited`` row (which writes it once)."""
    note(request, action=action, target=target, before=before, after=after)


def sign_in(
    outcome: str,
    username: str,
    *,
    source: str,
    at: float,
    user_id: str = "",
    reason: str = "",
) -> AuditEntry:
    """The audit entry of a sign-in, a failed one, a lock-out, or a sign-out
    (``people``' ``on_sign_in`` hook). The person named is the one who tried."""
    accepted = outcome in ("signed_in", "signed_out")
    return AuditEntry(
        at=at,
        who=username or "(no username)",
        role="",
        action=f"session.{outcome}"[:128],
        target=f"user:{username}",
        outcome="accepted" if accepted else "refused",
        reason="" if accepted else (reason or outcome)[:_REASON_MAX],
        user_id=user_id,
        username=username if accepted else "",
        source=source,
        request_id=uuid.uuid4().hex,
    )


def handset_feature(taker_id: str, action: str, ok: bool, reason: str = "") -> AuditEntry:
    """The audit entry of a feature code dialled on a handset (``*11`` login...):
    the taker behind the handset is the actor."""
    return AuditEntry(
        at=time.time(),
        who=f"taker:{taker_id}" if taker_id else "handset:unknown",
        role="taker",
        action=f"taker.{action}"[:128],
        target=f"taker:{taker_id}" if taker_id else "",
        outcome="accepted" if ok else "refused",
        reason="" if ok else (reason or "refused")[:_REASON_MAX],
        source="handset",
        request_id=uuid.uuid4().hex,
    )


def command_line(
    action: str,
    target: str,
    *,
    outcome: Outcome = "accepted",
    reason: str = "",
    after: Any = None,
) -> AuditEntry:
    """The audit entry of a ``siaga-pbx`` command: the OS user running it is the actor."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid{os.getuid()}"
    return AuditEntry(
        at=time.time(),
        who=f"cli:{user}",
        role="cli",
        action=action,
        target=target,
        outcome=outcome,
        reason=reason[:_REASON_MAX],
        source=f"host:{socket.gethostname()}",
        request_id=uuid.uuid4().hex,
        after=after,
    )
