"""hidden-coroutine: code that decides "is this callback async?" with ``inspect.iscoroutinefunction`` is
fooled by a lambda returning a coroutine, an object with ``async def __call__``, a sync wrapper around an
async function... It calls them as plain functions, drops the coroutine ("never awaited") and the work never
happens. (``functools.partial`` is unwrapped since Python 3.8; older code fell for that too.)

Fix: do not guess from the callable: call it, and await the result if ``inspect.isawaitable``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from ...scenario import Pitfall


async def _save(done: list[str], name: str) -> None:
    await asyncio.sleep(0)
    done.append(name)


class _AsyncCallable:
    def __init__(self, done: list[str]) -> None:
        self.done = done

    async def __call__(self) -> None:
        await _save(self.done, "async __call__")


def _callbacks(done: list[str]) -> dict[str, Callable[[], Any]]:
    def sync_wrapper() -> Any:
        return _save(done, "sync wrapper")

    return {
        "partial": functools.partial(_save, done, "partial"),
        "lambda": lambda: _save(done, "lambda"),
        "async __call__": _AsyncCallable(done),
        "sync wrapper": sync_wrapper,
    }


async def broken_dispatch(callback: Callable[[], Any]) -> None:
    """Detection by iscoroutinefunction: three of the four callbacks are called and never awaited."""
    if inspect.iscoroutinefunction(callback):
        await callback()
    else:
        callback()  # an async callback in disguise: its coroutine is created and dropped


async def fixed_dispatch(callback: Callable[[], Any]) -> None:
    """Call, then await whatever is awaitable: all four run."""
    result = callback()
    if inspect.isawaitable(result):
        await result


async def measure(dispatch: Any) -> dict[str, Any]:
    done: list[str] = []
    callbacks = _callbacks(done)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for callback in callbacks.values():
            await dispatch(callback)
        gc.collect()  # the dropped coroutines are collected, and warn
    missed = [name for name in callbacks if name not in done]
    never_awaited = sum("never awaited" in str(w.message) for w in caught)
    return {
        "trap": bool(missed),
        "summary": f"callbacks that never ran: {', '.join(missed) or 'none'}",
        "ran": done,
        "missed": missed,
        "never_awaited_warnings": never_awaited,
    }


PITFALL = Pitfall("hidden-coroutine", broken_dispatch, fixed_dispatch, measure)
