"""Test data built through the real services wherever a service exists."""

from __future__ import annotations

import itertools
from typing import Any

import factory

from consent import services
from consent.choices import ActorType
from consent.models import Jurisdiction, PolicyVersion, Subject

TEST_ACTOR = services.Actor(ActorType.SERVICE, "service:tests")
_ids = itertools.count(1)


class SubjectFactory(factory.django.DjangoModelFactory[Subject]):
    """Registers a subject through `services.register_subject`, defaults included."""

    class Meta:
        model = Subject

    external_id = factory.LazyFunction(lambda: f"user-{next(_ids)}")
    country = "DE"
    subdivision = ""
    language = "en"
    birth_year: int | None = None

    @classmethod
    def _create(cls, model_class: type[Subject], *args: Any, **kwargs: Any) -> Subject:
        return services.register_subject(actor=TEST_ACTOR, **kwargs)


def publish(label: str, *codes: str) -> int:
    """Makes a policy version live in the given jurisdictions (all when none given)."""
    version = PolicyVersion.objects.get(label=label)
    jurisdictions = Jurisdiction.objects.filter(code__in=codes) if codes else Jurisdiction.objects
    return sum(
        services.publish_version_to_jurisdiction(
            version=version, jurisdiction=jurisdiction, actor=TEST_ACTOR
        )
        for jurisdiction in jurisdictions.select_related("current_policy_version")
    )
