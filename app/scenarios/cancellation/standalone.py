# mypy: ignore-errors
# (run by interpreters back to 3.6: no annotations in signatures; the 3.11 checker has nothing to add here)
"""Standalone reproductions of the gallery's pitfalls for ``scripts.matrix``: run by every interpreter found
(Python 3.6 and newer), with nothing but the standard library, so no annotations and no newer syntax here.
The gallery's own modules need 3.11 (``asyncio.timeout``, ``TaskGroup``, ``except*``); each probe below does
what its broken variant does, the same way, and says whether the trap sprang on this interpreter.

    python app/scenarios/cancellation/standalone.py      (prints one JSON object: probe -> [status, detail])

status: ``reproduced`` (the trap sprang), ``held`` (it did not), ``n/a`` (what it needs is missing here).
"""

import asyncio
import gc
import inspect
import json
import sys
import time

PROBES = {}


def probe(name):
    def register(fn):
        PROBES[name] = fn
        return fn

    return register


def run(coro_fn, *args):
    """A fresh loop per probe (``asyncio.run`` is 3.7+); what asyncio reported is kept."""
    loop = asyncio.new_event_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        return loop.run_until_complete(coro_fn(*args)), reported
    finally:
        loop.close()
        gc.collect()


async def cancel_soon(task, after=0.03):
    await asyncio.sleep(after)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "returned"


def loop_catching(catch):
    async def work(steps):
        for i in range(10):
            try:
                await asyncio.sleep(0.01)
            except catch:
                pass
            steps.append(i)

    async def main():
        steps = []
        outcome = await cancel_soon(asyncio.ensure_future(work(steps)))
        return outcome, len(steps)

    (outcome, steps), _ = run(main)
    if outcome == "returned":
        return "reproduced", f"the cancel was swallowed: all {steps} steps ran"
    return "held", f"cancelled after {steps} of 10 steps"


@probe("swallowed-cancel")
def swallowed_cancel():
    return loop_catching(BaseException)


@probe("except-exception")
def except_exception():
    """``except Exception`` around an await: swallowed the cancel while CancelledError was an Exception."""
    status, detail = loop_catching(Exception)
    base = "Exception" if issubclass(asyncio.CancelledError, Exception) else "BaseException only"
    return status, f"{detail}; CancelledError is an {base}"


@probe("wait-for-race")
def wait_for_race():
    async def main():
        loop = asyncio.get_event_loop()
        lost = 0
        for _ in range(200):
            fut = loop.create_future()
            task = asyncio.ensure_future(asyncio.wait_for(fut, 10))
            await asyncio.sleep(0)
            fut.set_result(1)
            task.cancel()
            try:
                await task
                lost += 1
            except asyncio.CancelledError:
                pass
        return lost

    lost, _ = run(main)
    return ("reproduced" if lost else "held"), f"{lost} of 200 cancels lost"


@probe("slow-cleanup-timeout")
def slow_cleanup_timeout():
    async def slow():
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.3)  # cleanup after the cancel

    async def main():
        started = time.monotonic()
        try:
            await asyncio.wait_for(slow(), 0.1)
        except asyncio.TimeoutError:
            pass
        return time.monotonic() - started

    took, _ = run(main)
    return ("reproduced" if took >= 0.35 else "held"), f"wait_for(0.1) returned after {took:.2f} s"


@probe("unawaited-cancel")
def unawaited_cancel():
    def main_for(log):
        async def worker():
            try:
                await asyncio.sleep(10)
            finally:
                await asyncio.sleep(0.01)
                log.append("cleanup ran")

        async def main():
            task = asyncio.ensure_future(worker())
            await asyncio.sleep(0.01)
            task.cancel()

        return main

    by_hand = []
    _, reported = run(main_for(by_hand))
    lost = ["a loop closed by hand"] if not by_hand else []
    if hasattr(asyncio, "run"):
        under_run = []
        asyncio.run(main_for(under_run)())
        if not under_run:
            lost.append("asyncio.run")
    detail = "cleanup lost under " + " and ".join(lost) if lost else "cleanup ran"
    if not hasattr(asyncio, "run"):
        detail += " (no asyncio.run before 3.7)"
    return ("reproduced" if lost else "held"), detail + (f"; {reported[0]}" if reported else "")


@probe("cancel-then-wait")
def cancel_then_wait():
    async def loses_one():
        lost = False
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost = True

    async def main():
        task = asyncio.ensure_future(loses_one())
        await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.3)  # an unbounded `await task` would wait forever
        hung = not done
        task.cancel()
        await asyncio.wait([task])
        return hung

    hung, _ = run(main)
    return ("reproduced" if hung else "held"), "still running 0.3 s after its cancel" if hung else "ended"


@probe("gather-orphans")
def gather_orphans():
    async def fails():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def main():
        siblings = [asyncio.ensure_future(asyncio.sleep(0.2)) for _ in range(3)]
        try:
            await asyncio.gather(fails(), *siblings)
        except ValueError:
            pass
        running = sum(not s.done() for s in siblings)
        await asyncio.gather(*siblings, return_exceptions=True)
        return running

    running, _ = run(main)
    fix = "TaskGroup, the fix, exists" if hasattr(asyncio, "TaskGroup") else "no TaskGroup (the fix) before 3.11"
    return ("reproduced" if running else "held"), f"{running} siblings running after the failure; {fix}"


@probe("taskgroup-teardown-cancel")
def taskgroup_teardown_cancel():
    """The fix's own trap: a cancel from outside while a TaskGroup tears down after a child's failure."""
    if not hasattr(asyncio, "TaskGroup"):
        return "n/a", "no TaskGroup before 3.11"

    async def fails():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def slow_cleanup():
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.1)

    async def fan_out():
        async with asyncio.TaskGroup() as group:
            group.create_task(fails())
            group.create_task(slow_cleanup())

    async def main():
        task = asyncio.ensure_future(fan_out())
        await asyncio.sleep(0.05)  # the child failed; the group waits for the other's cleanup
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except BaseException as exc:
            return type(exc).__name__
        return "returned"

    outcome, _ = run(main)
    if outcome == "cancelled":
        return "held", "the outside cancel came through"
    return "reproduced", f"the outside cancel was dropped: the caller got {outcome}"


@probe("self-cancel")
def self_cancel():
    async def main():
        writes = []

        async def handler():
            current = asyncio.current_task() if hasattr(asyncio, "current_task") else asyncio.Task.current_task()
            current.cancel()
            writes.append("after the cancel")
            await asyncio.sleep(0)

        try:
            await asyncio.ensure_future(handler())
        except asyncio.CancelledError:
            pass
        return writes

    writes, _ = run(main)
    return ("reproduced" if writes else "held"), f"{len(writes)} write after current_task().cancel()"


@probe("hidden-coroutine")
def hidden_coroutine():
    async def callback():
        return None

    class Handler:
        async def __call__(self):
            return None

    candidates = {"lambda": lambda: callback(), "async __call__": Handler()}
    missed = [name for name, fn in candidates.items() if not inspect.iscoroutinefunction(fn)]
    return ("reproduced" if missed else "held"), f"iscoroutinefunction missed: {', '.join(missed) or 'none'}"


@probe("blocking-call")
def blocking_call():
    async def main():
        loop = asyncio.get_event_loop()
        started = loop.time()
        ticks = []

        async def ticker():
            while loop.time() - started < 0.3:
                ticks.append(loop.time())
                await asyncio.sleep(0.01)

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.02)
        time.sleep(0.2)  # a blocking call in a coroutine
        await tick
        return max(b - a for a, b in zip(ticks, ticks[1:]))

    stall, _ = run(main)
    return ("reproduced" if stall >= 0.15 else "held"), f"the loop stalled {stall * 1000:.0f} ms"


@probe("first-wins")
def first_wins():
    async def attempt(after, fails):
        await asyncio.sleep(after)
        if fails:
            raise ConnectionRefusedError("refused")
        return after

    async def main():
        tries = [asyncio.ensure_future(attempt(a, f)) for a, f in ((0, True), (0.05, False), (0.3, False))]
        done, pending = await asyncio.wait(tries, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = done.pop()
        running = sum(not t.done() for t in pending)
        await asyncio.gather(*tries, return_exceptions=True)
        return first.exception() is not None, running

    (failed, running), _ = run(main)
    status = "reproduced" if failed or running else "held"
    return status, f"the first to finish had failed: {failed}; {running} left running"


@probe("shielded-error")
def shielded_error():
    async def write():
        await asyncio.sleep(0.05)
        raise ConnectionError("mid-write")

    async def main():
        caller = asyncio.ensure_future(asyncio.shield(write()))
        await asyncio.sleep(0.01)
        caller.cancel()
        await asyncio.sleep(0.1)

    _, reported = run(main)
    return "reproduced", "nobody heard of the error" + (f"; asyncio said only: {reported[0]}" if reported else "")


@probe("pool-wait")
def pool_wait():
    """The pool's wait (aiopg's): a Condition. A waiter cancelled just after its wake-up takes it along?"""

    async def main():
        cond = asyncio.Condition()
        got = []

        async def waiter(name):
            async with cond:
                await cond.wait()
                got.append(name)

        a, b = asyncio.ensure_future(waiter("a")), asyncio.ensure_future(waiter("b"))
        await asyncio.sleep(0)
        async with cond:
            cond.notify(1)  # a connection came back: wake one waiter
        a.cancel()  # its client hangs up in the same iteration
        await asyncio.wait([a, b], timeout=0.2)
        b.cancel()
        await asyncio.wait([a, b])
        return got

    got, _ = run(main)
    if not got:
        return "reproduced", "the waiter cancelled after its wake-up took it along: the other slept on"
    return "held", "the wake-up passed on to the next waiter"


def main():
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name, fn in PROBES.items():
        try:
            out[name] = list(fn())
        except Exception as exc:  # a probe that cannot run here says why, instead of failing the matrix
            out[name] = ["n/a", f"{type(exc).__name__}: {exc}"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
