"""Shared by the security tests: the demo data, seeded once per module, and a spy on
the fast lanes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction


@pytest.fixture(scope="module")
def demo_data(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The demo data (subjects, purposes, versions, campaigns, billing accounts),
    seeded once for the module inside a transaction rolled back at its end; each test
    runs in a savepoint within it."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            call_command("seed_demo", "--force", verbosity=0)
            yield
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def fast_lane_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the fast lanes answered themselves (rather than passed on to DRF)."""
    from ads import fastlane as ads_fastlane
    from consent import fastlane

    answered: list[str] = []
    for module, name in ((fastlane, "consent_check"), (ads_fastlane, "decide")):
        original = getattr(module, name)

        def spy(request: Any, original: Any = original) -> Any:
            response = original(request)
            if response is not None:
                answered.append(request.path)
            return response

        monkeypatch.setattr(module, name, spy)
    return answered
