"""A rater logs in and rates with the keyboard in a real browser; the database holds exactly the votes."""

import time

import pytest

from curation.models import Claim, Vote, VoteEvent
from tests.curation.factories import human_rater, open_generation

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, base_url, username, password, next_url):
    page.goto(f"{base_url}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def sign_in_rater(page, base_url, name):
    """A new rater with a password, signed in on the rating page."""
    rater = human_rater(name)
    rater.user.set_password("correct horse battery")
    rater.user.save()
    log_in(page, base_url, name, "correct horse battery", "/rate/")
    page.wait_for_url("**/rate/")
    return rater


def current_id(page) -> int:
    """The sample on screen: the page knows only its token; the database knows what it names."""
    page.wait_for_function("document.getElementById('current').dataset.token && document.getElementById('current-image').complete")
    return Claim.objects.get(token=page.get_attribute("#current", "data-token")).sample_id


def token_of(sample_id: int) -> str:
    return Claim.objects.get(sample_id=sample_id).token


def test_a_rater_votes_with_the_keyboard_undoes_and_uses_grid_mode(live_server, page, tiny_config):
    from django.contrib.auth import get_user_model

    # One generation: the last vote closes rating and curation runs in process (tests run Celery eagerly).
    generation = open_generation(tiny_config.replace(generations=1), samples=6, votes_needed=1)
    rater = human_rater("alice")
    user = rater.user
    user.set_password("correct horse battery")
    user.save()
    log_in(page, live_server.url, "alice", "correct horse battery", "/rate/")
    page.wait_for_url("**/rate/")
    page.wait_for_function("document.getElementById('left').textContent === '6'")

    a = current_id(page)
    page.keyboard.press("k")  # up
    b = current_id(page)
    assert b != a
    page.keyboard.press("j")  # down
    c = current_id(page)
    page.keyboard.press("ArrowUp")  # up...
    d = current_id(page)
    page.keyboard.press("u")  # ...undone: c comes back
    page.wait_for_function(f"document.getElementById('current').dataset.token === '{token_of(c)}'")
    page.keyboard.press("ArrowDown")  # c down instead
    page.wait_for_function(f"document.getElementById('current').dataset.token === '{token_of(d)}'")
    page.wait_for_function("document.getElementById('rated-today').textContent === '3'")
    assert page.text_content("#left") == "3"  # left in this generation, counted down as votes go
    assert dict(Vote.objects.values_list("sample_id", "up")) == {a: True, b: False, c: False}

    page.keyboard.press("g")  # grid mode: the three samples left
    page.wait_for_url("**/rate/grid/")
    cells = page.locator(".cell")
    assert cells.count() == 3
    first_key = cells.nth(0).get_attribute("data-key")
    cells.nth(0).locator("button").click()  # toggled down
    assert cells.nth(0).locator("button").get_attribute("aria-pressed") == "true"
    # The page's POST records the votes, and the last one runs curation in process: allow for it.
    with page.expect_navigation(url="**/rate/grid/", timeout=180_000):
        page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing left to rate")

    votes = dict(Vote.objects.values_list("sample_id", "up"))
    grid_first = Claim.objects.get(token=first_key).sample_id
    assert len(votes) == 6 and set(votes) == set(generation.samples.values_list("pk", flat=True))
    assert {k for k, up in votes.items() if not up} == {b, c, grid_first}
    assert Vote.objects.filter(rater=rater).count() == 6
    assert VoteEvent.objects.filter(action="undo").count() == 1
    assert get_user_model().objects.get(username="alice").rater == rater
    generation.refresh_from_db()
    assert generation.state == "done"  # the last vote closed rating and curation ran


def test_the_page_retries_server_errors_shows_votes_waiting_and_skips_refusals(live_server, page, tiny_config):
    open_generation(tiny_config.replace(generations=1), samples=6, votes_needed=1)
    sign_in_rater(page, live_server.url, "alice")
    failures = {"left": 2}

    def flaky(route):
        if failures["left"] > 0:  # the server fails twice, then takes the vote
            failures["left"] -= 1
            route.fulfill(status=503, body="<h1>Service Unavailable</h1>", content_type="text/html")
        else:
            route.continue_()

    page.route("**/rate/api/vote", flaky)
    first = current_id(page)
    page.keyboard.press("k")
    page.wait_for_function("document.getElementById('status').textContent.includes('waiting')")
    page.wait_for_function("document.getElementById('rated-today').textContent === '1'", timeout=20_000)
    assert list(Vote.objects.values_list("sample_id", "up")) == [(first, True)]  # sent once it could be, once only
    assert "waiting" not in page.text_content("#status")

    page.unroute("**/rate/api/vote")
    page.route("**/rate/api/vote", lambda route: route.fulfill(
        status=409, content_type="application/json",
        body='{"error": "this sample already has all the votes it needs; moving on", "skip": true}'))
    second = current_id(page)
    page.keyboard.press("j")
    page.wait_for_function("document.getElementById('status').textContent.includes('moving on')")
    assert current_id(page) != second  # moved on, and nothing retried
    page.unroute("**/rate/api/vote")
    page.keyboard.press("k")  # later votes are not blocked behind the refused one
    page.wait_for_function("document.getElementById('rated-today').textContent === '2'", timeout=20_000)
    assert Vote.objects.count() == 2 and not Vote.objects.filter(sample_id=second).exists()


def test_a_rater_skips_with_the_keyboard_and_the_key_list_names_every_key(live_server, page, tiny_config):
    open_generation(tiny_config.replace(generations=1), samples=4, votes_needed=1)
    sign_in_rater(page, live_server.url, "sam")
    page.wait_for_function("document.getElementById('left').textContent === '4'")

    skipped = current_id(page)
    page.keyboard.press("s")  # skip: the next item, no vote
    page.wait_for_function(f"document.getElementById('current').dataset.token !== '{token_of(skipped)}'")
    deadline = time.monotonic() + 30  # the skip is sent in the background: wait for the server to have it
    while not Claim.objects.get(sample_id=skipped).skipped:
        assert time.monotonic() < deadline, "the skip never reached the server"
        time.sleep(0.1)
    assert not Vote.objects.exists()
    assert page.text_content("#left") == "4"  # still needs its vote, from someone else

    page.keyboard.press("?")  # the key list
    dialog = page.locator("#keys")
    assert dialog.is_visible()
    for key in ("k", "j", "s", "u", "g", "?"):
        assert dialog.locator(f"kbd:text-is('{key}')").count() == 1, key
    page.keyboard.press("k")  # keys do nothing while the list is up
    assert not Vote.objects.exists()
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
