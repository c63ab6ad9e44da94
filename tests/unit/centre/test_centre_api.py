"""The configuration API over real cores and a store in memory: validation,
lossless round trips, versions, live apply, removals that would drop a caller."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from problem_shape import fields, problem_of
from siaga_pbx import conference, config, core
from siaga_pbx.centre import AUDIT, LocalCopy

from ._support import ADMIN, Centre, lab_settings, make_centre

Client = TestClient[web.Request, web.Application]

# One changed value for every field of a queue but its name (the key). The
# test below fails when a field is added to QueueSettings and not here.
QUEUE_CHANGES: dict[str, Any] = {
    "strategy": "ringall",
    "ring_timeout_s": 9.5,
    "retry_delay_s": 2.5,
    "wrapup_s": 4.0,
    "max_misses": 5,
    "overflow": {
        "after_s": 45.0,
        "queue": "",
        "dial": "PJSIP/backup-centre",
        "when_no_takers": False,
    },
    "hold": "music",
    "music_class": "siaga-calm",
    "reassurance_every_s": 12.0,
    "announce_position": True,
    "requeue_dropped_at_head": False,
    "requeue_on_taker_hangup": True,
    "normal_priority": 6,
    "repeat_caller_priority": 2,
    "repeat_window_s": 900.0,
    "priority_numbers": {"0215550100": 1},
}


@pytest.fixture
async def centre(tmp_path: Path) -> Centre:
    return await make_centre(tmp_path)


@pytest.fixture
async def client(centre: Centre) -> AsyncIterator[Client]:
    async with TestClient(TestServer(centre.app)) as c:
        yield c


async def get(client: Client, path: str) -> Any:
    r = await client.get(path, headers=ADMIN)
    assert r.status == 200, await r.text()
    return await r.json()


class TestStrictValidation:
    async def test_misspelt_key_in_a_queue_of_the_list_is_refused_with_its_path(
        self, client: Client, centre: Centre
    ) -> None:
        """PUT /api/queues with ``ring_timout_s`` in a queue: 422 naming queues.0.ring_timout_s."""
        queues = (await get(client, "/api/queues"))["queues"]
        queues[0]["ring_timout_s"] = 3
        r = await client.put("/api/queues", json={"queues": queues}, headers=ADMIN)
        assert "queues.0.ring_timout_s" in fields(await problem_of(r, 422))
        assert centre.store.edits == 0
        assert centre.submitted == []

    async def test_misspelt_key_nested_in_a_patch_is_refused_with_its_path(
        self, client: Client, centre: Centre
    ) -> None:
        """A PATCH whose overflow holds ``after_z`` is 422 naming overflow.after_z."""
        q = await get(client, "/api/queues/main")
        overflow = q["overflow"] | {"after_z": 5}
        r = await client.patch(
            "/api/queues/main", json={"version": q["version"], "overflow": overflow}, headers=ADMIN
        )
        assert "overflow.after_z" in fields(await problem_of(r, 422))
        assert await get(client, "/api/queues/main") == q

    async def test_misspelt_key_in_a_new_taker_is_refused(self, client: Client) -> None:
        """POST /api/takers with ``queue`` for ``queues`` is 422 naming it."""
        r = await client.post(
            "/api/takers",
            json={"id": "taker9", "endpoint": "PJSIP/taker9", "queue": ["main"]},
            headers=ADMIN,
        )
        assert "queue" in fields(await problem_of(r, 422))

    async def test_the_cores_own_rules_apply(self, client: Client, centre: Centre) -> None:
        """An overflow to an unknown queue, or a taker in one, is 422 with the core's reason."""
        q = await get(client, "/api/queues/main")
        r = await client.patch(
            "/api/queues/main",
            json={"version": q["version"], "overflow": {"queue": "nowhere"}},
            headers=ADMIN,
        )
        assert "nowhere" in (await problem_of(r, 422))["detail"]
        t = await client.post(
            "/api/takers",
            json={"id": "taker9", "endpoint": "PJSIP/taker9", "queues": ["ghost"]},
            headers=ADMIN,
        )
        assert "ghost" in (await problem_of(t, 422))["detail"]
        assert centre.submitted == []

    async def test_the_key_cannot_change_in_a_patch(self, client: Client) -> None:
        """Renaming through PATCH is refused: the name is the queue's key."""
        q = await get(client, "/api/queues/main")
        r = await client.patch(
            "/api/queues/main", json={"version": q["version"], "name": "other"}, headers=ADMIN
        )
        assert "key" in (await problem_of(r, 422))["detail"]


class TestProblems:
    async def test_every_refusal_is_a_problem(self, client: Client, centre: Centre) -> None:
        """No such item is a 404 problem, a stale write a 409, PostgreSQL down a 503, each
        an RFC 9457 problem with the reason in ``detail``."""
        assert (
            "ghost"
            in (await problem_of(await client.get("/api/queues/ghost", headers=ADMIN), 404))[
                "detail"
            ]
        )
        missing = await client.patch("/api/takers/ghost", json={"version": 1}, headers=ADMIN)
        assert "ghost" in (await problem_of(missing, 404))["detail"]
        stale = await client.delete("/api/agencies/polisi?version=99", headers=ADMIN)
        assert "version" in (await problem_of(stale, 409))["detail"]
        centre.store.down = True
        down = await client.delete("/api/agencies/polisi?version=1", headers=ADMIN)
        assert "not changed" in (await problem_of(down, 503))["detail"]

    async def test_a_null_for_a_field_that_is_never_null_is_refused(self, client: Client) -> None:
        """A PATCH may leave a field out, but ``null`` for a number is 422 naming the field."""
        q = await get(client, "/api/queues/main")
        r = await client.patch(
            "/api/queues/main", json={"version": q["version"], "wrapup_s": None}, headers=ADMIN
        )
        assert set(fields(await problem_of(r, 422))) == {"wrapup_s"}
        assert await get(client, "/api/queues/main") == q

    async def test_validation_names_where_the_field_is(self, client: Client) -> None:
        """A bad version in the query is ``in: query``; a bad field of the body ``in: body``."""
        r = await client.delete("/api/queues/main?version=x&force=1", headers=ADMIN)
        errors = {(e["in"], e["field"]) for e in (await problem_of(r, 422))["errors"]}
        assert errors == {("query", "version"), ("query", "force")}
        r = await client.post(
            "/api/queues/main/priority-numbers",
            json={"number": "12ab", "priority": 1},
            headers=ADMIN,
        )
        errors = {(e["in"], e["field"]) for e in (await problem_of(r, 422))["errors"]}
        assert errors == {("body", "number")}


class TestLosslessRoundTrip:
    def test_every_queue_field_has_a_change(self) -> None:
        """The round-trip table covers every field of a queue (a new field must be added)."""
        assert set(QUEUE_CHANGES) == set(config.QueueSettings.model_fields) - {"name"}

    @pytest.mark.parametrize("field", sorted(QUEUE_CHANGES))
    @pytest.mark.parametrize("method", ["PATCH", "PUT"])
    async def test_one_field_changes_and_nothing_else(
        self, client: Client, field: str, method: str
    ) -> None:
        """GET, change one field, write back: that field changed, every other field is as it was."""
        before = await get(client, "/api/queues")
        main = next(q for q in before["queues"] if q["name"] == "main")
        assert main[field] != QUEUE_CHANGES[field]
        if method == "PATCH":
            body: Any = {"version": main["version"], field: QUEUE_CHANGES[field]}
            r = await client.patch("/api/queues/main", json=body, headers=ADMIN)
        else:
            queues = [
                q | {field: QUEUE_CHANGES[field]} if q is main else q for q in before["queues"]
            ]
            r = await client.put("/api/queues", json={"queues": queues}, headers=ADMIN)
        assert r.status == 200, await r.text()
        after = await get(client, "/api/queues")
        new_main = next(q for q in after["queues"] if q["name"] == "main")
        assert new_main == main | {field: QUEUE_CHANGES[field], "version": main["version"] + 1}
        others = [q for q in after["queues"] if q["name"] != "main"]
        assert others == [q for q in before["queues"] if q["name"] != "main"]

    async def test_get_then_put_keeps_what_the_old_api_dropped(self, tmp_path: Path) -> None:
        """Priority numbers and settings, repeat_window_s and music_class survive GET → PUT."""
        queue = {
            "name": "main",
            "priority_numbers": {"0215550100": 1},
            "normal_priority": 7,
            "repeat_caller_priority": 4,
            "repeat_window_s": 120.0,
            "music_class": "siaga-calm",
        }
        settings = lab_settings(
            queues=[queue, {"name": "backup"}], takers=[{"id": "t1", "endpoint": "PJSIP/t1"}]
        )
        c = await make_centre(tmp_path, settings)
        async with TestClient(TestServer(c.app)) as client:
            got = await get(client, "/api/queues")
            r = await client.put("/api/queues", json=got, headers=ADMIN)
            assert r.status == 200
            again = await get(client, "/api/queues")
        assert again == got
        main = again["queues"][0]
        assert {k: main[k] for k in queue} == queue
        assert c.submitted == []  # nothing changed: nothing for the core to do


class TestVersions:
    async def test_stale_patch_is_409_and_changes_nothing(
        self, client: Client, centre: Centre
    ) -> None:
        """Two admins read version 1; the second write names it and gets 409."""
        q = await get(client, "/api/queues/main")
        first = await client.patch(
            "/api/queues/main", json={"version": q["version"], "wrapup_s": 3.0}, headers=ADMIN
        )
        assert first.status == 200
        assert (await first.json())["version"] == q["version"] + 1
        second = await client.patch(
            "/api/queues/main", json={"version": q["version"], "wrapup_s": 8.0}, headers=ADMIN
        )
        assert "version" in (await problem_of(second, 409))["detail"]
        assert (await get(client, "/api/queues/main"))["wrapup_s"] == 3.0

    async def test_stale_put_and_stale_delete_are_409(self, client: Client) -> None:
        """A list written back after another change, and a delete of an old version, are 409."""
        listed = await get(client, "/api/queues")
        t = await get(client, "/api/takers/taker1")
        patched = await client.patch(
            "/api/queues/backup", json={"version": 1, "max_misses": 2}, headers=ADMIN
        )
        assert patched.status == 200
        assert (await client.put("/api/queues", json=listed, headers=ADMIN)).status == 409
        ok = await client.patch(
            "/api/takers/taker1", json={"version": t["version"], "logged_in": False}, headers=ADMIN
        )
        assert ok.status == 200
        stale = await client.delete(f"/api/takers/taker1?version={t['version']}", headers=ADMIN)
        assert stale.status == 409
        assert "taker1" in {x["id"] for x in (await get(client, "/api/takers"))["takers"]}

    async def test_a_write_must_name_the_version_it_read(self, client: Client) -> None:
        """A PATCH without ``version`` and a DELETE without ``?version=`` are 422."""
        r = await client.patch("/api/takers/taker1", json={"logged_in": False}, headers=ADMIN)
        assert "version" in fields(await problem_of(r, 422))
        gone = await client.delete("/api/takers/taker1", headers=ADMIN)
        assert fields(await problem_of(gone, 422)) == {"version": "Field required"}

    async def test_changing_a_priority_number_moves_its_queues_version(
        self, client: Client
    ) -> None:
        """A number added through its own route shows in its queue, whose version moves on."""
        q = await get(client, "/api/queues/main")
        r = await client.post(
            "/api/queues/main/priority-numbers",
            json={"number": "0215550199", "priority": 1, "label": "RSUD"},
            headers=ADMIN,
        )
        assert r.status == 201
        assert (await r.json())["version"] == 1
        after = await get(client, "/api/queues/main")
        assert after["priority_numbers"] == {"0215550199": 1}
        assert after["version"] == q["version"] + 1
        stale = await client.patch(
            "/api/queues/main", json={"version": q["version"], "wrapup_s": 1.0}, headers=ADMIN
        )
        assert stale.status == 409


class TestLiveApply:
    async def test_a_queue_change_reaches_the_distribution_core(
        self, client: Client, centre: Centre
    ) -> None:
        """After a PATCH the core's snapshot shows the new strategy, its config the new timeout."""
        q = await get(client, "/api/queues/main")
        r = await client.patch(
            "/api/queues/main",
            json={"version": q["version"], "strategy": "ringall", "ring_timeout_s": 7.0},
            headers=ADMIN,
        )
        assert r.status == 200
        assert [type(e) for e in centre.submitted] == [core.ConfigChanged]
        centre.apply()
        snap = centre.distributor.snapshot(1000.0)
        assert next(x for x in snap["queues"] if x["name"] == "main")["strategy"] == "ringall"
        assert centre.distributor.config.queue("main").ring_timeout_s == 7.0

    async def test_a_new_taker_is_available_at_once(self, client: Client, centre: Centre) -> None:
        """A taker created through the API is in the core's snapshot, available."""
        r = await client.post(
            "/api/takers",
            json={"id": "taker9", "endpoint": "PJSIP/taker9", "queues": ["main"]},
            headers=ADMIN,
        )
        assert r.status == 201
        assert await r.json() == {
            "id": "taker9",
            "endpoint": "PJSIP/taker9",
            "queues": ["main"],
            "logged_in": True,
            "version": 1,
        }
        centre.apply()
        takers = {t["id"]: t for t in centre.distributor.snapshot(1000.0)["takers"]}
        assert takers["taker9"]["status"] == "available"

    async def test_an_agency_change_reaches_the_conference_core(
        self, client: Client, centre: Centre
    ) -> None:
        """A dispatcher handset added to an agency is in the conference core's directory."""
        a = await get(client, "/api/agencies/polisi")
        r = await client.patch(
            "/api/agencies/polisi",
            json={"version": a["version"], "endpoints": [*a["endpoints"], "PJSIP/disp-polisi2"]},
            headers=ADMIN,
        )
        assert r.status == 200
        assert [type(e) for e in centre.submitted] == [conference.DirectoryChanged]
        centre.apply()
        polisi = centre.conferences.directory.get("polisi")
        assert polisi is not None
        assert polisi.endpoints == ("PJSIP/disp-polisi", "PJSIP/disp-polisi2")

    async def test_a_priority_number_reaches_the_core(self, client: Client, centre: Centre) -> None:
        """A priority number created through the API is one of the queue's rules in the core."""
        r = await client.post(
            "/api/queues/backup/priority-numbers",
            json={"number": "+62215550111", "priority": 0},
            headers=ADMIN,
        )
        assert r.status == 201
        centre.apply()
        rules = centre.distributor.config.queue("backup").priorities
        assert rules.numbers == {"+62215550111": 0}

    async def test_every_change_is_audited_with_before_and_after(self, tmp_path: Path) -> None:
        """The audit seam sees who changed which item, from what, to what."""
        seen: list[tuple[str, str, Any, Any]] = []

        async def sink(request: web.Request, action: str, target: str, b: Any, a: Any) -> None:
            seen.append((action, target, b, a))

        c = await make_centre(tmp_path)
        c.app[AUDIT] = sink
        async with TestClient(TestServer(c.app)) as client:
            t = await get(client, "/api/takers/taker2")
            r = await client.patch(
                "/api/takers/taker2",
                json={"version": t["version"], "queues": ["backup"]},
                headers=ADMIN,
            )
            assert r.status == 200
            assert seen == [("taker.update", "taker:taker2", t, await r.json())]

    async def test_without_a_sink_the_audit_is_a_log_line(self, client: Client) -> None:
        """The default audit seam logs the action, the target and the caller's role."""
        with capture_logs() as logs:
            r = await client.post(
                "/api/queues", json={"name": "night", "strategy": "linear"}, headers=ADMIN
            )
        assert r.status == 201
        line = next(e for e in logs if e["event"] == "config.changed")
        assert (line["action"], line["target"], line["role"]) == (
            "queue.create",
            "queue:night",
            "admin",
        )
        assert line["before"] is None
        assert line["after"]["strategy"] == "linear"


class TestRemovals:
    def _waiting_in_backup(self, centre: Centre) -> None:
        """A caller waits in ``backup``: nobody there is logged in."""
        for tid in ("taker1", "taker2", "taker3"):
            centre.distributor.handle(core.TakerLoggedOut(tid), 1000.0)
        centre.distributor.handle(
            core.CallerArrived("c1", core.CallerIdentity(number="0811000001"), "backup"), 1000.0
        )
        snap = centre.distributor.snapshot(1001.0)
        assert [len(q["waiting"]) for q in snap["queues"] if q["name"] == "backup"] == [1]

    async def test_a_queue_with_a_waiting_caller_cannot_be_removed(self, tmp_path: Path) -> None:
        """DELETE and a PUT without the queue are 409 with the reason while a caller waits in it."""
        settings = lab_settings(
            queues=[{"name": "main"}, {"name": "backup"}],
            takers=[
                {"id": f"taker{n}", "endpoint": f"PJSIP/taker{n}", "queues": ["main", "backup"]}
                for n in (1, 2, 3)
            ],
        )
        c = await make_centre(tmp_path, settings)
        self._waiting_in_backup(c)
        async with TestClient(TestServer(c.app)) as client:
            # the takers first, so that only the waiting caller stands in the way
            for tid in ("taker1", "taker2", "taker3"):
                t = await get(client, f"/api/takers/{tid}")
                ok = await client.patch(
                    f"/api/takers/{tid}",
                    json={"version": t["version"], "queues": ["main"]},
                    headers=ADMIN,
                )
                assert ok.status == 200
            r = await client.delete("/api/queues/backup?version=1", headers=ADMIN)
            assert "1 waiting" in (await problem_of(r, 409))["detail"]
            main = await get(client, "/api/queues/main")
            put = await client.put("/api/queues", json={"queues": [main]}, headers=ADMIN)
            assert put.status == 409
            assert "backup" in {q["name"] for q in (await get(client, "/api/queues"))["queues"]}
            c.distributor.handle(core.CallerHungUp("c1"), 1002.0)  # served (or gone): now it may go
            gone = await client.delete("/api/queues/backup?version=1", headers=ADMIN)
            assert gone.status == 200, await gone.text()

    async def test_a_taker_on_a_call_leaves_after_it(self, client: Client, centre: Centre) -> None:
        """Deleting a taker on a call is accepted for after the call: the call goes on."""
        for tid in ("taker2", "taker3"):
            centre.distributor.handle(core.TakerLoggedOut(tid), 1000.0)
        cmds = centre.distributor.handle(
            core.CallerArrived("c1", core.CallerIdentity(number="0811000001"), "main"), 1000.0
        )
        ring = next(c for c in cmds if isinstance(c, core.RingHandset))
        centre.distributor.handle(core.HandsetAnswered(ring.attempt_id), 1001.0)
        r = await client.delete("/api/takers/taker1?version=1", headers=ADMIN)
        assert r.status == 200
        assert (await r.json())["after_call"] is True
        centre.apply(1002.0)
        snap = centre.distributor.snapshot(1003.0)
        taker1 = next(t for t in snap["takers"] if t["id"] == "taker1")
        assert taker1["status"] == "on_call"
        assert [c["call_id"] for q in snap["queues"] for c in q["connected"]] == ["c1"]


class TestRolesAndOutages:
    async def test_reads_for_admin_supervisor_ops_writes_for_admin(self, client: Client) -> None:
        """GETs answer admin, supervisor and ops; a supervisor's write is 403; no token is 401."""
        for token in ("t-admin", "t-sup", "t-ops"):
            r = await client.get("/api/queues", headers={"Authorization": f"Bearer {token}"})
            assert r.status == 200, token
        taker = {"Authorization": "Bearer t-taker"}
        assert (await client.get("/api/queues", headers=taker)).status == 403
        assert (await client.get("/api/agencies", headers=taker)).status == 200  # to conference
        sup = {"Authorization": "Bearer t-sup"}
        body = {"version": 1, "wrapup_s": 1.0}
        assert (await client.patch("/api/queues/main", json=body, headers=sup)).status == 403
        assert (await client.patch("/api/queues/main", json=body)).status == 401

    async def test_with_the_database_down_reads_work_and_writes_are_503(
        self, client: Client, centre: Centre
    ) -> None:
        """No PostgreSQL: GET answers from the record in force; a write changes nothing (503)."""
        centre.store.down = True
        q = await get(client, "/api/queues/main")
        r = await client.patch(
            "/api/queues/main", json={"version": q["version"], "wrapup_s": 2.0}, headers=ADMIN
        )
        assert r.status == 503
        assert centre.submitted == []
        assert await get(client, "/api/queues/main") == q

    async def test_a_start_without_the_database_uses_the_local_copy(self, tmp_path: Path) -> None:
        """The last good record saved in state_dir serves a start with PostgreSQL down."""
        first = await make_centre(tmp_path)
        async with TestClient(TestServer(first.app)) as client:
            q = await get(client, "/api/queues/main")
            r = await client.patch(
                "/api/queues/main", json={"version": q["version"], "wrapup_s": 6.0}, headers=ADMIN
            )
            assert r.status == 200
        saved = json.loads((tmp_path / LocalCopy.NAME).read_text())
        assert next(x for x in saved["queues"] if x["name"] == "main")["wrapup_s"] == 6.0
        second = await make_centre(tmp_path, down=True)  # a new start, PostgreSQL down
        record = second.keeper.record
        assert second.keeper.source == "local copy"
        assert record.centre().queue("main").wrapup_s == 6.0
        assert record.queues["main"].version == q["version"] + 1
