"""The incident REST API over a real PostgreSQL (aiohttp test server)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from problem_shape import fields, problem_of
from siaga_pbx.core import CallbackEntry
from siaga_pbx.incidents import (
    IncidentRecorder,
    IncidentStore,
    Outbox,
    add_incident_routes,
    describe_recording,
)

from ._support import drain, fetchval, unique, write_wav

pytestmark = pytest.mark.timeout(60)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TOKENS = {"tok-admin": "admin", "tok-sup": "supervisor", "tok-taker": "taker", "tok-ops": "ops"}
Client = TestClient[web.Request, web.Application]


def auth(role: str) -> dict[str, str]:
    token = {v: k for k, v in TOKENS.items()}[role]
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Seeded:
    client: Client
    dsn: str
    incidents: list[uuid.UUID]  # oldest first
    numbers: list[str]
    recording_id: str
    recording_path: Path
    recording_bytes: bytes
    callback_call_id: str


@pytest.fixture
async def api(fresh_migrated_dsn: str, tmp_path: Path) -> AsyncIterator[Seeded]:
    """Five incidents, oldest first: answered call with a recording (A), abandoned
    call with a callback (B), repeat call from A, then C and D."""
    a, b, c, d = (unique("0812") for _ in range(4))
    numbers = [a, b, a, c, d]
    incidents: list[uuid.UUID] = []
    wav = tmp_path / "rec.wav"
    wav_bytes = write_wav(wav, 1.0)
    async with Outbox(tmp_path / "o.db") as outbox:
        rec = IncidentRecorder(outbox)
        for i, number in enumerate(numbers):
            call_id = f"call-{i}"
            t = T0 + 100 * i
            incidents.append(
                await rec.open_call(call_id, arrived_at=t, number=number, name=f"Caller '{i}'")
            )
            await rec.timeline(call_id, "arrived", t)
            if number == b:
                await rec.timeline(call_id, "abandoned", t + 20)
                await rec.callback(CallbackEntry(call_id, number, t, t + 20, "main", "ringing"))
            else:
                await rec.timeline(call_id, "answered", t + 4 + i, {"taker_id": "t1"})
                await rec.timeline(call_id, "hung_up", t + 64 + i)
        await rec.recording("call-0", await describe_recording(wav), started_at=T0 + 4)
        await drain(outbox, fresh_migrated_dsn, repeat_window_s=3600)
    store = await IncidentStore.connect(fresh_migrated_dsn)
    await store.classify(incidents[0], {"category": "fire", "disposition": "emergency"}, "seed")
    await store.classify(incidents[3], {"category": "medical", "disposition": "prank"}, "seed")
    recording = await fetchval(fresh_migrated_dsn, "SELECT id FROM recordings")
    app = web.Application()
    add_incident_routes(app, store, TOKENS)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Seeded(
            client,
            fresh_migrated_dsn,
            incidents,
            numbers,
            str(recording),
            wav,
            wav_bytes,
            "call-1",
        )
    finally:
        await client.close()
        await store.close()


async def get_json(client: Client, url: str, role: str = "taker", status: int = 200) -> Any:
    resp = await client.get(url, headers=auth(role))
    assert resp.status == status, await resp.text()
    return await resp.json()


class TestAuth:
    async def test_missing_token_is_401(self, api: Seeded) -> None:
        """No Authorization header: 401 with a Bearer challenge."""
        resp = await api.client.get("/api/incidents")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await problem_of(resp, 401))["detail"] == "missing bearer token"

    async def test_unknown_token_is_401(self, api: Seeded) -> None:
        """A token not in the table: 401."""
        resp = await api.client.get(
            "/api/incidents", headers={"Authorization": "Bearer tok-admin-x"}
        )
        assert resp.status == 401

    async def test_ops_may_not_read_incidents(self, api: Seeded) -> None:
        """The ops role gets 403 on incident data (personal data)."""
        body = await get_json(api.client, "/api/incidents", role="ops", status=403)
        assert "ops" in body["detail"]

    async def test_taker_may_not_download_recordings(self, api: Seeded) -> None:
        """Only supervisors and admins may download recordings."""
        await get_json(api.client, f"/api/recordings/{api.recording_id}", status=403)


class TestListIncidents:
    async def test_lists_newest_first_with_derived_times(self, api: Seeded) -> None:
        """All incidents come back newest first, each with wait/talk from the timeline."""
        body = await get_json(api.client, "/api/incidents")
        ids = [item["id"] for item in body["items"]]
        assert ids == [str(i) for i in reversed(api.incidents)]
        assert body["next_cursor"] is None
        oldest = body["items"][-1]
        assert oldest["wait_s"] == pytest.approx(4.0)
        assert oldest["talk_s"] == pytest.approx(60.0)
        assert oldest["caller"]["name"] == "Caller '0'"
        abandoned = body["items"][-2]
        assert abandoned["wait_s"] == pytest.approx(20.0)
        assert abandoned["talk_s"] is None
        assert abandoned["disposition"] == "abandoned"

    async def test_filters(self, api: Seeded) -> None:
        """category, disposition, number and the from/to time range each narrow the list."""

        async def ids(query: str) -> list[str]:
            body = await get_json(api.client, f"/api/incidents?{query}")
            return [item["id"] for item in body["items"]]

        inc = [str(i) for i in api.incidents]
        assert await ids("category=fire") == [inc[0]]
        assert await ids("disposition=prank") == [inc[3]]
        assert await ids("disposition=abandoned") == [inc[1]]
        assert await ids(f"number={api.numbers[0]}") == [inc[2], inc[0]]
        # from inclusive, to exclusive; epoch seconds or ISO 8601 with offset
        assert await ids(f"from={T0 + 100:.0f}&to={T0 + 300:.0f}") == [inc[2], inc[1]]
        assert await ids("from=2025-06-15T22:08:20%2B07:00") == [inc[4], inc[3], inc[2], inc[1]]

    async def test_paginates_with_cursor(self, api: Seeded) -> None:
        """Following next_cursor with limit=2 visits every incident once, in order."""
        seen: list[str] = []
        url = "/api/incidents?limit=2"
        pages = 0
        while True:
            body = await get_json(api.client, url)
            assert len(body["items"]) <= 2
            seen += [item["id"] for item in body["items"]]
            pages += 1
            if body["next_cursor"] is None:
                break
            url = f"/api/incidents?limit=2&cursor={body['next_cursor']}"
        assert pages == 3
        assert seen == [str(i) for i in reversed(api.incidents)]

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("limit=500", "limit"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("category=alien", "category"),
            ("disposition=maybe", "disposition"),
            ("from=yesterday", "from"),
            ("from=2025-06-15T10:00:00", "from"),  # no offset: ambiguous
            ("cursor=bm9wZQ", "cursor"),
            ("number=%00", "number"),
            ("colour=red", "colour"),
            ("limit=1&limit=2", "limit"),
        ],
    )
    async def test_bad_query_is_422_with_field(self, api: Seeded, query: str, field: str) -> None:
        """Each invalid query parameter yields a 422 problem naming the offending field."""
        resp = await api.client.get(f"/api/incidents?{query}", headers=auth("taker"))
        body = await problem_of(resp, 422)
        assert field in fields(body), body
        assert {e["in"] for e in body["errors"]} == {"query"}


class TestGetIncident:
    async def test_returns_calls_timeline_recordings_links(self, api: Seeded) -> None:
        """One incident with its call (and derived times), ordered timeline,
        recording and the repeat-caller link from the later call."""
        body = await get_json(api.client, f"/api/incidents/{api.incidents[0]}")
        assert body["category"] == "fire"
        assert [c["call_id"] for c in body["calls"]] == ["call-0"]
        assert body["calls"][0]["wait_s"] == pytest.approx(4.0)
        assert body["calls"][0]["taker_id"] == "t1"
        stages = [e["stage"] for e in body["timeline"]]
        assert stages[:3] == ["arrived", "answered", "hung_up"]
        assert stages[3] == "classified"
        assert [r["id"] for r in body["recordings"]] == [api.recording_id]
        assert body["links"] == [
            {
                "incident_id": str(api.incidents[2]),
                "kind": "repeat_caller",
                "direction": "from",
                "created_at": body["links"][0]["created_at"],
            }
        ]
        later = await get_json(api.client, f"/api/incidents/{api.incidents[2]}")
        assert [(lk["incident_id"], lk["direction"]) for lk in later["links"]] == [
            (str(api.incidents[0]), "to")
        ]

    async def test_unknown_and_malformed_ids(self, api: Seeded) -> None:
        """An unknown id is a 404 problem; a non-UUID id is a 422 naming the path field."""
        resp = await api.client.get(f"/api/incidents/{uuid.uuid4()}", headers=auth("taker"))
        await problem_of(resp, 404)
        resp = await api.client.get("/api/incidents/not-a-uuid", headers=auth("taker"))
        body = await problem_of(resp, 422)
        assert [(e["in"], e["field"]) for e in body["errors"]] == [("path", "id")]


class TestPatchIncident:
    async def test_valid_patch_changes_and_audits(self, api: Seeded) -> None:
        """A valid classification is applied and one timeline audit entry records who
        changed what from what."""
        url = f"/api/incidents/{api.incidents[4]}"
        patch = {
            "category": "animal_rescue",
            "priority": 2,
            "disposition": "emergency",
            "address_text": "Jl. Sudirman 1, Pekanbaru",
            "notes": "siamang on a power line",
            "responders": ["Damkar unit 3", "PLN"],
        }
        resp = await api.client.patch(url, json=patch, headers=auth("supervisor"))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert {k: body[k] for k in patch} == patch
        audits = [e for e in body["timeline"] if e["stage"] == "classified"]
        assert len(audits) == 1
        who = audits[0]["detail"]["who"]
        assert who == "supervisor:" + hashlib.sha256(b"tok-sup").hexdigest()[:12]
        assert audits[0]["detail"]["changes"]["category"] == {"from": None, "to": "animal_rescue"}
        assert audits[0]["detail"]["changes"]["priority"] == {"from": None, "to": 2}
        # the same patch again changes nothing and adds no audit entry
        again = await (await api.client.patch(url, json=patch, headers=auth("taker"))).json()
        assert len([e for e in again["timeline"] if e["stage"] == "classified"]) == 1

    @pytest.mark.parametrize(
        ("patch", "field"),
        [
            ({"priority": 9}, "priority"),
            ({"priority": "2"}, "priority"),
            ({"priority": True}, "priority"),
            ({"category": "alien"}, "category"),
            ({"disposition": "maybe"}, "disposition"),
            ({"responders": "Damkar"}, "responders"),
            ({"responders": [""]}, "responders.0"),
            ({"notes": "x" * 20001}, "notes"),
            ({"notes": "a\u0000b"}, "notes"),
            ({"colour": "red"}, "colour"),
            ({"category": None}, ""),
            ({}, ""),
        ],
    )
    async def test_invalid_patch_is_422_with_field_messages(
        self, api: Seeded, patch: dict[str, object], field: str
    ) -> None:
        """Invalid classifications are refused with a 422 problem and a message for the
        field; nothing changes."""
        url = f"/api/incidents/{api.incidents[4]}"
        resp = await api.client.patch(url, json=patch, headers=auth("taker"))
        body = await problem_of(resp, 422)
        assert field in fields(body), body
        after = await get_json(api.client, url)
        assert after["category"] is None
        assert not [e for e in after["timeline"] if e["stage"] == "classified"]

    @pytest.mark.parametrize(
        ("raw", "status"), [(b"{not json", 400), (b"\xff\xfe", 400), (b"[1, 2]", 422), (b"", 422)]
    )
    async def test_non_object_body_is_a_problem(self, api: Seeded, raw: bytes, status: int) -> None:
        """A body that is not JSON is a 400 problem; JSON that is not an object, or no
        body, a 422 on the whole body; never a 500."""
        resp = await api.client.patch(
            f"/api/incidents/{api.incidents[4]}", data=raw, headers=auth("taker")
        )
        body = await problem_of(resp, status)
        if status == 422:
            assert list(fields(body)) == [""], body

    async def test_patch_unknown_incident_is_404(self, api: Seeded) -> None:
        """Classifying an incident that does not exist is a 404."""
        resp = await api.client.patch(
            f"/api/incidents/{uuid.uuid4()}", json={"priority": 1}, headers=auth("admin")
        )
        assert resp.status == 404


class TestRecordingDownload:
    async def test_supervisor_downloads_the_exact_file(self, api: Seeded) -> None:
        """The WAV comes back byte for byte with its checksum header."""
        resp = await api.client.get(
            f"/api/recordings/{api.recording_id}", headers=auth("supervisor")
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "audio/wav"
        data = await resp.read()
        assert data == api.recording_bytes
        assert resp.headers["X-Recording-SHA256"] == hashlib.sha256(data).hexdigest()

    async def test_tampered_file_is_refused_and_logged(self, api: Seeded) -> None:
        """A file whose bytes changed since registration is refused with 409 and logged."""
        data = bytearray(api.recording_bytes)
        data[-1] ^= 0xFF  # same size, different content
        api.recording_path.write_bytes(bytes(data))
        with capture_logs() as logs:
            resp = await api.client.get(
                f"/api/recordings/{api.recording_id}", headers=auth("admin")
            )
        assert "integrity" in (await problem_of(resp, 409))["detail"]
        tampered = [e for e in logs if e["event"] == "recording_tampered"]
        assert len(tampered) == 1
        assert tampered[0]["log_level"] == "error"

    async def test_missing_file_and_unknown_id(self, api: Seeded) -> None:
        """A vanished file and an unknown recording id are both 404."""
        await get_json(api.client, f"/api/recordings/{uuid.uuid4()}", role="admin", status=404)
        api.recording_path.unlink()
        resp = await api.client.get(f"/api/recordings/{api.recording_id}", headers=auth("admin"))
        assert (await problem_of(resp, 404))["detail"] == "recording file missing"


class TestDatabaseDown:
    async def test_api_answers_503_while_postgres_is_down_then_recovers(
        self, closed_port_dsn: str, migrated_dsn: str
    ) -> None:
        """A store built from a DSN starts without PostgreSQL, answers 503 (not 500)
        while it is unreachable, and serves once it is reachable."""
        store = IncidentStore(closed_port_dsn)
        app = web.Application()
        add_incident_routes(app, store, TOKENS)
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        try:
            resp = await client.get("/api/incidents", headers=auth("admin"))
            assert (await problem_of(resp, 503))["detail"] == "incident database unavailable"
            store._dsn = migrated_dsn  # PostgreSQL is back (same store, next request)
            resp = await client.get("/api/incidents", headers=auth("admin"))
            assert resp.status == 200
            assert (await resp.json())["items"] == []
        finally:
            await client.close()
            await store.close()
