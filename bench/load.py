"""Load benchmark of the rating path: concurrent raters log in and vote as the rating page does
against a real server on 127.0.0.1, then the database is checked for lost, duplicated and over-quota
votes. The same scenarios run against the code before the change (a git worktree of `--baseline`).

Scenarios (each bounded by `--duration`, default 60 s):

- embedded: `manage.py runserver` + SQLite (the embedded default), 50 raters thinking ~2 s a vote;
- embedded-saturation: the same server, 50 raters with no think time;
- gunicorn: gunicorn as docker-compose.yml runs it (DEBUG=0) + PostgreSQL, 200 raters, ~2 s a vote;
- gunicorn-saturation: the same server, 50 raters with no think time.

Each scenario opens a fresh generation of `--samples` samples needing 3 votes each (rows written
with the ORM, no training; one tiny PNG shared by every sample) and new rater accounts. A rater
signs in through /accounts/login/, prefetches 8 items from /rate/api/next and refills when half
are used (excluding the items still queued), votes with a fresh request id per vote, replays some
votes (same request id), retries network errors and 5xx with backoff, and moves on after a 4xx,
as /static/curation/rate.js does. Writes bench/results/load.md and load.json.

    eval "$(bin/services)"   # PostgreSQL for the gunicorn scenarios (without it they are skipped)
    .venv/bin/python bench/load.py [--scenarios embedded,gunicorn] [--baseline d4f5fc0|none]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_BASELINE = "d4f5fc0"  # main before the rating path was hardened (issue 11)
PREFETCH = 8  # as the rating page asks for


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "runserver" or "gunicorn"
    raters: int
    think_s: float  # mean seconds between a rater's votes; 0: as fast as the server answers
    target_p99_ms: tuple[float, float] | None = None  # (vote, next), from issue 11




SCENARIOS = {
    s.name: s
    for s in (
        Scenario("embedded", "runserver", raters=50, think_s=2.0, target_p99_ms=(250, 250)),
        Scenario("embedded-saturation", "runserver", raters=50, think_s=0.0),
        Scenario("gunicorn", "gunicorn", raters=200, think_s=2.0, target_p99_ms=(100, 150)),
        Scenario("gunicorn-saturation", "gunicorn", raters=50, think_s=0.0),
    )
}


# --- inside the server's code: prepare a generation, check the votes ---------------------------
# These run in a child process whose working directory is the code under test (this tree or the
# baseline worktree), with the server's environment, so they use that code's models.


def _django(code_root: str) -> None:
    sys.path.insert(0, code_root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def prepare(code_root: str, label: str, samples: int, raters: int, votes_needed: int, out: str) -> None:
    """A running experiment whose G0 is open for rating with `samples` samples, and rater accounts."""
    _django(code_root)
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from curation import media
    from curation.images import encode_png
    from curation.ml.experiment_config import preset
    from curation.models import Generation, Rater, Sample
    from curation.services import create_experiment, ensure_gold_items, start_experiment

    # Close what an earlier scenario left open, so that its items are not in these raters' queues.
    Generation.objects.filter(open_for_raters=True).update(open_for_raters=False)
    # Gold items are mixed in as on any human-rated experiment; the bar is 0 so that a rater voting
    # at random is never paused (a pause would flag votes and blur the quota figures).
    config = preset("digits-tiny").replace(**{
        "rating.raters": "human", "rating.votes_per_sample": votes_needed, "rating.gold_accuracy_bar": 0.0,
        "rating.gold_real_items": 20, "rating.gold_bad_items": 20,
    })
    experiment = create_experiment(name=f"load {label}", config=config)
    generation = start_experiment(experiment=experiment)
    image = media.write(f"experiments/{experiment.pk}/g000/samples/load.png",
                             encode_png(np.full((1, 8, 8), 0.5, dtype=np.float32)))
    rng = np.random.default_rng(0)
    Sample.objects.bulk_create(
        [Sample(generation=generation, index=i, seed=i, sampler="ddim", steps=1, temperature=1.0, image=image,
                sha256=str(i), to_rate=True, needs_votes=True, rating_rank=float(r))
         for i, r in enumerate(rng.random(samples))],
        batch_size=2000,
    )
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.RATING, votes_needed=votes_needed)
    try:  # the service that opens a generation, where the code has one (it keeps the queue's counters)
        from curation.rating import open_for_rating
    except ImportError:
        Generation.objects.filter(pk=generation.pk).update(open_for_raters=True)
    else:
        open_for_rating(Generation.objects.get(pk=generation.pk))
    ensure_gold_items(experiment=experiment)
    password = secrets.token_urlsafe(12)
    hashed = make_password(password)  # once: the same password for every account
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"load-{label}-{n:03d}", password=hashed) for n in range(raters)])
    Rater.objects.bulk_create([Rater(name=u.username, kind=Rater.Kind.HUMAN, user=u) for u in users])
    Path(out).write_text(json.dumps({
        "generation": generation.pk, "usernames": [u.username for u in users], "password": password}))


def check(code_root: str, generation_id: int, acks_file: str, out: str) -> None:
    """Integrity of the votes after a run: every acknowledged vote stored once, no quota exceeded."""
    _django(code_root)
    from django.db.models import Count, Q

    from curation.models import Generation, GoldAnswer, Sample, Vote, VoteEvent

    run = json.loads(Path(acks_file).read_text())
    generation = Generation.objects.get(pk=generation_id)
    needed = generation.votes_needed
    usernames = set(run["usernames"])
    votes = Vote.objects.filter(rater__user__username__in=usernames)
    vote_pairs = set(votes.values_list("rater__user__username", "sample_id"))
    gold_pairs = set(GoldAnswer.objects.filter(rater__user__username__in=usernames)
                     .values_list("rater__user__username", "gold_item_id"))
    events = list(VoteEvent.objects.filter(rater__user__username__in=usernames, action="vote")
                  .values_list("rater__user__username", "request_id", "sample_id", "gold_item_id"))
    # Request ids are stored as sent, or (per-rater ids) with a prefix: match either.
    by_request: dict[tuple[str, str], list] = {}
    for user, request_id, sample_id, gold_id in events:
        by_request.setdefault((user, request_id.rsplit(":", 1)[-1]), []).append((sample_id, gold_id))

    lost, recorded_twice = [], []
    for user, request_id, replayed in run["acks"]:
        found = by_request.get((user, request_id), [])
        if not found:
            lost.append((user, request_id))
            continue
        sample_id, gold_id = found[0]
        if (sample_id is not None and (user, sample_id) not in vote_pairs) or (
                gold_id is not None and (user, gold_id) not in gold_pairs):
            lost.append((user, request_id))
        if len(found) > 1:
            recorded_twice.append((user, request_id, replayed))
    duplicate_votes = votes.values("rater", "sample").annotate(n=Count("pk")).filter(n__gt=1).count()
    served_twice = sum(1 for n in Counter((u, s) for u, _, s, _ in events if s is not None).values() if n > 1)

    samples = Sample.objects.filter(generation=generation, to_rate=True).annotate(
        counted=Count("votes", filter=Q(votes__flagged=False)))
    counted = list(samples.values_list("counted", "vote_count"))
    histogram = Counter(c for c, _ in counted)
    over = [c for c, _ in counted if c > needed]
    generation.refresh_from_db()
    Path(out).write_text(json.dumps({
        "acknowledged": len(run["acks"]),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "duplicated": duplicate_votes + len(recorded_twice),
        "duplicate_vote_rows": duplicate_votes,
        "replays_recorded_twice": len(recorded_twice),
        "served_twice": served_twice,
        "over_quota": len(over),
        "max_votes_on_a_sample": max((c for c, _ in counted), default=0),
        "surplus_votes": sum(c - needed for c in over),
        "unrated": sum(1 for c, _ in counted if c < needed),
        "unrated_no_vote": histogram.get(0, 0),
        "votes_per_sample": {str(k): v for k, v in sorted(histogram.items())},
        "counter_drift": sum(1 for c, stored in counted if c != stored),
        "votes_stored": sum(c for c, _ in counted),
        "generation_state": generation.state,
    }))


# --- the raters --------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0)}


@dataclass
class Tally:
    """What every rater saw, merged: latencies by endpoint, statuses, acknowledged votes."""

    latency: dict = field(default_factory=lambda: {"vote": [], "next": [], "replay": [], "login": []})
    errors: Counter = field(default_factory=Counter)  # "vote 400", "next network", ...
    messages: Counter = field(default_factory=Counter)
    acks: list = field(default_factory=list)  # (username, request_id, replayed)
    skipped: int = 0  # votes the server no longer needed (409 with "skip")
    replays: int = 0
    replays_acked: int = 0
    unsent: int = 0
    dry: int = 0
    protocols: Counter = field(default_factory=Counter)
    first_ack: float = math.inf
    last_ack: float = 0.0


class Rater:
    """One rater's browser tab: a queue of prefetched items and an outbox that sends in order."""

    def __init__(self, base: str, username: str, password: str, tally: Tally, *, think_s: float,
                 replay_rate: float, deadline: float, grace_s: float, seed: int):
        self.base, self.username, self.password, self.tally = base, username, password, tally
        self.think_s, self.replay_rate, self.deadline, self.grace_s = think_s, replay_rate, deadline, grace_s
        self.rng = random.Random(seed)
        self.queue: list[dict] = []
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.fetching = False
        self.empty_fetches = 0
        self.arrived = asyncio.Event()
        self.csrf = ""
        self.session = None

    async def login(self, aiohttp) -> None:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
        self.session = aiohttp.ClientSession(base_url=self.base, cookie_jar=jar,
                                             timeout=aiohttp.ClientTimeout(total=60))
        started = time.perf_counter()
        async with self.session.get("/accounts/login/") as response:
            page = await response.text()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        async with self.session.post("/accounts/login/", allow_redirects=False, data={
                "username": self.username, "password": self.password, "csrfmiddlewaretoken": token, "next": "/rate/"},
                headers={"Referer": f"{self.base}/accounts/login/"}) as response:
            if response.status != 302:
                raise RuntimeError(f"login as {self.username}: HTTP {response.status}")
        self.tally.latency["login"].append(time.perf_counter() - started)
        async with self.session.get("/rate/") as response:  # the page, whose form carries the CSRF token
            page = await response.text()
            if response.status != 200:
                raise RuntimeError(f"/rate/ as {self.username}: HTTP {response.status}")
        self.csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    @staticmethod
    def key(item: dict) -> str:
        return item["token"] if "token" in item else f"{item['kind']}:{item['id']}"

    async def request(self, endpoint: str, method: str, url: str, body: dict | None = None):
        """One request, retried with backoff on network errors and 5xx; (status, data) or None."""
        import aiohttp

        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                headers = {"Accept": "application/json"}
                if body is not None:
                    headers["X-CSRFToken"] = self.csrf
                async with self.session.request(method, url, json=body, headers=headers) as response:
                    status = response.status
                    try:
                        data = await response.json(content_type=None)
                    except ValueError:
                        data = {}
                self.tally.latency[endpoint].append(time.perf_counter() - started)
                if status < 500:
                    return status, data if isinstance(data, dict) else {}
                self.tally.errors[f"{endpoint} {status}"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.tally.errors[f"{endpoint} network"] += 1
            attempt += 1
            if time.perf_counter() > self.deadline + self.grace_s:
                return None
            await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt))

    async def fetch(self, exclude: str) -> None:
        url = f"/rate/api/next?count={PREFETCH}&exclude={urllib.parse.quote(exclude, safe='')}"
        answer = await self.request("next", "GET", url)
        self.fetching = False
        if answer is None:
            return
        status, data = answer
        if status != 200:
            self.tally.errors[f"next {status}"] += 1
            self.tally.messages[f"next {status}: {str(data.get('error', ''))[:90]}"] += 1
            self.empty_fetches += 1
            self.arrived.set()
            return
        known = {self.key(i) for i in self.queue}
        fresh = [i for i in data.get("items", []) if self.key(i) not in known]
        for item in fresh:
            self.tally.protocols["new" if "token" in item else "old"] += 1
        self.empty_fetches = 0 if fresh else self.empty_fetches + 1
        self.queue += fresh
        self.arrived.set()

    async def vote(self, item: dict, up: bool) -> None:
        request_id = secrets.token_urlsafe(16)
        body = ({"token": item["token"]} if "token" in item else {"kind": item["kind"], "id": item["id"]})
        body |= {"up": up, "request_id": request_id}
        answer = await self.request("vote", "POST", "/rate/api/vote", body)
        if answer is None:
            return
        status, data = answer
        if status != 200:
            if status == 409 and data.get("skip"):
                self.tally.skipped += 1
            else:
                self.tally.errors[f"vote {status}"] += 1
                self.tally.messages[f"vote {status}: {str(data.get('error', ''))[:90]}"] += 1
            return
        now = time.perf_counter()
        self.tally.first_ack, self.tally.last_ack = min(self.tally.first_ack, now), max(self.tally.last_ack, now)
        replayed = self.rng.random() < self.replay_rate
        self.tally.acks.append((self.username, request_id, replayed))
        if replayed:  # as a retry whose first answer was lost would: the same request again
            self.tally.replays += 1
            again = await self.request("replay", "POST", "/rate/api/vote", body)
            if again is not None and again[0] == 200:
                self.tally.replays_acked += 1
            elif again is not None:
                self.tally.errors[f"replay {again[0]}"] += 1
                self.tally.messages[f"replay {again[0]}: {str(again[1].get('error', ''))[:90]}"] += 1

    def refill(self) -> None:
        if self.fetching or len(self.queue) > PREFETCH / 2:
            return
        self.fetching = True
        self.arrived.clear()
        # Excluded: what is queued now; votes made after this go out after the fetch (rate.js).
        exclude = ",".join(self.key(i) for i in self.queue)
        self.outbox.put_nowait(lambda: self.fetch(exclude))

    async def send(self) -> None:
        """The outbox: votes and fetches go out one after another, in the order they were made."""
        while True:
            operation = await self.outbox.get()
            if operation is None:
                return
            if time.perf_counter() > self.deadline + self.grace_s:
                self.tally.unsent += 1
                continue
            await operation()

    async def rate(self, start_delay: float) -> None:
        """The person at the keyboard: looks at the item on screen for a while, then votes."""
        await asyncio.sleep(start_delay)
        self.refill()
        while time.perf_counter() < self.deadline:
            if not self.queue:
                if not self.fetching and self.empty_fetches >= 3:
                    self.tally.dry += 1  # nothing left for this rater
                    break
                if not self.fetching and self.empty_fetches:
                    await asyncio.sleep(1.0)
                    self.refill()
                try:
                    await asyncio.wait_for(self.arrived.wait(), timeout=max(0.01, self.deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    break
                continue
            if self.think_s:
                await asyncio.sleep(self.think_s * self.rng.uniform(0.5, 1.5))
                if time.perf_counter() >= self.deadline:
                    break
            item = self.queue.pop(0)
            up = self.rng.random() < 0.5
            self.outbox.put_nowait(lambda item=item, up=up: self.vote(item, up))
            self.refill()
            if not self.think_s:
                await asyncio.sleep(0)  # let the outbox run

    async def run(self, start_delay: float) -> None:
        sender = asyncio.create_task(self.send())
        try:
            await self.rate(start_delay)
        finally:
            self.outbox.put_nowait(None)
            await sender
            await self.session.close()


async def load(base: str, usernames: list[str], password: str, *, think_s: float, duration_s: float,
               replay_rate: float, login_concurrency: int, seed: int) -> tuple[Tally, dict]:
    import aiohttp

    tally = Tally()
    raters = [Rater(base, name, password, tally, think_s=think_s, replay_rate=replay_rate, deadline=math.inf,
                    grace_s=15.0, seed=seed + n) for n, name in enumerate(usernames)]
    gate = asyncio.Semaphore(login_concurrency)

    async def login(rater: Rater) -> None:
        async with gate:
            await rater.login(aiohttp)

    started = time.perf_counter()
    await asyncio.gather(*(login(r) for r in raters))
    login_s = time.perf_counter() - started
    begin = time.perf_counter()
    for rater in raters:
        rater.deadline = begin + duration_s
    # Paced raters arrive spread over one think time; saturating raters all at once.
    await asyncio.gather(*(r.run(random.Random(seed + n).uniform(0, think_s)) for n, r in enumerate(raters)))
    end = time.perf_counter()
    timing = {"login_s": round(login_s, 1), "begin": begin, "end": end, "elapsed_s": round(end - begin, 1)}
    return tally, timing


def summarize(tally: Tally, timing: dict, raters: int, duration_s: float) -> dict:
    acked = len(tally.acks)
    window = (tally.last_ack - timing["begin"]) if acked else 0.0
    return {
        "protocol": "/".join(sorted(tally.protocols)) or "?",
        "votes_acked": acked,
        "votes_per_s": round(acked / window, 1) if window > 0 else 0.0,
        "window_s": round(window, 1),
        "ended": "queue empty" if tally.dry == raters else
                 ("time bound" if timing["elapsed_s"] >= duration_s else f"{tally.dry} of {raters} raters ran dry"),
        "raters_dry": tally.dry,
        "login_s": timing["login_s"],
        "latency_ms": {k: percentiles(v) for k, v in tally.latency.items()},
        "errors": dict(sorted(tally.errors.items())),
        "error_messages": dict(tally.messages.most_common(8)),
        "skipped_409": tally.skipped,
        "replays_sent": tally.replays,
        "replays_acked": tally.replays_acked,
        "unsent_at_end": tally.unsent,
    }


# --- servers and databases ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CACHE_DB = 15  # the Redis database the production scenarios' cache uses (sessions, throttles), emptied first


def server_environment(var_dir: Path, database_url: str | None, production: bool) -> dict:
    redis_url = os.environ.get("REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_"))}
    for name in ("REDIS_URL", "CACHE_URL", "SECRET_KEY", "DEBUG", "HTTPS", "ALLOWED_HOSTS", "MEDIA_ROOT", "STATIC_ROOT",
                 "CSRF_TRUSTED_ORIGINS", "PYTHONPATH"):
        env.pop(name, None)
    # The broker stays on the filesystem in the run's folder: a generation whose rating completes
    # queues its curation there, where no worker takes it (nothing reaches a shared Redis).
    env |= {"OUROBOROS_VAR_DIR": str(var_dir), "ALLOWED_HOSTS": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    if database_url:
        env["DATABASE_URL"] = database_url
    if production:  # as docker-compose.yml runs the web service, over plain HTTP on loopback
        env |= {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "HTTPS": "0"}
        if redis_url:  # its cache on Redis, as compose's CACHE_URL (the broker stays on the filesystem)
            import redis

            cache_url = urllib.parse.urlparse(redis_url)._replace(path=f"/{CACHE_DB}").geturl()
            redis.Redis.from_url(cache_url).flushdb()
            env["CACHE_URL"] = cache_url
    return env


def gunicorn_command(code_root: Path, port: int) -> list[str]:
    """The compose file's web command (workers, timeout...), bound to loopback."""
    import yaml

    command = yaml.safe_load((code_root / "docker-compose.yml").read_text())["services"]["web"]["command"]
    if isinstance(command, str):
        command = command.split()
    command = list(command)
    for flag in ("--bind", "-b"):
        if flag in command:
            command[command.index(flag) + 1] = f"127.0.0.1:{port}"
    if command[0] == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", *command[1:]]
    return command


def run_child(args: list[str], code_root: Path, env: dict, log: Path, timeout: float = 600) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(args, cwd=code_root, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} failed; see the end of {log}:\n" + log.read_text()[-3000:])


@contextmanager
def server(code_root: Path, kind: str, env: dict, log: Path):
    port = free_port()
    if kind == "gunicorn":
        command = gunicorn_command(code_root, port)
    else:
        command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    out = open(log, "ab")
    process = subprocess.Popen(command, cwd=code_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}); see {log}:\n" + log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/healthz/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the server did not answer on {base} within 120 s")
            time.sleep(0.5)
        yield base, " ".join(Path(c).name if c == sys.executable else c for c in command)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (gunicorn's workers too)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.close()


@contextmanager
def postgres_database(url: str, name: str):
    """A database of our own beside DATABASE_URL's, dropped afterwards."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlparse(url)._replace(path=f"/{name}").geturl()
    finally:
        # Our own clients have gone by now; an autovacuum worker still on it is cancelled by the DROP.
        # (WITH (FORCE) would need rights over other roles' sessions, which the app's role lacks.)
        for attempt in range(10):
            try:
                with psycopg.connect(url, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(1)


@contextmanager
def worktree(ref: str, folder: Path, name: str):
    """A checkout of `ref` outside this repository, removed afterwards."""
    path = folder / name
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), ref], cwd=ROOT, check=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True,
                                check=True).stdout.strip()
        yield path, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def run_stack(code_root: Path, kind: str, scenarios: list[Scenario], args, folder: Path, label: str) -> dict:
    """One server (and database) for the scenarios of one kind, each scenario on its own generation."""
    var_dir = folder / f"var-{label}-{kind}"
    var_dir.mkdir()
    log = folder / f"{label}-{kind}.log"
    production = kind == "gunicorn"
    results = {}
    with _database(kind, label) as database_url:
        env = server_environment(var_dir, database_url, production)
        if production:
            env["STATIC_ROOT"] = str(var_dir / "static")
        script = str(Path(__file__).resolve())
        began = time.time()
        run_child([sys.executable, "manage.py", "migrate", "--noinput"], code_root, env, log)
        if production:
            run_child([sys.executable, "manage.py", "collectstatic", "--noinput"], code_root, env, log)
        with server(code_root, kind, env, log) as (base, command):
            print(f"[{label}] {kind} up on {base} after {time.time() - began:.0f} s", flush=True)
            for scenario in scenarios:
                print(f"[{label}] {scenario.name}: preparing {args.samples} samples, {scenario.raters} raters", flush=True)
                prepared = folder / f"{label}-{scenario.name}-prepared.json"
                run_child([sys.executable, script, "_prepare", str(code_root), scenario.name.replace("-", ""),
                           str(args.samples), str(scenario.raters), str(args.votes_needed), str(prepared)],
                          code_root, env, log)
                setup = json.loads(prepared.read_text())
                began, load_before = time.time(), os.getloadavg()[0]
                tally, timing = asyncio.run(load(
                    base, setup["usernames"], setup["password"], think_s=scenario.think_s,
                    duration_s=args.duration, replay_rate=args.replay_rate, login_concurrency=4,
                    seed=args.seed))
                summary = summarize(tally, timing, scenario.raters, args.duration)
                acks = folder / f"{label}-{scenario.name}-acks.json"
                acks.write_text(json.dumps({"usernames": setup["usernames"], "acks": tally.acks}))
                integrity = folder / f"{label}-{scenario.name}-integrity.json"
                run_child([sys.executable, script, "_check", str(code_root), str(setup["generation"]), str(acks),
                           str(integrity)], code_root, env, log)
                summary["integrity"] = json.loads(integrity.read_text())
                summary["wall_s"] = round(time.time() - began)
                summary["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                results[scenario.name] = {
                    "server_kind": kind, "server": command, "database": "PostgreSQL" if database_url else "SQLite",
                    "raters": scenario.raters, "think_s": scenario.think_s, "samples": args.samples,
                    "votes_needed": args.votes_needed, **summary}
                print(f"[{label}] {scenario.name}: " + one_line(results[scenario.name]), flush=True)
    return results


@contextmanager
def _database(kind: str, label: str):
    if kind != "gunicorn":
        yield None
        return
    with postgres_database(os.environ["DATABASE_URL"], f"ouroboros_load_{os.getpid()}_{label}") as url:
        yield url


def run_code(code_root: Path, scenarios: list[Scenario], args, folder: Path, label: str) -> dict:
    results = {}
    for kind in ("runserver", "gunicorn"):
        chosen = [s for s in scenarios if s.server == kind]
        if chosen:
            results |= run_stack(code_root, kind, chosen, args, folder, label)
    return results


# --- the report --------------------------------------------------------------------------------


def one_line(r: dict) -> str:
    v, n, i = r["latency_ms"]["vote"], r["latency_ms"]["next"], r["integrity"]
    return (f"{r['votes_acked']} votes, {r['votes_per_s']}/s; vote p50/p95/p99 {v.get('p50')}/{v.get('p95')}/"
            f"{v.get('p99')} ms; next p99 {n.get('p99')} ms; errors {r['errors'] or 0}; lost {i['lost']}, "
            f"duplicated {i['duplicated']}, over quota {i['over_quota']}, unrated {i['unrated']} ({r['ended']})")


def cell_latency(stats: dict) -> str:
    return f"{stats['p50']} / {stats['p95']} / {stats['p99']}" if stats.get("n") else "–"


def report(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Load: concurrent raters against a real server",
        "",
        f"{meta['date']}, {meta['cores']} CPU cores ({meta['machine']}), client and server on the same machine; "
        f"{meta['load_note']}. Code under test: `{meta['code']}`; baseline: `{meta['baseline'] or 'none'}`.",
        "",
        f"Each scenario: one generation of {meta['samples']} samples needing {meta['votes_needed']} votes each, gold "
        f"items mixed in at the preset's rate; raters sign in through `/accounts/login/`, prefetch {PREFETCH} items "
        "from `/rate/api/next` and refill at half, vote with a fresh request id (replaying "
        f"{meta['replay_rate']:.0%} of them), retry network errors and 5xx with backoff and move on after a 4xx, as "
        "`rate.js` does; images are not fetched. The gunicorn scenarios run as docker-compose.yml's web service does "
        "(DEBUG off, its workers, the cache and sessions on Redis, database connections kept). "
        f"Each run stops at the queue's end or after {meta['duration_s']:.0f} s. "
        "Think time is the mean pause between a rater's votes (uniform ±50 %); 0 is saturation. Latencies in ms "
        "(p50 / p95 / p99), measured by the client. Integrity is read from the database afterwards: *lost* = "
        "acknowledged (200) but not stored; *duplicated* = two vote rows for one rater and sample, or a replayed "
        "request recorded twice; *over quota* = samples with more counted votes than needed; *unrated* = samples "
        "short of their votes when the run ended.",
        "",
    ]
    for name, scenario in SCENARIOS.items():
        runs = [(code, results[code][name]) for code in ("baseline", "new") if name in results.get(code, {})]
        if not runs:
            continue
        first = runs[0][1]
        lines += [f"## {name}: {first['server_kind']} + {first['database']}, "
                  f"{scenario.raters} raters, think {scenario.think_s:g} s", "",
                  "| | " + " | ".join(f"{code} ({r['protocol']} protocol)" for code, r in runs) + " |",
                  "|---|" + "---|" * len(runs)]
        rows = [
            ("server", lambda r: f"`{r['server']}`"),
            ("ended", lambda r: f"{r['ended']} after {r['window_s']} s"),
            ("votes acknowledged", lambda r: r["votes_acked"]),
            ("votes/s", lambda r: r["votes_per_s"]),
            ("vote ms p50 / p95 / p99", lambda r: cell_latency(r["latency_ms"]["vote"])),
            ("next ms p50 / p95 / p99", lambda r: cell_latency(r["latency_ms"]["next"])),
            ("vote / next max ms", lambda r: f"{r['latency_ms']['vote'].get('max', '–')} / "
                                             f"{r['latency_ms']['next'].get('max', '–')}"),
            ("errors by status", lambda r: ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"),
            ("refused as not needed (409 skip)", lambda r: r["skipped_409"]),
            ("replays sent / acknowledged", lambda r: f"{r['replays_sent']} / {r['replays_acked']}"),
            ("lost / duplicated / over quota", lambda r: f"**{r['integrity']['lost']} / {r['integrity']['duplicated']}"
                                                         f" / {r['integrity']['over_quota']}**"),
            ("most votes on one sample", lambda r: r["integrity"]["max_votes_on_a_sample"]),
            ("unrated at the end (of which no vote)", lambda r: f"{r['integrity']['unrated']} "
                                                     f"({r['integrity']['unrated_no_vote']})"),
            ("raters that ran dry", lambda r: r["raters_dry"]),
            ("left unrated while every rater ran dry", lambda r: r["integrity"]["unrated"]
             if r["raters_dry"] == r["raters"] else "– (stopped by the time bound)"),
            ("machine load (1-min average) before / after", lambda r: " / ".join(map(str, r["load_average"]))),
            ("sign-in of all raters", lambda r: f"{r['login_s']} s (max {r['latency_ms']['login'].get('max')} ms)"),
        ]
        if scenario.target_p99_ms:
            vote_target, next_target = scenario.target_p99_ms

            def verdict(r: dict) -> str:
                v, n = r["latency_ms"]["vote"].get("p99", math.inf), r["latency_ms"]["next"].get("p99", math.inf)
                i = r["integrity"]
                ok = v < vote_target and n < next_target and not (i["lost"] or i["duplicated"] or i["over_quota"])
                return ("met" if ok else "**missed**") + f" (vote {v} ms, next {n} ms)"

            rows.append((f"target: p99 vote < {vote_target:g} ms, next < {next_target:g} ms, integrity 0/0/0", verdict))
        for title, value in rows:
            lines.append(f"| {title} | " + " | ".join(str(value(r)) for _, r in runs) + " |")
        messages = {m for _, r in runs for m in r["error_messages"]}
        if messages:
            lines += ["", "Error messages seen: " + "; ".join(
                f"{code}: " + ", ".join(f"`{m}` ×{n}" for m, n in r["error_messages"].items())
                for code, r in runs if r["error_messages"]) + "."]
        lines.append("")
    ratios = results.get("saturation_ratio", {})
    if ratios:
        lines += ["## Saturation throughput, new / baseline", ""]
        lines += [f"- {name}: {ratio}" for name, ratio in ratios.items()]
        lines.append("")
    return "\n".join(lines)


def machine_load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average before the run {one:.2f} (1 min) / {five:.2f} (5 min)"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_prepare":
        code_root, label, samples, raters, votes_needed, out = sys.argv[2:8]
        prepare(code_root, label, int(samples), int(raters), int(votes_needed), out)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_check":
        code_root, generation, acks, out = sys.argv[2:6]
        check(code_root, int(generation), acks, out)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--raters", type=int, help="override every scenario's number of raters")
    parser.add_argument("--think", type=float, help="override every paced scenario's think time (s)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--votes-needed", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds each scenario may run")
    parser.add_argument("--replay-rate", type=float, default=0.05)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the code before; 'none' to skip")
    parser.add_argument("--code", default=".", help="git ref of the code under test; '.': the working tree as it is")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "load"), help="report path without extension")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the report")
    parser.add_argument("--render", metavar="JSON", help="only write the report again from a run's JSON (and --note)")
    args = parser.parse_args()
    if args.render:
        results = json.loads(Path(args.render).read_text())
        if args.note:
            results["meta"]["load_note"] = results["meta"]["load_note"].split("; ")[0] + f"; {args.note}"
        for name, scenario in results["meta"]["scenarios"].items():
            SCENARIOS[name] = Scenario(**{**scenario, "target_p99_ms": SCENARIOS[name].target_p99_ms})
        output = Path(args.output)
        output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        output.with_suffix(".md").write_text(report(results))
        return

    scenarios = []
    for name in filter(None, args.scenarios.split(",")):
        scenario = SCENARIOS[name]
        if args.raters:
            scenario = dataclasses.replace(scenario, raters=args.raters)
        if args.think is not None and scenario.think_s:
            scenario = dataclasses.replace(scenario, think_s=args.think)
        scenarios.append(scenario)
    if any(s.server == "gunicorn" for s in scenarios) and not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print('DATABASE_URL is not PostgreSQL (eval "$(bin/services)"): skipping the gunicorn scenarios', flush=True)
        scenarios = [s for s in scenarios if s.server != "gunicorn"]
    SCENARIOS.update({s.name: s for s in scenarios})

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    results = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "load_note": machine_load_note() + (f"; {args.note}" if args.note else ""),
        "code": head + (" with uncommitted changes" if dirty else ""), "baseline": None,
        "samples": args.samples, "votes_needed": args.votes_needed, "duration_s": args.duration,
        "replay_rate": args.replay_rate, "scenarios": {s.name: s.__dict__ for s in scenarios},
    }}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ouroboros-load-") as tmp:
        folder = Path(tmp)
        if args.baseline != "none":
            with worktree(args.baseline, folder, "baseline") as (path, commit):
                results["meta"]["baseline"] = f"{args.baseline} ({commit})"
                results["baseline"] = run_code(path, scenarios, args, folder, "baseline")
        if args.code == ".":
            results["new"] = run_code(ROOT, scenarios, args, folder, "new")
        else:
            with worktree(args.code, folder, "code") as (path, commit):
                results["meta"]["code"] = f"{args.code} ({commit})"
                results["new"] = run_code(path, scenarios, args, folder, "new")
    results["meta"]["total_s"] = round(time.time() - started)
    if "baseline" in results:
        results["saturation_ratio"] = {
            s.name: round(results["new"][s.name]["votes_per_s"] / results["baseline"][s.name]["votes_per_s"], 2)
            for s in scenarios if not s.think_s and results["baseline"][s.name]["votes_per_s"]}
    write_results(results, args.output, report)


def write_results(results: dict, output: str, render) -> None:
    """The raw figures as JSON and the report as Markdown, side by side; the report printed too."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
