"""Votes: one per rater and sample, changeable, refused with a reason when they cannot count."""

import pytest

from curation import pipeline
from curation.models import Generation, Vote
from curation.rating import cast_vote
from curation.services import CurationError
from tests.curation.factories import human_rater, started_experiment

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def rating_generation(tiny_config):
    config = tiny_config.replace(**{"rating.raters": "human", "generations": 1})
    _, generation = started_experiment(config)
    pipeline.run_generation(generation.pk)
    generation.refresh_from_db()
    assert generation.state == Generation.State.RATING  # waiting for people
    return generation


def test_voting_again_changes_the_vote_instead_of_adding_one(rating_generation):
    rater = human_rater()
    sample = rating_generation.samples.filter(to_rate=True).first()
    cast_vote(rater=rater, sample=sample, up=True, require_claim=False)
    cast_vote(rater=rater, sample=sample, up=True, require_claim=False)  # a double key press
    cast_vote(rater=rater, sample=sample, up=False, require_claim=False)
    assert list(Vote.objects.values_list("up", flat=True)) == [False]


def test_a_paused_rater_cannot_vote(rating_generation):
    rater = human_rater()
    rater.active = False
    rater.save()
    with pytest.raises(CurationError, match="paused"):
        cast_vote(rater=rater, sample=rating_generation.samples.first(), up=True)
    assert Vote.objects.count() == 0


def test_votes_on_a_closed_generation_are_refused(rating_generation):
    Generation.objects.filter(pk=rating_generation.pk).update(state=Generation.State.DONE)
    with pytest.raises(CurationError, match="closed"):
        cast_vote(rater=human_rater(), sample=rating_generation.samples.first(), up=True, require_claim=False)


def test_a_malformed_vote_is_refused(rating_generation):
    with pytest.raises(CurationError, match="up \\(true\\) or down"):
        cast_vote(rater=human_rater(), sample=rating_generation.samples.first(), up="yes")


def test_the_last_needed_human_vote_closes_rating_and_queues_curation(rating_generation, django_capture_on_commit_callbacks):
    raters = [human_rater(name) for name in ("a", "b", "c")]
    assert rating_generation.open_for_raters
    with django_capture_on_commit_callbacks() as queued:
        for sample in rating_generation.samples.filter(to_rate=True):
            for rater in raters:
                cast_vote(rater=rater, sample=sample, up=sample.index % 2 == 0, require_claim=False)
    rating_generation.refresh_from_db()
    assert rating_generation.state == Generation.State.CURATING and not rating_generation.open_for_raters
    assert len(queued) == 1  # the curation task, enqueued once
    generation = pipeline.run_step(rating_generation.pk)
    assert generation.state == Generation.State.DONE
    rated = generation.samples.filter(to_rate=True)
    assert all(s.vote_share == (1.0 if s.index % 2 == 0 else 0.0) for s in rated)
    assert all(s.accepted == (s.index % 2 == 0) for s in rated)
