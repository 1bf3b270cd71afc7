"""One validation of the settings behind the form, the API and the command line: a bad value gets the
same message from each, and the API answers any JSON with 201 or 400, never a server error."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from curation.models import Experiment
from tests.curation.ml.test_experiment_config import changes as any_changes

from .test_experiment_admin import form_data

pytestmark = pytest.mark.django_db

SAMPLES_MESSAGE = "samples_per_generation must be a whole number from 1 to 100,000, not 1000000000"


@pytest.fixture
def staff_api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("chief", password="pw", is_staff=True))
    return client


def create(client, settings_, preset="digits-tiny"):
    # Encoded here, as any client might: NaN and Infinity included (strict JSON has neither; the server
    # must refuse them with a 400, not fail).
    body = json.dumps({"name": "bounded", "preset": preset, "settings": settings_})
    return client.post("/api/experiments/", data=body, content_type="application/json")


@pytest.mark.parametrize("settings_, message", [
    ({"dataset": 5}, "dataset must be a name of 1 to 100 characters, not 5"),
    ({"seed": -1}, "seed must be a whole number from 0 to 4,294,967,295, not -1"),
    ({"samples_per_generation": 10**9}, SAMPLES_MESSAGE),
    ({"rating.claim_minutes": 10**12}, "rating.claim_minutes must be a number from 1 to 1,440, not 1000000000000"),
    ({"rating": {"claim_minutes": "5"}}, 'rating.claim_minutes must be a number from 1 to 1,440, not "5" (text)'),
    ({"model.block_out_channels": "small"},
     'model.block_out_channels must be a list of 1 to 4 whole numbers from 1 to 1,024, not "small" (text)'),
])
def test_the_api_refuses_a_bad_setting_with_400_and_the_reason(staff_api, settings_, message):
    response = create(staff_api, settings_)
    assert response.status_code == 400, response.content
    assert response.json()["settings"] == [message]
    assert not Experiment.objects.exists()


def test_the_form_the_api_and_the_command_line_give_the_same_message(client, staff_api, tmp_path):
    client.force_login(get_user_model().objects.create_user("staff", password="pw", is_staff=True))
    page = client.post("/experiments/new/", form_data(samples_per_generation=10**9))
    assert page.status_code == 400 and SAMPLES_MESSAGE in page.content.decode()
    assert create(staff_api, {"samples_per_generation": 10**9}).json()["settings"] == [SAMPLES_MESSAGE]
    with pytest.raises(CommandError, match=SAMPLES_MESSAGE):
        call_command("run_experiment", "--output", str(tmp_path / "r.json"), "--set", "samples_per_generation=1000000000")
    with pytest.raises(CommandError, match="rating.claim_minutes must be a number from 1 to 1,440"):
        call_command("study", "--name", "bounded", "--generations", "1", "--seeds", "1",
                     "--output", str(tmp_path / "study"), "--set", "rating.claim_minutes=1e12")
    assert not Experiment.objects.exists()


def test_the_form_shows_each_bound_on_its_field(client):
    client.force_login(get_user_model().objects.create_user("staff", password="pw", is_staff=True))
    page = client.get("/experiments/new/?preset=digits-tiny").content.decode()
    assert 'name="samples_per_generation"' in page and 'max="100000"' in page and 'min="1"' in page
    assert "A whole number from 1 to 100,000." in page


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(any_changes, st.builds(dict)))
def test_any_settings_get_201_or_a_400_with_a_message_never_a_server_error(staff_api, settings_):
    response = create(staff_api, settings_)  # the test client raises any server error here
    assert response.status_code in (201, 400), (settings_, response.status_code, response.content)
    if response.status_code == 400:  # the settings refused, or (NaN, Infinity) the body is not strict JSON
        body = response.json()
        assert body.get("settings", [None])[0] or "JSON parse error" in body.get("detail", ""), body
    else:
        config = Experiment.objects.get(pk=response.json()["id"]).loop_config
        assert config.samples_per_generation <= 100_000


def test_null_reaches_the_settings_that_take_it_and_is_refused_by_the_others(staff_api):
    response = create(staff_api, {"continue_learning_rate": None, "dataset_size": None})
    assert response.status_code == 201, response.content
    refused = create(staff_api, {"auto_advance": None})
    assert refused.status_code == 400 and refused.json()["settings"] == ["auto_advance must be true or false, not null"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused_with_a_message(staff_api, value):
    response = create(staff_api, {"mix.real_fraction": value})
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]
