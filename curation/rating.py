"""Rating: the queue raters draw from, votes and their history, undo, gold items, rater quality.

Queue rules: a sample needs `votes_needed` votes from distinct raters; a rater never sees a sample
twice; a sample shown to a rater is claimed for them for `claim_minutes`, so concurrent raters do not
pile onto it beyond its need (claims expire in minutes, so an abandoned tab never empties the queue
for long); samples come in `rating_rank` order (random, or the discriminator's uncertainty under
active learning); gold items are mixed in at `gold_rate` and never count as samples.

Votes are durable and idempotent: each is saved the moment it is cast, a replayed request (same
`request_id`) changes nothing, and every vote, change and undo is appended to `VoteEvent`.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from curation.models import Claim, Experiment, Generation, GoldAnswer, GoldItem, Rater, Sample, Vote, VoteEvent
from curation.services import CurationError

Clock = Callable[[], datetime.datetime]


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _config(generation: Generation):
    return generation.experiment.loop_config


# --- votes --------------------------------------------------------------------------------------


def _check_can_vote(rater: Rater, up) -> None:
    if not isinstance(up, bool):
        raise CurationError("a vote is up (true) or down (false)")
    if not rater.active:
        raise CurationError(f"rater {rater.name} is paused and cannot vote: {rater.paused_reason or 'ask staff'}")


def _count_vote(sample: Sample, change: int) -> None:
    """Keep a sample's counted votes, and whether it still needs some, in step with its votes."""
    sample.vote_count = max(0, sample.vote_count + change)
    sample.needs_votes = sample.to_rate and sample.vote_count < sample.generation.votes_needed
    sample.save(update_fields=["vote_count", "needs_votes"])


def cast_vote(*, rater: Rater, sample: Sample, up: bool, request_id: Optional[str] = None) -> Vote:
    """Record `rater`'s up or down vote on `sample`. Voting again changes the vote; it never adds one.
    A replayed request (same `request_id`) returns the vote it already recorded."""
    _check_can_vote(rater, up)
    request_id = request_id or _new_request_id()
    with transaction.atomic():
        if VoteEvent.objects.filter(request_id=request_id).exists():
            return Vote.objects.get(rater=rater, sample=sample)
        sample = Sample.objects.select_for_update().select_related("generation").get(pk=sample.pk)
        generation = sample.generation
        if generation.state != Generation.State.RATING:
            raise CurationError(f"voting on this generation is closed (it is {generation.state})")
        vote, created = Vote.objects.get_or_create(rater=rater, sample=sample, defaults={"up": up})
        if not created and vote.up != up:
            vote.up = up
            vote.save(update_fields=["up", "updated_at"])
        if created:
            _count_vote(sample, +1)
        VoteEvent.objects.create(rater=rater, sample=sample, action=VoteEvent.Action.VOTE, up=up, request_id=request_id)
        Claim.objects.filter(rater=rater, sample=sample).delete()
        if created and generation.open_for_raters:
            _after_human_vote(generation)
    return vote


def _after_human_vote(generation: Generation) -> None:
    """Close rating once every sample has its votes; under active learning, re-order now and then."""
    from curation import tasks  # tasks import the pipeline, which imports this module

    if not generation.samples.filter(needs_votes=True).exists():
        Generation.objects.filter(pk=generation.pk).update(state=Generation.State.CURATING, open_for_raters=False)
        tasks.enqueue(generation.pk)
        return
    config = _config(generation)
    if config.rating.active_learning:
        total = Vote.objects.filter(sample__generation=generation, flagged=False).count()
        if total % config.rating.refit_every_votes == 0:
            transaction.on_commit(lambda: tasks.reorder_rating_queue.delay(generation.pk))


def undo_last(*, rater: Rater, request_id: Optional[str] = None) -> Optional[dict]:
    """Take back the rater's most recent vote or gold answer that can still change. Returns the item
    (as `queue_item` gives it) so the rater sees it again, or None when there is nothing to undo."""
    request_id = request_id or _new_request_id()
    with transaction.atomic():
        replay = VoteEvent.objects.filter(request_id=request_id).select_related("undoes").first()
        if replay is not None:
            return _item_of_event(replay.undoes) if replay.undoes else None
        last = (
            # Lock the event row only: PostgreSQL cannot lock the nullable side of the outer joins.
            VoteEvent.objects.select_for_update(of=("self",))
            .filter(rater=rater, action=VoteEvent.Action.VOTE, undone_by__isnull=True)
            .filter(Q(sample__generation__state=Generation.State.RATING) | Q(gold_item__isnull=False))
            .order_by("-created_at", "-pk")
            .first()
        )
        if last is None:
            return None
        if last.sample_id is not None:
            sample = Sample.objects.select_for_update().select_related("generation").get(pk=last.sample_id)
            deleted = Vote.objects.filter(rater=rater, sample=sample).first()
            if deleted is not None:
                if not deleted.flagged:
                    _count_vote(sample, -1)
                deleted.delete()
        else:
            GoldAnswer.objects.filter(rater=rater, gold_item_id=last.gold_item_id).delete()
        VoteEvent.objects.create(
            rater=rater, sample_id=last.sample_id, gold_item_id=last.gold_item_id,
            action=VoteEvent.Action.UNDO, request_id=request_id, undoes=last,
        )
        return _item_of_event(last)


def _item_of_event(event: VoteEvent) -> dict:
    if event.sample_id is not None:
        return queue_item(Sample.objects.select_related("generation__experiment").get(pk=event.sample_id))
    return gold_queue_item(GoldItem.objects.select_related("experiment").get(pk=event.gold_item_id))


def answer_gold(*, rater: Rater, gold_item: GoldItem, up: bool, request_id: Optional[str] = None) -> GoldAnswer:
    """A rater's answer on a gold item; pauses the rater when their gold accuracy falls below the bar."""
    _check_can_vote(rater, up)
    request_id = request_id or _new_request_id()
    with transaction.atomic():
        if VoteEvent.objects.filter(request_id=request_id).exists():
            return GoldAnswer.objects.get(rater=rater, gold_item=gold_item)
        answer, _ = GoldAnswer.objects.update_or_create(
            rater=rater, gold_item=gold_item, defaults={"up": up, "correct": up == gold_item.expected_up}
        )
        VoteEvent.objects.create(rater=rater, gold_item=gold_item, action=VoteEvent.Action.VOTE, up=up, request_id=request_id)
        _check_gold_accuracy(rater, gold_item.experiment.loop_config.rating)
    return answer


def _check_gold_accuracy(rater: Rater, rating_config) -> None:
    tally = rater.gold_answers.aggregate(total=Count("pk"), right=Count("pk", filter=Q(correct=True)))
    if tally["total"] >= rating_config.gold_min_answers:
        accuracy = tally["right"] / tally["total"]
        if accuracy < rating_config.gold_accuracy_bar:
            pause_rater(
                rater=rater,
                reason=f"gold accuracy {accuracy:.0%} on {tally['total']} gold items is below "
                       f"the bar of {rating_config.gold_accuracy_bar:.0%}",
            )


def pause_rater(*, rater: Rater, reason: str) -> None:
    """Pause a rater and flag their votes: flagged votes stop counting, so open samples need new ones."""
    with transaction.atomic():
        Rater.objects.filter(pk=rater.pk).update(active=False, paused_reason=reason[:300])
        rater.active, rater.paused_reason = False, reason[:300]
        open_votes = Vote.objects.filter(rater=rater, flagged=False, sample__generation__state=Generation.State.RATING)
        for vote in open_votes.select_related("sample__generation"):
            _count_vote(vote.sample, -1)
        Vote.objects.filter(rater=rater).update(flagged=True)
        Claim.objects.filter(rater=rater).delete()


def resume_rater(*, rater: Rater) -> None:
    Rater.objects.filter(pk=rater.pk).update(active=True, paused_reason="")


# --- the queue ----------------------------------------------------------------------------------


def queue_item(sample: Sample) -> dict:
    generation = sample.generation
    return {
        "kind": "sample",
        "id": sample.pk,
        "image_url": sample.image.url,
        "experiment": generation.experiment.name,
        "generation": generation.index,
        "generation_id": generation.pk,
    }


def gold_queue_item(gold: GoldItem) -> dict:
    # Raters are not told which items are gold: it is shown like any sample of its experiment.
    generation = gold.experiment.generations.filter(open_for_raters=True).order_by("-index").first()
    return {
        "kind": "gold",
        "id": gold.pk,
        "image_url": gold.image.url,
        "experiment": gold.experiment.name,
        "generation": generation.index if generation else None,
        "generation_id": generation.pk if generation else None,
    }


def open_generation_ids() -> list[int]:
    return list(
        Generation.objects.filter(open_for_raters=True, experiment__status=Experiment.Status.RUNNING).values_list(
            "pk", flat=True
        )
    )


def next_items(*, rater: Rater, count: int, exclude: tuple = (), clock: Clock = timezone.now, rng=None) -> list[dict]:
    """Up to `count` items for the rater, claimed for them; their own live claims first."""
    if not rater.active:
        raise CurationError(f"rater {rater.name} is paused: {rater.paused_reason or 'ask staff'}")
    now = clock()
    excluded_samples = {int(i) for kind, i in exclude if kind == "sample"}
    excluded_gold = {int(i) for kind, i in exclude if kind == "gold"}
    generations = open_generation_ids()
    if not generations:
        return []
    voted_by_rater = Vote.objects.filter(rater=rater, sample=OuterRef("pk"))
    my_claims = list(Claim.objects.filter(rater=rater, expires_at__gt=now).values_list("sample_id", flat=True))
    mine = []
    if my_claims:
        # Sorted here: ordered in SQL, SQLite would walk the whole queue index to find a handful of ids.
        mine = Sample.objects.filter(pk__in=my_claims, needs_votes=True, generation_id__in=generations).exclude(
            Exists(voted_by_rater)
        ).exclude(pk__in=excluded_samples).select_related("generation__experiment")
        mine = sorted(mine, key=lambda s: s.rating_rank)[:count]
    fresh: list[Sample] = []
    if len(mine) < count:
        others_claims = (
            Claim.objects.filter(sample=OuterRef("pk"), expires_at__gt=now)
            .exclude(rater=rater)
            .values("sample")
            .annotate(n=Count("pk"))
            .values("n")
        )
        skip = excluded_samples | {s.pk for s in mine}
        # One query per open generation, each walking the (generation, needs_votes, rating_rank) index
        # in order and stopping at its limit; then merged by rank. Open generations are few.
        for generation_id in generations:
            fresh += (
                Sample.objects.filter(generation_id=generation_id, needs_votes=True)
                .exclude(Exists(voted_by_rater))
                .exclude(pk__in=skip)
                .annotate(claimed=Coalesce(Subquery(others_claims), 0))
                .filter(vote_count__lt=F("generation__votes_needed") - F("claimed"))
                .select_related("generation__experiment")
                .order_by("rating_rank")[: count - len(mine)]
            )
        fresh = sorted(fresh, key=lambda s: s.rating_rank)[: count - len(mine)]
    samples = mine + fresh
    _claim(rater, samples, now)

    items = [queue_item(s) for s in samples]
    return _mix_in_gold(rater, items, samples, excluded_gold, rng)


def _claim(rater: Rater, samples: list[Sample], now: datetime.datetime) -> None:
    if not samples:
        return
    by_generation: dict[int, float] = {}
    for s in samples:
        if s.generation_id not in by_generation:
            by_generation[s.generation_id] = s.generation.experiment.loop_config.rating.claim_minutes
    for s in samples:
        expires = now + datetime.timedelta(minutes=by_generation[s.generation_id])
        Claim.objects.update_or_create(rater=rater, sample=s, defaults={"expires_at": expires})


def _mix_in_gold(rater: Rater, items: list[dict], samples: list[Sample], excluded_gold: set, rng) -> list[dict]:
    experiments = {s.generation.experiment_id: s.generation.experiment for s in samples}
    if not experiments:
        return items
    gold_rates = {pk: e.loop_config.rating.gold_rate for pk, e in experiments.items()}  # parsed once, not per item
    rng = rng or np.random.default_rng()
    answered = GoldAnswer.objects.filter(rater=rater).values("gold_item_id")
    mixed: list[dict] = []
    for item, sample in zip(items, samples):
        experiment = experiments[sample.generation.experiment_id]
        if rng.random() < gold_rates[experiment.pk]:
            gold = (
                GoldItem.objects.filter(experiment=experiment)
                .exclude(pk__in=answered)
                .exclude(pk__in=excluded_gold | {i["id"] for i in mixed if i["kind"] == "gold"})
                .order_by("?")
                .select_related("experiment")
                .first()
            )
            if gold is not None:
                mixed.append(gold_queue_item(gold))
        mixed.append(item)
    return mixed


@dataclass(frozen=True)
class Counters:
    rated_today: int
    left: int  # samples in open generations this rater can still vote on
    left_by_generation: dict  # generation id -> the same, per generation


def rated_today(*, rater: Rater, clock: Clock = timezone.now) -> int:
    today = timezone.localtime(clock()).replace(hour=0, minute=0, second=0, microsecond=0)
    return Vote.objects.filter(rater=rater, created_at__gte=today).count()


def counters(*, rater: Rater, clock: Clock = timezone.now) -> Counters:
    generations = open_generation_ids()
    # Open samples, less those this rater already voted on: two index counts instead of an
    # anti-join over every open sample.
    waiting = dict(
        Sample.objects.filter(needs_votes=True, generation_id__in=generations)
        .values_list("generation_id").annotate(n=Count("pk")).values_list("generation_id", "n")
    )
    voted = dict(
        Vote.objects.filter(rater=rater, sample__needs_votes=True, sample__generation_id__in=generations)
        .values_list("sample__generation_id").annotate(n=Count("pk")).values_list("sample__generation_id", "n")
    )
    by_generation = {g: waiting.get(g, 0) - voted.get(g, 0) for g in generations}
    return Counters(rated_today=rated_today(rater=rater, clock=clock), left=sum(by_generation.values()),
                    left_by_generation=by_generation)


def cast(*, rater: Rater, kind: str, item_id, up, request_id: Optional[str] = None) -> None:
    """One entry point for a vote on any queue item, as the UI and the API send it."""
    try:
        item_id = int(item_id)
    except (TypeError, ValueError):
        raise CurationError(f"item id must be a number, not {item_id!r}") from None
    if kind == "sample":
        sample = Sample.objects.filter(pk=item_id).first()
        if sample is None:
            raise CurationError(f"there is no sample {item_id}")
        cast_vote(rater=rater, sample=sample, up=up, request_id=request_id)
    elif kind == "gold":
        gold = GoldItem.objects.filter(pk=item_id).select_related("experiment").first()
        if gold is None:
            raise CurationError(f"there is no item {item_id}")
        answer_gold(rater=rater, gold_item=gold, up=up, request_id=request_id)
    else:
        raise CurationError(f"unknown item kind {kind!r}; expected 'sample' or 'gold'")


def submit_grid(*, rater: Rater, votes: list[tuple[str, int, bool]], request_id: str) -> int:
    """A page of votes submitted together; each keyed from the page's request id, so a resubmitted
    form records nothing twice. Returns how many were recorded."""
    for kind, item_id, up in votes:
        cast(rater=rater, kind=kind, item_id=item_id, up=up, request_id=f"{request_id}:{kind}:{item_id}")
    return len(votes)
