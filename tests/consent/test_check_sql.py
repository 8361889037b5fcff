"""The consent check's hand-written, prepared query gives the answers the rules give,
whichever way it is sent (prepared on PostgreSQL, or with plain placeholders)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from consent import selectors, services
from consent.choices import ActorType, Source
from consent.errors import NotFound
from consent.models import Purpose
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

APP = services.Actor(ActorType.SERVICE, "service:tests")


@pytest.fixture
def crowd() -> list[str]:
    """Subjects whose answers differ: defaults, choices, ages, GPC, not live, erased."""
    publish("2025-06")
    made = [
        SubjectFactory.create(external_id="de-adult", country="DE", birth_year=1980),
        SubjectFactory.create(external_id="de-teen", country="DE", birth_year=2012),
        SubjectFactory.create(external_id="us-ca", country="US", subdivision="US-CA"),
        SubjectFactory.create(external_id="br-unknown-age", country="BR"),
        SubjectFactory.create(external_id="in-minor", country="IN", birth_year=2010),
        SubjectFactory.create(external_id="gone", country="FR"),
    ]
    for external_id, purpose, granted in [
        ("de-adult", "ads_personalization", True),
        ("us-ca", "analytics", False),
    ]:
        services.record_choice(
            external_id=external_id,
            purpose_key=purpose,
            granted=granted,
            source=Source.USER_APP,
            actor=APP,
        )
    services.apply_gpc(external_id="us-ca", actor=APP)
    services.erase_subject(external_id="gone", actor=APP)
    return [s.external_id for s in made[:-1]] + ["gone", "nobody", "de-adult"]


def answers(ids: list[str]) -> dict[str, list[tuple[str, bool, Any]]]:
    return {
        purpose.key: [
            (r.subject, r.allowed, r.reason)
            for r in selectors.check_consent(purpose=purpose, external_ids=ids)
        ]
        for purpose in Purpose.objects.select_related("introduced_in").order_by("key")
    }


def test_prepared_and_plain_statements_give_the_same_answers(crowd: list[str], settings: Any):
    settings.DATABASE_PREPARED_STATEMENTS = True
    prepared = answers(crowd)
    settings.DATABASE_PREPARED_STATEMENTS = False
    plain = answers(crowd)

    assert prepared == plain
    reasons = {reason for rows in prepared.values() for _, _, reason in rows}
    assert len(reasons) >= 4  # allowed, denied, age_restricted, gpc, unknown_subject...
    # Asked twice, answered twice, in the order asked.
    assert [row[0] for row in prepared["analytics"]] == crowd


@pytest.mark.parametrize("use_prepared", [True, False])
def test_several_purposes_are_checked_in_one_query(
    crowd: list[str], settings: Any, use_prepared: bool, django_assert_num_queries: Any
):
    settings.DATABASE_PREPARED_STATEMENTS = use_prepared
    keys = ["ads_personalization", "analytics", "no_such_purpose"]

    with django_assert_num_queries(1):
        checks = selectors.check_purposes(external_id="de-adult", purpose_keys=keys)

    assert set(checks) == {"ads_personalization", "analytics"}
    assert checks["ads_personalization"].introduced_in == "2025-06"
    assert checks["ads_personalization"].results[0].allowed is True


@pytest.mark.parametrize("use_prepared", [True, False])
def test_an_unknown_purpose_key_is_not_found(settings: Any, use_prepared: bool):
    settings.DATABASE_PREPARED_STATEMENTS = use_prepared

    with pytest.raises(NotFound):
        selectors.check_consent_by_key(purpose_key="no_such_purpose", external_ids=["x"])


@pytest.mark.postgres
def test_the_check_is_prepared_once_per_connection_on_postgresql(crowd: list[str]):
    def prepared_checks() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ["%consent_jurisdictionrule%"],
            )
            return int(cursor.fetchone()[0])

    before = prepared_checks()
    for size in (1, 3, 7):
        selectors.check_consent_by_key(purpose_key="analytics", external_ids=crowd[:size])

    # One statement serves every number of subjects.
    assert prepared_checks() == before + 1


def test_the_states_unique_pair_carries_what_the_check_reads(crowd: list[str]) -> None:
    """Consent migration 0010: the check reads each state from the unique pair's index
    alone (an index-only scan), and the pair is still unique."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'one_state_per_purpose'")
        [(definition,)] = cursor.fetchall()
        assert definition.startswith("CREATE UNIQUE INDEX")
        assert definition.endswith("(subject_id, purpose_id) INCLUDE (granted, source)")

        # The tables are tiny here, so the planner is told to avoid scanning them whole,
        # as it does with a million subjects.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        query, params = selectors._check_statement("key", ["analytics"], crowd)
        cursor.execute(f"EXPLAIN {query}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using one_state_per_purpose on consent_consentstate" in plan
