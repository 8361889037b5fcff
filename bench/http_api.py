"""HTTP throughput of the API, served by gunicorn the way production serves it, with
load from a separate process (wrk) on the same machine.

    make bench          # with the rollout benchmark, over 1,000,000 subjects
    BENCH_HTTP_SUBJECTS=5000 BENCH_ROUNDS=1 python bench/http_api.py

Steps:
1. A template database `parley_bench_http_<N>` holds the migrated schema and N subjects
   over every jurisdiction, on the latest policy version, with a current state (and its
   event) for every purpose, features for every second subject, twenty Status
   campaigns with targeting rules, and a service token. It is built with set-based SQL
   and kept between runs; it is rebuilt only when N or the migrations change.
2. Each run works on a fresh copy (decisions and signals write rows), served by
   `gunicorn config.wsgi` with sync workers (`BENCH_GUNICORN_WORKERS`, default 3) and
   production settings (DEBUG off, persistent database connections).
3. For each endpoint: a warm-up, then `BENCH_ROUNDS` rounds of `BENCH_SECONDS` with
   wrk; the medians of requests/s and of the 99th percentile latency are quoted. A
   round with any non-2xx answer or socket error fails the benchmark.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess  # nosec B404 # the benchmark starts its own server, migrations and wrk
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import (
    BROKER,
    PG,
    ROOT,
    VENV_BIN,
    dataset_fingerprint,
    execute_script,
    log,
    merge_results,
    recreate_database,
    template_is_current,
)

SUBJECTS = int(os.environ.get("BENCH_HTTP_SUBJECTS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "5"))
GUNICORN_WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "3"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
WRK_CONNECTIONS = int(os.environ.get("BENCH_WRK_CONNECTIONS", "6"))
PORT = int(os.environ.get("BENCH_PORT", "8765"))
TEMPLATE = f"parley_bench_http_{SUBJECTS}"
RUN_DB = f"parley_bench_http_run_{SUBJECTS}"
SCRIPTS = ROOT / "var" / "bench"
SCOPES = "consent:read,ads:decide,signals:write"
# The load token's rate limit (requests per minute): far above what the load reaches,
# so the benchmark measures the limiter's cost, never its refusals.
BENCH_RATE_LIMIT = 2_000_000_000

# --- the template ------------------------------------------------------------------------

DATASET_SQL = """
CREATE TEMP TABLE bench_j AS
  SELECT row_number() OVER (ORDER BY code) - 1 AS k, id, code
  FROM consent_jurisdiction WHERE code <> 'DEFAULT';

CREATE TEMP TABLE bench_lang (k int, tag text);

INSERT INTO bench_lang VALUES (0, 'en'), (1, 'pt-BR'), (2, 'fr'), (3, 'hi'), (4, 'de');

INSERT INTO consent_subject
  (external_id, country, subdivision, language, birth_year, jurisdiction_id,
   policy_version_id, gpc_signalled_at, erased_at, created_at, updated_at, user_id)
SELECT 'bench-' || g,
       CASE WHEN position('-' IN j.code) > 0 THEN split_part(j.code, '-', 1) ELSE j.code END,
       CASE WHEN position('-' IN j.code) > 0 THEN j.code ELSE '' END,
       l.tag,
       CASE WHEN g %% 10 = 0 THEN NULL ELSE 1950 + (g %% 66) END,
       j.id, latest.id, NULL, NULL, now(), now(), NULL
FROM generate_series(1, %(n)s) g
JOIN bench_j j ON j.k = g %% (SELECT count(*) FROM bench_j)
JOIN bench_lang l ON l.k = g %% 5
CROSS JOIN (SELECT id FROM consent_policyversion ORDER BY label DESC LIMIT 1) latest;

-- One explicit decision per purpose: essential purposes on, the others by the
-- subject's id, so every check answers allowed for some subjects and denied for others.
INSERT INTO consent_consentevent
  (subject_id, purpose_id, granted, source, policy_version_id, jurisdiction_id,
   actor_type, actor_id, occurred_at, notice_version_id, language, ip_truncated,
   user_agent, reason, rollout_phase_id)
SELECT s.id, p.id, p.essential OR (s.id + p.id) %% 3 <> 0,
       CASE WHEN p.essential THEN 'rollout_default' ELSE 'user_app' END,
       s.policy_version_id, s.jurisdiction_id, 'system', 'bench', now(), NULL, s.language,
       '', '', '', NULL
FROM consent_subject s CROSS JOIN consent_purpose p
ORDER BY s.id, p.id;

INSERT INTO consent_consentstate
  (subject_id, purpose_id, granted, source, policy_version_id, event_id, updated_at)
SELECT subject_id, purpose_id, granted, source, policy_version_id, id, occurred_at
FROM consent_consentevent;

CREATE TEMP TABLE bench_topics (k int, topics jsonb, city text);

INSERT INTO bench_topics VALUES
  (0, '{"football": 3, "music": 1}', 'Lagos'),
  (1, '{"cooking": 2}', 'São Paulo'),
  (2, '{"travel": 1, "football": 1}', 'Mumbai'),
  (3, '{"technology": 4}', 'London'),
  (4, '{"music": 2, "fashion": 1}', '');

-- With their running totals, as ingestion writes them (`ads/features.py`): a new
-- batch folds into them. (A row without them, kept from before migration ads 0004,
-- is rebuilt from the subject's signals once, at its first signal.)
INSERT INTO ads_subjectfeatures
  (subject_id, channel_topics, ad_interactions, city, activity_level, updated_at,
   recent_activity, topic_weights, city_at)
SELECT s.id, t.topics, '{}'::jsonb, t.city, 'none', now(), '[]'::jsonb, t.topics,
       CASE WHEN t.city <> '' THEN now() - interval '1 day' END
FROM consent_subject s JOIN bench_topics t ON t.k = s.id %% 5
WHERE s.id %% 2 = 0;

INSERT INTO ads_advertiser (name, country, currency, created_at)
SELECT 'Advertiser ' || g, 'US', 'USD', now() FROM generate_series(1, 10) g;

INSERT INTO ads_campaign
  (advertiser_id, name, placement, status, starts_at, ends_at, pricing, bid,
   daily_budget, total_budget, spent, frequency_cap, click_to_chat, created_at)
SELECT a.id, 'Campaign ' || g, 'status', 'active', now() - interval '1 day', NULL, 'cpm',
       1 + (g %% 7), 100000000, 1000000000, 0, 1000, '', now()
FROM generate_series(1, 20) g
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM ads_advertiser) a
  ON a.k = g %% 10;

INSERT INTO ads_ad (campaign_id, headline, body, image_url, call_to_action, is_active)
SELECT id, 'Headline of ' || name, 'Body of ' || name, '', 'Learn more', TRUE
FROM ads_campaign;

-- Rules on a third of the campaigns each: a country list, a topic, an age band.
INSERT INTO ads_targetingrule (campaign_id, feature, category_id, "values")
SELECT c.id, 'country', (SELECT id FROM consent_metadatacategory WHERE key = 'coarse_location'),
       '["us", "br", "in", "gb", "de", "fr"]'::jsonb
FROM ads_campaign c WHERE c.id %% 3 = 0;

INSERT INTO ads_targetingrule (campaign_id, feature, category_id, "values")
SELECT c.id, 'channel_topic',
       (SELECT id FROM consent_metadatacategory WHERE key = 'updates_activity'),
       '["football", "music"]'::jsonb
FROM ads_campaign c WHERE c.id %% 3 = 1;

INSERT INTO ads_targetingrule (campaign_id, feature, category_id, "values")
SELECT c.id, 'age_band', (SELECT id FROM consent_metadatacategory WHERE key = 'age_band'),
       '["25-34", "35-44"]'::jsonb
FROM ads_campaign c WHERE c.id %% 3 = 2;

CREATE TABLE bench_meta (subjects integer, migrations text, token text)
"""


def django_env(database: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "BEHIND_TLS_PROXY": "true",
        "DATABASE_URL": f"{PG}/{database}",
        "CELERY_BROKER_URL": BROKER,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def build_template() -> None:
    log(f"building the HTTP template database with {SUBJECTS:,} subjects")
    recreate_database(TEMPLATE)
    env = django_env(TEMPLATE)
    migrate = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True)  # noqa: S603 (our own command)  # nosec B603
    started = time.perf_counter()
    with psycopg.connect(f"{PG}/{TEMPLATE}") as conn:
        execute_script(conn, DATASET_SQL, {"n": SUBJECTS})
        conn.commit()
    created = subprocess.run(  # noqa: S603 (our own management command)  # nosec B603
        [
            sys.executable,
            "manage.py",
            "create_service_token",
            "bench",
            "--scopes",
            SCOPES,
            "--rate-limit",
            str(BENCH_RATE_LIMIT),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = created.stdout.strip()
    with psycopg.connect(f"{PG}/{TEMPLATE}") as conn:
        conn.execute(
            "INSERT INTO bench_meta VALUES (%s, %s, %s)",
            [SUBJECTS, dataset_fingerprint(DATASET_SQL), token],
        )
        conn.commit()
    with psycopg.connect(f"{PG}/{TEMPLATE}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    log(f"dataset generated in {time.perf_counter() - started:.1f} s")


def template_token() -> str:
    with psycopg.connect(f"{PG}/{TEMPLATE}") as conn:
        row = conn.execute("SELECT token FROM bench_meta").fetchone()
    if row is None:
        raise RuntimeError("the template has no token")
    return str(row[0])


# --- the server ----------------------------------------------------------------------------


def start_server() -> subprocess.Popen[bytes]:
    server = subprocess.Popen(  # noqa: S603 (our own server command)  # nosec B603
        [
            str(VENV_BIN / "gunicorn"),
            "config.wsgi",
            "--workers",
            str(GUNICORN_WORKERS),
            "--worker-class",
            "sync",
            "--no-control-socket",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--backlog",
            "2048",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=django_env(RUN_DB),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(  # nosec B310 # a fixed http:// URL of the local server
                urllib.request.Request(
                    f"http://127.0.0.1:{PORT}/healthz", headers={"X-Forwarded-Proto": "https"}
                ),
                timeout=2,
            ) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError("gunicorn did not come up")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --- the load ------------------------------------------------------------------------------

LUA_COMMON = """
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
function subject()
  return "bench-" .. math.random(1, {subjects})
end
-- Large bodies are made once per thread (building 1,000 items per request would load
-- wrk) and sent in turn.
local bodies = {{}}
local sent = 0
function cycle()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent % #bodies) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

LUA_BASELINE = """
wrk.method = "GET"
wrk.headers["Authorization"] = nil
wrk.headers["Content-Type"] = nil
"""

LUA_CHECK = """
wrk.method = "POST"
function init(args)
  math.randomseed(seed * 7919)
end
request = function()
  return wrk.format(nil, nil, nil,
    '{{"purpose": "ads_personalization", "subjects": ["' .. subject() .. '"]}}')
end
"""

LUA_BULK = """
wrk.method = "POST"
function init(args)
  math.randomseed(seed * 7919)
  for b = 1, 20 do
    local ids = {{}}
    for i = 1, 1000 do ids[i] = '"' .. subject() .. '"' end
    bodies[b] = '{{"purpose": "analytics", "subjects": [' .. table.concat(ids, ",") .. ']}}'
  end
end
request = cycle
"""

LUA_DECISION = """
wrk.method = "POST"
local contexts = {{'{{"country": "US", "language": "en"}}',
                  '{{"country": "BR", "language": "pt-BR"}}',
                  '{{"country": "DE", "language": "de"}}',
                  '{{"country": "IN", "language": "hi"}}'}}
function init(args)
  math.randomseed(seed * 7919)
end
request = function()
  return wrk.format(nil, nil, nil,
    '{{"subject": "' .. subject() .. '", "placement": "status", "context": '
    .. contexts[math.random(1, #contexts)] .. '}}')
end
"""

LUA_SIGNALS = """
wrk.method = "POST"
local kinds = {{
  function(s) return '{{"type": "app_session", "subject": "' .. s .. '", "occurred_at": "{at}",'
    .. ' "duration_seconds": 120, "city": "Lagos", "platform": "android"}}' end,
  function(s) return '{{"type": "message_sent", "subject": "' .. s .. '", "occurred_at": "{at}",'
    .. ' "peer_count": 1, "hour_of_day": 14}}' end,
  function(s) return '{{"type": "channel_followed", "subject": "' .. s .. '",'
    .. ' "occurred_at": "{at}", "channel": "ch-42", "topics": ["football", "music"]}}' end,
  function(s) return '{{"type": "status_viewed", "subject": "' .. s .. '",'
    .. ' "occurred_at": "{at}", "author_kind": "channel", "topic": "travel"}}' end,
}}
function init(args)
  math.randomseed(seed * 7919)
  for b = 1, 20 do
    local events = {{}}
    for i = 1, 1000 do events[i] = kinds[(i % #kinds) + 1](subject()) end
    bodies[b] = '{{"events": [' .. table.concat(events, ",") .. ']}}'
  end
end
request = cycle
"""


@dataclass(frozen=True)
class Load:
    key: str  # the figures' prefix
    label: str
    path: str
    script: str
    items_per_request: int = 1


def loads() -> list[Load]:
    return [
        Load("baseline_json", "bare Django JSON view (/healthz)", "/healthz", LUA_BASELINE),
        Load("consent_check", "consent check, 1 subject", "/api/v1/consent-checks", LUA_CHECK),
        Load(
            "bulk_check", "consent check, 1,000 subjects", "/api/v1/consent-checks", LUA_BULK, 1000
        ),
        Load("ad_decision", "ad decision", "/api/v1/ads/decisions", LUA_DECISION),
        Load("signals", "signals, 1,000 events a batch", "/api/v1/signals", LUA_SIGNALS, 1000),
    ]


def write_script(load: Load, token: str) -> Path:
    # Signals must be recent (within retention) and not ahead of the server's clock.
    at = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (LUA_COMMON + load.script).format(token=token, subjects=SUBJECTS, at=at)
    SCRIPTS.mkdir(parents=True, exist_ok=True)
    path = SCRIPTS / f"{load.key}.lua"
    path.write_text(body)
    return path


def wrk(script: Path, path: str, seconds: int) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 (wrk from the system's packages)  # nosec B603 B607
        [  # noqa: S607 (found on PATH, like every system tool)
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{PORT}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{result.stdout}\n{result.stderr}")
    figures: dict[str, Any] = json.loads(line.removeprefix("BENCH "))
    if figures["status_errors"] or figures["socket_errors"]:
        raise RuntimeError(f"{path}: failed requests in the round: {figures}")
    return figures


# --- the CPU a request costs ------------------------------------------------------------------
#
# Both cores are busy in every round, so the rate follows what a request costs; where that
# cost is (the server's Python or the database) the rate does not say. Each round reads,
# from /proc, the CPU that gunicorn's workers and the PostgreSQL backends of the run's
# database used while it ran (docs/benchmarks.md).

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """A process's /proc stat fields after its command (which may hold spaces), from
    its state on; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU of a process so far, or None when it is gone."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(parent: int) -> list[int]:
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if (fields := _stat(pid)) is not None and int(fields[1]) == parent]


@dataclass
class CpuMeter:
    """The CPU used by the server's workers and by the run database's backends."""

    server: int  # gunicorn's master
    monitor: psycopg.Connection[Any]  # to another database, so never counted itself

    def backends(self) -> list[int]:
        rows = self.monitor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend'",
            [RUN_DB],
        ).fetchall()
        return [row[0] for row in rows]

    def sample(self) -> dict[str, dict[int, float]]:
        groups = {"app": _children(self.server), "db": self.backends()}
        return {
            group: {pid: cpu for pid in pids if (cpu := _cpu_seconds(pid)) is not None}
            for group, pids in groups.items()
        }

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU used in between; a process that started in between counts from zero."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def measure(load: Load, token: str, meter: CpuMeter | None) -> dict[str, float]:
    script = write_script(load, token)
    wrk(script, load.path, WARMUP)
    rounds = []
    for _ in range(ROUNDS):
        before = meter.sample() if meter else None
        round_ = wrk(script, load.path, SECONDS)
        after = meter.sample() if meter else None
        rps = round_["requests"] / (round_["duration_us"] / 1e6)
        cpu = {"app": float("nan"), "db": float("nan")}
        if before is not None and after is not None:
            for group in cpu:
                used = CpuMeter.used(before[group], after[group])
                cpu[group] = 1000 * used / max(round_["requests"], 1)
        rounds.append((rps, round_["p99_us"] / 1000, cpu["app"], cpu["db"]))
    rps = statistics.median(r[0] for r in rounds)
    return {
        "rps": rps,
        "p99_ms": statistics.median(r[1] for r in rounds),
        "items_per_s": rps * load.items_per_request,
        "app_cpu_ms": statistics.median(r[2] for r in rounds),
        "db_cpu_ms": statistics.median(r[3] for r in rounds),
    }


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")


def main() -> int:
    require_wrk()
    if not template_is_current(TEMPLATE, SUBJECTS, dataset_fingerprint(DATASET_SQL)):
        build_template()
    else:
        log(f"reusing the HTTP template database ({SUBJECTS:,} subjects)")
    token = template_token()
    recreate_database(RUN_DB, template=TEMPLATE)
    log(
        f"gunicorn: {GUNICORN_WORKERS} sync workers; wrk: {WRK_THREADS} thread(s), "
        f"{WRK_CONNECTIONS} connections; {WARMUP} s warm-up, {ROUNDS} x {SECONDS} s rounds"
    )
    server = start_server()
    results: dict[str, dict[str, float]] = {}
    monitor = psycopg.connect(f"{PG}/postgres", autocommit=True)
    meter = CpuMeter(server.pid, monitor) if Path("/proc/self/stat").exists() else None
    try:
        for load in loads():
            log(f"measuring {load.label}")
            results[load.key] = measure(load, token, meter)
    finally:
        monitor.close()
        stop_server(server)
    baseline = results["baseline_json"]["rps"]
    figures = {
        "http_subjects": SUBJECTS,
        "baseline_json_rps": round(baseline, 1),
        "consent_check_rps": round(results["consent_check"]["rps"], 1),
        "consent_check_p99_ms": round(results["consent_check"]["p99_ms"], 2),
        "consent_check_ratio": round(results["consent_check"]["rps"] / baseline, 3),
        "bulk_check_subjects_per_s": round(results["bulk_check"]["items_per_s"], 1),
        "ad_decision_rps": round(results["ad_decision"]["rps"], 1),
        "ad_decision_p99_ms": round(results["ad_decision"]["p99_ms"], 2),
        "ad_decision_ratio": round(
            results["ad_decision"]["rps"] / results["consent_check"]["rps"], 3
        ),
        "signals_events_per_s": round(results["signals"]["items_per_s"], 1),
    }
    for load in loads():  # CPU a request: the medians of the rounds, where /proc tells
        for group in ("app", "db"):
            value = results[load.key][f"{group}_cpu_ms"]
            if not math.isnan(value):
                figures[f"{load.key}_{group}_cpu_ms"] = round(value, 3)
    print()
    print(
        f"{'endpoint':<36}{'requests/s':>12}{'p99 ms':>10}{'items/s':>12}"
        f"{'app CPU ms':>12}{'db CPU ms':>11}"
    )
    for load in loads():
        r = results[load.key]
        print(
            f"{load.label:<36}{r['rps']:>12,.0f}{r['p99_ms']:>10.1f}{r['items_per_s']:>12,.0f}"
            f"{r['app_cpu_ms']:>12.2f}{r['db_cpu_ms']:>11.2f}"
        )
    print(
        f"consent check / baseline: {figures['consent_check_ratio']:.3f}   "
        f"ad decision / consent check: {figures['ad_decision_ratio']:.3f}"
    )
    merge_results(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
