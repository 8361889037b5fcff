"""The browser tests' own rule: outside CI a missing Chromium or axe-core skips them
loudly; under CI=true it fails them."""

from __future__ import annotations

import pytest

from tests.dashboard import test_browser


def test_a_missing_browser_fails_the_run_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_browser, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="BROWSER TESTS NOT RUN: no chromium"):
        test_browser._unavailable("no chromium")


def test_a_missing_browser_skips_loudly_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_browser, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="BROWSER TESTS NOT RUN: no chromium"):
        test_browser._unavailable("no chromium")
