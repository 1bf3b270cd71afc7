"""In-process cost of one `next` request as the tables grow: SQL queries and time with 10^3, 10^5 and
10^6 samples stored, on SQLite and PostgreSQL, for this code and the code before (`--baseline`).

One open generation holds all the samples (random rank, half of them with 2 of their 3 votes from
other raters); the rows are written in one `INSERT ... SELECT` each (a recursive CTE on SQLite,
`generate_series` on PostgreSQL). A rater then rates as the page does, through Django's test client
(routing, middleware, session): prefetch 8, vote down to 4 queued, refill excluding the queued
items; each refill is timed and its SQL queries counted (CaptureQueriesContext). Writes
bench/results/next_scaling.md and .json.

    eval "$(bin/services)"   # PostgreSQL (without it, SQLite only)
    .venv/bin/python bench/next_scaling.py [--sizes 1000,100000,1000000] [--baseline d4f5fc0|none]
        [--databases sqlite,postgresql] [--explain]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import DEFAULT_BASELINE, RESULTS, ROOT, postgres_database, worktree, write_results  # noqa: E402

PREFETCH = 8
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")  # SQLite shows them, PostgreSQL not


def statements(captured) -> int:
    """SQL statements a request sent, transaction control left out (counted alike on both databases)."""
    return sum(1 for q in captured.captured_queries if not q["sql"].lstrip().upper().startswith(TRANSACTION_CONTROL))


# --- inside the code under test ------------------------------------------------------------------


def insert_rows(model, columns: dict, *, series: tuple[int, int] | None = None, source: tuple | None = None) -> None:
    """One INSERT ... SELECT: over the numbers `series` (first, last), or over `source` (a FROM clause
    and its parameters) naming its values `n`. `columns` maps a column to an SQL expression (of `n`)
    and its parameters; every other column gets its default."""
    from django.db import connection
    from django.utils import timezone

    quote = connection.ops.quote_name
    names, expressions, params = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        names.append(quote(f.column))
        if f.column in columns:
            expression, values = columns[f.column]
            expressions.append(expression)
            params += values
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            expressions.append("%s")
            params.append(timezone.now())
        else:  # the field's default: its own, "" for text, NULL where it may be null
            expressions.append("%s")
            params.append(f.get_db_prep_save(f.get_default(), connection))
    insert = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(names)}) SELECT {', '.join(expressions)} "
    prefix, prefix_params = "", []
    if source is not None:
        sql, source_params = source
        insert, params = insert + f"FROM {sql}", params + list(source_params)
    elif connection.vendor == "postgresql":
        insert, params = insert + "FROM generate_series(%s::bigint, %s::bigint) AS s(n)", params + list(series)
    else:
        prefix, prefix_params = "WITH RECURSIVE s(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM s WHERE n < %s) ", list(series)
        insert += "FROM s"
    with connection.cursor() as cursor:
        cursor.execute(prefix + insert, prefix_params + params)


def measure(code_root: str, sizes: list[int], refills: int, out: str) -> None:
    sys.path.insert(0, code_root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from curation import media
    from curation.images import encode_png
    from curation.ml.experiment_config import preset
    from curation.models import Generation, Rater, Sample, Vote
    from curation.services import create_experiment, ensure_gold_items, start_experiment

    call_command("migrate", verbosity=0)
    config = preset("digits-tiny").replace(**{
        "rating.raters": "human", "rating.votes_per_sample": 3, "rating.gold_accuracy_bar": 0.0,
        "rating.gold_real_items": 20, "rating.gold_bad_items": 20})
    experiment = create_experiment(name="next scaling", config=config)
    generation = start_experiment(experiment=experiment)
    image = media.write(f"experiments/{experiment.pk}/g000/samples/n.png",
                             encode_png(np.full((1, 8, 8), 0.5, dtype=np.float32)))
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.RATING, votes_needed=3)
    ensure_gold_items(experiment=experiment)
    others = [Rater.objects.create(name=f"other-{n}", kind=Rater.Kind.HUMAN, user=get_user_model().objects.create_user(
        f"other-{n}", password=secrets.token_urlsafe(12))) for n in range(2)]
    random_rank = "random()" if connection.vendor == "postgresql" else "(abs(random()) / 9223372036854775807.0)"
    stored = 0
    results = []
    for size in sizes:
        started = time.perf_counter()
        insert_rows(Sample, series=(stored, size - 1), columns={
            "generation_id": ("%s", [generation.pk]), "index": ("n", []), "seed": ("n", []),
            "sampler": ("%s", ["ddim"]), "steps": ("1", []), "temperature": ("1.0", []), "image": ("%s", [image]),
            "sha256": ("%s", [""]), "to_rate": ("%s", [True]), "needs_votes": ("%s", [True]),
            "rating_rank": (random_rank, []), "vote_count": ("0", []),
        })
        # Half of the new samples have 2 votes already (from two other raters): still open, 1 vote short.
        bounds = [generation.pk, stored, stored + (size - stored) // 2]
        samples_table, index = Sample._meta.db_table, connection.ops.quote_name("index")
        vote_columns = {f.column for f in Vote._meta.concrete_fields}
        # (where votes carry their generation and whether their sample is still open: these are, 2 of 3)
        carried = {k: v for k, v in {"generation_id": ("%s", [generation.pk]), "open": ("%s", [True])}.items()
                   if k in vote_columns}
        for rater in others:
            insert_rows(Vote, source=(f"(SELECT id AS n FROM {samples_table} WHERE generation_id = %s AND {index} >= %s "
                                      f"AND {index} < %s) AS s", bounds),
                        columns={"rater_id": ("%s", [rater.pk]), "sample_id": ("n", []), "up": ("%s", [True]),
                                 "flagged": ("%s", [False]), **carried})
        Sample.objects.filter(generation=generation, index__gte=bounds[1], index__lt=bounds[2]).update(vote_count=2)
        stored = size
        try:  # the service that opens a generation, where the code has one (it keeps the queue's counters)
            from curation.rating import open_for_rating
        except ImportError:
            Generation.objects.filter(pk=generation.pk).update(open_for_raters=True)
        else:
            open_for_rating(Generation.objects.get(pk=generation.pk))
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")  # as autovacuum would have by now
        build_s = time.perf_counter() - started
        assert Sample.objects.filter(generation=generation).count() == size
        assert Vote.objects.filter(rater__in=others).count() == 2 * sum(
            (b - a) // 2 for a, b in zip([0] + sizes, sizes) if b <= size)

        user = get_user_model().objects.create_user(f"rater-{size}", password=secrets.token_urlsafe(12))
        Rater.objects.create(name=user.username, kind=Rater.Kind.HUMAN, user=user)
        client = Client()
        client.force_login(user)

        def key(item: dict) -> str:
            return item["token"] if "token" in item else f"{item['kind']}:{item['id']}"

        def vote(item: dict) -> None:
            body = {"token": item["token"]} if "token" in item else {"kind": item["kind"], "id": item["id"]}
            response = client.post("/rate/api/vote", data=json.dumps(
                body | {"up": True, "request_id": secrets.token_urlsafe(16)}), content_type="application/json")
            assert response.status_code in (200, 409), response.content

        first_queries = None
        timings, queries = [], []
        queue: list[dict] = []
        for attempt in range(refills + 3):  # the first 3 refills warm up caches and are not counted
            while len(queue) > PREFETCH // 2:
                vote(queue.pop(0))
            exclude = ",".join(key(i) for i in queue)
            with CaptureQueriesContext(connection) as captured:
                begun = time.perf_counter()
                response = client.get(f"/rate/api/next?count={PREFETCH}&exclude={exclude}")
                elapsed = time.perf_counter() - begun
            assert response.status_code == 200, response.content
            items = response.json()["items"]
            known = {key(i) for i in queue}
            queue += [i for i in items if key(i) not in known]
            if first_queries is None:
                first_queries = statements(captured)
            if attempt == 2 and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")  # the rater's claims and votes, as autovacuum would count them soon
            if attempt >= 3:
                timings.append(elapsed * 1000)
                queries.append(statements(captured))
                # (the session key, a throwaway credential, blanked)
                refill_sql = [re.sub(r"session_key\" = '[^']*'", "session_key\" = '…'", q["sql"])[:300]
                              for q in captured.captured_queries]
        # The time again without capturing queries (capturing costs a little per query).
        plain = []
        for _ in range(refills):
            while len(queue) > PREFETCH // 2:
                vote(queue.pop(0))
            exclude = ",".join(key(i) for i in queue)
            begun = time.perf_counter()
            response = client.get(f"/rate/api/next?count={PREFETCH}&exclude={exclude}")
            plain.append((time.perf_counter() - begun) * 1000)
            known = {key(i) for i in queue}
            queue += [i for i in response.json()["items"] if key(i) not in known]
        plain.sort()
        # The selection alone, as the view calls it, without the request around it (routing, middleware,
        # session, JSON): the measure the issue quotes ("selecting the next items, in-process").
        from curation import rating as rating_module

        rater_row = Rater.objects.get(user=user)
        selection = []
        for _ in range(refills):
            while len(queue) > PREFETCH // 2:
                vote(queue.pop(0))
            begun = time.perf_counter()
            if "with_counters" in inspect.signature(rating_module.next_items).parameters:
                items, _ = rating_module.next_items(rater=rater_row, count=PREFETCH, with_counters=True,
                                                     exclude=tuple(i["token"] for i in queue))
            else:  # the code before: items, then the counters in their own call
                items = rating_module.next_items(rater=rater_row, count=PREFETCH,
                                                 exclude=tuple((i["kind"], i["id"]) for i in queue))
                rating_module.counters(rater=rater_row)
            selection.append((time.perf_counter() - begun) * 1000)
            known = {key(i) for i in queue}
            queue += [i for i in items if key(i) not in known]
        selection.sort()
        plans = _explain_selection(rating_module, rater_row, queue) if os.environ.get("NEXT_SCALING_EXPLAIN") else []
        row = {
            "samples": size, "build_s": round(build_s, 1), "refills": len(plain),
            "queries_first": first_queries, "queries_refill_median": statistics.median(queries),
            "queries_refill_max": max(queries),
            "median_ms": round(statistics.median(plain), 2), "p95_ms": round(plain[int(0.95 * len(plain)) - 1], 2),
            "selection_median_ms": round(statistics.median(selection), 2),
            "selection_p95_ms": round(selection[int(0.95 * len(selection)) - 1], 2),
            "protocol": "new" if "token" in (queue or [{}])[0] else "old",
            "refill_sql": refill_sql,  # the last refill's statements, for reading
            "plans": plans,
        }
        print(json.dumps({k: v for k, v in row.items() if k != "refill_sql"}), flush=True)
        results.append(row)
    Path(out).write_text(json.dumps(results))


def _explain_selection(rating_module, rater, queue: list) -> list[str]:
    """The plan and timing of each SELECT of one selection (`--explain`, PostgreSQL): where its time goes."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return []
    # The statements with their parameters (prepared ones have no literal text to EXPLAIN).
    statements_sent: list[tuple[str, object]] = []

    def captured(execute, sql, params, many, context):
        statements_sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(captured):
        rating_module.next_items(rater=rater, count=PREFETCH, with_counters=True,
                                 exclude=tuple(i["token"] for i in queue))
    # Each statement's time as the code sees it (driver included), against the whole call's: the rest is Python.
    spent: list[list[float]] = []
    totals = []

    def timed(execute, sql, params, many, context):
        begun = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[-1].append((time.perf_counter() - begun) * 1000)

    for _ in range(15):
        spent.append([])
        begun = time.perf_counter()
        with connection.execute_wrapper(timed):
            rating_module.next_items(rater=rater, count=PREFETCH, with_counters=True,
                                     exclude=tuple(i["token"] for i in queue))
        totals.append((time.perf_counter() - begun) * 1000)
    plans = [f"whole call median {statistics.median(totals):.2f} ms; statements (median ms each, in order): "
             + ", ".join(f"{statistics.median(column):.2f}" for column in zip(*spent))]
    with connection.cursor() as cursor:
        for sql, params in statements_sent:
            if sql.lstrip().upper().startswith("SELECT"):
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plans.append(sql + "\n" + "\n".join(line for (line,) in cursor.fetchall()))
    return plans


# --- orchestration -------------------------------------------------------------------------------


def run(code_root: Path, database: str, args, folder: Path, label: str) -> list[dict]:
    var_dir = folder / f"var-{label}-{database}"
    (var_dir / "static").mkdir(parents=True)  # whitenoise's folder (nothing is served from it here)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_"))}
    for name in ("REDIS_URL", "CACHE_URL", "MEDIA_ROOT", "STATIC_ROOT", "HTTPS", "PYTHONPATH"):
        env.pop(name, None)
    # Production settings (DEBUG off), as a deployment answers; the test client's host allowed.
    env |= {"OUROBOROS_VAR_DIR": str(var_dir), "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "HTTPS": "0",
            "ALLOWED_HOSTS": "testserver"}
    out = folder / f"{label}-{database}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "_measure", str(code_root),
               ",".join(map(str, args.sizes)), str(args.refills), str(out)]
    print(f"[{label}] {database}", flush=True)

    def child(environment: dict) -> None:
        subprocess.run(command, cwd=code_root, env=environment, check=True, timeout=1800)

    if database == "postgresql":
        with postgres_database(os.environ["DATABASE_URL"], f"ouroboros_next_{os.getpid()}_{label}") as url:
            child(env | {"DATABASE_URL": url})
    else:
        child(env)
    return json.loads(out.read_text())


def report(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# `next` in-process: SQL queries and time as the tables grow",
        "",
        f"{meta['date']}, {meta['cores']} CPU cores ({meta['machine']}); {meta['load_note']}. Code under test: "
        f"`{meta['code']}`; baseline: `{meta['baseline'] or 'none'}`.",
        "",
        "One open generation holding every sample (half of them with 2 of 3 votes from other raters); a rater "
        "refills its prefetch as the rating page does (8 items, refill at 4 queued, excluding them), through "
        f"Django's test client with DEBUG off. Time of a whole `next` request (median and p95 of {meta['refills']} "
        "refills, in ms); queries: SQL statements of the first request of a rater / of a refill (median, max), "
        "the session, user and rater look-ups included, BEGIN/COMMIT left out. PostgreSQL tables ANALYZEd after "
        "loading and again after the 3 warm-up refills (the rater's first claims and votes), as autovacuum would. "
        "Selection: `rating.next_items` with the counters, called directly "
        "(the same refills, without the request around it). Target (issue 11): at most 8 queries and under 5 ms "
        "with 10^6 samples.",
        "",
        "| database | samples | code | queries first / refill (max) | request median ms | request p95 ms | "
        "selection median ms | selection p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for database in ("sqlite", "postgresql"):
        for code in ("baseline", "new"):
            for row in results.get(code, {}).get(database, []):
                lines.append(f"| {database} | {row['samples']:,} | {code} | {row['queries_first']} / "
                             f"{row['queries_refill_median']:g} ({row['queries_refill_max']}) | {row['median_ms']} | "
                             f"{row['p95_ms']} | {row.get('selection_median_ms', '–')} | {row.get('selection_p95_ms', '–')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        code_root, sizes, refills, out = sys.argv[2:6]
        measure(code_root, [int(s) for s in sizes.split(",")], int(refills), out)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 100_000, 1_000_000])
    parser.add_argument("--refills", type=int, default=30)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the code before; 'none' to skip")
    parser.add_argument("--code", default=".", help="git ref of the code under test; '.': the working tree as it is")
    parser.add_argument("--output", default=str(RESULTS / "next_scaling"), help="report path without extension")
    parser.add_argument("--explain", action="store_true",
                        help="also store EXPLAIN ANALYZE of each SELECT of one selection (PostgreSQL) in the JSON")
    parser.add_argument("--databases", type=lambda s: s.split(","), default=["sqlite", "postgresql"],
                        help="which of sqlite,postgresql to measure (PostgreSQL needs DATABASE_URL)")
    args = parser.parse_args()
    if args.explain:
        os.environ["NEXT_SCALING_EXPLAIN"] = "1"
    has_postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    databases = [db for db in args.databases if db == "sqlite" or (db == "postgresql" and has_postgres)]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    one, five, _ = os.getloadavg()
    results = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "load_note": f"load average before the run {one:.2f} (1 min) / {five:.2f} (5 min)",
        "code": head + (" with uncommitted changes" if dirty else ""), "baseline": None, "refills": args.refills,
        "sizes": args.sizes,
    }}
    with tempfile.TemporaryDirectory(prefix="ouroboros-next-") as tmp:
        folder = Path(tmp)
        if args.baseline != "none":
            with worktree(args.baseline, folder, "baseline") as (path, commit):
                results["meta"]["baseline"] = f"{args.baseline} ({commit})"
                results["baseline"] = {db: run(path, db, args, folder, "baseline") for db in databases}
        if args.code == ".":
            results["new"] = {db: run(ROOT, db, args, folder, "new") for db in databases}
        else:
            with worktree(args.code, folder, "code") as (path, commit):
                results["meta"]["code"] = f"{args.code} ({commit})"
                results["new"] = {db: run(path, db, args, folder, "new") for db in databases}
    write_results(results, args.output, report)


if __name__ == "__main__":
    main()
