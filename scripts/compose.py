"""Docker compose, found one way for ``make up``, ``make down`` and ``make demo DEMO=compose``; when it cannot
run, one line says what is missing and what to use instead.

    python -m scripts.compose up|down
"""

from __future__ import annotations

import shutil
import subprocess
import sys

INSTEAD = "without Docker, `make run` serves the same app against local Postgres and Redis (README)"


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find() -> list[str] | str:
    """The compose command (``docker compose`` or ``docker-compose``), or why there is none that can run."""
    docker = shutil.which("docker")
    standalone = shutil.which("docker-compose")
    if docker is None:
        return "docker-compose is here but Docker itself is not" if standalone else "Docker is not installed"
    if _ok([docker, "compose", "version"]):
        command = [docker, "compose"]
    elif standalone:
        command = [standalone]
    else:
        return "Docker is installed but not its compose plugin (docker-compose-plugin)"
    if not _ok([docker, "info"]):
        return "Docker is installed but its daemon is not running (or this user may not use it)"
    return command


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["up"], ["down"]):
        print("usage: python -m scripts.compose up|down", file=sys.stderr)
        return 2
    command = find()
    if isinstance(command, str):
        print(f"{command}: {INSTEAD}", file=sys.stderr)
        return 2
    extra = ["--build", "-d"] if args == ["up"] else []
    return subprocess.run([*command, *args, *extra]).returncode


if __name__ == "__main__":
    sys.exit(main())
