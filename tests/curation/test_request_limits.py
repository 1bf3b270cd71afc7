"""Request bodies are bounded, and a file is stored only when staff upload a dataset within the limit:
anyone else's upload is refused before a byte of it is kept, even where the CSRF check reads the body
before the view's permission check."""

import io
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler
from django.test import Client
from PIL import Image

from curation.models import RealDataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored_chunks(monkeypatch):
    """Every chunk of an uploaded file that reaches the handlers that keep it (memory or a temp file)."""
    chunks = []
    for handler in (MemoryFileUploadHandler, TemporaryFileUploadHandler):
        original = handler.receive_data_chunk

        def spy(self, raw_data, start, original=original):
            chunks.append(len(raw_data))
            return original(self, raw_data, start)

        monkeypatch.setattr(handler, "receive_data_chunk", spy)
    return chunks


def digits_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("0", "1"):
            image = io.BytesIO()
            Image.new("L", (8, 8), 100).save(image, format="PNG")
            archive.writestr(f"{label}/a.png", image.getvalue())
    return buffer.getvalue()


def csrf_client(user=None) -> tuple[Client, str]:
    """A client whose POSTs pass Django's real CSRF check, which reads the body (and so any upload)."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get("/accounts/login/")
    return client, client.cookies["csrftoken"].value


def upload(client, token, archive: bytes, path="/datasets/"):
    return client.post(path, {"csrfmiddlewaretoken": token, "name": "uploaded",
                              "archive": io.BytesIO(archive)})


@pytest.mark.parametrize("who", ["anonymous", "signed-in non-staff"])
def test_an_upload_from_anyone_but_staff_is_refused_without_being_stored(who, stored_chunks):
    user = None if who == "anonymous" else get_user_model().objects.create_user("rater", password="x")
    client, token = csrf_client(user)
    response = upload(client, token, b"x" * (3 * 1024**2))  # past the in-memory size: it would go to disk
    assert response.status_code == 302 and "login" in response["Location"]
    assert stored_chunks == [] and not RealDataset.objects.filter(name="uploaded").exists()


def test_a_file_posted_anywhere_else_is_not_stored_either(stored_chunks):
    client, token = csrf_client()
    response = upload(client, token, b"x" * 4096, path="/accounts/login/")
    assert response.status_code == 200 and stored_chunks == []


def test_staff_upload_a_dataset_within_the_limit(stored_chunks):
    staff = get_user_model().objects.create_user("chief", password="x", is_staff=True)
    client, token = csrf_client(staff)
    response = upload(client, token, digits_zip())
    assert response.status_code == 302 and stored_chunks
    assert RealDataset.objects.get(name="uploaded").image_count == 2


def test_a_staff_upload_over_the_limit_is_refused_with_the_limit_before_it_is_read(settings, stored_chunks):
    settings.DATASET_UPLOAD_MAX_BYTES = 1024**2
    staff = get_user_model().objects.create_user("chief", password="x", is_staff=True)
    client, token = csrf_client(staff)
    response = upload(client, token, b"x" * (1024**2 + 1))
    assert response.status_code == 413
    assert "larger than the 1 MiB limit (DATASET_UPLOAD_MAX_MB)" in response.content.decode()
    assert stored_chunks == [] and not RealDataset.objects.filter(name="uploaded").exists()


def test_form_bodies_are_bounded_in_size_and_fields(client):
    from django.conf import settings

    too_big = client.post("/accounts/login/", "a=" + "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                          content_type="application/x-www-form-urlencoded")
    assert too_big.status_code == 400
    too_many = client.post("/accounts/login/", "&".join(f"f{n}=1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)),
                           content_type="application/x-www-form-urlencoded")
    assert too_many.status_code == 400


def test_an_api_json_body_over_the_bound_is_refused_unparsed():
    from django.conf import settings
    from rest_framework.test import APIClient

    body = '{"username": "%s", "password": "x"}' % ("u" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    assert APIClient().post("/api/token/", body, content_type="application/json").status_code == 400
    assert APIClient().post("/api/token/", '{"username": "u"}', content_type="application/json").json() == {
        "password": ["This field is required."]}
