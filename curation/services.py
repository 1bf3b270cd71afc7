"""Services that change the loop's state: experiments, raters and votes.

Each is one transaction, takes keyword arguments, and validates its input, raising
`CurationError` with a message a user can act on.
"""

from __future__ import annotations

import numpy as np
from django.db import transaction

from curation.datasets import ensure_digits_dataset, real_arrays
from curation.ml.experiment_config import ExperimentConfig
from curation.ml.raters import SimulatedRaterConfig
from curation.models import Experiment, Generation, Rater, TrainingMember
from training.data import split_real


class CurationError(Exception):
    """A request the loop cannot carry out, with the reason in words."""


def create_experiment(*, name: str, config: ExperimentConfig, created_by=None) -> Experiment:
    """An experiment in draft, with its real data split into the G0 pool and the fresh reservoir."""
    if not name.strip():
        raise CurationError("an experiment needs a name")
    dataset = ensure_digits_dataset()
    ids = real_arrays(dataset.pk).ids
    if config.dataset_size is not None:
        if config.dataset_size > len(ids):
            raise CurationError(f"the dataset has {len(ids)} images; dataset_size {config.dataset_size} is too many")
        ids = ids[: config.dataset_size]
    if config.pool_size > len(ids):
        raise CurationError(f"the real pool ({config.pool_size}) is larger than the dataset ({len(ids)} images)")
    split = split_real(len(ids), config.pool_size, seed=config.seed)
    reservoir = [int(ids[i]) for i in split.reservoir]
    possible = config.mix.fresh_draws_possible(len(reservoir))
    if config.generations - 1 > possible:
        raise CurationError(
            f"a fresh loop drawing {config.mix.real_count} new real images a generation can run "
            f"{possible} generation(s) after G0 on a reservoir of {len(reservoir)}, not "
            f"{config.generations - 1}: lower the real fraction or training size, shrink the pool, "
            "or plan fewer generations"
        )
    if config.mix.loop == "augmentation" and config.mix.real_count > config.pool_size:
        raise CurationError(
            f"augmentation reuses the G0 pool: its {config.pool_size} images cannot supply "
            f"{config.mix.real_count} real images a generation"
        )
    with transaction.atomic():
        return Experiment.objects.create(
            name=name.strip(),
            dataset=dataset,
            config=config.to_dict(),
            real_pool=[int(ids[i]) for i in split.pool],
            real_reservoir=reservoir,
            created_by=created_by,
        )


def start_experiment(*, experiment: Experiment) -> Generation:
    """Create G0, trained on the real pool, and mark the experiment running. Starting twice is a no-op."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.status not in (Experiment.Status.DRAFT, Experiment.Status.RUNNING):
            raise CurationError(f"experiment {experiment.name!r} is {experiment.status}; only a draft can start")
        generation, created = Generation.objects.get_or_create(
            experiment=experiment, index=0,
            defaults={"votes_needed": experiment.loop_config.rating.votes_per_sample},
        )
        if created:
            TrainingMember.objects.bulk_create(
                [TrainingMember(generation=generation, real_image_id=i) for i in experiment.real_pool]
            )
            generation.training_mix = {
                "real": len(experiment.real_pool),
                "fresh": 0,
                "synthetic": 0,
                "synthetic_by_generation": {},
                "shortfall": 0,
            }
            generation.save(update_fields=["training_mix"])
        experiment.status = Experiment.Status.RUNNING
        experiment.save(update_fields=["status"])
    return generation


def simulated_rater(*, config: SimulatedRaterConfig) -> Rater:
    """The Rater row standing for a simulated rater configuration (one per distinct configuration)."""
    name = f"simulated-t{config.threshold:.2f}-n{config.noise:.2f}-b{config.bias:+.2f}-s{config.seed}"
    rater, _ = Rater.objects.get_or_create(
        name=name,
        defaults={"kind": Rater.Kind.SIMULATED, "simulation": {
            "threshold": config.threshold, "noise": config.noise, "bias": config.bias, "seed": config.seed,
        }},
    )
    return rater


def ensure_gold_items(*, experiment: Experiment) -> None:
    """Gold items for an experiment's human raters, made once: real images (expected up) and
    known-bad images (expected down: real digits ruined by noise, blotches, blur or inversion)."""
    from curation.images import encode_png, write_atomically
    from curation.ml.gold import ruined_images
    from curation.models import GoldItem

    if experiment.gold_items.exists():
        return
    rating = experiment.loop_config.rating
    arrays = real_arrays(experiment.dataset_id)
    rng = np.random.default_rng(experiment.loop_config.seed)
    pool = np.array(experiment.real_pool)
    real_ids = rng.choice(pool, size=min(rating.gold_real_items, len(pool)), replace=False)
    bad_sources = arrays.subset(rng.choice(pool, size=min(rating.gold_bad_items, len(pool)), replace=False))
    bad, descriptions = ruined_images(bad_sources, rng)
    rows = []
    for n, image in enumerate(arrays.subset(real_ids)):
        path = write_atomically(f"experiments/{experiment.pk}/gold/real-{n:03d}.png", encode_png(image))
        rows.append(GoldItem(experiment=experiment, kind=GoldItem.Kind.REAL, image=path, expected_up=True,
                             description=f"real image {int(real_ids[n])}"))
    for n, (image, description) in enumerate(zip(bad, descriptions)):
        path = write_atomically(f"experiments/{experiment.pk}/gold/bad-{n:03d}.png", encode_png(image))
        rows.append(GoldItem(experiment=experiment, kind=GoldItem.Kind.BAD, image=path, expected_up=False,
                             description=description))
    with transaction.atomic():
        if not experiment.gold_items.exists():
            GoldItem.objects.bulk_create(rows)
