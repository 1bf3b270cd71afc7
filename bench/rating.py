"""Server-side time of a vote plus the next-sample fetch, with few and with many samples stored.

Builds a throwaway SQLite database (in a temporary folder) with open generations of `--samples`
samples and earlier votes from other raters, then times, through Django's full request handling
(test client: URL routing, middleware, sessions, CSRF-exempt JSON), the pair a rater's keypress
costs: POST /rate/api/vote and GET /rate/api/next. The same is measured on a small database in the
same run as the baseline. Writes bench/results/rating.json and rating.md.

    python bench/rating.py [--samples 50000] [--votes 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def setup_django(var_dir: str) -> None:
    os.environ["OUROBOROS_VAR_DIR"] = var_dir
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the test client's host
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def populate(samples: int, prior_votes_per_sample: int):
    import numpy as np
    from django.contrib.auth import get_user_model

    from curation import media
    from curation.images import encode_png
    from curation.ml.experiment_config import preset
    from curation.models import Generation, Rater, Sample, Vote
    from curation.services import create_experiment, ensure_gold_items, start_experiment

    config = preset("digits-tiny").replace(**{"rating.raters": "human", "rating.votes_per_sample": 3})
    experiment = create_experiment(name=f"bench {samples}", config=config)
    generation = start_experiment(experiment=experiment)
    path = media.write("bench/sample.png", encode_png(np.zeros((1, 8, 8), dtype=np.float32)))
    rng = np.random.default_rng(0)
    Sample.objects.bulk_create(
        [Sample(generation=generation, index=i, seed=i, sampler="ddim", steps=1, temperature=1.0, image=path, sha256="",
                to_rate=True, needs_votes=True, rating_rank=float(r)) for i, r in enumerate(rng.random(samples))],
        batch_size=5000,
    )
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.RATING, open_for_raters=True, votes_needed=3)
    ensure_gold_items(experiment=experiment)
    # Other raters have already voted on a share of the samples.
    others = []
    for n in range(prior_votes_per_sample):
        user = get_user_model().objects.create_user(f"other{samples}-{n}", password="x")
        others.append(Rater.objects.create(name=user.username, kind=Rater.Kind.HUMAN, user=user))
    voted = list(Sample.objects.filter(generation=generation).values_list("pk", flat=True)[: samples // 2])
    Vote.objects.bulk_create([Vote(rater=r, sample_id=s, generation=generation, up=True, open=True)
                             for r in others for s in voted], batch_size=5000)
    Sample.objects.filter(pk__in=voted).update(vote_count=prior_votes_per_sample)
    user = get_user_model().objects.create_user(f"bench{samples}", password="x")
    return Rater.objects.create(name=user.username, kind=Rater.Kind.HUMAN, user=user)


def measure(rater, votes: int) -> dict:
    from django.test import Client

    from curation.models import GoldItem

    gold_answers = dict(GoldItem.objects.values_list("pk", "expected_up"))  # a careful rater
    client = Client()
    client.force_login(rater.user)
    queue = client.get("/rate/api/next?count=8").json()["items"]
    timings = []
    for _ in range(votes):
        item = queue.pop(0)
        started = time.perf_counter()
        response = client.post("/rate/api/vote", data=json.dumps(
            {"kind": item["kind"], "id": item["id"], "request_id": uuid.uuid4().hex,
             "up": gold_answers[item["id"]] if item["kind"] == "gold" else True}), content_type="application/json")
        assert response.status_code == 200, response.content
        exclude = ",".join(f"{i['kind']}:{i['id']}" for i in queue)
        data = client.get(f"/rate/api/next?count=1&exclude={exclude}").json()
        assert "items" in data, data
        fetched = data["items"]
        timings.append((time.perf_counter() - started) * 1000)
        queue += fetched
    timings.sort()
    return {
        "votes": votes,
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[int(0.95 * len(timings)) - 1], 2),
        "max_ms": round(timings[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--baseline-samples", type=int, default=1000)
    parser.add_argument("--votes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as var_dir:
        setup_django(var_dir)
        results = {}
        for label, count in (("baseline", args.baseline_samples), ("large", args.samples)):
            started = time.perf_counter()
            rater = populate(count, prior_votes_per_sample=2)
            setup_seconds = time.perf_counter() - started
            results[label] = {"samples": count, "setup_seconds": round(setup_seconds, 1), **measure(rater, args.votes)}
            print(label, results[label], flush=True)
    results["ratio_median_large_vs_baseline"] = round(results["large"]["median_ms"] / results["baseline"]["median_ms"], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rating.json").write_text(json.dumps(results, indent=2))
    lines = ["# Vote + next-sample fetch, server side (SQLite, Django test client, 2 CPU cores)", "",
             "| database | samples | votes timed | median ms | p95 ms | max ms |", "|---|---|---|---|---|---|"]
    for label in ("baseline", "large"):
        r = results[label]
        lines.append(f"| {label} | {r['samples']} | {r['votes']} | {r['median_ms']} | {r['p95_ms']} | {r['max_ms']} |")
    lines += ["", f"Median large / baseline: {results['ratio_median_large_vs_baseline']}"]
    (RESULTS / "rating.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
