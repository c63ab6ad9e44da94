"""OPD dispatchers and supervisors conferenced into a live 112 call, on real
Asterisk 22, real sipp phones, the real service and PostgreSQL.

Tones tell the parties apart: the caller streams 700 Hz, the call taker
1300 Hz, each dispatcher and the supervisor a frequency of their own. What
one party hears is captured exactly with an ARI *probe*: a snoop channel
spying on that party's outgoing direction (``spy=out``: the audio Asterisk
sends to the phone), recorded for a few seconds and analysed with an FFT.
The service ignores the probe (its id is ``siaga-snoop-probe-*``, a snoop
of ours that no party owns).
"""

from __future__ import annotations

import contextlib
import json
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import TONE_A_HZ, TONE_B_HZ, AsteriskInstance, SippProcess, SippRunner
from harness.checks import (
    media_port,
    rtp_received,
    tone_strength,
    wait_clean,
    wait_rows,
    wav_duration,
)
from harness.service import ServiceFactory, ServiceProcess

SCENARIOS = Path(__file__).parent / "scenarios"
DAMKAR_HZ = 1700
DINKES_HZ = 900
POLISI_HZ = 1500  # not 1900: 2x1900 - 1300 = 2500, the control frequency
SUPERVISOR_HZ = 2300
CONTROL_HZ = 2500  # a frequency nobody sends: the noise floor of each capture
PORTS = {"damkar": 5081, "dinkes": 5082, "polisi": 5083}


# ---- helpers -------------------------------------------------------------------


def taker_pressing(
    sipp: SippRunner, keys: str, *, keys_s: float, timeout_s: float = 60.0
) -> SippProcess:
    """taker1's handset: answers, streams tone B, presses 2 or 3 ``keys`` (SIP INFO)."""
    assert 2 <= len(keys) <= 3, keys
    padded = [*keys, "-"][:3]
    return sipp.handset(
        5071,
        name="taker1",
        ring_s=0.5,
        hangup="wait",
        timeout_s=timeout_s,
        scenario=SCENARIOS / "taker_keys.xml",
        variables={
            "keys_ticks": str(max(1, round(keys_s / 0.1))),
            "key1": padded[0],
            "key2": padded[1],
            "key3": padded[2],
        },
    )


def call_bridge(
    inst: AsteriskInstance, until: Callable[[list[str]], bool], timeout: float = 20.0
) -> tuple[str, list[str]]:
    """(call id, channel ids) of the one call bridge, once ``until(channels)`` holds."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        _, bridges = inst.ari("GET", "bridges")
        ours = [b for b in bridges or [] if str(b["id"]).startswith("siaga-call-")]
        seen = ours
        if len(ours) == 1 and until(list(ours[0]["channels"])):
            return str(ours[0]["id"])[len("siaga-call-") :], list(ours[0]["channels"])
        time.sleep(0.2)
    raise AssertionError(f"no call bridge as expected within {timeout}s: {seen}")


def _strengths(path: Path, hz: int, start_s: float) -> tuple[float, float, float]:
    """(strength of ``hz``, of the strongest party tone, of the control frequency)."""
    tones = (TONE_A_HZ, TONE_B_HZ, DAMKAR_HZ, DINKES_HZ, POLISI_HZ, SUPERVISOR_HZ)
    strongest = max(tone_strength(path, t, start_s=start_s) for t in tones)
    floor = max(tone_strength(path, CONTROL_HZ, start_s=start_s), 1.0)
    return tone_strength(path, hz, start_s=start_s), strongest, floor


def present(path: Path, hz: int, *, start_s: float = 0.0) -> bool:
    """``hz`` is as loud as a party's voice: within 5x of the strongest party tone.

    Relative measures, because a strong tone lifts the whole spectrum of a short
    capture and mixing leaves intermodulation products at about 1% (e.g.
    3x900 - 2x700 = 1300 Hz); a party really heard measures 20% to 100%."""
    level, strongest, floor = _strengths(path, hz, start_s)
    return level > 0.2 * strongest and level > 5 * floor


def absent(path: Path, hz: int, *, start_s: float = 0.0) -> bool:
    """``hz`` is at most an artefact: under 5% of the strongest party tone."""
    level, strongest, floor = _strengths(path, hz, start_s)
    return level < 0.05 * strongest or level < 5 * floor


def legs(channels: list[str]) -> list[str]:
    return [c for c in channels if c.startswith("siaga-disp-")]


def heard_by(inst: AsteriskInstance, channel_id: str, name: str, seconds: int = 3) -> Path:
    """Record what Asterisk sends to ``channel_id`` for ``seconds`` (an ARI snoop probe)."""
    snoop = f"siaga-snoop-probe-{name}"
    status, body = inst.ari(
        "POST", f"channels/{channel_id}/snoop/{snoop}?spy=out&whisper=none&app={inst.ari_app}"
    )
    assert status == 200, (status, body)
    path = inst.recording_dir / f"probe-{name}.wav"
    # The snoop enters the Stasis app asynchronously: until it has, Asterisk
    # answers 409 "Channel not in Stasis application". Retry briefly.
    deadline = time.monotonic() + 3
    while True:
        status, body = inst.ari(
            "POST",
            f"channels/{snoop}/record?name=probe-{name}&format=wav"
            f"&maxDurationSeconds={seconds}&ifExists=overwrite",
        )
        if status != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status in (200, 201), (status, body)
    time.sleep(seconds + 0.8)
    inst.ari("DELETE", f"channels/{snoop}")
    # Read the file only once Asterisk has finished it (header written).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        live, _ = inst.ari("GET", f"recordings/live/probe-{name}")
        if live == 404 and path.exists():
            with contextlib.suppress(wave.Error, EOFError), wave.open(str(path), "rb") as w:
                if w.getnframes() > 0:
                    return path
        time.sleep(0.1)
    raise AssertionError(f"probe recording {path} not finished within 5 s")


def timeline(dsn: str, call_id: str, until: Callable[[list[str]], bool]) -> list[dict[str, Any]]:
    return wait_rows(
        dsn,
        "SELECT stage, at, detail FROM timeline WHERE call_id = $1 ORDER BY id",
        call_id,
        until=lambda rows: until([r["stage"] for r in rows]),
    )


def of(rows: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    return [r["detail"] for r in rows if r["stage"] == stage]


def post(svc: ServiceProcess, path: str, body: Any = None, method: str = "POST") -> Any:
    status, answer = svc.post(path, body, method=method)
    assert status == 202, (path, status, answer)
    return answer


def recording_of(inst: AsteriskInstance, dsn: str, call_id: str) -> Path:
    wait_rows(dsn, "SELECT 1 FROM recordings WHERE call_id = $1", call_id)
    path = inst.recording_dir / f"siaga-call-{call_id}.wav"
    assert path.exists()
    return path


# ---- tests ---------------------------------------------------------------------


class TestConference:
    def test_keypad_star1_brings_in_the_fire_dispatcher(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
        tmp_path: Path,
    ) -> None:
        """The taker's *1 rings Damkar, who joins the call bridge and hears caller and taker."""
        inst = asterisk_instance
        service()
        taker = taker_pressing(sipp, "*1", keys_s=1.5)
        damkar = sipp.handset(5081, name="damkar", ring_s=0.5, tone_hz=DAMKAR_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=12.0, hangup="bye", timeout_s=60)
        call_id, chans = call_bridge(inst, lambda c: len(legs(c)) == 1)
        assert len(chans) == 3, chans  # caller, taker, fire dispatcher: one bridge
        heard = heard_by(inst, legs(chans)[0], "damkar")
        assert present(heard, TONE_A_HZ)  # the caller
        assert present(heard, TONE_B_HZ)  # the taker
        caller_heard = heard_by(inst, call_id, "caller")
        assert present(caller_heard, DAMKAR_HZ)  # a talking dispatcher
        assert present(caller_heard, TONE_B_HZ)  # the taker throughout
        for p in (caller, taker, damkar):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: "dispatcher_left" in s and "hung_up" in s)
        ringing = of(rows, "dispatcher_ringing")
        assert [(d["agency"], d["by"], d["endpoint"]) for d in ringing] == [
            ("damkar", "keypad", "PJSIP/disp-damkar")
        ]
        joined = of(rows, "dispatcher_joined")
        assert [(d["agency"], d["role"]) for d in joined] == [("damkar", "talk")]
        assert of(rows, "dispatcher_left")[0]["reason"] == "call-ended"
        assert present(recording_of(inst, e2e_dsn, call_id), DAMKAR_HZ)
        wait_clean(inst)

    def test_listen_only_dispatcher_is_not_heard_by_the_caller(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A listen-only dispatcher hears the call; the caller hears them only once on talk."""
        inst = asterisk_instance
        svc = service()
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        damkar = sipp.handset(5081, name="damkar", ring_s=0.5, tone_hz=DAMKAR_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=18.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        post(svc, f"/api/calls/{call_id}/dispatchers", {"agency": "damkar", "role": "listen"})
        _, chans = call_bridge(inst, lambda c: len(legs(c)) == 1)
        leg = legs(chans)[0]
        listening = heard_by(inst, call_id, "caller-listen")
        assert absent(listening, DAMKAR_HZ)
        assert present(listening, TONE_B_HZ)
        assert present(heard_by(inst, leg, "damkar-listen"), TONE_A_HZ)
        post(svc, f"/api/calls/{call_id}/dispatchers/damkar/role", {"role": "talk"})
        time.sleep(0.5)
        talking = heard_by(inst, call_id, "caller-talk")
        assert present(talking, DAMKAR_HZ)
        for p in (caller, taker, damkar):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: "dispatcher_left" in s)
        assert [d["role"] for d in of(rows, "dispatcher_joined")] == ["listen"]
        assert [d["role"] for d in of(rows, "dispatcher_role")] == ["talk"]
        wait_clean(inst)

    def test_taker_hands_over_and_the_recording_covers_the_whole_call(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """After a handover the taker is free, the others talk on, one recording covers all."""
        inst = asterisk_instance
        svc = service()
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        dinkes = sipp.handset(5082, name="dinkes", ring_s=0.5, tone_hz=DINKES_HZ, timeout_s=60)
        began = time.monotonic()
        caller = sipp.caller(talk_s=16.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        status, _ = svc.post(f"/api/calls/{call_id}/handover")
        assert status == 409  # nobody would talk with the caller: refused
        post(svc, f"/api/calls/{call_id}/dispatchers", {"agency": "dinkes"})
        call_bridge(inst, lambda c: len(legs(c)) == 1)
        before = heard_by(inst, call_id, "caller-before-handover")  # three talk a while
        assert present(before, TONE_B_HZ)
        assert present(before, DINKES_HZ)
        post(svc, f"/api/calls/{call_id}/handover")
        handed_at = time.monotonic() - began
        taker_result = taker.wait(timeout_s=20)
        taker_result.assert_ok()
        assert taker_result.ended_by == ["remote"]  # the service released the taker's handset
        _, chans = call_bridge(inst, lambda c: len(c) == 2 and len(legs(c)) == 1)
        assert call_id in chans  # caller and dispatcher, still in the same bridge
        svc.wait_state(
            lambda s: any(t["id"] == "taker1" and t["status"] == "available" for t in s["takers"]),
            10,
            "taker1 free again",
        )
        after = heard_by(inst, call_id, "caller-after-handover")
        assert present(after, DINKES_HZ)
        assert absent(after, TONE_B_HZ)
        caller_result = caller.wait()
        elapsed = time.monotonic() - began
        caller_result.assert_ok()
        dinkes_result = dinkes.wait()
        dinkes_result.assert_ok()
        assert dinkes_result.ended_by == ["remote"]
        rows = timeline(e2e_dsn, call_id, lambda s: "hung_up" in s)
        stages = [r["stage"] for r in rows]
        assert stages.index("answered") < stages.index("dispatcher_joined")
        assert stages.index("dispatcher_joined") < stages.index("handed_over")
        assert stages.index("handed_over") < stages.index("hung_up")
        assert of(rows, "hung_up")[-1]["handed_over"] is True
        recording = recording_of(inst, e2e_dsn, call_id)
        duration = wav_duration(recording)
        assert 15.0 <= duration <= elapsed + 0.5, (duration, elapsed)
        # After the handover the recording still holds the caller and the dispatcher.
        assert present(recording, TONE_A_HZ, start_s=handed_at + 2)
        assert present(recording, DINKES_HZ, start_s=handed_at + 2)
        assert absent(recording, TONE_B_HZ, start_s=handed_at + 2)
        wait_clean(inst)

    def test_unanswered_dispatcher_falls_back_and_the_timeline_shows_it(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """When Damkar does not answer in its ring time, its fallback (Polisi) is rung and joins."""
        inst = asterisk_instance
        agencies = [
            {"code": "damkar", "name": "Damkar", "digit": 1, "endpoints": ["PJSIP/disp-damkar"],
             "ring_timeout_s": 3, "fallback": "polisi"},
            {"code": "polisi", "name": "Polisi", "digit": 3, "endpoints": ["PJSIP/disp-polisi"]},
        ]  # fmt: skip
        svc = service(
            extra={
                "SIAGA_AGENCIES": json.dumps(agencies),
                "SIAGA_AGENCIES_FROM_DATABASE": "false",
            }
        )
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        damkar = sipp.handset(5081, name="damkar", mode="noanswer", timeout_s=60)
        polisi = sipp.handset(5083, name="polisi", ring_s=0.5, tone_hz=POLISI_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=12.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        post(svc, f"/api/calls/{call_id}/dispatchers", {"agency": "damkar"})
        call_bridge(inst, lambda c: len(legs(c)) == 1, timeout=15)
        damkar_result = damkar.wait(timeout_s=15)
        damkar_result.assert_ok()
        assert damkar_result.ended_by == ["cancel"]
        assert present(heard_by(inst, call_id, "caller-polisi"), POLISI_HZ)
        for p in (caller, taker, polisi):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: "dispatcher_left" in s)
        failed = of(rows, "dispatcher_failed")
        assert {"agency": "damkar", "reason": "no_answer"}.items() <= failed[0].items()
        assert any(d.get("next") == "polisi" for d in failed), failed
        assert [d["agency"] for d in of(rows, "dispatcher_ringing")] == ["damkar", "polisi"]
        assert [(d["agency"], d["requested"]) for d in of(rows, "dispatcher_joined")] == [
            ("polisi", "damkar")
        ]
        wait_clean(inst)

    def test_supervisor_listens_unheard(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A listening supervisor hears caller and taker, is never heard, and is audited."""
        inst = asterisk_instance
        svc = service()
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        sup = sipp.handset(5073, name="supervisor", ring_s=0.5, tone_hz=SUPERVISOR_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=12.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        body = {"supervisor": "spv1", "endpoint": "PJSIP/taker3", "mode": "listen"}
        post(svc, f"/api/calls/{call_id}/supervision", body)
        deadline = time.monotonic() + 10
        leg = ""
        while time.monotonic() < deadline and not leg:
            _, channels = inst.ari("GET", "channels")
            up = [
                c["id"]
                for c in channels
                if c["id"].startswith("siaga-disp-") and c["state"] == "Up"
            ]
            leg = up[0] if up else ""
            time.sleep(0.2)
        assert leg, "the supervisor's phone never answered"
        time.sleep(0.5)
        _, chans = call_bridge(inst, lambda c: True)
        assert leg not in chans  # not in the call bridge: on a snoop
        supervisor_heard = heard_by(inst, leg, "supervisor")
        assert present(supervisor_heard, TONE_A_HZ)
        assert present(supervisor_heard, TONE_B_HZ)
        assert absent(heard_by(inst, call_id, "caller-sup"), SUPERVISOR_HZ)
        for p in (caller, taker, sup):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: s.count("supervisor") >= 3)
        audit = of(rows, "supervisor")
        assert [d["action"] for d in audit] == ["ringing", "joined", "left"]
        assert all(d["audit"] is True and d["supervisor"] == "spv1" for d in audit)
        assert all(d["mode"] == "listen" for d in audit)
        wait_clean(inst)

    def test_whispering_dispatcher_is_heard_by_the_taker_only(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
        tmp_path: Path,
    ) -> None:
        """A whispering dispatcher hears both sides; the taker hears them, the caller never."""
        inst = asterisk_instance
        svc = service()
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        damkar = sipp.handset(5081, name="damkar", ring_s=0.5, tone_hz=DAMKAR_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=14.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        post(svc, f"/api/calls/{call_id}/dispatchers", {"agency": "damkar", "role": "whisper"})
        svc.wait_until(
            lambda _health: any(
                p["role"] == "whisper"
                for p in svc.get(f"/api/calls/{call_id}/conference")["parties"]
            ),
            10,
            "Damkar answered and whispers",
        )
        time.sleep(1.0)  # the snoop enters the app and joins its private bridge
        _, chans = call_bridge(inst, lambda c: True)
        assert legs(chans) == []  # not in the call bridge: on a snoop of the taker
        parties = svc.get(f"/api/calls/{call_id}/conference")["parties"]
        leg = parties[0]["leg_id"]
        # What the taker's phone receives, off the wire (an ARI probe cannot see a whisper).
        taker_heard = rtp_received(media_port(taker), 3.0, tmp_path / "taker-whisper.wav")
        assert present(taker_heard, DAMKAR_HZ)  # the whisper reaches the taker
        assert present(taker_heard, TONE_A_HZ)  # and the caller is still heard
        caller_heard = heard_by(inst, call_id, "caller-whisper")
        assert absent(caller_heard, DAMKAR_HZ)  # never the caller
        assert present(caller_heard, TONE_B_HZ)
        damkar_heard = heard_by(inst, leg, "damkar-whisper")
        assert present(damkar_heard, TONE_A_HZ)  # the whisperer hears both sides
        assert present(damkar_heard, TONE_B_HZ)
        for p in (caller, taker, damkar):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: "dispatcher_left" in s and "hung_up" in s)
        assert [d["role"] for d in of(rows, "dispatcher_joined")] == ["whisper"]
        assert absent(recording_of(inst, e2e_dsn, call_id), DAMKAR_HZ)  # not in the call
        wait_clean(inst)

    def test_two_agencies_then_one_removed(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """Damkar and Dinkes join together; removing Dinkes hangs up only their dispatcher."""
        inst = asterisk_instance
        svc = service()
        taker = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        damkar = sipp.handset(5081, name="damkar", ring_s=0.5, tone_hz=DAMKAR_HZ, timeout_s=60)
        dinkes = sipp.handset(5082, name="dinkes", ring_s=0.5, tone_hz=DINKES_HZ, timeout_s=60)
        caller = sipp.caller(talk_s=14.0, hangup="bye", timeout_s=60)
        call_id, _ = call_bridge(inst, lambda c: len(c) == 2)
        post(svc, f"/api/calls/{call_id}/dispatchers/mass-incident")
        call_bridge(inst, lambda c: len(legs(c)) == 2)
        both = heard_by(inst, call_id, "caller-both")
        assert present(both, DAMKAR_HZ)
        assert present(both, DINKES_HZ)
        post(svc, f"/api/calls/{call_id}/dispatchers/dinkes", method="DELETE")
        dinkes_result = dinkes.wait(timeout_s=15)
        dinkes_result.assert_ok()
        assert dinkes_result.ended_by == ["remote"]
        call_bridge(inst, lambda c: len(legs(c)) == 1)
        one = heard_by(inst, call_id, "caller-one")
        assert present(one, DAMKAR_HZ)
        assert absent(one, DINKES_HZ)
        for p in (caller, taker, damkar):
            p.wait().assert_ok()
        rows = timeline(e2e_dsn, call_id, lambda s: s.count("dispatcher_left") >= 2)
        left = {d["agency"]: d["reason"] for d in of(rows, "dispatcher_left")}
        assert left == {"dinkes": "removed-by-api", "damkar": "call-ended"}
        wait_clean(inst)
