"""`config/sql.py`'s reads sent together: the rows of each statement, in order, in one
round trip on PostgreSQL; errors as Django words them, and the connection usable after."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from config import sql
from consent.models import Purpose

pytestmark = pytest.mark.django_db

PURPOSES = "SELECT key FROM consent_purpose WHERE essential = %s ORDER BY key"


@pytest.fixture(params=[True, False], ids=["prepared", "plain"])
def prepared(request: pytest.FixtureRequest, settings: Any) -> bool:
    settings.DATABASE_PREPARED_STATEMENTS = request.param
    return bool(request.param)


def keys(essential: bool) -> list[tuple[str]]:
    return [
        (key,)
        for key in Purpose.objects.filter(essential=essential)
        .order_by("key")
        .values_list("key", flat=True)
    ]


def test_each_statement_gets_its_own_rows_in_order(prepared: bool) -> None:
    rows = sql.fetch_together([(PURPOSES, [False]), (PURPOSES, [True]), (PURPOSES, [False])])

    assert rows == [keys(False), keys(True), keys(False)]
    assert rows[0]
    assert rows[1]


def test_a_statement_alone_or_none(prepared: bool) -> None:
    assert sql.fetch_together([(PURPOSES, [True])]) == [keys(True)]
    assert sql.fetch_together([]) == []


@pytest.mark.postgres
def test_the_statements_travel_in_one_pipeline_on_postgresql(
    prepared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection.ensure_connection()
    raw = type(connection.connection)
    opened = []
    real = raw.pipeline

    def counting(self: Any) -> Any:
        opened.append(self)
        return real(self)

    monkeypatch.setattr(raw, "pipeline", counting)

    sql.fetch_together([(PURPOSES, [False]), (PURPOSES, [True])])

    assert len(opened) == (1 if prepared else 0)


def test_an_error_is_a_django_error_and_the_connection_goes_on(prepared: bool) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        sql.fetch_together([(PURPOSES, [True]), ("SELECT no_such_column FROM consent_purpose", [])])

    assert sql.fetch_together([(PURPOSES, [True]), (PURPOSES, [False])]) == [
        keys(True),
        keys(False),
    ]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_quiet_connection_is_polled_once_a_request(settings: Any, monkeypatch: Any) -> None:
    """The poll for a server's farewell counts as the request's health check: the
    statements after the first one of a request do not poll again."""
    settings.DATABASE_PREPARED_STATEMENTS = True
    optional, essential = keys(False), keys(True)  # read first: the ORM checks health too
    connection.health_check_done = False  # type: ignore[attr-defined]  # as at a request's start
    polls: list[int] = []
    real_poll = sql.select.poll

    def counted() -> Any:
        polls.append(1)
        return real_poll()

    monkeypatch.setattr(sql.select, "poll", counted)

    assert sql.fetch_together([(PURPOSES, [False])]) == [optional]
    assert sql.fetch_together([(PURPOSES, [True]), (PURPOSES, [False])]) == [essential, optional]

    assert polls == [1]
    assert getattr(connection, "health_check_done", False)


ARRAYS: list[list[Any]] = [
    ["bench-1", "a,b", "{braces}", " spaced ", "NULL", "null", "ação", "用户", "", "x" * 64],
    ['a "quote"', "back\\slash", "plain"],  # sent as a list: the text form would need escapes
    [1, 2, 3, 2**40],
    [],
]


TEXTS = "SELECT unnest(%s::text[])"


@pytest.mark.postgres
@pytest.mark.parametrize("values", ARRAYS)
def test_an_array_literal_is_read_back_as_the_values(values: list[Any]) -> None:
    query = "SELECT unnest(%s::bigint[])" if values and type(values[0]) is int else TEXTS
    with connection.cursor() as cursor:
        cursor.execute(query, [sql.array_literal(values)])
        assert [row[0] for row in cursor.fetchall()] == values


def test_an_array_literal_is_text_only_when_nothing_needs_escaping() -> None:
    assert sql.array_literal(["a", "b,c"]) == '{"a","b,c"}'
    assert sql.array_literal([5, 7]) == "{5,7}"
    assert sql.array_literal([]) == "{}"
    assert sql.array_literal(['say "hi"', "x"]) == ['say "hi"', "x"]
    assert sql.array_literal(["a\\b"]) == ["a\\b"]
    assert sql.array_literal([True, 1]) == [True, 1]  # booleans are not integers here
    assert sql.array_literal(["a", 1]) == ["a", 1]


@pytest.mark.postgres
@pytest.mark.parametrize("values", [["bench-1", "b"], ['q"uote', "b"], [1, 2]])
def test_any_of_matches_the_same_rows_as_a_list(values: list[Any], settings: Any) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = True
    column = "p.id" if type(values[0]) is int else "p.key"
    where, params = sql.any_of(column, values)
    select = "SELECT " + column + " FROM consent_purpose p WHERE "  # noqa: S608 (constants)  # nosec # B608
    with connection.cursor() as cursor:
        cursor.execute(select + where + " ORDER BY 1", params)
        found = [row[0] for row in cursor.fetchall()]
        cursor.execute(select + column + " = ANY(%s) ORDER BY 1", [values])
        assert found == [row[0] for row in cursor.fetchall()]
