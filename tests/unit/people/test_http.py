"""The people routes over the real HTTP app (aiohttp TestClient), PostgreSQL down:
sign-in, cookie, CSRF, sign-out, throttling, expiry, restart, rules by person."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from siaga_pbx import core
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.adapters.people_api import add_people_routes
from siaga_pbx.people import People, PeopleSettings, SignInEvent

from ._support import Clock, offline_people

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(
        core.TakerConfig("taker1", "PJSIP/taker1"),
        core.TakerConfig("taker2", "PJSIP/taker2"),
    ),
    default_queue="main",
)
TOKENS = {"cfg-admin": "admin", "cfg-taker": "taker", "cfg-ops": "ops"}
Client = TestClient[web.Request, web.Application]


@dataclass
class Centre:
    client: Client
    people: People
    clock: Clock
    submitted: list[object]
    events: list[SignInEvent]
    path: Path

    async def sign_in(self, username: str, password: str) -> tuple[int, dict[str, Any]]:
        r = await self.client.post(
            "/api/session", json={"username": username, "password": password}
        )
        return r.status, await r.json()


async def start(tmp_path: Path, clock: Clock, **settings: Any) -> Centre:
    events: list[SignInEvent] = []
    path = tmp_path / "people.sqlite3"
    people = await offline_people(
        path, clock, PeopleSettings(refresh_s=3600, **settings), on_sign_in=events.append
    )
    distributor = core.Distributor(CENTRE)
    distributor.handle(
        core.CallerArrived("c1", core.CallerIdentity("081234567890", "Ibu Sari"), "main"),
        clock.now,
    )
    submitted: list[object] = []
    app = make_app(
        distributor=distributor,
        submit=submitted.append,
        metrics_=Metrics(),
        tokens=TOKENS,
        health=lambda: {"status": "ok"},
    )
    add_people_routes(app, people)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return Centre(client, people, clock, submitted, events, path)


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    c = await start(tmp_path, Clock())
    yield c
    await c.client.close()
    await c.people.close()


def cfg(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestSignIn:
    async def test_sign_in_cookie_csrf_sign_out(self, centre: Centre) -> None:
        """Sign-in sets an HttpOnly SameSite=Strict cookie; a change without the
        CSRF header is refused, with it accepted; sign-out ends the session."""
        c = centre.client
        r = await c.post("/api/session", json={"username": "taker1", "password": "taker1-pass"})
        assert r.status == 201
        body = await r.json()
        assert body["roles"] == ["call_taker"]
        assert body["taker_id"] == "taker1"
        set_cookie = r.headers["Set-Cookie"]
        assert "siaga_session=" in set_cookie
        assert "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie
        assert "Secure" not in set_cookie  # the lab profile speaks plain HTTP

        me = await (await c.get("/api/session")).json()
        assert me["username"] == "taker1"
        assert me["via"] == "session"
        assert me["csrf_token"] == body["csrf_token"]

        no_csrf = await c.post("/api/takers/taker1/pause", json={"reason": "break"})
        assert no_csrf.status == 403
        assert "X-CSRF-Token" in (await no_csrf.json())["detail"]
        wrong = await c.post(
            "/api/takers/taker1/pause", json={}, headers={"X-CSRF-Token": "0" * 64}
        )
        assert wrong.status == 403
        assert centre.submitted == []
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        ok = await c.post("/api/takers/taker1/pause", json={"reason": "break"}, headers=csrf)
        assert ok.status == 202
        assert centre.submitted == [core.TakerPaused("taker1", "break")]

        assert (await c.delete("/api/session")).status == 403  # sign-out needs CSRF too
        out = await c.delete("/api/session", headers=csrf)
        assert out.status == 204
        assert (await c.get("/api/state")).status == 401
        assert [e.outcome for e in centre.events] == ["signed_in", "signed_out"]

    async def test_wrong_password_and_unknown_user_look_alike(self, centre: Centre) -> None:
        """A wrong password, an unknown user and a disabled user all get the same 401."""
        answers = [
            await centre.sign_in("taker1", "nope-nope"),
            await centre.sign_in("nobody", "nope-nope"),
            await centre.sign_in("gone", "gone-pass-1"),
        ]
        assert {s for s, _ in answers} == {401}
        assert len({b["detail"] for _, b in answers}) == 1
        assert [e.reason for e in centre.events] == [
            "wrong password",
            "unknown user",
            "user disabled",
        ]

    async def test_sign_in_needs_json(self, centre: Centre) -> None:
        """JSON sent as text/plain (what another site may send without asking) is refused."""
        r = await centre.client.post(
            "/api/session",
            data=b'{"username": "taker1", "password": "taker1-pass"}',
            headers={"Content-Type": "text/plain"},
        )
        assert r.status == 415
        assert "Set-Cookie" not in r.headers
        form = await centre.client.post(
            "/api/session", data={"username": "taker1", "password": "taker1-pass"}
        )
        assert form.status == 400  # not JSON at all
        assert centre.events == []

    async def test_throttled_after_five_failures(self, centre: Centre) -> None:
        """Five failures lock the username: 429 with Retry-After even for the right
        password; each failure and the lock-out are logged without the password."""
        with capture_logs() as logs:
            for _ in range(5):
                assert (await centre.sign_in("taker1", "guess-guess"))[0] == 401
            r = await centre.client.post(
                "/api/session", json={"username": "taker1", "password": "taker1-pass"}
            )
        assert r.status == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 301
        assert "try again in" in (await r.json())["detail"]
        names = [e["event"] for e in logs]
        assert names.count("people.failed") == 5
        assert names.count("people.locked_out") == 1
        assert names.count("people.refused_locked") == 1
        assert "guess-guess" not in repr(logs)
        assert "taker1-pass" not in repr(logs)
        assert all(e.get("source") for e in logs if e["event"].startswith("people."))
        # another user from the same address is not locked (the address limit is 20)
        assert (await centre.sign_in("taker2", "taker2-pass"))[0] == 201
        centre.clock.advance(301)
        assert (await centre.sign_in("taker1", "taker1-pass"))[0] == 201

    async def test_address_is_throttled_across_usernames(self, tmp_path: Path) -> None:
        """Failures for many usernames from one address lock that address."""
        c = await start(tmp_path, Clock(), failures_per_address=3)
        try:
            for name in ("a1", "a2", "a3"):
                assert (await c.sign_in(name, "guess-guess"))[0] == 401
            assert (await c.sign_in("admin", "admin-pass"))[0] == 429
        finally:
            await c.client.close()
            await c.people.close()


class TestSessionLife:
    async def test_idle_timeout(self, centre: Centre) -> None:
        """A session unused past the idle timeout is refused (401)."""
        assert (await centre.sign_in("sup", "sup-pass-1"))[0] == 201
        centre.clock.advance(1700)
        assert (await centre.client.get("/api/state")).status == 200
        centre.clock.advance(1700)
        assert (await centre.client.get("/api/state")).status == 200
        centre.clock.advance(1801)
        r = await centre.client.get("/api/state")
        assert r.status == 401
        assert "sign in again" in (await r.json())["detail"]

    async def test_absolute_timeout(self, tmp_path: Path) -> None:
        """A busy session still ends at the absolute timeout."""
        c = await start(tmp_path, Clock(), session_absolute_s=3000)
        try:
            assert (await c.sign_in("sup", "sup-pass-1"))[0] == 201
            for _ in range(2):
                c.clock.advance(1400)
                assert (await c.client.get("/api/state")).status == 200
            c.clock.advance(300)
            assert (await c.client.get("/api/state")).status == 401
        finally:
            await c.client.close()
            await c.people.close()

    async def test_session_survives_a_restart(self, tmp_path: Path) -> None:
        """A new service process over the same state file knows the session."""
        clock = Clock()
        first = await start(tmp_path, clock)
        status, body = await first.sign_in("sup", "sup-pass-1")
        assert status == 201
        cookie = first.client.session.cookie_jar.filter_cookies(first.client.make_url("/"))
        secret = cookie["siaga_session"].value
        await first.client.close()
        await first.people.close()

        second = await start(tmp_path, clock)
        try:
            headers = {"Cookie": f"siaga_session={secret}", "X-CSRF-Token": body["csrf_token"]}
            r = await second.client.post(
                "/api/takers/taker2/pause", json={"reason": "break"}, headers=headers
            )
            assert r.status == 202
        finally:
            await second.client.close()
            await second.people.close()


class TestByPerson:
    async def test_a_taker_acts_only_on_their_own_state(self, centre: Centre) -> None:
        """taker1 may pause taker1 but not taker2; a supervisor may pause taker2."""
        _, body = await centre.sign_in("taker1", "taker1-pass")
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        other = await centre.client.post("/api/takers/taker2/logout", headers=csrf)
        assert other.status == 403
        assert (await centre.client.post("/api/takers/taker1/logout", headers=csrf)).status == 202
        await centre.client.delete("/api/session", headers=csrf)
        _, body = await centre.sign_in("sup", "sup-pass-1")
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        assert (await centre.client.post("/api/takers/taker2/logout", headers=csrf)).status == 202
        assert centre.submitted == [core.TakerLoggedOut("taker1"), core.TakerLoggedOut("taker2")]

    async def test_configuration_tokens_keep_working(self, centre: Centre) -> None:
        """Config tokens still authenticate; a shared taker token names no taker."""
        c = centre.client
        assert (await c.get("/api/state", headers=cfg("cfg-taker"))).status == 200
        assert (await c.post("/api/takers/taker1/login", headers=cfg("cfg-taker"))).status == 403
        assert (await c.post("/api/takers/taker1/logout", headers=cfg("cfg-admin"))).status == 202
        assert (await c.post("/api/takers/taker1/pause", headers=cfg("cfg-ops"))).status == 403

    async def test_ops_sees_no_caller_numbers(self, centre: Centre) -> None:
        """/api/state for ops (token or session) has no caller numbers; a supervisor's has."""
        c = centre.client
        full = await (await c.get("/api/state", headers=cfg("cfg-admin"))).text()
        assert "081234567890" in full
        ops_cfg = await (await c.get("/api/state", headers=cfg("cfg-ops"))).json()
        assert "081234567890" not in repr(ops_cfg)
        assert ops_cfg["queues"][0]["waiting"][0]["call_id"] == "c1"
        assert (await centre.sign_in("ops", "ops-pass-1"))[0] == 201
        ops_session = await (await c.get("/api/state")).text()
        assert "081234567890" not in ops_session
