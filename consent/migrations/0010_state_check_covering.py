"""On PostgreSQL the unique pair of a consent state, `one_state_per_purpose` on
(subject, purpose), also carries what the consent check reads of the state
(`granted`, `source`, as `INCLUDE` columns): the check then reads each subject's state
from the index alone (an index-only scan) instead of one more random heap page per
subject, as long as the page is all-visible (docs/benchmarks.md, seventh pass).

Database only: the constraint stays the same unique pair for Django. Django cannot say
it in the model, because on a database without covering indexes (SQLite) a
`UniqueConstraint` with `include` is not created at all, and the pair would lose its
uniqueness there.
"""

from typing import Any

from django.db import migrations

COVERING = (
    "ALTER TABLE consent_consentstate DROP CONSTRAINT one_state_per_purpose, "
    "ADD CONSTRAINT one_state_per_purpose UNIQUE (subject_id, purpose_id) "
    "INCLUDE (granted, source)"
)
PLAIN = (
    "ALTER TABLE consent_consentstate DROP CONSTRAINT one_state_per_purpose, "
    "ADD CONSTRAINT one_state_per_purpose UNIQUE (subject_id, purpose_id)"
)


def forward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(COVERING)


def backward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PLAIN)


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0009_notice_purposes_without_per_row_checks"),
    ]

    operations = [migrations.RunPython(forward, backward)]
