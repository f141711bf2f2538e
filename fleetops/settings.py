"""FleetOps Live settings.

One environment-driven module for both profiles:

* **embedded** (no environment): SQLite, the in-memory channel layer and
  Celery in eager mode, so `make run` needs nothing but Python;
* **services**: `DATABASE_URL` (PostgreSQL) and `REDIS_URL` switch to
  PostgreSQL, channels-redis and Celery workers over Redis.
"""

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


class NonEmptyEnviron(Mapping[str, str]):
    """os.environ without the variables set to "": those count as unset.

    `DATABASE_URL= make run`, or `REDIS_URL=` left blank in .env, then falls
    back to the embedded default instead of crashing on an empty URL."""

    def __getitem__(self, name: str) -> str:
        value = os.environ[name]
        if value == "":
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name, value in os.environ.items() if value != "")

    def __len__(self) -> int:
        return sum(1 for _ in self)


env = environ.Env()
env.read_env(BASE_DIR / ".env") if (BASE_DIR / ".env").exists() else None
# Every env.<type>() below reads through this view; read_env (a classmethod)
# still writes the .env file's values to os.environ itself.
env.ENVIRON = NonEmptyEnviron()


def database_from_env(name: str, *, default: str) -> dict:
    """The DATABASES entry for the URL in `name`, refusing what Django cannot use.

    django-environ turns a scheme it does not know into ENGINE "nonsense" or
    no ENGINE at all, which only fails later as an obscure KeyError."""
    url = env.str(name, default=default)
    scheme = url.partition("://")[0] if "://" in url else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Engine not recognized": reported below
        try:
            config = env.db_url_config(url)
        except Exception as exc:
            raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from exc
    if config.get("ENGINE") not in set(environ.Env.DB_SCHEMES.values()):
        # The URL itself is not echoed: it may hold a password.
        problem = f"has the unknown scheme {scheme!r}" if scheme else "is not a URL"
        raise ImproperlyConfigured(
            f"{name} {problem}; use e.g. postgres://user:password@host:5432/name, "
            "or leave it unset (or empty) for the embedded SQLite database."
        )
    return config


# Runtime data of the embedded profile (uploads, the test database, the
# gateway's queue) lives under var/, which git ignores.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# The fallback key only exists so that `make run` and the tests work out of
# the box; deploy/env.example insists on a real one.
SECRET_KEY = env.str("SECRET_KEY", default="fleetops-insecure-development-key-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne first: its runserver serves ASGI (WebSockets) in development.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "apps.plant",
    "apps.audit",
    "apps.telemetry",
    "apps.control",
    "apps.workbooks",
    "apps.live",
    "apps.dashboard",
    "apps.edge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Innermost, so it sees the device API views' exceptions first.
    "fleetops.outage.DeviceApiErrorMiddleware",
]

ROOT_URLCONF = "fleetops.urls"
ASGI_APPLICATION = "fleetops.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "apps.live.context_processors.live",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database
# --------
# SQLite in WAL mode with IMMEDIATE transactions so the simulator's writes
# and page reads of `make run` do not trip over "database is locked".
DATABASES = {
    "default": database_from_env("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The test database is a file on SQLite so that the server processes the
# browser tests start (daphne, Celery) see the same data as the tests.
DATABASES["default"]["TEST"] = {
    "NAME": env.str(
        "TEST_DATABASE_NAME",
        default=str(VAR_DIR / "test.sqlite3")
        if DATABASES["default"]["ENGINE"].endswith("sqlite3")
        else None,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Auth
# ----
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Overridable only so test server processes can share the tests' fast hasher.
PASSWORD_HASHERS = env.list(
    "PASSWORD_HASHERS",
    default=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ],
)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"
FLEETOPS_DEMO_PASSWORD = env.str("FLEETOPS_DEMO_PASSWORD", default="fleetops-demo")

# Security
# --------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# No script reads the CSRF cookie: forms carry the hidden token and htmx
# sends the page's token as X-CSRFToken (hx-headers in base.html).
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The header the reverse proxy writes the client's address into (the last
# entry counts); empty means REMOTE_ADDR. Audit events record it as `host`.
CLIENT_ADDRESS_HEADER = env.str("CLIENT_ADDRESS_HEADER", default="")
if env.str("SECURE_PROXY_SSL_HEADER", default=""):
    SECURE_PROXY_SSL_HEADER = (env.str("SECURE_PROXY_SSL_HEADER"), "https")
# Every script carries the request's nonce; htmx is told (meta htmx-config)
# not to inject inline styles, so style-src needs no 'unsafe-inline'.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}

# Internationalisation: times are stored and audited in UTC.
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files
# ------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production runs collectstatic and turns the manifest on (deploy/env.example);
# the embedded profile serves straight from the finders.
STATIC_MANIFEST = env.bool("STATIC_MANIFEST", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
if not STATIC_MANIFEST:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# Channels
# --------
REDIS_URL = env.str("REDIS_URL", default="")
# redis-py 8 caps an async pool at 100 connections and times sockets out
# after 5 s, which makes channels-redis fail under load with
# MaxConnectionsError/TimeoutError; both limits are raised here on purpose.
CHANNEL_REDIS_MAX_CONNECTIONS = env.int("CHANNEL_REDIS_MAX_CONNECTIONS", default=2000)
CHANNEL_REDIS_SOCKET_TIMEOUT = env.float("CHANNEL_REDIS_SOCKET_TIMEOUT", default=30.0)
if REDIS_URL:
    # The pub/sub layer fans group messages out through Redis PUBLISH: it
    # was ~7x faster than RedisChannelLayer for 100-1000 members here and
    # never drops over-capacity group messages silently.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": CHANNEL_REDIS_MAX_CONNECTIONS,
                        "socket_timeout": CHANNEL_REDIS_SOCKET_TIMEOUT,
                        "socket_connect_timeout": 5,
                        "health_check_interval": 15,
                    }
                ],
                "prefix": env.str("CHANNEL_PREFIX", default="fleetops"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Live updates (apps/live): heartbeat and the per-socket send buffer.
LIVE_PING_INTERVAL = env.float("LIVE_PING_INTERVAL", default=5.0)
LIVE_PONG_TIMEOUT = env.float("LIVE_PONG_TIMEOUT", default=3.0)
# Messages queued for one socket before it counts as too slow and is closed
# (the browser reconnects and resyncs from a snapshot).
LIVE_OUTBOX_LIMIT = env.int("LIVE_OUTBOX_LIMIT", default=200)
# Bytes sent to one socket and not yet proven read (a pong echoing a ping
# proves everything before it): past this a reader that answers pings but
# never reads is closed (4429) instead of growing the server's memory.
LIVE_UNREAD_LIMIT = env.int("LIVE_UNREAD_LIMIT", default=8 * 1024 * 1024)
# The largest message a page may send (characters); a page sends a few hundred.
LIVE_MAX_FRAME = env.int("LIVE_MAX_FRAME", default=16 * 1024)
# Seconds between the hub's re-checks of who may still watch what; logout,
# membership and account changes re-check at once, this is the backstop.
LIVE_ACCESS_RECHECK = env.float("LIVE_ACCESS_RECHECK", default=15.0)

# Celery
# ------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or None) or None
# Without a broker the embedded profile runs tasks in-process at once.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 3}
# The embedded profile only (eager Celery, in-memory channel layer): run
# CELERY_BEAT_SCHEDULE on the serving process's loop (fleetops/beat_in_process.py),
# so lock expiry and its notices reach the sockets however the server is
# started (make run, runserver, daphne). Ignored with a broker.
BEAT_IN_PROCESS = env.bool("BEAT_IN_PROCESS", default=CELERY_TASK_ALWAYS_EAGER)
WORKBOOK_SWEEP_EVERY_SECONDS = env.float("WORKBOOK_SWEEP_EVERY_SECONDS", default=10.0)
CELERY_BEAT_SCHEDULE = {
    # Drops whole hourly partitions of history older than 24 h (rows on SQLite).
    "telemetry-prune": {"task": "apps.telemetry.tasks.telemetry_prune_task", "schedule": 300.0},
    # Parses and error reports whose worker was lost (heartbeat silent for
    # WORKBOOK_HEARTBEAT_STALE_SECONDS) are restarted, and uploads left queued
    # (broker down) sent again. Often, so a lost run is found in seconds;
    # a sweep nobody ran by the next one is dropped, not piled up.
    "workbooks-requeue-stuck": {
        "task": "apps.workbooks.tasks.workbooks_requeue_stuck",
        "schedule": WORKBOOK_SWEEP_EVERY_SECONDS,
        "options": {"expires": WORKBOOK_SWEEP_EVERY_SECONDS},
    },
    # Pending locks expire 10 s after the request; beat is their one clock
    # (the embedded profile runs this schedule inside the server: BEAT_IN_PROCESS).
    "control-locks-housekeeping": {
        "task": "apps.control.tasks.locks_housekeeping_task",
        "schedule": 2.0,
    },
}

# Telemetry ingest
# ----------------
TELEMETRY_MAX_BODY_BYTES = env.int("TELEMETRY_MAX_BODY_BYTES", default=8 * 1024 * 1024)
# Per gateway token bucket; a frame costs 1 plus 1 per reading.
# 1000 machines x 100 sensors at 1 Hz is ~101 000 units/s (a frame counts
# one unit plus one per reading); the default leaves 2.5x headroom and a
# 10 s burst so a gateway draining its offline queue is slowed, not failed.
TELEMETRY_RATE_PER_SECOND = env.int("TELEMETRY_RATE_PER_SECOND", default=250_000)
TELEMETRY_RATE_BURST = env.int("TELEMETRY_RATE_BURST", default=2_500_000)

# Workbook uploads (apps/workbooks)
# ---------------------------------
WORKBOOK_MAX_UPLOAD_BYTES = env.int("WORKBOOK_MAX_UPLOAD_BYTES", default=10 * 1024 * 1024)
# Data rows of one sheet; the error report is written by a task, not in a request.
WORKBOOK_MAX_ROWS = env.int("WORKBOOK_MAX_ROWS", default=100_000)
# Runs of one upload's parse (or report) before it is marked failed, and how
# long one may sit queued with no worker taking it before the beat sweeper
# sends it again (broker down at upload time; it may also be waiting its turn).
WORKBOOK_MAX_ATTEMPTS = env.int("WORKBOOK_MAX_ATTEMPTS", default=3)
WORKBOOK_STUCK_AFTER_SECONDS = env.int("WORKBOOK_STUCK_AFTER_SECONDS", default=600)
# A running parse or report beats every few seconds, slow or not; silent for
# this long, its worker is taken for lost (killed, out of memory, host gone)
# and the sweeper restarts it, up to WORKBOOK_MAX_ATTEMPTS runs in all.
WORKBOOK_HEARTBEAT_STALE_SECONDS = env.int("WORKBOOK_HEARTBEAT_STALE_SECONDS", default=30)
# Seconds a parse or report task may run: past the soft limit the upload
# shows a clean "took too long" message, past the hard one the worker is
# killed. The largest accepted sheet takes seconds.
WORKBOOK_TASK_SOFT_TIME_LIMIT = env.int("WORKBOOK_TASK_SOFT_TIME_LIMIT", default=240)
WORKBOOK_TASK_TIME_LIMIT = env.int("WORKBOOK_TASK_TIME_LIMIT", default=300)
# The zip package, checked before any XML is parsed (apps/workbooks/precheck.py):
# its parts, one part inflated (the shared strings have their own cap), the
# whole package inflated, and the compression ratio past which a part over
# 1 MB counts as a zip bomb.
WORKBOOK_MAX_ZIP_ENTRIES = env.int("WORKBOOK_MAX_ZIP_ENTRIES", default=1000)
WORKBOOK_MAX_ENTRY_BYTES = env.int("WORKBOOK_MAX_ENTRY_BYTES", default=100 * 1024 * 1024)
WORKBOOK_MAX_SHARED_STRINGS_BYTES = env.int(
    "WORKBOOK_MAX_SHARED_STRINGS_BYTES", default=50 * 1024 * 1024
)
WORKBOOK_MAX_UNCOMPRESSED_BYTES = env.int(
    "WORKBOOK_MAX_UNCOMPRESSED_BYTES", default=250 * 1024 * 1024
)
WORKBOOK_MAX_COMPRESSION_RATIO = env.int("WORKBOOK_MAX_COMPRESSION_RATIO", default=200)
# Uploaded files and their error reports: outside the web root and never
# under MEDIA_ROOT, so no URL can ever serve one back.
WORKBOOK_UPLOAD_DIR = Path(env.str("WORKBOOK_UPLOAD_DIR", default=str(VAR_DIR / "uploads")))

# Cache: the per-gateway rate bucket must be shared by every process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CHANNEL_PREFIX", default="fleetops"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Logging: one line per event on stderr, the way process managers want it.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env.str("LOG_LEVEL", default="INFO")},
    # runserver prints its own access log; its logger would print it twice.
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
