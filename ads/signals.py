"""Signals: the metadata events other services report, and what Parley keeps of them.

Three steps, each in its own part of this module:

1. Refusal. A batch that carries anything content-like (`CONTENT_KEYS`, at any depth),
   an unknown type or field, a value of the wrong type or out of range, or a time
   outside the accepted window is refused as a whole, naming each offending path
   (`events[3].text`). Nothing of it is stored.
2. Ingestion (`ingest`). Each event feeds one purpose (`ads.choices.SIGNAL_TIES`); it
   is stored only if its subject allows that purpose at that moment, otherwise it is
   dropped and counted. An `ad_hidden` event records the hide whatever the consent.
3. Features (`ads.features`). A subject's `SubjectFeatures` row is a pure function of
   their retained, stored signals: each batch folds its signals into the rows, the
   retention purge rebuilds them (`recompute_features`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import (
    MaxLengthValidator,
    MaxValueValidator,
    MinLengthValidator,
    MinValueValidator,
    ProhibitNullCharactersValidator,
    RegexValidator,
)
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from ads import features
from ads.choices import SIGNAL_TIES, ActivityLevel, SignalType
from ads.models import Advertiser, HiddenAdvertiser, Signal, SubjectFeatures
from config import sql
from consent import selectors
from consent.errors import InvalidValue, NotFound
from consent.models import Subject
from consent.problems import StrictSerializer

MAX_EVENTS = 1000
# Clocks drift; an event stamped a little ahead of ours is still believable.
FUTURE_TOLERANCE = timedelta(minutes=5)
# Subjects recomputed per transaction by the retention purge.
PURGE_CHUNK = 1000

# Keys that name message content or something as private as it: message text and
# media, calls, the device's address book, group membership and shared locations
# (with their coordinates). The promise is that such data never reaches ads, so a key
# like these anywhere in a request -- top level, inside an event, nested at any depth --
# refuses the whole batch, and the error says so rather than "unknown field". Keys
# are compared lower-cased without separators, so `groupId`, `group-id` and `GROUP_ID`
# are all `group_id`.
CONTENT_KEYS = frozenset(
    {
        # what people write, send and say
        "text",
        "body",
        "content",
        "caption",
        "message",
        "messages",
        "transcript",
        # media
        "media",
        "attachment",
        "file",
        "audio",
        "video",
        "image",
        "photo",
        "voice",
        "call",
        # the address book
        "contacts",
        "contact_list",
        "phone_book",
        # group membership
        "group",
        "group_id",
        "group_members",
        "members",
        "is_group_chat",
        # a location shared in a chat, and its coordinates
        "location",
        "lat",
        "lng",
        "latitude",
        "longitude",
        "coordinates",
        "geo",
    }
)


def _normalized_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


_CONTENT_KEYS_NORMALIZED = frozenset(_normalized_key(key) for key in CONTENT_KEYS)


@lru_cache(maxsize=4096)
def _is_content_key(key: str) -> bool:
    """Remembered: a batch repeats the same few keys a thousand times."""
    return _normalized_key(key) in _CONTENT_KEYS_NORMALIZED


CONTENT_MESSAGE = (
    "This is message content (or content-like data: media, calls, contacts, group "
    "membership, a shared location) and is never accepted."
)

ENGAGEMENTS = ("view", "react", "share")
AUTHOR_KINDS = ("contact", "channel", "business")
PLATFORMS = ("android", "ios", "web", "desktop")
MAX_TOPICS = 10

TOPIC_RE = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
CHANNEL_ID_RE = r"^[A-Za-z0-9._:-]+$"
# A city name: letters joined by spaces, hyphens, apostrophes, dots or commas. No
# digits, so that a street address or a postcode cannot pass for a city.
CITY_RE = "^[^\\W\\d_]+(?:[ '\u2019.,-]+[^\\W\\d_]+)*\\.?$"


# --- strictly typed fields ------------------------------------------------------------
# DRF converts what it can (12 -> "12", "12" -> 12, 1 -> True); a signal's fields are
# taken only in their own JSON type.


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID as a JSON string; kept as its canonical text (signals are JSON)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return str(super().to_internal_value(data))


class OccurredAtField(serializers.DateTimeField):
    """An ISO 8601 date and time with its timezone, returned in UTC."""

    default_error_messages = {
        "invalid": "Must be an ISO 8601 date and time with a timezone, e.g. 2025-06-17T09:30:00Z.",
        "naive": "Give the timezone (e.g. Z or +02:00): a time without one is ambiguous.",
    }

    def to_internal_value(self, value: Any) -> datetime:
        if not isinstance(value, str):
            self.fail("invalid")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail("invalid")
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail("naive")
        return parsed.astimezone(UTC)


def topic_field(**kwargs: Any) -> StrictRegexField:
    return StrictRegexField(
        TOPIC_RE,
        max_length=40,
        error_messages={"invalid": "Must be a lower-case slug such as 'football' or 'k-pop'."},
        **kwargs,
    )


class TopicsField(serializers.ListField):
    """Up to ten topic slugs; a repeated topic counts once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=topic_field(), max_length=MAX_TOPICS, **kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        return list(dict.fromkeys(super().to_internal_value(data)))


# --- the per-type schemas -------------------------------------------------------------


# Documented as a plain string: an enum per schema would make every other `type`
# enum of the API collide in drf-spectacular's enum naming. The OpenAPI discriminator
# mapping of `SignalEvent` says which schema each value selects.
@extend_schema_field(OpenApiTypes.STR)
class SignalTypeField(StrictChoiceField):
    """The discriminator: one value per schema (`validate_events` chose it by that)."""


def type_field(kind: SignalType) -> SignalTypeField:
    return SignalTypeField([kind.value], help_text=f"Always `{kind.value}`.")


class EventIn(StrictSerializer):
    """The fields every event has. A subclass per signal type adds exactly its own."""

    subject = StrictCharField(max_length=64, help_text="The subject's external id.")
    occurred_at = OccurredAtField(
        help_text="When it happened: ISO 8601 with a timezone, at most 5 minutes ahead of "
        "Parley's clock and not older than the retention period (90 days by default)."
    )

    def validate_occurred_at(self, value: datetime) -> datetime:
        now: datetime = self.context.get("now") or timezone.now()
        if value > now + FUTURE_TOLERANCE:
            raise serializers.ValidationError("Is more than 5 minutes in the future.")
        if value < now - settings.SIGNAL_RETENTION:
            raise serializers.ValidationError(
                f"Is older than the retention period ({settings.SIGNAL_RETENTION.days} days)."
            )
        return value


class _ChannelEventIn(EventIn):
    channel = StrictRegexField(
        CHANNEL_ID_RE, max_length=64, help_text="The channel's id (letters, digits, . _ : -)."
    )
    topics = TopicsField(required=False, help_text="Up to 10 topic slugs of the channel.")


class ChannelFollowedIn(_ChannelEventIn):
    """The subject followed a channel (feeds `ads_personalization`)."""

    type = type_field(SignalType.CHANNEL_FOLLOWED)


class ChannelUnfollowedIn(_ChannelEventIn):
    """The subject unfollowed a channel (feeds `ads_personalization`)."""

    type = type_field(SignalType.CHANNEL_UNFOLLOWED)


class ChannelContentEngagedIn(_ChannelEventIn):
    """The subject viewed, reacted to or shared a channel post (feeds
    `ads_personalization`); never the post itself."""

    type = type_field(SignalType.CHANNEL_CONTENT_ENGAGED)
    engagement = StrictChoiceField(ENGAGEMENTS, required=False)


class StatusViewedIn(EventIn):
    """The subject viewed a status (feeds `ads_personalization`); never the status."""

    type = type_field(SignalType.STATUS_VIEWED)
    author_kind = StrictChoiceField(AUTHOR_KINDS, required=False)
    topic = topic_field(required=False, help_text="The status's topic slug, when known.")


class _AdEventIn(EventIn):
    advertiser = StrictIntegerField(
        min_value=1, max_value=2**63 - 1, help_text="The advertiser's id; must exist."
    )
    decision_id = StrictUUIDField(
        required=False, help_text="The ad decision that showed the ad, when known."
    )


class AdClickedIn(_AdEventIn):
    """The subject clicked an ad (feeds `ads_data_sharing`)."""

    type = type_field(SignalType.AD_CLICKED)


class AdHiddenIn(_AdEventIn):
    """The subject hid an ad (feeds `ads_data_sharing`). The advertiser is hidden from
    them from now on whatever their consent."""

    type = type_field(SignalType.AD_HIDDEN)


class AppSessionIn(EventIn):
    """The subject used the app (feeds `analytics`)."""

    type = type_field(SignalType.APP_SESSION)
    duration_seconds = StrictIntegerField(min_value=0, max_value=86400, required=False)
    city = StrictRegexField(
        CITY_RE,
        max_length=80,
        required=False,
        help_text="Coarse location: a city name, worked out from the connection. "
        "Never coordinates or an address.",
        error_messages={"invalid": "Must be a city name (letters, spaces, - ' . ,)."},
    )
    platform = StrictChoiceField(PLATFORMS, required=False)


class MessageSentIn(EventIn):
    """The subject sent a message (feeds `analytics`): its timing and peer count only,
    never the text, the recipients or whether the chat is a group (group membership is
    as private as content)."""

    type = type_field(SignalType.MESSAGE_SENT)
    peer_count = StrictIntegerField(
        min_value=1, max_value=1024, required=False, help_text="How many people receive it."
    )
    hour_of_day = StrictIntegerField(
        min_value=0, max_value=23, required=False, help_text="The sender's local hour."
    )


EVENT_SCHEMAS: dict[str, type[EventIn]] = {
    SignalType.CHANNEL_FOLLOWED.value: ChannelFollowedIn,
    SignalType.CHANNEL_UNFOLLOWED.value: ChannelUnfollowedIn,
    SignalType.CHANNEL_CONTENT_ENGAGED.value: ChannelContentEngagedIn,
    SignalType.STATUS_VIEWED.value: StatusViewedIn,
    SignalType.AD_CLICKED.value: AdClickedIn,
    SignalType.AD_HIDDEN.value: AdHiddenIn,
    SignalType.APP_SESSION.value: AppSessionIn,
    SignalType.MESSAGE_SENT.value: MessageSentIn,
}
ENVELOPE_FIELDS = frozenset({"type", "subject", "occurred_at"})


# --- refusal --------------------------------------------------------------------------


def content_paths(value: Any, path: str = "") -> Iterator[str]:
    """The path of every content-like key in a JSON value, at any depth, in order.

    Iterative, so that a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        children: list[tuple[str, Any]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if _is_content_key(str(key)):
                    yield child_path
                else:
                    children.append((child_path, child))
        elif isinstance(item, list):
            children = [(f"{where}[{index}]", child) for index, child in enumerate(item)]
        stack.extend(reversed(children))


def has_content(value: Any) -> bool:
    """Whether a JSON value has a content-like key at any depth: `content_paths`
    without building a path for every key, as a batch almost never has one."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if _is_content_key(str(key)):
                    return True
                if isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, dict | list))
    return False


def refuse_content(body: Any) -> None:
    """Raises a validation error naming every content-like key in the request body."""
    if not has_content(body):
        return
    found = list(content_paths(body))
    if found:
        raise serializers.ValidationError(
            {path: [CONTENT_MESSAGE] for path in found}, code="content_not_accepted"
        )


def _error_paths(detail: Any, prefix: str) -> dict[str, list[str]]:
    """DRF's nested errors as {"events[3].topics[0]": [messages]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            if key == "non_field_errors":
                path = prefix
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}"
            out.update(_error_paths(value, path))
        return out
    if isinstance(detail, list) and all(not isinstance(item, dict | list) for item in detail):
        return {prefix: [str(item) for item in detail]}
    if isinstance(detail, list):
        out = {}
        for index, item in enumerate(detail):
            if item:
                out.update(_error_paths(item, f"{prefix}[{index}]"))
        return out
    return {prefix: [str(detail)]}


# --- the fast path ------------------------------------------------------------------------
# Running a DRF serializer costs about 20 µs an event (fields deep-copied, bound and run
# one by one): a fifth of a 1,000-event batch. Each type's schema is therefore also
# compiled, once, into plain checks derived from its own fields. They only ever
# *accept*: an event they are not sure of goes through the serializer, which gives the
# answer and the exact error messages. `tests/ads/test_signals.py` checks that the two
# agree on whatever the fast path accepts.

Check = Callable[[Any], tuple[bool, Any]]
_NO: tuple[bool, Any] = (False, None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain_test(validator: Any) -> Callable[[Any], bool]:
    """A field's validator as a plain test of the value (its text or number, which the
    checks below have already made sure of): the kinds the schemas use, said directly,
    and any other kind by calling it. Calling Django's validators one by one cost more
    than the rest of an event's check (the surrogate test alone walks the text
    character by character in Python)."""
    kind = type(validator)
    limit = getattr(validator, "limit_value", None)
    if kind in _LIMITS and not callable(limit):
        return partial(_LIMITS[kind], limit)
    if kind is ProhibitNullCharactersValidator:
        return _no_nul
    if kind is ProhibitSurrogateCharactersValidator:
        return _no_surrogate
    if kind is RegexValidator and not validator.inverse_match:
        return partial(_matches, re.compile(validator.regex.pattern, validator.regex.flags))

    def called(value: Any) -> bool:
        try:
            validator(value)
        except (DjangoValidationError, serializers.ValidationError):
            return False
        return True

    return called


def _no_nul(value: str) -> bool:
    return "\x00" not in value


def _no_surrogate(value: str) -> bool:
    return _SURROGATE.search(value) is None


def _matches(regex: re.Pattern[str], value: str) -> bool:
    return regex.search(value) is not None


_LIMITS: dict[type, Callable[[Any, Any], bool]] = {
    MaxLengthValidator: lambda limit, value: len(value) <= limit,
    MinLengthValidator: lambda limit, value: len(value) >= limit,
    MaxValueValidator: lambda limit, value: value <= limit,
    MinValueValidator: lambda limit, value: value >= limit,
}


def _passes(tests: tuple[Callable[[Any], bool], ...], value: Any) -> bool:
    """The field's own validators (lengths, ranges, patterns, no NUL characters...)."""
    for test in tests:  # noqa: SIM110 (a generator for all() costs more than the tests)
        if not test(value):
            return False
    return True


def _text_check(field: serializers.CharField) -> Check:
    tests = tuple(_plain_test(validator) for validator in field.validators)

    def check(value: Any) -> tuple[bool, Any]:
        # Whitespace at either end is trimmed by the serializer: leave that to it.
        if type(value) is not str or not value or value != value.strip():
            return _NO
        return (True, value) if _passes(tests, value) else _NO

    return check


def _choice_check(field: serializers.ChoiceField) -> Check:
    choices = {str(key): value for key, value in field.choice_strings_to_values.items()}

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not str or value not in choices:
            return _NO
        return True, choices[value]

    return check


def _integer_check(field: serializers.IntegerField) -> Check:
    tests = tuple(_plain_test(validator) for validator in field.validators)

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not int:
            return _NO
        return (True, value) if _passes(tests, value) else _NO

    return check


def _field_check(field: serializers.Field) -> Check | None:
    """The plain check of one of the schemas' field kinds, or None (no fast path)."""
    if isinstance(field, TopicsField):
        child = _text_check(field.child)  # type: ignore[arg-type]
        limit = field.max_length or MAX_TOPICS

        def topics(value: Any) -> tuple[bool, Any]:
            if type(value) is not list or len(value) > limit:
                return _NO
            out = []
            for item in value:
                ok, topic = child(item)
                if not ok:
                    return _NO
                out.append(topic)
            return True, list(dict.fromkeys(out))

        return topics
    if isinstance(field, OccurredAtField):

        def when(value: Any) -> tuple[bool, Any]:
            try:
                return True, field.to_internal_value(value)
            except serializers.ValidationError:
                return _NO

        return when
    if isinstance(field, StrictUUIDField):

        def uuid_text(value: Any) -> tuple[bool, Any]:
            try:
                return True, field.to_internal_value(value)
            except serializers.ValidationError:
                return _NO

        return uuid_text
    if isinstance(field, StrictRegexField | StrictCharField):
        return _text_check(field)
    if isinstance(field, StrictChoiceField):
        return _choice_check(field)
    if isinstance(field, StrictIntegerField):
        return _integer_check(field)
    return None


@dataclass(frozen=True)
class _Compiled:
    fields: tuple[tuple[str, bool, Check], ...]  # name, required, check
    names: frozenset[str]


def _compile(schema: type[EventIn]) -> _Compiled | None:
    fields = []
    for name, field in schema().fields.items():
        check = _field_check(field)
        if check is None or field.read_only or field.default is not serializers.empty:
            return None
        fields.append((name, field.required, check))
    return _Compiled(tuple(fields), frozenset(name for name, _, _ in fields))


_COMPILED: dict[str, _Compiled | None] = {
    kind: _compile(schema) for kind, schema in EVENT_SCHEMAS.items()
}


def _fast_event(compiled: _Compiled, event: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The event as its serializer would return it, or None when not certain."""
    if not compiled.names.issuperset(event):
        return None
    out: dict[str, Any] = {}
    for name, required, check in compiled.fields:
        if name not in event:
            if required:
                return None
            continue
        ok, value = check(event[name])
        if not ok:
            return None
        out[name] = value
    occurred = out["occurred_at"]
    if occurred > now + FUTURE_TOLERANCE or occurred < now - settings.SIGNAL_RETENTION:
        return None
    return out


def validate_events(events: list[Any], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each event checked against its type's schema; every error of the batch is
    raised at once, keyed by its path (`events[3].occurred_at`)."""
    now = now or timezone.now()
    context = {"now": now}
    # Serializers only for the events the fast path is not sure of, one per type.
    schemas: dict[str, EventIn] = {}
    errors: dict[str, list[str]] = {}
    valid: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            errors[where] = ["Expected a JSON object."]
            continue
        if "type" not in event:
            errors[f"{where}.type"] = ["This field is required."]
            continue
        kind = event["type"]
        if not isinstance(kind, str) or kind not in EVENT_SCHEMAS:
            errors[f"{where}.type"] = [
                f"Unknown signal type {kind!r}; one of: {', '.join(EVENT_SCHEMAS)}."
            ]
            continue
        compiled = _COMPILED[kind]
        fast = _fast_event(compiled, event, now) if compiled is not None else None
        if fast is not None:
            valid.append(fast)
            continue
        if kind not in schemas:
            schemas[kind] = EVENT_SCHEMAS[kind](context=context)
        try:
            valid.append(dict(schemas[kind].run_validation(event)))
        except serializers.ValidationError as exc:
            errors.update(_error_paths(exc.detail, where))
    if errors:
        raise serializers.ValidationError(errors)
    return valid


# --- ingestion ------------------------------------------------------------------------


class IngestResult(TypedDict):
    accepted: int
    dropped: int


def _lock_subjects(condition: Q) -> dict[str, int]:
    """Known, not erased subjects matching `condition`, by external id, locked until
    the transaction ends.

    The lock (FOR NO KEY UPDATE, in primary-key order so that two batches cannot
    deadlock) serialises ingestion with consent changes and erasure of the same
    subjects, and with other batches' feature updates: a choice or an erasure that
    commits first is seen by the consent check that follows; one that comes later
    waits. It does not block inserts that merely reference the subject.
    """
    rows = (
        Subject.objects.select_for_update(no_key=True)
        .filter(condition, erased_at__isnull=True)
        .order_by("pk")
        .values_list("external_id", "pk")
    )
    return dict(rows)


def _lock_reported(external_ids: set[str]) -> dict[str, int]:
    """`_lock_subjects` for a batch's subjects: on PostgreSQL one prepared statement
    with the ids as one array (a thousand ids bound on the client cost more than the
    lock)."""
    if not sql.prepared():
        return _lock_subjects(Q(external_id__in=external_ids))
    where, params = sql.any_of("external_id", sorted(external_ids))
    with sql.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id FROM {Subject._meta.db_table} "  # noqa: S608 (a table name)  # nosec B608
            f"WHERE {where} AND erased_at IS NULL ORDER BY id FOR NO KEY UPDATE",
            params,
        )
        return dict(cursor.fetchall())


def _store(signals: list[features.Stored], *, now: datetime) -> None:
    """Inserts the signals: one COPY on PostgreSQL, the ORM's bulk insert elsewhere."""
    if connection.vendor != "postgresql":
        Signal.objects.bulk_create(
            Signal(
                subject_id=signal.subject_id,
                type=signal.type,
                occurred_at=signal.occurred_at,
                received_at=now,
                data=signal.data,
            )
            for signal in signals
        )
        return
    statement = (
        f"COPY {Signal._meta.db_table} (subject_id, type, occurred_at, received_at, data) "
        "FROM STDIN"
    )
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as raw,
        raw.copy(statement) as copy,
    ):
        for signal in signals:
            data = json.dumps(signal.data)
            copy.write_row((signal.subject_id, signal.type, signal.occurred_at, now, data))


def _check_advertisers(events: list[dict[str, Any]]) -> None:
    wanted = {e["advertiser"] for e in events if "advertiser" in e}
    if not wanted:
        return
    known = set(Advertiser.objects.filter(pk__in=wanted).order_by().values_list("pk", flat=True))
    for index, event in enumerate(events):
        if "advertiser" in event and event["advertiser"] not in known:
            raise InvalidValue(
                f"No advertiser {event['advertiser']}.", field=f"events[{index}].advertiser"
            )


def _allowed_subjects(*, purpose_key: str, subjects: dict[str, int]) -> tuple[set[str], set[str]]:
    """Which of these (known, locked) subjects — external id -> primary key — allow the
    purpose now, and which metadata categories the purpose covers now.

    Fails closed: a purpose that no longer exists allows nobody, and a signal whose
    category staff have taken out of its purpose is not stored under it."""
    try:
        purpose = selectors.get_purpose(key=purpose_key)
    except NotFound:
        return set(), set()
    results = selectors.check_consent_of_locked(purpose=purpose, subjects=subjects)
    allowed = {result.subject for result in results if result.allowed}
    if not allowed:
        return set(), set()
    return allowed, set(purpose.categories.values_list("key", flat=True))


def ingest(*, events: list[dict[str, Any]], now: datetime | None = None) -> IngestResult:
    """Stores the validated events whose subject allows the purpose they feed.

    An event of an unknown or erased subject, or of one who has not allowed its
    purpose (`SIGNAL_TIES`), is dropped: not stored, only counted. An `ad_hidden`
    event of a known subject records the hide even when the signal is dropped: a wish
    not to see an advertiser again is honoured whatever the consent. An advertiser id
    that does not exist refuses the batch (`InvalidValue` naming its position).

    One transaction per batch; the consent check runs once per purpose present (not
    per event), signals and hides are written in bulk, then the touched subjects'
    features are recomputed.
    """
    if len(events) > MAX_EVENTS:
        raise ValueError(f"at most {MAX_EVENTS} events per batch")
    now = now or timezone.now()
    _check_advertisers(events)
    with transaction.atomic():
        subjects = _lock_reported({e["subject"] for e in events})
        # Who asks for which purpose: one consent check per purpose, not per event.
        asking: dict[str, set[str]] = defaultdict(set)
        for event in events:
            if event["subject"] in subjects:
                asking[SIGNAL_TIES[event["type"]][1]].add(event["subject"])
        answers = {
            purpose: _allowed_subjects(
                purpose_key=purpose, subjects={i: subjects[i] for i in sorted(ids)}
            )
            for purpose, ids in asking.items()
        }
        stored: list[features.Stored] = []
        hides: list[HiddenAdvertiser] = []
        for event in events:
            subject_pk = subjects.get(event["subject"])
            if subject_pk is None:
                continue
            if event["type"] == SignalType.AD_HIDDEN:
                hides.append(
                    HiddenAdvertiser(
                        subject_id=subject_pk, advertiser_id=event["advertiser"], created_at=now
                    )
                )
            category, purpose = SIGNAL_TIES[event["type"]]
            allowed, covered = answers[purpose]
            if event["subject"] in allowed and category in covered:
                stored.append(
                    features.Stored(
                        subject_pk,
                        event["type"],
                        event["occurred_at"],
                        {k: v for k, v in event.items() if k not in ENVELOPE_FIELDS},
                    )
                )
        if stored:
            _store(stored, now=now)
        if hides:
            HiddenAdvertiser.objects.bulk_create(hides, ignore_conflicts=True)
        features.add(stored, now=now)
    return {"accepted": len(stored), "dropped": len(events) - len(stored)}


# --- features (ads.features) -----------------------------------------------------------


@transaction.atomic
def recompute_features(subject_ids: Iterable[int], *, now: datetime | None = None) -> None:
    """Rebuilds the features of these subjects (by primary key) from their retained
    signals; a subject with none left loses their features row.

    `channel_topics`: +1 per topic of each follow, engagement and status view, -1 per
    topic of each unfollow, summed; topics whose weight is not positive are left out.
    `ad_interactions`: clicks and hides per advertiser. `city`: of the latest app
    session that names one. `activity_level`: see `activity_level`.
    """
    ids = set(subject_ids)
    _lock_subjects(Q(pk__in=ids))
    features.rebuild(ids, now=now or timezone.now())


def _stale_activity(now: datetime) -> list[int]:
    """Subjects whose activity level counted a signal that has since left the 7-day
    window: their level may have to go down though no signal of theirs changed."""
    left_window = Signal.objects.filter(
        subject_id=OuterRef("subject_id"),
        type__in=features.ACTIVITY_TYPES,
        occurred_at__lt=now - features.ACTIVITY_WINDOW,
        occurred_at__gte=OuterRef("updated_at") - features.ACTIVITY_WINDOW,
    )
    return list(
        SubjectFeatures.objects.exclude(activity_level=ActivityLevel.NONE)
        .filter(Exists(left_window))
        .order_by("subject_id")
        .values_list("subject_id", flat=True)
    )


def purge_expired_signals(now: datetime | None = None) -> int:
    """Deletes the signals older than `SIGNAL_RETENTION` and recomputes the features of
    the subjects who had them (removing the row of a subject with none left); returns
    how many signals were deleted.

    Works through the subjects a thousand at a time, one transaction each, so that a
    large backlog never becomes one long transaction. Also refreshes the activity
    level of subjects whose 7-day window has moved past a signal since their features
    were computed (the hourly run keeps it at most an hour late)."""
    now = now or timezone.now()
    cutoff = now - settings.SIGNAL_RETENTION
    expired = Signal.objects.filter(occurred_at__lt=cutoff)
    affected = list(expired.order_by("subject_id").values_list("subject_id", flat=True).distinct())
    deleted = 0
    for start in range(0, len(affected), PURGE_CHUNK):
        chunk = affected[start : start + PURGE_CHUNK]
        with transaction.atomic():
            _lock_subjects(Q(pk__in=chunk))
            count, _ = expired.filter(subject_id__in=chunk).delete()
            deleted += count
            features.rebuild(set(chunk), now=now)
    stale = _stale_activity(now)
    for start in range(0, len(stale), PURGE_CHUNK):
        recompute_features(stale[start : start + PURGE_CHUNK], now=now)
    return deleted
