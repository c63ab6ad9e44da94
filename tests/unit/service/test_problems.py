"""Every HTTP error is an RFC 9457 problem: the helper, the middleware, the declared routes."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from structlog.testing import capture_logs

from problem_shape import fields, problem_of
from siaga_pbx import auth
from siaga_pbx.adapters import problems, routes
from siaga_pbx.adapters.http import error

Client = TestClient[web.Request, web.Application]
ADMIN = {"Authorization": "Bearer t-admin"}


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(gt=0)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z]+$")
    items: list[Inner] = []


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(10, ge=1, le=50)


class Path(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


table = routes.RouteTable("test")


@table.post("/things/{n}", summary="Make a thing", roles=("admin",), body=Body, path_params=Path)
async def make_thing(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, Body)
    n = routes.path(request, Path).n
    return web.json_response({"name": body.name, "n": n, "by": routes.caller(request).role})


@table.get("/things", summary="List things", roles=None, query=Query)
async def list_things(request: web.Request) -> web.StreamResponse:
    return web.json_response({"limit": routes.query(request, Query).limit})


@table.get("/boom", summary="A bug", roles=None)
async def boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("password=hunter2 at /srv/secret.py line 7")


@table.get("/wrong-model", summary="Asks for a model it does not declare", roles=None)
async def wrong_model(request: web.Request) -> web.StreamResponse:
    routes.body(request, Body)
    return web.json_response({})


@table.get("/legacy", summary="An old-style error", roles=None)
async def legacy(request: web.Request) -> web.StreamResponse:
    return error(409, "already done", {"x.y": "taken"})


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(client_max_size=1024)
    auth.install(app, {"t-admin": "admin", "t-ops": "ops"})
    table.install(app)
    async with TestClient(TestServer(app)) as c:
        yield c


class TestProblemHelper:
    def test_validation_failure_is_422_with_each_field_path(self) -> None:
        """A pydantic failure becomes one 422 listing every invalid field by dotted path."""
        with pytest.raises(ValidationError) as info:
            Body.model_validate({"name": "BAD", "items": [{"seconds": -1}], "extra": 1})
        problem = problems.from_validation(info.value, "body")
        assert problem.status == 422
        assert {(e.in_, e.field) for e in problem.errors} == {
            ("body", "name"),
            ("body", "items.0.seconds"),
            ("body", "extra"),
        }

    def test_response_outside_a_request_has_the_rfc_members(self) -> None:
        """problem() gives application/problem+json with type, title (the status
        phrase), status and detail, and leaves out an empty errors list."""
        resp = problems.problem(503, "database unavailable")
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert resp.text is not None
        body = problems.ProblemDetails.model_validate_json(resp.text)
        assert body.type == "about:blank"
        assert body.title == "Service Unavailable"
        assert body.detail == "database unavailable"
        assert body.errors is None


class TestMiddleware:
    async def test_router_404_is_a_problem(self, client: Client) -> None:
        """A path no route serves is a 404 problem, not aiohttp's text page."""
        body = await problem_of(await client.get("/nowhere"), 404)
        assert body["title"] == "Not Found"

    async def test_router_405_is_a_problem_with_allow(self, client: Client) -> None:
        """A method the path does not serve is a 405 problem naming the allowed methods."""
        resp = await client.delete("/things")
        body = await problem_of(resp, 405)
        assert "GET" in resp.headers["Allow"]
        assert "GET" in body["detail"]

    async def test_too_large_body_is_413(self, client: Client) -> None:
        """A body over the app's size limit is a 413 problem."""
        resp = await client.post("/things/1", data=b"{" + b" " * 4096 + b"}", headers=ADMIN)
        await problem_of(resp, 413)

    async def test_unexpected_exception_is_a_500_that_leaks_nothing(self, client: Client) -> None:
        """A bug is a 500 problem whose body says nothing of it; the log has the
        traceback under the same request id the client got."""
        with capture_logs() as logs:
            resp = await client.get("/boom")
            body = await problem_of(resp, 500)
        assert "hunter2" not in await resp.text()
        assert "secret" not in await resp.text()
        (logged,) = [e for e in logs if e["event"] == "http.unhandled_error"]
        assert logged["request_id"] == body["request_id"]
        assert logged["exc_info"] is True

    async def test_a_plain_client_request_id_is_kept(self, client: Client) -> None:
        """An X-Request-ID of plain characters is used as the request's id; a hostile
        one is replaced."""
        resp = await client.get("/nowhere", headers={"X-Request-ID": "proxy-42"})
        assert (await problem_of(resp, 404))["request_id"] == "proxy-42"
        resp = await client.get("/nowhere", headers={"X-Request-ID": "a\u00e9;rm -rf"})
        assert (await problem_of(resp, 404))["request_id"] != "a\u00e9;rm -rf"

    async def test_legacy_error_helper_answers_a_problem(self, client: Client) -> None:
        """error(status, message, fields), kept for older handlers, answers a problem."""
        body = await problem_of(await client.get("/legacy"), 409)
        assert body["detail"] == "already done"
        assert fields(body) == {"x.y": "taken"}


class TestDeclaredRoutes:
    async def test_valid_request_reaches_the_handler_validated(self, client: Client) -> None:
        """Valid path, body and token: the handler gets the models and the caller."""
        resp = await client.post("/things/7", json={"name": "abc"}, headers=ADMIN)
        assert resp.status == 200
        assert await resp.json() == {"name": "abc", "n": 7, "by": "admin"}

    async def test_invalid_body_is_422_with_nested_field_paths(self, client: Client) -> None:
        """Every invalid body field, nested ones by dotted path, is listed in one 422."""
        resp = await client.post(
            "/things/7", json={"name": "ABC", "items": [{"seconds": 0}], "x": 1}, headers=ADMIN
        )
        body = await problem_of(resp, 422)
        assert set(fields(body)) == {"name", "items.0.seconds", "x"}
        assert {e["in"] for e in body["errors"]} == {"body"}

    async def test_invalid_path_and_query_are_422_too(self, client: Client) -> None:
        """A bad path parameter, a bad, unknown or repeated query parameter: 422, by location."""
        body = await problem_of(await client.post("/things/x", json={}, headers=ADMIN), 422)
        assert [(e["in"], e["field"]) for e in body["errors"]] == [("path", "n")]
        body = await problem_of(await client.get("/things?limit=0&colour=red"), 422)
        assert {(e["in"], e["field"]) for e in body["errors"]} == {
            ("query", "limit"),
            ("query", "colour"),
        }
        body = await problem_of(await client.get("/things?limit=1&limit=2"), 422)
        assert fields(body) == {"limit": "given more than once"}

    async def test_not_json_is_400_and_no_body_is_422(self, client: Client) -> None:
        """A body that is not JSON is a 400 problem; a missing required body a 422."""
        await problem_of(await client.post("/things/1", data=b"{nope", headers=ADMIN), 400)
        body = await problem_of(await client.post("/things/1", headers=ADMIN), 422)
        assert fields(body) == {"": "a JSON body is required"}

    async def test_auth_comes_first_as_problems(self, client: Client) -> None:
        """No token is a 401 problem with a Bearer challenge, a wrong role a 403, both
        before the body is looked at."""
        resp = await client.post("/things/x", data=b"{nope")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await problem_of(resp, 401))["detail"] == "missing bearer token"
        resp = await client.post(
            "/things/x", data=b"{nope", headers={"Authorization": "Bearer t-ops"}
        )
        await problem_of(resp, 403)

    async def test_a_handler_reading_an_undeclared_model_is_a_500(self, client: Client) -> None:
        """Reading a body the route does not declare is a bug, answered 500, never
        silently unvalidated input."""
        with capture_logs():
            await problem_of(await client.get("/wrong-model"), 500)

    def test_every_route_is_in_the_registry(self) -> None:
        """install() puts every declared route, and the document's own, in the app's registry."""
        app = web.Application()
        table.install(app)
        declared = {(r.method, r.path) for r in app[routes.ROUTES]}
        on_router = {
            (r.method, typing.cast(web.AbstractResource, r.resource).canonical)
            for r in app.router.routes()
            if r.method != "HEAD"
        }
        assert declared == on_router
        assert ("GET", "/api/openapi.json") in declared
