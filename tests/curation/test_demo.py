"""The demo command sets up users and experiments (without starting processes) and is repeatable."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from curation.models import Experiment, Generation, Rater

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_demo_sets_up_a_staff_user_a_rater_and_two_running_experiments(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    enqueued = []
    monkeypatch.setattr("curation.tasks.enqueue", enqueued.append)
    call_command("demo", "--no-serve")
    call_command("demo", "--no-serve")  # a second start creates nothing new
    assert get_user_model().objects.get(username="demo").is_staff
    assert not get_user_model().objects.get(username="rater").is_staff
    assert Rater.objects.filter(user__username__in=["demo", "rater"]).count() == 2
    assert Experiment.objects.filter(status="running").count() == 2
    assert Generation.objects.count() == 2 and len(enqueued) == 2
    assert (tmp_path / "demo-password-rater.txt").read_text().strip()
