"""A real 112 call through real Asterisk 22, the real service and PostgreSQL.

The caller (sipp, from the operator trunk's address) streams tone A; the
call taker's handset (sipp) answers and streams tone B. The service greets
the caller, rings the taker while the greeting plays, bridges the two and
records the call bridge from arrival to the end.
"""

from __future__ import annotations

import time
from typing import Any

from harness import TONE_A_HZ, TONE_B_HZ, AsteriskInstance, SippRunner
from harness.checks import tone_strength, wait_clean, wait_rows, wav_duration
from harness.service import ServiceFactory

CALLER_NUMBER = "081234567890"
PAI_NUMBER = "+6281234567890"
CALLER_NAME = "Budi Santoso"
ABSENT_HZ = 2500  # a frequency nobody sends


def _call_row(dsn: str) -> dict[str, Any]:
    rows = wait_rows(dsn, "SELECT * FROM calls")
    assert len(rows) == 1, rows
    return rows[0]


def _stages(dsn: str, call_id: str, until: str) -> list[dict[str, Any]]:
    return wait_rows(
        dsn,
        "SELECT stage, at, detail FROM timeline WHERE call_id = $1 ORDER BY id",
        call_id,
        until=lambda rows: any(r["stage"] == until for r in rows),
    )


class TestFoundationCall:
    def test_caller_hangs_up_first(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """Greeted, rung, bridged, recorded with both tones, caller id kept, nothing left over."""
        svc = service()
        assert svc.health()["event_loop"] == "uvloop"  # the shipped default
        handset = sipp.handset(5071, ring_s=1.0, hangup="wait", timeout_s=60)
        began = time.monotonic()
        caller = sipp.caller(
            from_user=CALLER_NUMBER,
            from_name=CALLER_NAME,
            pai=f"sip:{PAI_NUMBER}@operator.example",
            talk_s=4.0,
            hangup="bye",
            timeout_s=60,
        )
        caller_result = caller.wait()
        elapsed = time.monotonic() - began
        handset_result = handset.wait()
        caller_result.assert_ok()
        handset_result.assert_ok()
        assert caller_result.ended_by == ["local"]
        assert handset_result.ended_by == ["remote"]

        call = _call_row(e2e_dsn)
        assert (call["caller_number"], call["caller_name"], call["pai"]) == (
            CALLER_NUMBER,
            CALLER_NAME,
            PAI_NUMBER,
        )
        call_id = str(call["call_id"])
        timeline = _stages(e2e_dsn, call_id, "hung_up")
        stages = [r["stage"] for r in timeline]
        for stage in ("arrived", "queued", "offered", "answered", "hung_up"):
            assert stage in stages, stages
        assert stages.index("arrived") < stages.index("offered") < stages.index("answered")

        # The taker's handset rang while the greeting was still playing: the
        # offer came well within the greeting's length, not after it.
        at = {r["stage"]: r["at"].timestamp() for r in reversed(timeline)}
        assert at["offered"] - at["arrived"] < 1.0, timeline

        recording = asterisk_instance.recording_dir / f"siaga-call-{call_id}.wav"
        rows = wait_rows(e2e_dsn, "SELECT * FROM recordings WHERE call_id = $1", call_id)
        assert rows[0]["path"] == str(recording)
        assert recording.exists()
        duration = wav_duration(recording)
        # From arrival to the caller's BYE: ringing (~1 s) plus 4 s of talk.
        assert 4.0 <= duration <= elapsed + 0.5, (duration, elapsed)
        assert tone_strength(recording, TONE_A_HZ) > 500
        assert tone_strength(recording, TONE_B_HZ) > 500
        assert tone_strength(recording, ABSENT_HZ) < 200  # the measure can tell
        wait_clean(asterisk_instance)

    def test_taker_hangs_up_first(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """When the taker ends the call normally the caller is released and all is torn down."""
        service()
        handset = sipp.handset(5071, ring_s=0.5, talk_s=3.0, hangup="bye", timeout_s=60)
        caller = sipp.caller(from_user=CALLER_NUMBER, talk_s=30.0, hangup="wait", timeout_s=60)
        handset_result = handset.wait()
        caller_result = caller.wait()
        handset_result.assert_ok()
        caller_result.assert_ok()
        assert handset_result.ended_by == ["local"]
        assert caller_result.ended_by == ["remote"]
        call_id = str(_call_row(e2e_dsn)["call_id"])
        timeline = _stages(e2e_dsn, call_id, "hung_up")
        ends = [r for r in timeline if r["stage"] == "hung_up"]
        assert ends[0]["detail"]["side"] == "taker", ends
        recording = asterisk_instance.recording_dir / f"siaga-call-{call_id}.wav"
        wait_rows(e2e_dsn, "SELECT 1 FROM recordings WHERE call_id = $1", call_id)
        assert tone_strength(recording, TONE_A_HZ) > 500
        assert tone_strength(recording, TONE_B_HZ) > 500
        wait_clean(asterisk_instance)
