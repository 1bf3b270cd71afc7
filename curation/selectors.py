"""Read-only queries: what an experiment's generations measured, and how a study stands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from django.db.models import Count, Q

from curation.ml.plots import CURVE_METRICS, curves_png, panel_png
from curation.ml.study import (
    HEADLINE, StudyPlan, chance_statements, comparisons, curve_series, goal_statements, goal_table, headline_table,
    statements,
)
from curation.models import Experiment, Generation, Study

STUDY_PLOTS = (*HEADLINE, "kid", "acceptance_rate")

REPORT_METRICS = (
    "fd",
    "kid",
    "memorization",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "acceptance_rate",
    "vote_up_rate",
    "discriminator_accuracy",
    "discriminator_auc",
    "discriminator_heldout_auc",
    "verifier_auc",
    "verifier_auc_low",
    "verifier_auc_high",
)


def generation_report(generation) -> dict:
    metrics = generation.metrics
    mix = generation.training_mix
    return {
        "index": generation.index,
        "state": generation.state,
        **{name: metrics.get(name) for name in REPORT_METRICS},
        "train_real": mix.get("real"),
        "train_fresh": mix.get("fresh"),
        "train_synthetic": mix.get("synthetic"),
        "train_synthetic_by_generation": mix.get("synthetic_by_generation"),
        "train_shortfall": mix.get("shortfall"),
        "accepted": metrics.get("accepted"),
        "accept_reasons": metrics.get("accept_reasons"),
        "acceptance_by_class": metrics.get("acceptance_by_class"),
        "class_histogram": metrics.get("class_histogram"),
        "metric_samples": metrics.get("metric_samples"),
        "seconds": generation.timings,
        "checkpoint_sha256": generation.checkpoint_sha256,
    }


def experiment_report(experiment: Experiment) -> dict:
    return {
        "experiment": {"id": experiment.pk, "name": experiment.name, "status": experiment.status},
        "config": experiment.config,
        "real_floor": experiment.real_floor,
        "generations": [generation_report(g) for g in experiment.generations.order_by("index")],
    }


# --- raters and agreement -----------------------------------------------------------------------

MAX_GAP_SECONDS = 300  # longer gaps between votes are breaks, not time spent on a vote


def rater_stats(raters, *, for_staff: bool = True) -> list[dict]:
    """Per rater: votes cast, agreement with the majority of the other raters, gold accuracy,
    median seconds per vote, and whether they are paused. Four queries however many raters.

    A rater looking at their own figures (`for_staff=False`) sees nothing that gives away an open
    generation: agreement only on generations whose rating has closed (no other rater's votes while
    they still count), and no gold figures (a gold count that moves after a vote names the item)."""
    from statistics import median

    from django.db.models import Count, Q

    from curation.models import Generation, GoldAnswer, Vote, VoteEvent

    raters = list(raters)
    ids = [r.pk for r in raters]
    votes = Vote.objects.filter(rater_id__in=ids)
    if not for_staff:
        votes = votes.exclude(sample__generation__state=Generation.State.RATING)
    own: dict[int, list[tuple[int, bool]]] = {pk: [] for pk in ids}
    for rater_id, sample_id, up in votes.values_list("rater_id", "sample_id", "up"):
        own[rater_id].append((sample_id, up))
    # Every counted vote on those samples, by anyone: each rater's "others" leaves out their own.
    on_sample: dict[int, list[tuple[int, bool]]] = {}
    for rater_id, sample_id, up in Vote.objects.filter(sample__in=votes.values("sample_id"), flagged=False).values_list(
            "rater_id", "sample_id", "up"):
        on_sample.setdefault(sample_id, []).append((rater_id, up))
    gold = {row["rater_id"]: row for row in GoldAnswer.objects.filter(rater_id__in=ids).values("rater_id").annotate(
        total=Count("pk"), right=Count("pk", filter=Q(correct=True)))}
    times: dict[int, list] = {pk: [] for pk in ids}
    for rater_id, created_at in VoteEvent.objects.filter(rater_id__in=ids, action=VoteEvent.Action.VOTE).order_by(
            "rater_id", "created_at").values_list("rater_id", "created_at"):
        times[rater_id].append(created_at)

    rows = []
    for rater in raters:
        comparable = []
        for sample_id, up in own[rater.pk]:
            others = [o for r, o in on_sample.get(sample_id, ()) if r != rater.pk]
            if others and 2 * sum(others) != len(others):
                comparable.append(up == (2 * sum(others) > len(others)))
        gaps = [(b - a).total_seconds() for a, b in zip(times[rater.pk], times[rater.pk][1:])]
        gaps = [g for g in gaps if g <= MAX_GAP_SECONDS]
        tally = gold.get(rater.pk, {"total": 0, "right": 0})
        rows.append(
            {
                "rater": rater,
                "votes": len(own[rater.pk]),
                "agreement_with_majority": sum(comparable) / len(comparable) if comparable else None,
                "compared_votes": len(comparable),
                "gold_answers": tally["total"] if for_staff else None,
                "gold_accuracy": tally["right"] / tally["total"] if tally["total"] and for_staff else None,
                "median_seconds_per_vote": median(gaps) if gaps else None,
                "active": rater.active,
                "paused_reason": rater.paused_reason,
            }
        )
    return rows


def generation_agreement(generation) -> dict:
    """Inter-rater agreement on a generation's counted votes: Krippendorff's alpha and Gwet's AC1
    side by side, and the Dawid-Skene aggregate beside the plain majority."""
    import numpy as np

    from curation.ml.agreement import dawid_skene, gwet_ac1, krippendorff_alpha, majority
    from curation.models import Vote

    rows = list(Vote.objects.filter(sample__generation=generation, flagged=False).values_list("sample_id", "rater_id", "up"))
    if not rows:
        return {"votes": 0}
    sample_ids = sorted({r[0] for r in rows})
    rater_ids = sorted({r[1] for r in rows})
    item_index = {s: i for i, s in enumerate(sample_ids)}
    rater_index = {r: i for i, r in enumerate(rater_ids)}
    items = np.array([item_index[r[0]] for r in rows])
    raters = np.array([rater_index[r[1]] for r in rows])
    votes = np.array([int(r[2]) for r in rows])
    share = majority(items, votes, len(sample_ids))
    aggregate = dawid_skene(items, raters, votes, len(sample_ids), len(rater_ids))
    majority_up = share >= 0.5
    ds_up = aggregate.posterior_up >= 0.5
    return {
        "votes": len(rows),
        "samples": len(sample_ids),
        "raters": len(rater_ids),
        "krippendorff_alpha": krippendorff_alpha(items, raters, votes),
        "gwet_ac1": gwet_ac1(items, votes),
        "majority_up_rate": float(majority_up.mean()),
        "dawid_skene_up_rate": float(ds_up.mean()),
        "dawid_skene_disagrees_with_majority": int((majority_up != ds_up).sum()),
    }


def experiment_plot_png(experiment: Experiment) -> Optional[bytes]:
    """The experiment's metric curves over its generations, one panel per metric (None before any
    generation has metrics)."""
    generations = [g for g in experiment.generations.order_by("index") if g.metrics.get("fd") is not None]
    if not generations:
        return None
    series = {metric: {experiment.name: [(_number(g.metrics.get(metric)), 0.0) for g in generations]}
              for metric in CURVE_METRICS}
    floor = experiment.fd_floor
    return panel_png(CURVE_METRICS, series, references={"fd": floor["mean"]} if floor else None,
                     reference_label="real vs real")


def _number(value) -> float:
    return float("nan") if value is None else float(value)


# --- studies ---------------------------------------------------------------------------------------

RUNNING_STATES = (Generation.State.PENDING, Generation.State.TRAINING, Generation.State.SAMPLING,
                  Generation.State.RATING, Generation.State.CURATING)


@dataclass(frozen=True)
class StudyCell:
    """One experiment of a study (a variant under a seed): how far it has come."""
    experiment_id: int
    status: str
    done: int  # generations finished
    running: Optional[dict]  # the generation under way: index, state, progress, message


def study_cells(study: Study) -> dict[tuple[str, int], StudyCell]:
    """(variant, seed) -> its experiment's progress, in two queries."""
    experiments = study.experiments.annotate(
        done=Count("generations", filter=Q(generations__state=Generation.State.DONE))).values_list(
        "pk", "study_variant", "study_seed", "status", "done")
    running = {}
    for experiment_id, index, state, fraction, message in Generation.objects.filter(
            experiment__study=study, state__in=RUNNING_STATES).values_list(
            "experiment_id", "index", "state", "progress_fraction", "progress_message"):
        running[experiment_id] = {"index": index, "state": state, "progress": fraction, "message": message}
    return {(variant, seed): StudyCell(pk, status, done, running.get(pk))
            for pk, variant, seed, status, done in experiments}


def study_progress(study: Study, cells: Optional[dict] = None) -> dict:
    """Generations done of all the study will run, experiments finished, generations under way."""
    plan = StudyPlan.from_dict(study.plan)
    cells = study_cells(study) if cells is None else cells
    return {"done": sum(c.done for c in cells.values()), "total": len(cells) * plan.generations,
            "finished": sum(c.status == Experiment.Status.DONE for c in cells.values()), "experiments": len(cells),
            "running": sum(c.running is not None and c.running["state"] != Generation.State.PENDING
                           for c in cells.values())}


def study_results(study: Study) -> dict:
    """(variant, seed, generation) -> the generation's stored metrics and `step_seconds`, for every
    finished generation."""
    rows = Generation.objects.filter(experiment__study=study, state=Generation.State.DONE).values_list(
        "experiment__study_variant", "experiment__study_seed", "index", "metrics", "timings")
    # With each generation's cost: the seconds its steps took (training, sampling, rating, curating).
    return {(variant, seed, index): {**metrics, "step_seconds": round(sum((timings or {}).values()), 1)}
            for variant, seed, index, metrics, timings in rows}


def study_floor(study: Study) -> dict:
    """The real-vs-real floor of every metric on the study's held-out split, as its experiments store it."""
    experiment = study.experiments.exclude(real_floor={}).first()
    return experiment.real_floor if experiment is not None else {}


def study_overview(study: Study) -> dict:
    """What the study page shows: its plan, every experiment's progress, and the report's figures as
    they stand (computed from the stored metrics, compared where every experiment has arrived)."""
    plan = StudyPlan.from_dict(study.plan)
    cells = study_cells(study)
    results = study_results(study)
    found = comparisons(plan, results) if results else []
    floor = study_floor(study)
    return {
        "plan": plan,
        "progress": study_progress(study, cells),
        "matrix": [(variant.name, [cells.get((variant.name, seed)) for seed in plan.seeds]) for variant in plan.variants],
        "statements": [line.removeprefix("- ") for line in (statements(plan, results, found)
                                                           + chance_statements(plan, results)
                                                           + goal_statements(plan, results, found))] if results else [],
        "headline": headline_table(plan, results, floor) if results else None,
        "goal": goal_table(plan, results, found) if results else None,
        "changed": plan.changed_settings(),
    }


def study_curves_png(plan: StudyPlan, results: dict, floor: dict, metric: str) -> bytes:
    """One metric's curve per variant with its 95% band over seeds, the floor as a band."""
    entry = floor.get(metric)
    reference = (entry["mean"], entry["low"], entry["high"]) if isinstance(entry, dict) else None
    return curves_png(metric, curve_series(plan, results, metric), reference=reference, reference_label="real vs real")


def study_plot_png(study: Study, metric: str) -> Optional[bytes]:
    """The study's curves of one metric as they stand (None before any generation has finished)."""
    results = study_results(study)
    if not results:
        return None
    return study_curves_png(StudyPlan.from_dict(study.plan), results, study_floor(study), metric)
