"""Read-only queries: what an experiment's generations measured."""

from __future__ import annotations

from curation.models import Experiment

REPORT_METRICS = (
    "fd",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "acceptance_rate",
    "vote_up_rate",
    "discriminator_accuracy",
    "discriminator_auc",
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
    median seconds per vote, and whether they are paused.

    A rater looking at their own figures (`for_staff=False`) sees nothing that gives away an open
    generation: agreement only on generations whose rating has closed (no other rater's votes while
    they still count), and no gold figures (a gold count that moves after a vote names the item)."""
    from statistics import median

    from curation.models import Generation, GoldAnswer, Vote, VoteEvent

    rows = []
    for rater in raters:
        votes = Vote.objects.filter(rater=rater)
        if not for_staff:
            votes = votes.exclude(sample__generation__state=Generation.State.RATING)
        votes = list(votes.values_list("sample_id", "up"))
        others: dict[int, list[bool]] = {}
        for sample_id, up in Vote.objects.filter(sample_id__in=[s for s, _ in votes], flagged=False).exclude(
            rater=rater
        ).values_list("sample_id", "up"):
            others.setdefault(sample_id, []).append(up)
        comparable = [(up, others[s]) for s, up in votes if s in others and 2 * sum(others[s]) != len(others[s])]
        agreement = (
            sum(up == (2 * sum(o) > len(o)) for up, o in comparable) / len(comparable) if comparable else None
        )
        gold = GoldAnswer.objects.filter(rater=rater)
        gold_total = gold.count()
        times = list(
            VoteEvent.objects.filter(rater=rater, action=VoteEvent.Action.VOTE)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        gaps = [g for g in gaps if g <= MAX_GAP_SECONDS]
        rows.append(
            {
                "rater": rater,
                "votes": len(votes),
                "agreement_with_majority": agreement,
                "compared_votes": len(comparable),
                "gold_answers": gold_total if for_staff else None,
                "gold_accuracy": gold.filter(correct=True).count() / gold_total if gold_total and for_staff else None,
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
