"""Services that change the loop's state: experiments, raters and votes.

Each is one transaction, takes keyword arguments, and validates its input, raising
`CurationError` with a message a user can act on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from django.db import transaction

from curation.datasets import dataset_named, dataset_split
from curation.errors import CurationError
from curation.ml.experiment_config import ExperimentConfig
from curation.ml.raters import SimulatedRaterConfig
from curation.models import Experiment, Generation, Rater, Sample, TrainingMember, Vote
from training.mix import ReservoirExhausted, build_mix
from training.data import split_real


def create_experiment(*, name: str, config: ExperimentConfig, created_by=None, cloned_from=None, study=None,
                      study_variant: str = "", study_seed=None) -> Experiment:
    """An experiment in draft, with the training split of its real data drawn into the G0 pool and the
    fresh reservoir (the dataset's curator and test splits are never trained on)."""
    if not name.strip():
        raise CurationError("an experiment needs a name")
    dataset = dataset_named(config.dataset)
    if (config.model.sample_size, config.model.channels) != (dataset.height, dataset.channels):
        # The model is shaped by its data: an imported dataset sets the UNet's size and channels.
        levels = len(config.model.block_out_channels)
        if dataset.height % (2 ** (levels - 1)):
            raise CurationError(
                f"{dataset.name}'s {dataset.height}x{dataset.width} images cannot pass through a {levels}-level UNet: "
                f"the size must divide by {2 ** (levels - 1)}"
            )
        config = config.replace(**{"model.sample_size": dataset.height, "model.channels": dataset.channels})
    ids = dataset_split(dataset.pk).train
    if config.dataset_size is not None:
        if config.dataset_size > len(ids):
            raise CurationError(f"the dataset's training split holds {len(ids)} images; dataset_size "
                                f"{config.dataset_size} is too many")
        ids = ids[: config.dataset_size]
    if config.pool_size > len(ids):
        raise CurationError(f"the real pool ({config.pool_size}) is larger than the dataset's training split "
                            f"({len(ids)} images; the rest is held out for curators and evaluation)")
    split = split_real(len(ids), config.pool_size, seed=config.seed)
    reservoir = [int(ids[i]) for i in split.reservoir]
    _check_reservoir(config, len(reservoir))
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
            cloned_from=cloned_from,
            study=study,
            study_variant=study_variant,
            study_seed=study_seed,
        )


def _check_reservoir(config: ExperimentConfig, reservoir: int) -> None:
    possible = config.mix.fresh_draws_possible(reservoir)
    if config.generations - 1 > possible:
        raise CurationError(
            f"a fresh loop drawing {config.mix.real_count} new real images a generation can run "
            f"{possible} generation(s) after G0 on a reservoir of {reservoir}, not "
            f"{config.generations - 1}: lower the real fraction or training size, shrink the pool, "
            "or plan fewer generations"
        )


def extend_experiment(*, experiment: Experiment, generations: int):
    """Raise an experiment's planned generations (G0 included) to `generations`; nothing else of its
    settings changes. A finished experiment runs again from its last generation: returns the next
    generation, whose step must be queued (None when the experiment was still on its way). Fewer
    generations than planned, or more than a fresh loop's reservoir supplies, are refused."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        planned = experiment.loop_config.generations
        if generations < planned:
            raise CurationError(f"{experiment.name!r} plans {planned} generations: an extension cannot "
                                f"shorten it to {generations}")
        if experiment.status in (Experiment.Status.FAILED, Experiment.Status.CANCELLED):
            raise CurationError(f"{experiment.name!r} is {experiment.status}: retry it before extending it")
        return _extend(experiment, generations) if generations > planned else None


def _extend(experiment: Experiment, generations: int):
    """Extend a locked experiment: its planned generations raised, a finished one running again."""
    config = experiment.loop_config.replace(generations=generations)
    _check_reservoir(config, len(experiment.real_reservoir))
    experiment.config = config.to_dict()
    experiment.save(update_fields=["config"])
    if experiment.status != Experiment.Status.DONE:
        return None
    _set_status(experiment, Experiment.Status.RUNNING)
    return create_next_generation(experiment.generations.order_by("index").last(), config)


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
    calibrated = "" if config.reject_real is None else f"-r{config.reject_real:.3f}"
    name = f"simulated-t{config.threshold:.2f}-n{config.noise:.2f}-b{config.bias:+.2f}-s{config.seed}{calibrated}"
    rater, _ = Rater.objects.get_or_create(
        name=name, defaults={"kind": Rater.Kind.SIMULATED, "simulation": dataclasses.asdict(config)})
    return rater


def ensure_gold_items(*, experiment: Experiment) -> None:
    """Gold items for an experiment's human raters, made once: real images (expected up) and
    known-bad images (expected down: real digits ruined by noise, blotches, blur or inversion), drawn
    from the dataset's curator split."""
    from curation.datasets import real_arrays
    from curation import media
    from curation.images import encode_png
    from curation.ml.gold import ruined_images
    from curation.models import GoldItem

    if experiment.gold_items.exists():
        return
    rating = experiment.loop_config.rating
    arrays = real_arrays(experiment.dataset_id)
    rng = np.random.default_rng(experiment.loop_config.seed)
    pool = dataset_split(experiment.dataset_id).curator  # the curators' side of the data: never trained on
    real_ids = rng.choice(pool, size=min(rating.gold_real_items, len(pool)), replace=False)
    bad_sources = arrays.subset(rng.choice(pool, size=min(rating.gold_bad_items, len(pool)), replace=False))
    bad, descriptions = ruined_images(bad_sources, rng)
    rows = []
    for n, image in enumerate(arrays.subset(real_ids)):
        path = media.write(f"experiments/{experiment.pk}/gold/real-{n:03d}.png", encode_png(image))
        rows.append(GoldItem(experiment=experiment, kind=GoldItem.Kind.REAL, image=path, expected_up=True,
                             description=f"real image {int(real_ids[n])}"))
    for n, (image, description) in enumerate(zip(bad, descriptions)):
        path = media.write(f"experiments/{experiment.pk}/gold/bad-{n:03d}.png", encode_png(image))
        rows.append(GoldItem(experiment=experiment, kind=GoldItem.Kind.BAD, image=path, expected_up=False,
                             description=description))
    with transaction.atomic():
        if not experiment.gold_items.exists():
            GoldItem.objects.bulk_create(rows)


def create_next_generation(generation: Generation, config) -> Generation:
    """The generation after `generation`, with its training mix (training.mix) drawn from the real pool,
    the unused reservoir and the samples accepted so far. Made once: asked again, it returns it."""
    experiment = generation.experiment
    next_generation, created = Generation.objects.get_or_create(
        experiment=experiment, index=generation.index + 1, defaults={"votes_needed": config.rating.votes_per_sample}
    )
    if not created:
        return next_generation
    accepted_by_generation: dict[int, list[int]] = {}
    for index, sample_id in Sample.objects.filter(
        generation__experiment=experiment, generation__index__lte=generation.index, accepted=True
    ).values_list("generation__index", "pk"):
        accepted_by_generation.setdefault(index, []).append(sample_id)
    used = set(
        TrainingMember.objects.filter(generation__experiment=experiment, fresh=True).values_list("real_image_id", flat=True)
    )
    try:
        mix = build_mix(
            config.mix,
            pool=list(experiment.real_pool),
            reservoir_unused=[i for i in experiment.real_reservoir if i not in used],
            accepted_by_generation=accepted_by_generation,
            last_generation=generation.index,
            seed=config.seed,
        )
    except ReservoirExhausted as error:
        raise CurationError(str(error)) from error
    fresh = set(mix.fresh)
    members = [TrainingMember(generation=next_generation, real_image_id=i, fresh=i in fresh) for i in mix.real]
    members += [TrainingMember(generation=next_generation, sample_id=i) for ids in mix.synthetic.values() for i in ids]
    TrainingMember.objects.bulk_create(members)
    next_generation.training_mix = mix.summary()
    next_generation.save(update_fields=["training_mix"])
    return next_generation


# --- staff actions on an experiment -------------------------------------------------------------

Status = Experiment.Status
GenState = Generation.State
TERMINAL = (GenState.DONE, GenState.FAILED, GenState.CANCELLED)

# Which experiment states each action applies to; anything else is refused with a reason.
ACTIONS = {
    "start": (Status.DRAFT,),
    "pause": (Status.RUNNING,),
    "resume": (Status.PAUSED,),
    "advance": (Status.RUNNING, Status.DONE),
    "retry": (Status.FAILED,),
    "cancel": (Status.DRAFT, Status.RUNNING, Status.PAUSED, Status.FAILED),
}
ACTION_HELP = {
    "start": "only a draft can start",
    "pause": "only a running experiment can pause",
    "resume": "only a paused experiment can resume",
    "advance": "advancing applies to a running experiment waiting for votes or for staff, or a finished one",
    "retry": "only a failed experiment has a step to retry",
    "cancel": "a finished or cancelled experiment cannot be cancelled",
}


def allowed_actions(experiment: Experiment) -> list[str]:
    return [name for name, states in ACTIONS.items() if experiment.status in states]


def current_generation(experiment: Experiment):
    """The generation the loop is working on: the first one not finished, else the last."""
    generations = experiment.generations.order_by("index")
    return generations.exclude(state__in=TERMINAL).first() or generations.last()


def perform_action(*, experiment: Experiment, action: str):
    """Carry out a staff action. Returns the generation whose step must be queued (or None). An action
    the experiment's state does not allow raises CurationError and changes nothing."""
    if action not in ACTIONS:
        raise CurationError(f"unknown action {action!r}; actions are {', '.join(ACTIONS)}")
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.status not in ACTIONS[action]:
            raise CurationError(
                f"cannot {action} {experiment.name!r}: it is {experiment.status}; {ACTION_HELP[action]}"
            )
        return ACTION_FUNCTIONS[action](experiment)


def _start(experiment: Experiment):
    return start_experiment(experiment=experiment)


def _set_status(experiment: Experiment, status: str) -> None:
    experiment.status = status
    experiment.save(update_fields=["status"])


def _pause(experiment: Experiment):
    _set_status(experiment, Status.PAUSED)
    return None


def _resume(experiment: Experiment):
    _set_status(experiment, Status.RUNNING)
    generation = current_generation(experiment)
    if generation is not None and generation.state == GenState.DONE:
        return _next_generation(experiment, generation)
    return generation


def _retry(experiment: Experiment):
    generation = experiment.generations.filter(state=GenState.FAILED).order_by("index").first()
    if generation is None:
        raise CurationError(f"{experiment.name!r} is failed but none of its generations is: nothing to retry")
    Generation.objects.filter(pk=generation.pk).update(
        state=generation.failed_step or GenState.PENDING, error="", failed_step="", progress_message="retrying"
    )
    _set_status(experiment, Status.RUNNING)
    return generation


def _cancel(experiment: Experiment):
    _set_status(experiment, Status.CANCELLED)
    experiment.generations.exclude(state__in=TERMINAL).update(
        state=GenState.CANCELLED, open_for_raters=False, progress_message="cancelled"
    )
    return None


def _advance(experiment: Experiment):
    """Move the loop on by hand: close rating early (the discriminator scores what humans did not
    rate), start the next generation when automatic advance is off, or extend a finished experiment
    by one generation."""
    generation = current_generation(experiment)
    if generation is None:
        raise CurationError(f"{experiment.name!r} has no generation yet: start it first")
    if experiment.status == Status.DONE:
        return _extend(experiment, generation.index + 2)
    if generation.state == GenState.RATING:
        if not generation.samples.filter(vote_count__gt=0).exists() and experiment.loop_config.curation.policy != "none":
            raise CurationError(
                f"G{generation.index} has no votes yet: its {experiment.loop_config.curation.policy} curation "
                "needs some before rating can close"
            )
        generation.samples.filter(needs_votes=True).update(needs_votes=False)
        Vote.objects.filter(generation=generation, open=True).update(open=False)  # as their samples are
        Generation.objects.filter(pk=generation.pk).update(state=GenState.CURATING, open_for_raters=False)
        return generation
    if generation.state == GenState.DONE:
        return _next_generation(experiment, generation)
    raise CurationError(
        f"G{generation.index} is {generation.state}: it moves on by itself; advancing applies while a "
        "generation waits for votes, or after the last one"
    )


def _next_generation(experiment: Experiment, generation: Generation):
    config = experiment.loop_config
    if generation.index + 1 >= config.generations:
        _set_status(experiment, Status.DONE)
        return None
    return create_next_generation(generation, config)


ACTION_FUNCTIONS = {
    "start": _start,
    "pause": _pause,
    "resume": _resume,
    "advance": _advance,
    "retry": _retry,
    "cancel": _cancel,
}
