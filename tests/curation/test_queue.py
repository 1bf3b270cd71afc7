"""The rating queue: distinct raters, no repeats, quotas, short claims, gold items, undo, idempotency."""

import datetime

import numpy as np
import pytest
from django.utils import timezone

from curation import pipeline, rating
from curation.models import Claim, GoldAnswer, GoldItem, Sample, Vote, VoteEvent
from curation.services import CurationError
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


@pytest.fixture
def generation(tiny_config):
    return open_generation(tiny_config, samples=12, votes_needed=2)


def ids(items):
    """The sample ids behind served items (gold items left out), from their claims."""
    claims = {c.token: c for c in Claim.objects.filter(token__in=[i["token"] for i in items])}
    return [claims[i["token"]].sample_id for i in items if claims[i["token"]].sample_id is not None]


def vote_all(rater, items, up=True):
    for item in items:
        rating.cast(rater=rater, token=item["token"], up=up, request_id=f"r-{item['token']}")


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
        rating.cast_vote(rater=bob, sample=sample, up=sample.index % 2 == 0, require_claim=False)
    pipeline.reorder_rating_queue(generation)
    waiting = Sample.objects.filter(generation=generation, vote_count=0)
    assert all(0.0 <= s.rating_rank <= 0.5 for s in waiting)
    assert len({round(s.rating_rank, 6) for s in waiting}) > 1


def test_gold_items_are_mixed_in_and_not_counted_as_samples(tiny_config):
    open_generation(tiny_config, samples=30, votes_needed=1, gold_rate=0.5)
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=20, rng=np.random.default_rng(0))
    gold = [i for i in items if Claim.objects.get(token=i["token"]).gold_item_id]
    assert 4 <= len(gold) <= 16 and len(ids(items)) == 20
    vote_all(alice, gold)
    assert Vote.objects.count() == 0 and GoldAnswer.objects.filter(rater=alice).count() == len(gold)


def test_gold_items_look_exactly_like_samples(tiny_config):
    open_generation(tiny_config, samples=30, votes_needed=1, gold_rate=0.5)
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=20, rng=np.random.default_rng(0))
    assert {tuple(sorted(i)) for i in items} == {("experiment", "generation", "generation_id", "image_url", "token")}
    assert len({i["generation_id"] for i in items}) == 1
    for item in items:
        assert item["image_url"] == f"/rate/image/{item['token']}"  # names nothing about the item
    gold_tokens = [c.token for c in Claim.objects.filter(gold_item__isnull=False)]
    sample_tokens = [c.token for c in Claim.objects.filter(sample__isnull=False)]
    assert gold_tokens and {len(t) for t in gold_tokens} == {len(t) for t in sample_tokens}


def test_a_gold_answer_counts_only_for_an_item_served_to_that_rater(tiny_config):
    open_generation(tiny_config, samples=30, votes_needed=1, gold_rate=0.9)
    alice, bob = human_rater("alice"), human_rater("bob")
    items = rating.next_items(rater=alice, count=4, rng=np.random.default_rng(0))
    gold_token = next(i["token"] for i in items if Claim.objects.get(token=i["token"]).gold_item_id)
    with pytest.raises(CurationError, match="no item with this token was served to you"):
        rating.cast(rater=bob, token=gold_token, up=True, request_id="bob-00001")
    unserved = GoldItem.objects.exclude(claims__rater=alice).first()
    assert unserved is not None and not unserved.claims.filter(rater=alice).exists()
    assert GoldAnswer.objects.count() == 0


def test_a_rater_failing_gold_items_is_paused_and_their_votes_flagged(tiny_config):
    generation = open_generation(tiny_config, samples=10, votes_needed=1, gold_rate=0.0)
    careless = human_rater("careless")
    sample = generation.samples.first()
    rating.cast_vote(rater=careless, sample=sample, up=True, require_claim=False)
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
    generation.refresh_from_db()
    assert generation.samples_needing_votes == 10


def test_undo_takes_back_the_last_vote_and_keeps_the_history(generation):
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=2)
    vote_all(alice, items)
    first, second = ids(items)
    item = rating.undo_last(rater=alice, request_id="undo-0001")
    assert item["token"] == items[1]["token"]  # the same token: the page may still hold it
    assert list(Vote.objects.values_list("sample_id", flat=True)) == [first]
    sample = Sample.objects.get(pk=second)
    assert sample.vote_count == 0 and sample.needs_votes
    assert rating.undo_last(rater=alice, request_id="undo-0001")["token"] == items[1]["token"]  # replayed: no second undo
    assert Vote.objects.count() == 1
    assert list(VoteEvent.objects.order_by("pk").values_list("action", flat=True)) == ["vote", "vote", "undo"]
    # The undone sample is held for alice again: she can vote on it anew, and others cannot take its slot.
    rating.cast(rater=alice, token=item["token"], up=False, request_id="again-001")
    assert Vote.objects.get(sample_id=second).up is False


def test_a_replayed_vote_request_records_nothing_twice(generation):
    alice = human_rater("alice")
    token = rating.next_items(rater=alice, count=1)[0]["token"]
    for _ in range(3):
        rating.cast(rater=alice, token=token, up=True, request_id="same-request")
    assert Vote.objects.count() == 1 and VoteEvent.objects.count() == 1
    assert Sample.objects.get(pk=Vote.objects.get().sample_id).vote_count == 1


def test_request_ids_belong_to_their_rater(generation):
    alice, bob = human_rater("alice"), human_rater("bob")
    for rater in (alice, bob):
        token = rating.next_items(rater=rater, count=1)[0]["token"]
        rating.cast(rater=rater, token=token, up=True, request_id="shared-id-1")  # bob's is not a replay of alice's
    assert Vote.objects.count() == 2 and VoteEvent.objects.count() == 2


def test_a_changed_vote_keeps_its_history(generation):
    alice = human_rater("alice")
    token = rating.next_items(rater=alice, count=1)[0]["token"]
    rating.cast(rater=alice, token=token, up=True, request_id="first-vote")
    rating.cast(rater=alice, token=token, up=False, request_id="second-vote")
    assert Vote.objects.get().up is False
    assert list(VoteEvent.objects.order_by("pk").values_list("up", flat=True)) == [True, False]
    assert Sample.objects.get(pk=Vote.objects.get().sample_id).vote_count == 1


def test_voting_releases_the_raters_hold(generation):
    alice = human_rater("alice")
    items = rating.next_items(rater=alice, count=2)
    vote_all(alice, items[:1])
    assert Claim.objects.filter(rater=alice, expires_at__gt=timezone.now()).count() == 1


def test_a_sample_not_served_to_the_rater_cannot_be_voted_on(generation):
    alice = human_rater("alice")
    with pytest.raises(CurationError, match="not served to you"):
        rating.cast_vote(rater=alice, sample=generation.samples.first(), up=True)
    with pytest.raises(CurationError, match="no item with this token"):
        rating.cast(rater=alice, token="made-up-token", up=True, request_id="guess-0001")
    assert Vote.objects.count() == 0


def test_a_full_sample_refuses_another_vote_and_says_move_on(generation):
    a, b, c = (human_rater(n) for n in "abc")
    held = rating.next_items(rater=a, count=1)
    sample = Sample.objects.get(pk=ids(held)[0])
    rating.next_items(rater=b, count=1)  # b holds the second slot of the same sample
    later = timezone.now() + datetime.timedelta(minutes=6)
    # a's hold lapses; c takes the sample; b and c vote: the sample is full.
    freed = rating.next_items(rater=c, count=1, clock=lambda: later)
    assert ids(freed) == [sample.pk]
    for rater, item in ((b, Claim.objects.get(rater=b).token), (c, freed[0]["token"])):
        rating.cast(rater=rater, token=item, up=True, request_id=f"vote-{rater.name}-1")
    with pytest.raises(rating.VoteNotNeeded, match="moving on"):
        rating.cast(rater=a, token=held[0]["token"], up=True, request_id="vote-a-0001")
    sample.refresh_from_db()
    assert sample.vote_count == 2 and not sample.needs_votes


def test_counters_count_down_by_one_per_item_gold_included(tiny_config):
    generation = open_generation(tiny_config, samples=30, votes_needed=1, gold_rate=0.5)
    alice = human_rater("alice")
    items, before = rating.next_items(rater=alice, count=10, rng=np.random.default_rng(1), with_counters=True)
    assert before.left == 30 + (len(items) - 10)
    vote_all(alice, items[:5])
    assert rating.counters(rater=alice).left == before.left - 5
    assert before.left_by_generation == {generation.pk: before.left}


def test_a_lapsed_hold_comes_back_to_its_rater_under_the_same_token(generation):
    alice = human_rater("alice")
    first = rating.next_items(rater=alice, count=1)[0]
    later = timezone.now() + datetime.timedelta(minutes=6)  # past the 5-minute hold
    again = rating.next_items(rater=alice, count=1, clock=lambda: later)
    assert [i["token"] for i in again] == [first["token"]]  # renewed in place: the page may still show it
    claim = Claim.objects.get(token=first["token"])
    assert claim.expires_at > later and Claim.objects.filter(rater=alice).count() == 1
    rating.cast(rater=alice, token=first["token"], up=True, request_id="after-lapse")
    assert Vote.objects.filter(rater=alice).count() == 1


def test_rated_today_counts_todays_votes_less_those_undone(generation):
    alice = human_rater("alice")
    samples = list(generation.samples.order_by("index")[:2])
    yesterday = timezone.now() - datetime.timedelta(days=1)
    rating.cast_vote(rater=alice, sample=samples[0], up=True, require_claim=False, clock=lambda: yesterday)
    rating.cast_vote(rater=alice, sample=samples[1], up=True, require_claim=False)
    assert rating.rated_today(rater=alice) == 1
    rating.undo_last(rater=alice, request_id="undo-today")  # today's vote
    assert rating.rated_today(rater=alice) == 0
    rating.undo_last(rater=alice, request_id="undo-yesterday")  # yesterday's: today's count stays at 0
    assert rating.rated_today(rater=alice) == 0 and Vote.objects.count() == 0


def assert_votes_open_as_their_samples(generation):
    """Every vote's `open` is its sample's `needs_votes` (what the counters count from an index)."""
    mismatched = [(v.pk, v.open, v.sample.needs_votes) for v in Vote.objects.select_related("sample")
                  if v.open != v.sample.needs_votes]
    assert not mismatched


def test_a_votes_open_flag_follows_its_sample_through_votes_undo_and_pausing(tiny_config):
    generation = open_generation(tiny_config, samples=6, votes_needed=2, gold_rate=0.0)
    alice, bob = human_rater("alice"), human_rater("bob")
    first = generation.samples.order_by("index").first()
    rating.cast_vote(rater=alice, sample=first, up=True, require_claim=False)
    assert Vote.objects.get(rater=alice).open  # one of two votes: still in flight
    rating.cast_vote(rater=bob, sample=first, up=False, require_claim=False)
    assert not Vote.objects.filter(open=True).exists()  # complete: both closed
    assert_votes_open_as_their_samples(generation)
    assert rating.counters(rater=alice).left == 5
    rating.undo_last(rater=bob, request_id="undo-bob-1")  # reopens the sample: alice's vote is in flight again
    assert list(Vote.objects.values_list("open", flat=True)) == [True]
    assert rating.counters(rater=alice).left == 5 and rating.counters(rater=bob).left == 6
    rating.cast_vote(rater=bob, sample=first, up=True, require_claim=False)
    rating.pause_rater(rater=bob, reason="test")  # bob's vote stops counting: the sample needs one more
    assert set(Vote.objects.values_list("open", flat=True)) == {True}
    assert_votes_open_as_their_samples(generation)
    assert rating.counters(rater=alice).left == 5


def test_on_postgresql_the_rating_statements_are_prepared_and_still_logged(generation):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's; SQLite runs Django's own cursor")
    alice = human_rater("alice")
    with CaptureQueriesContext(connection) as captured:
        items = rating.next_items(rater=alice, count=3)
        rating.cast(rater=alice, token=items[0]["token"], up=True, request_id="prepared-1")
    # The query log shows each statement's text, with its parameters as placeholders.
    assert any("FROM curation_sample s" in q["sql"] and "$1" in q["sql"] for q in captured.captured_queries)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any("FOR UPDATE OF s SKIP LOCKED" in statement for statement in prepared)  # the queue's candidates
    assert any(statement.startswith("INSERT INTO curation_vote") for statement in prepared)  # and the vote


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_claims_commit_without_waiting_for_the_disk_and_votes_wait(generation):
    """A claim is a lease (one lost in a crash is served again); a vote is not, and its flush covers
    every earlier commit. Only `next`'s own transaction is changed, never a caller's."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's; SQLite's WAL commits without a flush already")

    def synchronous_commit():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    alice = human_rater("alice")
    with CaptureQueriesContext(connection) as claimed:
        items = rating.next_items(rater=alice, count=3)
    assert any(q["sql"] == "SET LOCAL synchronous_commit TO OFF" for q in claimed.captured_queries)
    assert synchronous_commit() == "on"  # for that transaction alone
    assert Claim.objects.filter(rater=alice).count() == 3  # committed
    with CaptureQueriesContext(connection) as voted:
        rating.cast(rater=alice, token=items[0]["token"], up=True, request_id="durable-1")
    assert not any("synchronous_commit" in q["sql"] for q in voted.captured_queries)
    with transaction.atomic():  # someone else's transaction keeps its commit as it is
        rating.next_items(rater=alice, count=3)
        assert synchronous_commit() == "on"
