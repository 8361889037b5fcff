"""What the benchmark scripts share: the PostgreSQL server, template databases kept
between runs, the environment of the processes they start, and the results file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/8")
OUT = os.environ.get("BENCH_OUT", "bench-results.json")
VENV_BIN = ROOT / ".venv" / "bin"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def admin() -> psycopg.Connection:
    return psycopg.connect(f"{PG}/postgres", autocommit=True)


def execute_script(conn: psycopg.Connection, script: str, params: dict[str, Any]) -> None:
    """psycopg binds parameters server-side: one statement per execute."""
    for statement in script.split(";\n\n"):
        if statement.strip():
            conn.execute(statement, params)


def migrations_fingerprint() -> str:
    """Changes whenever a migration of any app is added or renamed."""
    names = sorted(f"{p.parent.parent.name}/{p.name}" for p in ROOT.glob("*/migrations/0*.py"))
    return ",".join(names)


def dataset_fingerprint(dataset_sql: str) -> str:
    """`migrations_fingerprint`, and a digest of the SQL that fills the template: a
    changed dataset rebuilds it too."""
    digest = hashlib.sha256(dataset_sql.encode()).hexdigest()[:16]
    return f"{migrations_fingerprint()};dataset={digest}"


def template_is_current(template: str, subjects: int, fingerprint: str | None = None) -> bool:
    """The template database exists, was completed, and matches N and the migrations
    (or the `fingerprint` it was stored with)."""
    with admin() as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [template]).fetchone():
            return False
    with psycopg.connect(f"{PG}/{template}") as conn:
        try:
            row = conn.execute("SELECT subjects, migrations FROM bench_meta").fetchone()
        except psycopg.Error:
            return False
    expected = fingerprint if fingerprint is not None else migrations_fingerprint()
    return row is not None and tuple(row[:2]) == (subjects, expected)


def recreate_database(name: str, *, template: str | None = None) -> None:
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template is None:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def merge_results(figures: dict[str, Any]) -> None:
    """Adds these figures to the JSON file in BENCH_OUT (other benchmarks' stay)."""
    existing: dict[str, Any] = {}
    if Path(OUT).exists():
        try:
            existing = json.loads(Path(OUT).read_text())
        except ValueError:
            existing = {}
    Path(OUT).write_text(json.dumps({**existing, **figures}, indent=2) + "\n")
    log(f"figures written to {OUT}")
