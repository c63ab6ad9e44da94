"""AriTelephony keeps a caller in their bridge when Asterisk drops a reply.

A scripted stand-in for ``AriRest`` (only the calls the runner makes): it
holds bridges like Asterisk does and fails the requests a test asks it to.
"""

from __future__ import annotations

from typing import Any

import pytest

from siaga_pbx import ari, core
from siaga_pbx.adapters.telephony import AriTelephony
from siaga_pbx.config import PromptSettings

CALL = "1700000000.7"
BRIDGE = f"siaga-call-{CALL}"
OFFER = f"siaga-offer-{CALL}-1"


class ScriptedRest:
    def __init__(self, channels: set[str]) -> None:
        self.channels = channels
        self.bridges: dict[str, list[str]] = {}
        self.recordings: set[str] = set()
        self.calls: list[str] = []
        self.variables: dict[tuple[str, str], str] = {}
        self.fail: dict[str, list[ari.AriError]] = {}  # method -> errors to raise first

    def _step(self, method: str) -> None:
        self.calls.append(method)
        if self.fail.get(method):
            raise self.fail[method].pop(0)

    async def answer(self, channel_id: str) -> None:
        self._step("answer")

    async def create_bridge(self, bridge_id: str, **_: Any) -> None:
        self._step("create_bridge")
        if bridge_id in self.bridges:
            raise ari.AriConflict("POST", "/bridges", 409, "Bridge with this id exists")
        self.bridges[bridge_id] = []

    async def get_bridge(self, bridge_id: str) -> ari.Bridge:
        self._step("get_bridge")
        return ari.Bridge(
            id=bridge_id,
            technology="softmix",
            bridge_type="mixing",
            bridge_class="stasis",
            channels=tuple(self.bridges[bridge_id]),
        )

    async def add_channel(self, bridge_id: str, channel_ids: list[str]) -> None:
        self._step("add_channel")
        if bridge_id not in self.bridges:
            raise ari.AriNotFound(
                "POST", f"/bridges/{bridge_id}/addChannel", 404, "Bridge not found"
            )
        for c in channel_ids:
            if c not in self.channels:
                raise ari.AriUnprocessable("POST", "/addChannel", 422, "Channel not found")
            self.bridges[bridge_id].append(c)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self._step("set_variable")
        self.variables[(channel_id, name)] = value

    async def destroy_bridge(self, bridge_id: str) -> None:
        self._step("destroy_bridge")
        self.bridges.pop(bridge_id)

    async def record_bridge(self, bridge_id: str, *, name: str, **_: Any) -> None:
        self._step("record_bridge")
        self.recordings.add(name)

    async def request(self, method: str, path: str, **_: Any) -> None:
        self._step(f"{method} {path}")
        bridge = path.split("/")[2]
        if bridge not in self.bridges:
            raise ari.AriNotFound(method, path, 404, "Bridge not found")


def runner(rest: ScriptedRest) -> AriTelephony:
    return AriTelephony(rest, "siaga-112", PromptSettings(), clock=lambda: 1234.5)  # type: ignore[arg-type]


def unavailable() -> ari.AriError:
    return ari.AriUnavailable("POST", "/answer", None, "no answer within 5 s")


async def test_answer_is_retried_when_asterisk_does_not_reply() -> None:
    rest = ScriptedRest({CALL})
    rest.fail["answer"] = [unavailable(), unavailable()]
    await runner(rest).run(core.AnswerCaller(CALL))
    assert rest.calls.count("answer") == 3
    assert rest.bridges == {BRIDGE: [CALL]}
    assert rest.recordings == set()  # the dialplan's MixMonitor records, not the bridge


async def test_answer_gives_up_after_its_retries() -> None:
    rest = ScriptedRest({CALL})
    rest.fail["answer"] = [unavailable(), unavailable(), unavailable()]
    with pytest.raises(ari.AriUnavailable):
        await runner(rest).run(core.AnswerCaller(CALL))
    assert rest.bridges == {}


async def test_a_missing_bridge_is_rebuilt_before_connecting() -> None:
    """The bridge never came (a lost reply): the taker still reaches the caller."""
    rest = ScriptedRest({CALL, OFFER})
    await runner(rest).run(core.ConnectCall(CALL, OFFER, "taker1"))
    assert rest.bridges == {BRIDGE: [CALL, OFFER]}
    assert rest.recordings == set()  # the dialplan's MixMonitor records, not the bridge


async def test_hold_on_a_missing_bridge_rebuilds_it() -> None:
    rest = ScriptedRest({CALL})
    await runner(rest).run(core.StartHold(CALL, core.HoldMode.RINGBACK, ""))
    assert rest.bridges == {BRIDGE: [CALL]}
    assert rest.calls.count(f"POST /bridges/{BRIDGE}/play") == 2  # failed, then done


async def test_a_caller_the_dialplan_answered_is_not_answered_again() -> None:
    rest = ScriptedRest({CALL})
    await runner(rest).run(core.AnswerCaller(CALL, answered=True))
    assert "answer" not in rest.calls
    assert rest.bridges == {BRIDGE: [CALL]}


async def test_a_whole_bridge_is_not_touched() -> None:
    rest = ScriptedRest({CALL, OFFER})
    await runner(rest).run(core.AnswerCaller(CALL))
    rest.calls.clear()
    await runner(rest).run(core.AnswerCaller(CALL))  # a repeated answer
    assert rest.calls == ["answer", "create_bridge", "get_bridge"]
    assert rest.bridges == {BRIDGE: [CALL]}


async def test_no_bridge_is_left_for_a_caller_who_is_gone() -> None:
    rest = ScriptedRest({OFFER})  # the caller hung up
    with pytest.raises(ari.AriUnprocessable):
        await runner(rest).run(core.ConnectCall(CALL, OFFER, "taker1"))
    assert rest.bridges == {}
    assert "destroy_bridge" in rest.calls


async def test_a_missing_handset_is_not_a_missing_bridge() -> None:
    """Only "Bridge not found" rebuilds; any other 404 is the command's own failure."""
    rest = ScriptedRest({CALL})
    rest.bridges[BRIDGE] = [CALL]
    rest.fail["add_channel"] = [ari.AriNotFound("POST", "/addChannel", 404, "Channel not found")]
    with pytest.raises(ari.AriNotFound):
        await runner(rest).run(core.ConnectCall(CALL, OFFER, "taker1"))
    assert rest.calls == ["add_channel"]


async def test_connect_keeps_the_answer_time_on_the_callers_channel() -> None:
    """Connecting writes when the taker answered on the caller's channel, so a
    restarted service counts talk time from the real answer."""
    rest = ScriptedRest({CALL, OFFER})
    rest.bridges[BRIDGE] = [CALL]
    await runner(rest).run(core.ConnectCall(CALL, OFFER, "taker1"))
    assert rest.bridges[BRIDGE] == [CALL, OFFER]
    assert rest.variables == {(CALL, "SIAGA_ANSWERED_AT"): "1234.500"}
