"""Password sign-ins are rate-limited by django-axes (the dashboard's and the admin's).

After `LOGIN_FAILURE_LIMIT` failures for one account id, or from one address, further
attempts are refused with a readable 429 page — even with the right password — until
`LOGIN_COOLOFF_MINUTES` have passed; a success before the limit resets the count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from consent.dashboard import SESSION_KEY
from tests.dashboard.conftest import PASSWORD, with_login
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db

SIGNIN = "/dashboard/signin"
ADMIN_LOGIN = "/admin/login/"
STAFF_PASSWORD = "a-long-staff-password"


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def anna() -> str:
    return with_login(SubjectFactory.create(external_id="anna-login", country="DE")).external_id


@pytest.fixture
def staff() -> str:
    User.objects.create_user("pat-login", password=STAFF_PASSWORD, is_staff=True)
    return "pat-login"


def from_address(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def sign_in(client: Client, username: str, password: str, path: str = SIGNIN) -> Any:
    return client.post(path, {"username": username, "password": password})


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Too many sign-in attempts" in page
    assert "Please wait a while and try again." in page
    assert "Traceback" not in page


def fail(times: int, username: str, *, addresses: list[str], path: str = SIGNIN) -> None:
    """`times` wrong passwords; the one that reaches the limit gets the lockout page."""
    for attempt in range(times):
        address = addresses[attempt % len(addresses)]
        response = sign_in(from_address(address), username, "guess", path)
        if attempt + 1 < django_settings.AXES_FAILURE_LIMIT:
            assert response.status_code in (200, 400), response.status_code  # a form error
        else:
            assert_locked_out(response)


def test_the_limit_locks_an_account_id_whatever_the_address(anna: str, settings: Any) -> None:
    addresses = [f"198.51.100.{i}" for i in range(1, 20)]
    fail(settings.AXES_FAILURE_LIMIT, anna, addresses=addresses)

    client = from_address("203.0.113.77")  # never seen before
    response = sign_in(client, anna, PASSWORD)

    assert_locked_out(response)
    assert SESSION_KEY not in client.session


def test_the_limit_locks_an_address_whatever_the_account_id(anna: str, settings: Any) -> None:
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        sign_in(from_address("198.51.100.9"), f"someone-{attempt}", "guess")

    assert_locked_out(sign_in(from_address("198.51.100.9"), anna, PASSWORD))
    # Another address may still sign in to the same account.
    assert sign_in(from_address("198.51.100.10"), anna, PASSWORD).status_code == 302


def test_a_forwarded_for_header_does_not_get_round_the_address_limit(
    anna: str, settings: Any
) -> None:
    """The address is the connection's (REMOTE_ADDR): a client cannot claim another."""
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}").post(
            SIGNIN, {"username": f"someone-{attempt}", "password": "guess"}
        )

    client = Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert_locked_out(sign_in(client, anna, PASSWORD))


def test_one_failure_short_of_the_limit_still_signs_in(anna: str, settings: Any) -> None:
    fail(settings.AXES_FAILURE_LIMIT - 1, anna, addresses=["198.51.100.1"])

    assert sign_in(from_address("198.51.100.1"), anna, PASSWORD).status_code == 302


def test_the_lockout_ends_after_the_cool_off(anna: str, settings: Any) -> None:
    fail(settings.AXES_FAILURE_LIMIT, anna, addresses=["198.51.100.1"])
    assert_locked_out(sign_in(from_address("198.51.100.1"), anna, PASSWORD))

    # The attempts are as old as the cool-off (plus a minute): they no longer count.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.first().attempt_time
        - settings.AXES_COOLOFF_TIME
        - timedelta(minutes=1)
    )

    assert sign_in(from_address("198.51.100.1"), anna, PASSWORD).status_code == 302


def test_the_admin_login_is_limited_the_same_way(staff: str, settings: Any) -> None:
    fail(settings.AXES_FAILURE_LIMIT, staff, addresses=["198.51.100.3"], path=ADMIN_LOGIN)

    client = from_address("203.0.113.8")
    response = sign_in(client, staff, STAFF_PASSWORD, ADMIN_LOGIN)

    assert_locked_out(response)
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still signed out


def test_the_limits_are_the_documented_defaults(settings: Any) -> None:
    """README and docs/DASHBOARD.md: 5 failures, 15 minutes, per address or account id,
    answered 429 (the environment of this run may not change them)."""
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == ["ip_address", "username"]
    assert settings.AXES_HTTP_RESPONSE_CODE == 429
    assert settings.AXES_RESET_ON_SUCCESS is True
