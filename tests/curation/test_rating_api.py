"""The rating page's endpoints: what a browser sends, and clear errors for what it should not."""

import json

import pytest
from django.test import Client

from curation.models import Vote
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


@pytest.fixture
def generation(tiny_config):
    return open_generation(tiny_config, samples=6, votes_needed=1)


@pytest.fixture
def rater_client(generation):
    rater = human_rater("alice")
    client = Client()
    client.force_login(rater.user)
    return client


def post(client, url, body):
    return client.post(url, data=json.dumps(body) if not isinstance(body, str) else body, content_type="application/json")


def test_next_vote_and_undo_round_trip(rater_client):
    data = rater_client.get("/rate/api/next?count=3").json()
    assert len(data["items"]) == 3 and data["counters"]["left"] == 6
    first = data["items"][0]
    response = post(rater_client, "/rate/api/vote", {"kind": "sample", "id": first["id"], "up": True, "request_id": "r-000001"})
    assert response.status_code == 200 and response.json()["counters"] == {"rated_today": 1}
    counters = rater_client.get("/rate/api/next?count=3").json()["counters"]
    assert counters == {"rated_today": 1, "left": 5, "left_by_generation": {str(first["generation_id"]): 5}}
    again = post(rater_client, "/rate/api/vote", {"kind": "sample", "id": first["id"], "up": True, "request_id": "r-000001"})
    assert again.status_code == 200 and Vote.objects.count() == 1
    undone = post(rater_client, "/rate/api/undo", {"request_id": "u-000001"}).json()
    assert undone["item"]["id"] == first["id"] and Vote.objects.count() == 0


def test_next_excludes_what_the_page_already_holds(rater_client):
    first = rater_client.get("/rate/api/next?count=3").json()["items"]
    exclude = ",".join(f"{i['kind']}:{i['id']}" for i in first)
    more = rater_client.get(f"/rate/api/next?count=3&exclude={exclude}").json()["items"]
    assert not {i["id"] for i in more} & {i["id"] for i in first}


@pytest.mark.parametrize(
    "body, message",
    [
        ("not json", "must be JSON"),
        ({"kind": "sample", "id": 1, "up": True}, "request_id"),
        ({"kind": "sample", "id": "abc", "up": True, "request_id": "r-000002"}, "must be a number"),
        ({"kind": "sample", "id": 999999, "up": True, "request_id": "r-000003"}, "no sample 999999"),
        ({"kind": "sample", "id": 1, "up": "yes", "request_id": "r-000004"}, "up (true) or down"),
        ({"kind": "banana", "id": 1, "up": True, "request_id": "r-000005"}, "unknown item kind"),
    ],
)
def test_a_malformed_vote_gets_a_clear_error_and_changes_nothing(rater_client, generation, body, message):
    if isinstance(body, dict) and body.get("id") == 1:
        body["id"] = generation.samples.first().pk
    response = post(rater_client, "/rate/api/vote", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Vote.objects.count() == 0


def test_grid_mode_records_a_page_of_votes_once(rater_client, generation):
    page = rater_client.get("/rate/grid/")
    items = page.context["items"]
    assert len(items) == 6
    form = {"request_id": page.context["request_id"]}
    for n, item in enumerate(items):
        form[f"item-{item['kind']}-{item['id']}"] = "down" if n == 0 else "up"
    assert rater_client.post("/rate/grid/", form).status_code == 302
    assert rater_client.post("/rate/grid/", form).status_code == 302  # resubmitted form
    assert Vote.objects.count() == 6 and Vote.objects.filter(up=False).count() == 1


def test_raters_reach_only_the_rating_pages_and_their_own_stats(rater_client):
    assert rater_client.get("/").url == "/rate/"
    assert rater_client.get("/rate/").status_code == 200
    assert rater_client.get("/rate/stats/").status_code == 200
    assert rater_client.get("/experiments/").status_code == 302  # staff only: sent to log in
    assert rater_client.get("/admin/").status_code == 302


def test_a_logged_in_user_who_is_not_a_rater_is_told_so(db):
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.create_user("visitor", password="pw"))
    response = client.get("/rate/")
    assert response.status_code == 403 and b"not a rater" in response.content


def test_staff_see_every_raters_stats_and_agreement(generation, rater_client):
    from django.contrib.auth import get_user_model

    from curation import rating

    bob = human_rater("bob")
    human_rater("carol")  # a rater with no votes yet is listed too
    for sample in generation.samples.all():
        rating.cast_vote(rater=bob, sample=sample, up=True)
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("boss", password="pw", is_staff=True))
    page = staff.get("/rate/stats/").content.decode()
    assert "bob" in page and "carol" in page and "Gwet AC1" in page
