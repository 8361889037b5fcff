"""Rollout throughput: one phase over N subjects through Celery workers, against the
same changes made by hand-written SQL on the same rows.

    make bench-rollout                     # 1,000,000 subjects
    BENCH_SUBJECTS=20000 make bench-rollout

Steps:
1. A template database `parley_bench_tpl_<N>` holds the migrated schema and N subjects
   in the jurisdictions of phase 1 of the `2025-06` rollout (US and its states, BR,
   IN, GB) with their baseline consents, generated set-based (generate_series). It is
   kept between runs and rebuilt only when N or the migrations change.
2. Engine: a copy of the template, two Celery worker processes (prefork, one per
   core) on Redis, `rollouts.start_phase` on phase 1; the clock runs from the start
   call to the phase's completion in the database.
3. Floor: another copy, the same changes by the fastest SQL written for exactly this
   case (one transaction, temporary decision table, data-modifying CTEs).
4. Both copies must end identical (states by purpose/source/granted, notices, subject
   versions); the figures go to stdout and to BENCH_OUT as JSON.
"""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404 # the benchmark starts its own migrations, worker and script
import sys
import time
from typing import Any

import psycopg
import redis
from common import (
    BROKER,
    PG,
    ROOT,
    execute_script,
    log,
    merge_results,
    migrations_fingerprint,
    recreate_database,
    template_is_current,
)

SUBJECTS = int(os.environ.get("BENCH_SUBJECTS", "1000000"))
BATCH_SIZE = int(os.environ.get("BENCH_BATCH_SIZE", "10000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
# One template per size, so a quick run does not discard the large one.
TEMPLATE = f"parley_bench_tpl_{SUBJECTS}"
ENGINE_DB, FLOOR_DB = f"parley_bench_engine_{SUBJECTS}", f"parley_bench_floor_{SUBJECTS}"
PHASE_VERSION = "2025-06"


def django_env(database: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"{PG}/{database}",
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "ROLLOUT_BATCH_SIZE": str(BATCH_SIZE),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


# --- the template --------------------------------------------------------------------


DATASET_SQL = """
CREATE TEMP TABLE bench_j AS
  SELECT row_number() OVER (ORDER BY j.code) - 1 AS k, j.id, j.code
  FROM consent_jurisdiction j
  JOIN consent_rolloutphase_jurisdictions pj ON pj.jurisdiction_id = j.id
  JOIN consent_rolloutphase ph ON ph.id = pj.rolloutphase_id AND ph.position = 1
  JOIN consent_rollout r ON r.id = ph.rollout_id
  JOIN consent_policyversion v ON v.id = r.version_id AND v.label = %(version)s;

INSERT INTO consent_subject
  (external_id, country, subdivision, language, birth_year, jurisdiction_id,
   policy_version_id, gpc_signalled_at, erased_at, created_at, updated_at, user_id)
SELECT 'bench-' || g,
       CASE WHEN position('-' IN j.code) > 0 THEN split_part(j.code, '-', 1) ELSE j.code END,
       CASE WHEN position('-' IN j.code) > 0 THEN j.code ELSE '' END,
       'en',
       CASE WHEN g %% 10 = 0 THEN NULL ELSE 1950 + (g %% 66) END,
       j.id, base.id,
       CASE WHEN g %% 25 = 0 THEN now() END,
       NULL, now(), now(), NULL
FROM generate_series(1, %(n)s) g
JOIN bench_j j ON j.k = g %% (SELECT count(*) FROM bench_j)
CROSS JOIN (SELECT id FROM consent_policyversion WHERE label = '2024-01') base;

-- Baseline consents: service_delivery on; analytics by the jurisdiction's mechanism,
-- refused where the age rules block it, and an explicit choice for every 7th subject.
INSERT INTO consent_consentevent
  (subject_id, purpose_id, granted, source, policy_version_id, jurisdiction_id,
   actor_type, actor_id, occurred_at, notice_version_id, language, ip_truncated,
   user_agent, reason, rollout_phase_id)
SELECT s.id, p.id,
       CASE WHEN p.essential THEN TRUE
            WHEN s.id %% 7 = 0 THEN s.id %% 2 = 0
            WHEN s.birth_year IS NOT NULL
                 AND extract(year FROM now())::int - s.birth_year - 1 < j.consent_age THEN FALSE
            ELSE r.mechanism = 'opt_out' END,
       CASE WHEN p.essential THEN 'rollout_default'
            WHEN s.id %% 7 = 0 THEN 'user_app'
            WHEN s.birth_year IS NOT NULL
                 AND extract(year FROM now())::int - s.birth_year - 1 < j.consent_age
              THEN 'age_rule'
            ELSE 'rollout_default' END,
       s.policy_version_id, s.jurisdiction_id, 'system', 'bench', now(), NULL, 'en', '', '',
       '', NULL
FROM consent_subject s
JOIN consent_jurisdiction j ON j.id = s.jurisdiction_id
JOIN consent_purpose p ON p.key IN ('service_delivery', 'analytics')
JOIN consent_jurisdictionrule r ON r.jurisdiction_id = j.id AND r.purpose_id = p.id
ORDER BY s.id, p.id;

INSERT INTO consent_consentstate
  (subject_id, purpose_id, granted, source, policy_version_id, event_id, updated_at)
SELECT subject_id, purpose_id, granted, source, policy_version_id, id, occurred_at
FROM consent_consentevent;

CREATE TABLE bench_meta (subjects integer, migrations text);
"""


def build_template() -> None:
    log(f"building the template database with {SUBJECTS:,} subjects")
    recreate_database(TEMPLATE)
    subprocess.run(  # nosec B603 # our interpreter and manage.py
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=django_env(TEMPLATE),
        check=True,
    )
    started = time.perf_counter()
    with psycopg.connect(f"{PG}/{TEMPLATE}") as conn:
        execute_script(conn, DATASET_SQL, {"n": SUBJECTS, "version": PHASE_VERSION})
        conn.execute("INSERT INTO bench_meta VALUES (%s, %s)", [SUBJECTS, migrations_fingerprint()])
        conn.commit()
    with psycopg.connect(f"{PG}/{TEMPLATE}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    log(f"dataset generated in {time.perf_counter() - started:.1f} s")


ONLY_PHASE_ONE = """
UPDATE consent_rollout SET status = 'draft'
WHERE version_id <> (SELECT id FROM consent_policyversion WHERE label = %(version)s);

UPDATE consent_rolloutphase SET starts_at = '2999-01-01'
WHERE position > 1 AND rollout_id IN (
  SELECT r.id FROM consent_rollout r JOIN consent_policyversion v ON v.id = r.version_id
  WHERE v.label = %(version)s)
"""


def fresh_copy(name: str) -> None:
    """A copy of the template where only phase 1 of the measured version can run
    (the seed plan's other phases are due too, and would start when it completes)."""
    recreate_database(name, template=TEMPLATE)
    with psycopg.connect(f"{PG}/{name}") as conn:
        execute_script(conn, ONLY_PHASE_ONE, {"version": PHASE_VERSION})
        conn.commit()


# --- the engine ---------------------------------------------------------------------------


ENGINE_INNER = """
import time, django
django.setup()
from consent import rollouts
from consent.models import RolloutPhase
phase = RolloutPhase.objects.get(rollout__version__label=%r, position=1)
started = time.perf_counter()
rollouts.start_phase(phase_id=phase.pk, actor="bench")
while True:
    phase.refresh_from_db()
    if phase.status != "running":
        break
    time.sleep(0.05)
print(f"RESULT {time.perf_counter() - started:.3f} {phase.status} {phase.total} {phase.processed}")
"""


def run_engine() -> tuple[float, int]:
    fresh_copy(ENGINE_DB)
    redis.Redis.from_url(BROKER).flushdb()
    env = django_env(ENGINE_DB, DJANGO_SETTINGS_MODULE="config.settings")
    worker = subprocess.Popen(  # noqa: S603 (our own worker command)  # nosec B603
        [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "config",
            "worker",
            "--pool=prefork",
            f"--concurrency={WORKERS}",
            "--loglevel=WARNING",
            "-n",
            "bench@%h",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        ping = [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "inspect", "ping"]
        for _ in range(60):
            if subprocess.run(ping, cwd=ROOT, env=env, capture_output=True).returncode == 0:  # noqa: S603 (the venv's celery)  # nosec B603
                break
            time.sleep(1)
        else:
            raise RuntimeError("the Celery workers did not come up")
        result = subprocess.run(  # noqa: S603 (our own interpreter and script)  # nosec B603
            [sys.executable, "-c", ENGINE_INNER % PHASE_VERSION],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown of the main process
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    _, seconds, status, total, processed = line.split()
    if status != "completed" or total != processed:
        raise RuntimeError(f"the phase ended {status} with {processed}/{total} subjects")
    return float(seconds), int(total)


# --- the floor ------------------------------------------------------------------------------

FLOOR_SQL = """
CREATE TEMP TABLE d ON COMMIT DROP AS
SELECT s.id AS sid, s.jurisdiction_id AS jid, s.language, p.id AS pid,
       CASE WHEN blocked THEN FALSE
            WHEN p.gpc_applies AND s.gpc_signalled_at IS NOT NULL THEN FALSE
            WHEN r.mechanism = 'opt_out'
                 AND NOT (age IS NOT NULL AND j.opt_in_below_age IS NOT NULL
                          AND age < j.opt_in_below_age) THEN TRUE
            ELSE FALSE END AS granted,
       CASE WHEN blocked THEN 'age_rule'
            WHEN p.gpc_applies AND s.gpc_signalled_at IS NOT NULL THEN 'gpc'
            ELSE 'rollout_default' END AS source,
       (j.material_change_requires_decision AND NOT blocked) AS decide
FROM consent_subject s
JOIN consent_jurisdiction j ON j.id = s.jurisdiction_id
CROSS JOIN LATERAL (SELECT CASE WHEN s.birth_year IS NULL THEN NULL
                                ELSE greatest(%(year)s - s.birth_year - 1, 0) END AS age) a
JOIN consent_purpose p ON p.key IN ('ads_personalization', 'ads_data_sharing')
JOIN consent_jurisdictionrule r ON r.jurisdiction_id = j.id AND r.purpose_id = p.id
CROSS JOIN LATERAL (SELECT (a.age IS NOT NULL AND (a.age < j.consent_age
        OR (p.profiling AND j.profiling_ads_to_minors_banned AND a.age < j.minor_age)))
        AS blocked) b
WHERE s.policy_version_id = %(from_version)s AND s.erased_at IS NULL
  AND s.jurisdiction_id IN (SELECT jurisdiction_id FROM consent_rolloutphase_jurisdictions
                            WHERE rolloutphase_id = %(phase)s);

WITH e AS (
  INSERT INTO consent_consentevent
    (subject_id, purpose_id, granted, source, policy_version_id, jurisdiction_id,
     actor_type, actor_id, occurred_at, notice_version_id, language, ip_truncated,
     user_agent, reason, rollout_phase_id)
  SELECT sid, pid, granted, source, %(version)s, jid, 'system', 'floor', now(),
         %(version)s, language, '', '', '', %(phase)s
  FROM d ORDER BY sid, pid
  RETURNING id, subject_id, purpose_id, granted, source, policy_version_id, occurred_at
)
INSERT INTO consent_consentstate
  (subject_id, purpose_id, granted, source, policy_version_id, event_id, updated_at)
SELECT subject_id, purpose_id, granted, source, policy_version_id, id, occurred_at FROM e;

WITH n AS (
  INSERT INTO consent_policynotice (subject_id, version_id, requires_decision, created_at)
  SELECT sid, %(version)s, bool_or(decide), now() FROM d GROUP BY sid
  RETURNING id, subject_id
)
INSERT INTO consent_policynotice_decision_purposes (policynotice_id, purpose_id)
SELECT n.id, d.pid FROM n JOIN d ON d.sid = n.subject_id WHERE d.decide;

UPDATE consent_subject SET policy_version_id = %(version)s, updated_at = now()
WHERE id IN (SELECT DISTINCT sid FROM d);
"""


def run_floor() -> float:
    fresh_copy(FLOOR_DB)
    with psycopg.connect(f"{PG}/{FLOOR_DB}") as conn:
        ids = conn.execute(
            """
            SELECT v.id, (SELECT id FROM consent_policyversion WHERE label = '2024-01'), ph.id
            FROM consent_policyversion v
            JOIN consent_rollout r ON r.version_id = v.id
            JOIN consent_rolloutphase ph ON ph.rollout_id = r.id AND ph.position = 1
            WHERE v.label = %s
            """,
            [PHASE_VERSION],
        ).fetchone()
        if ids is None:
            raise RuntimeError("the seed rollout plan is missing from the template")
        version, from_version, phase = ids
        conn.commit()
        started = time.perf_counter()
        execute_script(
            conn,
            FLOOR_SQL,
            {
                "version": version,
                "from_version": from_version,
                "phase": phase,
                "year": time.gmtime().tm_year,
            },
        )
        conn.commit()
        return time.perf_counter() - started


def outcome(database: str) -> dict[str, Any]:
    with psycopg.connect(f"{PG}/{database}") as conn:
        states = conn.execute(
            """
            SELECT p.key, st.source, st.granted, count(*)
            FROM consent_consentstate st JOIN consent_purpose p ON p.id = st.purpose_id
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """
        ).fetchall()
        notices = conn.execute(
            "SELECT requires_decision, count(*) FROM consent_policynotice GROUP BY 1 ORDER BY 1"
        ).fetchall()
        decisions = conn.execute(
            "SELECT count(*) FROM consent_policynotice_decision_purposes"
        ).fetchone()
        versions = conn.execute(
            """
            SELECT v.label, count(*) FROM consent_subject s
            JOIN consent_policyversion v ON v.id = s.policy_version_id GROUP BY 1 ORDER BY 1
            """
        ).fetchall()
    return {
        "states": [list(r) for r in states],
        "notices": [list(r) for r in notices],
        "decision_purposes": decisions[0] if decisions else 0,
        "versions": [list(r) for r in versions],
    }


def main() -> int:
    if not template_is_current(TEMPLATE, SUBJECTS):
        build_template()
    else:
        log(f"reusing the template database ({SUBJECTS:,} subjects)")
    log(f"engine: phase 1 of {PHASE_VERSION} through {WORKERS} Celery worker processes")
    engine_seconds, total = run_engine()
    log("floor: the same changes by hand-written SQL")
    floor_seconds = run_floor()
    same = outcome(ENGINE_DB) == outcome(FLOOR_DB)
    figures = {
        "rollout_subjects": total,
        "rollout_seconds": round(engine_seconds, 3),
        "rollout_subjects_per_s": round(total / engine_seconds, 1),
        "rollout_raw_sql_seconds": round(floor_seconds, 3),
        "rollout_raw_sql_subjects_per_s": round(total / floor_seconds, 1),
        "rollout_ratio": round(floor_seconds / engine_seconds, 3),
        "rollout_same_outcome": same,
    }
    print()
    print(f"{'rollout (one phase)':<34}{'subjects':>12}{'seconds':>10}{'subjects/s':>14}")
    print(
        f"{'engine, Celery workers':<34}{total:>12,}{engine_seconds:>10.2f}"
        f"{total / engine_seconds:>14,.0f}"
    )
    print(
        f"{'hand-written SQL (floor)':<34}{total:>12,}{floor_seconds:>10.2f}"
        f"{total / floor_seconds:>14,.0f}"
    )
    print(f"ratio floor/engine time: {floor_seconds / engine_seconds:.2f}   same outcome: {same}")
    merge_results(figures)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
