"""A fingerprint of every table of the database: rows counted and hashed in SQL, so
a test can show that a request changed nothing."""

from __future__ import annotations

from django.db import connection

# Written by requests whatever their outcome: sessions, sign-in attempts, and the
# token's last use.
IGNORED = frozenset(
    {"django_session", "axes_accessattempt", "axes_accesslog", "consent_servicetoken"}
)


def fingerprint() -> dict[str, tuple[int, str]]:
    """Table name -> (row count, md5 of its rows in a fixed order)."""
    tables = sorted(set(connection.introspection.table_names()) - IGNORED)
    result: dict[str, tuple[int, str]] = {}
    with connection.cursor() as cursor:
        for table in tables:
            quoted = connection.ops.quote_name(table)
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "  # noqa: S608 (a table name)  # nosec B608
                f"FROM {quoted} t"
            )
            count, digest = cursor.fetchone()
            result[table] = (count, digest)
    return result


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
