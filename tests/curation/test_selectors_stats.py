"""Rater statistics: the same figures however many raters, in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from curation import rating
from curation.models import Rater
from curation.selectors import rater_stats
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


def test_agreement_and_counts_per_rater(tiny_config):
    generation = open_generation(tiny_config, samples=4, votes_needed=3)
    samples = list(generation.samples.order_by("index"))
    alice, bob, carol = human_rater("alice"), human_rater("bob"), human_rater("carol")
    human_rater("dave")  # no votes: listed with nothing to compare
    for sample in samples:
        rating.cast_vote(rater=alice, sample=sample, up=True, require_claim=False)
        rating.cast_vote(rater=bob, sample=sample, up=True, require_claim=False)
        rating.cast_vote(rater=carol, sample=sample, up=sample.index == 0, require_claim=False)
    rows = {row["rater"].name: row for row in rater_stats(Rater.objects.order_by("name"))}
    assert rows["alice"]["votes"] == 4 and rows["alice"]["agreement_with_majority"] == 1.0
    # carol against alice and bob (both up): she agrees on sample 0 alone; the others split 1:1 for no one.
    assert rows["carol"]["agreement_with_majority"] == 0.25 and rows["carol"]["compared_votes"] == 4
    assert rows["dave"]["votes"] == 0 and rows["dave"]["agreement_with_majority"] is None
    assert rows["alice"]["gold_answers"] == 0 and rows["alice"]["median_seconds_per_vote"] is not None


def test_the_query_count_does_not_grow_with_the_raters(tiny_config):
    generation = open_generation(tiny_config, samples=3, votes_needed=12)
    for n in range(12):
        rater = human_rater(f"r{n}")
        for sample in generation.samples.all():
            rating.cast_vote(rater=rater, sample=sample, up=n % 2 == 0, require_claim=False)
    counts = []
    for how_many in (2, 12):
        with CaptureQueriesContext(connection) as captured:
            rows = rater_stats(Rater.objects.order_by("name")[:how_many])
        assert len(rows) == how_many
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1] <= 5
