"""Campaigns count the changes to what a decision shows and ranks of them.

`Campaign.catalog_stamp` is kept by triggers, whatever writes the change (the admin,
a service, a bulk update): an update of a campaign's name, advertiser, pricing, bid or
click-to-chat business, any write to its ads or targeting rules, and a change of its
advertiser's name each add one. It never goes back: a save that writes an older value
keeps the current one. Ad servers cache what a decision needs of a campaign by
(id, stamp) (`ads.decisions.catalog_entries`), so every such write invalidates it.
"""

from django.db import migrations, models

POSTGRESQL = """
CREATE FUNCTION ads_campaign_keep_stamp() RETURNS trigger AS $$
BEGIN
    IF (OLD.name, OLD.advertiser_id, OLD.pricing, OLD.bid, OLD.click_to_chat)
       IS DISTINCT FROM (NEW.name, NEW.advertiser_id, NEW.pricing, NEW.bid, NEW.click_to_chat)
    THEN
        NEW.catalog_stamp := OLD.catalog_stamp + 1;
    ELSE
        NEW.catalog_stamp := GREATEST(OLD.catalog_stamp, NEW.catalog_stamp);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ads_campaign_catalog BEFORE UPDATE ON ads_campaign
    FOR EACH ROW EXECUTE FUNCTION ads_campaign_keep_stamp();

CREATE FUNCTION ads_campaign_part_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE ads_campaign SET catalog_stamp = catalog_stamp + 1 WHERE id = OLD.campaign_id;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.campaign_id <> OLD.campaign_id) THEN
        UPDATE ads_campaign SET catalog_stamp = catalog_stamp + 1 WHERE id = NEW.campaign_id;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ads_ad_catalog AFTER INSERT OR UPDATE OR DELETE ON ads_ad
    FOR EACH ROW EXECUTE FUNCTION ads_campaign_part_changed();
CREATE TRIGGER ads_targetingrule_catalog AFTER INSERT OR UPDATE OR DELETE ON ads_targetingrule
    FOR EACH ROW EXECUTE FUNCTION ads_campaign_part_changed();

CREATE FUNCTION ads_advertiser_renamed() RETURNS trigger AS $$
BEGIN
    UPDATE ads_campaign SET catalog_stamp = catalog_stamp + 1 WHERE advertiser_id = NEW.id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ads_advertiser_catalog AFTER UPDATE ON ads_advertiser
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION ads_advertiser_renamed();
"""

POSTGRESQL_BACKWARD = """
DROP TRIGGER IF EXISTS ads_advertiser_catalog ON ads_advertiser;
DROP TRIGGER IF EXISTS ads_targetingrule_catalog ON ads_targetingrule;
DROP TRIGGER IF EXISTS ads_ad_catalog ON ads_ad;
DROP TRIGGER IF EXISTS ads_campaign_catalog ON ads_campaign;
DROP FUNCTION IF EXISTS ads_advertiser_renamed();
DROP FUNCTION IF EXISTS ads_campaign_part_changed();
DROP FUNCTION IF EXISTS ads_campaign_keep_stamp();
"""

# SQLite cannot assign NEW: the campaign's own trigger runs after the update, and
# SQLite does not fire a trigger from its own statement (recursive_triggers is off).
_BUMP = "UPDATE ads_campaign SET catalog_stamp = catalog_stamp + 1 WHERE id"
SQLITE = [
    """CREATE TRIGGER ads_campaign_catalog AFTER UPDATE ON ads_campaign
        WHEN NEW.catalog_stamp < OLD.catalog_stamp
          OR OLD.name IS NOT NEW.name OR OLD.advertiser_id IS NOT NEW.advertiser_id
          OR OLD.pricing IS NOT NEW.pricing OR OLD.bid IS NOT NEW.bid
          OR OLD.click_to_chat IS NOT NEW.click_to_chat
        BEGIN
            UPDATE ads_campaign
            SET catalog_stamp = MAX(OLD.catalog_stamp, NEW.catalog_stamp) + (
                CASE WHEN OLD.name IS NOT NEW.name OR OLD.advertiser_id IS NOT NEW.advertiser_id
                       OR OLD.pricing IS NOT NEW.pricing OR OLD.bid IS NOT NEW.bid
                       OR OLD.click_to_chat IS NOT NEW.click_to_chat
                THEN 1 ELSE 0 END)
            WHERE id = NEW.id;
        END""",
    *(
        statement
        for table in ("ads_ad", "ads_targetingrule")
        for statement in (
            f"""CREATE TRIGGER {table}_catalog_insert AFTER INSERT ON {table}
                BEGIN {_BUMP} = NEW.campaign_id; END""",
            f"""CREATE TRIGGER {table}_catalog_update AFTER UPDATE ON {table}
                BEGIN {_BUMP} IN (OLD.campaign_id, NEW.campaign_id); END""",
            f"""CREATE TRIGGER {table}_catalog_delete AFTER DELETE ON {table}
                BEGIN {_BUMP} = OLD.campaign_id; END""",
        )
    ),
    """CREATE TRIGGER ads_advertiser_catalog AFTER UPDATE ON ads_advertiser
        WHEN OLD.name IS NOT NEW.name
        BEGIN
            UPDATE ads_campaign SET catalog_stamp = catalog_stamp + 1
            WHERE advertiser_id = NEW.id;
        END""",
]
SQLITE_TRIGGERS = [
    "ads_campaign_catalog",
    *(
        f"{t}_catalog_{op}"
        for t in ("ads_ad", "ads_targetingrule")
        for op in ("insert", "update", "delete")
    ),
    "ads_advertiser_catalog",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL)
    elif vendor == "sqlite":
        for statement in SQLITE:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_BACKWARD)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("ads", "0005_decision_without_foreign_keys")]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="catalog_stamp",
            field=models.PositiveIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.RunPython(forward, backward),
    ]
