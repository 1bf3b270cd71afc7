"""Quotas under a crowd: many real HTTP clients rate at once against a running server, and every
sample ends with exactly the votes it needs, none more, with no vote lost or doubled. Runs on the
database the suite runs on (PostgreSQL in CI's first pass, SQLite in its embedded pass)."""

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db.models import Count
from django.test import Client

from curation.models import Claim, Sample, Vote, VoteEvent
from tests.curation.factories import human_rater, open_generation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.embedded]

RATERS = 24
SAMPLES = 60
VOTES_NEEDED = 3


def signed_in(live_server, user) -> requests.Session:
    """An HTTP session signed in as `user`, with the CSRF cookie the rating page sets."""
    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    page = session.get(f"{live_server.url}/rate/", timeout=30, allow_redirects=False)
    assert page.status_code == 200, page.status_code
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    return session


def rate_until_empty(live_server, session, acknowledged: list, statuses: Counter, lock) -> None:
    """What the rating page does: fetch a batch, vote on each item with a fresh request id (a few
    sent twice, as a retry would), until the queue has nothing left for this rater."""
    while True:
        reply = session.get(f"{live_server.url}/rate/api/next?count=4", timeout=60)
        assert reply.status_code == 200, reply.text
        items = reply.json()["items"]
        if not items:
            return
        for n, item in enumerate(items):
            request_id = uuid.uuid4().hex
            for _ in range(2 if n == 0 else 1):  # the first of each batch is replayed
                vote = session.post(f"{live_server.url}/rate/api/vote", timeout=60,
                                    json={"token": item["token"], "up": n % 2 == 0, "request_id": request_id})
                with lock:
                    statuses[vote.status_code] += 1
                assert vote.status_code in (200, 409), vote.text
                if vote.status_code == 200:
                    with lock:
                        acknowledged.append(request_id)


def test_many_concurrent_raters_fill_every_quota_exactly(live_server, tiny_config, monkeypatch):
    from curation import tasks

    curations = []  # the last needed vote queues curation; its running is not this test's business
    monkeypatch.setattr(tasks, "enqueue", curations.append)
    generation = open_generation(tiny_config, samples=SAMPLES, votes_needed=VOTES_NEEDED, gold_rate=0.1)
    sessions = [signed_in(live_server, human_rater(f"rater{n:02d}").user) for n in range(RATERS)]
    acknowledged, statuses, lock = [], Counter(), threading.Lock()
    barrier = threading.Barrier(RATERS)

    def rater(session):
        barrier.wait()  # all start together: the worst case for claims
        rate_until_empty(live_server, session, acknowledged, statuses, lock)

    with ThreadPoolExecutor(RATERS) as pool:
        for future in [pool.submit(rater, s) for s in sessions]:
            future.result()

    per_sample = dict(Vote.objects.values_list("sample_id").annotate(n=Count("pk")))
    assert len(per_sample) == SAMPLES, "a sample went unrated while raters ran dry"
    assert set(per_sample.values()) == {VOTES_NEEDED}, f"votes per sample: {Counter(per_sample.values())}"
    assert all(s.vote_count == VOTES_NEEDED and not s.needs_votes for s in Sample.objects.all())
    # Nothing lost, nothing doubled: every acknowledged request is in the history exactly once.
    events = VoteEvent.objects.filter(action="vote", request_id__in=set(acknowledged))
    assert events.count() == len(set(acknowledged))
    assert VoteEvent.objects.filter(action="vote", sample__isnull=False).count() == SAMPLES * VOTES_NEEDED
    generation.refresh_from_db()
    assert generation.state == "curating" and not generation.open_for_raters
    assert curations == [generation.pk]  # queued once, by the one vote that completed the generation
    assert not Claim.objects.filter(sample__isnull=False).values("rater", "sample").annotate(n=Count("pk")).filter(n__gt=1)
