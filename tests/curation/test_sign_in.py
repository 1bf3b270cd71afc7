"""Signing in: wrong passwords lock an account out from that address, on the login page and the token
endpoint; the token endpoint is throttled; API tokens are stored hashed, expire and can be revoked;
passwords must pass Django's validators."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


@pytest.fixture
def users():
    make = get_user_model().objects.create_user
    return make("rater", password=PASSWORD), make("chief", password=PASSWORD, is_staff=True)


def log_in(client, username, password, address="127.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in_as(client):
    return client.get("/rate/").wsgi_request.user.get_username()


def test_wrong_passwords_lock_the_account_out_from_that_address_with_a_clear_message(client, users):
    for attempt in range(1, settings.AXES_FAILURE_LIMIT):
        response = log_in(client, "rater", f"guess {attempt}")
        assert response.status_code == 200 and "didn't match" in response.content.decode()
    response = log_in(client, "rater", "one guess too many")
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed sign-ins" in page and f"{settings.AXES_FAILURE_LIMIT} wrong passwords" in page
    assert "15 minutes" in page

    # Locked: even the right password is refused from here, and nobody is signed in.
    response = log_in(client, "rater", PASSWORD)
    assert response.status_code == 429 and signed_in_as(client) == ""
    # Another account signs in from the same address, and this one from another address.
    assert log_in(client, "chief", PASSWORD).status_code == 302 and signed_in_as(client) == "chief"
    client.logout()
    assert log_in(client, "rater", PASSWORD, address="10.1.2.3").status_code == 302 and signed_in_as(client) == "rater"


def test_the_lockout_ends_after_the_cool_off(client, users):
    from axes.models import AccessAttempt

    for attempt in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "rater", f"guess {attempt}")
    assert log_in(client, "rater", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert log_in(client, "rater", PASSWORD).status_code == 302 and signed_in_as(client) == "rater"


def test_a_right_password_in_between_starts_the_count_again(client, users):
    for _ in range(3):
        for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
            assert log_in(client, "rater", f"guess {attempt}").status_code == 200
        assert log_in(client, "rater", PASSWORD).status_code == 302
        client.logout()


def test_a_forged_forwarded_for_header_does_not_dodge_the_lockout(client, users):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "rater", "password": f"guess {attempt}"},
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{attempt}")
    response = client.post("/accounts/login/", {"username": "rater", "password": PASSWORD},
                           HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 429


def issue(client, username, password, **extra):
    return client.post("/api/token/", {"username": username, "password": password}, format="json", **extra)


def test_the_token_endpoint_counts_wrong_passwords_towards_the_same_lockout(users):
    client = APIClient()
    for attempt in range(1, settings.AXES_FAILURE_LIMIT):
        response = issue(client, "rater", f"guess {attempt}")
        assert response.status_code == 400
        assert response.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    response = issue(client, "rater", "one guess too many")
    assert response.status_code == 429 and "Too many failed sign-ins" in response.json()["detail"]
    assert issue(client, "rater", PASSWORD).status_code == 429
    assert issue(client, "chief", PASSWORD).status_code == 200
    # ... and the login page knows it too.
    assert log_in(APIClient(), "rater", PASSWORD).status_code == 429


def test_the_token_endpoint_is_throttled_per_address():
    client = APIClient()
    count, _ = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api-token"].split("/")
    for _ in range(int(count)):
        assert client.post("/api/token/", {}, format="json").status_code == 400
    response = client.post("/api/token/", {}, format="json")
    assert response.status_code == 429 and "throttled" in response.json()["detail"]
    assert client.post("/api/token/", {}, format="json", REMOTE_ADDR="10.9.9.9").status_code == 400


def test_a_token_is_issued_stored_as_a_hash_used_and_revoked(users):
    client = APIClient()
    before = timezone.now()
    response = issue(client, "chief", PASSWORD)
    assert response.status_code == 200 and set(response.json()) == {"token", "expiry"}
    token = response.json()["token"]
    stored = AuthToken.objects.get(user=users[1])
    assert token not in (stored.digest, stored.token_key) and stored.digest != token
    expiry = stored.expiry
    assert before + timedelta(days=29, hours=23) < expiry <= timezone.now() + timedelta(days=30)
    assert response.json()["expiry"].startswith(expiry.strftime("%Y-%m-%dT%H:%M"))

    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/experiments/").status_code == 200
    assert client.post("/api/token/revoke/").status_code == 204
    assert client.get("/api/experiments/").status_code == 401
    assert not AuthToken.objects.exists()


def test_revoking_all_tokens_ends_every_one_of_the_account(users):
    first, second = (issue(APIClient(), "chief", PASSWORD).json()["token"] for _ in range(2))
    other = issue(APIClient(), "rater", PASSWORD).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.post("/api/token/revoke-all/").status_code == 204
    assert list(AuthToken.objects.values_list("user__username", flat=True)) == ["rater"]
    for token in (first, second):
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert client.get("/api/experiments/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {other}")
    assert client.get("/api/experiments/").status_code != 401


def test_an_expired_token_no_longer_works(users):
    token = issue(APIClient(), "chief", PASSWORD).json()["token"]
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/experiments/").status_code == 401


def test_a_token_that_is_not_text_is_refused_not_a_server_error(users, media_root):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token \xff\xfe")
    assert client.get("/api/experiments/").status_code == 401
    assert client.get("/media/experiments/1/grid.png").status_code == 403


def test_stored_files_answer_a_staff_token_until_it_is_revoked(users, media_root):
    (media_root / "experiments/1").mkdir(parents=True, exist_ok=True)
    (media_root / "experiments/1/grid.png").write_bytes(b"stored")
    token = issue(APIClient(), "chief", PASSWORD).json()["token"]
    client = APIClient()
    assert client.get("/media/experiments/1/grid.png", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/api/token/revoke/").status_code == 204
    assert client.get("/media/experiments/1/grid.png").status_code == 403


def test_revoking_needs_a_token():
    assert APIClient().post("/api/token/revoke/").status_code == 401


@pytest.mark.parametrize("password, reason", [
    ("short1!", "too short"),
    ("password123", "too common"),
    ("83920174651", "entirely numeric"),
    ("rater123", "too similar to the username"),
])
def test_weak_passwords_are_refused(users, password, reason):
    with pytest.raises(ValidationError, match=reason):
        validate_password(password, users[0])


def test_the_demo_passwords_pass_the_validators(settings, tmp_path):
    from curation.management.commands.demo import Command

    settings.VAR_DIR = tmp_path
    for username, staff in (("demo", True), ("rater", False)):
        password = Command()._ensure_user(username, staff=staff)
        validate_password(password, get_user_model().objects.get(username=username))
