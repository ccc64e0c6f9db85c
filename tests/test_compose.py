"""docker-compose.yml stays valid (no Docker engine here: Debian's ``docker-compose config`` checks it) and
publishes nothing beyond 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT


def test_compose_config_valid_and_loopback_only() -> None:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run installs Debian's docker-compose")
        pytest.skip("docker-compose not installed (apt-get install docker-compose); .ci/run always checks it")
    run = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    published = re.findall(r"^\s*- (\S+:\d+/\w+)$", run.stdout, flags=re.M)
    assert published, run.stdout
    assert all(p.startswith("127.0.0.1:") for p in published), published
    # the app waits for healthy dependencies and for the migrations
    assert "service_healthy" in run.stdout and "service_completed_successfully" in run.stdout
