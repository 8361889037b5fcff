"""The HTTP benchmark's CPU accounting (`bench/http_api.py`): what it reads from /proc
(the benchmark runs on Linux, as CI does) and how it counts processes that come and go
during a round."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

sys.path.insert(0, str(Path(settings.BASE_DIR) / "bench"))
import http_api


def test_a_process_cpu_grows_with_the_work_it_does() -> None:
    start = http_api._cpu_seconds(os.getpid())
    assert start is not None
    deadline = time.process_time() + 0.1
    spun = 0
    while time.process_time() < deadline:  # 0.1 s of this process's CPU
        spun += sum(range(1000))
    assert spun > 0
    after = http_api._cpu_seconds(os.getpid())
    assert after is not None
    assert after - start >= 0.05


def test_a_process_that_is_gone_has_no_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert http_api._cpu_seconds(child.pid) is None


def test_the_children_of_a_process_are_found() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in http_api._children(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_cpu_used_in_a_round_counts_newcomers_from_zero_and_drops_the_departed() -> None:
    before = {1: 10.0, 2: 5.0}  # 2 leaves during the round, 3 starts during it
    after = {1: 10.5, 3: 0.25}
    assert http_api.CpuMeter.used(before, after) == pytest.approx(0.75)
