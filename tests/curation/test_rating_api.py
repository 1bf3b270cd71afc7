"""The rating page's endpoints: what a browser sends, and clear errors for what it should not."""

import json

import pytest
from django.test import Client

from curation.models import Claim, Vote
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
    response = post(rater_client, "/rate/api/vote", {"token": first["token"], "up": True, "request_id": "r-000001"})
    assert response.status_code == 200 and response.json()["counters"] == {"rated_today": 1}
    counters = rater_client.get("/rate/api/next?count=3").json()["counters"]
    assert counters == {"rated_today": 1, "left": 5, "left_by_generation": {str(first["generation_id"]): 5}}
    again = post(rater_client, "/rate/api/vote", {"token": first["token"], "up": True, "request_id": "r-000001"})
    assert again.status_code == 200 and Vote.objects.count() == 1
    undone = post(rater_client, "/rate/api/undo", {"request_id": "u-000001"}).json()
    assert undone["item"]["token"] == first["token"] and Vote.objects.count() == 0


def test_a_skipped_item_goes_to_the_other_raters_and_never_back_to_the_skipper(rater_client, generation):
    items = rater_client.get("/rate/api/next?count=6").json()["items"]
    skipped = items[0]
    assert post(rater_client, "/rate/api/skip", {"token": skipped["token"]}).json() == {"ok": True}
    assert post(rater_client, "/rate/api/skip", {"token": skipped["token"]}).status_code == 200  # twice: no change
    claim = Claim.objects.get(token=skipped["token"])
    assert claim.skipped and not Vote.objects.exists()
    # The skipper holds the other five; asked again (holding nothing on the page), never the skipped one.
    again = rater_client.get("/rate/api/next?count=6").json()["items"]
    assert skipped["token"] not in {i["token"] for i in again} and len(again) == 5
    other = Client()
    other.force_login(human_rater("bob").user)
    theirs = other.get("/rate/api/next?count=6").json()["items"]
    assert [Claim.objects.get(token=i["token"]).sample_id for i in theirs] == [claim.sample_id]  # released for bob
    # Refused: an item voted on (undo it instead), a token never served, a malformed body.
    voted = again[0]
    post(rater_client, "/rate/api/vote", {"token": voted["token"], "up": True, "request_id": "r-000009"})
    refused = post(rater_client, "/rate/api/skip", {"token": voted["token"]})
    assert refused.status_code == 400 and "undo the vote" in refused.json()["error"]
    assert post(other, "/rate/api/skip", {"token": voted["token"]}).status_code == 400
    assert post(rater_client, "/rate/api/skip", {"token": 5}).status_code == 400
    assert post(rater_client, "/rate/api/skip", "[").status_code == 400
    assert rater_client.get("/rate/api/skip").status_code == 405


def test_an_items_image_is_served_by_its_token_to_its_rater_alone(rater_client, generation):
    item = rater_client.get("/rate/api/next?count=1").json()["items"][0]
    image = rater_client.get(item["image_url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")
    other = Client()
    other.force_login(human_rater("bob").user)
    assert other.get(item["image_url"]).status_code == 404
    assert rater_client.get("/rate/image/not-a-token").status_code == 404


def test_next_excludes_what_the_page_already_holds(rater_client):
    first = rater_client.get("/rate/api/next?count=3").json()["items"]
    exclude = ",".join(i["token"] for i in first)
    more = rater_client.get(f"/rate/api/next?count=3&exclude={exclude}").json()["items"]
    assert len(more) == 3 and not {i["token"] for i in more} & {i["token"] for i in first}
    # Without the exclusion (a reloaded page), the items it holds come back first.
    assert [i["token"] for i in rater_client.get("/rate/api/next?count=3").json()["items"]] == [i["token"] for i in first]


@pytest.mark.parametrize(
    "body, message",
    [
        ("not json", "must be a JSON object"),
        (b"\xff\xfe{", "must be a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "over 4096 bytes"),
        ("[" * 2000 + "]" * 2000, "must be a JSON object"),
        ({"token": "T", "up": True}, "request_id"),
        ({"token": "T", "up": True, "request_id": "short"}, "request_id"),
        ({"token": "T", "up": True, "request_id": "has spaces in it"}, "request_id"),
        ({"token": 12, "up": True, "request_id": "r-000002"}, "token must be"),
        ({"token": "nope", "up": True, "request_id": "r-000003"}, "no item with this token"),
        ({"token": "T", "up": "yes", "request_id": "r-000004"}, "up (true) or down"),
        ({"token": ["T"], "up": True, "request_id": "r-000005"}, "token must be"),
    ],
)
def test_a_malformed_vote_gets_a_clear_error_and_changes_nothing(rater_client, body, message):
    token = rater_client.get("/rate/api/next?count=1").json()["items"][0]["token"]
    if isinstance(body, dict) and body.get("token") == "T":
        body["token"] = token
    response = rater_client.post("/rate/api/vote", data=json.dumps(body) if isinstance(body, dict) else body,
                                 content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Vote.objects.count() == 0


@pytest.mark.parametrize("query", ["count=abc", "count=", "exclude=sample:12", "exclude=" + ",".join(["t"] * 101),
                                   "exclude=%C2%B2", "count=99999999999999999999999"])
def test_a_malformed_fetch_gets_a_clear_error_or_a_safe_answer(rater_client, query):
    response = rater_client.get(f"/rate/api/next?{query}")
    assert response.status_code in (200, 400)
    assert "error" in response.json() if response.status_code == 400 else "items" in response.json()


def test_grid_mode_records_a_page_of_votes_once(rater_client, generation):
    page = rater_client.get("/rate/grid/")
    items = page.context["items"]
    assert len(items) == 6
    form = {"request_id": page.context["request_id"]}
    for n, item in enumerate(items):
        form[f"item-{item['token']}"] = "down" if n == 0 else "up"
    assert rater_client.post("/rate/grid/", form).status_code == 302
    assert rater_client.post("/rate/grid/", form).status_code == 302  # resubmitted form
    assert Vote.objects.count() == 6 and Vote.objects.filter(up=False).count() == 1


def test_a_grid_page_without_its_request_id_is_refused(rater_client, generation):
    items = rater_client.get("/rate/grid/").context["items"]
    response = rater_client.post("/rate/grid/", {f"item-{items[0]['token']}": "up"})
    assert response.status_code == 400 and "request_id" in response.content.decode()
    assert Vote.objects.count() == 0


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
        rating.cast_vote(rater=bob, sample=sample, up=True, require_claim=False)
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("boss", password="pw", is_staff=True))
    page = staff.get("/rate/stats/").content.decode()
    assert "bob" in page and "carol" in page and "Gwet AC1" in page


def test_fetching_the_next_items_takes_at_most_eight_queries(tiny_config):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    open_generation(tiny_config, samples=40, votes_needed=2, gold_rate=0.5)
    clients = []
    for name in ("bob", "carol", "dave"):
        client = Client()
        client.force_login(human_rater(name).user)
        clients.append(client)
    clients[1].get("/rate/api/next?count=8")  # others hold claims, as under load
    for client in (clients[0], clients[2], clients[0]):
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/rate/api/next?count=8")
        assert response.status_code == 200 and response.json()["items"]
        # Statements, not transaction control (the test's savepoints; SQLite's BEGIN IMMEDIATE).
        statements = [q["sql"] for q in captured.captured_queries
                      if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN"))]
        assert len(statements) <= 8, "\n".join(statements)
