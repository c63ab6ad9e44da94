"""The audit op (``AppendAudit``) and its sink, through the local outbox (no PostgreSQL)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siaga_pbx import audit
from siaga_pbx.incidents import (
    AppendAudit,
    AppendTimeline,
    Outbox,
    OutboxAuditSink,
    audit_op,
    decode_op,
    encode_op,
)

pytestmark = pytest.mark.timeout(30)

T0 = 1_750_000_000.0
QUEUES_BEFORE = [{"name": "main", "ring_timeout_s": 20.0, "overflow": {"queue": None}}]
QUEUES_AFTER = [{"name": "main", "ring_timeout_s": 15.0, "overflow": {"queue": "backup"}}]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def change(**overrides: Any) -> AppendAudit:
    fields: dict[str, Any] = {
        "at": T0,
        "who": "admin:0123456789ab",
        "role": "admin",
        "action": "queues.replace",
        "target": "queues",
        "status": 202,
        "source": "127.0.0.1",
        "request_id": "f" * 32,
        "before": QUEUES_BEFORE,
        "after": QUEUES_AFTER,
    }
    fields.update(overrides)
    return AppendAudit(**fields)


class TestAppendAudit:
    def test_round_trips_through_its_outbox_encoding(self) -> None:
        """Encoded and decoded, an audit op is the same op, nested before/after included."""
        op = change(reason="x\udcff", target="taker:\x00")
        kind, payload = encode_op(op)
        assert kind == "append_audit"
        assert payload.isascii()
        assert decode_op(kind, payload) == op

    @given(before=json_values, after=json_values)
    def test_any_json_document_round_trips(self, before: object, after: object) -> None:
        """Whatever JSON a route notes as before/after comes back unchanged from the outbox."""
        op = change(before=before, after=after)
        assert decode_op(*encode_op(op)) == op

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"who": ""}, "who must not be empty"),
            ({"action": ""}, "action must not be empty"),
            ({"outcome": "maybe"}, "outcome must be one of"),
            ({"status": True}, "status must be an int"),
            ({"before": {1, 2}}, "before must be JSON"),
            ({"after": {"x": math.nan}}, "after must be JSON"),
            ({"after": {"x": "y" * 300_000}}, "after longer than"),
            ({"at": -1.0}, "at out of range"),
            ({"target": "t" * 513}, "target longer than 512"),
        ],
    )
    def test_malformed_ops_are_the_callers_error(
        self, overrides: dict[str, Any], message: str
    ) -> None:
        """A malformed audit op is refused when built, with a message naming the field."""
        with pytest.raises(ValueError, match=message):
            change(**overrides)

    def test_an_audit_entry_becomes_the_same_op(self) -> None:
        """Every field of an ``audit.AuditEntry`` reaches its op unchanged."""
        entry = audit.AuditEntry(
            at=T0,
            who="sari",
            role="supervisor",
            action="taker.logout",
            target="taker:taker2",
            outcome="refused",
            status=409,
            reason="not logged in",
            user_id="u-7",
            username="sari",
            source="10.0.0.9",
            request_id="r1",
            after={"agency": "damkar"},
        )
        op = audit_op(entry)
        assert {name: getattr(op, name) for name in audit.AuditEntry.__slots__} == {
            name: getattr(entry, name) for name in audit.AuditEntry.__slots__
        }


class TestThroughTheOutbox:
    async def test_an_audit_op_survives_a_reopen_in_order_with_other_ops(
        self, tmp_path: Path
    ) -> None:
        """An audit op written between two timeline ops is still there, in its place,
        after the outbox file is closed and opened again."""
        path = tmp_path / "o.db"
        timeline = AppendTimeline("c1", "arrived", T0)
        async with Outbox(path) as outbox:
            await outbox.append(timeline)
            await outbox.append(change())
            await outbox.append(timeline)
        async with Outbox(path) as again:
            assert [e.op for e in await again.peek()] == [timeline, change(), timeline]

    async def test_the_sink_writes_durably_before_it_returns(self, tmp_path: Path) -> None:
        """``OutboxAuditSink.write`` returns once the op is in the file: a second
        outbox opened on the same file finds it."""
        path = tmp_path / "o.db"
        entry = audit.AuditEntry(T0, "ops:abc", "ops", "taker.pause", "taker:t1")
        async with Outbox(path) as outbox:
            await OutboxAuditSink(outbox).write(entry)
            async with Outbox(path) as reader:
                assert [e.op for e in await reader.peek()] == [audit_op(entry)]

    async def test_posted_entries_are_written_in_order_by_flush(self, tmp_path: Path) -> None:
        """``post`` (the consumer's hook: it may not wait) writes in the order posted;
        ``flush`` waits for all of them."""
        async with Outbox(tmp_path / "o.db") as outbox:
            sink = OutboxAuditSink(outbox)
            entries = [audit.handset_feature("t1", a, ok=True) for a in ("login", "pause")]
            for e in entries:
                sink.post(e)
            assert outbox.pending == 0  # nothing waited for the write
            await sink.flush()
            assert [e.op for e in await outbox.peek()] == [audit_op(e) for e in entries]

    async def test_a_failed_post_is_logged_not_raised(self, tmp_path: Path) -> None:
        """A posted write that fails (the outbox closed) is logged with the entry's
        action; nobody awaits it, so it must not vanish silently."""
        from structlog.testing import capture_logs

        outbox = Outbox(tmp_path / "o.db")
        await outbox.open()
        await outbox.close()
        sink = OutboxAuditSink(outbox)
        with capture_logs() as logs:
            sink.post(audit.handset_feature("t1", "logout", ok=False, reason="offline"))
            await sink.flush()
            await asyncio.sleep(0)
        failed = [e for e in logs if e["event"] == "audit.write_failed"]
        assert [e["audit_action"] for e in failed] == ["taker.logout"]
