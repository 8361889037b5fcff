"""python manage.py create_service_token NAME --scopes consent:read,consent:write
[--rate-limit N]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consent import services
from consent.choices import Scope
from consent.errors import InvalidValue


class Command(BaseCommand):
    help = "Issues an API token for a service account (created if new); prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Service account name, e.g. app-backend")
        parser.add_argument(
            "--scopes",
            required=True,
            help=f"Comma-separated scopes: {', '.join(Scope.values)}",
        )
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=None,
            help="Requests per minute for this token (default: API_RATE_LIMIT_PER_MINUTE)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            token, raw = services.create_service_token(
                name=options["name"], scopes=scopes, rate_limit_per_minute=options["rate_limit"]
            )
        except InvalidValue as exc:
            raise CommandError(exc.detail) from None
        self.stderr.write(
            f"Token for '{token.account.name}' with scopes {', '.join(token.scopes)}. "
            "It is shown only now; store it in the service's secrets."
        )
        self.stdout.write(raw)
