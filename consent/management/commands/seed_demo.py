"""python manage.py seed_demo: demo subjects, a staff login and a demo API token, then
every other app's demo data (each app's `seed_demo_<app>` command: advertisers and
campaigns from `ads`, accounts from `billing`).

Safe to run again: what exists is left as it is, except that the demo API token is
replaced by a fresh one (printed) each time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from consent import services
from consent.choices import ActorType, Scope, Source
from consent.models import ServiceAccount, Subject

DEMO_PASSWORD = "parley-demo"  # noqa: S105 (documented demo credentials)  # nosec B105
STAFF_USERNAME = "admin"
STAFF_PASSWORD = "parley-admin"  # noqa: S105 (documented demo credentials)  # nosec B105
DEMO_TOKEN_ACCOUNT = "demo-app"  # noqa: S105 (an account name)  # nosec B105

# (external id, country, subdivision, language, birth year, explicit choices)
DEMO_SUBJECTS: list[tuple[str, str, str, str, int | None, dict[str, bool]]] = [
    ("demo-de-anna", "DE", "", "de", 1990, {"analytics": True}),
    ("demo-fr-louis", "FR", "", "fr", 1984, {}),
    ("demo-gb-olivia", "GB", "", "en-GB", 2001, {"analytics": False}),
    ("demo-br-joao", "BR", "", "pt-BR", 1979, {}),
    ("demo-br-teen", "BR", "", "pt-BR", 2009, {}),
    ("demo-in-priya", "IN", "", "hi", 1995, {"analytics": True}),
    ("demo-in-teen", "IN", "", "en-IN", 2009, {}),
    ("demo-us-ca-maria", "US", "US-CA", "es-US", 1988, {}),
    ("demo-us-ca-teen", "US", "US-CA", "en-US", 2011, {}),
    ("demo-us-va-james", "US", "US-VA", "en-US", 1970, {"analytics": False}),
    ("demo-sg-wei", "SG", "", "zh-Hans", 1992, {}),
    ("demo-ng-ada", "NG", "", "en-NG", 1998, {}),
    ("demo-jp-yuki", "JP", "", "ja", 1986, {}),
]

DEMO_SCOPES = [
    Scope.CONSENT_READ,
    Scope.CONSENT_WRITE,
    Scope.POLICY_READ,
    Scope.SIGNALS_WRITE,
    Scope.ADS_DECIDE,
    Scope.BILLING_READ,
    Scope.BILLING_WRITE,
]


class Command(BaseCommand):
    help = "Adds demo subjects (with web logins), a staff login and a demo API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (never on a production database).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("Demo data has known passwords: run with DEBUG on, or --force.")
        with transaction.atomic():
            created = self._subjects()
            self._staff()
            raw = self._token()
        self.stdout.write(f"Demo subjects: {len(DEMO_SUBJECTS)} ({created} new).")
        self.stdout.write(
            f"Staff login: {STAFF_USERNAME} / {STAFF_PASSWORD}   "
            f"Demo subjects log in as their id (e.g. demo-de-anna) / {DEMO_PASSWORD}"
        )
        self.stdout.write(f"Demo API token ({', '.join(DEMO_SCOPES)}): {raw}")
        # The other apps seed their own data; found by name, so consent imports none.
        for name in sorted(get_commands()):
            if name.startswith("seed_demo_"):
                call_command(name, force=options["force"], stdout=self.stdout, stderr=self.stderr)

    def _subjects(self) -> int:
        user_model = get_user_model()
        actor = services.Actor(ActorType.SYSTEM, "seed_demo")
        created = 0
        for external_id, country, subdivision, language, birth_year, choices in DEMO_SUBJECTS:
            if Subject.objects.filter(external_id=external_id).exists():
                continue
            subject = services.register_subject(
                external_id=external_id,
                country=country,
                subdivision=subdivision,
                language=language,
                birth_year=birth_year,
                actor=actor,
            )
            user = user_model.objects.create_user(username=external_id, password=DEMO_PASSWORD)
            subject.user = user
            subject.save(update_fields=["user"])
            subject_actor = services.Actor(ActorType.SUBJECT, external_id)
            for purpose, granted in choices.items():
                services.record_choice(
                    external_id=external_id,
                    purpose_key=purpose,
                    granted=granted,
                    source=Source.USER_WEB,
                    actor=subject_actor,
                )
            created += 1
        return created

    def _staff(self) -> None:
        user_model = get_user_model()
        if not user_model.objects.filter(username=STAFF_USERNAME).exists():
            user_model.objects.create_superuser(
                username=STAFF_USERNAME, email="admin@parley.invalid", password=STAFF_PASSWORD
            )

    def _token(self) -> str:
        account = ServiceAccount.objects.filter(name=DEMO_TOKEN_ACCOUNT).first()
        if account is not None:
            for token in account.tokens.filter(revoked_at__isnull=True):
                services.revoke_service_token(token=token)
        _, raw = services.create_service_token(name=DEMO_TOKEN_ACCOUNT, scopes=DEMO_SCOPES)
        return raw
