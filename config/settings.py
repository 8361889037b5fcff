"""Parley settings: everything comes from the environment.

Development defaults (an embedded SQLite database and a broker that needs no
server) apply only when DEBUG is on; with DEBUG off, SECRET_KEY must be given and
the production security settings are in force.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # development database, broker folders, beat schedule
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()

DEBUG: bool = env.bool("DEBUG", default=False)

# Development only: refused below when DEBUG is off.
_DEV_SECRET_KEY = "dev-only-insecure-key-never-used-in-production"  # noqa: S105  # nosec B105
if DEBUG:
    SECRET_KEY: str = env.str("SECRET_KEY", default=_DEV_SECRET_KEY)
else:
    # No default: a production process without a secret refuses to start, and so
    # does one given an empty secret or the development one.
    SECRET_KEY = env.str("SECRET_KEY")
    if not SECRET_KEY.strip() or SECRET_KEY == _DEV_SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set to a secret of its own in production.")

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The public base URL of the dashboard, used in single-use login links.
PUBLIC_BASE_URL: str = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "consent",
    "ads",
    "billing",
]

MIDDLEWARE = [
    # First: the request id on every log record, and one log line per request.
    "config.logs.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # An oversized API body is a 413 before anything reads it.
    "consent.limits.BodySizeLimitMiddleware",
    "csp.middleware.CSPMiddleware",
    # The consent check's and the ad decision's fast lanes, ahead of what they never use.
    "config.fastlane.FastLaneMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a sign-in refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'parley.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The consent check's query is prepared once per connection (`config/sql.py`); its
# generic plan is used at once instead of planning it again on each call.
DATABASE_PREPARED_STATEMENTS: bool = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("options", "-c plan_cache_mode=force_generic_plan")
    # psycopg prepares a statement only when asked (`prepare=True`): Django's cursors
    # bind on the client and never do, and nothing reaches this count by repetition.
    _options.setdefault("prepare_threshold", 2**31 - 1)
    # A server that does not answer (not one that refuses: that fails at once) must not
    # hold a request for the operating system's minutes: it gets a 503 instead.
    _options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file in development.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The rate limit of sign-ins comes first; then the ordinary user table.
AUTHENTICATION_BACKENDS = [
    "consent.backends.RateLimitBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", "English"),
    ("zh-hans", "简体中文"),
    ("fr", "Français"),
    ("pt-br", "Português (Brasil)"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))

# --- Security -------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# No page script reads the cookie: forms carry the token (the dashboard's script
# sends the form's own FormData).
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# A strict policy everywhere (development included, so a violation shows early):
# no inline script or style, nothing from other origins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Request bodies above this size are refused (the bulk check of 1,000 ids fits easily).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1_048_576)

# --- API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["consent.auth.ServiceTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["consent.auth.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["consent.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["consent.ratelimit.TokenRateThrottle"],
    "EXCEPTION_HANDLER": "consent.problems.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": (
        "Consent records, consent checks and reference data for the platform's services. "
        "Authenticate with `Authorization: Bearer <token>`; errors are "
        "`application/problem+json` (RFC 9457)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ConsentSourceEnum": "consent.choices.Source",
        "DenialReasonEnum": "consent.choices.DenialReason",
        "MechanismEnum": "consent.choices.Mechanism",
        # Billing's enums share field names (kind, type, status) with others'; the
        # names the others had before billing are kept.
        "StatusEnum": "consent.choices.RolloutStatus",
        "KindEnum": "consent.choices.JurisdictionKind",
        "TypeEnum": "ads.choices.AdEventType",
        "BillingAccountKindEnum": "billing.choices.AccountKind",
        "InvoiceKindEnum": "billing.choices.InvoiceKind",
        "InvoiceLineKindEnum": "billing.choices.LineKind",
        "ProductTypeEnum": "billing.choices.ProductType",
        "PurchaseStatusEnum": "billing.choices.PurchaseStatus",
        "GatewayStatusEnum": "billing.choices.GatewayStatus",
    },
}

# How long a web process trusts a token it has verified: the bound on how long a
# revoked token keeps working in other processes.
API_TOKEN_CACHE_SECONDS: int = env.int("API_TOKEN_CACHE_SECONDS", default=10)

# The rate limit per service token (consent/ratelimit.py): requests per minute for a
# token without its own limit, counted in Redis — by default the broker's, when the
# broker is Redis; without Redis there is no limit.
API_RATE_LIMIT_PER_MINUTE: int = env.int("API_RATE_LIMIT_PER_MINUTE", default=12_000)

# How long an Idempotency-Key is remembered, and a dashboard link stays valid.
IDEMPOTENCY_KEY_TTL = timedelta(hours=env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24))
DASHBOARD_LINK_TTL = timedelta(minutes=env.int("DASHBOARD_LINK_TTL_MINUTES", default=5))

# --- Privacy dashboard ------------------------------------------------------------
# A dashboard session lasts this long after its last change (the sign-in, a saved
# choice): short, since it reaches a person's privacy settings.
DASHBOARD_SESSION_AGE = timedelta(minutes=env.int("DASHBOARD_SESSION_MINUTES", default=30))
# Sign-ins with a password (django-axes): after this many failures from one address or
# for one username, further attempts are refused until the cool-off has passed.
AXES_FAILURE_LIMIT: int = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "dashboard/locked_out.html"
# Failed attempts are kept (they are the rate limit); successful sign-ins are not logged.
AXES_DISABLE_ACCESS_LOG = True
# Masked in its log lines and in the form data it stores with a failed attempt (the
# password always is): axes' defaults, and the form's CSRF token.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

# --- Ads ------------------------------------------------------------------------
# Signals older than this are deleted (and the features recomputed) by a periodic task.
SIGNAL_RETENTION = timedelta(days=env.int("SIGNAL_RETENTION_DAYS", default=90))

# --- Celery ---------------------------------------------------------------------
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Requests publish tasks after their commit (webhook deliveries, rollout batches).
    # Without timeouts a Redis that stops answering (a failover, a half-open connection)
    # holds that request forever; with them a publish gives up within about two
    # timeouts (one retry below) and the beat schedule catches up later.
    _broker_timeout = env.float("CELERY_BROKER_TIMEOUT_SECONDS", default=1.0)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": _broker_timeout,
        "socket_timeout": _broker_timeout,
    }
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
API_RATE_LIMIT_REDIS_URL: str = env.str(
    "API_RATE_LIMIT_REDIS_URL",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
)
CELERY_TASK_ALWAYS_EAGER: bool = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "purge-expired-credentials": {
        "task": "consent.tasks.purge_expired",
        "schedule": crontab(minute="*/15"),
    },
    "rollout-tick": {
        "task": "consent.tasks.rollout_tick",
        "schedule": timedelta(seconds=env.int("ROLLOUT_TICK_SECONDS", default=60)),
    },
}
CELERY_BEAT_SCHEDULE |= {
    "deliver-webhooks": {
        "task": "consent.webhook_tasks.deliver_webhooks",
        "schedule": timedelta(seconds=10),
        "options": {"expires": 10},
    },
    "purge-webhooks": {
        "task": "consent.webhook_tasks.purge_webhooks",
        "schedule": crontab(hour=3, minute=17),
    },
    "purge-signals": {
        "task": "ads.tasks.purge_signals",
        "schedule": crontab(minute=41),
    },
}
CELERY_BEAT_SCHEDULE |= {
    # Billing: new subscription periods, then every account's invoices for last month.
    "billing-close-month": {
        "task": "billing.tasks.close_last_month",
        "schedule": crontab(day_of_month="1", hour="0", minute="30"),
    },
}
# Webhooks: retries back off exponentially from BASE to MAX seconds, then give up.
WEBHOOK_BACKOFF_BASE_SECONDS: int = env.int("WEBHOOK_BACKOFF_BASE_SECONDS", default=10)
WEBHOOK_BACKOFF_MAX_SECONDS: int = env.int("WEBHOOK_BACKOFF_MAX_SECONDS", default=3600)
WEBHOOK_MAX_ATTEMPTS: int = env.int("WEBHOOK_MAX_ATTEMPTS", default=12)
WEBHOOK_TIMEOUT_SECONDS: int = env.int("WEBHOOK_TIMEOUT_SECONDS", default=5)
WEBHOOK_RETENTION_DAYS: int = env.int("WEBHOOK_RETENTION_DAYS", default=7)

# Rollouts: subjects per batch (one transaction each), how long a dispatched batch may
# stay unfinished before the watchdog sends it again, and attempts before it fails.
ROLLOUT_BATCH_SIZE: int = env.int("ROLLOUT_BATCH_SIZE", default=10_000)
ROLLOUT_BATCH_TIMEOUT = timedelta(seconds=env.int("ROLLOUT_BATCH_TIMEOUT_SECONDS", default=300))
ROLLOUT_BATCH_MAX_ATTEMPTS: int = env.int("ROLLOUT_BATCH_MAX_ATTEMPTS", default=5)

# --- Logging --------------------------------------------------------------------
# JSON lines in production (config/logs.py), a readable line in development; both
# carry the request id. Every request writes one record to `parley.request`.
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'plain', not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "config.logs.RequestIdFilter"},
        "redact": {"()": "config.logs.RedactFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django writes the raw path of every 4xx/5xx and CSRF failure: sign-in links
        # hold a token there.
        "django.request": {"filters": ["redact"]},
        "django.security.csrf": {"filters": ["redact"]},
        # Lockouts and failed sign-ins are warnings; its start-up banner is not news.
        "axes": {"level": "WARNING"},
        # One line per request at INFO (so LOG_LEVEL=WARNING drops them too);
        # LOG_REQUESTS=false drops them alone, e.g. when the proxy writes access logs.
        "parley.request": {
            "level": "NOTSET" if env.bool("LOG_REQUESTS", default=True) else "WARNING"
        },
    },
}

# Where the text of a policy version is published (consent receipts link to it).
POLICY_URL_TEMPLATE: str = env.str(
    "POLICY_URL_TEMPLATE", default=PUBLIC_BASE_URL + "/dashboard/policy/{label}"
)

# The controller named on consent receipts.
CONSENT_RECEIPT_CONTROLLER = {
    "piiController": env.str("CONTROLLER_NAME", default="Parley messaging platform"),
    "contact": env.str("CONTROLLER_CONTACT", default="Data Protection Officer"),
    "address": env.str("CONTROLLER_ADDRESS", default="Privacy Office"),
    "email": env.str("CONTROLLER_EMAIL", default="privacy@parley.invalid"),
    "phone": env.str("CONTROLLER_PHONE", default=""),
    "piiControllerUrl": env.str("CONTROLLER_URL", default=""),
}
