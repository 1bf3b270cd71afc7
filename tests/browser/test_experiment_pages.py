"""Staff create an experiment in a real browser, start it, watch its progress live and see its metrics."""

import time

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from curation.models import Experiment, Generation
from tests.browser.test_rating_page import log_in
from tests.curation.factories import started_experiment

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_create_start_and_watch_an_experiment(live_server, page, worker):
    get_user_model().objects.create_user("boss", password="staff password 1", is_staff=True)
    log_in(page, live_server.url, "boss", "staff password 1", "/experiments/")
    # The exact address: a glob like **/experiments/ also matches the login page's ?next=/experiments/.
    expect(page).to_have_url(f"{live_server.url}/experiments/")
    page.click("text=New experiment")
    page.select_option("#preset", "digits-tiny")
    page.click("form.preset button")
    page.wait_for_url("**preset=digits-tiny")

    # A bad combination first: the form says why and keeps what was typed.
    page.fill("#id_name", "browser loop")
    page.select_option("#id_mix__loop", "fully-synthetic")
    page.click("button.primary")
    assert "a fully-synthetic loop trains on no real data" in page.inner_text(".errorlist")
    assert page.input_value("#id_name") == "browser loop"
    page.fill("#id_mix__real_fraction", "0")
    page.fill("#id_generations", "2")
    page.fill("#id_train__steps", "600")  # long enough to watch the bar move
    # Creating fits the real-data models (for the FD floor) inside the request: seconds on an idle
    # machine, over a minute on a loaded one, and the click waits for the page that follows.
    page.click("button.primary", timeout=180_000)
    page.wait_for_selector("text=as a draft")
    experiment = Experiment.objects.get(name="browser loop")
    assert experiment.loop_config.mix.loop == "fully-synthetic" and experiment.status == "draft"
    assert page.is_disabled("button[data-action=pause]")

    page.click("button[data-action=start]")
    page.wait_for_selector("text=Started")
    page.wait_for_selector(".timeline li[data-index='0'] .state-training", timeout=60_000)
    # Progress moves without a page reload: a marker set now survives while the bar advances.
    page.evaluate("window.stillHere = true")
    before = page.eval_on_selector(".timeline li[data-index='0'] progress", "p => p.value")
    page.wait_for_function(
        f"window.stillHere && document.querySelector(\".timeline li[data-index='0'] progress\").value > {before} + 0.05",
        timeout=60_000,
    )
    assert "training" in page.inner_text(".timeline li[data-index='0'] .message")

    deadline = time.monotonic() + 300
    while experiment.status not in ("done", "failed") and time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        time.sleep(1)
        experiment.refresh_from_db()
    states = [(g.index, g.state, g.progress_message, g.error) for g in experiment.generations.all()]
    assert experiment.status == "done", (experiment.status, states)
    # The page refreshes itself when the experiment finishes (it polls progress.json); wait for that
    # instead of reloading: a reload of ours while the page's own is in flight aborts one of them.
    expect(page.locator("#experiment-status")).to_have_text("done", timeout=60_000)
    page.wait_for_function("document.getElementById('metric-plot').complete && document.getElementById('metric-plot').naturalWidth > 0")
    rows = page.locator("#generations tr")
    assert rows.count() == 2
    fd = float(rows.nth(1).locator("td").nth(1).inner_text())
    assert fd > 0
    assert page.is_disabled("button[data-action=start]") and page.is_enabled("button[data-action=advance]")

    page.click(".timeline li[data-index='1'] a")
    page.wait_for_selector("text=Training set")
    assert "Discriminator" in page.content()
    page.wait_for_function("[...document.querySelectorAll('.grids img')].every(i => i.complete && i.naturalWidth > 0)")


@pytest.fixture
def staff_on_a_running_experiment(live_server, page, tiny_config):
    """A staff member logged in, and an experiment started (G0 pending) with no worker to move it."""
    get_user_model().objects.create_user("boss", password="staff password 1", is_staff=True)
    log_in(page, live_server.url, "boss", "staff password 1", "/experiments/")
    expect(page).to_have_url(f"{live_server.url}/experiments/")
    experiment, generation = started_experiment(tiny_config)
    return f"{live_server.url}/experiments/{experiment.pk}/", generation


def test_a_change_between_rendering_and_the_first_poll_still_refreshes_the_page(page, staff_on_a_running_experiment):
    url, generation = staff_on_a_running_experiment
    # G0 starts training after the page is rendered and before its first poll is answered.
    def start_training_first(route):
        Generation.objects.filter(pk=generation.pk).update(state=Generation.State.TRAINING)
        route.continue_()

    page.route("**/progress.json", start_training_first, times=1)
    page.goto(url)
    expect(page.locator(".timeline li[data-index='0'] .state")).to_have_text("training")


def test_the_page_does_not_refresh_over_export_choices_not_sent(page, staff_on_a_running_experiment):
    url, generation = staff_on_a_running_experiment
    page.goto(url)
    page.evaluate("window.stillHere = true")
    page.select_option("#id_format", "manifest")
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.TRAINING)
    expect(page.locator("#newer-state")).to_be_visible()
    assert page.evaluate("window.stillHere") and page.input_value("#id_format") == "manifest"
