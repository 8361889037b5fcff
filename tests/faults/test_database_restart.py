"""PostgreSQL restarted under a live Parley (gunicorn, production settings, kept
connections): requests in flight and requests made while it is down get a 503 (a
problem on the API, a plain page on the dashboard) with Retry-After, never a 500 or a
traceback; once it is back every path answers again at once, and no consent change
was left half written.

The server restarted is the private cluster of this test session, never the shared one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg

from tests.faults.conftest import HALF_WRITTEN_SQL, PROBLEM, Answer, Browser, LiveParley
from tests.faults.servers import wait_until

LEAKS = ("Traceback", "OperationalError", "psycopg", 'File "/')


def unavailable_problem(answer: Answer) -> None:
    assert answer.status == 503, answer.text
    assert answer.content_type == PROBLEM
    assert answer.headers["retry-after"].isdigit()
    problem = answer.json()
    assert problem["type"] == "urn:parley:problem:service-unavailable"
    assert problem["status"] == 503
    assert not any(leak in answer.text for leak in LEAKS)


def unavailable_page(answer: Answer) -> None:
    assert answer.status == 503, answer.text
    assert answer.content_type == "text/html"
    assert answer.headers["retry-after"].isdigit()
    assert "<h1>Temporarily unavailable</h1>" in answer.text
    assert not any(leak in answer.text for leak in LEAKS)


def in_parallel(count: int, call: Callable[[int], Answer]) -> list[Any]:
    """`call(i)` in `count` threads at once; the answers (or exceptions) by index."""
    start = threading.Barrier(count)
    answers: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            start.wait(timeout=30)
            answers[index] = call(index)
        except Exception as exc:  # reported by the caller
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def statuses(answers: list[Any]) -> list[Any]:
    return [getattr(a, "status", a) for a in answers]


def waiting_statements(live: LiveParley) -> list[str]:
    return [
        query
        for (query,) in live.sql(
            "SELECT query FROM pg_stat_activity WHERE datname = 'parley' "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    ]


def events_of(live: LiveParley, external_id: str) -> int:
    [(count,)] = live.sql(
        "SELECT COUNT(*) FROM consent_consentevent e JOIN consent_subject s "
        "ON s.id = e.subject_id WHERE s.external_id = %s",
        [external_id],
    )
    return int(count)


def every_path(live: LiveParley, subject: str, browser: Browser) -> dict[str, Answer]:
    """One request down each path: DRF reads and writes, both fast lanes, a
    dashboard page behind a session."""
    return {
        "write": live.choose(subject, "analytics", True),
        "read": live.request("GET", f"/api/v1/subjects/{subject}"),
        "check": live.check(subject),
        "decision": live.decide(subject),
        "dashboard": live.request("GET", "/dashboard/", browser=browser),
    }


def test_a_database_restart_gives_503s_then_recovers_with_nothing_half_written(
    live: LiveParley,
) -> None:
    anna, bruno, carla = live.register(), live.register(), live.register()
    browser = live.sign_in(carla)
    # Every worker thread gets a kept connection, and the token is in each process's
    # cache: the fast lanes then use their connection without Django's health check.
    assert set(statuses(in_parallel(live.server.threads, lambda i: live.check(carla)))) == {200}
    before = {name: events_of(live, name) for name in (anna, bruno)}

    # Two changes in flight when the server goes down: Anna's waits for her subject
    # row; Bruno's has appended its event and waits to move the state onto it.
    holder = live.postgres.connect()
    holder.execute("SELECT id FROM consent_subject WHERE external_id = %s FOR UPDATE", [anna])
    holder.execute(
        "SELECT st.id FROM consent_consentstate st "
        "JOIN consent_subject s ON s.id = st.subject_id "
        "JOIN consent_purpose p ON p.id = st.purpose_id "
        "WHERE s.external_id = %s AND p.key = 'analytics' FOR UPDATE OF st",
        [bruno],
    )
    in_flight: dict[str, Any] = {}

    def change(name: str) -> None:
        try:
            in_flight[name] = live.choose(name, "analytics", False)
        except Exception as exc:  # reported below
            in_flight[name] = exc

    threads = [threading.Thread(target=change, args=(name,)) for name in (anna, bruno)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(waiting_statements(live)) == 2, "both changes to wait")
        statements = sorted(waiting_statements(live))
        assert statements[0].startswith('INSERT INTO "consent_consentstate"'), statements
        assert statements[1].startswith('SELECT "consent_subject"'), statements

        live.postgres.stop()
    finally:
        with suppress(psycopg.Error):
            holder.close()
        for thread in threads:
            thread.join(timeout=60)

    try:
        for name in (anna, bruno):
            unavailable_problem(in_flight[name])

        # While it is down, twice down each path (other threads, other connections).
        for _ in range(2):
            answers = every_path(live, carla, browser)
            for path in ("write", "read", "check", "decision"):
                unavailable_problem(answers[path])
            unavailable_page(answers["dashboard"])
        assert live.request("GET", "/healthz").status == 200  # needs no database
    finally:
        live.postgres.start()

    # Back: no retry needed on any path, on whichever kept connection a request meets.
    for _ in range(2):
        assert set(statuses(in_parallel(live.server.threads, lambda i: live.check(carla)))) == {200}
        reads = in_parallel(
            live.server.threads, lambda i: live.request("GET", f"/api/v1/subjects/{carla}")
        )
        assert set(statuses(reads)) == {200}
    assert {path: a.status for path, a in every_path(live, carla, browser).items()} == {
        "write": 200,
        "read": 200,
        "check": 200,
        "decision": 200,
        "dashboard": 200,
    }

    # The changes cut off were not recorded, not even in part; they can be made now.
    assert {name: events_of(live, name) for name in (anna, bruno)} == before
    assert live.sql(HALF_WRITTEN_SQL) == []
    for name in (anna, bruno):
        assert live.choose(name, "analytics", False).status == 200
    assert live.sql(HALF_WRITTEN_SQL) == []
