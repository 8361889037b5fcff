"""A process that hammers one rate-limit key (for tests/security/test_rate_limits.py).

Run in a fresh interpreter (multiprocessing's spawn): each process has its own
`Limiter`, as each gunicorn worker does, and several threads share it.
"""

from __future__ import annotations

import threading
from typing import Any


def hammer(
    url: str, key: str, limit: int, now: float, threads: int, attempts: int, ready: Any
) -> int:
    """How many of `threads * attempts` requests this process admitted; `ready` is a
    barrier shared with the other processes, so that they all start together."""
    import django

    django.setup()
    from consent import ratelimit

    limiter = ratelimit.Limiter(lambda: ratelimit.redis_client(url), clock=lambda: now)
    admitted = [0] * threads
    start = threading.Barrier(threads)

    def run(index: int) -> None:
        start.wait()
        for _ in range(attempts):
            if limiter.admit(key, limit).allowed:
                admitted[index] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    ready.wait(timeout=60)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(admitted)
