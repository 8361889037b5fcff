"""python manage.py rollout_tick: one tick of the rollout engine, now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from consent import rollouts


class Command(BaseCommand):
    help = "Starts due rollout phases and re-dispatches stuck batches (what beat does)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = rollouts.tick()
        self.stdout.write(
            f"Rollouts: {result['started']} phase(s) started, "
            f"{result['redispatched']} batch(es) re-dispatched, {result['closed']} closed."
        )
