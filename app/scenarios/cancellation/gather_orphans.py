"""gather-orphans: when one awaitable in ``asyncio.gather`` fails, gather raises at once and leaves the
siblings running: nobody awaits them, they finish (or fail) after the request is long gone.

Fix: ``asyncio.TaskGroup`` (3.11): a failure cancels the siblings and waits for them before raising.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import tasks
from ...scenario import Pitfall

SIBLINGS = 3


async def _fails() -> None:
    await asyncio.sleep(0.01)
    raise ValueError("one sub-request failed")


async def _sibling(done: list[int], i: int) -> None:
    await asyncio.sleep(0.3)
    done.append(i)  # e.g. a write that should not happen once the request failed


async def broken_fan_out(done: list[int]) -> list[asyncio.Task[None]]:
    """gather raised; the three siblings are still running, and their writes land afterwards."""
    siblings = [asyncio.create_task(_sibling(done, i)) for i in range(SIBLINGS)]
    try:
        await asyncio.gather(_fails(), *siblings)
    except ValueError:
        pass
    return siblings


async def fixed_fan_out(done: list[int]) -> list[asyncio.Task[None]]:
    """TaskGroup cancelled the siblings and waited for them: nothing runs after the failure."""

    async def fan_out() -> list[asyncio.Task[None]]:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_fails())
                siblings = [group.create_task(_sibling(done, i)) for i in range(SIBLINGS)]
        except* ValueError:
            pass
        return siblings

    # The fix's own trap (found by the cancellation map): a cancel from outside that arrives while the group is
    # already tearing down after the failure is dropped — Python 3.11 to 3.13.0 (scripts.matrix) raise only the
    # children's errors — and ``except*`` then swallows it all. In a task of its own, the group cannot hide a
    # cancel of ours from ``checked``, which raises it again.
    return await tasks.checked(asyncio.create_task(fan_out()))


async def measure(fan_out: Any) -> dict[str, Any]:
    done: list[int] = []
    siblings = await fan_out(done)
    running_after = sum(not t.done() for t in siblings)
    await asyncio.gather(*siblings, return_exceptions=True)  # bounded: let the orphans finish (0.3 s)
    trap = running_after > 0
    return {
        "trap": trap,
        "summary": f"{running_after} siblings still running after the failure; {len(done)} wrote afterwards",
        "running_after_failure": running_after,
        "writes_after_failure": len(done),
    }


PITFALL = Pitfall("gather-orphans", broken_fan_out, fixed_fan_out, measure)
