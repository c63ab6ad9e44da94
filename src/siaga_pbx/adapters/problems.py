"""Every HTTP error is an RFC 9457 problem (``application/problem+json``).

One shape for every route and every failure, the router's own included::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "the request is not valid", "instance": "/api/queues",
     "request_id": "3f0c...", "errors": [{"in": "body", "field": "queues.0.ring_timeout_s",
                                          "message": "Input should be greater than 0"}]}

- ``type`` is ``about:blank`` unless a route names a more specific problem; then ``title``
  is the HTTP status phrase (RFC 9457 section 4.2.1).
- ``instance`` is the request's path; ``request_id`` (an extension member) is the id the
  request is logged under and is also sent as the ``X-Request-ID`` response header.
- Validation failures, of a body, a query string or a path parameter, are always 422 with
  an ``errors`` list (``in``: ``body``, ``query`` or ``path``; ``field``: the dotted path,
  empty for the whole input; ``message``). A body that is not JSON at all is 400; one over
  the size limit 413.

Handlers ``raise Problem(...)`` (or return ``problem(...)``). ``middleware`` gives every
request its id (bound to structlog's context, so every log line of the request carries it),
turns a raised ``Problem`` into its response, aiohttp's own HTTP errors (the router's 404
and 405, 413 for a body too large) into problems, and any other exception into a logged
500 that says nothing about the internals. ``install`` adds it to an app, once.

This module knows only aiohttp, pydantic and structlog, so ``incidents`` can use it too.
"""

from __future__ import annotations

import contextvars
import http
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "CONTENT_TYPE",
    "FieldError",
    "Problem",
    "ProblemDetails",
    "from_validation",
    "install",
    "middleware",
    "problem",
    "request_id",
]

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/problem+json"
Where = Literal["body", "query", "path"]

_REQUEST_ID_HEADER = "X-Request-ID"
# A client's (or proxy's) own id is kept when it is short and plain; anything else is replaced.
_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_REQUEST_ID_KEY = web.RequestKey("siaga_request_id", str)
# The request being handled, so ``problem()`` can fill ``instance`` and ``request_id``
# without being handed the request (aiohttp runs each request in its own task).
_CURRENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "siaga_http_request", default=None
)


class FieldError(BaseModel):
    """One invalid input: where, which field (dotted path; empty for the whole input), why."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    in_: Where | None = Field(default=None, alias="in")
    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return self.model_dump(by_alias=True, exclude_none=True)


class ProblemDetails(BaseModel):
    """The body of every error answer (RFC 9457), as the OpenAPI document describes it."""

    model_config = ConfigDict(extra="forbid")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raise it from a handler: the middleware answers with it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Iterable[FieldError] = (),
        title: str | None = None,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = tuple(errors)
        self.title = title
        self.type = type_
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return problem(
            self.status,
            self.detail,
            errors=self.errors,
            title=self.title,
            type_=self.type,
            headers=self.headers,
        )


def problem(
    status: int,
    detail: str,
    *,
    errors: Iterable[FieldError] = (),
    title: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The ``application/problem+json`` response for ``status``."""
    current = _CURRENT.get()
    body: dict[str, object] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if current is not None:
        body["instance"], body["request_id"] = current
    listed = [e.as_json() for e in errors]
    if listed:
        body["errors"] = listed
    return web.json_response(body, status=status, headers=headers, content_type=CONTENT_TYPE)


def from_validation(
    exc: ValidationError, where: Where, detail: str = "the request is not valid"
) -> Problem:
    """A 422 naming every invalid field of a pydantic failure."""
    errors = [
        FieldError(in_=where, field=".".join(str(p) for p in err["loc"]), message=str(err["msg"]))
        for err in exc.errors(include_url=False)
    ]
    return Problem(422, detail, errors=errors)


def request_id(request: web.Request) -> str:
    """The id ``request`` is logged under (set by the middleware)."""
    found: str = request.get(_REQUEST_ID_KEY, "")
    return found


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    given = request.headers.get(_REQUEST_ID_HEADER, "")
    rid = given if _GOOD_REQUEST_ID.match(given) else uuid.uuid4().hex
    request[_REQUEST_ID_KEY] = rid
    token = _CURRENT.set((request.path, rid))
    try:
        with structlog.contextvars.bound_contextvars(request_id=rid):
            response = await _answer(request, handler)
    finally:
        _CURRENT.reset(token)
    if not response.prepared:
        response.headers[_REQUEST_ID_HEADER] = rid
    return response


async def _answer(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is not a problem
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return problem(exc.status, _http_detail(exc), headers=headers)
    except Exception:
        # A bug. The log has the traceback and the request id; the client gets the id only.
        log.exception(
            "http.unhandled_error",
            method=request.method,
            path=request.path,
            request_id=request_id(request),
        )
        return problem(500, "internal error; the service logged it under this request_id")


def _http_detail(exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return "no such resource"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} is not allowed here; allowed: {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "the request body is too large"
    # Our handlers raise Problem, not these; aiohttp's reason phrase says enough.
    return exc.reason


def install(app: web.Application) -> None:
    """Add the problem middleware to ``app`` (idempotent; before the app starts)."""
    if middleware not in app.middlewares:
        app.middlewares.append(middleware)
