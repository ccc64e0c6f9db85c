"""Plumbing of the database layer."""

from __future__ import annotations

import asyncio

import pytest

from app.db import raise_swallowed_cancel


async def test_a_swallowed_cancel_is_raised_again() -> None:
    """What Python 3.11's ``wait_for`` inside aiopg does to a cancel that lands with the query's result: the
    task's ``CancelledError`` is caught and the result returned. The next check must raise it again. (The
    cancellation map found it for real: ``make explore TARGET=export`` showed the fixed export's first query
    returning normally after its hang-up in one run of three.)"""

    async def handler() -> str:
        asyncio.current_task().cancel()  # type: ignore[union-attr]  # the hang-up...
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # ...swallowed, as wait_for does when the result is already there
        raise_swallowed_cancel()
        return "went on as if nothing happened"

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(handler())


async def test_nothing_is_raised_without_a_cancel() -> None:
    raise_swallowed_cancel()


async def test_a_timeout_still_reads_as_a_timeout() -> None:
    """Inside ``asyncio.timeout`` the re-raised cancel becomes ``TimeoutError``, as it should."""

    async def slow_then_swallowed() -> None:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # swallowed
        raise_swallowed_cancel()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slow_then_swallowed()
