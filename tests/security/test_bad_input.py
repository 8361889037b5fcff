"""A corpus of bad requests for every write operation of the API.

Every operation with POST, PUT, PATCH or DELETE in the served schema gets the whole
corpus: broken JSON, the wrong content type, a body over the size limit, nesting and
arrays far past anything valid, bodies of the wrong JSON type, and for each field of
its request body: wrong types, overlong values, control and unusual unicode
characters, numbers out of range, and dates in the far past and future. Each must get
a 4xx problem+json answer (413 for the oversized body), and the database must be
exactly as it was before (`dbstate.fingerprint`, compared after the whole corpus of
each operation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from consent import services
from consent.choices import Scope
from consent.models import Subject
from tests.security import dbstate

PROBLEM = "application/problem+json"
WRITES = ("post", "put", "patch", "delete")


def _schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


SCHEMA = _schema()
OPERATIONS = [
    (method.upper(), path)
    for path, operations in SCHEMA["paths"].items()
    for method in operations
    if method in WRITES
]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _body_fields(method: str, path: str) -> list[str]:
    operation = SCHEMA["paths"][path][method.lower()]
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return []
    return sorted(_resolve(content["application/json"]["schema"]).get("properties", {}))


# Raw JSON texts, so that what Python's encoder would refuse (NaN, lone surrogates)
# reaches the server too.
HUGE_NUMBERS = {
    "huge integer": "1" + "0" * 30,
    "negative huge integer": "-" + "9" * 30,
    "beyond int64": str(2**63),
    "exponent overflow": "1e400",
    "NaN": "NaN",
    "Infinity": "-Infinity",
}
BROKEN_TEXT = {
    "NUL": json.dumps("a\u0000b"),
    "control characters": json.dumps("a\u0007\u001b[31mb"),
    "lone surrogate": '"a\\ud800b"',
}
ODD_UNICODE = {
    "right-to-left override": json.dumps("\u202etxt.exe"),
    "zero-width": json.dumps("\u200b\u200d\ufeff"),
    "combining marks": json.dumps("e" + "\u0301" * 300),
    "emoji": json.dumps("\U0001f600" * 300),
}
DATES = {
    "date far past": json.dumps("0001-01-01T00:00:00Z"),
    "date far future": json.dumps("9999-12-31T23:59:59Z"),
    "year 10000": json.dumps("10000-01-01T00:00:00Z"),
    "impossible date": json.dumps("2026-13-45T25:61:00Z"),
    "bad offset": json.dumps("2026-01-01T00:00:00+25:00"),
}
# Fields that name something (ids, keys, codes): unusual unicode is refused there.
ID_LIKE = (
    "id",
    "subject",
    "purpose",
    "buyer",
    "recipient",
    "reference",
    "gateway",
    "plan",
    "country",
    "currency",
    "language",
    "subdivision",
    "placement",
    "type",
    "status",
    "category",
    "template",
    "payment_method",
)


def _bad_values(name: str, node: dict[str, Any], max_length: int | None) -> dict[str, str]:
    """Values this field must refuse, by what it takes."""
    kind, fmt = node.get("type"), node.get("format")
    wrong_types = {"object": '{"a": 1}', "array": "[1, 2]"}
    if kind == "string" and fmt == "date-time":
        return {**wrong_types, **DATES, **HUGE_NUMBERS, **BROKEN_TEXT}
    if kind == "string" and fmt == "decimal":
        return {
            **wrong_types,
            **BROKEN_TEXT,
            "NaN text": '"NaN"',
            "Infinity text": '"Infinity"',
            "overflowing text": json.dumps("9" * 400),
            **HUGE_NUMBERS,
        }
    if kind == "string":
        overlong = json.dumps("x" * ((max_length or 10_000) + 1))
        values = {**wrong_types, "boolean": "true", "overlong": overlong, **BROKEN_TEXT}
        if name.endswith(ID_LIKE) or fmt in {"uuid", "uri"}:
            values.update(ODD_UNICODE)
        return values
    if kind == "integer":
        return {**wrong_types, "boolean": "true", "float": "1.5", "text": '"x"', **HUGE_NUMBERS}
    if kind == "boolean":
        return {**wrong_types, "text": '"maybe"', "number": "2", **HUGE_NUMBERS}
    if kind == "array":
        return {
            "object": '{"a": 1}',
            "text": '"x"',
            "huge array": "[" + ",".join(['"a"'] * 150_000) + "]",
            "bad items": '["a\\u0000", "' + "x" * 5000 + '", null, {}, []]',
        }
    # An object (or one of several shapes).
    return {
        "array": "[1, 2]",
        "text": '"x"',
        "number": "1",
        "deep nesting": "[" * 5000 + "]" * 5000,
    }


def _fields(method: str, path: str) -> dict[str, dict[str, str]]:
    operation = SCHEMA["paths"][path][method.lower()]
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return {}
    properties = _resolve(content["application/json"]["schema"]).get("properties", {})
    fields = {}
    for name, node in sorted(properties.items()):
        resolved = _resolve(node)
        fields[name] = _bad_values(name, resolved, resolved.get("maxLength"))
    return fields


WHOLE_BODIES: dict[str, tuple[str, bytes]] = {
    "truncated JSON": ("application/json", b'{"a": '),
    "not JSON": ("application/json", b"<xml/>"),
    "invalid UTF-8": ("application/json", b'{"a": "\xff\xfe"}'),
    "JSON array": ("application/json", b"[]"),
    "JSON string": ("application/json", b'"x"'),
    "JSON number": ("application/json", b"1"),
    "JSON null": ("application/json", b"null"),
    "deep nesting": ("application/json", b"[" * 50_000 + b"]" * 50_000),
    "deep objects": ("application/json", b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
    "huge array": ("application/json", b'{"x": [' + b",".join([b"1"] * 200_000) + b"]}"),
    "form encoded": ("application/x-www-form-urlencoded", b"a=1&b=2"),
    "plain text": ("text/plain", b"hello"),
    "multipart": ("multipart/form-data; boundary=xx", b"--xx\r\n\r\nhi\r\n--xx--\r\n"),
}
BAD_PATH_VALUES = {
    "overlong": "x" * 5000,
    "NUL": "a%00b",
    "control characters": "a%07%1Bb",
    "right-to-left override": "%E2%80%AEtxt",
    "emoji": "%F0%9F%98%80" * 20,
    "negative": "-1",
    "beyond int64": str(2**63),
    "dot segments": "..%2F..%2Fetc",
    "invalid UTF-8": "%FF%FE",
}

OVERSIZED = b'{"x": "' + b"a" * (1_048_576 + 10) + b'"}'


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _corpus(
    method: str, path: str, values: dict[str, str]
) -> Iterator[tuple[str, str, str, bytes]]:
    """(what, url, content type, body) for one operation."""
    url = _path(path, values)
    fields = _fields(method, path)
    if fields:
        for what, (content_type, body) in WHOLE_BODIES.items():
            yield what, url, content_type, body
        for field, bad in fields.items():
            for what, raw in bad.items():
                yield f"{field}: {what}", url, "application/json", f'{{"{field}": {raw}}}'.encode()
    for param in _path_params(path):
        for what, raw in BAD_PATH_VALUES.items():
            yield (
                f"{{{param}}}: {what}",
                _path(path, {**values, param: raw}),
                "application/json",
                b"{}",
            )
    yield "oversized body", url, "application/json", OVERSIZED


def _written() -> int:
    """Rows this transaction has inserted, updated or deleted so far (PostgreSQL's
    own counters), leaving out what every request records."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_xact_user_tables WHERE relname <> ALL(%s)",
            [sorted(dbstate.IGNORED)],
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def demo(demo_data: None, db: None) -> dict[str, str]:
    subject = Subject.objects.order_by("pk").first()
    assert subject is not None
    return {"external_id": subject.external_id, "purpose": "analytics"}


def _path(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    # Numeric ids of other objects: the first of each.
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "1" + path[path.index("}", start) + 1 :]
    return path


TRIED: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nbad-input corpus: {len(TRIED)} operations, {sum(TRIED)} requests")


@pytest.mark.postgres
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    method: str, path: str, demo: dict[str, str]
) -> None:
    _, raw = services.create_service_token(name="corpus", scopes=list(Scope.values))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    before = dbstate.fingerprint()
    wrong: list[str] = []
    cases = list(_corpus(method, path, demo))
    for what, url, content_type, body in cases:
        written = _written()
        response = client.generic(method, url, data=body, content_type=content_type)
        status = response.status_code
        problem = response.get("Content-Type", "").startswith(PROBLEM)
        if not (400 <= status < 500) or not problem or (what == "oversized body" and status != 413):
            wrong.append(f"{what}: {status} {response.content[:160]!r}")
        elif _written() != written:
            wrong.append(f"{what}: {status}, but rows were written")
    TRIED.append(len(cases))
    assert not wrong, f"{method} {path}:\n" + "\n".join(wrong)
    assert dbstate.changed(before, dbstate.fingerprint()) == []


def test_every_write_operation_is_in_the_corpus() -> None:
    """A new write endpoint is covered without being listed by hand; the schema has
    at least the ones known today."""
    assert len(OPERATIONS) >= 24
    assert ("PUT", "/api/v1/subjects/{external_id}/consents/{purpose}") in OPERATIONS
