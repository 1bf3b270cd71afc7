"""Rating: the queue raters draw from, votes and their history, undo, gold items, rater quality.

Queue rules: a sample needs `votes_needed` votes from distinct raters; a rater never sees a sample
twice; a sample served to a rater is claimed for them for `claim_minutes`, and a sample is served
only while its votes plus its live claims leave room, so that no sample ever counts more votes than
it needs however many raters race for it; samples come in `rating_rank` order (random, or the
discriminator's uncertainty under active learning); gold items are mixed in at `gold_rate` and never
count as samples.

Raters see every item through an opaque token (`Claim.token`): the same shape for samples and gold
items, an image URL that names nothing, and a vote counts only for an item served to that rater.

Claims are taken atomically: on PostgreSQL the candidate rows are locked (`FOR UPDATE SKIP LOCKED`,
so concurrent raters pass each other's candidates by) and re-counted after the lock; on SQLite the
transaction takes the write lock at BEGIN (IMMEDIATE), which serialises claimers. A vote locks its
sample row too, so a vote and a claim on one sample never interleave.

Votes are durable and idempotent: each is saved the moment it is cast, a replayed request (the same
rater's `request_id`) changes nothing, and every vote, change and undo is appended to `VoteEvent`.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from curation import tasks
from curation.models import (
    Claim, Experiment, Generation, GoldAnswer, GoldItem, Rater, Sample, Vote, VoteEvent, new_claim_token,
)
from curation.services import CurationError
from curation.sql import commit_without_flush, converted, cursor as sql_cursor, execute, loaded

Clock = Callable[[], datetime.datetime]

REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")


class VoteNotNeeded(CurationError):
    """A vote the queue no longer needs (the sample is full, or its rating closed): the page moves on."""


def _new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(request_id) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise CurationError("request_id must be a string of 8 to 64 letters, digits, '-' or '_', new for each vote")
    return request_id


# --- votes --------------------------------------------------------------------------------------


def _check_can_vote(rater: Rater, up) -> None:
    if not isinstance(up, bool):
        raise CurationError("a vote is up (true) or down (false)")
    if not rater.active:
        raise CurationError(f"rater {rater.name} is paused and cannot vote: {rater.paused_reason or 'ask staff'}")


def _count_vote(sample: Sample, change: int) -> bool:
    """Keep a sample's counted votes, whether it still needs some (and its votes' `open` with it), and
    its generation's count of samples needing votes, in step with its votes. True when the sample just
    got its last vote."""
    needed_before = sample.needs_votes
    sample.vote_count = max(0, sample.vote_count + change)
    sample.needs_votes = sample.to_rate and sample.vote_count < sample.generation.votes_needed
    execute(f"UPDATE {Sample._meta.db_table} SET vote_count = %s, needs_votes = %s WHERE id = %s",
             [sample.vote_count, sample.needs_votes, sample.pk])
    if sample.needs_votes == needed_before:
        return False
    execute(f"UPDATE {Vote._meta.db_table} SET open = %s WHERE sample_id = %s", [sample.needs_votes, sample.pk])
    if sample.generation.open_for_raters:
        Generation.objects.filter(pk=sample.generation_id).update(
            samples_needing_votes=F("samples_needing_votes") + 1 if sample.needs_votes
            else Greatest(F("samples_needing_votes") - 1, 0)
        )
    return needed_before and not sample.needs_votes


# A vote reads what it needs in one statement: the sample (locked on PostgreSQL; SQLite's IMMEDIATE
# transaction already holds the write lock), its generation and experiment, the rater's claim and vote
# on it, and whether the request is a replay. {sample_is} names the sample: by id, or by the token of
# the rater's claim on it. Written in SQL: built by the ORM, four queries' compilation took longer
# than the whole vote does now.
_SAMPLE_FOR_VOTE_SQL = """
SELECT s.id, s.vote_count, s.needs_votes, s.to_rate, s.generation_id, g.state, g.votes_needed, g.open_for_raters,
       g.experiment_id, e.config, c.id, c.expires_at, v.id, v.up, v.flagged,
       EXISTS (SELECT 1 FROM {event} ev WHERE ev.rater_id = %s AND ev.request_id = %s) AS replayed
FROM {sample} s JOIN {generation} g ON g.id = s.generation_id JOIN {experiment} e ON e.id = g.experiment_id
LEFT JOIN {claim} c ON c.sample_id = s.id AND c.rater_id = %s
LEFT JOIN {vote} v ON v.sample_id = s.id AND v.rater_id = %s
WHERE s.id = {sample_is}
"""
_BY_ID = "%s"
_BY_TOKEN = "(SELECT c2.{item}_id FROM {claim} c2 WHERE c2.rater_id = %s AND c2.token = %s)"


@dataclass
class _VoteContext:
    sample: Sample
    generation: Generation
    settings: object  # the experiment's RatingConfig
    claim: Optional[Claim]
    vote: Optional[Vote]
    replayed: bool


def cast_vote(*, rater: Rater, sample: Sample, up: bool, request_id: Optional[str] = None, require_claim: bool = True,
              clock: Clock = timezone.now) -> Optional[Vote]:
    """Record `rater`'s up or down vote on `sample`. Voting again changes the vote; it never adds one.
    A replayed request (the same rater's `request_id`) changes nothing and returns the vote as it is.

    A new vote needs room in the sample's quota: the rater's own live claim holds a slot; without one
    (it lapsed) the vote counts only if the votes and others' live claims leave room. Human raters vote
    only on samples served to them (`require_claim`); the loop's simulated raters are handed theirs.
    """
    _check_can_vote(rater, up)
    request_id = request_id or _new_request_id()
    with transaction.atomic():
        context = _vote_context(rater, request_id, sample_id=sample.pk)
        if context is None:
            raise CurationError(f"there is no sample {sample.pk}")
        return _vote(rater, context, up, request_id, require_claim, clock())


def _vote(rater: Rater, context: _VoteContext, up: bool, request_id: str, require_claim: bool,
          now: datetime.datetime) -> Optional[Vote]:
    sample, generation, claim, vote = context.sample, context.generation, context.claim, context.vote
    if context.replayed:
        return vote
    if generation.state != Generation.State.RATING:
        raise VoteNotNeeded(f"voting on this generation is closed (it is {generation.state})")
    completed = False
    moment = connection.ops.adapt_datetimefield_value(now)
    # The writes in plain SQL too, for the same reason as the read (each ORM save cost more than its SQL).
    if vote is None:
        _check_room(rater, sample, claim, now, require_claim)
        # Open: the sample needs votes (checked above); the count below closes it, this vote included, if it completes it.
        vote_id = execute(f"INSERT INTO {Vote._meta.db_table} (rater_id, sample_id, generation_id, up, flagged, open, "
                           "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                           [rater.pk, sample.pk, sample.generation_id, up, False, True, moment, moment])
        vote = loaded(Vote(id=vote_id, rater=rater, sample_id=sample.pk, generation_id=sample.generation_id, up=up,
                           flagged=False, open=True))
        completed = _count_vote(sample, +1)
    elif vote.up != up:
        vote.up = up
        execute(f"UPDATE {Vote._meta.db_table} SET up = %s, updated_at = %s WHERE id = %s", [up, moment, vote.pk])
    _recorded(rater, up, request_id, moment, "sample_id", sample.pk,
              claim.pk if claim is not None and claim.expires_at > now else None)
    if generation.open_for_raters:
        _after_human_vote(generation, context.settings, vote, completed)
    return vote


def _recorded(rater: Rater, up: bool, request_id: str, moment, item_column: str, item_id: int,
              live_claim_id: Optional[int]) -> None:
    """The history event of a vote or gold answer, and the release of the rater's live claim on its item:
    expired, it holds no slot, and its token still names the item."""
    execute(f"INSERT INTO {VoteEvent._meta.db_table} (rater_id, {item_column}, action, up, request_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)", [rater.pk, item_id, VoteEvent.Action.VOTE, up, request_id, moment])
    if live_claim_id is not None:
        execute(f"UPDATE {Claim._meta.db_table} SET expires_at = %s WHERE id = %s", [moment, live_claim_id])


def _vote_context(rater: Rater, request_id: str, *, sample_id: Optional[int] = None,
                  token: Optional[str] = None) -> Optional[_VoteContext]:
    """What a vote on a sample needs, named by its id or by the token it was served to `rater` under;
    None when there is no such sample (a token may name a gold item)."""
    sql = _sql(_SAMPLE_FOR_VOTE_SQL.replace("{sample_is}", _BY_ID if token is None else _BY_TOKEN.replace(
        "{item}", "sample")))
    if connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF s"
    params = [rater.pk, request_id, rater.pk, rater.pk] + ([sample_id] if token is None else [rater.pk, token])
    with sql_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (sample_id, vote_count, needs_votes, to_rate, generation_id, state, votes_needed, open_for_raters, experiment_id,
     config, claim_id, claim_expires, vote_id, vote_up, vote_flagged, replayed) = row
    generation = loaded(Generation(id=generation_id, state=state, votes_needed=votes_needed,
                                    open_for_raters=bool(open_for_raters), experiment_id=experiment_id))
    sample = loaded(Sample(id=sample_id, generation_id=generation_id, vote_count=vote_count,
                            needs_votes=bool(needs_votes), to_rate=bool(to_rate)))
    sample.generation = generation
    claim = vote = None
    if claim_id is not None:
        claim = loaded(Claim(id=claim_id, rater=rater, sample_id=sample_id,
                              expires_at=converted(Claim._meta.get_field("expires_at"), claim_expires)))
    if vote_id is not None:
        vote = loaded(Vote(id=vote_id, rater=rater, sample_id=sample_id, up=bool(vote_up), flagged=bool(vote_flagged)))
    return _VoteContext(sample, generation, _settings(config), claim, vote, bool(replayed))


def _check_room(rater: Rater, sample: Sample, claim: Optional[Claim], now: datetime.datetime,
                require_claim: bool) -> None:
    if not sample.needs_votes:
        raise VoteNotNeeded("this sample already has all the votes it needs; moving on")
    if claim is None and require_claim:
        raise CurationError("this sample was not served to you: vote on the items the rating page gives you")
    if claim is not None and claim.expires_at > now:
        return  # the rater's live claim holds a slot for this vote
    others = Claim.objects.filter(sample=sample, expires_at__gt=now).exclude(rater=rater).count()
    if sample.vote_count + others >= sample.generation.votes_needed:
        raise VoteNotNeeded("your hold on this sample lapsed and other raters took its remaining votes; moving on")


def _after_human_vote(generation: Generation, settings, vote: Vote, completed: bool) -> None:
    """Close rating once every sample has its votes (only a vote that completed its sample can be the
    last one); under active learning, re-order now and then."""
    if completed and not generation.samples.filter(needs_votes=True).exists():
        Generation.objects.filter(pk=generation.pk).update(state=Generation.State.CURATING, open_for_raters=False)
        tasks.enqueue(generation.pk)
        return
    # About every `refit_every_votes` votes: vote ids are shared by all generations, but counting this
    # generation's votes on every vote would cost a scan of them each time.
    if settings.active_learning and vote.pk % settings.refit_every_votes == 0:
        transaction.on_commit(lambda: tasks.reorder_rating_queue.delay(generation.pk))


@functools.lru_cache(maxsize=64)
def _parsed_settings(config_json: str):
    from curation.ml.experiment_config import ExperimentConfig

    return ExperimentConfig.from_dict(json.loads(config_json)).rating


def _settings(config):
    """An experiment's rating settings from its stored config (as the database driver gives it):
    parsing validates every setting, so each distinct config is parsed once."""
    value = Experiment._meta.get_field("config").from_db_value(config, None, connection) if not isinstance(
        config, dict) else config
    return _parsed_settings(json.dumps(value, sort_keys=True))


_GOLD_FOR_ANSWER_SQL = """
SELECT gi.id, gi.expected_up, e.config, c.id, c.expires_at > %s,
       EXISTS (SELECT 1 FROM {event} ev WHERE ev.rater_id = %s AND ev.request_id = %s) AS replayed
FROM {golditem} gi JOIN {experiment} e ON e.id = gi.experiment_id
LEFT JOIN {claim} c ON c.gold_item_id = gi.id AND c.rater_id = %s
WHERE gi.id = {gold_is}
"""


@dataclass
class _GoldContext:
    gold_item_id: int
    expected_up: bool
    settings: object  # the experiment's RatingConfig
    claim_id: Optional[int]
    claim_live: bool
    replayed: bool


def answer_gold(*, rater: Rater, gold_item: GoldItem, up: bool, request_id: Optional[str] = None) -> None:
    """A rater's answer on a gold item served to them; pauses the rater when their gold accuracy falls
    below the bar."""
    _check_can_vote(rater, up)
    request_id = request_id or _new_request_id()
    with transaction.atomic():
        now = timezone.now()
        _answer(rater, _gold_context(rater, request_id, now, gold_item_id=gold_item.pk), up, request_id, now)


def _gold_context(rater: Rater, request_id: str, now: datetime.datetime, *, gold_item_id: Optional[int] = None,
                  token: Optional[str] = None) -> Optional[_GoldContext]:
    """What an answer on a gold item needs, named by its id or by the token it was served under."""
    by = _BY_ID if token is None else _BY_TOKEN.replace("{item}", "gold_item")
    params = [connection.ops.adapt_datetimefield_value(now), rater.pk, request_id, rater.pk]
    params += [gold_item_id] if token is None else [rater.pk, token]
    with sql_cursor() as cursor:
        cursor.execute(_sql(_GOLD_FOR_ANSWER_SQL.replace("{gold_is}", by)), params)
        row = cursor.fetchone()
    if row is None:
        return None
    gold_item_id, expected_up, config, claim_id, claim_live, replayed = row
    return _GoldContext(gold_item_id, bool(expected_up), _settings(config), claim_id, bool(claim_live), bool(replayed))


def _answer(rater: Rater, context: _GoldContext, up: bool, request_id: str, now: datetime.datetime) -> None:
    if context.replayed:
        return
    moment = connection.ops.adapt_datetimefield_value(now)
    execute(f"INSERT INTO {GoldAnswer._meta.db_table} (rater_id, gold_item_id, up, correct, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (rater_id, gold_item_id)"
            " DO UPDATE SET up = excluded.up, correct = excluded.correct",
            [rater.pk, context.gold_item_id, up, up == context.expected_up, moment])
    _recorded(rater, up, request_id, moment, "gold_item_id", context.gold_item_id,
              context.claim_id if context.claim_live else None)
    _check_gold_accuracy(rater, context.settings)


def _check_gold_accuracy(rater: Rater, rating_config) -> None:
    with sql_cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), SUM(CASE WHEN correct THEN 1 ELSE 0 END) FROM {GoldAnswer._meta.db_table}"
                       " WHERE rater_id = %s", [rater.pk])
        total, right = cursor.fetchone()
    if total >= rating_config.gold_min_answers:
        accuracy = (right or 0) / total
        if accuracy < rating_config.gold_accuracy_bar:
            pause_rater(
                rater=rater,
                reason=f"gold accuracy {accuracy:.0%} on {total} gold items is below "
                       f"the bar of {rating_config.gold_accuracy_bar:.0%}",
            )


def cast(*, rater: Rater, token, up, request_id) -> None:
    """One entry point for a vote on any served item, as the rating page, the grid and the API send it:
    the item is named by the token it was served under, never by its id or kind."""
    request_id = check_request_id(request_id)
    _check_can_vote(rater, up)
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise CurationError("token must be the item token the rating page was given")
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                now = timezone.now()
                context = _vote_context(rater, request_id, token=token)
                if context is not None:
                    _vote(rater, context, up, request_id, True, now)
                    return
                gold = _gold_context(rater, request_id, now, token=token)
                if gold is None:
                    raise CurationError("no item with this token was served to you")
                _answer(rater, gold, up, request_id, now)
                return
        except IntegrityError:
            # Two copies of one request raced (PostgreSQL lets both past the replay check): the loser
            # finds the winner's event on its second try and changes nothing.
            if attempt == 2:
                raise


def skip(*, rater: Rater, token, clock: Clock = timezone.now) -> None:
    """Pass on a served item without a vote: its claim is released at once (the sample goes back to the
    queue for the other raters) and the item is never served to this rater again. Skipping an item
    twice changes nothing; an item already voted on is undone, not skipped."""
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise CurationError("token must be the item token the rating page was given")
    with transaction.atomic():
        claim = Claim.objects.select_for_update().filter(rater=rater, token=token).first()
        if claim is None:
            raise CurationError("no item with this token was served to you")
        if claim.skipped:
            return
        answered = (Vote.objects.filter(rater=rater, sample_id=claim.sample_id).exists() if claim.sample_id
                    else GoldAnswer.objects.filter(rater=rater, gold_item_id=claim.gold_item_id).exists())
        if answered:
            raise CurationError("you have voted on this item: undo the vote to take it back")
        Claim.objects.filter(pk=claim.pk).update(skipped=True, expires_at=min(claim.expires_at, clock()))


def served_image(*, rater: Rater, token: str) -> Optional[str]:
    """The stored file name of the image behind a token served to `rater`, or None."""
    if not TOKEN.fullmatch(token):
        return None
    claim = Claim.objects.filter(rater=rater, token=token).select_related("sample", "gold_item").first()
    if claim is None:
        return None
    return (claim.sample or claim.gold_item).image.name


def submit_grid(*, rater: Rater, votes: list[tuple[str, bool]], request_id: str) -> int:
    """A page of votes submitted together; each keyed from the page's request id, so a resubmitted
    form records nothing twice. Votes the queue no longer needs are skipped. Returns how many counted."""
    check_request_id(request_id)
    recorded = 0
    for token, up in votes:
        try:
            cast(rater=rater, token=token, up=up, request_id=f"{request_id}-{token}")
            recorded += 1
        except VoteNotNeeded:
            continue
    return recorded


def undo_last(*, rater: Rater, request_id: Optional[str] = None, clock: Clock = timezone.now) -> Optional[dict]:
    """Take back the rater's most recent vote or gold answer that can still change. Returns the item
    (as `next_items` gives it, held for the rater again) so they see it again, or None when there is
    nothing to undo."""
    request_id = request_id or _new_request_id()
    now = clock()
    with transaction.atomic():
        replay = VoteEvent.objects.filter(rater=rater, request_id=request_id).select_related("undoes").first()
        if replay is not None:
            return _item_of_event(rater, replay.undoes, now) if replay.undoes else None
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
            sample = Sample.objects.select_for_update(of=("self",)).select_related("generation").get(pk=last.sample_id)
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
        return _item_of_event(rater, last, now)


def _item_of_event(rater: Rater, event: VoteEvent, now: datetime.datetime) -> dict:
    """The item an event was about, claimed for the rater again (the undone vote's slot becomes theirs)."""
    if event.sample_id is not None:
        generation = Sample.objects.select_related("generation__experiment").get(pk=event.sample_id).generation
        experiment = generation.experiment
    else:
        gold = GoldItem.objects.select_related("experiment").get(pk=event.gold_item_id)
        experiment = gold.experiment
        generation = experiment.generations.filter(open_for_raters=True).order_by("-index").first()
    minutes = experiment.loop_config.rating.claim_minutes
    claim, _ = Claim.objects.update_or_create(
        rater=rater, sample_id=event.sample_id, gold_item_id=event.gold_item_id,
        defaults={"expires_at": now + datetime.timedelta(minutes=minutes)},
    )
    return _item(claim.token, experiment, generation)


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


def open_for_rating(generation: Generation) -> None:
    """Put a generation's samples in human raters' queues."""
    Generation.objects.filter(pk=generation.pk).update(
        open_for_raters=True, samples_needing_votes=generation.samples.filter(needs_votes=True).count()
    )
    generation.open_for_raters = True


# --- the queue ----------------------------------------------------------------------------------


_TOKEN_SLOT = "TOKEN"  # matches TOKEN: reversed once, then filled in (reversing took 0.1 ms an item)


@functools.lru_cache(maxsize=8)
def _image_url(script_prefix: str) -> str:
    return reverse("curation:item-image", args=[_TOKEN_SLOT])


def _item(token: str, experiment: Experiment, generation: Optional[Generation]) -> dict:
    # One shape for samples and gold items alike: raters cannot tell which is which.
    return {
        "token": token,
        "image_url": _image_url(get_script_prefix()).replace(_TOKEN_SLOT, token),
        "experiment": experiment.name,
        "generation": generation.index if generation else None,
        "generation_id": generation.pk if generation else None,
    }


# The two queries every fetch makes are written in SQL: built by the ORM, their compilation alone took
# longer than the database took to answer them (several milliseconds a fetch). Plain SQL that SQLite
# and PostgreSQL both read; table names from the models.
_OPEN_GENERATIONS_SQL = """
SELECT g.id, g.experiment_id, g."index", g.votes_needed, g.samples_needing_votes, g.state, e.name, e.config,
       (SELECT COUNT(*) FROM {vote} v WHERE v.rater_id = %s AND v.open AND v.generation_id = g.id) AS voted_open,
       {rated_today} AS rated_today
FROM {generation} g JOIN {experiment} e ON e.id = g.experiment_id
WHERE g.open_for_raters AND e.status = %s
ORDER BY g.id
"""
# A rater's votes and gold answers since a moment, less those undone: votes, less undos of votes as
# recent. (Counting votes that have no undo instead is quadratic on PostgreSQL while the table's
# statistics are young.) Votes and gold answers alike, so that the count goes up by one with every
# item: a count of samples alone would stand still on a gold item and give it away.
_RATED_SINCE_SQL = """(
(SELECT COUNT(*) FROM {event} ev WHERE ev.rater_id = %s AND ev.action = 'vote' AND ev.created_at >= %s)
- (SELECT COUNT(*) FROM {event} u JOIN {event} ev ON ev.id = u.undoes_id
   WHERE u.rater_id = %s AND u.action = 'undo' AND u.created_at >= %s AND ev.created_at >= %s))"""
_CANDIDATES_SQL = """
SELECT s.id, s.generation_id, s.vote_count, s.rating_rank FROM {sample} s
WHERE s.generation_id = %s AND s.needs_votes
  AND s.id NOT IN (SELECT v.sample_id FROM {vote} v WHERE v.rater_id = %s AND v.open AND v.generation_id = %s)
  AND s.id NOT IN (SELECT c.sample_id FROM {claim} c WHERE c.rater_id = %s AND (c.expires_at > %s OR c.skipped)
                   AND c.sample_id IS NOT NULL)
  AND s.vote_count + (SELECT COUNT(*) FROM {claim} c WHERE c.sample_id = s.id AND c.rater_id <> %s
                      AND c.expires_at > %s) < %s
ORDER BY s.rating_rank
LIMIT %s
"""
_TABLES = {"vote": Vote, "sample": Sample, "event": VoteEvent, "generation": Generation, "experiment": Experiment,
           "claim": Claim, "golditem": GoldItem}


def _sql(template: str) -> str:
    tables = {name: model._meta.db_table for name, model in _TABLES.items()}
    return template.format(rated_today=_RATED_SINCE_SQL.format(**tables), **tables)


def _rated_since_params(rater: Optional[Rater], since: datetime.datetime) -> list:
    pk, moment = rater.pk if rater else 0, connection.ops.adapt_datetimefield_value(since)
    return [pk, moment, pk, moment, moment]


def open_generations(rater: Optional[Rater] = None, today: Optional[datetime.datetime] = None) -> list[Generation]:
    """Generations open for human raters, with their experiments, in one query. Each also carries what
    a rater's counters need: `voted_open` (the rater's votes on its samples still needing votes) and
    `rated_today` (their votes and gold answers since `today`, the same on every row); zero without one."""
    today = today or timezone.now()
    config_field = Experiment._meta.get_field("config")
    with sql_cursor() as cursor:
        cursor.execute(_sql(_OPEN_GENERATIONS_SQL), [
            rater.pk if rater else 0, *_rated_since_params(rater, today), Experiment.Status.RUNNING,
        ])
        rows = cursor.fetchall()
    generations = []
    for pk, experiment_id, index, votes_needed, needing, state, name, config, voted_open, rated in rows:
        experiment = loaded(Experiment(id=experiment_id, name=name, status=Experiment.Status.RUNNING,
                                        config=config_field.from_db_value(config, None, connection)))
        generation = loaded(Generation(id=pk, experiment_id=experiment_id, index=index, votes_needed=votes_needed,
                                        samples_needing_votes=needing, state=state, open_for_raters=True))
        generation.experiment = experiment
        generation.voted_open, generation.rated_today = voted_open, rated
        generations.append(generation)
    return generations


def _start_of_day(clock: Clock) -> datetime.datetime:
    return timezone.localtime(clock()).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class _Held:
    """A claim as the queue reads it: its token, its item, and whether it still holds a slot."""
    pk: int
    rater_id: int
    token: str
    sample_id: Optional[int]
    gold_item_id: Optional[int]
    live: bool
    generation_id: Optional[int]  # of its sample
    needs_votes: bool  # its sample's
    experiment_id: Optional[int]  # of its gold item


@dataclass
class _Candidate:
    pk: int
    generation_id: int
    vote_count: int
    rating_rank: float


@dataclass
class _Gold:
    pk: int
    experiment_id: int


_CLAIMS_SQL = """
SELECT c.id, c.rater_id, c.token, c.sample_id, c.gold_item_id, c.expires_at > %s, s.generation_id, s.needs_votes,
       gi.experiment_id
FROM {claim} c LEFT JOIN {sample} s ON s.id = c.sample_id LEFT JOIN {golditem} gi ON gi.id = c.gold_item_id
WHERE (c.rater_id = %s AND c.expires_at > %s) {or_samples}
ORDER BY c.created_at, c.id
"""
_GOLD_SQL = """
SELECT gi.id, gi.experiment_id FROM {golditem} gi
WHERE gi.experiment_id IN ({experiments})
  AND NOT EXISTS (SELECT 1 FROM {claim} c WHERE c.rater_id = %s AND c.gold_item_id = gi.id)
ORDER BY random() LIMIT %s
"""


def _placeholders(values) -> str:
    return ", ".join(["%s"] * len(values))


def next_items(*, rater: Rater, count: int, exclude: tuple = (), clock: Clock = timezone.now, rng=None,
               with_counters: bool = False):
    """Up to `count` items for the rater, claimed for them: first those served to them before and still
    held (less the tokens in `exclude`, which the page already has), then fresh samples in rank order,
    with gold items mixed in. With `with_counters`, returns (items, Counters)."""
    if not rater.active:
        raise CurationError(f"rater {rater.name} is paused: {rater.paused_reason or 'ask staff'}")
    now = clock()
    exclude = set(exclude)
    with transaction.atomic():
        commit_without_flush()  # claims are leases: one lost in a crash is served again, not miscounted
        generations = open_generations(rater, _start_of_day(clock)) if with_counters else open_generations()
        by_id = {g.pk: g for g in generations}
        latest_open = {g.experiment_id: g for g in generations}  # ordered by pk: the newest wins
        rating_settings = {g.experiment_id: _settings(g.experiment.config) for g in generations}
        fresh = _candidates(rater, generations, count, now)
        # One query for both: the rater's live claims, and every claim on the candidates (locked now, so
        # nobody adds to them before this transaction ends).
        claims = _claims(rater, [s.pk for s in fresh], now)
        mine = [c for c in claims if c.rater_id == rater.pk and c.live]
        held = [c for c in mine if c.token not in exclude and _still_open(c, by_id, latest_open)]
        lapsed = {c.sample_id: c for c in claims if c.rater_id == rater.pk and not c.live}
        others: dict[int, int] = {}
        for c in claims:
            if c.rater_id != rater.pk and c.live:
                others[c.sample_id] = others.get(c.sample_id, 0) + 1
        room = max(0, count - len(held))
        chosen = [s for s in fresh if s.vote_count + others.get(s.pk, 0) < by_id[s.generation_id].votes_needed][:room]
        gold = _pick_gold(rater, chosen, by_id, rating_settings, rng)
        new_claims = _claim(rater, chosen, gold, by_id, rating_settings, lapsed, now)

    items = [_held_item(c, by_id, latest_open) for c in held[:count]]
    items += _interleave([_held_item(c, by_id, latest_open) for c in new_claims if c.sample_id],
                         [_held_item(c, by_id, latest_open) for c in new_claims if c.gold_item_id], rng)
    if not with_counters:
        return items
    served_gold = {}
    for c in [c for c in mine if c.gold_item_id] + [c for c in new_claims if c.gold_item_id]:
        generation = latest_open.get(c.experiment_id)
        if generation is not None:
            served_gold[generation.pk] = served_gold.get(generation.pk, 0) + 1
    return items, counters(rater=rater, generations=generations, served_gold=served_gold, clock=clock)


def _candidates(rater: Rater, generations: list[Generation], count: int, now) -> list[_Candidate]:
    """Open samples the rater has neither voted on nor holds, that others' live claims leave room in,
    in rank order: one query per open generation (they are few), each walking the (generation,
    rating_rank) queue index and stopping at its limit. On PostgreSQL the rows are locked, skipping
    rows another claimer or voter holds.

    The rater's votes and claims are excluded with `NOT IN`, which PostgreSQL evaluates once into a hash
    whatever its statistics say: as `NOT EXISTS` it became a nested loop over the rater's votes for each
    row walked whenever the statistics had seen the rater with few votes (30 ms with 400 votes). Only
    open votes are needed: the samples walked all need votes."""
    sql = _sql(_CANDIDATES_SQL)
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE OF s SKIP LOCKED"
    moment = connection.ops.adapt_datetimefield_value(now)
    found: list[_Candidate] = []
    with sql_cursor() as cursor:
        for generation in generations:
            cursor.execute(sql, [generation.pk, rater.pk, generation.pk, rater.pk, moment, rater.pk, moment,
                                 generation.votes_needed, count])
            found += [_Candidate(*row) for row in cursor.fetchall()]
    return sorted(found, key=lambda s: s.rating_rank)[:count]


def _claims(rater: Rater, sample_ids: list[int], now) -> list[_Held]:
    """The rater's live claims, and every claim (anyone's, live or not) on `sample_ids`."""
    moment = connection.ops.adapt_datetimefield_value(now)
    or_samples = f"OR c.sample_id IN ({_placeholders(sample_ids)})" if sample_ids else ""
    with sql_cursor() as cursor:
        cursor.execute(_sql(_CLAIMS_SQL.replace("{or_samples}", or_samples)), [moment, rater.pk, moment, *sample_ids])
        return [_Held(pk, rater_id, token, sample_id, gold_item_id, bool(live), generation_id, bool(needs_votes),
                      experiment_id)
                for pk, rater_id, token, sample_id, gold_item_id, live, generation_id, needs_votes, experiment_id
                in cursor.fetchall()]


def _still_open(claim: _Held, by_id: dict, latest_open: dict) -> bool:
    if claim.sample_id is not None:
        return claim.generation_id in by_id and claim.needs_votes
    return claim.experiment_id in latest_open


def _held_item(claim: _Held, by_id: dict, latest_open: dict) -> dict:
    if claim.sample_id is not None:
        generation = by_id[claim.generation_id]
    else:
        generation = latest_open[claim.experiment_id]
    return _item(claim.token, generation.experiment, generation)


def _pick_gold(rater: Rater, chosen: list[_Candidate], by_id: dict, rating_settings: dict, rng) -> list[_Gold]:
    """Gold items to mix in: each fresh sample brings one along with its experiment's `gold_rate`. A gold
    item is served to a rater once (answered or not), so a held or lapsed one never comes back."""
    if not chosen:
        return []
    rng = rng or np.random.default_rng()
    wanted: dict[int, int] = {}
    for sample in chosen:
        experiment_id = by_id[sample.generation_id].experiment_id
        if rng.random() < rating_settings[experiment_id].gold_rate:
            wanted[experiment_id] = wanted.get(experiment_id, 0) + 1
    if not wanted:
        return []
    experiments = list(wanted)
    with sql_cursor() as cursor:
        cursor.execute(_sql(_GOLD_SQL.replace("{experiments}", _placeholders(experiments))),
                       [*experiments, rater.pk, sum(wanted.values()) * 4])
        candidates = [_Gold(*row) for row in cursor.fetchall()]
    picked = []
    for gold in candidates:
        if wanted.get(gold.experiment_id, 0) > 0:
            wanted[gold.experiment_id] -= 1
            picked.append(gold)
    return picked


def _claim(rater: Rater, samples: list[_Candidate], gold: list[_Gold], by_id: dict, rating_settings: dict,
           lapsed: dict, now) -> list[_Held]:
    """Claims for the chosen items: new ones in one insert; a sample's claim the rater let lapse before
    is renewed in place, keeping its token (the page may still show it)."""
    claims, expiry = [], {}
    for item in list(samples) + list(gold):
        if isinstance(item, _Candidate):
            experiment_id = by_id[item.generation_id].experiment_id
            claim = lapsed.get(item.pk) or _Held(None, rater.pk, new_claim_token(), item.pk, None, True,
                                                 item.generation_id, True, None)
        else:
            experiment_id = item.experiment_id
            claim = _Held(None, rater.pk, new_claim_token(), None, item.pk, True, None, False, experiment_id)
        minutes = rating_settings[experiment_id].claim_minutes
        expiry[id(claim)] = connection.ops.adapt_datetimefield_value(now + datetime.timedelta(minutes=minutes))
        claims.append(claim)
    table = Claim._meta.db_table
    with sql_cursor() as cursor:
        for claim in claims:
            if claim.pk is not None:  # few: a lapsed claim comes back only when its sample is chosen again
                cursor.execute(f"UPDATE {table} SET expires_at = %s WHERE id = %s", [expiry[id(claim)], claim.pk])
        new = [c for c in claims if c.pk is None]
        if new:
            created = connection.ops.adapt_datetimefield_value(now)
            cursor.execute(
                f"INSERT INTO {table} (rater_id, sample_id, gold_item_id, token, expires_at, created_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(new)),
                [value for c in new for value in (rater.pk, c.sample_id, c.gold_item_id, c.token, expiry[id(c)], created)],
            )
    return claims


def _interleave(samples: list[dict], gold: list[dict], rng) -> list[dict]:
    """Gold items at random places among the samples."""
    if not gold:
        return samples
    rng = rng or np.random.default_rng()
    items = list(samples)
    for item in gold:
        items.insert(int(rng.integers(0, len(items) + 1)), item)
    return items


@dataclass(frozen=True)
class Counters:
    rated_today: int
    left: int  # items in open generations this rater can still vote on
    left_by_generation: dict  # generation id -> the same, per generation


def counters(*, rater: Rater, generations: Optional[list[Generation]] = None, served_gold: Optional[dict] = None,
             clock: Clock = timezone.now) -> Counters:
    """What the rater did today (votes and gold answers, less those undone), and what is left for them
    per open generation: its samples still needing votes (kept on the generation row) less those they
    voted on, plus gold items served to them and not yet answered, so that the count goes down by one
    with every item, sample or gold. `generations` come from `open_generations(rater, ...)`."""
    if generations is None:
        generations = open_generations(rater, _start_of_day(clock))
        served_gold = {}
        latest_open = {g.experiment_id: g for g in generations}
        for claim in Claim.objects.filter(rater=rater, gold_item__isnull=False, expires_at__gt=clock()).select_related(
                "gold_item"):
            generation = latest_open.get(claim.gold_item.experiment_id)
            if generation is not None:
                served_gold[generation.pk] = served_gold.get(generation.pk, 0) + 1
    by_generation = {
        g.pk: max(0, g.samples_needing_votes - g.voted_open) + (served_gold or {}).get(g.pk, 0) for g in generations
    }
    rated = generations[0].rated_today if generations else rated_today(rater=rater, clock=clock)
    return Counters(rated_today=rated, left=sum(by_generation.values()), left_by_generation=by_generation)


def rated_today(*, rater: Rater, clock: Clock = timezone.now) -> int:
    """The rater's votes and gold answers today, less those undone."""
    with sql_cursor() as cursor:
        cursor.execute("SELECT " + _sql(_RATED_SINCE_SQL), _rated_since_params(rater, _start_of_day(clock)))
        return cursor.fetchone()[0]
