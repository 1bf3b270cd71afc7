"""Staff watch a study in a real browser: the page's progress follows the experiments' generations
without a reload, and offers the newer figures."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from curation.models import Generation
from curation.studies import create_study
from tests.browser.test_rating_page import log_in
from tests.curation.test_study import tiny_plan

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def finish(generation_filter, fd: float = 1.0) -> None:
    for generation in Generation.objects.filter(**generation_filter):
        generation.state, generation.metrics = Generation.State.DONE, {
            "fd": fd + generation.index, "precision": 0.9, "recall": 0.9, "coverage": 0.9, "memorization": 0.05}
        generation.save(update_fields=["state", "metrics"])


def test_staff_watch_a_studys_progress_live(live_server, page):
    study = create_study(name="watched live", plan=tiny_plan())
    for experiment in study.experiments.all():
        for index in (0, 1):
            Generation.objects.get_or_create(experiment=experiment, index=index)
    finish({"experiment__study": study, "index": 0})
    get_user_model().objects.create_user("boss", password="staff password 1", is_staff=True)
    log_in(page, live_server.url, "boss", "staff password 1", f"/studies/{study.pk}/")
    expect(page.locator("#study-counts")).to_contain_text("4 / 8 generations done")
    assert page.is_hidden("#newer-figures")
    page.wait_for_load_state("networkidle")  # its plots served before the test's database goes
    page.evaluate("window.stillHere = true")

    finish({"experiment__study": study, "index": 1, "experiment__study_seed": 0})
    # The bar and the counts follow without a reload, and the newer figures are offered.
    page.wait_for_function("window.stillHere && document.getElementById('study-bar').value === 6", timeout=20_000)
    expect(page.locator("#study-counts")).to_contain_text("6 / 8 generations done")
    expect(page.locator("#newer-figures")).to_be_visible()
    page.click("#newer-figures")
    expect(page.locator("#study-counts")).to_contain_text("6 / 8 generations done")
    assert page.evaluate("window.stillHere") is None  # a new page, with the figures as they stand now
    assert page.is_hidden("#newer-figures")
    page.wait_for_load_state("networkidle")  # its plots served before the test's database goes
