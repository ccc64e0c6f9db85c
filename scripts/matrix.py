"""The version matrix: on which Python, aiohttp and redis-py versions each pitfall bites, by running them.

    python -m scripts.matrix [--quick] [--out docs] [--max-minutes 20]          (make matrix)

Every interpreter pyenv has (and this one) runs ``app/scenarios/cancellation/standalone.py``: the gallery's
pitfalls as standalone reproductions, standard library only. The two library-dependent pitfalls run
``scripts/matrix_libs.py`` on this interpreter in a throwaway venv per library version (cached under
``~/.cache/asyncio-pitfalls/matrix``): aiohttp 3.8 (a hang-up always cancels the handler) against the current
release with ``handler_cancellation`` off (its default since 3.9) and on; redis-py from the first release with
``redis.asyncio`` to the current one. A version that is missing or does not install is listed as not run,
with the reason. ``--quick``: this interpreter and the installed libraries only (what ``make test`` checks).

Writes ``docs/MATRIX.md`` (rows: pitfalls; columns: versions; a line per column boundary saying what
changed) and ``docs/matrix.json`` beside it, with the commit of the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.settings import Settings

from .toolkit import ROOT

PROBES = ROOT / "app" / "scenarios" / "cancellation" / "standalone.py"
LIBS = ROOT / "scripts" / "matrix_libs.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asyncio-pitfalls" / "matrix"
# aiohttp, each with the interpreter to run it on (None: this one; before 3.8.5 no 3.11 wheels). 3.9 added
# handler_cancellation=True to cancel a handler when its client hangs up; the matrix shows when it stopped.
AIOHTTP = (("3.7.4.post0", False, "3.9"), ("3.8.1", False, "3.9"), ("3.8.2", False, "3.9"), ("3.8.6", False, None))
AIOHTTP_NOW = (("3.14.5", False, None), ("3.14.5", True, None))
# redis-py: 4.2.0 brought redis.asyncio (its pool unbounded by default); 8.x bounds it.
REDIS = ("4.2.0", "5.0.8", "6.4.0", "7.4.1", "8.0.1", "8.1.0")
ROWS = {
    "except-exception": "`except Exception` around an await swallows the cancel",
    "swallowed-cancel": "`except BaseException` around an await swallows the cancel",
    "wait-for-race": "`wait_for` loses a cancel that lands with the result",
    "slow-cleanup-timeout": "`wait_for` waits out the cancelled coroutine's cleanup",
    "unawaited-cancel": "a cancelled, unawaited task's cleanup never runs",
    "cancel-then-wait": "`cancel(); await task` hangs on a task that lost a cancel",
    "gather-orphans": "`gather` leaves siblings running after a failure",
    "taskgroup-teardown-cancel": "a `TaskGroup` tearing down drops an outside cancel",
    "first-wins": "bare tasks + `wait(FIRST_COMPLETED)`: a failure wins, losers left running",
    "shielded-error": "a shielded task's error reaches no one",
    "pool-wait": "a Condition waiter cancelled after its wake-up takes it along",
    "self-cancel": "code after `current_task().cancel()` still runs",
    "hidden-coroutine": "`iscoroutinefunction` misses async callables",
    "blocking-call": "a blocking call stalls the event loop",
}


def interpreters(quick: bool) -> list[tuple[str, str]]:
    """(version, path) of every CPython here, oldest first; this one always included."""
    found = {".".join(map(str, sys.version_info[:3])): sys.executable}
    if not quick:
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            root = str(Path.home() / ".pyenv")
        for python in sorted(Path(root, "versions").glob("*/bin/python")):
            version = python.parent.parent.name
            if version[0].isdigit():
                found.setdefault(version, str(python))
    return sorted(found.items(), key=lambda item: tuple(int(x) for x in item[0].split(".")[:3]))


def run_json(argv: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    except OSError as exc:
        return None, str(exc)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:160]
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def venv_with(requirement: str, base: str = sys.executable) -> tuple[str | None, str]:
    """A cached venv of the ``base`` interpreter holding ``requirement``: its python, or why there is none."""
    version = subprocess.run([base, "-c", "import sys; print('%d%d' % sys.version_info[:2])"], capture_output=True)
    home = CACHE / f"py{version.stdout.decode().strip()}-{requirement.replace('==', '-')}"
    python = home / "bin" / "python"
    if (home / ".ok").exists():
        return str(python), ""
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(home)], check=True, capture_output=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement]
        subprocess.run(pip, check=True, capture_output=True, text=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        return None, f"does not install: {(exc.stderr or '').strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        return None, "install timed out"
    (home / ".ok").touch()
    return str(python), ""


def cell(status: str, detail: str) -> dict[str, str]:
    return {"status": status, "detail": detail}


def python_columns(quick: bool, deadline: float) -> list[dict[str, Any]]:
    columns = []
    for version, python in interpreters(quick):
        column: dict[str, Any] = {"column": f"Python {version}", "cells": {}}
        if version.startswith("2."):
            column["not_run"] = "Python 2: no asyncio"
        elif time.monotonic() > deadline:
            column["not_run"] = "the matrix's time bound was reached"
        else:
            result, why = run_json([python, str(PROBES)], timeout=120)
            if result is None:
                column["not_run"] = why
            else:
                column["cells"] = {row: cell(*result[row]) for row in ROWS if row in result}
        progress(column)
        columns.append(column)
    return columns


def library_columns(quick: bool, redis_url: str, deadline: float) -> list[dict[str, Any]]:
    import aiohttp
    import redis

    columns = []
    pythons = {version.rsplit(".", 1)[0]: path for version, path in interpreters(quick)}
    now = [(aiohttp.__version__, cancel, None) for cancel in (False, True)]
    for version, cancel, on in now if quick else [*AIOHTTP, *AIOHTTP_NOW]:
        label = (
            f"aiohttp {version}"
            + (" handler_cancellation=True" if cancel else "")
            + (f" (Python {on})" if on else "")
        )
        args = ["aiohttp", *(["--handler-cancellation"] if cancel else [])]
        base = pythons.get(on) if on else sys.executable
        column = library_column(label, "disconnect", f"aiohttp=={version}", args, quick, deadline, base)
        columns.append(column)
    for version in [redis.__version__] if quick else REDIS:
        label = f"redis-py {version}"
        columns.append(library_column(label, "pubsub", f"redis=={version}", ["redis", redis_url], quick, deadline))
    return columns


def library_column(
    label: str,
    row: str,
    requirement: str,
    args: list[str],
    quick: bool,
    deadline: float,
    base: str | None = sys.executable,
) -> dict[str, Any]:
    column: dict[str, Any] = {"column": label, "cells": {}}
    if time.monotonic() > deadline or base is None:
        column["not_run"] = "the matrix's time bound was reached" if base else "that interpreter is not here"
        progress(column)
        return column
    python, why = (sys.executable, "") if quick else venv_with(requirement, base)
    if python is None:
        column["not_run"] = why
    else:
        result, why = run_json([python, str(LIBS), *args], timeout=120)
        if result is None:
            column["not_run"] = why
        else:
            column["cells"] = {row: cell(result["status"], result["detail"])}
            column["figures"] = {k: v for k, v in result.items() if k not in ("status", "detail")}
    progress(column)
    return column


def progress(column: dict[str, Any]) -> None:
    shown = column.get("not_run") or ", ".join(f"{k} {v['status']}" for k, v in column["cells"].items())
    print(f"  {column['column']:<40} {shown}", flush=True)


def changes(columns: list[dict[str, Any]], *, details: bool = False) -> list[str]:
    """One line per boundary between neighbouring columns of a kind: the rows whose status changed (and, with
    ``details``, whose description did: a library's pitfall can bite differently)."""
    lines = []
    for before, after in itertools.pairwise(columns):
        if before["column"].split()[0] != after["column"].split()[0]:
            continue
        moved = []
        for row in after["cells"]:
            was, now = before["cells"].get(row), after["cells"][row]
            if was is not None and was["status"] != now["status"]:
                moved.append(f"{row} {was['status']} → {now['status']}")
            elif was is not None and details and was["detail"] != now["detail"]:
                moved.append(f"{row}: {was['detail']} → {now['detail']}")
        if moved:
            lines.append(f"- **{before['column']} → {after['column']}**: " + "; ".join(moved))
    return lines


def markdown(report: dict[str, Any]) -> str:
    pythons = [c for c in report["columns"] if c["column"].startswith("Python")]
    libraries = [c for c in report["columns"] if not c["column"].startswith("Python")]
    mark = {"reproduced": "🔴 reproduced", "held": "🟢 held", "n/a": "n/a"}
    out = [
        "# The version matrix",
        "",
        f"Generated by `make matrix` (`python -m scripts.matrix`) at commit `{report['commit']}` on "
        f"{report['date']}, in {report['seconds']:.0f} s. Every cell was measured by running the pitfall, not "
        "written by hand: the pure-asyncio pitfalls as standalone reproductions "
        "([`app/scenarios/cancellation/standalone.py`](../app/scenarios/cancellation/standalone.py), "
        "standard library only, on every "
        "interpreter pyenv has), the library ones in a venv per version "
        "([`scripts/matrix_libs.py`](../scripts/matrix_libs.py)). *Reproduced*: the trap sprang (the broken "
        "code fails as the gallery shows); *held*: it did not; *n/a*: what it needs does not exist there. "
        "JSON beside this file: [`matrix.json`](matrix.json).",
        "",
        "## Python",
        "",
        "| pitfall | " + " | ".join(c["column"].removeprefix("Python ") for c in pythons) + " |",
        "|---|" + "---|" * len(pythons),
    ]
    for row, title in ROWS.items():
        cells = [mark.get(c["cells"].get(row, {}).get("status", ""), "not run") for c in pythons]
        out.append(f"| [`{row}`](../README.md#the-cancellation-gallery) {title} | " + " | ".join(cells) + " |")
    not_run = [f"- {c['column']}: not run ({c['not_run']})" for c in pythons if c.get("not_run")]
    out += ["", *not_run, "", "What changed between neighbouring versions:", "", *changes(pythons)]
    here = ".".join(map(str, sys.version_info[:2]))
    out += ["", f"## Libraries (on Python {here} unless the column names another)", ""]
    out += ["| version | pitfall | result | what happened |", "|---|---|---|---|"]
    for c in libraries:
        if c.get("not_run"):
            out.append(f"| {c['column']} | | not run | {c['not_run']} |")
        for row, value in c["cells"].items():
            out.append(f"| {c['column']} | `{row}` | {mark[value['status']]} | {value['detail']} |")
    out += ["", "What changed between neighbouring versions:", "", *changes(libraries, details=True), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.matrix", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="this interpreter and the installed libraries only")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where MATRIX.md and matrix.json go")
    p.add_argument("--max-minutes", type=float, default=20, help="stop starting new columns after this")
    args = p.parse_args(argv)
    started = time.monotonic()
    deadline = started + 60 * args.max_minutes
    print("Python versions:", flush=True)
    columns = python_columns(args.quick, deadline)
    print("Libraries:", flush=True)
    columns += library_columns(args.quick, Settings.from_env().redis_url, deadline)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    report = {
        "commit": commit.stdout.strip() or "unknown",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.monotonic() - started, 1),
        "columns": columns,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matrix.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "MATRIX.md").write_text(markdown(report))
    print(f"{args.out / 'MATRIX.md'} written in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
