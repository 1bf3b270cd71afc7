"""Settings, read from the environment in this one place (12-factor).

With no variables set, the embedded default runs: SQLite, media under ./var/media, and a Celery
broker on the local filesystem (kombu's filesystem transport: no server, one machine). Set
`REDIS_URL` (or `CELERY_BROKER_URL`) for Redis and `DATABASE_URL` for PostgreSQL.
"""

import importlib.util
import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# Every variable is parsed by django-environ: booleans (1/0, true/false, yes/no, on/off), lists
# (comma-separated), numbers and database URLs; a malformed value fails at start-up, naming it.
env = environ.Env()
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("OUROBOROS_VAR_DIR", default=str(BASE_DIR / "var")))


EMBEDDED_SECRET_KEY = "insecure-embedded-default-key-set-SECRET_KEY-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=EMBEDDED_SECRET_KEY)
# DEBUG=0 is production mode: the settings below tighten, and `manage.py check --deploy` passes.
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "curation",
]

MIDDLEWARE = [
    # Request counts and latencies for /metrics: first and (but for axes) last.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'ouroboros.sqlite3'}")}
# Production keeps each process's connection for a minute (checked before reuse) instead of opening
# one per request (issue 11 measured 58 votes/s without, 101 with, on PostgreSQL).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0 if DEBUG else 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = not DEBUG
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Lets psycopg prepare statements at all (Django turns it off). Only the rating path's hot statements
    # are prepared (curation.sql.cursor); Django's own cursors bind on the client and never are.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and a worker write to one SQLite file: wait for locks instead of failing.
    # IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue on the busy
    # timeout instead of failing with "database is locked"; WAL lets readers go on meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # Tests on a file, not in memory: a live server thread and the test then share it without
    # SQLite's table locks on shared in-memory databases. One file per test run (process id), so that
    # two runs in one checkout never delete each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-ouroboros-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before any password check
    "curation.authentication.UserWithRaterBackend",  # ModelBackend, with the user's rater in the same query
]

# --- Signing in ---------------------------------------------------------------------------------
# A username that gets its password wrong LOGIN_FAILURE_LIMIT times in a row from one address is
# locked out there for LOGIN_LOCKOUT_MINUTES (django-axes), on the login page and at /api/token/
# alike; the same account from elsewhere, and other accounts, still sign in.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "curation.sign_in.locked_out"
# A client's address is REMOTE_ADDR, unless TRUSTED_PROXY_COUNT proxies (a TLS terminator) stand in
# front and append to X-Forwarded-For: otherwise a client could forge that header to dodge a lockout.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Readiness (/healthz/ready) and metrics (/metrics) for a monitor without a staff account: sent as
# `Authorization: Bearer <token>`. Unset: staff only.
HEALTH_TOKEN = env.str("HEALTH_TOKEN", default="")

# --- Experiment tracking (optional) ------------------------------------------------------------
# With a tracking URI (an MLflow server, or a file store), each experiment is one MLflow run
# (curation/tracking.py); it needs `pip install -r requirements-mlflow.txt`.
MLFLOW_TRACKING_URI = env.str("MLFLOW_TRACKING_URI", default="")
MLFLOW_EXPERIMENT_NAME = env.str("MLFLOW_EXPERIMENT_NAME", default="ouroboros")
if MLFLOW_TRACKING_URI and importlib.util.find_spec("mlflow") is None:
    raise ImproperlyConfigured("MLFLOW_TRACKING_URI is set but MLflow is not installed: "
                               "pip install -r requirements-mlflow.txt (or unset MLFLOW_TRACKING_URI)")
AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if TRUSTED_PROXY_COUNT else ["REMOTE_ADDR"]
AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT or None
# API tokens (django-rest-knox): stored as hashes, expiring API_TOKEN_DAYS after issue, revocable;
# sent as `Authorization: Token <key>`.
REST_KNOX = {"TOKEN_TTL": timedelta(days=env.int("API_TOKEN_DAYS", default=30)), "AUTH_HEADER_PREFIX": "Token"}

# --- Request sizes ------------------------------------------------------------------------------
# Forms and JSON bodies are small (a vote, a grid of votes, an experiment's settings). Files come only
# from staff, in the dataset upload, bounded by DATASET_UPLOAD_MAX_MB; curation.uploads refuses
# anyone else's file, and any larger body, before a byte of it is stored.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024**2
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024**2  # larger files go to a temporary file while they arrive
DATASET_UPLOAD_MAX_BYTES = env.int("DATASET_UPLOAD_MAX_MB", default=200) * 1024**2
FILE_UPLOAD_HANDLERS = [
    "curation.uploads.StaffUploadsOnly",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Media (images, checkpoints, grids, exports): a local folder (MEDIA_ROOT), or with MEDIA_STORAGE=s3
# an S3-compatible bucket that web and workers on several machines share (curation/media.py).
MEDIA_STORAGE = env.str("MEDIA_STORAGE", default="filesystem")
# Where a worker keeps its copy of a checkpoint it trains or samples, when media lives in a bucket.
MEDIA_CACHE_ROOT = Path(env.str("MEDIA_CACHE_ROOT", default=str(VAR_DIR / "media-cache")))
if MEDIA_STORAGE == "filesystem":
    MEDIA_BACKEND = {"BACKEND": "curation.media.MediaStorage"}
elif MEDIA_STORAGE == "s3":
    # MEDIA_BUCKET_URL=s3://bucket/optional/prefix; credentials as boto3 reads them
    # (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role); AWS_S3_ENDPOINT_URL for a
    # store other than Amazon's (MinIO: http://minio:9000).
    bucket_url = env.url("MEDIA_BUCKET_URL", default=None)
    if bucket_url is None or bucket_url.scheme != "s3" or not bucket_url.netloc:
        raise ImproperlyConfigured("MEDIA_STORAGE=s3 needs MEDIA_BUCKET_URL=s3://BUCKET[/PREFIX], e.g. s3://ouroboros-media")
    from botocore.config import Config

    endpoint_url = env.str("AWS_S3_ENDPOINT_URL", default=None)
    MEDIA_BACKEND = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket_url.netloc,
        "location": bucket_url.path.strip("/"),
        "endpoint_url": endpoint_url,
        "region_name": env.str("AWS_S3_REGION_NAME", default=None),
        "file_overwrite": True,  # a step run twice writes the same names again
        "default_acl": None,  # private: files reach users through the app's permission checks
        "client_config": Config(
            # MinIO and most stores other than Amazon's name the bucket in the path, not the host name.
            s3={"addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="path" if endpoint_url else "auto")},
            # An unreachable store fails a request in seconds (and the readiness check says so), not minutes.
            connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3},
        ),
    }}
else:
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be filesystem or s3, not {MEDIA_STORAGE!r}")

STORAGES = {
    "default": MEDIA_BACKEND,
    # Production serves hashed, compressed names after `collectstatic`; elsewhere files as they are.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

if not DEBUG:
    if SECRET_KEY == EMBEDDED_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "DEBUG=0 (production) needs a SECRET_KEY of 50+ random characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    # HTTPS=0 only where nothing but plain HTTP reaches the server (a local trial of the compose
    # file); behind TLS (a proxy that sets X-Forwarded-Proto) leave it on.
    HTTPS = env.bool("HTTPS", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = HTTPS
    SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]  # container health checks speak plain HTTP
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
    SECURE_HSTS_SECONDS = 365 * 24 * 3600 if HTTPS else 0
    SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = HTTPS
    # Static files straight from the app server (gunicorn), compressed and cached; no CDN, no nginx.
    # (Under DEBUG, runserver serves them from the apps' folders.)
    MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                      "whitenoise.middleware.WhiteNoiseMiddleware")

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "curation.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Only the token endpoint is throttled (per client address): a scoped rate, not a global one.
    "DEFAULT_THROTTLE_RATES": {"api-token": env.str("API_TOKEN_RATE", default="10/minute")},
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}
# The token endpoint's throttle counts live in the cache: Redis when CACHE_URL names one (shared by
# every web process), else each process's own memory.
CACHE_URL = env.str("CACHE_URL", default="")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL} if CACHE_URL
          else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if CACHE_URL:
    # Sessions read from the shared cache and written through to the database: every request of a
    # signed-in rater loads one, and the cache answers it without a database query.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SPECTACULAR_SETTINGS = {
    "TITLE": "Ouroboros API",
    "DESCRIPTION": "Experiments, generations, samples, votes and exports of self-consuming training loops.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    for _folder in ("out", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    # A task whose worker died unacknowledged goes back to the queue after this many seconds. Keep it
    # longer than the longest task: a task still running past it is delivered twice (harmless, every
    # step is idempotent, but the work is done twice).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=6 * 3600)}
# Training and sampling go to the `gpu` queue, everything else to `default`. A worker without -Q
# takes both; `celery -A config worker -Q gpu` on a GPU machine and `-Q default` elsewhere split them.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = {"default": {}, "gpu": {}}
CELERY_TASK_ROUTES = {
    "curation.train_generation": {"queue": "gpu"},
    "curation.sample_generation": {"queue": "gpu"},
}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task still running at the hard limit is killed with its worker process. A minute before it (a tenth
# before, for short limits) the task is told (SoftTimeLimitExceeded) and fails its generation with the
# reason. Only the prefork pool (compose's workers) enforces limits; `--pool solo` (the demo) does not.
# The limits travel in each message, from the settings of the process that queues it (the web process,
# or a worker queuing the next step): give web and workers the same CELERY_TASK_TIME_LIMIT.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=4 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - min(60, max(1, CELERY_TASK_TIME_LIMIT // 10))
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A step started this many times without returning (each time its worker died: killed for memory, or
# at the hard limit) fails its generation with the reason instead of being delivered again.
OUROBOROS_STEP_MAX_STARTS = env.int("OUROBOROS_STEP_MAX_STARTS", default=3)
# The reconciler (Celery beat: `celery -A config beat`, or a worker's -B) re-queues every step with no
# progress and no message queued for OUROBOROS_STALL_SECONDS; running steps report progress far more
# often. A message that a newer one supersedes is dropped when it arrives, so nothing runs twice.
OUROBOROS_STALL_SECONDS = env.float("OUROBOROS_STALL_SECONDS", default=600)
OUROBOROS_RECONCILE_SECONDS = env.float("OUROBOROS_RECONCILE_SECONDS", default=60)
CELERY_BEAT_SCHEDULE = {
    "requeue-stalled-generations": {
        "task": "curation.requeue_stalled_generations",
        "schedule": OUROBOROS_RECONCILE_SECONDS,
        # Not worth keeping once the next one is due (a busy worker would otherwise find a pile).
        "options": {"expires": OUROBOROS_RECONCILE_SECONDS},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Ouroboros ----------------------------------------------------------------------------------
# "auto" trains and samples on CUDA when present, else on the CPU; "cpu" or "cuda" force one.
OUROBOROS_DEVICE = env.str("OUROBOROS_DEVICE", default="auto")
# Torch threads per worker process (0: torch's default).
OUROBOROS_TORCH_THREADS = env.int("OUROBOROS_TORCH_THREADS", default=0)

# LOG_FORMAT=json: one JSON object a line, with the experiment, generation, step and task a line
# belongs to as fields (curation.log_context), for a log collector; text otherwise.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "curation.log_context.ContextFilter"}},
    "formatters": {
        "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"],
                             **({"formatter": "json"} if LOG_FORMAT == "json" else {})}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# Celery workers log through the handler above (in JSON too) rather than replacing it with their own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
