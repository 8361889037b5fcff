"""Reference data: metadata categories, policy versions, purposes, jurisdictions,
jurisdiction rules and the scheduled rollouts.

Frozen on purpose: every value is written inline here and only historical models are
used, so later changes to the app code never change what this migration loads. The
jurisdiction facts come from shared/facts/jurisdictions.md (late 2026); staff correct
them in the admin, not here.
"""

from datetime import UTC, datetime

from django.db import migrations

BASELINE = "2024-01"
ADS = "2025-06"
LINKED = "2026-01"

OPT_IN = "opt_in"
OPT_OUT = "opt_out"
ALWAYS_ON = "always_on"
SCHEDULED = "scheduled"

# --------------------------------------------------------------------------------------
# Metadata categories: (key, name, description). Never message content.
# --------------------------------------------------------------------------------------

CATEGORIES = [
    (
        "message_timing",
        "Message timing",
        "When messages and calls are sent and how many people take part — never their content.",
    ),
    (
        "contact_info",
        "Your contact details",
        "Your own phone number and account identifiers, used to deliver messages to you — "
        "never your device's address book.",
    ),
    (
        "updates_activity",
        "Updates-tab activity",
        "The channels you follow and the channel posts and ads you engage with in the Updates tab.",
    ),
    (
        "coarse_location",
        "General location",
        "Your country or city, worked out from your phone number or connection — never a "
        "location you share in a chat.",
    ),
    (
        "device_language",
        "Device language",
        "The language your phone or computer is set to.",
    ),
    (
        "age_band",
        "Age band",
        "A broad age range, such as 18–24, where your age is known.",
    ),
    (
        "ad_interactions",
        "Ad interactions",
        "Which ads you saw, clicked or hid, and which advertisers you chose to hide.",
    ),
    (
        "accounts_center",
        "Linked accounts",
        "Ad preferences and information from your other accounts, available only if you "
        "added this app to Accounts Center.",
    ),
    (
        "app_usage",
        "App usage",
        "Which features you open and how often, your app version and crash reports, "
        "counted in aggregate.",
    ),
]

# --------------------------------------------------------------------------------------
# Policy versions
# --------------------------------------------------------------------------------------

VERSIONS = [
    {
        "label": BASELINE,
        "title": "Baseline privacy policy",
        "material": False,
        "published_at": datetime(2024, 1, 1, tzinfo=UTC),
        "body": (
            "We use a small amount of metadata — when messages are sent, how many people "
            "take part, and your own contact details — to deliver your messages and calls. "
            "We count how the app is used, in aggregate, to fix problems and improve it. "
            "Your messages and calls are end-to-end encrypted: we cannot read them and "
            "never use them for ads."
        ),
        "summary_of_changes": (
            "The first version of this policy: message delivery (always on) and product "
            "analytics. Messages stay end-to-end encrypted and are never used for ads."
        ),
    },
    {
        "label": ADS,
        "title": "Ads and paid features in the Updates tab",
        "material": True,
        "published_at": datetime(2025, 6, 1, tzinfo=UTC),
        "body": (
            "The Updates tab can now show ads in Status and Channels, and offers paid "
            "channel subscriptions and promoted channels. Ads can be chosen from what you "
            "do in the Updates tab, your general location, your device language and your "
            "age band, and ad data can be shared with the company's other services and "
            "advertisers' measurement partners. Where the law asks for it you decide first; "
            "elsewhere you can turn either off at any time in your privacy settings. Ads "
            "never appear inside your chats. Your personal messages, calls and statuses "
            "stay end-to-end encrypted and are never used for ads, and your phone number "
            "is never sold or shared with advertisers."
        ),
        "summary_of_changes": (
            "New: ads in the Updates tab, personalised from your Updates-tab activity, "
            "general location, language and age band; and sharing of ad data with our "
            "partners. You can say no to either. Your messages stay end-to-end encrypted "
            "and are never used for ads."
        ),
    },
    {
        "label": LINKED,
        "title": "Linked accounts and multi-device premium",
        "material": True,
        "published_at": datetime(2026, 1, 5, tzinfo=UTC),
        "body": (
            "If you add this app to Accounts Center, you can choose to let ad preferences "
            "and information from your other linked accounts be used to choose your ads. "
            "This is off unless you turn it on, and you can turn it off again at any time. "
            "Business accounts can also subscribe to a premium plan that works across "
            "several devices. Your messages stay end-to-end encrypted and are never used "
            "for ads."
        ),
        "summary_of_changes": (
            "New: you can choose to use your linked accounts (Accounts Center) for ads — "
            "off unless you turn it on. Premium for businesses now covers several devices. "
            "Your messages stay end-to-end encrypted and are never used for ads."
        ),
    },
]

# --------------------------------------------------------------------------------------
# Purposes
# --------------------------------------------------------------------------------------

PURPOSES = [
    {
        "key": "service_delivery",
        "name": "Deliver your messages and calls",
        "description": (
            "We use when messages are sent and your contact details to deliver your "
            "messages and calls. The app cannot work without it, so it is always on. "
            "Your messages stay end-to-end encrypted."
        ),
        "categories": ["message_timing", "contact_info"],
        "introduced_in": BASELINE,
        "essential": True,
        "gpc_applies": False,
        "profiling": False,
        "display_order": 10,
    },
    {
        "key": "analytics",
        "name": "Product analytics",
        "description": (
            "We count how the app's features are used and when messages are sent, in "
            "aggregate, to fix problems and improve the app. We never read your messages."
        ),
        "categories": ["app_usage", "message_timing"],
        "introduced_in": BASELINE,
        "essential": False,
        "gpc_applies": False,
        "profiling": False,
        "display_order": 20,
    },
    {
        "key": "ads_personalization",
        "name": "Personalised ads in Updates",
        "description": (
            "Choose the ads you see in Status and Channels from what you do in the Updates "
            "tab, your general location, your language and your age band. Your messages, "
            "calls and statuses are never used for ads."
        ),
        "categories": ["updates_activity", "coarse_location", "device_language", "age_band"],
        "introduced_in": ADS,
        "essential": False,
        "gpc_applies": False,
        "profiling": True,
        "display_order": 30,
    },
    {
        "key": "ads_data_sharing",
        "name": "Share ad data with partners",
        "description": (
            "Share which ads you see and click, and the interests worked out from your "
            "Updates-tab activity, with the company's other services and advertisers' "
            "measurement partners. Some US state laws call this “sale or sharing”. Your "
            "phone number is never shared with advertisers."
        ),
        "categories": ["updates_activity", "ad_interactions"],
        "introduced_in": ADS,
        "essential": False,
        "gpc_applies": True,
        "profiling": True,
        "display_order": 40,
    },
    {
        "key": "ads_cross_account",
        "name": "Ads using your linked accounts",
        "description": (
            "If you added this app to Accounts Center, use ad preferences and information "
            "from your other linked accounts to choose your ads. Off unless you turn it on."
        ),
        "categories": ["accounts_center"],
        "introduced_in": LINKED,
        "essential": False,
        "gpc_applies": True,
        "profiling": True,
        "display_order": 50,
    },
]

# --------------------------------------------------------------------------------------
# Jurisdictions
# --------------------------------------------------------------------------------------

EU_LAW = "GDPR, ePrivacy, DSA, DMA"
EU_NOTES = (
    "GDPR, ePrivacy, DSA, DMA. Targeted ads and ad-data sharing are opt-in; a less-"
    "personalised equivalent must be offered, and a gatekeeper may not combine data across "
    "its services without specific consent (DMA art. 5(2)). DSA art. 28: no profiling ads "
    "to known minors. A material purpose change needs new consent unless compatible "
    "(GDPR art. 6(4)); the controller must demonstrate consent (art. 7(1)). Access/erasure "
    "requests: 30 days, extendable by 60."
)
EU_ADS_NOTE = "Opt-in (GDPR, ePrivacy); a less-personalised equivalent must be offered."

# Own-consent ages from the researched member-state list.
EU_RESEARCHED_AGES = {
    "AT": 14,
    "BE": 13,
    "DK": 13,
    "FI": 13,
    "SE": 13,
    "CZ": 15,
    "FR": 15,
    "IT": 14,
    "ES": 14,
    "IE": 16,
    "NL": 16,
    "SK": 16,
}
EU_DEFAULT_AGE = 16

EU_MEMBERS = [
    ("AT", "Austria"),
    ("BE", "Belgium"),
    ("BG", "Bulgaria"),
    ("HR", "Croatia"),
    ("CY", "Cyprus"),
    ("CZ", "Czechia"),
    ("DK", "Denmark"),
    ("EE", "Estonia"),
    ("FI", "Finland"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("GR", "Greece"),
    ("HU", "Hungary"),
    ("IE", "Ireland"),
    ("IT", "Italy"),
    ("LV", "Latvia"),
    ("LT", "Lithuania"),
    ("LU", "Luxembourg"),
    ("MT", "Malta"),
    ("NL", "Netherlands"),
    ("PL", "Poland"),
    ("PT", "Portugal"),
    ("RO", "Romania"),
    ("SK", "Slovakia"),
    ("SI", "Slovenia"),
    ("ES", "Spain"),
    ("SE", "Sweden"),
]
EEA_NON_EU = [
    ("IS", "Iceland"),
    ("LI", "Liechtenstein"),
    ("NO", "Norway"),
]


def _eu_eea(code, name, eea_only=False):
    if code in EU_RESEARCHED_AGES:
        age = EU_RESEARCHED_AGES[code]
        age_note = f"Own-consent age {age} is the national age in the researched facts."
    else:
        age = EU_DEFAULT_AGE
        age_note = (
            "The national own-consent age was not in the researched facts: the GDPR "
            "default of 16 (the more protective reading) was applied; staff should confirm."
        )
    notes = f"{EU_NOTES} {age_note}"
    if eea_only:
        notes += (
            " EEA state outside the EU: the researched facts group it with the EU, so the "
            "EU rules were applied (the more protective reading)."
        )
    return {
        "code": code,
        "name": name,
        "kind": "country",
        "region": "eu_eea",
        "law": EU_LAW,
        "consent_age": age,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": True,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 60,
        "notes": notes,
        "ads": OPT_IN,
        "ads_note": EU_ADS_NOTE,
    }


US_COMMON_NOTE = (
    "Own-consent age 13 (COPPA). The facts give no material-change rule for this row, so "
    "none is required beyond a notice."
)


def _us_state(code, name, law, notes, **overrides):
    row = {
        "code": code,
        "name": name,
        "kind": "subdivision",
        "region": "us",
        "law": law,
        "consent_age": 13,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": True,
        "material_change_requires_decision": False,
        "request_deadline_days": 45,
        "request_deadline_extension_days": 0,
        "notes": notes,
        "ads": OPT_OUT,
        "ads_note": "Opt-out; the universal opt-out signal (GPC) must be honoured.",
    }
    row.update(overrides)
    return row


UNIVERSAL_OPT_OUT_STATES = [
    ("US-DE", "Delaware"),
    ("US-MD", "Maryland"),
    ("US-MN", "Minnesota"),
    ("US-MT", "Montana"),
    ("US-NE", "Nebraska"),
    ("US-NH", "New Hampshire"),
    ("US-NJ", "New Jersey"),
    ("US-OR", "Oregon"),
]

SEA_CODES = ["SG", "ID", "TH", "VN", "PH", "MY"]
AFRICA_CODES = ["NG", "ZA", "KE"]

JURISDICTIONS = [
    *[_eu_eea(code, name) for code, name in EU_MEMBERS],
    *[_eu_eea(code, name, eea_only=True) for code, name in EEA_NON_EU],
    {
        "code": "CH",
        "name": "Switzerland",
        "kind": "country",
        "region": "eu_eea",
        "law": "FADP (Switzerland; not in the researched facts)",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": True,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 60,
        "notes": (
            "Switzerland is not in the researched facts. Seeded with the protective "
            "default's values: own-consent age 18, opt-in for targeted ads and ad-data "
            "sharing, no profiling ads to minors (as under DSA art. 28 in the EU), a fresh "
            "decision on material changes. Grouped with EU/EEA for the rollout and the "
            "30-day (+60) request deadline. Staff should confirm against the Swiss FADP."
        ),
        "ads": OPT_IN,
        "ads_note": "Not in the researched facts: opt-in, the protective default.",
    },
    {
        "code": "GB",
        "name": "United Kingdom",
        "kind": "country",
        "region": "uk",
        "law": "UK GDPR, PECR, DUA Act 2025",
        "consent_age": 13,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 60,
        "notes": (
            "UK GDPR, PECR, Data (Use and Access) Act 2025. Targeted ads and ad-data "
            "sharing are opt-in; own-consent age 13. Children's Code: profiling is off by "
            "default for children rather than banned — handled by the opt-in mechanism, so "
            "profiling_ads_to_minors_banned is off. A material change needs new consent; "
            "the controller must demonstrate consent. Access/erasure requests: 30 days, "
            "extendable by 60."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in (UK GDPR, PECR); profiling off by default for children.",
    },
    {
        "code": "BR",
        "name": "Brazil",
        "kind": "country",
        "region": "latam",
        "law": "LGPD; ECA Digital (Law 15.211/2025, from 18 Mar 2026)",
        "consent_age": 12,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": True,
        "gpc_required": False,
        "material_change_requires_decision": False,
        "request_deadline_days": 15,
        "request_deadline_extension_days": 0,
        "notes": (
            "LGPD; ECA Digital (Law 15.211/2025) in force from 18 Mar 2026. Targeted ads "
            "and ad-data sharing rest on legitimate interest with a right to object "
            "(opt-out). ECA Digital bans profiling ads to under-18s: seeded as banned now, "
            "ahead of the in-force date (the more protective reading). Parental consent "
            "under 12 is unverified: under-12s are treated as unable to consent themselves "
            "(own-consent age 12). A material purpose change: inform the person, who may "
            "revoke. Burden of proof on the controller (art. 8 §2). Requests: 15 days."
        ),
        "ads": OPT_OUT,
        "ads_note": "Opt-out: legitimate interest with a right to object (LGPD).",
    },
    {
        "code": "IN",
        "name": "India",
        "kind": "country",
        "region": "south_asia",
        "law": "DPDP Act 2023; DPDP Rules (13 Nov 2025; full duties from 13 May 2027)",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": True,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 90,
        "request_deadline_extension_days": 0,
        "notes": (
            "DPDP Act 2023; DPDP Rules notified 13 Nov 2025, full duties from 13 May 2027 — "
            "applied now (the more protective reading). Opt-in with an itemised notice per "
            "purpose. Own-consent age 18; s.9(3): no tracking, behavioural monitoring or "
            "targeted ads directed at children. A material change needs a new notice and "
            "consent (inferred, so the protective choice). Burden of proof on the data "
            "fiduciary (unverified). The 90-day request deadline is from a secondary "
            "source and unverified (≈); staff should confirm."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in with an itemised notice per purpose (DPDP Act).",
    },
    _us_state(
        "US-CA",
        "California",
        "CCPA/CPRA; COPPA",
        "CCPA/CPRA. Opt-out of sale/sharing; GPC must be honoured (11 CCR 7025). Under 16: "
        "opt-in for sale/sharing (13–15 themselves, under 13 a parent). "
        + US_COMMON_NOTE
        + " Requests: 45 days (+45); opt-out requests within 15 business days; wait 12 "
        "months before asking to opt back in. Request records kept 24 months (unverified).",
        opt_in_below_age=16,
        request_deadline_extension_days=45,
        ads_note="Opt-out of sale/sharing; GPC honoured (11 CCR 7025); opt-in under 16.",
    ),
    _us_state(
        "US-CO",
        "Colorado",
        "Colorado Privacy Act; COPPA",
        "Colorado Privacy Act. Opt-out; a universal opt-out signal (GPC) must be "
        "honoured. Under 18: consent for targeted ads (from 1 Oct 2025). Own-consent age "
        "13 (COPPA). A secondary use needs consent, so a material change requires a "
        "decision. Requests: 45 days (+45).",
        opt_in_below_age=18,
        material_change_requires_decision=True,
        request_deadline_extension_days=45,
        ads_note="Opt-out; universal opt-out signal (GPC) required; opt-in under 18.",
    ),
    _us_state(
        "US-CT",
        "Connecticut",
        "Connecticut Data Privacy Act; COPPA",
        "Connecticut Data Privacy Act. Opt-out; a universal opt-out signal must be "
        "honoured. No targeted ads to under-18s from 1 Jul 2026 (≈, secondary source): "
        "seeded as banned (the more protective reading). "
        + US_COMMON_NOTE
        + " Requests: 45 days (unverified).",
        profiling_ads_to_minors_banned=True,
    ),
    _us_state(
        "US-TX",
        "Texas",
        "Texas Data Privacy and Security Act; COPPA",
        "Texas Data Privacy and Security Act. Opt-out; a universal opt-out signal must be "
        "honoured. The facts give no minors' rule beyond COPPA. "
        + US_COMMON_NOTE
        + " Requests: 45 days (unverified).",
    ),
    _us_state(
        "US-VA",
        "Virginia",
        "Virginia Consumer Data Protection Act; COPPA",
        "Virginia Consumer Data Protection Act. Opt-out; no universal opt-out signal duty. "
        + US_COMMON_NOTE
        + " Requests: 45 days (+45).",
        gpc_required=False,
        request_deadline_extension_days=45,
        ads_note="Opt-out; no universal opt-out signal duty.",
    ),
    *[
        _us_state(
            code,
            name,
            f"{name} comprehensive privacy law; COPPA",
            f"{name} comprehensive privacy law, one of the states with a universal opt-out "
            "duty (DE, MD, MN, MT, NE, NH, NJ, OR): opt-out, GPC must be honoured. "
            + US_COMMON_NOTE
            + " Requests: 45 days (unverified).",
        )
        for code, name in UNIVERSAL_OPT_OUT_STATES
    ],
    {
        "code": "US",
        "name": "United States (rest)",
        "kind": "country",
        "region": "us",
        "law": "No comprehensive state privacy law; COPPA",
        "consent_age": 13,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": False,
        "request_deadline_days": 45,
        "request_deadline_extension_days": 0,
        "notes": (
            "US states without a comprehensive privacy law (and subjects whose state is "
            "unknown). Opt-out; no universal opt-out signal duty, though Parley honours "
            "GPC everywhere. " + US_COMMON_NOTE + " Requests: 45 days (a product choice, "
            "not a legal deadline)."
        ),
        "ads": OPT_OUT,
        "ads_note": "Opt-out: no comprehensive state law.",
    },
    {
        "code": "SG",
        "name": "Singapore",
        "kind": "country",
        "region": "sea",
        "law": "PDPA",
        "consent_age": 13,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "PDPA. Consent or deemed consent: treated as opt-out with notice. 13–17-year-"
            "olds may consent if they understand; own-consent age 13. A new purpose needs "
            "notice and consent (unverified): a material change requires a decision (the "
            "more protective reading). Requests: 30 days (≈, secondary source)."
        ),
        "ads": OPT_OUT,
        "ads_note": "Consent or deemed consent: treated as opt-out with notice.",
    },
    {
        "code": "ID",
        "name": "Indonesia",
        "kind": "country",
        "region": "sea",
        "law": "PDP Law 27/2022",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": False,
        "request_deadline_days": 3,
        "request_deadline_extension_days": 0,
        "notes": (
            "PDP Law 27/2022. Opt-in (explicit consent). Parental consent for children "
            "(unverified): own-consent age 18, the protective reading. Changes must be "
            "notified (no fresh decision required). The controller must show proof of "
            "consent. Requests: 3 days (draft text, unverified) — the shorter, protective "
            "deadline."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in (explicit consent).",
    },
    {
        "code": "TH",
        "name": "Thailand",
        "kind": "country",
        "region": "sea",
        "law": "PDPA 2019",
        "consent_age": 20,
        "opt_in_below_age": None,
        "minor_age": 20,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "PDPA 2019. Opt-in (consent, s.19). Under 10 parental consent, 10–20 case by "
            "case: own-consent age and age of majority set to 20 (Thai majority), the "
            "protective reading. A new purpose needs consent (unverified): a material "
            "change requires a decision. Processing records (s.39). Requests: 30 days."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in (consent, PDPA s.19).",
    },
    {
        "code": "VN",
        "name": "Vietnam",
        "kind": "country",
        "region": "sea",
        "law": "Law 91/2025 on Personal Data Protection (from 1 Jan 2026)",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 3,
        "request_deadline_extension_days": 0,
        "notes": (
            "Law 91/2025, in force from 1 Jan 2026. Opt-in; silence is not consent. A legal "
            "representative acts for children: own-consent age 18. The facts give no "
            "material-change rule: a fresh decision is required (the protective choice). "
            "Requests: 3 days (≈, unverified)."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in; silence is not consent.",
    },
    {
        "code": "PH",
        "name": "Philippines",
        "kind": "country",
        "region": "sea",
        "law": "Data Privacy Act 2012",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "Data Privacy Act 2012. Opt-in (consent or legitimate interest; consent "
            "chosen, the protective reading). The own-consent age is unverified: 18, the "
            "protective default. A new purpose needs consent; consent must be evidenced. "
            "Requests: 30 days (unverified)."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in (consent or legitimate interest; consent chosen).",
    },
    {
        "code": "MY",
        "name": "Malaysia",
        "kind": "country",
        "region": "sea",
        "law": "PDPA 2010",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 21,
        "request_deadline_extension_days": 14,
        "notes": (
            "PDPA 2010. Opt-in; right to stop direct marketing. The own-consent age is "
            "unverified: 18, the protective default. The facts give no material-change "
            "rule: a fresh decision is required (the protective choice). Requests: 21 days "
            "(+14)."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in; right to stop direct marketing.",
    },
    {
        "code": "NG",
        "name": "Nigeria",
        "kind": "country",
        "region": "africa",
        "law": "NDPA 2023",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "Nigeria Data Protection Act 2023. Opt-out (consent or legitimate interest; "
            "right to object). Under 18: parental consent and age verification, so own-"
            "consent age 18. The facts give no material-change rule: a fresh decision is "
            "required (the protective choice). Requests: 30 days (unverified)."
        ),
        "ads": OPT_OUT,
        "ads_note": "Opt-out: legitimate interest with a right to object.",
    },
    {
        "code": "ZA",
        "name": "South Africa",
        "kind": "country",
        "region": "africa",
        "law": "POPIA",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "POPIA. Opt-in for electronic direct marketing (s.69). Under 18 needs a "
            "competent person: own-consent age 18. Burden of proof on the responsible party "
            "(s.11). The facts give no material-change rule: a fresh decision is required "
            "(the protective choice). Requests: 30 days (≈, secondary source)."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in for electronic direct marketing (POPIA s.69).",
    },
    {
        "code": "KE",
        "name": "Kenya",
        "kind": "country",
        "region": "africa",
        "law": "Data Protection Act 2019",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": False,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "Data Protection Act 2019. Opt-in (consent; commercial use also needs an "
            "opt-out). Parental consent for children (unverified): own-consent age 18, the "
            "protective reading. The facts give no material-change rule: a fresh decision "
            "is required (the protective choice). Requests: 30 days (unverified)."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in (consent); commercial use also offers an opt-out.",
    },
    {
        "code": "DEFAULT",
        "name": "Default (anywhere else)",
        "kind": "default",
        "region": "other",
        "law": "Protective default (no researched law)",
        "consent_age": 18,
        "opt_in_below_age": None,
        "minor_age": 18,
        "profiling_ads_to_minors_banned": True,
        "gpc_required": False,
        "material_change_requires_decision": True,
        "request_deadline_days": 30,
        "request_deadline_extension_days": 0,
        "notes": (
            "The most protective rule set, used wherever no specific jurisdiction applies: "
            "opt-in, own-consent age 18 for profiling ads and no profiling ads to minors, a "
            "fresh decision on material changes, proof kept, requests within 30 days."
        ),
        "ads": OPT_IN,
        "ads_note": "Opt-in: the most protective default.",
    },
]

JURISDICTION_FIELDS = [
    "code",
    "name",
    "kind",
    "region",
    "law",
    "consent_age",
    "opt_in_below_age",
    "minor_age",
    "profiling_ads_to_minors_banned",
    "gpc_required",
    "material_change_requires_decision",
    "request_deadline_days",
    "request_deadline_extension_days",
    "notes",
]

# --------------------------------------------------------------------------------------
# Jurisdiction rules: one per jurisdiction × purpose.
# --------------------------------------------------------------------------------------

SERVICE_DELIVERY_NOTE = "Essential: always on, shown for transparency only."
ANALYTICS_NOTE = "Seeded with the same mechanism as ads_personalization in this jurisdiction."
CROSS_ACCOUNT_NOTE = (
    "Opt-in everywhere: apps are linked through Accounts Center only when the person "
    "chooses to (off by default)."
)


def _rules_for(jurisdiction):
    ads = jurisdiction["ads"]
    return [
        ("service_delivery", ALWAYS_ON, SERVICE_DELIVERY_NOTE),
        ("analytics", ads, ANALYTICS_NOTE),
        ("ads_personalization", ads, jurisdiction["ads_note"]),
        ("ads_data_sharing", ads, jurisdiction["ads_note"]),
        ("ads_cross_account", OPT_IN, CROSS_ACCOUNT_NOTE),
    ]


# --------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------

ADS_ROLLOUT_NAME = "2025-06 Ads and paid features — phased"
LINKED_ROLLOUT_NAME = "2026-01 Linked accounts — everywhere"

ADS_PHASE_1 = [
    "US",
    "US-CA",
    "US-CO",
    "US-CT",
    "US-TX",
    "US-VA",
    *[code for code, _ in UNIVERSAL_OPT_OUT_STATES],
    "BR",
    "IN",
    "GB",
]
ADS_PHASE_2 = [
    *[code for code, _ in EU_MEMBERS],
    *[code for code, _ in EEA_NON_EU],
    "CH",
    *SEA_CODES,
    *AFRICA_CODES,
]

ADS_PHASE_STARTS = [
    datetime(2025, 6, 17, tzinfo=UTC),
    datetime(2025, 9, 1, tzinfo=UTC),
    datetime(2026, 1, 15, tzinfo=UTC),
]
LINKED_PHASE_START = datetime(2026, 1, 15, tzinfo=UTC)


def _ads_phases():
    """Phase 3 is everything not reached by phases 1 and 2, computed, not listed."""
    all_codes = [row["code"] for row in JURISDICTIONS]
    earlier = set(ADS_PHASE_1) | set(ADS_PHASE_2)
    phase_3 = [code for code in all_codes if code not in earlier]
    return [ADS_PHASE_1, ADS_PHASE_2, phase_3]


# --------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------


def load(apps, schema_editor):
    MetadataCategory = apps.get_model("consent", "MetadataCategory")
    PolicyVersion = apps.get_model("consent", "PolicyVersion")
    Purpose = apps.get_model("consent", "Purpose")
    Jurisdiction = apps.get_model("consent", "Jurisdiction")
    JurisdictionRule = apps.get_model("consent", "JurisdictionRule")
    Rollout = apps.get_model("consent", "Rollout")
    RolloutPhase = apps.get_model("consent", "RolloutPhase")

    categories = {}
    for key, name, description in CATEGORIES:
        categories[key] = MetadataCategory.objects.create(
            key=key, name=name, description=description
        )

    versions = {}
    for row in VERSIONS:
        versions[row["label"]] = PolicyVersion.objects.create(**row)

    purposes = {}
    for row in PURPOSES:
        fields = {k: v for k, v in row.items() if k not in ("categories", "introduced_in")}
        purpose = Purpose.objects.create(introduced_in=versions[row["introduced_in"]], **fields)
        purpose.categories.set([categories[key] for key in row["categories"]])
        purposes[row["key"]] = purpose

    jurisdictions = {}
    for row in JURISDICTIONS:
        fields = {name: row[name] for name in JURISDICTION_FIELDS}
        jurisdictions[row["code"]] = Jurisdiction.objects.create(
            current_policy_version=versions[BASELINE], **fields
        )

    JurisdictionRule.objects.bulk_create(
        [
            JurisdictionRule(
                jurisdiction=jurisdictions[row["code"]],
                purpose=purposes[purpose_key],
                mechanism=mechanism,
                notes=note,
            )
            for row in JURISDICTIONS
            for purpose_key, mechanism, note in _rules_for(row)
        ]
    )

    ads_rollout = Rollout.objects.create(
        version=versions[ADS], name=ADS_ROLLOUT_NAME, status=SCHEDULED
    )
    for position, (codes, starts_at) in enumerate(
        zip(_ads_phases(), ADS_PHASE_STARTS, strict=True), start=1
    ):
        phase = RolloutPhase.objects.create(
            rollout=ads_rollout, position=position, starts_at=starts_at, status=SCHEDULED
        )
        phase.jurisdictions.set([jurisdictions[code] for code in codes])

    linked_rollout = Rollout.objects.create(
        version=versions[LINKED], name=LINKED_ROLLOUT_NAME, status=SCHEDULED
    )
    phase = RolloutPhase.objects.create(
        rollout=linked_rollout, position=1, starts_at=LINKED_PHASE_START, status=SCHEDULED
    )
    phase.jurisdictions.set(list(jurisdictions.values()))


def unload(apps, schema_editor):
    MetadataCategory = apps.get_model("consent", "MetadataCategory")
    PolicyVersion = apps.get_model("consent", "PolicyVersion")
    Purpose = apps.get_model("consent", "Purpose")
    Jurisdiction = apps.get_model("consent", "Jurisdiction")
    JurisdictionRule = apps.get_model("consent", "JurisdictionRule")
    Rollout = apps.get_model("consent", "Rollout")
    RolloutPhase = apps.get_model("consent", "RolloutPhase")

    labels = [row["label"] for row in VERSIONS]
    purpose_keys = [row["key"] for row in PURPOSES]
    codes = [row["code"] for row in JURISDICTIONS]
    category_keys = [key for key, _, _ in CATEGORIES]
    rollouts = Rollout.objects.filter(
        name__in=[ADS_ROLLOUT_NAME, LINKED_ROLLOUT_NAME], version__label__in=labels
    )

    # Reverse order of load. Anything else still pointing at this data through a
    # PROTECT foreign key (subjects, events, other rollouts) makes this fail loudly
    # instead of silently deleting consent history.
    RolloutPhase.objects.filter(rollout__in=rollouts).delete()
    rollouts.delete()
    JurisdictionRule.objects.filter(
        jurisdiction__code__in=codes, purpose__key__in=purpose_keys
    ).delete()
    Jurisdiction.objects.filter(code__in=codes).delete()
    Purpose.objects.filter(key__in=purpose_keys).delete()
    # A published version refuses DELETE in the database (migration 0007); unloading
    # the reference data is the deliberate exception, still guarded by PROTECT above.
    PolicyVersion.objects.filter(label__in=labels).update(published_at=None)
    PolicyVersion.objects.filter(label__in=labels).delete()
    MetadataCategory.objects.filter(key__in=category_keys).delete()


class Migration(migrations.Migration):
    dependencies = [("consent", "0002_event_append_only")]

    operations = [migrations.RunPython(load, unload)]
