"""The bench's guard: waiting on a workload ends at once when a daemon process dies."""

from __future__ import annotations

import asyncio
import time

import pytest

from dee.ops.bench.daemons import while_alive


class Slot:
    """Stands in for a daemon process: alive for `checks` checks, then exited."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def check_alive(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("daemon bench-1 exited; its log ends with: ...")


async def test_the_work_result_comes_back_while_the_daemons_live() -> None:
    async def work() -> int:
        await asyncio.sleep(0.7)
        return 42

    assert await while_alive([Slot(100)], work()) == 42  # type: ignore[list-item]


async def test_a_daemon_that_exits_ends_the_wait_with_its_reason_and_cancels_the_work() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="bench-1 exited"):
        await while_alive([Slot(1)], forever())  # type: ignore[list-item]
    assert time.monotonic() - started < 5 and cancelled.is_set()
