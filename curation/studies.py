"""Studies: ordinary experiments, one per variant and seed, run by the product's own pipeline.

`create_study` makes (or completes) the experiments of a plan and starts them; `run_study` carries
them out in this process with a pool of worker processes, or `queue_study` hands them to the Celery
workers like any experiment; `write_study_report` computes the report from their stored metrics.
Every step is the pipeline's: a study resumes wherever its experiments stand.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
from django.db import connections, transaction

from curation.datasets import dataset_named, dataset_split
from curation import media, study_worker
from curation.ml.experiment_config import ConfigError, ExperimentConfig
from curation.ml.study import (StudyPlan, Variant, comparisons, include_runs, metrics_csv, read_metrics_csv,
                                 report_markdown)
from curation.models import Experiment, Generation, Study
from curation.selectors import STUDY_PLOTS, study_curves_png, study_floor, study_progress, study_results
from curation.services import CurationError, create_experiment, extend_experiment, start_experiment
from training.files import write_atomically
from training.progress import ProgressCallback

logger = logging.getLogger(__name__)
State = Generation.State
TERMINAL = (State.DONE, State.FAILED, State.CANCELLED)


def plan_study(*, base: ExperimentConfig, variants: list[Variant], seeds: list[int], generations: int,
               preset: str = "") -> StudyPlan:
    """A plan on the stored dataset `base` names: its training split, less the pool, is what fresh loops draw."""
    dataset = dataset_named(base.dataset)
    train = len(dataset_split(dataset.pk).train)
    if base.pool_size > train:
        raise CurationError(f"the pool ({base.pool_size}) is larger than {dataset.name}'s training split ({train} images)")
    plan = StudyPlan(base=base, variants=tuple(variants), seeds=tuple(seeds), generations=generations,
                     reservoir=train - base.pool_size, preset=preset)
    plan.validate()
    return plan


def create_study(*, name: str, plan: StudyPlan, created_by=None) -> Study:
    """The study named `name` with an experiment for every variant and seed of `plan`, started. Calling
    it again with the same plan (or more seeds or variants of it) adds only what is missing."""
    name = name.strip()
    if not name:
        raise CurationError("a study needs a name")
    with transaction.atomic():
        study, created = Study.objects.get_or_create(name=name, defaults={"plan": plan.to_dict(),
                                                                          "created_by": created_by})
        if not created:
            stored = StudyPlan.from_dict(study.plan)
            if stored.base != plan.base:
                raise CurationError(f"study {name!r} exists with other settings: resume it as it was planned, or "
                                    "choose another name")
            if plan.generations < stored.generations:
                raise CurationError(f"study {name!r} runs to G{stored.generations - 1}: resume it as it was planned "
                                    f"or extend it, not shorten it to G{plan.generations - 1}")
            if plan.generations > stored.generations:
                _extend(study, plan.generations)
            merged = StudyPlan(base=plan.base, generations=plan.generations, reservoir=plan.reservoir,
                               preset=plan.preset, seeds=tuple(dict.fromkeys(stored.seeds + plan.seeds)),
                               variants=tuple(dict.fromkeys(stored.variants + plan.variants)))
            study.plan = merged.to_dict()
            study.save(update_fields=["plan"])
    for variant in plan.variants:
        for seed in plan.seeds:
            _experiment(study, plan, variant, seed, created_by)
    return study


def _extend(study: Study, generations: int) -> None:
    """Every experiment of the study planned to `generations`, finished ones running again. A fresh loop
    draws reservoir / (generations - 1) new real images a generation, a count fixed when it was planned:
    a study with fresh loops cannot be extended (plan it with its final length)."""
    experiments = list(study.experiments.all())
    fresh = [e.name for e in experiments if e.loop_config.mix.loop == "fresh"]
    if fresh:
        raise CurationError(f"study {study.name!r} has fresh loops ({fresh[0]}, ...), whose draws of new real data are "
                            "sized for its planned generations: it cannot be extended; plan a new study instead")
    for experiment in experiments:
        extend_experiment(experiment=experiment, generations=generations)


def variants_named(study: Study, names: tuple[str, ...]) -> tuple[Variant, ...]:
    """The study's variants of these names, in their order; a name the study does not have is refused."""
    known = {v.name: v for v in StudyPlan.from_dict(study.plan).variants}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CurationError(f"study {study.name!r} has no variant {unknown[0]!r}; it has {', '.join(known)}")
    return tuple(known[name] for name in names)


def _experiment(study: Study, plan: StudyPlan, variant: Variant, seed: int, created_by) -> Experiment:
    existing = study.experiments.filter(study_variant=variant.name, study_seed=seed).first()
    if existing is None:
        existing = create_experiment(name=f"{study.name} · {variant.name} · seed {seed}", config=plan.config(variant, seed),
                                     created_by=created_by, study=study, study_variant=variant.name, study_seed=seed)
    if existing.status == Experiment.Status.DRAFT:
        start_experiment(experiment=existing)
    return existing


def run_study(*, study: Study, workers: int = 1, progress: Optional[ProgressCallback] = None,
              first: tuple[str, ...] = ()) -> list[Experiment]:
    """Carry out every unfinished experiment of the study here, one generation at a time, `workers` at
    once, each worker a process of its own running the pipeline's steps. The least advanced experiment
    always goes next (then by variant, then seed), so the study moves forward in step: stopped at any
    point, every variant and seed has reached about the same generation, and the report compares like
    with like. The first variant's G0 of each seed is trained before the others need it (they find it
    in the training cache). The variants named in `first` run ahead of the others, in step among
    themselves (a lever that joins a long study, to be read before the rest catches up). A generation
    that fails stops its experiment (the error is stored on the generation), not the study. Returns the
    experiments that did not finish (failed or cancelled)."""
    order = {v.name: n for n, v in enumerate(StudyPlan.from_dict(study.plan).variants)}
    queue = {e.pk: (e.study_variant not in first, _next_index(e), order.get(e.study_variant, len(order)), e.study_seed)
             for e in study.experiments.filter(status=Experiment.Status.RUNNING)}
    queue = {pk: key for pk, key in queue.items() if key[1] is not None}
    total_steps = len(queue)

    def report(message: str) -> None:
        if progress is not None:
            counts = study_progress(study)
            progress(counts["done"], counts["total"], message)

    if workers <= 1:  # here, in this process (and its database connection: a test's database too)
        while queue:
            pk = min(queue, key=queue.get)
            index = run_generation_of(pk)
            if index is None:
                del queue[pk]
            else:
                queue[pk] = (queue[pk][0], index, *queue[pk][2:])
            report(f"{total_steps - len(queue)}/{total_steps} experiments finished")
        return list(study.experiments.exclude(status=Experiment.Status.DONE))
    threads = max(1, (os.cpu_count() or 1) // workers)
    connections.close_all()  # the workers open their own
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=study_worker.start,
                             initargs=(threads,)) as pool:
        running: dict = {}
        while queue or running:
            started = sorted(set(queue) - set(running.values()), key=queue.get)[:workers - len(running)]
            for pk in started:
                running[pool.submit(study_worker.run_generation_of, pk)] = pk
            finished = [f for f in running if f.done()]
            for future in finished:
                pk = running.pop(future)
                index = future.result()
                if index is None:
                    del queue[pk]
                else:
                    queue[pk] = (queue[pk][0], index, *queue[pk][2:])
            if started or finished:  # (the counts are read from the database: not every half second)
                report(f"{total_steps - len(queue)}/{total_steps} experiments finished, "
                       f"{len(running)} generations running")
            if running:
                time.sleep(0.5)
    return list(study.experiments.exclude(status=Experiment.Status.DONE))


def _next_index(experiment: Experiment) -> Optional[int]:
    generation = experiment.generations.exclude(state__in=TERMINAL).order_by("index").first()
    return None if generation is None else generation.index


def run_generation_of(experiment_id: int) -> Optional[int]:
    """Run the experiment's current generation through its steps until it is done or the experiment
    stops. Returns the index of the generation to run next, or None when the experiment has nothing
    left to run (done, failed, paused or cancelled)."""
    from curation.pipeline import run_generation

    experiment = Experiment.objects.get(pk=experiment_id)
    index = _next_index(experiment)
    while experiment.status == Experiment.Status.RUNNING and index is not None:
        generation = experiment.generations.get(index=index)
        before = generation.state
        try:
            generation = run_generation(generation.pk)
        except Exception:  # recorded on the generation (its error) by the pipeline; the other experiments go on
            logger.exception("%s: generation %s failed", experiment.name, index)
            return None
        experiment.refresh_from_db(fields=["status"])
        if generation.state == before:  # waiting (cannot happen with simulated raters) or stopped
            return None
        if generation.state == State.DONE:
            following = _next_index(experiment)
            return following if experiment.status == Experiment.Status.RUNNING else None
        if generation.state in TERMINAL:
            return None
    return None


def queue_study(*, study: Study) -> int:
    """Hand every running experiment's current step to the Celery workers. Returns how many were queued."""
    from curation import tasks
    from curation.services import current_generation

    queued = 0
    for experiment in study.experiments.filter(status=Experiment.Status.RUNNING):
        generation = current_generation(experiment)
        if generation is not None and generation.state not in TERMINAL:
            with transaction.atomic():
                tasks.enqueue(generation.pk)
            queued += 1
    return queued


def measure_chance(study: Study) -> int:
    """Curation against chance (`choice_versus_chance`) for the study's generations curated before the
    curation step measured it; stored with their metrics. Returns how many were measured now."""
    from curation.datasets import real_models
    from curation.images import read_images
    from curation.ml.evaluation import CHANCE_MINIMUM, choice_versus_chance

    measured = 0
    for generation in Generation.objects.filter(experiment__study=study, state=State.DONE).select_related(
            "experiment__dataset"):
        if "chance_fd" in generation.metrics:
            continue
        models = real_models(generation.experiment.dataset_id)
        total, accepted = generation.samples.count(), generation.samples.filter(accepted=True).count()
        if accepted == total or accepted < CHANCE_MINIMUM:
            continue  # nothing chosen, or too few to measure
        rows = list(generation.samples.order_by("index").values_list("image", "accepted"))
        images = read_images([image for image, _ in rows], generation.experiment.dataset.channels)
        found = choice_versus_chance(models.evaluation, images, np.array([a for _, a in rows], dtype=bool),
                                     seed=generation.index)
        Generation.objects.filter(pk=generation.pk).update(metrics={**generation.metrics, **found})
        measured += 1
    return measured


def write_study_report(*, study: Study, output: Path, seconds: Optional[float], machine: str, device: str,
                       variants: tuple[str, ...] = (), include: tuple[Path, ...] = ()) -> Path:
    """report.md, headline.md, differences, metrics.csv and one plot per metric with 95% bands, under
    `output`: over every variant, or over `variants` alone (compared where those have all arrived), with
    the variants of the earlier runs whose metrics.csv `include` names added (`include_runs`)."""
    from curation.ml.study import headline_markdown

    plan = StudyPlan.from_dict(study.plan)
    if variants:  # the study's own, and (where runs are included) those to take from them
        own = {v.name for v in plan.variants}
        mine = tuple(name for name in variants if name in own or not include)
        if not mine:
            raise CurationError(f"name at least one of study {study.name!r}'s own variants: its G0s are what the "
                                f"included runs are checked against")
        plan = dataclasses.replace(plan, variants=variants_named(study, mine))
    measure_chance(study)
    results = study_results(study)
    if not results:
        raise CurationError(f"study {study.name!r} has no finished generation yet: nothing to report")
    runs = {}
    for path in include:
        source = "/".join(Path(path).parts[-2:])  # the run's folder and file, not this machine's path
        try:
            runs[source] = read_metrics_csv(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise CurationError(f"cannot read {source}: {error}") from error
        except ConfigError as error:
            raise CurationError(f"{source}: {error}") from error
    try:
        plan, results, included = include_runs(plan, results, runs, wanted=variants or None)
    except ConfigError as error:
        raise CurationError(str(error)) from error
    if variants:  # in the order named
        by_name = {v.name: v for v in plan.variants}
        missing = [name for name in variants if name not in by_name]
        if missing:
            raise CurationError(f"neither study {study.name!r} nor the included runs have variant {missing[0]!r}")
        plan = dataclasses.replace(plan, variants=tuple(by_name[name] for name in variants))
    floor = study_floor(study)
    output.mkdir(parents=True, exist_ok=True)
    found = comparisons(plan, results)
    plots = []
    for metric in STUDY_PLOTS:
        name = f"plot-{metric}.png"
        write_atomically(output / name, study_curves_png(plan, results, floor, metric))
        plots.append(name)
    write_atomically(output / "metrics.csv", metrics_csv(plan, results).encode())
    _copy_grids(study, plan, output / "grids")
    write_atomically(output / "headline.md", headline_markdown(plan, results, floor).encode())
    step_seconds = sum(sum(g.values()) for g in Generation.objects.filter(
        experiment__study=study, experiment__study_variant__in=[v.name for v in plan.variants]).values_list(
        "timings", flat=True))  # (of the variants reported)
    read = {name for names in included.values() for name in names}  # (their steps, as those runs recorded them)
    step_seconds += sum(row.get("step_seconds", 0.0) for (name, _, _), row in results.items() if name in read)
    report = report_markdown(plan, results, floor, found, seconds=seconds, step_seconds=step_seconds, machine=machine,
                             device=device, plots=plots, included=included)
    write_atomically(output / "report.md", report.encode())
    return output / "report.md"


def _copy_grids(study: Study, plan: StudyPlan, folder: Path) -> None:
    """Sample grids of the first seed: G0, and each variant's last finished generation."""
    seed = plan.seeds[0]
    for variant in plan.variants:
        finished = Generation.objects.filter(experiment__study=study, experiment__study_variant=variant.name,
                                             experiment__study_seed=seed, state=State.DONE).exclude(grid_image="")
        for generation in {finished.order_by("index").first(), finished.order_by("-index").first()} - {None}:
            name = "g00-shared.png" if generation.index == 0 else f"g{generation.index:02d}-{variant.name.replace('/', '--')}.png"
            write_atomically(folder / name, media.read(generation.grid_image.name))
