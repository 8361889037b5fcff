"""Ad decisions and the impressions and clicks reported for them.

A decision runs in a fixed order, and the order is what keeps it honest:

1. who: the subject (unknown or erased → no ad, `unknown_subject`);
2. live: before the policy version that introduces `ads_personalization` has reached
   the subject, no ad at all (`not_live`);
3. consent: the purposes ads use are checked through `consent.selectors`, and
   `allowed_features` builds the one immutable view of the subject that the rest may
   see. Every feature whose purpose is not allowed is left out of it here, *before*
   targeting; without `ads_personalization` only the request's own context (country,
   language) is in it;
4. eligibility: campaigns that are active, scheduled now, for the placement, within
   their total and daily budgets, under the subject's frequency cap, with an active ad,
   of an advertiser the subject has not hidden (`eligible_candidates`);
5. targeting and ranking (`choose`): sees only the candidates and the allowed
   features — never the subject, their features row or a consent object;
6. the decision is logged with the features and purposes it used.

Events (`record_event`) are idempotent per decision and type, charge the campaign
under its row lock (and report the charge to the advertiser's billing account), and
a click on a click-to-chat ad opens the 72-hour free-entry window that billing honours
(`open_chat_window`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Protocol

from django.db import connection, transaction
from django.db.models import (
    DecimalField,
    F,
)
from django.utils import timezone

from ads.choices import (
    AGE_BANDS,
    FEATURE_TIES,
    PERSONALIZATION,
    PLACEMENTS,
    AdEventType,
    CampaignStatus,
    DecisionReason,
    Feature,
    Pricing,
)
from ads.models import (
    Ad,
    AdDecision,
    AdEvent,
    Advertiser,
    Campaign,
    CampaignDay,
    ChatEntryWindow,
    HiddenAdvertiser,
    SubjectFeatures,
    TargetingRule,
)
from billing import services as billing_services
from config import sql
from consent import rules, selectors
from consent.errors import Conflict, InvalidValue, NotFound
from consent.models import Subject

# The purposes a decision may need: personalisation at all, and each feature's tie.
AD_PURPOSES: tuple[str, ...] = tuple(
    sorted({PERSONALIZATION, *(purpose for _, purpose in FEATURE_TIES.values())})
)

# Ranking: the expected click rate of a CPC ad, and the modest lift when the subject
# has clicked the same advertiser before (known only if ad interactions are allowed).
BASE_CTR = Decimal("0.01")
CLICKED_BEFORE_CTR = Decimal("0.015")
THOUSAND = Decimal(1000)

# A click-to-chat click makes messages with the business free for this long.
CHAT_WINDOW = timedelta(hours=72)
# Devices' clocks drift: an event may claim a time slightly outside what is possible.
CLOCK_SKEW = timedelta(minutes=5)

MONEY_FIELD: DecimalField[Decimal, Decimal] = DecimalField(max_digits=14, decimal_places=4)


# --- what targeting may see -----------------------------------------------------------------


@dataclass(frozen=True)
class RequestContext:
    """The coarse context the requesting service sends: not profiling, always usable."""

    country: str
    language: str

    def as_log(self) -> dict[str, str]:
        return {"country": self.country, "language": self.language}


@dataclass(frozen=True)
class Profile:
    """What Parley holds about a subject that targeting could use, before consent."""

    country: str
    city: str
    language: str
    age_band: str | None
    channel_topics: frozenset[str]
    clicked_advertisers: frozenset[str]


@dataclass(frozen=True)
class AllowedFeatures:
    """The only view of a subject that targeting and ranking get: feature → values,
    each feature already cleared by consent, and the purpose that cleared it.

    Built only by `allowed_features`; immutable, so nothing downstream can add to it.
    Values are case-folded (rules are matched case-insensitively).
    """

    values: Mapping[str, frozenset[str]]
    purposes: Mapping[str, str]  # feature → purpose; context-only features have none
    personalized: bool

    def of(self, feature: str) -> frozenset[str]:
        return self.values.get(feature, frozenset())

    def as_log(self) -> dict[str, list[str]]:
        return {feature: sorted(values) for feature, values in sorted(self.values.items())}

    def purposes_used(self) -> list[str]:
        return sorted(set(self.purposes.values()))


def age_band(age: int | None) -> str | None:
    """The advertiser-facing band of an age (`AGE_BANDS`); none below 13 or if unknown."""
    if age is None or age < 13:
        return None
    for band in AGE_BANDS:
        low, _, high = band.partition("-")
        if high == "":  # "65+"
            return band
        if int(low) <= age <= int(high):
            return band
    return None


def language_values(tag: str) -> frozenset[str]:
    """A BCP 47 tag and its primary language, so a rule on `pt` matches `pt-BR`."""
    folded = tag.strip().casefold()
    if not folded:
        return frozenset()
    return frozenset({folded, folded.split("-", 1)[0]})


class Registered(Protocol):
    """What registration says of a subject: a `Subject`, or the check's `CheckedSubject`."""

    @property
    def country(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def birth_year(self) -> int | None: ...


def profile_of(*, subject: Registered, features: SubjectFeatures | None, on: date) -> Profile:
    """The subject's raw profile (registration data plus what signals derived)."""
    topics = frozenset(
        topic.casefold()
        for topic, weight in (features.channel_topics if features else {}).items()
        if weight > 0
    )
    clicked = frozenset(
        str(advertiser_id)
        for advertiser_id, counts in (features.ad_interactions if features else {}).items()
        if counts.get("clicks", 0) > 0
    )
    return Profile(
        country=subject.country,
        city=features.city if features else "",
        language=subject.language,
        age_band=age_band(rules.lowest_age(subject.birth_year, on)),
        channel_topics=topics,
        clicked_advertisers=clicked,
    )


def allowed_features(
    *, context: RequestContext, profile: Profile | None, allowed_purposes: Iterable[str]
) -> AllowedFeatures:
    """Removes every feature whose purpose is not allowed, before anything targets.

    The request context (country, language) is always usable. The profile is used only
    when `ads_personalization` is allowed, and then each of its features only if the
    purpose tied to it (`FEATURE_TIES`) is allowed too.
    """
    allowed = frozenset(allowed_purposes)
    values: dict[str, set[str]] = {}
    if context.country:
        values[Feature.COUNTRY] = {context.country.casefold()}
    if context.language:
        values[Feature.LANGUAGE] = set(language_values(context.language))
    purposes: dict[str, str] = {}
    personalized = profile is not None and PERSONALIZATION in allowed
    if profile is not None and personalized:
        from_profile: dict[str, frozenset[str]] = {
            Feature.COUNTRY: frozenset({profile.country.casefold()} - {""}),
            Feature.CITY: frozenset({profile.city.strip().casefold()} - {""}),
            Feature.LANGUAGE: language_values(profile.language),
            Feature.AGE_BAND: frozenset({profile.age_band} if profile.age_band else ()),
            Feature.CHANNEL_TOPIC: profile.channel_topics,
            Feature.AD_INTERACTION: profile.clicked_advertisers,
        }
        for feature, found in from_profile.items():
            _, purpose = FEATURE_TIES[feature]
            if purpose not in allowed or not found:
                continue
            values.setdefault(feature, set()).update(found)
            purposes[feature] = purpose
    return AllowedFeatures(
        values=MappingProxyType({f: frozenset(v) for f, v in values.items()}),
        purposes=MappingProxyType(purposes),
        personalized=personalized,
    )


def contextual_features(context: RequestContext) -> AllowedFeatures:
    return allowed_features(context=context, profile=None, allowed_purposes=())


# --- candidates, targeting and ranking ----------------------------------------------------


@dataclass(frozen=True)
class Rule:
    feature: str
    values: frozenset[str]  # case-folded


@dataclass(frozen=True)
class Candidate:
    """An eligible campaign as targeting sees it: no subject data in here."""

    campaign_id: int
    advertiser_id: int
    pricing: str
    bid: Decimal
    rules: tuple[Rule, ...]
    ad_id: int


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    score: Decimal


def unit_price(*, pricing: str, bid: Decimal) -> Decimal:
    """What one billable unit costs: an impression on CPM, a click on CPC."""
    return bid / THOUSAND if pricing == Pricing.CPM else bid


def event_price(*, pricing: str, bid: Decimal, type: str) -> Decimal:
    """CPM campaigns pay for impressions, CPC campaigns for clicks; nothing else costs."""
    if (pricing, type) in ((Pricing.CPM, AdEventType.IMPRESSION), (Pricing.CPC, AdEventType.CLICK)):
        return unit_price(pricing=pricing, bid=bid)
    return Decimal(0)


def matches(candidate: Candidate, features: AllowedFeatures) -> bool:
    """Every rule must match; a rule on a feature consent removed cannot match."""
    return all(rule.values & features.of(rule.feature) for rule in candidate.rules)


def score(candidate: Candidate, features: AllowedFeatures) -> Decimal:
    """Expected revenue of one impression: CPM bid/1000; CPC bid * expected click rate."""
    if candidate.pricing == Pricing.CPM:
        return candidate.bid / THOUSAND
    clicked_before = str(candidate.advertiser_id) in features.of(Feature.AD_INTERACTION)
    return candidate.bid * (CLICKED_BEFORE_CTR if clicked_before else BASE_CTR)


def choose(*, candidates: Sequence[Candidate], features: AllowedFeatures) -> Choice | None:
    """The best matching candidate: highest score, ties to the oldest campaign (lowest id)."""
    scored = [Choice(c, score(c, features)) for c in candidates if matches(c, features)]
    if not scored:
        return None
    return min(scored, key=lambda choice: (-choice.score, choice.candidate.campaign_id))


def day_bounds(now: datetime) -> tuple[date, datetime, datetime]:
    """The UTC day of `now`, with its start and end."""
    day = now.astimezone(UTC).date()
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return day, start, start + timedelta(days=1)


# The eligible campaigns of a decision in two parts.
#
# What changes while campaigns serve (their spend, total and today's) and what depends
# on the subject (its hides, its impressions of each campaign today) is read on every
# decision, in one portable statement, prepared on PostgreSQL (`config/sql.py`) and
# sent in the same round trip as the consent check: plain rows, each with the
# campaign's `catalog_stamp`.
#
# What a decision shows and ranks of a campaign — its first active ad, its targeting
# rules, its pricing and bid, its name, click-to-chat business and advertiser's name —
# changes only when someone edits the campaign, and is kept in each process by
# (campaign id, stamp) (`catalog_entries`). Triggers add one to the stamp on every such
# edit (migration 0006), so an edit is seen by the next decision in every process.
_ELIGIBLE_SQL = """
SELECT c.id, c.catalog_stamp, c.spent, c.total_budget, c.daily_budget, COALESCE(d.spent, 0)
FROM {campaign} c
LEFT JOIN {day} d ON d.campaign_id = c.id AND d.day = %s
WHERE c.status = %s AND c.placement = %s AND c.starts_at <= %s
  AND c.spent < c.total_budget
  AND (c.ends_at IS NULL OR c.ends_at > %s)
  AND NOT EXISTS (SELECT 1 FROM {hidden} h
                  WHERE h.subject_id = {subject} AND h.advertiser_id = c.advertiser_id)
  AND (SELECT COUNT(*) FROM {event} e JOIN {decision} x ON x.id = e.decision_id
       WHERE e.type = %s AND x.subject_id = {subject} AND x.campaign_id = c.id
         AND x.created_at >= %s AND x.created_at < %s) < c.frequency_cap
ORDER BY c.id
"""

# The subject by external id, so that the query can travel with the consent check,
# before the subject's key is known.
_SUBJECT = "(SELECT s.id FROM {subject} s WHERE s.external_id = %s)"

# What the catalog keeps of campaigns, by id: the first active ad as the answer shows
# it (none: the campaign cannot serve) and the rules as one JSON array (`_RULES`).
_CATALOG_SQL = """
SELECT c.id, c.catalog_stamp, c.advertiser_id, c.pricing, c.bid, a.id, a.headline, a.body,
       a.image_url, a.call_to_action, c.name, c.click_to_chat, v.name, {rules}
FROM {campaign} c
JOIN {advertiser} v ON v.id = c.advertiser_id
LEFT JOIN {ad} a ON a.id = (SELECT MIN(f.id) FROM {ad} f WHERE f.campaign_id = c.id AND f.is_active)
WHERE {ids}
"""

# A campaign's rules as a JSON array of [feature, values], in each database's words.
_RULES = {
    "postgresql": """(SELECT json_agg(json_build_array(r.feature, r."values"))::text
                      FROM {rule} r WHERE r.campaign_id = c.id)""",
    "sqlite": """(SELECT json_group_array(json_array(r.feature, json(r."values")))
                  FROM {rule} r WHERE r.campaign_id = c.id)""",
}


def _money(value: object) -> Decimal:
    """A stored amount as a Decimal (SQLite gives numbers back as floats)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value)).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class CatalogEntry:
    """What decisions need of a campaign at one `catalog_stamp`.

    The ad in `served` is the ad as decisions show it, with its campaign and advertiser
    loaded (the fields the answer and the log use); it is shared by every decision that serves it
    from this process, so nothing may change it."""

    stamp: int
    served: tuple[Candidate, Ad] | None  # None: no active ad, the campaign cannot serve
    unit: Decimal  # what one billable unit costs (`unit_price`)


# Each process's catalog: campaign id → its entry at the stamp it was read with. Only
# what was read outside a transaction is kept (a transaction sees its own edits, which
# may be rolled back); it is cleared when it outgrows its bound.
_catalog: dict[int, CatalogEntry] = {}
_CATALOG_MAX = 10_000


def forget_catalog() -> None:
    """Empties this process's catalog of campaigns (each test starts without one)."""
    _catalog.clear()


def catalog_entries(stamps: Mapping[int, int]) -> dict[int, CatalogEntry]:
    """The catalog entries of these campaigns (id → the stamp just read): those this
    process holds at the same stamp, the others read in one query. A campaign gone in
    the meantime has none; one edited in the meantime has its newer entry."""
    entries: dict[int, CatalogEntry] = {}
    missing: list[int] = []
    for pk, stamp in stamps.items():
        entry = _catalog.get(pk)
        if entry is not None and entry.stamp == stamp:
            entries[pk] = entry
        else:
            missing.append(pk)
    if not missing:
        return entries
    loaded = _load_catalog(missing)
    entries.update(loaded)
    if not connection.in_atomic_block:
        if len(_catalog) + len(loaded) > _CATALOG_MAX:
            _catalog.clear()
        _catalog.update(loaded)
    return entries


def _load_catalog(ids: Sequence[int]) -> dict[int, CatalogEntry]:
    ids_sql, ids_params = sql.any_of("c.id", list(ids))
    query = _CATALOG_SQL.format(
        campaign=Campaign._meta.db_table,
        advertiser=Advertiser._meta.db_table,
        ad=Ad._meta.db_table,
        rules=_RULES[connection.vendor].format(rule=TargetingRule._meta.db_table),
        ids=ids_sql,
    )
    [rows] = sql.fetch_together([(query, ids_params)])
    entries = {}
    for pk, stamp, advertiser_id, pricing, bid, ad_id, *shown, rules_json in rows:
        bid = _money(bid)
        served = None
        if ad_id is not None:
            candidate = Candidate(
                campaign_id=pk,
                advertiser_id=advertiser_id,
                pricing=pricing,
                bid=bid,
                rules=_rules(rules_json or "[]"),
                ad_id=ad_id,
            )
            served = (candidate, _shown_ad(pk, advertiser_id, pricing, bid, ad_id, *shown))
        entries[pk] = CatalogEntry(
            stamp=stamp, served=served, unit=unit_price(pricing=pricing, bid=bid)
        )
    return entries


def eligible_candidates(*, external_id: str, placement: str, now: datetime) -> list[Candidate]:
    """Campaigns that may serve this subject now, regardless of targeting, as targeting
    sees them.

    Active, scheduled now, for the placement, of an advertiser the subject has not
    hidden, under the subject's frequency cap today, with an active ad, and able to pay
    one more unit within both the total and today's budget. One query however many
    campaigns there are, and one more for campaigns the catalog does not hold."""
    statement = _eligible_statement(external_id, placement=placement, now=now)
    [rows] = sql.fetch_together([statement])
    return [candidate for candidate, _ in _eligible(rows)]


def _eligible_statement(external_id: str, *, placement: str, now: datetime) -> sql.Statement:
    """The eligible campaigns' query (`_ELIGIBLE_SQL`) for a subject's external id."""
    day, day_start, day_end = day_bounds(now)
    ops = connection.ops
    query = _eligible_query()
    moment = ops.adapt_datetimefield_value(now)
    params = [
        ops.adapt_datefield_value(day),
        CampaignStatus.ACTIVE.value,
        placement,
        moment,
        moment,
        external_id,
        AdEventType.IMPRESSION.value,
        external_id,
        ops.adapt_datetimefield_value(day_start),
        ops.adapt_datetimefield_value(day_end),
    ]
    return query, params


@lru_cache(maxsize=1)
def _eligible_query() -> str:
    return _ELIGIBLE_SQL.format(
        day=CampaignDay._meta.db_table,
        campaign=Campaign._meta.db_table,
        hidden=HiddenAdvertiser._meta.db_table,
        event=AdEvent._meta.db_table,
        decision=AdDecision._meta.db_table,
        subject=_SUBJECT.format(subject=Subject._meta.db_table),
    )


def _eligible(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Candidate, Ad]]:
    """The candidates of the eligible campaigns' rows that have an active ad and can pay
    one more unit, with the ad each shows, in the rows' order."""
    entries = catalog_entries({row[0]: row[1] for row in rows})
    eligible = []
    for pk, _, spent, total, daily, today in rows:
        entry = entries.get(pk)
        if entry is None or entry.served is None:
            continue
        # Money is compared here, in Decimal, rather than in SQL (SQLite has no decimals
        # and gives the amounts back as floats; PostgreSQL gives Decimals).
        if type(spent) is not Decimal:
            spent, total, daily, today = map(_money, (spent, total, daily, today))
        unit = entry.unit
        if spent + unit > total or today + unit > daily:
            continue
        eligible.append(entry.served)
    return eligible


@lru_cache(maxsize=4096)
def _rules(text: str) -> tuple[Rule, ...]:
    """A campaign's rules from their JSON (`_RULES`). The same text always gives the same
    immutable rules, so they are parsed once per process, not on every decision."""
    return tuple(
        Rule(feature, frozenset(str(v).casefold() for v in sql.json_value(values)))
        for feature, values in json.loads(text)
    )


def _shown_ad(
    campaign_id: int,
    advertiser_id: int,
    pricing: str,
    bid: Decimal,
    ad_id: int,
    headline: str,
    body: str,
    image_url: str,
    call_to_action: str,
    name: str,
    click_to_chat: str,
    advertiser_name: str,
) -> Ad:
    advertiser = Advertiser(pk=advertiser_id, name=advertiser_name)
    campaign = Campaign(
        pk=campaign_id,
        advertiser=advertiser,
        name=name,
        pricing=pricing,
        bid=bid,
        click_to_chat=click_to_chat,
    )
    ad = Ad(
        pk=ad_id,
        campaign=campaign,
        headline=headline,
        body=body,
        image_url=image_url,
        call_to_action=call_to_action,
    )
    for instance in (advertiser, campaign, ad):
        instance._state.adding = False
        instance._state.db = connection.alias
    return ad


def _features_row(subject_id: int) -> SubjectFeatures | None:
    """The subject's features as targeting needs them (one prepared query)."""
    table = SubjectFeatures._meta.db_table
    with sql.cursor() as cursor:
        cursor.execute(
            f"SELECT channel_topics, ad_interactions, city FROM {table} WHERE subject_id = %s",  # noqa: S608 (a table name)  # nosec # B608
            [subject_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    topics, interactions, city = row
    return SubjectFeatures(
        subject_id=subject_id,
        channel_topics=sql.json_value(topics),
        ad_interactions=sql.json_value(interactions),
        city=city,
    )


def _log(
    *,
    subject: int | None,  # the subject's key
    placement: str,
    context: RequestContext,
    reason: DecisionReason,
    features: AllowedFeatures | None = None,
    ad: Ad | None = None,
    campaign: Campaign | None = None,
    now: datetime,
) -> AdDecision:
    decision = AdDecision(
        subject_id=subject,
        placement=placement,
        ad=ad,
        campaign=campaign,
        personalized=features.personalized if features else False,
        reason=reason,
        context=context.as_log(),
        features_used=features.as_log() if features else {},
        purposes_used=features.purposes_used() if features else [],
        price=unit_price(pricing=campaign.pricing, bid=campaign.bid) if campaign else Decimal(0),
        created_at=now,
    )
    sql.insert(decision)  # prepared: a decision is logged on every request
    return decision


def decide(
    *,
    external_id: str,
    placement: str,
    context: Mapping[str, str],
    now: datetime | None = None,
) -> AdDecision:
    """Chooses an ad (or none) for a subject and a placement, and logs the decision.

    The returned decision has `ad.campaign.advertiser` loaded. Raises `InvalidValue`
    for a placement that is not `status` or `channels`: there are no ads in chats.
    """
    if placement not in PLACEMENTS:
        raise InvalidValue(
            f"'{placement}' is not a placement for ads: ads are never shown inside chats.",
            field="placement",
        )
    now = now or timezone.now()
    request = RequestContext(
        country=str(context.get("country", "")).upper(),
        language=str(context.get("language", "")),
    )
    # The subject and the same consent check every other service gets, for all of
    # ads' purposes, in one query; a purpose missing from the reference data allows
    # nothing.
    # The eligible campaigns travel with it (one round trip): they depend on the subject
    # only, never on what its consent allows, and are discarded when no ad can be served.
    checked, checks, eligible = selectors.subject_checks_with(
        external_id=external_id,
        purpose_keys=AD_PURPOSES,
        alongside=_eligible_statement(external_id, placement=placement, now=now),
    )
    if checked is None and not checks:  # no ad purpose at all: is the subject known?
        try:
            found = selectors.get_subject(external_id=external_id)
        except NotFound:
            found = None
        if found is not None:
            checked = selectors.CheckedSubject(
                found.pk,
                found.external_id,
                found.country,
                found.language,
                found.birth_year,
                found.policy_version.label,
            )
    if checked is None:
        return _log(
            subject=None,
            placement=placement,
            context=request,
            reason=DecisionReason.UNKNOWN_SUBJECT,
            now=now,
        )
    subject = checked.pk
    personalization = checks.get(PERSONALIZATION)
    if personalization is None or checked.policy_version < personalization.introduced_in:
        return _log(
            subject=subject,
            placement=placement,
            context=request,
            reason=DecisionReason.NOT_LIVE,
            now=now,
        )

    allowed = frozenset(key for key, check in checks.items() if check.results[0].allowed)
    if PERSONALIZATION in allowed:
        features = allowed_features(
            context=request,
            profile=profile_of(
                subject=checked, features=_features_row(subject), on=day_bounds(now)[0]
            ),
            allowed_purposes=allowed,
        )
    else:
        # The profile is not even read without personalisation.
        features = contextual_features(request)

    shown = dict(_eligible(eligible))
    choice = choose(candidates=list(shown), features=features)
    if choice is None:
        return _log(
            subject=subject,
            placement=placement,
            context=request,
            reason=DecisionReason.NO_ELIGIBLE_AD,
            features=features,
            now=now,
        )
    ad = shown[choice.candidate]
    campaign = ad.campaign
    return _log(
        subject=subject,
        placement=placement,
        context=request,
        reason=DecisionReason.SERVED,
        features=features,
        ad=ad,
        campaign=campaign,
        now=now,
    )


# --- events -----------------------------------------------------------------------------


@transaction.atomic
def record_event(
    *,
    decision_id: uuid.UUID | str,
    type: str,
    occurred_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[AdEvent, bool]:
    """Records an impression or a click of a decision's ad and charges the campaign.

    Idempotent per decision and type: a replay returns the first event and
    `created=False`, and nothing is charged twice. A click is accepted without an
    impression reported first (impressions are reported by devices that may be
    offline; the click proves the ad was shown). The charge (CPM: bid/1000 per
    impression; CPC: bid per click) is added to the campaign and to its day under the
    campaign's row lock, never beyond what is left of the total or that day's budget.
    A click on a click-to-chat ad opens a 72-hour chat window with the business.
    """
    if type not in AdEventType.values:
        raise InvalidValue(f"'{type}' is not an ad event type.", field="type")
    now = now or timezone.now()
    occurred_at = occurred_at or now
    decision = AdDecision.objects.filter(pk=decision_id).first()
    if decision is None:
        raise NotFound(f"No decision '{decision_id}'.", field="decision_id")
    existing = AdEvent.objects.filter(decision=decision, type=type).first()
    if existing is not None:
        return existing, False
    if decision.ad_id is None or decision.campaign_id is None:
        raise Conflict("No ad was served for this decision.", field="decision_id")
    if occurred_at > now + CLOCK_SKEW:
        raise InvalidValue("The event cannot be in the future.", field="occurred_at")
    if occurred_at < decision.created_at - CLOCK_SKEW:
        raise InvalidValue("The event cannot precede its decision.", field="occurred_at")

    # Every charge of a campaign is serialised on its row: the budget checks below and
    # the event's uniqueness both rely on it.
    campaign = Campaign.objects.select_for_update().get(pk=decision.campaign_id)
    existing = AdEvent.objects.filter(decision=decision, type=type).first()
    if existing is not None:  # the same event, reported concurrently, won the lock
        return existing, False

    day, _, _ = day_bounds(occurred_at)
    campaign_day, _ = CampaignDay.objects.get_or_create(campaign=campaign, day=day)
    price = event_price(pricing=campaign.pricing, bid=campaign.bid, type=type)
    cost = max(
        Decimal(0),
        min(
            price,
            campaign.total_budget - campaign.spent,
            campaign.daily_budget - campaign_day.spent,
        ),
    )
    event = AdEvent.objects.create(
        decision=decision, type=type, occurred_at=occurred_at, cost=cost, created_at=now
    )
    is_click = type == AdEventType.CLICK
    Campaign.objects.filter(pk=campaign.pk).update(spent=F("spent") + cost)
    CampaignDay.objects.filter(pk=campaign_day.pk).update(
        spent=F("spent") + cost,
        impressions=F("impressions") + (0 if is_click else 1),
        clicks=F("clicks") + (1 if is_click else 0),
    )
    if cost > 0:
        _report_spend(campaign=campaign, day=day, is_click=is_click, cost=cost)
    if is_click and campaign.click_to_chat and decision.subject_id is not None:
        ChatEntryWindow.objects.create(
            subject_id=decision.subject_id,
            business=campaign.click_to_chat,
            decision=decision,
            opened_at=occurred_at,
            expires_at=occurred_at + CHAT_WINDOW,
        )
    return event, True


def _report_spend(*, campaign: Campaign, day: date, is_click: bool, cost: Decimal) -> None:
    """Reports a charge to billing, in the event's transaction, when the advertiser has
    a billing account (ads → billing: billing imports nothing from ads)."""
    advertiser = (
        Advertiser.objects.filter(pk=campaign.advertiser_id, billing_account__isnull=False)
        .values("billing_account_id", "currency")
        .first()
    )
    if advertiser is None:
        return
    billing_services.record_ad_spend(
        account_id=advertiser["billing_account_id"],
        campaign_ref=f"ads-campaign-{campaign.pk}",
        campaign_name=campaign.name,
        pricing=campaign.pricing,
        day=day,
        impressions=0 if is_click else 1,
        clicks=1 if is_click else 0,
        amount=cost,
        currency=advertiser["currency"],
    )


def open_chat_window(*, external_id: str, business: str, at: datetime) -> ChatEntryWindow | None:
    """The click-to-chat window between a subject and a business open at `at`, if any
    (messages inside it are free); the one that stays open longest."""
    return (
        ChatEntryWindow.objects.filter(
            subject__external_id=external_id,
            subject__erased_at__isnull=True,
            business=business,
            opened_at__lte=at,
            expires_at__gt=at,
        )
        .order_by("-expires_at")
        .first()
    )
