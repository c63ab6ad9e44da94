"""The OpenAPI 3.1 document of the real app: valid, complete, and built from the route models."""

from __future__ import annotations

import typing
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from problem_shape import problem_of
from siaga_pbx import conference, config, core
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.centre import CentreKeeper, LocalCopy, PgConfigStore, QueueItem, seed_of
from siaga_pbx.incidents import IncidentStore
from siaga_pbx.incidents._api_models import IncidentPatch
from siaga_pbx.people import People, PeopleSettings
from siaga_pbx.runtime import build_app

Client = TestClient[web.Request, web.Application]
TOKENS = {"t-admin": "admin"}
ADMIN = {"Authorization": "Bearer t-admin"}
CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"),),
)
NO_DATABASE = "postgresql://127.0.0.1:1/none"
FIRE = conference.Agency("damkar", "Damkar", ("PJSIP/disp-damkar",), digit=1)


def real_app() -> web.Application:
    """The app runtime.py serves (``build_app``); the database is never reached by these tests."""
    submitted: list[object] = []
    seed = seed_of(config.load())
    return build_app(
        distributor=core.Distributor(CENTRE),
        conferences=conference.Conferences(conference.AgencyDirectory((FIRE,))),
        submit=submitted.append,
        metrics=Metrics(),
        tokens=TOKENS,
        health=dict,
        incidents=IncidentStore(NO_DATABASE),
        centre=CentreKeeper(
            PgConfigStore(NO_DATABASE, seed), LocalCopy(Path("/nonexistent/state")), seed
        ),
        people=People(  # never opened here: the document needs only its routes
            PeopleSettings(),
            dsn=NO_DATABASE,
            state_path=Path("/nonexistent/state/people.sqlite3"),
            profile="lab",
        ),
    )


def missing_from(doc: dict[str, Any], app: web.Application) -> list[str]:
    """Routes on the app's router that the document does not describe."""
    missing = []
    for route in app.router.routes():
        path = typing.cast(web.AbstractResource, route.resource).canonical
        if route.method == "HEAD":  # aiohttp's automatic HEAD of a GET
            continue
        if route.method.lower() not in doc["paths"].get(path, {}):
            missing.append(f"{route.method} {path}")
    return missing


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(real_app())) as c:
        yield c


async def document(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")  # no token: the document is public
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


class TestDocument:
    async def test_is_a_valid_openapi_3_1_document(self, client: Client) -> None:
        """The served document passes openapi-spec-validator as OpenAPI 3.1."""
        doc = await document(client)
        assert doc["openapi"] == "3.1.0"
        validate(doc)

    def test_the_validator_refuses_a_broken_document(self) -> None:
        """The validator used above does refuse a document with a path parameter it
        never defines, so a broken generator would fail the test before."""
        broken = {
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {"/a/{id}": {"get": {"responses": {"200": {"description": "ok"}}}}},
        }
        with pytest.raises(OpenAPIValidationError):
            validate(broken)

    async def test_every_route_of_the_real_app_is_in_it(self, client: Client) -> None:
        """Each route registered on the app as runtime.py builds it is in the document,
        and the document describes no route the app lacks."""
        doc = await document(client)
        assert missing_from(doc, client.app) == []
        on_router = {
            (r.method.lower(), typing.cast(web.AbstractResource, r.resource).canonical)
            for r in client.app.router.routes()
        }
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert documented <= on_router
        assert len(documented) >= 40  # state, takers, conference, incidents, callbacks, centre

    async def test_the_centres_configuration_routes_are_in_it(self, client: Client) -> None:
        """The configuration routes are documented with their models: a queue PATCH takes
        every field of a queue, only ``version`` required, and nothing else."""
        doc = await document(client)
        for path in ("/api/queues", "/api/queues/{name}", "/api/takers/{taker_id}"):
            assert path in doc["paths"], path
        assert set(doc["paths"]["/api/agencies/{code}"]) == {"get", "patch", "delete"}
        patch = doc["paths"]["/api/queues/{name}"]["patch"]
        assert patch["x-roles"] == ["admin"]
        ref = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == set(QueueItem.model_fields)
        assert schema["required"] == ["version"]
        assert schema["additionalProperties"] is False
        assert {"404", "409", "422", "503"} <= set(patch["responses"])

    def test_an_undeclared_route_is_reported_missing(self) -> None:
        """A route added straight to the router, not declared, is caught by the check."""
        app = real_app()

        async def hidden(request: web.Request) -> web.StreamResponse:
            return web.json_response({})

        app.router.add_post("/api/hidden", hidden)
        doc: dict[str, Any] = {"paths": {"/api/state": {"get": {}}}}
        assert "POST /api/hidden" in missing_from(doc, app)

    async def test_schemas_come_from_the_route_models(self, client: Client) -> None:
        """The PATCH body is the IncidentPatch model's own JSON Schema, the list query
        is ListParams by alias, and every problem is application/problem+json."""
        doc = await document(client)
        patch = doc["paths"]["/api/incidents/{id}"]["patch"]
        ref = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == set(IncidentPatch.model_fields)
        assert schema["additionalProperties"] is False
        assert patch["x-roles"] == ["admin", "supervisor", "taker"]
        assert "application/problem+json" in patch["responses"]["422"]["content"]
        params = doc["paths"]["/api/incidents"]["get"]["parameters"]
        assert {p["name"] for p in params} == {
            "from",
            "to",
            "category",
            "disposition",
            "number",
            "limit",
            "cursor",
        }
        assert doc["paths"]["/api/openapi.json"]["get"]["security"] == []


class TestOneValidationStatus:
    async def test_every_body_route_answers_an_unknown_field_with_422(self, client: Client) -> None:
        """For every documented route with a body, an unknown field is a 422 problem
        naming it: one status for validation failures everywhere."""
        doc = await document(client)
        with_body = [
            (method, path)
            for path, ops in doc["paths"].items()
            for method, op in ops.items()
            if "requestBody" in op
        ]
        assert len(with_body) >= 6
        for method, path in with_body:
            url = path.replace("{id}", str(uuid.uuid4()))
            for name in (
                "taker_id",
                "call_id",
                "agency",
                "supervisor",
                "name",
                "number",
                "code",
                "username",
            ):
                url = url.replace("{" + name + "}", "x")
            resp = await client.request(method, url, json={"no_such_field": 1}, headers=ADMIN)
            body = await problem_of(resp, 422)
            assert "no_such_field" in {e["field"] for e in body["errors"]}, (method, path)
