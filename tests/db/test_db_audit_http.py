"""Every state-changing route of the real app writes an audit row naming its caller,
through the real outbox into a real PostgreSQL; one taken while PostgreSQL is down
is in the audit once PostgreSQL is back.

The app is the service's own (``make_app``, the conference, incident, callback and
audit routes) over a real ``CallService`` whose telephony only records commands.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from harness.pgserver import PrivatePostgres
from siaga_pbx import conference, config, core
from siaga_pbx.adapters.conference import add_conference_routes
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.centre import CentreKeeper, LocalCopy, PgConfigStore, seed_of
from siaga_pbx.incidents import (
    IncidentRecorder,
    IncidentStore,
    Outbox,
    OutboxAuditSink,
    OutboxRelay,
    add_audit_routes,
    add_callback_routes,
    add_incident_routes,
    migrate,
)
from siaga_pbx.people import People, PeopleSettings
from siaga_pbx.runtime import build_app
from siaga_pbx.service import CallService

from ._support import drain, fetch

pytestmark = pytest.mark.timeout(90)

TOKENS = {"tok-admin": "admin", "tok-sup": "supervisor", "tok-taker": "taker"}
CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main", ring_timeout_s=5.0, reassurance_every_s=None),),
    takers=(
        core.TakerConfig("taker1", "PJSIP/taker1"),
        core.TakerConfig("taker2", "PJSIP/taker2", logged_in=False),
    ),
)
AGENCIES = conference.AgencyDirectory(
    (
        conference.Agency("damkar", "Damkar", ("PJSIP/disp-damkar",), digit=1),
        conference.Agency("polisi", "Polisi", ("PJSIP/disp-polisi",), mass_incident=True),
    )
)
Client = TestClient[web.Request, web.Application]


def who(role: str) -> str:
    """The audit name of the configuration token of ``role``."""
    token = next(t for t, r in TOKENS.items() if r == role)
    return f"{role}:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


class RecordingTelephony:
    """Asterisk stand-in: every command succeeds at once."""

    async def run(self, cmd: object) -> None:
        return None

    async def hand_back(self, call_id: str) -> None:
        return None

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        return None

    async def find_channel(self, channel_id: str) -> None:
        return None


@dataclass
class Centre:
    client: Client
    app: web.Application
    service: CallService
    outbox: Outbox
    incident: uuid.UUID
    callback_call: str

    async def settle(self) -> None:
        await asyncio.wait_for(self.service.idle(), 5)

    async def send(
        self, method: str, path: str, role: str, body: Any = None
    ) -> aiohttp.ClientResponse:
        token = next(t for t, r in TOKENS.items() if r == role)
        resp = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        await resp.read()
        await self.settle()  # the consumer has taken the request before the next one
        return resp


async def open_centre(tmp_path: Path, store_dsn: str, seed_dsn: str) -> Centre:
    """The app over a running service; an incident and a pending callback seeded in
    ``seed_dsn``; the call ``c1`` live with taker1."""
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    recorder = IncidentRecorder(outbox)
    now = time.time()
    incident = await recorder.open_call("seeded-1", arrived_at=now - 60, number="0811")
    await recorder.open_call("seeded-cb", arrived_at=now - 50, number="0812")
    await recorder.callback(core.CallbackEntry("seeded-cb", "0812", now - 50, now - 40, "main",
                                               "waiting"))  # fmt: skip
    assert await drain(outbox, seed_dsn) == 3
    service = CallService(
        distributor=core.Distributor(CENTRE),
        conferences=conference.Conferences(AGENCIES),
        telephony=RecordingTelephony(),
    )
    asyncio.get_running_loop().create_task(service.run(), name="consumer")
    app = make_app(
        distributor=service.distributor,
        submit=service.submit,
        metrics_=Metrics(),
        tokens=TOKENS,
        health=dict,
        audit_sink=OutboxAuditSink(outbox),
    )
    store = IncidentStore(store_dsn)
    add_incident_routes(app, store, TOKENS)
    add_audit_routes(app, store)
    add_callback_routes(
        app, store=store, submit=service.submit, holds=service.distributor.holds_callback
    )
    add_conference_routes(app, service.conferences, service.submit)
    app.on_cleanup.append(lambda _: store.close())
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    centre = Centre(client, app, service, outbox, incident, "seeded-cb")
    service.submit(core.CallerArrived("c1", core.CallerIdentity("0813"), "main"))
    await centre.settle()
    service.submit(core.HandsetAnswered("siaga-offer-c1-1"))
    await centre.settle()
    assert service.conferences.is_live("c1")
    return centre


async def close_centre(centre: Centre) -> None:
    await centre.client.close()
    await centre.service.close()
    await centre.outbox.close()


@pytest.fixture
async def centre(fresh_migrated_dsn: str, tmp_path: Path) -> AsyncIterator[Centre]:
    c = await open_centre(tmp_path, fresh_migrated_dsn, fresh_migrated_dsn)
    try:
        yield c
    finally:
        await close_centre(c)


# (method, route as registered, path sent, role, body, action, target, status told)
# Two are refused by the conference core (the dispatcher has not answered yet):
# a refusal must be audited as much as an acceptance.
ROUTES: list[tuple[str, str, str, str, Any, str, str, int]] = [
    ("POST", "/api/takers/{taker_id}/login", "/api/takers/taker2/login", "admin", None,
     "taker.login", "taker:taker2", 202),
    ("POST", "/api/takers/{taker_id}/pause", "/api/takers/taker2/pause", "supervisor",
     {"reason": "lunch"}, "taker.pause", "taker:taker2", 202),
    ("POST", "/api/takers/{taker_id}/unpause", "/api/takers/taker2/unpause", "admin", None,
     "taker.unpause", "taker:taker2", 202),
    ("POST", "/api/takers/{taker_id}/logout", "/api/takers/taker2/logout", "supervisor", None,
     "taker.logout", "taker:taker2", 202),
    ("POST", "/api/calls/{call_id}/dispatchers", "/api/calls/c1/dispatchers", "taker",
     {"agency": "damkar"}, "call.add_dispatcher", "call:c1", 202),
    ("POST", "/api/calls/{call_id}/dispatchers/mass-incident",
     "/api/calls/c1/dispatchers/mass-incident", "taker", None, "call.add_mass_incident",
     "call:c1", 202),
    ("POST", "/api/calls/{call_id}/dispatchers/{agency}/role",
     "/api/calls/c1/dispatchers/damkar/role", "taker", {"role": "listen"}, "call.set_role",
     "call:c1", 409),
    ("DELETE", "/api/calls/{call_id}/dispatchers/{agency}", "/api/calls/c1/dispatchers/polisi",
     "taker", None, "call.remove_dispatcher", "call:c1", 202),
    ("POST", "/api/calls/{call_id}/supervision", "/api/calls/c1/supervision", "supervisor",
     {"supervisor": "sup1", "endpoint": "PJSIP/sup1", "mode": "listen"}, "call.supervise",
     "call:c1", 202),
    ("DELETE", "/api/calls/{call_id}/supervision/{supervisor}", "/api/calls/c1/supervision/sup1",
     "supervisor", None, "call.end_supervision", "call:c1", 202),
    ("POST", "/api/calls/{call_id}/handover", "/api/calls/c1/handover", "taker", None,
     "call.hand_over", "call:c1", 409),
    ("PATCH", "/api/incidents/{id}", "/api/incidents/{incident}", "taker",
     {"category": "fire", "notes": "smoke on the 3rd floor"}, "incident.classify",
     "incident:{incident}", 200),
    ("POST", "/api/callbacks/{call_id}/resolve", "/api/callbacks/seeded-cb/resolve", "taker",
     {"resolution": "called_back", "note": "spoke to the caller"}, "callback.resolve",
     "callback:seeded-cb", 202),
]  # fmt: skip


def audit_rows(dsn: str) -> Any:
    return fetch(dsn, "SELECT * FROM audit ORDER BY id")


class TestEveryActionIsAudited:
    async def test_the_table_covers_every_state_changing_route(self, centre: Centre) -> None:
        """Every POST/PUT/PATCH/DELETE route of the app is in this test's table: a new
        route without an audit check fails here."""
        changing = {
            (r.method, r.resource.canonical)
            for r in centre.app.router.routes()
            if r.method in {"POST", "PUT", "PATCH", "DELETE"} and r.resource is not None
        }
        assert changing == {(method, route) for method, route, *_ in ROUTES}

    async def test_each_route_writes_one_row_naming_its_caller(
        self, centre: Centre, fresh_migrated_dsn: str
    ) -> None:
        """One row per request, in order: the token's audit name and role, the action,
        its target, the outcome the caller was told, and the response's request id."""
        told: list[tuple[str, str, str, str, str, int, str]] = []
        for method, _, path, role, body, action, target, status in ROUTES:
            resp = await centre.send(method, path.format(incident=centre.incident), role, body)
            assert resp.status == status, (path, await resp.text())
            outcome = "accepted" if status < 400 else "refused"
            told.append((who(role), role, action, target.format(incident=centre.incident),
                         outcome, status, resp.headers["X-Request-Id"]))  # fmt: skip
        assert await drain(centre.outbox, fresh_migrated_dsn) == len(ROUTES)
        rows = await audit_rows(fresh_migrated_dsn)
        assert [
            (r["who"], r["role"], r["action"], r["target"], r["outcome"], r["status"],
             r["request_id"])
            for r in rows
        ] == told  # fmt: skip
        refused = [r for r in rows if r["outcome"] == "refused"]
        assert [r["action"] for r in refused] == ["call.set_role", "call.hand_over"]
        assert all(r["reason"] for r in refused)  # the core's words, for the record
        assert all(r["source"] == "127.0.0.1" for r in rows)

    async def test_what_a_row_says_about_the_change(
        self, centre: Centre, fresh_migrated_dsn: str
    ) -> None:
        """An incident edit names the fields
        but not their values (personal data); a callback keeps its resolution, not
        its note; a dispatcher added names the agency."""
        await centre.send("PATCH", f"/api/incidents/{centre.incident}", "taker", ROUTES[11][4])
        await centre.send("POST", "/api/callbacks/seeded-cb/resolve", "taker", ROUTES[12][4])
        await centre.send("POST", "/api/calls/c1/dispatchers", "taker", {"agency": "damkar"})
        await drain(centre.outbox, fresh_migrated_dsn)
        incident, callback, dispatcher = await audit_rows(fresh_migrated_dsn)
        assert incident["after"] == '{"fields": ["category", "notes"]}'
        assert "smoke" not in (incident["after"] + str(incident["before"]))
        assert callback["after"] == '{"resolution": "called_back"}'
        assert dispatcher["after"] == '{"role": null, "agency": "damkar"}'

    async def test_a_supervisor_acting_on_another_taker_is_named_not_the_taker(
        self, centre: Centre, fresh_migrated_dsn: str
    ) -> None:
        """A supervisor logs taker1 out: the row names the supervisor as actor and
        taker1 as target, and is found by filtering the audit on either."""
        resp = await centre.send("POST", "/api/takers/taker1/logout", "supervisor")
        await drain(centre.outbox, fresh_migrated_dsn)
        found = await centre.client.get(
            f"/api/audit?user={who('supervisor')}&target=taker:taker1",
            headers={"Authorization": "Bearer tok-admin"},
        )
        (item,) = (await found.json())["items"]
        assert (item["action"], item["status"]) == ("taker.logout", resp.status)


class TestPostgresDown:
    async def test_actions_while_postgres_is_down_are_audited_once_it_is_back(
        self, private_pg: PrivatePostgres, tmp_path: Path
    ) -> None:
        """PostgreSQL stops (for real). A taker action is accepted at once; an incident
        edit fails (503). Both are in the outbox; when PostgreSQL starts again the
        running relay writes each of them exactly once, at the time it was taken."""
        dsn = private_pg.dsn
        await migrate(dsn)
        centre = await open_centre(tmp_path, dsn, dsn)
        relay = OutboxRelay(centre.outbox, dsn, backoff_initial=0.1, backoff_max=0.5,
                            connect_timeout=1)  # fmt: skip
        relay_task = asyncio.get_running_loop().create_task(relay.run())
        try:
            await asyncio.to_thread(private_pg.stop)
            taken_at = time.time()
            logout = await centre.send("POST", "/api/takers/taker1/logout", "supervisor")
            edit = await centre.send(
                "PATCH", f"/api/incidents/{centre.incident}", "taker", {"category": "fire"}
            )
            assert (logout.status, edit.status) == (202, 503)
            await asyncio.sleep(0.5)  # the relay tries, and fails
            assert centre.outbox.pending == 2
            assert relay.failures > 0
            await asyncio.to_thread(private_pg.start)
            for _ in range(300):  # up to 30 s for the relay's next attempt
                if not centre.outbox.pending:
                    break
                await asyncio.sleep(0.1)
            rows = await fetch(dsn, "SELECT * FROM audit ORDER BY id")
        finally:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
            await close_centre(centre)
        assert [(r["who"], r["action"], r["outcome"], r["status"]) for r in rows] == [
            (who("supervisor"), "taker.logout", "accepted", 202),
            (who("taker"), "incident.classify", "failed", 503),
        ]
        assert rows[1]["reason"] == "incident database unavailable"
        assert all(abs(r["at"].timestamp() - taken_at) < 5 for r in rows)
        assert all(r["recorded_at"].timestamp() > r["at"].timestamp() for r in rows)


class TestConfigurationChanges:
    async def test_a_queue_change_through_the_served_app_keeps_before_and_after(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """On the app the runtime serves (``build_app``), with the configuration in real
        PostgreSQL: a PATCH of one queue is one row with the queue before and after
        (versions included); a stale version is a refused row, and nothing changed."""
        seed = seed_of(config.load())
        keeper = CentreKeeper(PgConfigStore(fresh_migrated_dsn, seed), LocalCopy(tmp_path), seed)
        record = await keeper.start()
        async with Outbox(tmp_path / "o.db") as outbox:
            app = build_app(
                distributor=core.Distributor(record.centre()),
                conferences=conference.Conferences(AGENCIES),
                submit=lambda _: None,
                metrics=Metrics(),
                tokens=TOKENS,
                health=dict,
                incidents=IncidentStore(fresh_migrated_dsn),
                centre=keeper,
                people=People(
                    PeopleSettings(),
                    dsn=fresh_migrated_dsn,
                    state_path=tmp_path / "people.sqlite3",
                    profile="lab",
                ),
                audit_sink=OutboxAuditSink(outbox),
            )
            admin = {"Authorization": "Bearer tok-admin"}
            async with TestClient(TestServer(app)) as client:
                queue = await (await client.get("/api/queues/main", headers=admin)).json()
                body = {"version": queue["version"], "ring_timeout_s": 9.0}
                ok = await client.patch("/api/queues/main", json=body, headers=admin)
                stale = await client.patch("/api/queues/main", json=body, headers=admin)
                assert (ok.status, stale.status) == (200, 409)
            assert await drain(outbox, fresh_migrated_dsn) == 2
        changed, refused = await audit_rows(fresh_migrated_dsn)
        assert (changed["who"], changed["action"], changed["target"], changed["outcome"]) == (
            who("admin"),
            "queue.update",
            "queue:main",
            "accepted",
        )
        before, after = json.loads(changed["before"]), json.loads(changed["after"])
        assert (before["ring_timeout_s"], after["ring_timeout_s"]) == (
            queue["ring_timeout_s"],
            9.0,
        )
        assert after["version"] == before["version"] + 1
        assert {k: v for k, v in after.items() if k not in ("ring_timeout_s", "version")} == {
            k: v for k, v in before.items() if k not in ("ring_timeout_s", "version")
        }
        assert (refused["action"], refused["outcome"], refused["status"]) == (
            "queue.update",
            "refused",
            409,
        )
        assert refused["before"] is None and refused["after"] is None
