"""Every command the README shows works as typed in a fresh shell after its first command: each shell line of
its code blocks names a make target that exists (with the variables that target reads), a route the app
serves, or a system tool the README tells how to get (#16). Checked by reading, not by running them all."""

from __future__ import annotations

import re
import shlex
from urllib.parse import urlsplit

from app import openapi
from app.scenarios import SCENARIOS
from app.settings import VARIANTS
from app.talk import TALK
from tests.helpers import ROOT

SYSTEM = {"pg_ctlcluster", "redis-server", "sleep", "kill", "chromium", "docker", "docker-compose"}


def shell_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            for command in line.split("#")[0].split(";"):
                if command.strip():
                    lines.append(command.strip().removesuffix("&").strip())
    return lines


def make_targets() -> dict[str, str]:
    """Each target of the Makefile and its recipe."""
    text = (ROOT / "Makefile").read_text()
    return {m[1]: m[2] for m in re.finditer(r"^([a-z][\w-]*):[^\n]*\n((?:\t[^\n]*\n)*)", text, re.M)}


def served(path: str) -> bool:
    patterns = [
        re.sub(r"\{[^}]+\}", "[^/]+", p.replace("{variant}", f"({'|'.join(VARIANTS)})"))
        for p in openapi.document(SCENARIOS)["paths"]
    ]
    return any(re.fullmatch(p, path) for p in patterns)


def test_every_readme_command_names_something_that_exists() -> None:
    targets = make_targets()
    lines = shell_lines()
    assert len(lines) > 15, lines
    for line in lines:
        words = shlex.split(line)
        if words[0] == "make":
            target = next((w for w in words[1:] if "=" not in w), "help")
            assert target in targets, line
            for variable in (w.split("=")[0] for w in words[1:] if "=" in w):
                assert f"$({variable})" in targets[target], line
        elif words[0] == "curl":
            url = next(w for w in words[1:] if "127.0.0.1" in w)
            assert served(urlsplit(f"http://{url.removeprefix('http://')}").path), line
        elif words[0].startswith(".venv/bin/python"):
            module = words[words.index("-m") + 1]
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), line
        else:
            assert words[0] in SYSTEM, line


def test_no_bare_python_dash_m_lines() -> None:
    """A reader in a fresh shell has no activated venv: a bare ``python -m`` would fail to import aiohttp."""
    assert not [line for line in shell_lines() if line.startswith("python ")]


def test_the_talk_in_the_readme_is_the_one_the_page_runs() -> None:
    """ "Give this talk" lists app/talk.py's steps, in order, word for word: the page's talk mode and
    ``make demo`` print the same list, so a speaker reading the README gives the talk the page runs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Give this talk", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d+\. (.*?)(?=^\d+\. |^\s*$)", section, re.M | re.S)
    assert [" ".join(item.split()) for item in items] == [step.readme for step in TALK]
