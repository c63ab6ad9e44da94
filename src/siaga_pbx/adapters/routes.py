"""One way to declare an HTTP route: its roles, its models, its answers.

A module keeps a ``RouteTable`` and declares each route on it, like aiohttp's own
``RouteTableDef``::

    routes = RouteTable("incidents")

    @routes.patch(
        "/api/incidents/{id}", summary="Classify an incident", roles=EDIT,
        path_params=IncidentPath, body=IncidentPatch, problems=(404, 503),
    )
    async def patch_incident(request: web.Request) -> web.StreamResponse:
        patch = routes_.body(request, IncidentPatch)  # already validated
        who = routes_.caller(request).who
        ...

    routes.install(app)

The declaration is the one source of truth for three things:

- **what runs first**: the caller is authenticated and authorised (``roles``; ``None`` is an
  explicit "no sign-in", for ``/healthz`` and the like), then the path parameters, the query
  string and the JSON body are validated with their models, in that order. Any failure is a
  problem (``problems``): 401/403, 422 naming every invalid field, 400 for a body that is not
  JSON. The handler only runs with valid input and reads it with ``body``/``query``/``path``;
- **the OpenAPI document** (``openapi.document``) served at ``GET /api/openapi.json``, which is
  generated from these same models;
- **the audit**: a state-changing route names its action and target (``audited=``); every
  authenticated request to it, accepted, refused (its input invalid included) or failed,
  leaves one audit row (``siaga_pbx.audit``, docs/AUDIT.md);
- **the list of routes**: ``install`` registers each route on the router *and* in the app's
  registry (``ROUTES``); a test checks that every route on the router is in the document, so a
  route added with ``app.router.add_*`` directly fails it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import audit, auth
from . import openapi
from .problems import FieldError, Problem, Where, from_validation
from .problems import install as install_problems

__all__ = [
    "ROUTES",
    "Handler",
    "Route",
    "RouteTable",
    "body",
    "caller",
    "path",
    "query",
    "setup",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

_CALLER = audit.CALLER  # one place: the audit names the caller it finds there
_BODY = web.RequestKey("siaga_body", BaseModel)
_QUERY = web.RequestKey("siaga_query", BaseModel)
_PATH = web.RequestKey("siaga_path", BaseModel)


@dataclass(frozen=True, slots=True)
class Route:
    """One declared route. ``problems``: the statuses it may answer besides the ones the
    declaration implies (401/403 with roles; 422 with any model; 400/413 with a body)."""

    method: str
    path: str
    handler: Handler
    summary: str
    roles: frozenset[str] | None
    tag: str
    description: str = ""
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content_type: str = "application/json"
    problems: tuple[int, ...] = ()
    audited: tuple[str, str] | None = None  # (action, target) templates: ``audit.audited``

    @property
    def operation_id(self) -> str:
        words = "".join(c if c.isalnum() else " " for c in self.path).split()
        return "_".join([self.method.lower(), *words])


ROUTES: web.AppKey[list[Route]] = web.AppKey("api_routes", list)


class RouteTable:
    """The routes of one module, declared with ``get``/``post``/... and installed together."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path_: str,
        *,
        summary: str,
        roles: Iterable[str] | None,
        description: str = "",
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        path_params: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        content_type: str = "application/json",
        problems: Iterable[int] = (),
        audited: tuple[str, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method=method,
                    path=path_,
                    handler=handler,
                    summary=summary,
                    roles=None if roles is None else frozenset(roles),
                    tag=self.tag,
                    description=description,
                    body=body,
                    body_required=body_required,
                    query=query,
                    path_params=path_params,
                    response=response,
                    status=status,
                    content_type=content_type,
                    problems=tuple(problems),
                    audited=audited,
                )
            )
            return handler

        return declare

    def get(self, path_: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path_, **kw)

    def post(self, path_: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path_, **kw)

    def put(self, path_: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path_, **kw)

    def patch(self, path_: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path_, **kw)

    def delete(self, path_: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path_, **kw)

    def install(self, app: web.Application) -> None:
        """Register every route on ``app``'s router and in its registry."""
        setup(app)
        for r in self.routes:
            if r.method == "GET":
                app.router.add_get(r.path, _checked(r))  # and HEAD, as aiohttp does
            else:
                app.router.add_route(r.method, r.path, _checked(r))
            app[ROUTES].append(r)


# ---- what the handler reads ------------------------------------------------------


def caller(request: web.Request) -> auth.Caller:
    """Who made the request (routes with roles only)."""
    found = request.get(_CALLER)
    if not isinstance(found, auth.Caller):
        raise TypeError(f"{request.path}: the route declares no roles, hence no caller")
    return found


def body(request: web.Request, model: type[M]) -> M:
    """The validated body, an instance of the route's declared ``body`` model."""
    return _declared(request, _BODY, model)


def query(request: web.Request, model: type[M]) -> M:
    """The validated query string, an instance of the route's declared ``query`` model."""
    return _declared(request, _QUERY, model)


def path(request: web.Request, model: type[M]) -> M:
    """The validated path parameters, an instance of the declared ``path_params`` model."""
    return _declared(request, _PATH, model)


def _declared(request: web.Request, key: web.RequestKey[BaseModel], model: type[M]) -> M:
    found = request.get(key)
    if not isinstance(found, model):
        # The handler asks for a model the route does not declare: a bug, so a 500.
        raise TypeError(f"{request.path}: the route declares no {model.__name__}")
    return found


# ---- what runs before the handler ------------------------------------------------


def _checked(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        who = ""
        if route.roles is not None:
            try:
                found = auth.authorize(request, route.roles)
            except auth.AuthError as exc:
                raise Problem(exc.status, exc.message, headers=exc.headers) from None
            request[_CALLER] = found
            who = found.who
        run: Handler = functools.partial(_validated, route)
        if route.audited is not None:  # after auth: input refused as invalid is audited too
            run = audit.audited(*route.audited)(run)
        if not who:
            return await run(request)
        with structlog.contextvars.bound_contextvars(api_user=who):
            return await run(request)

    handle.__name__ = route.handler.__name__
    handle.__doc__ = route.handler.__doc__
    return handle


async def _validated(route: Route, request: web.Request) -> web.StreamResponse:
    """Validate the path, query and body (in that order), then run the handler."""
    if route.path_params is not None:
        request[_PATH] = _validate(route.path_params, dict(request.match_info), "path")
    if route.query is not None:
        request[_QUERY] = _validate(route.query, _single_valued(request), "query")
    if route.body is not None:
        raw = await _json_body(request, required=route.body_required)
        request[_BODY] = _validate(route.body, raw, "body")
    return await route.handler(request)


def _validate(model: type[M], raw: object, where: Where) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc, where) from None


def _single_valued(request: web.Request) -> dict[str, str]:
    q = request.query
    repeated = sorted({k for k in q if len(q.getall(k)) > 1})
    if repeated:
        raise Problem(
            422,
            "the request is not valid",
            errors=[
                FieldError(in_="query", field=k, message="given more than once") for k in repeated
            ],
        )
    return dict(q)


async def _json_body(request: web.Request, *, required: bool) -> object:
    raw = await request.read()  # 413 past the app's client_max_size (the middleware answers)
    if not raw.strip():
        if not required:
            return {}
        raise Problem(
            422,
            "the request is not valid",
            errors=[FieldError(in_="body", field="", message="a JSON body is required")],
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise Problem(400, f"the body is not valid JSON: {exc}") from None


# ---- the document itself ---------------------------------------------------------

_DOC = RouteTable("meta")
_CACHE: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("openapi_cache", dict)


@_DOC.get(
    "/api/openapi.json",
    summary="This API, as an OpenAPI 3.1 document",
    description="No sign-in: it holds no data, and a program learns from it how to sign in.",
    roles=None,
)
async def _openapi(request: web.Request) -> web.StreamResponse:
    cache = request.app[_CACHE]
    if "doc" not in cache:  # the routes are fixed once the app runs
        declared: list[Route] = request.app[ROUTES]
        cache["doc"] = openapi.document(declared, version=_version())
    return web.json_response(cache["doc"])


def _version() -> str:
    try:
        return importlib.metadata.version("siaga-pbx")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def setup(app: web.Application) -> None:
    """Give ``app`` the problem middleware, the route registry and the document (once)."""
    if ROUTES in app:
        return
    app[ROUTES] = []
    app[_CACHE] = {}
    install_problems(app)
    _DOC.install(app)
