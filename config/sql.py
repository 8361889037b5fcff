"""Prepared statements for the hot paths (the consent check, the ad decision).

Django sends every query as text with its parameters bound on the client, so
PostgreSQL plans each one afresh: for the check's seven-table join that planning
(about 1.5 ms) costs far more than running it (about 0.1 ms). The check's query is
therefore sent with server-side binding and prepared once per connection, and the
connection runs prepared statements with a generic plan (`plan_cache_mode` in
`config/settings.py`). Nothing else is prepared: Django's own queries keep its
defaults.

A connection pooler in transaction mode must support prepared statements (PgBouncer
1.21 or newer with `max_prepared_statements`); `DATABASE_PREPARED_STATEMENTS=false`
turns them off.
"""

from __future__ import annotations

import json
import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper


class _PreparingCursor(psycopg.Cursor[Any]):
    """Server-side binding, and every statement prepared (once per connection)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        kwargs["prepare"] = True
        return super().execute(query, params, **kwargs)


class _PreparedDebugWrapper(CursorDebugWrapper):
    """Logs the statement as written (with its placeholders): Django's rendering of
    the last query expects a client-side binding cursor."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


def _db() -> BaseDatabaseWrapper:
    """This thread's default connection itself. Each attribute read through
    `django.db.connection` (a proxy) looks the connection up again in a context-local
    store; on a hot path that lookup, made some fifty times a request, cost more than
    the statements' own Python."""
    return connections[DEFAULT_DB_ALIAS]


def prepared() -> bool:
    return _prepared_on(_db())


def _prepared_on(db: BaseDatabaseWrapper) -> bool:
    return db.vendor == "postgresql" and settings.DATABASE_PREPARED_STATEMENTS


def _drop_if_server_spoke(db: BaseDatabaseWrapper) -> None:
    """Runs Django's health check on a kept connection the server has written to
    unasked, and drops it if it fails.

    This path skips Django's per-request health check (a `SELECT 1` round trip, as
    long as the check's query itself). A healthy idle connection has nothing to read;
    a server that shut down or restarted has sent its farewell and closed, which one
    `poll` (about a microsecond) sees. Without this, the first check on each kept
    connection after a database restart would fail with a 503.

    A quiet socket counts as the request's health check (Django asks again at the next
    request), so the statements after the first one of a request skip it."""
    if db.in_atomic_block or getattr(db, "health_check_done", False):
        return
    raw = db.connection
    if raw is None:
        return
    if raw.closed:  # psycopg already knows it is gone
        db.close()
        return
    poller = select.poll()
    poller.register(raw.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        db.close_if_health_check_failed()
    else:
        db.health_check_done = True  # type: ignore[attr-defined]  # Django's, not in the stubs


@contextmanager
def cursor() -> Iterator[CursorWrapper]:
    """A cursor whose statements are prepared on PostgreSQL (Django's own elsewhere).

    It is wrapped like Django's cursors, so errors, `execute_wrapper` hooks and the
    query log (`django_assert_num_queries`) see its queries."""
    db = _db()
    if not _prepared_on(db):
        with db.cursor() as plain:
            yield plain
        return
    with _preparing(db) as wrapped:
        yield wrapped


def _preparing(db: BaseDatabaseWrapper) -> CursorWrapper:
    """A preparing cursor, wrapped as Django wraps its own, on the connection (dropped
    first if the server closed it, opened if need be)."""
    _drop_if_server_spoke(db)
    db.ensure_connection()
    wrapper = _PreparedDebugWrapper if db.queries_logged else CursorWrapper
    return wrapper(_PreparingCursor(db.connection), db)


Statement = tuple[str, Sequence[Any]]


def fetch_together(statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
    """The rows of each statement, in order. On PostgreSQL they are prepared and sent
    in one pipeline: one round trip for all of them instead of one each (about 0.3 ms
    apiece on a loaded two-core machine). They must not depend on one another's
    effects; elsewhere they run one after the other."""
    db = _db()
    if not _prepared_on(db) or len(statements) < 2:
        results = []
        for query, params in statements:
            with cursor() as reading:
                reading.execute(query, params)
                results.append(reading.fetchall())
        return results
    cursors = [_preparing(db) for _ in statements]
    try:
        # Errors surface when the pipeline syncs: wrapped like any other query's, so an
        # unreachable database is the same 503 everywhere.
        with db.wrap_database_errors, db.connection.pipeline():
            for reading, (query, params) in zip(cursors, statements, strict=True):
                reading.execute(query, params)
        return [reading.fetchall() for reading in cursors]
    finally:
        for reading in cursors:
            reading.close()


def any_of(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column` is one of `values`: one array parameter on PostgreSQL (the same
    statement whatever the count, so one preparation serves them all), a list of
    placeholders elsewhere."""
    if prepared():
        return f"{column} = ANY(%s)", [array_literal(values)]
    if not values:
        return "FALSE", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def array_literal(values: Sequence[Any]) -> str | list[Any]:
    """PostgreSQL's text form of an array of strings or of integers, written in one
    join; the driver's list adapter dumps a thousand values one by one in Python, at
    about ten times the cost. Each string is double-quoted (so commas, braces, spaces
    and `NULL` stay text); values the quoting would need to escape (a quote or a
    backslash), and anything else than strings or integers, go as a list."""
    if all(type(value) is str for value in values):
        together = "".join(values)  # holds a quote or a backslash if any value does
        if '"' in together or "\\" in together:
            return list(values)
        return '{"' + '","'.join(values) + '"}' if values else "{}"
    if all(type(value) is int for value in values):
        return "{" + ",".join(map(str, values)) + "}"
    return list(values)


def json_value(value: object) -> Any:
    """A JSON column's value as read by hand: Django's connections get it back as text
    (Django decodes it in the field, which a raw read skips), SQLite always does."""
    return json.loads(value) if isinstance(value, str) else value


def insert(instance: models.Model) -> None:
    """Inserts a model instance, every concrete field given (its primary key must be
    set already: no RETURNING), as a prepared statement on PostgreSQL. The values are
    adapted by the fields themselves, as the ORM would; no signals are sent."""
    db = _db()
    query, fields = _insert_statement(type(instance), db.vendor)
    params = [field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields]
    with cursor() as inserting:
        inserting.execute(query, params)
    instance._state.adding = False
    instance._state.db = db.alias


@lru_cache(maxsize=64)
def _insert_statement(
    model: type[models.Model], vendor: str
) -> tuple[str, tuple[models.Field[Any, Any], ...]]:
    """A model's insert of every concrete field, written once per process (the vendor
    is in the key: the names are quoted in its words)."""
    fields = tuple(model._meta.concrete_fields)
    ops = _db().ops
    columns = ", ".join(ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = ops.quote_name(model._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", fields  # noqa: S608 (names from the model)  # nosec # B608
