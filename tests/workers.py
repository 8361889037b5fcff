"""Real Celery worker processes for the tests that need one (not eager mode)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def start_worker(
    *, name: str, env: dict[str, str], log_path: Path, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Starts `celery -A config worker` (prefork, two processes) in its own process
    group, logging to `log_path`, and waits until it says it is ready."""
    celery = Path(sys.executable).parent / "celery"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own worker, fixed arguments)
            [
                str(celery),
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "-n",
                f"{name}@%h",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while " ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    return process
