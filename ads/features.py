"""Subjects' features: what their retained signals say, aggregated for targeting.

A subject's `SubjectFeatures` row is a pure function of their retained, stored signals.
Two ways keep it so, and they must always agree (a property test compares them):

- `rebuild` computes the rows from the signals in the database. The retention purge
  and the hourly activity refresh use it, as does any row kept before the running
  totals below existed.
- `add` folds a batch of newly stored signals into the rows the subjects already have,
  without reading their history: ingestion uses it, so a batch costs the same however
  many signals its subjects sent before.

`add` needs, beside the targeting fields, three running totals per row: every topic's
signed weight (`topic_weights`; `channel_topics` keeps only the positive ones), when
the kept city was reported (`city_at`), and the times of the newest activity signals
(`recent_activity`). The activity level only distinguishes counts up to
`ACTIVITY_KEPT`, and the signals still inside the 7-day window are always the newest,
so the newest `ACTIVITY_KEPT` times give the exact level at any later moment.

The caller holds the subjects' locks (`ads.signals`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, F
from django.db.models.expressions import Window
from django.db.models.fields.json import KT
from django.db.models.functions import RowNumber

from ads.choices import ActivityLevel, SignalType
from ads.models import Signal, SubjectFeatures
from config import sql

# The window `activity_level` counts app sessions and sent messages in.
ACTIVITY_WINDOW = timedelta(days=7)
# The highest count `activity_level` tells apart (50 or more is "high").
ACTIVITY_KEPT = 50

TOPIC_WEIGHTS: dict[str, int] = {
    SignalType.CHANNEL_FOLLOWED: 1,
    SignalType.CHANNEL_CONTENT_ENGAGED: 1,
    SignalType.STATUS_VIEWED: 1,
    SignalType.CHANNEL_UNFOLLOWED: -1,
}
AD_COUNTERS: dict[str, str] = {SignalType.AD_CLICKED: "clicks", SignalType.AD_HIDDEN: "hides"}
ACTIVITY_TYPES = (SignalType.APP_SESSION, SignalType.MESSAGE_SENT)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Stored(NamedTuple):
    """A signal as ingestion stores it."""

    subject_id: int
    type: str
    occurred_at: datetime
    data: dict[str, Any]


def activity_level(count: int) -> ActivityLevel:
    """App sessions plus sent messages in the last 7 days: 0 none, 1-9 low, 10-49
    medium, 50 or more high."""
    if count >= 50:
        return ActivityLevel.HIGH
    if count >= 10:
        return ActivityLevel.MEDIUM
    if count >= 1:
        return ActivityLevel.LOW
    return ActivityLevel.NONE


def _micros(moment: datetime) -> int:
    """A time as whole microseconds since the epoch (exact, unlike a float)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class _Totals:
    """One subject's features with the running totals `add` needs."""

    topics: Counter[str] = field(default_factory=Counter)
    ads: dict[str, dict[str, int]] = field(default_factory=dict)
    city: str = ""
    city_at: datetime | None = None
    recent: list[int] = field(default_factory=list)  # newest first

    def count(self, kind: str, data: dict[str, Any], occurred_at: datetime) -> None:
        """One more stored signal (signals of a batch are counted in storing order)."""
        if kind in TOPIC_WEIGHTS:
            for name in _topics(data):
                self.topics[name] += TOPIC_WEIGHTS[kind]
        elif kind in AD_COUNTERS:
            counters = self.ads.setdefault(str(data["advertiser"]), {"clicks": 0, "hides": 0})
            counters[AD_COUNTERS[kind]] += 1
        if kind in ACTIVITY_TYPES:
            self.recent.append(_micros(occurred_at))
            self.recent.sort(reverse=True)
            del self.recent[ACTIVITY_KEPT:]
        # The latest session naming a city wins; of two at the same time, the one
        # stored later (as `rebuild` breaks the tie by id).
        later = self.city_at is None or occurred_at >= self.city_at
        if kind == SignalType.APP_SESSION and "city" in data and later:
            self.city, self.city_at = data["city"], occurred_at

    def row(self, subject_id: int, now: datetime) -> dict[str, Any]:
        """The row's columns (`_save` writes them)."""
        since = _micros(now - ACTIVITY_WINDOW)
        weights = sorted(self.topics.items())
        return {
            "subject_id": subject_id,
            "channel_topics": {t: w for t, w in weights if w > 0},
            "ad_interactions": dict(sorted(self.ads.items())),
            "city": self.city,
            "activity_level": activity_level(sum(1 for at in self.recent if at >= since)).value,
            "topic_weights": {t: w for t, w in weights if w != 0},
            "city_at": self.city_at,
            "recent_activity": self.recent,
            "updated_at": now,
        }


def _topics(data: dict[str, Any]) -> list[str]:
    names = list(data.get("topics") or [])
    if data.get("topic"):
        names.append(data["topic"])
    return names


_UPDATED = [
    "channel_topics",
    "ad_interactions",
    "city",
    "activity_level",
    "topic_weights",
    "city_at",
    "recent_activity",
    "updated_at",
]


def _save(rows: list[dict[str, Any]]) -> None:
    """Inserts or replaces these rows: on PostgreSQL one prepared statement with the
    rows as one JSON document (a JSON encoder is far quicker than adapting nine
    arrays of values one by one); elsewhere the ORM's upsert."""
    if not rows:
        return
    if not sql.prepared():
        SubjectFeatures.objects.bulk_create(
            [SubjectFeatures(**row) for row in rows],
            update_conflicts=True,
            unique_fields=["subject"],
            update_fields=_UPDATED,
        )
        return
    table = SubjectFeatures._meta.db_table
    with sql.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (subject_id, {", ".join(_UPDATED)})
            SELECT subject_id, {", ".join(_UPDATED)}
            FROM jsonb_to_recordset(%s::jsonb) AS r(
              subject_id bigint, channel_topics jsonb, ad_interactions jsonb, city varchar,
              activity_level varchar, topic_weights jsonb, city_at timestamptz,
              recent_activity jsonb, updated_at timestamptz)
            ON CONFLICT (subject_id) DO UPDATE SET
              {", ".join(f"{name} = EXCLUDED.{name}" for name in _UPDATED)}
            """,  # noqa: S608 (names from the model)  # nosec B608
            [json.dumps(rows, default=datetime.isoformat)],
        )


def add(signals: Iterable[Stored], *, now: datetime) -> None:
    """Folds these newly stored signals (in storing order) into their subjects' rows.

    Reads only the rows themselves: one query, then one upsert. A row kept without its
    running totals (from before they existed) is rebuilt from the signals instead."""
    signals = [s for s in signals if s.occurred_at >= now - settings.SIGNAL_RETENTION]
    ids = sorted({signal.subject_id for signal in signals})
    if not ids:
        return
    totals: dict[int, _Totals] = {}
    rebuilt: set[int] = set()
    table = SubjectFeatures._meta.db_table
    where, params = sql.any_of("subject_id", ids)
    with sql.cursor() as cursor:
        cursor.execute(
            f"SELECT subject_id, topic_weights, ad_interactions, city, city_at, recent_activity "  # noqa: S608 (a table name)  # nosec B608
            f"FROM {table} WHERE {where}",
            params,
        )
        for subject_id, weights, ads, city, city_at, recent in cursor.fetchall():
            if weights is None:
                rebuilt.add(subject_id)
                continue
            totals[subject_id] = _Totals(
                topics=Counter(sql.json_value(weights)),
                ads=sql.json_value(ads),
                city=city,
                city_at=_aware(city_at),
                recent=list(sql.json_value(recent)),
            )
    for signal in signals:
        if signal.subject_id not in rebuilt:
            totals.setdefault(signal.subject_id, _Totals()).count(
                signal.type, signal.data, signal.occurred_at
            )
    _save([totals[subject_id].row(subject_id, now) for subject_id in sorted(totals)])
    rebuild(rebuilt, now=now)


def _aware(moment: datetime | str | None) -> datetime | None:
    """A timestamp read by hand (SQLite gives text; PostgreSQL an aware datetime)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def rebuild(subject_ids: set[int], *, now: datetime) -> None:
    """These subjects' rows from their retained signals, in four queries; a subject
    with no retained signal loses their row.

    The signals are aggregated in the database (grouped by subject, type, topics and
    advertiser), so the rows read grow with the distinct values a subject has, not with
    how many signals they sent."""
    if not subject_ids:
        return
    retained = Signal.objects.filter(
        subject_id__in=subject_ids, occurred_at__gte=now - settings.SIGNAL_RETENTION
    ).order_by()
    groups = (
        retained.values(
            "subject_id",
            "type",
            topics=KT("data__topics"),
            topic=KT("data__topic"),
            advertiser=KT("data__advertiser"),
        )
        .annotate(count=Count("id"))
        .order_by()
    )
    totals: dict[int, _Totals] = defaultdict(_Totals)
    for group in groups:
        subject_id, kind, count = group["subject_id"], group["type"], group["count"]
        subject = totals[subject_id]
        if kind in TOPIC_WEIGHTS:
            names = json.loads(group["topics"]) if group["topics"] else []
            names += [group["topic"]] if group["topic"] else []
            for name in names:
                subject.topics[name] += TOPIC_WEIGHTS[kind] * count
        elif kind in AD_COUNTERS:
            counters = subject.ads.setdefault(str(group["advertiser"]), {"clicks": 0, "hides": 0})
            counters[AD_COUNTERS[kind]] += count
    newest = Window(
        RowNumber(),
        partition_by=[F("subject_id")],
        order_by=[F("occurred_at").desc(), F("id").desc()],
    )
    # The city of each subject's latest app session that names one (later id on a tie).
    cities = (
        retained.filter(type=SignalType.APP_SESSION, data__has_key="city")
        .annotate(rank=newest)
        .filter(rank=1)
        .values_list("subject_id", KT("data__city"), "occurred_at")
    )
    for subject_id, city, occurred_at in cities:
        totals[subject_id].city, totals[subject_id].city_at = city or "", occurred_at
    recent = (
        retained.filter(type__in=ACTIVITY_TYPES)
        .annotate(rank=newest)
        .filter(rank__lte=ACTIVITY_KEPT)
        .values_list("subject_id", "occurred_at")
    )
    for subject_id, occurred_at in recent:
        totals[subject_id].recent.append(_micros(occurred_at))
    for subject in totals.values():
        subject.recent.sort(reverse=True)
    SubjectFeatures.objects.filter(subject_id__in=subject_ids - set(totals)).delete()
    _save([totals[subject_id].row(subject_id, now) for subject_id in sorted(totals)])
