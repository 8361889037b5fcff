"""The OpenAPI schema and the browsable docs (`/api/schema/`, `/api/docs/`)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

API_PREFIX = "api/v1/"
HANDLER_METHODS = ("get", "post", "put", "patch", "delete")


def _walk(patterns: list[Any], prefix: str = ""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def api_operations() -> dict[str, set[str]]:
    """OpenAPI path → methods, for every route under /api/v1/ in the URLconf."""
    found: dict[str, set[str]] = {}
    for route, callback in _walk(get_resolver().url_patterns):
        if not route.startswith(API_PREFIX):
            continue
        view = getattr(callback, "cls", None) or callback.view_class
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        found.setdefault(path, set()).update(m for m in HANDLER_METHODS if hasattr(view, m))
    return found


@pytest.fixture
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_schema_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Parley API"


def test_schema_is_served_as_yaml_by_default():
    response = Client().get("/api/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_schema_documents_every_api_operation(schema):
    expected = api_operations()
    assert len(expected) >= 11  # the walk found the consent API

    documented = {
        path: {m for m in operations if m in HANDLER_METHODS}
        for path, operations in schema["paths"].items()
    }

    for path, methods in expected.items():
        assert path in documented, path
        assert methods <= documented[path], path


def test_schema_declares_bearer_auth_and_problem_responses(schema):
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer"}
    for path, methods in api_operations().items():
        for method in methods:
            operation = schema["paths"][path][method]
            assert {"bearerAuth": []} in operation["security"], (method, path)
            for status in ("401", "403"):
                content = operation["responses"][status]["content"]
                assert "application/problem+json" in content, (method, path, status)


def test_schema_puts_the_idempotency_key_on_the_consent_put(schema):
    put = schema["paths"]["/api/v1/subjects/{external_id}/consents/{purpose}"]["put"]

    headers = {p["name"] for p in put["parameters"] if p["in"] == "header"}

    assert "Idempotency-Key" in headers
    assert "422" in put["responses"]


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [name for name in names if name.startswith("on")]
        if tag == "script":
            if names.get("src"):
                self.sources.append(names["src"] or "")
            else:
                self._in_inline_script = True
                self.inline.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline[-1] += data


def test_docs_render_without_inline_scripts():
    response = Client().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = response["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    directives = {
        name: value
        for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))
    }
    assert directives["script-src"].split() == ["'self'"]
    page = _Scripts()
    page.feed(response.content.decode())
    assert page.inline == []
    assert page.handlers == []
    assert any("swagger-ui-bundle" in src for src in page.sources)
    assert all(src.startswith("/") for src in page.sources)  # same origin only


def test_docs_initialisation_script_is_served_from_the_same_origin():
    page = _Scripts()
    page.feed(Client().get("/api/docs/").content.decode())
    [init] = [src for src in page.sources if src.startswith("/api/docs/")]

    response = Client().get(init)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in response.content


def test_spectacular_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    text = target.read_text()
    assert text.startswith("openapi: 3.")
    assert "/api/v1/consent-checks:" in text
