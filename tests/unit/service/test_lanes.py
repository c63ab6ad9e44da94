"""Per-call lanes: in order within a call, concurrent across calls."""

from __future__ import annotations

import asyncio

from siaga_pbx.service import Lanes


class TestLanes:
    async def test_order_within_a_lane_and_no_head_of_line_blocking(self) -> None:
        """A slow command delays only its own call's later commands, not other calls."""
        done: list[str] = []
        release = asyncio.Event()

        async def run(item: str) -> None:
            if item == "a1":
                await release.wait()  # call A's first command is stuck
            done.append(item)

        lanes: Lanes[str] = Lanes(run)
        for key, item in (("A", "a1"), ("A", "a2"), ("B", "b1"), ("B", "b2")):
            lanes.submit(key, item)
        await asyncio.sleep(0.01)
        assert done == ["b1", "b2"]  # B finished while A waits
        release.set()
        await asyncio.wait_for(lanes.idle(), 1)
        assert done == ["b1", "b2", "a1", "a2"]
        assert len(lanes) == 0  # drained lanes disappear

    async def test_close_cancels_pending_work(self) -> None:
        """Closing stops lanes that are still waiting."""
        started = asyncio.Event()

        async def run(item: str) -> None:
            started.set()
            await asyncio.sleep(10)

        lanes: Lanes[str] = Lanes(run)
        lanes.submit("A", "x")
        await started.wait()
        await asyncio.wait_for(lanes.close(), 1)
        await asyncio.sleep(0)
        assert len(lanes) == 0
