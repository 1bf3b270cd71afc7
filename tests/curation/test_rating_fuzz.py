"""Property-based tests of the rating endpoints and the grid form: whatever a client sends (any JSON,
any bytes, any query string, any form fields), the answer is a clear 4xx or a success, never a
server error, and nothing is recorded that should not be."""

import json
import string

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.models import GoldAnswer, Vote, VoteEvent
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
vote_fields = st.fixed_dictionaries({}, optional={
    "token": json_values | st.text(alphabet=string.ascii_letters + "-_", min_size=1, max_size=40),
    "up": json_values,
    "request_id": json_values | st.text(alphabet=string.ascii_letters + string.digits + "-_ ", max_size=80),
    "kind": json_values, "id": json_values,
})


@pytest.fixture
def rater_client(tiny_config):
    open_generation(tiny_config, samples=6, votes_needed=1, gold_rate=0.3)
    client = Client()
    client.force_login(human_rater("alice").user)
    return client


def assert_clear_answer(response) -> None:
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400 and response["Content-Type"].startswith("application/json"):
        assert response.json()["error"]


@FUZZ
@given(body=vote_fields | json_values)
def test_any_json_vote_is_answered_clearly(rater_client, body):
    before = Vote.objects.count() + GoldAnswer.objects.count()
    response = rater_client.post("/rate/api/vote", data=json.dumps(body), content_type="application/json")
    assert_clear_answer(response)
    if response.status_code != 200:
        assert Vote.objects.count() + GoldAnswer.objects.count() == before  # a refusal records nothing


@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes_as_a_vote_or_an_undo_are_answered_clearly(rater_client, body):
    events = VoteEvent.objects.count()
    for url in ("/rate/api/vote", "/rate/api/undo"):
        assert_clear_answer(rater_client.post(url, data=body, content_type="application/json"))
    assert VoteEvent.objects.count() == events


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["count", "exclude", "x"]), st.text(max_size=60), max_size=3))
def test_any_query_string_for_the_next_items_is_answered_clearly(rater_client, query):
    assert_clear_answer(rater_client.get("/rate/api/next", query))


@FUZZ
@given(fields=st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=6))
def test_any_grid_form_is_answered_clearly(rater_client, fields):
    response = rater_client.post("/rate/grid/", fields)
    assert response.status_code in (302, 400), response.status_code
