"""The centre's configuration on a real PostgreSQL (migration 0009): seeded
once, kept across restarts, versioned, shared safely by two instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from siaga_pbx import conference, config, core
from siaga_pbx.adapters.conference import AgencyWatcher
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.centre import (
    CentreKeeper,
    LocalCopy,
    PgConfigStore,
    Stale,
    StoreUnavailable,
    add_centre_routes,
    seed_of,
)

from ._support import fetch, fetchval

pytestmark = pytest.mark.timeout(60)

ADMIN = {"Authorization": "Bearer t-admin"}
Client = TestClient[web.Request, web.Application]


def settings(**overrides: Any) -> config.Settings:
    return config.load(**overrides)


@asynccontextmanager
async def instance(
    dsn: str, state_dir: Path, s: config.Settings | None = None
) -> AsyncIterator[tuple[Client, CentreKeeper, list[object]]]:
    """One service instance's configuration side: keeper, real store, API."""
    seed = seed_of(s or settings())
    keeper = CentreKeeper(PgConfigStore(dsn, seed), LocalCopy(state_dir), seed)
    record = await keeper.start()
    submitted: list[object] = []
    app = make_app(
        distributor=core.Distributor(record.centre()),
        submit=submitted.append,
        metrics_=Metrics(),
        tokens={"t-admin": "admin"},
        health=dict,
    )
    keeper.attach(submitted.append)
    add_centre_routes(app, keeper)
    async with TestClient(TestServer(app)) as client:
        yield client, keeper, submitted


async def get(client: Client, path: str) -> Any:
    r = await client.get(path, headers=ADMIN)
    assert r.status == 200, await r.text()
    return await r.json()


class TestSeedAndRestart:
    async def test_empty_tables_are_seeded_once_from_the_settings(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """The first start writes the settings' queues and takers at version 1; a later
        start with other settings keeps the database's."""
        first = settings(
            queues=[{"name": "main", "priority_numbers": {"0215550100": 1}}],
            takers=[{"id": "t1", "endpoint": "PJSIP/t1"}, {"id": "t2", "endpoint": "PJSIP/t2"}],
        )
        async with instance(fresh_migrated_dsn, tmp_path, first) as (_, keeper, _s):
            assert keeper.source == "database"
        rows = await fetch(fresh_migrated_dsn, "SELECT taker_id, version FROM call_takers")
        assert sorted((r["taker_id"], r["version"]) for r in rows) == [("t1", 1), ("t2", 1)]
        assert await fetchval(fresh_migrated_dsn, "SELECT count(*) FROM priority_numbers") == 1
        other = settings(
            queues=[{"name": "main"}, {"name": "other"}],
            takers=[{"id": "t9", "endpoint": "PJSIP/t9"}],
        )
        async with instance(fresh_migrated_dsn, tmp_path, other) as (client, keeper, _s):
            assert list(keeper.record.queues) == ["main"]
            assert list(keeper.record.takers) == ["t1", "t2"]
            assert (await get(client, "/api/queues/main"))["priority_numbers"] == {"0215550100": 1}

    async def test_agencies_seeded_by_the_migration_are_kept_with_a_version(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """The agencies table is not empty after 0004: its rows are the record, version 1."""
        s = settings(
            agencies=[{"code": "sar", "name": "Basarnas", "endpoints": ["PJSIP/disp-sar"]}]
        )
        async with instance(fresh_migrated_dsn, tmp_path, s) as (client, _, _s):
            agencies = (await get(client, "/api/agencies"))["agencies"]
        assert [(a["code"], a["version"]) for a in agencies] == [
            ("damkar", 1),
            ("dinkes", 1),
            ("polisi", 1),
        ]

    async def test_a_change_survives_a_restart(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """A queue, a taker and an agency changed through the API are there after a restart,
        with their new versions; the takers keep their order."""
        async with instance(fresh_migrated_dsn, tmp_path / "a") as (client, _, _s):
            q = await get(client, "/api/queues/main")
            r = await client.patch(
                "/api/queues/main",
                json={"version": q["version"], "ring_timeout_s": 11.5, "music_class": "calm"},
                headers=ADMIN,
            )
            assert r.status == 200
            new = await client.post(
                "/api/takers",
                json={"id": "taker0", "endpoint": "PJSIP/taker0", "queues": ["backup"]},
                headers=ADMIN,
            )
            assert new.status == 201
            a = await get(client, "/api/agencies/polisi")
            r = await client.patch(
                "/api/agencies/polisi",
                json={"version": a["version"], "ring_timeout_s": 12.3},
                headers=ADMIN,
            )
            assert r.status == 200
            before = await get(client, "/api/queues")
        async with instance(fresh_migrated_dsn, tmp_path / "b") as (client, keeper, _s):
            assert await get(client, "/api/queues") == before
            main = keeper.record.centre().queue("main")
            assert (main.ring_timeout_s, main.music_class) == (11.5, "calm")
            assert list(keeper.record.takers) == ["taker1", "taker2", "taker3", "taker0"]
            polisi = await get(client, "/api/agencies/polisi")
            assert (polisi["ring_timeout_s"], polisi["version"]) == (12.3, 2)  # exactly 12.3

    async def test_a_removed_queue_takes_its_priority_numbers(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Deleting a queue deletes its priority numbers; nothing is left behind."""
        s = settings(
            queues=[{"name": "main"}, {"name": "spare", "priority_numbers": {"0215550100": 2}}],
            takers=[{"id": "t1", "endpoint": "PJSIP/t1"}],
        )
        async with instance(fresh_migrated_dsn, tmp_path, s) as (client, _, submitted):
            r = await client.delete("/api/queues/spare?version=1", headers=ADMIN)
            assert r.status == 200, await r.text()
            assert [type(e) for e in submitted] == [core.ConfigChanged]
        assert await fetchval(fresh_migrated_dsn, "SELECT count(*) FROM priority_numbers") == 0
        assert [r["name"] for r in await fetch(fresh_migrated_dsn, "SELECT name FROM queues")] == [
            "main"
        ]


class TestVersions:
    async def test_two_instances_never_overwrite_each_other(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Instance B writes with the version it read before A's write: 409. With the
        version A wrote, B's write keeps A's change (it is built on the database's row)."""
        async with (
            instance(fresh_migrated_dsn, tmp_path / "a") as (a, _, _s),
            instance(fresh_migrated_dsn, tmp_path / "b") as (b, _, _t),
        ):
            q = await get(b, "/api/queues/main")
            r = await a.patch(
                "/api/queues/main", json={"version": q["version"], "wrapup_s": 3.0}, headers=ADMIN
            )
            assert r.status == 200
            stale = await b.patch(
                "/api/queues/main", json={"version": q["version"], "max_misses": 9}, headers=ADMIN
            )
            assert stale.status == 409
            fresh = await b.patch(
                "/api/queues/main",
                json={"version": (await r.json())["version"], "max_misses": 9},
                headers=ADMIN,
            )
            assert fresh.status == 200
            got = await fresh.json()
            assert (got["wrapup_s"], got["max_misses"], got["version"]) == (
                3.0,
                9,
                q["version"] + 2,
            )

    async def test_a_stale_edit_rolls_back(self, fresh_migrated_dsn: str) -> None:
        """A store edit that raises leaves the database as it was."""
        store = PgConfigStore(fresh_migrated_dsn, seed_of(settings()))
        await store.load()

        def stale(_: object) -> Any:
            raise Stale("queue 'main' is at version 2, not 1")

        with pytest.raises(Stale):
            await store.edit(stale)
        rows = await fetch(fresh_migrated_dsn, "SELECT version FROM queues")
        assert [r["version"] for r in rows] == [1, 1]


class TestOutages:
    async def test_without_postgresql_the_store_says_so_and_the_keeper_falls_back(
        self, closed_port_dsn: str, tmp_path: Path
    ) -> None:
        """PostgreSQL down: the store raises StoreUnavailable; the keeper starts from settings."""
        seed = seed_of(settings())
        with pytest.raises(StoreUnavailable):
            await PgConfigStore(closed_port_dsn, seed, timeout_s=2).load()
        keeper = CentreKeeper(PgConfigStore(closed_port_dsn, seed), LocalCopy(tmp_path), seed)
        await keeper.start()
        assert keeper.source == "settings"
        assert keeper.record.centre() == settings().centre()

    async def test_the_keeper_catches_up_when_postgresql_answers(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Started without PostgreSQL, the keeper loads the record once it answers and hands
        the difference to the cores."""
        s = settings()
        async with instance(fresh_migrated_dsn, tmp_path / "a", s) as (client, _, _s):
            q = await get(client, "/api/queues/main")
            r = await client.patch(
                "/api/queues/main", json={"version": q["version"], "wrapup_s": 5.0}, headers=ADMIN
            )
            assert r.status == 200
        seed = seed_of(s)
        store = PgConfigStore(fresh_migrated_dsn, seed)
        keeper = CentreKeeper(store, LocalCopy(tmp_path / "b"), seed, retry_s=0.05)
        keeper.store = PgConfigStore("postgresql://postgres@127.0.0.1:1/none", seed)
        await keeper.start()
        assert keeper.source == "settings"
        submitted: list[object] = []
        keeper.attach(submitted.append)
        keeper.store = store  # PostgreSQL is back
        await asyncio.wait_for(keeper.run(), timeout=10)
        assert keeper.source == "database"
        changed = [e for e in submitted if isinstance(e, core.ConfigChanged)]
        assert [c.config.queue("main").wrapup_s for c in changed] == [5.0]


class TestAgencyWatcher:
    async def test_an_agency_edit_reaches_the_watcher_through_notify(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """The AgencyWatcher of another instance sees an agency edited through the API."""
        seen: list[conference.AgencyDirectory] = []
        watcher = AgencyWatcher(fresh_migrated_dsn, seen.append, retry_s=0.1)
        task = asyncio.create_task(watcher.run())
        try:
            async with instance(fresh_migrated_dsn, tmp_path) as (client, _, _s):
                for _ in range(100):
                    if seen:
                        break
                    await asyncio.sleep(0.05)
                a = await get(client, "/api/agencies/dinkes")
                r = await client.patch(
                    "/api/agencies/dinkes",
                    json={"version": a["version"], "endpoints": ["PJSIP/disp-dinkes2"]},
                    headers=ADMIN,
                )
                assert r.status == 200
                for _ in range(100):
                    got = seen[-1].get("dinkes") if seen else None
                    if got is not None and got.endpoints == ("PJSIP/disp-dinkes2",):
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail(f"the watcher never saw the change: {seen[-1:]}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
