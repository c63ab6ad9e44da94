"""Users and personal tokens on a real PostgreSQL: migration 0007, the store,
the lab seed, and the user and token routes over the real HTTP app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from siaga_pbx import core
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.adapters.people_api import add_people_routes
from siaga_pbx.config import ConfigError, load
from siaga_pbx.people import (
    LAB_USERS,
    Passwords,
    People,
    PeopleSettings,
    SignInRefused,
    StaleVersion,
    User,
    UsernameTaken,
)
from siaga_pbx.people._store import UserStore

from ._support import fetch, fetchval

pytestmark = pytest.mark.timeout(60)

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
Client = TestClient[web.Request, web.Application]
CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"), core.TakerConfig("taker2", "PJSIP/t2")),
    default_queue="main",
)


def draft(username: str, *roles: str, **extra: Any) -> User:
    return User(
        user_id="",
        username=username,
        display_name=username.title(),
        roles=roles,
        enabled=True,
        password_hash=FAST.hash("pw-" + username),
        **extra,
    )


class TestMigration:
    async def test_tables_and_rules(self, fresh_migrated_dsn: str) -> None:
        """0007 makes users and api_tokens; the table refuses what the API refuses."""
        tables = {
            r["tablename"]
            for r in await fetch(
                fresh_migrated_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"users", "api_tokens"} <= tables
        applied = await fetchval(
            fresh_migrated_dsn,
            "SELECT count(*) FROM schema_migrations WHERE name = $1",
            "0007_users.sql",
        )
        assert applied == 1
        conn = await asyncpg.connect(fresh_migrated_dsn)
        try:
            insert = (
                "INSERT INTO users (username, display_name, roles, password_hash, taker_id)"
                " VALUES ($1, 'X', $2, $3, $4)"
            )
            good_hash = FAST.hash("x")
            with pytest.raises(asyncpg.CheckViolationError):  # a call taker needs a taker id
                await conn.execute(insert, "t1", ["call_taker"], good_hash, None)
            with pytest.raises(asyncpg.CheckViolationError):  # an unknown role
                await conn.execute(insert, "t2", ["root"], good_hash, None)
            with pytest.raises(asyncpg.CheckViolationError):  # never a plain password
                await conn.execute(insert, "t3", ["ops"], "hunter2", None)
            await conn.execute(insert, "t4", ["call_taker"], good_hash, "taker1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="never deleted"):
                await conn.execute("DELETE FROM users WHERE username = 't4'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("TRUNCATE users CASCADE")
        finally:
            await conn.close()


class TestUserStore:
    async def test_create_update_versions(self, fresh_migrated_dsn: str) -> None:
        """A user is created at version 1; an update bumps it; a stale one is refused."""
        store = UserStore(fresh_migrated_dsn)
        try:
            u = await store.create(draft("rina", "call_taker", taker_id="taker1"))
            assert u.version == 1
            assert len(u.user_id) == 36
            with pytest.raises(UsernameTaken):
                await store.create(draft("rina", "ops"))
            u2 = await store.update("rina", 1, {"display_name": "Rina S."})
            assert (u2.version, u2.display_name) == (2, "Rina S.")
            with pytest.raises(StaleVersion) as stale:
                await store.update("rina", 1, {"display_name": "lost update"})
            assert stale.value.current == 2
            assert (await store.user("rina")).display_name == "Rina S."  # type: ignore[union-attr]
        finally:
            await store.close()


@dataclass
class Centre:
    client: Client
    people: People
    dsn: str

    async def sign_in(self, username: str, password: str) -> dict[str, str]:
        r = await self.client.post(
            "/api/session", json={"username": username, "password": password}
        )
        assert r.status == 201, await r.text()
        return {"X-CSRF-Token": (await r.json())["csrf_token"]}


@pytest.fixture
async def centre(fresh_migrated_dsn: str, tmp_path: Path) -> AsyncIterator[Centre]:
    people = People(
        PeopleSettings(refresh_s=3600),
        dsn=fresh_migrated_dsn,
        state_path=tmp_path / "people.sqlite3",
        profile="lab",
        passwords=Passwords(FAST),
    )
    await people.open()
    assert await people.refresh()  # seeds the lab users into the empty table
    app = make_app(
        distributor=core.Distributor(CENTRE),
        submit=lambda _e: None,
        metrics_=Metrics(),
        tokens={"cfg-admin": "admin"},
        health=dict,
    )
    add_people_routes(app, people)
    async with TestClient(TestServer(app)) as client:
        yield Centre(client, people, fresh_migrated_dsn)
    await people.close()


class TestLabSeed:
    async def test_lab_users_are_seeded_once(self, centre: Centre) -> None:
        """An empty users table gets the documented lab users, argon2id-hashed; once."""
        rows = await fetch(centre.dsn, "SELECT username, roles, password_hash FROM users")
        assert {r["username"] for r in rows} == {u.username for u in LAB_USERS}
        assert all(r["password_hash"].startswith("$argon2id$") for r in rows)
        assert await centre.people.refresh()
        assert await fetchval(centre.dsn, "SELECT count(*) FROM users") == len(LAB_USERS)
        for lab in LAB_USERS:  # every documented password works
            await centre.sign_in(lab.username, lab.password)

    def test_production_refuses_the_lab_seed(self, tmp_path: Path) -> None:
        """The production profile never seeds the lab users: config and People refuse."""
        with pytest.raises(ConfigError, match="seed_lab_users"):
            load(
                profile="production",
                ari={"password": "a-real-secret-123"},
                http={"tokens": {}},
                people={"seed_lab_users": True},
            )
        with pytest.raises(ValueError, match="lab profile"):
            People(
                PeopleSettings(seed_lab_users=True),
                dsn="postgresql://x@127.0.0.1:1/x",
                state_path=tmp_path / "p.sqlite3",
                profile="production",
            )
        quiet = People(
            PeopleSettings(),
            dsn="postgresql://x@127.0.0.1:1/x",
            state_path=tmp_path / "p.sqlite3",
            profile="production",
        )
        assert not quiet.seed_lab
        assert quiet.cookie_secure


class TestUserRoutes:
    async def test_admin_creates_edits_and_disables_a_user(self, centre: Centre) -> None:
        """Admin CRUD: create (201), stale PATCH (409), PATCH (200), disable ends sessions."""
        c = centre.client
        admin = await centre.sign_in("admin", "admin-lab")
        body = {
            "username": "rina",
            "display_name": "Rina",
            "roles": ["call_taker"],
            "taker_id": "taker2",
            "handset": "PJSIP/taker2",
            "password": "rina-secret",
        }
        r = await c.post("/api/users", json=body, headers=admin)
        assert r.status == 201, await r.text()
        created = await r.json()
        assert "password" not in repr(created) and "hash" not in repr(created)
        assert (await c.post("/api/users", json=body, headers=admin)).status == 409
        bad = await c.post(
            "/api/users", json={**body, "username": "x2", "taker_id": None}, headers=admin
        )
        assert bad.status == 422
        assert [e["field"] for e in (await bad.json())["errors"]] == ["taker_id"]

        patched = await c.patch(
            "/api/users/rina", json={"version": 1, "display_name": "Rina S."}, headers=admin
        )
        assert patched.status == 200
        assert (await patched.json())["version"] == 2
        stale = await c.patch(
            "/api/users/rina", json={"version": 1, "display_name": "lost"}, headers=admin
        )
        assert stale.status == 409
        got = await (await c.get("/api/users/rina", headers=admin)).json()
        assert got["display_name"] == "Rina S."

        # rina signs in (in a second client) and works as taker2
        async with TestClient(TestServer(c.app)) as rina_client:
            r = await rina_client.post(
                "/api/session", json={"username": "rina", "password": "rina-secret"}
            )
            assert r.status == 201
            assert (await rina_client.get("/api/state")).status == 200
            assert (await c.delete("/api/users/rina", headers=admin)).status == 200
            assert (await rina_client.get("/api/state")).status == 401  # out at once
            again = await rina_client.post(
                "/api/session", json={"username": "rina", "password": "rina-secret"}
            )
            assert again.status == 401
        assert (
            await fetchval(centre.dsn, "SELECT enabled FROM users WHERE username='rina'") is False
        )

    async def test_only_admins_manage_users(self, centre: Centre) -> None:
        """A supervisor gets 403 on the user routes; no credentials get 401."""
        c = centre.client
        assert (await c.get("/api/users")).status == 401
        sup = await centre.sign_in("supervisor", "supervisor-lab")
        assert (await c.get("/api/users", headers=sup)).status == 403


class TestTokenRoutes:
    async def test_create_use_revoke(self, centre: Centre) -> None:
        """A token is shown once, stored hashed, works as its owner, records its
        last use in a batch, and once revoked is refused."""
        c = centre.client
        me = await centre.sign_in("taker1", "taker1-lab")
        r = await c.post("/api/tokens", json={"name": "my script"}, headers=me)
        assert r.status == 201, await r.text()
        created = await r.json()
        secret = created["token"]
        stored = await fetch(centre.dsn, "SELECT token_hash, last_used_at FROM api_tokens")
        assert len(stored) == 1
        assert secret.encode() not in bytes(stored[0]["token_hash"])
        assert stored[0]["last_used_at"] is None
        listed = await (await c.get("/api/tokens", headers=me)).json()
        assert [t["id"] for t in listed["tokens"]] == [created["id"]]
        assert "token" not in listed["tokens"][0]  # shown once, at creation only

        async with TestClient(TestServer(c.app)) as program:
            bearer = {"Authorization": f"Bearer {secret}"}
            who = await (await program.get("/api/session", headers=bearer)).json()
            assert (who["username"], who["via"], who["roles"]) == (
                "taker1",
                "token",
                ["call_taker"],
            )
            assert (await program.post("/api/takers/taker1/pause", headers=bearer)).status == 202
            assert (await program.post("/api/takers/taker2/pause", headers=bearer)).status == 403
            # the use is written in a batch, not by the request
            assert await fetchval(centre.dsn, "SELECT last_used_at FROM api_tokens") is None
            await centre.people.flush()
            assert await fetchval(centre.dsn, "SELECT last_used_at FROM api_tokens") is not None

            other = await centre.sign_in("taker2", "taker2-lab")
            # another taker cannot see or revoke it (404: not theirs to know)
            assert (await c.delete(f"/api/tokens/{created['id']}", headers=other)).status == 404
            mine = await centre.sign_in("taker1", "taker1-lab")
            assert (await c.delete(f"/api/tokens/{created['id']}", headers=mine)).status == 204
            assert (await program.get("/api/state", headers=bearer)).status == 401
        revoked = await fetchval(centre.dsn, "SELECT revoked_at FROM api_tokens")
        assert revoked is not None

    async def test_admin_makes_a_token_for_someone_scoped(self, centre: Centre) -> None:
        """An admin makes a token for another user; roles beyond the owner's are refused."""
        c = centre.client
        admin = await centre.sign_in("admin", "admin-lab")
        too_much = await c.post(
            "/api/tokens", json={"name": "x", "username": "ops", "roles": ["admin"]}, headers=admin
        )
        assert too_much.status == 422
        r = await c.post("/api/tokens", json={"name": "dash", "username": "ops"}, headers=admin)
        assert r.status == 201
        secret = (await r.json())["token"]
        assert (await r.json())["created_by"] == "admin"
        taker = await centre.sign_in("taker1", "taker1-lab")
        refused = await c.post("/api/tokens", json={"name": "x", "username": "ops"}, headers=taker)
        assert refused.status == 403
        async with TestClient(TestServer(c.app)) as program:
            bearer = {"Authorization": f"Bearer {secret}"}
            assert (await program.get("/api/state", headers=bearer)).status == 200
            assert (await program.get("/api/users", headers=bearer)).status == 403


class TestOffline:
    async def test_seen_users_sign_in_with_the_database_gone(
        self, centre: Centre, tmp_path: Path, closed_port_dsn: str
    ) -> None:
        """A new process whose PostgreSQL is down signs in users from the local copy."""
        await centre.people.close()
        offline = People(
            PeopleSettings(),
            dsn=closed_port_dsn,
            state_path=tmp_path / "people.sqlite3",
            profile="lab",
            passwords=Passwords(FAST),
        )
        await offline.open()
        try:
            assert not await offline.refresh()
            signed = await offline.sign_in("supervisor", "supervisor-lab", "127.0.0.1")
            assert signed.user.roles == ("supervisor",)
        finally:
            await offline.close()


class TestProvisioning:
    def test_user_add_creates_the_first_admin(
        self, fresh_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """``siaga-pbx user-add`` reads the password from stdin and stores only its hash."""
        import io

        from pgtools import run_sync
        from siaga_pbx import cli

        monkeypatch.setenv("SIAGA_DATABASE_DSN", fresh_migrated_dsn)
        monkeypatch.setenv("SIAGA_STATE_DIR", str(tmp_path))
        # The command configures logging for a process of its own (cached
        # loggers); in the test process that would blind later tests'
        # structlog.testing.capture_logs.
        monkeypatch.setattr("siaga_pbx.logs.configure", lambda *a, **k: None)
        monkeypatch.setattr("sys.stdin", io.StringIO("first-admin-secret\n"))
        argv = ["user-add", "chief", "--display-name", "Chief", "--role", "admin"]
        assert cli.main(argv) == 0
        rows = run_sync(lambda: fetch(fresh_migrated_dsn, "SELECT * FROM users"))
        assert [(r["username"], r["roles"]) for r in rows] == [("chief", ["admin"])]
        assert PasswordHasher().verify(rows[0]["password_hash"], "first-admin-secret")
        monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
        assert cli.main([*argv[:1], "chief2", *argv[2:]]) == 2  # too short a password


class TestAddedByHand:
    async def test_unknown_user_triggers_a_bounded_refresh(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """A user added straight into PostgreSQL can sign in before the next periodic
        refresh, but unknown names refresh the copy at most every few seconds."""
        now = [1_000_000.0]
        people = People(
            PeopleSettings(refresh_s=3600),
            dsn=fresh_migrated_dsn,
            state_path=tmp_path / "people.sqlite3",
            profile="lab",
            clock=lambda: now[0],
            passwords=Passwords(FAST),
        )
        await people.open()
        try:
            assert await people.refresh()
            store = UserStore(fresh_migrated_dsn)
            await store.create(draft("late", "ops"))
            await store.close()
            with pytest.raises(SignInRefused, match="wrong username"):  # refreshed just now
                await people.sign_in("late", "pw-late", "127.0.0.9")
            now[0] += 6
            signed = await people.sign_in("late", "pw-late", "127.0.0.9")
            assert signed.user.username == "late"
        finally:
            await people.close()
