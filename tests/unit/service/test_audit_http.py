"""The audit seen from a request (``siaga_pbx.audit``) and from a handset: request ids,
one row per authenticated action with its outcome, feature codes with their taker."""

from __future__ import annotations

import asyncio
import getpass
import re
import typing

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from siaga_pbx import audit, centre, core
from siaga_pbx.adapters import routes
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.service import CallService, FeatureRequest

pytestmark = pytest.mark.timeout(10)

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main", ring_timeout_s=5.0),),
    takers=(
        core.TakerConfig("taker1", "PJSIP/taker1", logged_in=False),
        core.TakerConfig("taker2", "PJSIP/taker2"),
    ),
)
TOKENS = {"t-admin": "admin", "t-sup": "supervisor", "t-taker": "taker", "t-ops": "ops"}
Client = TestClient[web.Request, web.Application]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Handset:
    """The telephony a feature code needs: it only goes back to the dialplan."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, bool]] = []

    async def run(self, cmd: object) -> None:
        return None

    async def hand_back(self, call_id: str) -> None:
        return None

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        self.finished.append((channel_id, ok))

    async def find_channel(self, channel_id: str) -> None:
        return None


@pytest.fixture
async def api() -> typing.AsyncIterator[tuple[Client, audit.MemorySink, CallService]]:
    sink = audit.MemorySink()
    service = CallService(
        distributor=core.Distributor(CENTRE), telephony=Handset(), clock=lambda: 1000.0
    )
    app = make_app(
        distributor=service.distributor,
        submit=service.submit,
        metrics_=Metrics(),
        tokens=TOKENS,
        health=dict,
        audit_sink=sink,
    )

    table = routes.RouteTable("test")

    @table.post(
        "/test/explode/{name}",
        summary="A route with a bug",
        roles=("admin",),
        audited=("test.explode", "thing:{name}"),
    )
    async def explode(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    @table.post(
        "/test/change",
        summary="A configuration change, as the centre's routes make one",
        roles=("admin",),
        status=201,
        audited=("queue.create", "queues"),
    )
    async def change(request: web.Request) -> web.StreamResponse:
        await centre.audit_change(
            request, "queue.create", "queue:backup", None, {"name": "backup", "version": 1}
        )
        return web.json_response({}, status=201)

    async def context(request: web.Request) -> web.StreamResponse:
        return web.json_response(structlog.contextvars.get_contextvars())

    table.install(app)
    app.router.add_get("/test/context", context)
    app[centre.AUDIT] = audit.note_change
    async with TestClient(TestServer(app)) as client:
        yield client, sink, service


class TestRequestIds:
    async def test_the_row_carries_the_id_the_response_and_the_log_lines_carry(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """An audited request's row has the X-Request-ID of its response: a fresh one,
        or the plain one the client sent (to follow a request through a proxy)."""
        client, sink, _ = api
        fresh = await client.post("/api/takers/taker1/login", headers=bearer("t-admin"))
        sent = await client.post(
            "/api/takers/taker1/logout", headers={**bearer("t-admin"), "X-Request-ID": "desk-7.1"}
        )
        assert (fresh.status, sent.status) == (202, 202)
        assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
        assert sent.headers["X-Request-ID"] == "desk-7.1"
        assert [e.request_id for e in sink.entries] == [fresh.headers["X-Request-ID"], "desk-7.1"]

    async def test_the_request_id_is_bound_for_the_requests_log_lines(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """While a request is handled its id is in structlog's contextvars (every log
        line of the request carries it), and it is gone afterwards."""
        client, _, _ = api
        resp = await client.get("/test/context")
        assert (await resp.json())["request_id"] == resp.headers["X-Request-ID"]
        assert "request_id" not in structlog.contextvars.get_contextvars()


class TestAuditedRoutes:
    async def test_an_accepted_taker_action_names_the_caller_and_the_taker(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """A supervisor's logout of taker2 is one 'accepted' row: who, role, action, target."""
        client, sink, _ = api
        resp = await client.post("/api/takers/taker2/logout", headers=bearer("t-sup"))
        assert resp.status == 202
        (row,) = sink.entries
        assert (row.who, row.role, row.action, row.target, row.outcome, row.status) == (
            row.who,
            "supervisor",
            "taker.logout",
            "taker:taker2",
            "accepted",
            202,
        )
        assert re.fullmatch(r"supervisor:[0-9a-f]{12}", row.who)
        assert (row.user_id, row.username) == ("", "")  # a configuration token
        assert row.source == "127.0.0.1"

    async def test_a_refusal_by_the_core_is_audited_with_its_reason(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """Pausing a logged-out taker is refused (409): the row says so, with the core's words."""
        client, sink, _ = api
        resp = await client.post("/api/takers/taker1/pause", json={}, headers=bearer("t-admin"))
        assert resp.status == 409
        (row,) = sink.entries
        assert (row.action, row.outcome, row.status) == ("taker.pause", "refused", 409)
        assert row.reason == (await resp.json())["detail"]
        assert "offline" in row.reason

    async def test_invalid_input_is_audited_as_refused_with_the_fields(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """A body that fails validation is refused (422, before the handler runs):
        the row's reason names the field."""
        client, sink, _ = api
        resp = await client.post(
            "/api/takers/taker2/pause", json={"reason": "x\n" * 40}, headers=bearer("t-sup")
        )
        assert resp.status == 422
        (row,) = sink.entries
        assert (row.action, row.target, row.outcome) == ("taker.pause", "taker:taker2", "refused")
        assert "reason: " in row.reason

    async def test_a_taker_acting_on_another_taker_is_audited_as_refused(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """A taker's token trying to log out taker2 is refused by the rules by person,
        and the attempt is in the audit, naming who tried."""
        client, sink, _ = api
        resp = await client.post("/api/takers/taker2/logout", headers=bearer("t-taker"))
        assert resp.status == 403
        (row,) = sink.entries
        assert (row.role, row.action, row.target, row.outcome, row.status) == (
            "taker",
            "taker.logout",
            "taker:taker2",
            "refused",
            403,
        )
        assert "own state" in row.reason

    async def test_a_configuration_change_lands_in_its_routes_row(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """The centre's audit seam (``centre.audit_change`` -> ``audit.note_change``) puts
        the exact action, target, before and after into the one row of the route."""
        client, sink, _ = api
        resp = await client.post("/test/change", headers=bearer("t-admin"))
        assert resp.status == 201
        (row,) = sink.entries
        assert (row.action, row.target, row.outcome) == ("queue.create", "queue:backup", "accepted")
        assert (row.before, row.after) == (None, {"name": "backup", "version": 1})

    async def test_an_exception_is_audited_as_failed(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """A route that raises still leaves one row: 'failed', with the error's type."""
        client, sink, _ = api
        resp = await client.post("/test/explode/x1", headers=bearer("t-admin"))
        assert resp.status == 500
        (row,) = sink.entries
        assert (row.action, row.target, row.outcome, row.reason) == (
            "test.explode",
            "thing:x1",
            "failed",
            "RuntimeError",
        )

    async def test_unauthenticated_and_forbidden_requests_name_nobody(
        self, api: tuple[Client, audit.MemorySink, CallService]
    ) -> None:
        """401 and 403 write no action row: the request never became anybody's action."""
        client, sink, _ = api
        assert (await client.post("/api/takers/taker2/logout")).status == 401
        assert (
            await client.post("/api/takers/taker2/logout", headers=bearer("t-ops"))
        ).status == 403
        assert sink.entries == []

    async def test_a_failing_sink_does_not_undo_the_action_and_logs_the_entry(self) -> None:
        """If the audit cannot be written the action stands (202) and the entry is logged."""

        class Broken:
            async def write(self, entry: audit.AuditEntry) -> None:
                raise OSError("disk full")

        service = CallService(distributor=core.Distributor(CENTRE), telephony=Handset())
        app = make_app(
            distributor=service.distributor,
            submit=service.submit,
            metrics_=Metrics(),
            tokens=TOKENS,
            health=dict,
            audit_sink=Broken(),
        )
        async with TestClient(TestServer(app)) as client:
            with capture_logs() as logs:
                resp = await client.post("/api/takers/taker2/logout", headers=bearer("t-admin"))
        assert resp.status == 202
        (failed,) = [e for e in logs if e["event"] == "audit.write_failed"]
        assert (failed["audit_action"], failed["audit_target"]) == ("taker.logout", "taker:taker2")


class TestReasons:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ('{"detail": "taker is offline"}', "taker is offline"),
            (
                '{"detail": "the request is not valid", "errors": [{"in": "body",'
                ' "field": "reason", "message": "too long"}, {"in": "body", "field": "",'
                ' "message": "a JSON body is required"}]}',
                "the request is not valid; reason: too long; (body): a JSON body is required",
            ),
            ('{"title": "Conflict"}', "Conflict"),
            ('{"error": "no call taker"}', "no call taker"),
            ("plain text", "plain text"),
        ],
    )
    def test_the_reason_is_what_the_problem_told_the_caller(self, body: str, reason: str) -> None:
        """A returned refusal's reason is its detail and each field error."""
        response = web.Response(text=body, status=409)
        assert audit._reason(response) == reason

    def test_an_accepted_answer_has_no_reason(self) -> None:
        """2xx: nothing to explain."""
        assert audit._reason(web.json_response({"detail": "x"}, status=202)) == ""


class TestHandsetFeatureCodes:
    async def test_each_feature_code_is_reported_with_its_taker_and_outcome(self) -> None:
        """The consumer tells ``on_feature`` of every code: accepted, refused by the
        core (with its reason), and a handset no taker works on."""
        seen: list[tuple[str, str, bool, str]] = []
        service = CallService(
            distributor=core.Distributor(CENTRE),
            telephony=Handset(),
            on_feature=lambda *f: seen.append(f),
        )
        task = asyncio.create_task(service.run())
        try:
            await service._feature(FeatureRequest("feat.1", "taker1", "unpause"))
            await service._feature(FeatureRequest("feat.2", "taker1", "login"))
            await service._feature(FeatureRequest("feat.3", None, "logout"))
        finally:
            task.cancel()
        assert [(t, a, ok) for t, a, ok, _ in seen] == [
            ("taker1", "unpause", False),
            ("taker1", "login", True),
            ("", "logout", False),
        ]
        assert "not allowed while 'offline'" in seen[0][3]
        assert seen[1][3] == ""
        assert seen[2][3] == "no call taker works on this handset"

    async def test_a_failing_hook_never_leaves_the_handset_in_silence(self) -> None:
        """If the audit hook raises, the handset still goes back to the dialplan."""

        def broken(*_: object) -> None:
            raise RuntimeError("audit down")

        handset = Handset()
        service = CallService(
            distributor=core.Distributor(CENTRE), telephony=handset, on_feature=broken
        )
        with capture_logs() as logs:
            await service._feature(FeatureRequest("feat.1", "taker1", "login"))
        assert handset.finished == [("feat.1", True)]
        assert any(e["event"] == "feature.hook_failed" for e in logs)

    def test_the_handset_entry_names_the_taker(self) -> None:
        """A feature code's row names the taker as actor and target, from the handset."""
        entry = audit.handset_feature("taker2", "pause", ok=False, reason="offline")
        assert (entry.who, entry.role, entry.action, entry.target, entry.source) == (
            "taker:taker2",
            "taker",
            "taker.pause",
            "taker:taker2",
            "handset",
        )
        assert (entry.outcome, entry.reason) == ("refused", "offline")

    def test_the_command_line_entry_names_the_os_user(self) -> None:
        """A ``siaga-pbx`` command's row names the OS user who ran it."""
        entry = audit.command_line("purge", "retention", after={"incidents_deleted": 2})
        assert entry.who == f"cli:{getpass.getuser()}"
        assert (entry.role, entry.action, entry.outcome) == ("cli", "purge", "accepted")


class TestEveryRouteDeclaresItsAudit:
    def test_every_state_changing_route_of_the_service_is_audited(self) -> None:
        """Each POST/PUT/PATCH/DELETE route of the app the runtime serves declares its
        audit action: a new state-changing route without ``audited=`` fails here.
        Sign-in and sign-out are audited by the people's ``on_sign_in`` hook instead
        (a sign-in has no caller yet)."""
        from test_openapi import real_app

        app = real_app()
        changing = [r for r in app[routes.ROUTES] if r.method != "GET"]
        assert len(changing) >= 30
        missing = [f"{r.method} {r.path}" for r in changing if r.audited is None]
        assert missing == ["POST /api/session", "DELETE /api/session"]
        assert all(r.audited is None for r in app[routes.ROUTES] if r.method == "GET")

    def test_a_sign_in_entry_names_who_tried(self) -> None:
        """A failed sign-in is a refused row naming the username tried, never a
        signed-in user; a success names the user."""
        failed = audit.sign_in("failed", "sari", source="10.0.0.9", at=1000.0, reason="bad")
        assert (failed.who, failed.username, failed.action, failed.outcome, failed.reason) == (
            "sari",
            "",
            "session.failed",
            "refused",
            "bad",
        )
        ok = audit.sign_in("signed_in", "sari", source="10.0.0.9", at=1000.0, user_id="u-1")
        assert (ok.username, ok.user_id, ok.outcome, ok.target) == (
            "sari",
            "u-1",
            "accepted",
            "user:sari",
        )
