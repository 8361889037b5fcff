"""A connection to the test database of its own, beside Django's: what another process
(or another ad server, or a charge in progress) does."""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection


def second_connection(*, autocommit: bool = False) -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"],
        host=db["HOST"],
        port=db["PORT"] or None,
        autocommit=autocommit,
    )
