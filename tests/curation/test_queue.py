"""The rating queue: distinct raters, no repeats, quotas, short claims, gold items, undo, idempotency."""

import datetime

import numpy as np
import pytest
from django.utils import timezone

from curation import pipeline, rating
from curation.models import Claim, GoldAnswer, Sample, Vote, VoteEvent
from curation.services import CurationError
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


@pytest.fixture
def generation(tiny_config):
    return open_generation(tiny_config, samples=12, votes_needed=2)


def ids(items):
    return [i["id"] for i in items if i["kind"] == "sample"]


def vote_all(rater, items, up=True):
    for item in items:
        rating.cast(rater=rater, kind=item["kind"], item_id=item["id"], up=up)


def test_a_rater_never_sees_a_sample_twice(generation):
    alice = human_rater("alice")
    seen = []
    while items := rating.next_items(rater=alice, count=5):
        seen += ids(items)
        vote_all(alice, items)
    assert sorted(seen) == sorted(generation.samples.values_list("pk", flat=True))
    assert len(seen) == len(set(seen))


def test_each_sample_gets_exactly_the_votes_it_needs_from_distinct_raters(generation):
    raters = [human_rater(name) for name in ("a", "b", "c", "d")]
    for _ in range(10):
        for rater in raters:
            vote_all(rater, rating.next_items(rater=rater, count=3))
    per_sample = {s.pk: s.votes.count() for s in generation.samples.all()}
    assert set(per_sample.values()) == {2}
    assert Vote.objects.values("rater", "sample").distinct().count() == Vote.objects.count()


def test_concurrent_raters_do_not_pile_onto_a_sample_beyond_its_need(generation):
    a, b, c = (human_rater(n) for n in "abc")
    first = ids(rating.next_items(rater=a, count=4))
    second = ids(rating.next_items(rater=b, count=4))
    third = ids(rating.next_items(rater=c, count=4))
    assert first == second  # two votes needed: two raters may hold the same samples
    assert not set(third) & set(first)  # the third gets others


def test_asking_again_returns_the_raters_own_claims_first(generation):
    alice = human_rater("alice")
    assert ids(rating.next_items(rater=alice, count=3)) == ids(rating.next_items(rater=alice, count=3))


def test_claims_expire_in_minutes_and_free_their_samples(generation):
    a, b, c = (human_rater(n) for n in "abc")
    held = ids(rating.next_items(rater=a, count=12))
    ids(rating.next_items(rater=b, count=12))
    assert rating.next_items(rater=c, count=12) == []  # everything is held by two raters
    later = timezone.now() + datetime.timedelta(minutes=5, seconds=1)
    freed = ids(rating.next_items(rater=c, count=12, clock=lambda: later))
    assert sorted(freed) == sorted(held)


def test_samples_come_in_rank_order_and_active_learning_ranks_by_uncertainty(generation, tiny_config):
    alice = human_rater("alice")
    assert ids(rating.next_items(rater=alice, count=12)) == list(
        generation.samples.order_by("rating_rank").values_list("pk", flat=True)
    )
    # Votes that follow a rule (bright images up), then a re-ranking from them.
    bob = human_rater("bob")
    for sample in generation.samples.order_by("index")[:6]:
        rating.cast_vote(rater=bob, sample=sample, up=sample.index % 2 == 0)
    pipeline.reorder_rating_queue(generation)
    waiting = Sample.objects.filter(generation=generation, vote_count=0)
    assert all(0.0 <= s.rating_rank <= 0.5 for s in waiting)
    assert len({round(s.rating_rank, 6) for s in waiting}) > 1


def test_gold_items_are_mixed_in_and_not_counted_as_samples(tiny_config):
    open_generation(tiny_config, samples=30, votes_needed=1, gold_rate=0.5)
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=20, rng=np.random.default_rng(0))
    gold = [i for i in items if i["kind"] == "gold"]
    assert 4 <= len(gold) <= 16 and len(ids(items)) == 20
    before = rating.counters(rater=alice)
    for item in gold:
        rating.cast(rater=alice, kind="gold", item_id=item["id"], up=True)
    assert Vote.objects.count() == 0 and GoldAnswer.objects.filter(rater=alice).count() == len(gold)
    assert rating.counters(rater=alice) == before


def test_a_rater_failing_gold_items_is_paused_and_their_votes_flagged(tiny_config):
    generation = open_generation(tiny_config, samples=10, votes_needed=1, gold_rate=0.0)
    careless = human_rater("careless")
    sample = generation.samples.first()
    rating.cast_vote(rater=careless, sample=sample, up=True)
    bad = list(generation.experiment.gold_items.filter(kind="bad"))
    real = list(generation.experiment.gold_items.filter(kind="real"))
    for gold in bad:
        rating.answer_gold(rater=careless, gold_item=gold, up=True)  # votes up ruined images
    rating.answer_gold(rater=careless, gold_item=real[0], up=True)
    careless.refresh_from_db()
    assert careless.active  # 7 answers: below the minimum of 8 before judging
    rating.answer_gold(rater=careless, gold_item=real[1], up=True)
    careless.refresh_from_db()
    assert not careless.active and "gold accuracy 25% on 8 gold items" in careless.paused_reason
    with pytest.raises(CurationError, match="paused"):
        rating.answer_gold(rater=careless, gold_item=real[2], up=True)
    assert Vote.objects.get(rater=careless).flagged
    sample.refresh_from_db()
    assert sample.vote_count == 0 and sample.needs_votes  # needs a vote from someone reliable


def test_undo_takes_back_the_last_vote_and_keeps_the_history(generation):
    alice = human_rater("alice")
    first, second = generation.samples.order_by("index")[:2]
    rating.cast_vote(rater=alice, sample=first, up=True)
    rating.cast_vote(rater=alice, sample=second, up=False)
    item = rating.undo_last(rater=alice, request_id="undo-0001")
    assert item["id"] == second.pk
    assert list(Vote.objects.values_list("sample_id", flat=True)) == [first.pk]
    second.refresh_from_db()
    assert second.vote_count == 0 and second.needs_votes
    assert rating.undo_last(rater=alice, request_id="undo-0001")["id"] == second.pk  # replayed: no second undo
    assert Vote.objects.count() == 1
    assert list(VoteEvent.objects.order_by("pk").values_list("action", flat=True)) == ["vote", "vote", "undo"]


def test_a_replayed_vote_request_records_nothing_twice(generation):
    alice = human_rater("alice")
    sample = generation.samples.first()
    for _ in range(3):
        rating.cast_vote(rater=alice, sample=sample, up=True, request_id="same-request")
    assert Vote.objects.count() == 1 and VoteEvent.objects.count() == 1
    sample.refresh_from_db()
    assert sample.vote_count == 1


def test_a_changed_vote_keeps_its_history(generation):
    alice = human_rater("alice")
    sample = generation.samples.first()
    rating.cast_vote(rater=alice, sample=sample, up=True)
    rating.cast_vote(rater=alice, sample=sample, up=False)
    assert Vote.objects.get().up is False
    assert list(VoteEvent.objects.order_by("pk").values_list("up", flat=True)) == [True, False]
    sample.refresh_from_db()
    assert sample.vote_count == 1


def test_voting_clears_the_raters_claim(generation):
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=2)
    vote_all(alice, items[:1])
    assert Claim.objects.filter(rater=alice).count() == 1
