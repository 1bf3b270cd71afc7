"""Small builders for curation tests."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from curation.models import Rater
from curation.services import create_experiment, start_experiment


def started_experiment(config, name="test"):
    experiment = create_experiment(name=name, config=config)
    generation = start_experiment(experiment=experiment)
    return experiment, generation


def human_rater(name="alice") -> Rater:
    user = get_user_model().objects.create_user(username=name, password="pw-" + name)
    return Rater.objects.create(name=name, kind=Rater.Kind.HUMAN, user=user)
