"""Carrying subjects to a policy version, set-based.

One call handles every subject of a range in a handful of SQL statements, whatever
the range's size: it decides the defaults, appends the events, moves the current
states, creates the notices and advances the subjects' version. The same SQL runs
on PostgreSQL (production, tests) and SQLite (the development default), and the
decisions it makes are those of `consent.rules` (the tests hold the two together).

Per subject reached (PRODUCT.md "Policy versions and rollouts"):
- one notice for the version (unique per subject and version; reopened if the
  subject reaches the version again and decisions are needed);
- for each purpose the versions in between introduce or change, live in the
  subject's jurisdiction: an explicit earlier choice is kept, a GPC refusal is kept,
  otherwise the default is applied (`rollout_default`, or `age_rule` / `gpc` when
  those decide it); where a version in between is material and the jurisdiction
  requires a fresh decision, the notice asks for a decision on the purposes that are
  the person's to decide, and an earlier explicit grant of such a purpose falls back
  to the default until they decide;
- the subject's policy version advances.
Subjects already on the version (or a later one) are not touched, which is what makes
a repeated run change nothing.

Every statement that reads a large table also bounds it by the id range: the planner
may otherwise merge-join from the start of an index or scan the whole table, and a
batch's time would grow with the table instead of with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from consent import webhooks
from consent.choices import EXPLICIT_SOURCES, ActorType, Source, WebhookEvent
from consent.models import PolicyVersion

MAX_ID = 2**62  # above any subject id: "to the end of the table"

_EXPLICIT = ", ".join(f"'{s}'" for s in sorted(EXPLICIT_SOURCES))

# Subjects of the range that the version has not reached yet, with the version each
# one leaves.
_TARGET_COLUMNS = """s.id AS subject_id, s.jurisdiction_id, s.birth_year, s.gpc_signalled_at,
       s.language, sv.label AS from_label, sv.id AS from_version_id"""
_TARGET_CONDITIONS = """sv.id = s.policy_version_id
  AND s.id >= %(lo)s AND s.id < %(hi)s
  AND s.erased_at IS NULL
  AND sv.label < %(label)s
  AND s.jurisdiction_id IN ({jurisdictions})"""

_TARGETS = f"""
SELECT {_TARGET_COLUMNS}
FROM consent_subject s, consent_policyversion sv
WHERE {_TARGET_CONDITIONS}
"""  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608

# The same subjects moved to the version in the statement that finds them (PostgreSQL):
# the update locks each row it moves, so a person's choice made meanwhile waits for the
# batch and then wins, and a choice that committed first is seen (the update re-reads
# a row that changed under it).
_MOVE_TARGETS = f"""
WITH moved AS (
  UPDATE consent_subject s
  SET policy_version_id = %(version_id)s, updated_at = %(now)s
  FROM consent_policyversion sv
  WHERE {_TARGET_CONDITIONS}
  RETURNING {_TARGET_COLUMNS}
)
INSERT INTO reach_targets SELECT * FROM moved
"""  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608

# One row per (target subject, affected live purpose) with the decision to take.
# `steps` works out once per version the targets start from (a handful, however many
# subjects) which purposes the versions in between introduce or change, and whether
# one of them is material; each subject then only joins its starting version's rows.
_DECISIONS = f"""
WITH steps AS (
  SELECT f.from_label, p.id AS purpose_id,
         EXISTS (SELECT 1 FROM consent_policyversion mv
                 WHERE mv.material AND mv.label > f.from_label
                   AND mv.label <= %(label)s) AS material
  FROM (SELECT DISTINCT from_label FROM reach_targets) f
  JOIN consent_purpose p ON TRUE
  JOIN consent_policyversion iv ON iv.id = p.introduced_in_id
  WHERE (iv.label > f.from_label AND iv.label <= %(label)s)
     OR EXISTS (
          SELECT 1 FROM consent_policyversion_changed_purposes cp
          JOIN consent_policyversion cv ON cv.id = cp.policyversion_id
          WHERE cp.purpose_id = p.id
            AND cv.label > f.from_label AND cv.label <= %(label)s)
)
SELECT subject_id, purpose_id, jurisdiction_id,
       default_granted AS granted, default_source AS source,
       CASE
         WHEN st_source = '{Source.GPC}' THEN FALSE
         WHEN explicit AND NOT (fresh AND st_granted) THEN FALSE
         WHEN st_source IS NULL OR explicit THEN TRUE
         ELSE st_granted <> default_granted
       END AS write,
       (fresh AND mechanism <> 'always_on' AND NOT blocked) AS decide,
       (st_source IS NOT NULL) AS existing
FROM (
  SELECT b.*,
    CASE
      WHEN mechanism = 'always_on' THEN TRUE
      WHEN blocked THEN FALSE
      WHEN gpc_applies AND gpc_on THEN FALSE
      WHEN mechanism = 'opt_out'
           AND NOT (age IS NOT NULL AND opt_in_below_age IS NOT NULL
                    AND age < opt_in_below_age) THEN TRUE
      ELSE FALSE
    END AS default_granted,
    CASE
      WHEN mechanism = 'always_on' THEN '{Source.ROLLOUT_DEFAULT}'
      WHEN blocked THEN '{Source.AGE_RULE}'
      WHEN gpc_applies AND gpc_on THEN '{Source.GPC}'
      ELSE '{Source.ROLLOUT_DEFAULT}'
    END AS default_source
  FROM (
    SELECT a.*,
      (NOT essential AND age IS NOT NULL
       AND (age < consent_age
            OR (profiling AND profiling_banned AND age < minor_age))) AS blocked
    FROM (
      SELECT t.subject_id, t.jurisdiction_id, p.id AS purpose_id,
             p.essential, p.gpc_applies, p.profiling,
             r.mechanism,
             j.consent_age, j.opt_in_below_age, j.minor_age,
             j.profiling_ads_to_minors_banned AS profiling_banned,
             (t.gpc_signalled_at IS NOT NULL) AS gpc_on,
             CASE WHEN t.birth_year IS NULL THEN NULL
                  WHEN %(year)s - t.birth_year - 1 < 0 THEN 0
                  ELSE %(year)s - t.birth_year - 1 END AS age,
             st.granted AS st_granted, st.source AS st_source,
             (COALESCE(st.source, '') IN ({_EXPLICIT})) AS explicit,
             (j.material_change_requires_decision AND x.material) AS fresh
      FROM reach_targets t
      JOIN steps x ON x.from_label = t.from_label
      JOIN consent_jurisdiction j ON j.id = t.jurisdiction_id
      JOIN consent_purpose p ON p.id = x.purpose_id
      JOIN consent_jurisdictionrule r
        ON r.jurisdiction_id = t.jurisdiction_id AND r.purpose_id = p.id
       AND r.mechanism <> 'unavailable'
      LEFT JOIN consent_consentstate st
        ON st.subject_id = t.subject_id AND st.purpose_id = p.id
       AND st.subject_id >= %(lo)s AND st.subject_id < %(hi)s
    ) a
  ) b
) c
"""  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608


# SQLite, which has no data-modifying WITH: the events a `reach` call has just written
# found again, with whether their (subject, purpose) already had a current state. After
# `before`, in this id range, written by this actor at this instant (the range's targets
# are locked by this transaction); a range condition, not a join, so that it stays an
# index range scan.
_NEW_EVENTS = """
SELECT e.id, e.subject_id, e.purpose_id, e.granted, e.source, e.policy_version_id,
       e.occurred_at, d.existing
FROM consent_consentevent e
JOIN reach_decisions d ON d.subject_id = e.subject_id AND d.purpose_id = e.purpose_id
WHERE e.id > %(before)s
  AND e.subject_id >= %(lo)s AND e.subject_id < %(hi)s
  AND e.actor_id = %(actor_id)s AND e.occurred_at = %(now)s
"""


# The events of the decisions that write, in (subject, purpose) order.
_EVENTS = """
(subject_id, purpose_id, granted, source, policy_version_id, jurisdiction_id,
 actor_type, actor_id, occurred_at, notice_version_id, language, ip_truncated,
 user_agent, reason, rollout_phase_id)
SELECT d.subject_id, d.purpose_id, d.granted, d.source, %(version_id)s,
       d.jurisdiction_id, %(actor_type)s, %(actor_id)s, %(now)s, %(version_id)s,
       t.language, '', '', '', %(phase_id)s
FROM reach_decisions d JOIN reach_targets t ON t.subject_id = d.subject_id
WHERE d.write
ORDER BY d.subject_id, d.purpose_id
"""

# The current states moved to the new events: the states that exist are updated and
# the others inserted, each in one statement. The subjects are locked, so no other
# writer can add a state for them meanwhile, and a plain insert costs a third less
# than an upsert.
_UPDATE_STATES = """
UPDATE consent_consentstate SET
  granted = e.granted, source = e.source,
  policy_version_id = e.policy_version_id, event_id = e.id,
  updated_at = e.occurred_at
FROM ({events}) e
WHERE consent_consentstate.subject_id = e.subject_id
  AND consent_consentstate.purpose_id = e.purpose_id AND e.existing
"""
_INSERT_STATES = """
INSERT INTO consent_consentstate
  (subject_id, purpose_id, granted, source, policy_version_id, event_id, updated_at)
SELECT e.subject_id, e.purpose_id, e.granted, e.source, e.policy_version_id,
       e.id, e.occurred_at
FROM ({events}) e
WHERE NOT e.existing
"""

# PostgreSQL: the events inserted and the states moved to them in one statement, the
# states reading the events the insert returns instead of finding them again; it
# answers how many events it wrote.
_EVENTS_AND_STATES = f"""
WITH inserted AS (
  INSERT INTO consent_consentevent {_EVENTS}
  RETURNING id, subject_id, purpose_id, granted, source, policy_version_id, occurred_at
), new_events AS (
  SELECT i.*, d.existing
  FROM inserted i
  JOIN reach_decisions d ON d.subject_id = i.subject_id AND d.purpose_id = i.purpose_id
), updated AS (
{_UPDATE_STATES.format(events="SELECT * FROM new_events")}
), added AS (
{_INSERT_STATES.format(events="SELECT * FROM new_events")}
)
SELECT COUNT(*) FROM inserted
"""  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608


# One notice per target for the version, asking for a decision when one of its
# purposes needs one.
_NOTICES = """
INSERT INTO consent_policynotice
  (subject_id, version_id, requires_decision, created_at, resolved_at,
   previous_version_id)
SELECT t.subject_id, %(version_id)s, COALESCE(d.decide, FALSE), %(now)s, NULL,
       t.from_version_id
FROM reach_targets t
LEFT JOIN (SELECT subject_id, MAX(CASE WHEN decide THEN 1 ELSE 0 END) = 1 AS decide
           FROM reach_decisions GROUP BY subject_id) d
  ON d.subject_id = t.subject_id
WHERE TRUE
"""

# Whether a target already has a notice for the version: only a subject who reached
# it before, and was rolled back, has one (only `reach` writes notices, and the targets
# are locked). A range scan of the notices' (subject, version) index.
_ANY_NOTICE = """
SELECT EXISTS (
  SELECT 1 FROM consent_policynotice n JOIN reach_targets t ON t.subject_id = n.subject_id
  WHERE n.version_id = %(version_id)s
    AND n.subject_id >= %(lo)s AND n.subject_id < %(hi)s)
"""

# PostgreSQL, when no target has a notice for the version (the usual case): plain
# inserts, the purposes to decide attached to the notices the insert returns.
_NEW_NOTICES = f"""
WITH notices AS (
{_NOTICES}
  RETURNING id, subject_id
)
INSERT INTO consent_policynotice_decision_purposes (policynotice_id, purpose_id)
SELECT n.id, d.purpose_id
FROM notices n JOIN reach_decisions d ON d.subject_id = n.subject_id
WHERE d.decide
"""  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608

# Otherwise the notice is reopened when decisions are needed again, and the purposes
# to decide are added to those it has.
_UPSERT_NOTICES = f"""
{_NOTICES}
ON CONFLICT (subject_id, version_id) DO UPDATE SET
  previous_version_id = excluded.previous_version_id,
  requires_decision = consent_policynotice.requires_decision
                      OR excluded.requires_decision,
  resolved_at = CASE WHEN excluded.requires_decision THEN NULL
                     ELSE consent_policynotice.resolved_at END,
  created_at = CASE WHEN excluded.requires_decision THEN excluded.created_at
                    ELSE consent_policynotice.created_at END
"""  # nosec # B608 (only constants of this module are interpolated)
_NOTICE_PURPOSES = """
INSERT INTO consent_policynotice_decision_purposes (policynotice_id, purpose_id)
SELECT n.id, d.purpose_id
FROM reach_decisions d
JOIN consent_policynotice n
  ON n.subject_id = d.subject_id AND n.version_id = %(version_id)s
 AND n.subject_id >= %(lo)s AND n.subject_id < %(hi)s
WHERE d.decide
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class ReachResult:
    subjects: int
    events: int


def _jurisdiction_list(jurisdiction_ids: list[int]) -> str:
    # Integers from the database, joined into the SQL so it stays portable
    # (SQLite has no array parameters).
    return ", ".join(str(int(i)) for i in jurisdiction_ids) or "NULL"


def _run(sql: str, params: dict[str, Any] | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _scalar(sql: str, params: dict[str, Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        return row[0] if row else None


def _prepare(
    *,
    version: PolicyVersion,
    jurisdiction_ids: list[int],
    lo: int,
    hi: int,
    year: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Fills the per-connection work tables reach_targets and reach_decisions.

    With `now` the targets are moved to the version (on PostgreSQL as they are found,
    `_MOVE_TARGETS`); without it nothing is changed (the preview)."""
    params: dict[str, Any] = {
        "lo": lo,
        "hi": hi,
        "label": version.label,
        "year": year,
        "version_id": version.pk,
        "now": now,
    }
    jurisdictions = _jurisdiction_list(jurisdiction_ids)
    targets = _TARGETS.format(jurisdictions=jurisdictions)
    _run("DROP TABLE IF EXISTS reach_targets")
    _run("DROP TABLE IF EXISTS reach_decisions")
    if now is not None and connection.vendor == "postgresql":
        _run(f"CREATE TEMPORARY TABLE reach_targets AS {targets} WITH NO DATA", params)
        _run(_MOVE_TARGETS.format(jurisdictions=jurisdictions), params)
    else:
        _run(f"CREATE TEMPORARY TABLE reach_targets AS {targets}", params)
        if now is not None:  # SQLite: no row locks to take; read, then move
            _run(
                """
                UPDATE consent_subject
                SET policy_version_id = %(version_id)s, updated_at = %(now)s
                WHERE id IN (SELECT subject_id FROM reach_targets)
                """,
                params,
            )
    if connection.vendor == "postgresql":
        _run("ANALYZE reach_targets")  # without statistics the planner expects 1 row
    # The decisions are not analysed: the planner sizes them by their pages, and its
    # plans for the statements that read them were as good without their statistics
    # (a batch about a tenth quicker in `make bench-rollout`, docs/benchmarks.md).
    _run(f"CREATE TEMPORARY TABLE reach_decisions AS {_DECISIONS}", params)
    return params


def _cleanup() -> None:
    _run("DROP TABLE IF EXISTS reach_targets")
    _run("DROP TABLE IF EXISTS reach_decisions")


def reach(
    *,
    version: PolicyVersion,
    jurisdiction_ids: list[int],
    lo: int,
    hi: int,
    now: datetime,
    actor_type: str = ActorType.SYSTEM,
    actor_id: str,
    phase_id: int | None = None,
) -> ReachResult:
    """Carries the subjects with ids in [lo, hi) of the jurisdictions to `version`.

    Must run inside a transaction (the caller's batch). Returns how many subjects
    were reached and how many events were written.
    """
    if connection.vendor == "postgresql":
        # These statements run once per batch over thousands of rows: compiling them
        # (PostgreSQL's JIT) costs more than it saves.
        _run("SET LOCAL jit = off")
    params = _prepare(
        version=version, jurisdiction_ids=jurisdiction_ids, lo=lo, hi=hi, year=now.year, now=now
    )
    subjects = _scalar("SELECT COUNT(*) FROM reach_targets") or 0
    if not subjects:
        _cleanup()
        return ReachResult(0, 0)
    params.update(
        {
            "actor_type": str(actor_type),
            "now_iso": webhooks.iso(now),
            "actor_id": actor_id,
            "phase_id": phase_id,
        }
    )
    before = _scalar("SELECT COALESCE(MAX(id), 0) FROM consent_consentevent") or 0
    params["before"] = before
    if connection.vendor == "postgresql":
        events = _scalar(_EVENTS_AND_STATES, params) or 0
    else:
        events = _run(f"INSERT INTO consent_consentevent {_EVENTS}", params)
        if events:
            _run(_UPDATE_STATES.format(events=_NEW_EVENTS), params)
            _run(_INSERT_STATES.format(events=_NEW_EVENTS), params)
    if connection.vendor == "postgresql" and not _scalar(_ANY_NOTICE, params):
        _run(_NEW_NOTICES, params)
    else:
        _run(_UPSERT_NOTICES, params)
        _run(_NOTICE_PURPOSES, params)
    if events:
        _announce(params)
    _cleanup()
    return ReachResult(subjects, events)


def _announce(params: dict[str, Any]) -> None:
    """Outbox rows for the events just written, the same JSON as
    `webhooks.consent_changed_payload`, when any service subscribes."""
    if not webhooks.has_subscribers(WebhookEvent.CONSENT_CHANGED):
        return
    if connection.vendor == "postgresql":
        obj, granted = "jsonb_build_object", "e.granted"
    else:
        obj, granted = "json_object", "json(CASE WHEN e.granted THEN 'true' ELSE 'false' END)"
    payload = (
        f"{obj}('type', 'consent.changed', 'timestamp', %(now_iso)s, 'data', {obj}("
        f"'subject', s.external_id, 'purpose', p.key, 'granted', {granted}, "
        "'source', e.source, 'policy_version', v.label, 'jurisdiction', j.code, "
        "'event_id', e.id, 'occurred_at', %(now_iso)s))"
    )
    _run(
        f"""
        INSERT INTO consent_outboxmessage (event_type, subject_id, payload, created_at,
                                           fanned_out)
        SELECT 'consent.changed', e.subject_id, {payload}, %(now)s, FALSE
        FROM consent_consentevent e
        JOIN consent_subject s ON s.id = e.subject_id
        JOIN consent_purpose p ON p.id = e.purpose_id
        JOIN consent_policyversion v ON v.id = e.policy_version_id
        JOIN consent_jurisdiction j ON j.id = e.jurisdiction_id
        WHERE e.id > %(before)s
          AND e.subject_id >= %(lo)s AND e.subject_id < %(hi)s
          AND e.actor_id = %(actor_id)s AND e.occurred_at = %(now)s
        ORDER BY e.id
        """,  # noqa: S608 (only constants of this module are interpolated)  # nosec # B608
        params,
    )
    transaction.on_commit(webhooks.schedule_delivery)


def preview(
    *, version: PolicyVersion, jurisdiction_ids: list[int], year: int
) -> list[dict[str, Any]]:
    """What `reach` would do to every subject of the jurisdictions, changing nothing:
    per purpose, how many defaults would be granted, refused, or kept as they are."""
    # Only reads: locking every subject of the rollout would hold up (and wait for)
    # people's choices and running batches for the whole preview.
    _prepare(
        version=version,
        jurisdiction_ids=jurisdiction_ids,
        lo=0,
        hi=MAX_ID,
        year=year,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.key,
                   SUM(CASE WHEN d.write AND d.granted THEN 1 ELSE 0 END),
                   SUM(CASE WHEN d.write AND NOT d.granted THEN 1 ELSE 0 END),
                   SUM(CASE WHEN d.write THEN 0 ELSE 1 END)
            FROM reach_decisions d JOIN consent_purpose p ON p.id = d.purpose_id
            GROUP BY p.key ORDER BY p.key
            """
        )
        rows = cursor.fetchall()
    _cleanup()
    return [
        {"purpose": key, "granted": int(g or 0), "refused": int(r or 0), "kept": int(k or 0)}
        for key, g, r, k in rows
    ]
