"""The loop's steps for one generation: train, sample, rate, curate; then the next generation.

A generation moves pending -> training -> sampling -> rating -> curating -> done. Each step is
idempotent: it checks the state, keys its writes (unique generation+index, atomic file renames,
resumable checkpoints), and a step run twice finishes the work without doubling it. Celery tasks
and the `run_experiment` command both call `run_step`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import Counter

import numpy as np
import torch
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from sklearn.metrics import roc_auc_score

from curation.datasets import real_arrays, real_models
from curation.log_context import log_context
from curation import locks, media
from curation.images import encode_png, grid_png, read_images, sha256
from curation.ml.experiment_config import GUIDE_KEY, METRIC_KEY, RATING_ORDER_KEY, SAMPLE_KEY, TRAIN_KEY
from curation.ml.discriminator import FEATURE_NAMES, fit_discriminator, image_features
from curation.ml.verifier import Verification, verify
from curation.ml.evaluation import choice_versus_chance, evaluate
from curation.ml.model_files import SUFFIX, dump_model, load_model
from curation.ml.policy import curate
from curation.ml.reference import flatten
from curation.ml.raters import panel_vote_share, rater_threshold, sample_keys, simulated_votes
from curation.models import DiscriminatorVersion, Experiment, Generation, Sample, Vote
from curation.progress import GenerationProgress, StepInterrupted
from curation.rating import cast_vote, open_for_rating
from curation.services import create_next_generation, ensure_gold_items, simulated_rater
from curation.supervision import fail_generation
from curation import tracking
from generation.sampling import sample_images, sample_seed
from training.train import CARD_FILE, copy_checkpoint, is_trained, train_unet, training_key

logger = logging.getLogger(__name__)
State = Generation.State
GRID_SAMPLES = 128


def run_step(generation_id: int, *, bar: bool = False) -> Generation:
    """Carry out the step the generation is in, and return it in its new state."""
    generation = Generation.objects.select_related("experiment").get(pk=generation_id)
    if generation.state in (State.DONE, State.FAILED, State.CANCELLED):
        return generation
    if generation.experiment.status != Experiment.Status.RUNNING:
        return generation
    step = STEPS[generation.state]
    _configure_torch()
    started = time.monotonic()
    with log_context(experiment_id=generation.experiment_id, generation_id=generation.pk,
                     generation_index=generation.index, step=generation.state):
        try:
            step(generation, bar=bar)
        except StepInterrupted as interruption:
            logger.info("generation %s stopped in %s: %s", generation, generation.state, interruption)
            generation.refresh_from_db()
            return generation
        except Exception as error:
            fail_generation(generation, error)
            raise
    generation.refresh_from_db()
    timings = dict(generation.timings)
    name = step.__name__.removesuffix("_step")
    timings[name] = round(timings.get(name, 0.0) + time.monotonic() - started, 3)
    Generation.objects.filter(pk=generation.pk).update(timings=timings)
    generation.timings = timings
    return generation


def run_generation(generation_id: int, *, bar: bool = False) -> Generation:
    """All of a generation's steps that need no human, in order."""
    generation = Generation.objects.get(pk=generation_id)
    while generation.state not in (State.DONE, State.FAILED, State.CANCELLED):
        before = generation.state
        generation = run_step(generation.pk, bar=bar)
        if generation.state == before:  # waiting for human votes, or the experiment was paused
            break
    return generation


def _configure_torch() -> None:
    if settings.OUROBOROS_TORCH_THREADS:
        torch.set_num_threads(settings.OUROBOROS_TORCH_THREADS)


def _set_state(generation: Generation, state: str, **fields) -> None:
    """Move a generation on, unless staff cancelled it (or it failed) while the step ran."""
    changed = (
        Generation.objects.filter(pk=generation.pk)
        .exclude(state__in=(State.CANCELLED, State.FAILED))
        .update(state=state, **fields)
    )
    if not changed:
        raise StepInterrupted(f"generation {generation.index} was cancelled while its step ran")
    generation.state = state
    for name, value in fields.items():
        setattr(generation, name, value)


def _checkpoint_dir(generation: Generation) -> str:
    return f"experiments/{generation.experiment_id}/g{generation.index:03d}/checkpoint"


def training_images(generation: Generation) -> np.ndarray:
    experiment = generation.experiment
    # In the order the mix recorded them: without an order PostgreSQL may return the rows in any order,
    # and the order is part of what a training run is (its batches, and its key in the training cache).
    members = list(generation.training_members.order_by("pk").values_list("real_image_id", "sample__image"))
    real_ids = [r for r, _ in members if r is not None]
    sample_paths = [p for r, p in members if r is None]
    parts = [real_arrays(experiment.dataset_id).subset(real_ids)] if real_ids else []
    if sample_paths:
        parts.append(read_images(sample_paths, experiment.dataset.channels))
    return np.concatenate(parts) if parts else np.empty((0,))


# --- training -----------------------------------------------------------------------------------


def train_step(generation: Generation, *, bar: bool = False) -> None:
    _set_state(generation, State.TRAINING)
    config = generation.experiment.loop_config
    train_config, continues = config.train_config_for(
        generation.index, seed=sample_seed(config.seed, TRAIN_KEY, generation.index), device=settings.OUROBOROS_DEVICE
    )
    previous = generation.experiment.generations.get(index=generation.index - 1) if continues else None
    relative = _checkpoint_dir(generation)
    images = training_images(generation)
    # A from-scratch model is a function of its images and settings: experiments that share them (a
    # study's variants of one seed share their G0) share one training, through a cache keyed by them;
    # the lock makes a second experiment wait for the first one's run instead of repeating it.
    cached = None if continues else f"cache/checkpoints/{training_key(images, config.model, train_config)}"
    with contextlib.ExitStack() as stack:
        if cached:
            stack.enter_context(locks.held(cached))
        work = stack.enter_context(media.folder(relative, last=CARD_FILE))
        init_from = stack.enter_context(media.folder(previous.checkpoint_dir, keep=False)).path if previous else None
        if cached and not is_trained(work.path) and media.exists(f"{cached}/{CARD_FILE}"):
            with media.folder(cached, keep=False) as source:
                copy_checkpoint(source.path, work.path)
        with GenerationProgress(generation, "training", bar=bar) as progress:
            result = train_unet(images, model_config=config.model, train_config=train_config, checkpoint_dir=work.path,
                                init_from=init_from, progress=progress, on_checkpoint=work.push)
        if cached and not media.exists(f"{cached}/{CARD_FILE}"):
            with media.folder(cached, last=CARD_FILE) as target:
                copy_checkpoint(work.path, target.path)
        # A redelivered task (its first worker lost) resumes from the last checkpoint: say from where.
        metrics = {**generation.metrics, "train_resumed_from_step": result.resumed_from_step}
        if config.sample.guidance > 0 and generation.index > 0:
            metrics.update(_train_guide(generation, config, work.path, bar=bar))
    _set_state(generation, State.SAMPLING, checkpoint_dir=relative, checkpoint_sha256=result.weights_sha256,
               metrics=metrics)


def _guide_dir(generation: Generation) -> str:
    return f"experiments/{generation.experiment_id}/g{generation.index:03d}/guide"


def _train_guide(generation: Generation, config, base_dir, *, bar: bool) -> dict:
    """The negative-guidance model: this generation's model fine-tuned on the previous generation's
    samples (all of them, or those curation turned down). Idempotent like any training."""
    previous = generation.experiment.generations.get(index=generation.index - 1)
    samples = previous.samples.all() if config.guidance_source == "own" else previous.samples.filter(accepted=False)
    paths = list(samples.order_by("index").values_list("image", flat=True))
    if not paths:  # nothing to steer away from: this generation samples its model alone
        return {"guide_images": 0}
    train_config, _ = config.train_config_for(generation.index, seed=sample_seed(config.seed, GUIDE_KEY, generation.index),
                                              device=settings.OUROBOROS_DEVICE)
    train_config = dataclasses.replace(train_config, steps=config.guidance_steps,
                                       warmup_steps=min(train_config.warmup_steps, config.guidance_steps // 10))
    with GenerationProgress(generation, "training the guide", bar=bar) as progress, \
            media.folder(_guide_dir(generation), last=CARD_FILE) as work:
        train_unet(read_images(paths, generation.experiment.dataset.channels), model_config=config.model,
                   train_config=train_config, checkpoint_dir=work.path, init_from=base_dir, progress=progress,
                   on_checkpoint=work.push)
    return {"guide_images": len(paths)}


# --- sampling -----------------------------------------------------------------------------------


def sample_step(generation: Generation, *, bar: bool = False) -> None:
    experiment = generation.experiment
    config = experiment.loop_config
    sample_config = dataclasses.replace(config.sample, device=settings.OUROBOROS_DEVICE)
    count = config.samples_per_generation
    existing = set(generation.samples.values_list("index", flat=True))
    missing = [i for i in range(count) if i not in existing]
    rating_order = np.random.default_rng(sample_seed(config.seed, RATING_ORDER_KEY, generation.index)).permutation(count)
    to_rate = set(rating_order[: config.rating.rating_budget].tolist())
    # Until a discriminator can rank them, raters see samples in a random (seeded) order.
    rank = {int(index): position / count for position, index in enumerate(rating_order)}
    models = real_models(experiment.dataset_id)
    guided = sample_config.guidance > 0 and media.exists(f"{_guide_dir(generation)}/{CARD_FILE}")
    guidance = sample_config.guidance if guided else 0.0

    def draw(seeds: list[int], progress) -> np.ndarray:
        with media.folder(generation.checkpoint_dir, keep=False) as checkpoint, \
                (media.folder(_guide_dir(generation), keep=False) if guided else contextlib.nullcontext()) as guide:
            return sample_images(checkpoint.path, seeds, sample_config, progress=progress,
                                 guide_dir=guide.path if guide else None)

    seeds = [sample_seed(config.seed, SAMPLE_KEY, generation.index, i) for i in missing]
    if missing:
        with GenerationProgress(generation, "sampling", bar=bar) as progress:
            images = draw(seeds, progress)
        predicted = models.rater_model.predict(images)  # the curators' classes: the diversity guard's groups
        rows = []
        storing = GenerationProgress(generation, "storing samples", bar=bar)  # long for 10^5 samples
        for position, index in enumerate(missing):
            if position % 500 == 0:
                storing(position, len(missing), f"storing samples {position}/{len(missing)}")
            data = encode_png(images[position], provenance={
                "source": "synthetic",
                "experiment": experiment.pk,
                "experiment_name": experiment.name,
                "generation": generation.index,
                "sample_index": index,
                "checkpoint_sha256": generation.checkpoint_sha256,
                "sampler": sample_config.sampler,
                "steps": sample_config.steps,
                "temperature": sample_config.temperature,
                "guidance": guidance,
                "seed": seeds[position],
            })
            path = media.write(f"experiments/{experiment.pk}/g{generation.index:03d}/samples/{index:05d}.png", data)
            rows.append(
                Sample(
                    generation=generation,
                    index=index,
                    seed=seeds[position],
                    sampler=sample_config.sampler,
                    steps=sample_config.steps,
                    temperature=sample_config.temperature,
                    image=path,
                    sha256=sha256(data),
                    predicted_class=int(predicted[position]),
                    to_rate=index in to_rate,
                    needs_votes=index in to_rate,
                    rating_rank=rank[index],
                )
            )
        Sample.objects.bulk_create(rows, ignore_conflicts=True)
        storing.close()

    stored = generation.samples.order_by("index")
    stored_images = read_images(stored.values_list("image", flat=True), experiment.dataset.channels)
    # Measured on the held-out test split at its matched size (curation.ml.evaluation), on at least
    # as many samples as that size asks for.
    wanted = max(config.metric_samples, models.evaluation.sample_size)
    metric_images = stored_images[:wanted]
    extra = wanted - len(metric_images)
    if extra > 0:
        # Too few stored samples for stable metrics: draw more, only for measuring.
        with GenerationProgress(generation, "sampling for metrics", bar=bar) as progress:
            seeds = [sample_seed(config.seed, METRIC_KEY, generation.index, i) for i in range(extra)]
            metric_images = np.concatenate([metric_images, draw(seeds, progress)])
    metrics = dict(generation.metrics)
    metrics.update(evaluate(models.evaluation, metric_images))
    if experiment.real_floor != models.real_floor:
        # Set here, the one step every experiment passes through, however it was created (form, API,
        # command line): the metrics' floor comes from the same fitted models as the metrics.
        Experiment.objects.filter(pk=experiment.pk).update(real_floor=models.real_floor)
    grid = media.write(
        f"experiments/{experiment.pk}/g{generation.index:03d}/grid.png", grid_png(stored_images[:GRID_SAMPLES])
    )
    _set_state(generation, State.RATING, metrics=metrics, grid_image=grid)


# --- rating -------------------------------------------------------------------------------------


def rate_step(generation: Generation, *, bar: bool = False) -> None:
    """Simulated raters vote now, through the same service as humans; human rating waits for people."""
    config = generation.experiment.loop_config
    if config.rating.raters == "simulated":
        _simulate_votes(generation, config, bar=bar)
    elif not generation.open_for_raters:
        ensure_gold_items(experiment=generation.experiment)
        open_for_rating(generation)
    if rating_complete(generation):
        _set_state(generation, State.CURATING, open_for_raters=False)


def rating_complete(generation: Generation) -> bool:
    return not generation.samples.filter(needs_votes=True).exists()


def reorder_rating_queue(generation: Generation) -> None:
    """Active learning: rank the samples still needing votes by the discriminator's uncertainty,
    from a discriminator fitted on the votes so far."""
    voted = list(generation.samples.filter(vote_count__gt=0).order_by("index"))
    waiting = list(generation.samples.filter(needs_votes=True).order_by("index"))
    if len(voted) < 2 or not waiting:
        return
    channels = generation.experiment.dataset.channels
    shares = _vote_shares(generation, voted, minimum_votes=1)
    discriminator = _discriminator_for(
        generation, [s.pk for s in voted], image_features(read_images([s.image.name for s in voted], channels)), shares >= 0.5
    )
    fitted = load_model(media.read(discriminator.model_file.name))
    scores = fitted.score(image_features(read_images([s.image.name for s in waiting], channels)))
    for row, score in zip(waiting, scores):
        row.rating_rank = float(abs(score - 0.5))
    Sample.objects.bulk_update(waiting, ["rating_rank"], batch_size=500)


def _vote_shares(generation: Generation, samples: list, minimum_votes: int) -> np.ndarray:
    """Up-vote share per sample from counted (unflagged) votes; NaN below `minimum_votes`."""
    tallies = {
        row["sample_id"]: (row["ups"], row["total"])
        for row in Vote.objects.filter(sample__generation=generation, flagged=False)
        .values("sample_id")
        .annotate(ups=Count("pk", filter=Q(up=True)), total=Count("pk"))
    }
    return np.array(
        [tallies[s.pk][0] / tallies[s.pk][1] if tallies.get(s.pk, (0, 0))[1] >= minimum_votes else np.nan for s in samples]
    )


def _simulate_votes(generation: Generation, config, *, bar: bool) -> None:
    panel = config.rating.panel
    raters = [simulated_rater(config=c) for c in panel]
    samples = list(generation.samples.filter(to_rate=True).order_by("index"))
    if not samples:
        return
    images = read_images([s.image.name for s in samples], generation.experiment.dataset.channels)
    model = real_models(generation.experiment.dataset_id).rater_model
    confidence = model.confidence(images)
    keys = sample_keys(generation.index, [s.index for s in samples])
    verdicts = [simulated_votes(confidence, keys, rater_config, run_seed=config.seed,
                                threshold=rater_threshold(rater_config, model)) for rater_config in panel]
    already = set(Vote.objects.filter(sample__in=samples).values_list("rater_id", "sample_id"))
    with GenerationProgress(generation, "rating", bar=bar) as progress:
        for n, sample_row in enumerate(samples):
            # Each sample's votes come from `votes_per_sample` distinct raters, rotating through the panel.
            for k in range(config.rating.votes_per_sample):
                which = (sample_row.index + k) % len(panel)
                if (raters[which].pk, sample_row.pk) not in already:
                    cast_vote(rater=raters[which], sample=sample_row, up=bool(verdicts[which][n]), require_claim=False)
            if (n + 1) % 16 == 0 or n + 1 == len(samples):
                progress(n + 1, len(samples), f"votes on {n + 1}/{len(samples)} samples")


# --- curating -----------------------------------------------------------------------------------


def curate_step(generation: Generation, *, bar: bool = False) -> None:
    experiment = generation.experiment
    config = experiment.loop_config
    models = real_models(experiment.dataset_id)
    # Progress at each stage, so that the reconciler sees a long curation alive.
    progress = GenerationProgress(generation, "curating", bar=bar)
    samples = list(generation.samples.order_by("index"))
    images = read_images([s.image.name for s in samples], experiment.dataset.channels)
    features = image_features(images)
    progress(1, 3, "fitting the discriminator")

    vote_share = _vote_shares(generation, samples, minimum_votes=generation.votes_needed)
    voted = ~np.isnan(vote_share)

    discriminator = verification = None
    scores = np.full(len(samples), np.nan)
    if config.curation.discriminator == "verifier":
        verification = _verify(generation, images, vote_share, models, seed=sample_seed(config.seed, generation.index))
        scores = verification.scores
    elif voted.sum() > 0:
        voted_ids = [s.pk for s, has_votes in zip(samples, voted) if has_votes]
        discriminator = _discriminator_for(generation, voted_ids, features[voted], vote_share[voted] >= 0.5)
        fitted = load_model(media.read(discriminator.model_file.name))
        scores = fitted.score(features)

    groups = np.array([s.predicted_class for s in samples])
    # The coverage guard spreads its choice over the images and may rescue unrated samples by their scores.
    coverage = config.curation.diversity_guard and config.curation.guard_mode == "coverage"
    decision = curate(
        config.curation,
        vote_share=vote_share,
        discriminator_score=scores if config.curation.needs_discriminator or coverage else np.full(len(samples), np.nan),
        groups=groups,
        group_proportions=models.class_proportions,
        seed=sample_seed(config.seed, generation.index),
        features=flatten(images) if coverage else None,
        **(_match_embeddings(images, models, experiment) if config.curation.needs_embeddings else {}),
    )
    for n, row in enumerate(samples):
        row.vote_share = None if np.isnan(vote_share[n]) else float(vote_share[n])
        row.discriminator_score = None if np.isnan(scores[n]) else float(scores[n])
        row.accepted = bool(decision.accepted[n])
        row.accept_reason = decision.reason[n]

    metrics = dict(generation.metrics)
    metrics.update(_curation_metrics(samples, decision, vote_share, groups, models, discriminator))
    # Whether the accepted samples beat as many drawn at random from the same samples, held out.
    metrics.update(choice_versus_chance(models.evaluation, images, decision.accepted, seed=generation.index))
    if verification is not None:
        metrics.update(verification.metrics())
    if config.rating.raters == "simulated" and (discriminator or verification) is not None:
        metrics.update(_discriminator_held_out(generation, config, samples, images, scores, models))
    progress(2, 3, "storing the verdicts")
    progress.close()
    with transaction.atomic():
        Sample.objects.bulk_update(samples, ["vote_share", "discriminator_score", "accepted", "accept_reason"], batch_size=500)
        _set_state(generation, State.DONE, metrics=metrics, finished_at=timezone.now(), progress_fraction=1.0,
                   progress_message="done")
        _continue_experiment(generation, config)
    tracking.generation_done(generation)


def _match_embeddings(images: np.ndarray, models, experiment) -> dict:
    """What the match policy compares: the samples and the curator split in the metrics' feature space."""
    curator = real_arrays(experiment.dataset_id).images[models.split.curator]
    return {"embedding": models.reference.features(images), "real_embedding": models.reference.features(curator)}


def _verify(generation: Generation, images: np.ndarray, vote_share: np.ndarray, models, *, seed: int) -> Verification:
    """The real-anchored verifier's scores: the curator split's real images against this generation's
    samples, with every earlier generation's voted samples pooled in."""
    experiment = generation.experiment
    arrays = real_arrays(experiment.dataset_id)
    earlier = list(Sample.objects.filter(generation__experiment=experiment, generation__index__lt=generation.index,
                                         vote_share__isnull=False).order_by("pk").values_list("image", "vote_share"))
    pooled = read_images([path for path, _ in earlier], experiment.dataset.channels)
    up = np.array([share >= 0.5 for _, share in earlier], dtype=bool)
    return verify(curator_images=arrays.images[models.split.curator], samples=images, vote_share=vote_share,
                  pooled_up=pooled[up], pooled_down=pooled[~up], seed=seed)


def _discriminator_for(generation: Generation, sample_ids: list[int], features, accepted) -> DiscriminatorVersion:
    """The latest discriminator fitted on exactly these verdicts on these samples, or a new version
    fitted now. (A count alone is not enough: an active-learning refit on partial votes can cover as
    many samples as the final votes do, with other verdicts.)"""
    pairs = ",".join(f"{i}:{int(a)}" for i, a in sorted(zip(sample_ids, accepted)))
    fingerprint = hashlib.sha256(pairs.encode()).hexdigest()
    latest = generation.discriminators.order_by("-version").first()
    # (a version stored as a pickle, before skops, is never loaded: it is fitted again)
    if latest is not None and latest.votes_fingerprint == fingerprint and latest.model_file.name.endswith(SUFFIX):
        return latest
    fit = fit_discriminator(features, accepted, seed=generation.index)
    version = (latest.version + 1) if latest else 1
    path = media.write(
        f"experiments/{generation.experiment_id}/g{generation.index:03d}/discriminator-v{version}{SUFFIX}", dump_model(fit)
    )
    return DiscriminatorVersion.objects.create(
        generation=generation,
        version=version,
        features=f"64 pixels + {', '.join(FEATURE_NAMES)}; standardised logistic regression",
        model_file=path,
        vote_count=len(sample_ids),
        votes_fingerprint=fingerprint,
        accuracy=fit.accuracy,
        auc=fit.auc,
        train_count=fit.train_count,
        held_out_count=fit.held_out_count,
        positive_rate=fit.positive_rate,
        note=fit.note,
    )


def _discriminator_held_out(generation, config, samples, images, scores, models) -> dict:
    """How well the discriminator agrees with the simulated panel on the samples nobody rated: the panel
    is asked about them here for measuring only (their votes are never cast), which gives hundreds of
    held-out verdicts where the discriminator's own hold-out has a few dozen."""
    unrated = np.array([not s.to_rate for s in samples])
    if not unrated.any():
        return {"discriminator_heldout_auc": None, "discriminator_heldout_count": 0}
    indices = np.array([s.index for s in samples])[unrated]
    share = panel_vote_share(models.rater_model.confidence(images[unrated]), indices,
                             sample_keys(generation.index, indices), config.rating.panel, models.rater_model,
                             votes_per_sample=config.rating.votes_per_sample, run_seed=config.seed)
    verdict = share >= 0.5
    auc = float(roc_auc_score(verdict, scores[unrated])) if 0 < verdict.sum() < len(verdict) else None
    return {"discriminator_heldout_auc": auc, "discriminator_heldout_count": int(unrated.sum())}


def _curation_metrics(samples, decision, vote_share, groups, models, discriminator) -> dict:
    accepted = decision.accepted
    voted = ~np.isnan(vote_share)
    per_class = {}
    for group in models.class_proportions:
        members = groups == group
        per_class[str(group)] = float(accepted[members].mean()) if members.any() else None
    reasons = Counter(r for r in decision.reason if r)
    return {
        "acceptance_rate": float(accepted.mean()) if len(accepted) else 0.0,
        "accepted": int(accepted.sum()),
        "acceptance_by_class": per_class,
        "accept_reasons": dict(reasons),
        "rated_samples": int(voted.sum()),
        "vote_up_rate": float((vote_share[voted] >= 0.5).mean()) if voted.any() else None,
        "discriminator_version": discriminator.version if discriminator else None,
        "discriminator_accuracy": discriminator.accuracy if discriminator else None,
        "discriminator_auc": discriminator.auc if discriminator else None,
        "discriminator_note": discriminator.note if discriminator else "no votes",
    }


def _continue_experiment(generation: Generation, config) -> None:
    experiment = generation.experiment
    if generation.index + 1 >= config.generations:
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.DONE)
        return
    if config.auto_advance:
        create_next_generation(generation, config)


STEPS = {
    State.PENDING: train_step,
    State.TRAINING: train_step,
    State.SAMPLING: sample_step,
    State.RATING: rate_step,
    State.CURATING: curate_step,
}
