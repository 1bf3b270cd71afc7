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
