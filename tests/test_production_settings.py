"""Production mode's hardened defaults, and the environment variables that change them: HTTPS on,
persistent database connections, sign-in lockout, token expiry and throttle, the upload bound."""

import json

from tests.test_settings import PRODUCTION, run

SHOW = ("import django, os, json; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
        "from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(json.dumps({'https': s.SECURE_SSL_REDIRECT if not s.DEBUG else None, 'hsts': getattr(s, 'SECURE_HSTS_SECONDS', 0),"
        "'conn_max_age': d['CONN_MAX_AGE'], 'health_checks': d['CONN_HEALTH_CHECKS'],"
        "'token_days': s.REST_KNOX['TOKEN_TTL'].days, 'token_rate': s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['api-token'],"
        "'failures': s.AXES_FAILURE_LIMIT, 'lockout_minutes': s.AXES_COOLOFF_TIME.total_seconds() / 60,"
        "'upload_mb': s.DATASET_UPLOAD_MAX_BYTES / 1024**2, 'validators': len(s.AUTH_PASSWORD_VALIDATORS),"
        "'cache': s.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}))")


def settings_with(**environment) -> dict:
    result = run(SHOW, **environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_defaults_are_hardened():
    assert settings_with(**PRODUCTION) == {
        "https": True, "hsts": 365 * 24 * 3600, "conn_max_age": 60, "health_checks": True,
        "token_days": 30, "token_rate": "10/minute", "failures": 5, "lockout_minutes": 15, "upload_mb": 200,
        "validators": 4, "cache": "LocMemCache",
    }


def test_the_environment_changes_them():
    changed = settings_with(**PRODUCTION, HTTPS="0", DATABASE_CONN_MAX_AGE="0", API_TOKEN_DAYS="7",
                            API_TOKEN_RATE="3/minute", LOGIN_FAILURE_LIMIT="10", LOGIN_LOCKOUT_MINUTES="60",
                            DATASET_UPLOAD_MAX_MB="50", CACHE_URL="redis://cache.internal:6379/1")
    assert changed == {
        "https": False, "hsts": 0, "conn_max_age": 0, "health_checks": True,
        "token_days": 7, "token_rate": "3/minute", "failures": 10, "lockout_minutes": 60, "upload_mb": 50,
        "validators": 4, "cache": "RedisCache",
    }


def test_the_embedded_default_opens_a_connection_per_request():
    embedded = settings_with()
    assert (embedded["conn_max_age"], embedded["health_checks"]) == (0, False)
