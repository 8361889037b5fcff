"""A fingerprint of the database's tables: rows counted and hashed in SQL, in one
query, so a test can show that a request changed nothing."""

from __future__ import annotations

from django.apps import apps as django_apps
from django.db import connection

# Written by requests whatever their outcome: sessions, sign-in attempts, and the
# token's last use (even for a refused call).
IGNORED = frozenset(
    {"django_session", "axes_accessattempt", "axes_accesslog", "consent_servicetoken"}
)


def _tables(apps: tuple[str, ...] | None) -> list[str]:
    if apps is None:
        names = set(connection.introspection.table_names())
    else:
        names = {
            model._meta.db_table
            for label in apps
            for model in django_apps.get_app_config(label).get_models(include_auto_created=True)
            if not model._meta.proxy
        }
    return sorted(names - IGNORED)


def fingerprint(apps: tuple[str, ...] | None = None) -> dict[str, tuple[int, str]]:
    """Table name -> (row count, md5 of its rows in a fixed order), for the tables of
    these apps (every table when None); on SQLite, counts only."""
    tables = _tables(apps)
    quote = connection.ops.quote_name
    if connection.vendor != "postgresql":
        result = {}
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM {quote(table)}")  # noqa: S608 (a table name)  # nosec # B608
                result[table] = (cursor.fetchone()[0], "")
        return result
    query = " UNION ALL ".join(
        f"SELECT %s, count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "  # noqa: S608 (a table name)  # nosec # B608
        f"FROM {quote(table)} t"
        for table in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(query, tables)
        return {name: (count, digest) for name, count, digest in cursor.fetchall()}


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
