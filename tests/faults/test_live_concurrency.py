"""Concurrent changes over real HTTP: 50 requests at once (FAULTS_PARALLEL) against
Parley under gunicorn (a worker thread, with its own database connection, for each),
all changing the same purpose of the same subject."""

from __future__ import annotations

import threading

from tests.faults.conftest import HALF_WRITTEN_SQL, PARALLEL, LiveParley


def test_parallel_changes_give_one_event_each_and_the_state_of_the_last(
    live: LiveParley,
) -> None:
    subject = live.register()
    start = threading.Barrier(PARALLEL)
    answers: list[object] = [None] * PARALLEL

    def change(index: int) -> None:
        try:
            start.wait(timeout=30)
            answers[index] = live.choose(subject, "analytics", index % 2 == 0)
        except Exception as exc:  # reported below
            answers[index] = exc

    threads = [threading.Thread(target=change, args=(i,)) for i in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    statuses = [getattr(a, "status", a) for a in answers]
    assert statuses == [200] * PARALLEL
    events = live.sql(
        """
        SELECT e.id, e.granted FROM consent_consentevent e
        JOIN consent_subject s ON s.id = e.subject_id
        JOIN consent_purpose p ON p.id = e.purpose_id
        WHERE s.external_id = %s AND p.key = 'analytics' AND e.source = 'user_app'
        ORDER BY e.id
        """,
        [subject],
    )
    assert len(events) == PARALLEL
    # Every other request granted: each was recorded once.
    refusals = PARALLEL // 2
    assert sorted(granted for _, granted in events) == [False] * refusals + [True] * (
        PARALLEL - refusals
    )
    [(event_id, granted, source)] = live.sql(
        """
        SELECT st.event_id, st.granted, st.source FROM consent_consentstate st
        JOIN consent_subject s ON s.id = st.subject_id
        JOIN consent_purpose p ON p.id = st.purpose_id
        WHERE s.external_id = %s AND p.key = 'analytics'
        """,
        [subject],
    )
    assert (event_id, granted, source) == (events[-1][0], events[-1][1], "user_app")
    # The API says the same as the database.
    [analytics] = [
        c
        for c in live.request("GET", f"/api/v1/subjects/{subject}/consents").json()
        if c["purpose"] == "analytics"
    ]
    assert analytics["granted"] is events[-1][1]
    assert live.sql(HALF_WRITTEN_SQL) == []
