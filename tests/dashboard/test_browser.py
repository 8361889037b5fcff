"""The dashboard in a real browser: Playwright driving Debian's Chromium against a live
server, with axe-core (from npm) checking every page, on a phone and on a desktop.

Screenshots of every page are written to `var/screenshots/dashboard/` (or the folder
in DASHBOARD_SCREENSHOTS). Without Chromium or axe-core these tests are skipped with a
loud reason outside CI; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connections

from ads.models import AdDecision, HiddenAdvertiser, Signal, SubjectFeatures
from consent.choices import Source
from consent.models import ConsentEvent, ConsentState, PolicyNotice, Subject
from tests.conftest import IN_CI
from tests.dashboard.conftest import advertiser_with_ad, allow, link_path, send_signals, show_ads
from tests.factories import SubjectFactory, publish

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(settings.BASE_DIR) / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(
    os.environ.get("DASHBOARD_SCREENSHOTS", Path(settings.BASE_DIR) / "var/screenshots/dashboard")
)
VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    },
}

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.postgres,
]


def _unavailable(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (make venv)")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    if not AXE.exists():
        _unavailable(f"{AXE} is missing (npm ci)")
    # Once Playwright's event loop runs in this thread, Django hands out new connection
    # objects: they need the database contents serialized at set-up, which the
    # transactional tests restore after each flush.
    serialized = {
        alias: getattr(connections[alias], "_test_serialized_contents", None)
        for alias in connections
    }
    playwright = sync_playwright().start()
    for alias, contents in serialized.items():
        if contents is not None:
            setattr(connections[alias], "_test_serialized_contents", contents)  # noqa: B010
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    # Playwright's synchronous API keeps an event loop in this thread; the tests' own
    # ORM calls (and the database flush after each test) are still synchronous code.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


class Tab:
    """One browser page with the checks every page gets."""

    def __init__(self, page, base_url: str, name: str, *, javascript: bool = True) -> None:
        self.page = page
        self.javascript = javascript
        self.base_url = base_url
        self.name = name
        self.csp_errors: list[str] = []
        self.foreign: list[str] = []
        host = urlsplit(base_url).netloc
        page.on(
            "console",
            lambda m: (
                self.csp_errors.append(m.text) if "Content Security Policy" in m.text else None
            ),
        )
        page.on(
            "request",
            lambda r: None if urlsplit(r.url).netloc == host else self.foreign.append(r.url),
        )

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def check(self, label: str) -> None:
        """A screenshot is kept; axe-core finds nothing serious or critical; nothing is
        blocked by the CSP or loaded from elsewhere; nothing is wider than the screen."""
        page = self.page
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{self.name}-{label}.png"), full_page=True)
        assert self.csp_errors == [], f"{label}: {self.csp_errors}"
        assert self.foreign == [], f"{label}: {self.foreign}"
        if not self.javascript:
            return  # axe-core runs in the page: the same pages are checked with scripts on
        page.evaluate(AXE.read_text(encoding="utf-8"))
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        serious = [
            f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{label}: {serious}"
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{label} is {overflow}px wider than the screen"


def open_tab(browser, live_server, name: str, *, viewport: str = "desktop", **options) -> Tab:
    context = browser.new_context(**VIEWPORTS[viewport], **options)
    context.set_default_timeout(10_000)
    javascript = options.get("java_script_enabled", True)
    return Tab(context.new_page(), live_server.url, f"{viewport}-{name}", javascript=javascript)


def sign_in(tab: Tab, subject: Subject, *, button: str = "Continue to your privacy dashboard"):
    tab.goto(link_path(subject))
    tab.page.get_by_role("button", name=button).click()
    tab.page.wait_for_url(re.compile(r"/dashboard/$"))


def state_of(subject: Subject, purpose: str) -> ConsentState:
    return ConsentState.objects.get(subject=subject, purpose__key=purpose)


@pytest.fixture
def world() -> Subject:
    """Anna, with a pending policy notice, ad data, an ad shown and one she hid."""
    anna = SubjectFactory.create(external_id="anna", country="DE", language="en")
    publish("2025-06", "DE")
    ad = advertiser_with_ad()
    other = advertiser_with_ad(name="Trailhead Outdoor", headline="Boots for every trail")
    allow(anna, "analytics", "ads_personalization")
    send_signals(anna, count=2)
    show_ads(anna, count=2)
    HiddenAdvertiser.objects.create(subject=anna, advertiser=other.campaign.advertiser)
    assert ad.pk
    return anna


# --- every page, on a desktop and on a phone ---------------------------------------------------


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_every_page_is_accessible_on_this_screen(browser, live_server, world, viewport) -> None:
    tab = open_tab(browser, live_server, "page", viewport=viewport)
    tab.goto("/dashboard/signin")
    tab.check("signin")
    tab.goto("/dashboard/login/not-a-real-link")
    tab.check("link-invalid")
    tab.goto(link_path(world))
    tab.check("link")
    tab.page.get_by_role("button", name="Continue to your privacy dashboard").click()
    tab.page.wait_for_url(re.compile(r"/dashboard/$"))
    for label, path in [
        ("choices", "/dashboard/"),
        ("policy-update", "/dashboard/policy-update"),
        ("ads", "/dashboard/ads/"),
        ("history", "/dashboard/history"),
        ("data", "/dashboard/data"),
        ("erase-ads", "/dashboard/ads/erase"),
        ("policy", "/dashboard/policy/2025-06"),
        ("not-found", "/dashboard/no/such/page"),
    ]:
        tab.goto(path)
        tab.check(label)
    tab.goto("/dashboard/")
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_url(re.compile(r"/dashboard/signed-out$"))
    tab.check("signed-out")


def test_the_keyboard_reaches_the_content_first(browser, live_server, world) -> None:
    tab = open_tab(browser, live_server, "keyboard")
    sign_in(tab, world)
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("() => document.activeElement.textContent.trim()") == (
        "Skip to content"
    )
    outline = tab.page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    tab.page.keyboard.press("Enter")
    assert tab.page.evaluate("() => document.activeElement.id") == "main"
    # A toggle works from the keyboard alone.
    button = tab.page.get_by_role("button", name="Turn off “Product analytics”")
    button.focus()
    tab.page.keyboard.press("Enter")
    tab.page.get_by_role("button", name="Turn on “Product analytics”").wait_for()
    assert state_of(world, "analytics").granted is False


# --- choices, with and without JavaScript ------------------------------------------------------


@pytest.mark.parametrize("javascript", [True, False], ids=["js-on", "js-off"])
def test_each_purpose_can_be_toggled(browser, live_server, world, javascript) -> None:
    tab = open_tab(
        browser,
        live_server,
        f"toggle-{'js' if javascript else 'nojs'}",
        java_script_enabled=javascript,
    )
    sign_in(tab, world)
    page = tab.page
    if javascript:
        page.evaluate("() => { window.stillTheSamePage = true; }")
    toggled = []
    for key, name in [
        ("analytics", "Product analytics"),
        ("ads_personalization", "Personalised ads in Updates"),
        ("ads_data_sharing", "Share ad data with partners"),
    ]:
        before = state_of(world, key).granted
        verb, after_verb = ("off", "on") if before else ("on", "off")
        page.get_by_role("button", name=f"Turn {verb} “{name}”").click()
        page.get_by_role("button", name=f"Turn {after_verb} “{name}”").wait_for()
        assert state_of(world, key).granted is (not before)
        page.get_by_text(f"Saved: “{name}” is now {verb}.").first.wait_for(state="attached")
        toggled.append(key)
    if javascript:
        assert page.evaluate("() => window.stillTheSamePage === true"), "the page reloaded"
    tab.check("choices-after")
    events = ConsentEvent.objects.filter(subject=world, source=Source.USER_WEB)
    assert sorted(e.purpose.key for e in events) == sorted(toggled)

    tab.goto("/dashboard/history")
    rows = page.locator("tbody tr")
    assert rows.first.locator("td").nth(3).inner_text() == "Your choice on the privacy dashboard"
    assert page.get_by_text("Your choice on the privacy dashboard").count() == len(toggled)
    with page.expect_download() as download:
        rows.first.get_by_role("link").click()
    receipt = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert receipt["parley"]["source"] == "user_web"
    assert receipt["piiPrincipalId"] == "anna"


# --- the policy notice, ads, the export and erasure --------------------------------------------


def test_accepting_the_pending_notice(browser, live_server, world) -> None:
    tab = open_tab(browser, live_server, "notice", viewport="phone")
    sign_in(tab, world)
    page = tab.page
    page.get_by_role("link", name="Review the update and decide").click()
    page.wait_for_url(re.compile(r"/dashboard/policy-update$"))
    personalised = page.get_by_role("group", name="Personalised ads in Updates")
    personalised.get_by_label("Allow", exact=True).check()
    sharing = page.get_by_role("group", name="Share ad data with partners")
    sharing.get_by_label("Allow", exact=True).check()
    tab.check("notice-filled")
    page.get_by_role("button", name="Save my decisions").click()
    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.get_by_text("Thank you: your decisions are saved.").is_visible()
    assert page.get_by_text("Our privacy policy has changed").count() == 0
    assert PolicyNotice.objects.get(subject=world).resolved_at is not None
    assert state_of(world, "ads_data_sharing").granted is True


def test_why_this_ad_and_hiding_an_advertiser(browser, live_server, world) -> None:
    tab = open_tab(browser, live_server, "ads")
    sign_in(tab, world)
    page = tab.page
    page.get_by_role("link", name="Ads", exact=True).click()
    assert page.get_by_text("Followed-channel topics").first.is_visible()
    page.get_by_role("button", name="Hide ads from Lumen Coffee").first.click()
    page.get_by_text("You will not see ads from Lumen Coffee again.").wait_for()
    assert HiddenAdvertiser.objects.filter(subject=world, advertiser__name="Lumen Coffee").exists()
    tab.check("after-hide")
    page.get_by_role("button", name="Show ads from Trailhead Outdoor again").click()
    page.get_by_text("The advertiser is no longer hidden.").wait_for()
    assert not HiddenAdvertiser.objects.filter(advertiser__name="Trailhead Outdoor").exists()


def test_downloading_the_data_export(browser, live_server, world) -> None:
    tab = open_tab(browser, live_server, "export")
    sign_in(tab, world)
    page = tab.page
    page.get_by_role("link", name="Your data").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data (JSON)").click()
    assert download.value.suggested_filename.startswith("parley-data-")
    data = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert data["subject"]["external_id"] == "anna"
    assert len(data["consent_events"]) == ConsentEvent.objects.filter(subject=world).count()
    assert data["policy_notices"][0]["version"] == "2025-06"
    assert len(data["ads"]["signals"]) == 3
    assert data["ads"]["features"]["city"] == "Berlin"
    assert len(data["ads"]["ad_decisions"]) == 2
    assert data["ads"]["hidden_advertisers"][0]["advertiser"] == "Trailhead Outdoor"


def test_erasing_ad_data_after_confirming(browser, live_server, world) -> None:
    tab = open_tab(browser, live_server, "erase", viewport="phone")
    sign_in(tab, world)
    page = tab.page
    events = ConsentEvent.objects.filter(subject=world).count()
    tab.goto("/dashboard/data")
    page.get_by_role("link", name="Erase my ad data…").click()
    page.wait_for_url(re.compile(r"/dashboard/ads/erase$"))
    assert Signal.objects.filter(subject=world).exists()  # nothing happens before confirming
    page.get_by_role("button", name="Erase my ad data").click()
    page.wait_for_url(re.compile(r"/dashboard/data$"))
    assert page.get_by_text("Your ad data has been erased.").is_visible()
    assert not Signal.objects.filter(subject=world).exists()
    assert not SubjectFeatures.objects.filter(subject=world).exists()
    assert not AdDecision.objects.filter(subject=world).exists()
    assert ConsentEvent.objects.filter(subject=world).count() == events


# --- GPC and languages ---------------------------------------------------------------------------


def test_a_browser_sending_gpc(browser, live_server, world) -> None:
    allow(world, "ads_data_sharing")
    tab = open_tab(browser, live_server, "gpc", extra_http_headers={"Sec-GPC": "1"})
    sign_in(tab, world)
    page = tab.page
    assert page.get_by_role("heading", name="Global Privacy Control is on").is_visible()
    assert page.get_by_text("Off because your browser sends Global Privacy Control.").is_visible()
    assert state_of(world, "ads_data_sharing").source == Source.GPC
    tab.check("choices")
    page.reload()
    assert ConsentEvent.objects.filter(subject=world, source=Source.GPC).count() == 1


@pytest.mark.parametrize(
    ("code", "heading", "button"),
    [
        ("zh-hans", "你的选择", "切换语言"),
        ("fr", "Vos choix", "Changer de langue"),
        ("pt-br", "Suas escolhas", "Mudar idioma"),
        ("en", "Your choices", "Change language"),
    ],
)
def test_each_language(browser, live_server, world, code, heading, button) -> None:
    tab = open_tab(browser, live_server, f"language-{code}", viewport="phone")
    sign_in(tab, world)
    page = tab.page
    page.locator("#language-select").select_option(code)
    page.locator("#language-select ~ button").click()
    page.get_by_role("heading", level=1, name=heading).wait_for()
    assert page.evaluate("() => document.documentElement.lang") == code
    tab.check("choices")
    page.get_by_role("button", name=button).wait_for()
    for path, label in [("/dashboard/history", "history"), ("/dashboard/ads/", "ads")]:
        tab.goto(path)
        assert page.evaluate("() => document.documentElement.lang") == code
        tab.check(label)
