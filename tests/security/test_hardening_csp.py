"""A strict Content-Security-Policy on every page, and no markup it would block.

Every dashboard page (signed in, signed out, errors), every admin page reachable with
the demo data (enumerated from the URLconf: index, app indexes, each model's list,
add, change, history and delete pages, the custom pages), and the API docs are
fetched; each response must carry the strict policy, and each HTML page must hold no
inline script, no `<style>` element, no `style=` attribute, no `on…=` handler and
no `javascript:` URL, all of which that policy blocks. The project's own templates are
also read for the same markup, so a page this walk does not reach is covered too."""

from __future__ import annotations

import html.parser
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from consent.models import ConsentEvent, DashboardLink, PolicyVersion, Subject
from tests.dashboard.conftest import link_path, signed_in_client
from tests.security.hardening_support import PARAMETER, sample_address, url_routes

pytestmark = pytest.mark.django_db

ROUTES = url_routes()

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Script types a browser does not run (data blocks such as Django's json_script).
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json", "text/template"}


def policy_of(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, "no Content-Security-Policy header"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


class InlineMarkup(html.parser.HTMLParser):
    """Collects what a policy without 'unsafe-inline' refuses to run or apply."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name == "style":
                self.found.append(f"<{tag} style=…>")
            elif name.startswith("on"):
                self.found.append(f"<{tag} {name}=…>")
            elif name in {"href", "src", "action", "formaction"} and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script":
            runnable = (named.get("type") or "text/javascript").lower() not in DATA_SCRIPT_TYPES
            self._script = "" if runnable and not named.get("src") else None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.found.append(f"inline <script>: {self._script.strip()[:60]!r}")
            self._script = None


def inline_markup(text: str) -> list[str]:
    parser = InlineMarkup()
    parser.feed(text)
    parser.close()
    return parser.found


def problems_of(response: Any) -> list[str]:
    """What is wrong with one response: its policy, and its markup if it is HTML."""
    found = []
    policy = policy_of(response)
    if policy != STRICT:
        found.append(f"policy {policy}")
    for values in policy.values():
        for value in values:
            if value in {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*"}:
                found.append(f"policy allows {value}")
    if response.get("Content-Type", "").startswith("text/html"):
        found.extend(inline_markup(response.content.decode()))
    return found


def test_the_inline_markup_detector_finds_what_the_policy_blocks() -> None:
    # The detector itself, on markup it must refuse and markup it must let through.
    page = (
        '<div style="color:red" onclick="x()"><a href="javascript:void(0)">a</a></div>'
        "<style>p{}</style><script>alert(1)</script>"
        '<script src="/static/a.js"></script><script type="application/json">{}</script>'
    )
    assert inline_markup(page) == [
        "<div style=…>",
        "<div onclick=…>",
        "<a href=javascript:…>",
        "<style> element",
        "inline <script>: 'alert(1)'",
    ]


# --- the dashboard --------------------------------------------------------------------------


@pytest.fixture
def demo(db: None) -> None:
    """The demo data (subjects with history, advertisers, campaigns, ads, billing
    accounts), carried to the current policy versions, with a closed month."""
    call_command("seed_demo", "--force", verbosity=0)
    call_command("rollout_tick", verbosity=0)
    from billing.invoicing import close_period

    close_period(year=2026, month=1)


def _get_pages(client: Client, paths: list[str]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        yield path, client.get(path)


def dashboard_pages() -> dict[str, tuple[int, list[str]]]:
    """Every dashboard address as the demo subject sees it, and a visitor's pages."""
    subject = Subject.objects.get(external_id="demo-de-anna")
    event = ConsentEvent.objects.filter(subject_id=subject.pk).order_by("id").first()
    assert event is not None
    version = PolicyVersion.objects.filter(published_at__isnull=False).first()
    assert version is not None
    samples = {
        "/dashboard/history/1/receipt": f"/dashboard/history/{event.pk}/receipt",
        "/dashboard/policy/sample": f"/dashboard/policy/{version.label}",
    }
    paths = [
        samples.get(path, path)
        for path in (
            sample_address(r, p) for r, p in ROUTES if not r.startswith(("api/", "admin/"))
        )
    ]
    browser = signed_in_client(subject)
    checked: dict[str, Any] = {}
    for path, response in _get_pages(browser, paths):
        checked[path] = (response.status_code, problems_of(response))
    # Signed out: the sign-in page, a fresh link, the error pages.
    visitor = Client()
    link = link_path(subject)
    extra = [
        "/dashboard/signin",
        link,
        "/dashboard/login/not-a-link",
        "/dashboard/",
        "/dashboard/no-such-page",
        "/api/docs/",
    ]
    for path, response in _get_pages(visitor, extra):
        checked[f"signed out: {path}"] = (response.status_code, problems_of(response))
    assert DashboardLink.objects.filter(used_at__isnull=True).count() >= 1  # GET keeps it
    return checked


def test_the_api_docs_page_loads_its_script_and_styles_from_files(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert problems_of(response) == []
    body = response.content.decode()
    assert re.search(r'<script src="[^"]+"', body)
    assert '<link rel="stylesheet"' in body


def test_json_and_redirects_carry_the_policy_too(client: Client) -> None:
    for path in ["/healthz", "/api/v1/purposes", "/api/schema/", "/dashboard/", "/admin/"]:
        response = client.get(path)
        assert policy_of(response) == STRICT, path


# --- the admin ------------------------------------------------------------------------------

_MODEL_ROUTE = re.compile(r"admin/(?P<app>\w+)/(?P<model>\w+)/")


def _fill(values: dict[str, Any], match: re.Match[str]) -> str:
    return str(values[match["name"]])


def _admin_paths() -> list[str]:
    """Every admin address with real ids from the demo data (one object per model)."""
    paths: list[str] = []
    for route, pattern in ROUTES:
        if not route.startswith("admin/"):
            continue
        labels = re.search(r"\(\?P<app_label>([\w|]+)\)", route)
        if labels:  # the app index: one page per app
            paths.extend(f"/admin/{label}/" for label in labels[1].split("|"))
            continue
        address = sample_address(route, pattern)
        match = _MODEL_ROUTE.match(route)
        if "<" in route and match:
            model = apps.get_model(match["app"], match["model"])
            obj = model._default_manager.order_by("pk").first()
            if obj is None:
                continue  # no such object in the demo data: its pages cannot be shown
            values = {"object_id": obj.pk, "id": obj.pk, "invoice_id": obj.pk}
            if "phase_id" in route:
                phase = obj.phases.order_by("pk").first()
                values["phase_id"] = phase.pk
            if "<slug:action>" in route:
                values["action"] = "pause"
            address = "/" + PARAMETER.sub(partial(_fill, values), route)
        paths.append(address)
    return paths


def admin_pages() -> dict[str, tuple[int, list[str]]]:
    """Every admin address a superuser can open with the demo data."""
    staff = User.objects.create_superuser("csp-root", password="pw-for-tests-only")
    browser = Client()
    browser.force_login(staff)
    checked = {}
    for path, response in _get_pages(browser, _admin_paths()):
        checked[path] = (response.status_code, problems_of(response))
    response = Client().get("/admin/login/")
    checked["signed out: /admin/login/"] = (response.status_code, problems_of(response))
    return checked


def test_every_page_has_the_strict_policy_and_no_inline_markup(demo: None) -> None:
    # One walk over both, since the demo data takes seconds to build.
    dashboard, admin = dashboard_pages(), admin_pages()
    assert {path: found for path, (_, found) in {**dashboard, **admin}.items() if found} == {}
    assert [path for path, (status, _) in {**dashboard, **admin}.items() if status >= 500] == []
    shown = {
        name: [path for path, (status, _) in pages.items() if status == 200]
        for name, pages in (("dashboard", dashboard), ("admin", admin))
    }
    assert len(shown["dashboard"]) >= 16, dashboard
    assert len(shown["admin"]) >= 100, sorted((s, p) for p, (s, _) in admin.items() if s != 200)


# --- the templates themselves ---------------------------------------------------------------


def _project_templates() -> list[Any]:
    roots = [settings.BASE_DIR / "templates"] + [
        settings.BASE_DIR / app / "templates" for app in ("consent", "ads", "billing")
    ]
    return sorted(p for root in roots if root.exists() for p in root.rglob("*.html"))


def test_no_project_template_holds_markup_the_policy_blocks() -> None:
    templates = _project_templates()
    assert len(templates) >= 20
    inline_script = re.compile(r"<script\b(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
    patterns = {
        "inline <script>": inline_script,
        "<style>": re.compile(r"<style\b", re.I),
        "style=": re.compile(r"\sstyle\s*=", re.I),
        "on…=": re.compile(r"\son[a-z]+\s*=", re.I),
        "javascript:": re.compile(r"javascript:", re.I),
    }
    found = [
        f"{path.relative_to(settings.BASE_DIR)}: {name}"
        for path in templates
        for name, pattern in patterns.items()
        if pattern.search(path.read_text())
    ]
    assert found == []
