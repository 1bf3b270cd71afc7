"""The collapse study: loop variants side by side from the same G0, over several seeds.

For each seed, G0 trains once on the real pool and is sampled once. Every variant then curates G0's
samples under its own policy and runs its own chain of generations from there: build the training
mix, train (from scratch, or continuing from the previous generation's weights), sample, measure,
have the simulated panel vote on the rating budget, fit the discriminator on those votes, curate.

Everything a step produces lands in the study folder under its (seed, variant, generation) before
the step's `result.json` is written (atomically, last), so a study that is interrupted resumes where
it stopped and a finished step is never redone. Steps of one generation are independent, so they run
in parallel worker processes where there are cores (or a GPU) for it.

This module is pure ML: it uses the same configuration, mixing, training, sampling, rater,
discriminator, curation and metric code as the Django pipeline, on arrays and files instead of
database rows (simulated votes are aggregated in memory rather than stored as Vote rows).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from curation.ml.discriminator import fit_discriminator, image_features
from curation.ml.experiment_config import (
    PRESETS,
    RATING_ORDER_KEY,
    SAMPLE_KEY,
    TRAIN_KEY,
    ConfigError,
    ExperimentConfig,
)
from curation.ml.imaging import grid_png
from curation.ml.metrics import sample_metrics
from curation.ml.model_files import SUFFIX, dump_model, load_model
from curation.ml.plots import CURVE_METRICS, curves_png
from curation.ml.policy import curate
from curation.ml.raters import simulated_votes
from curation.ml.real import RealModels, fit_real_models
from generation.sampling import sample_images, sample_seed
from training.data import images_from_uint8, images_to_uint8, load_digits_dataset, split_real
from training.mix import build_mix
from training.train import train_unet

# Synthetic images are named in a mix by generation * ID_STRIDE + sample index.
ID_STRIDE = 1_000_000
RESULT = "result.json"
G0 = "g0-shared"
METRICS = (
    "fd",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "acceptance_rate",
    "discriminator_auc",
)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Variant:
    name: str
    # fully-synthetic, augmentation, fresh, accumulate (augmentation, accumulating), or real-only: the
    # control that goes through the same generations on real data alone.
    loop: str
    policy: str
    guard: bool

    def config(self, base: ExperimentConfig, *, real_count_for_fresh: int) -> ExperimentConfig:
        changes: dict = {"curation.policy": self.policy, "curation.diversity_guard": self.guard}
        if self.loop == "fully-synthetic":
            changes.update({"mix.loop": "fully-synthetic", "mix.real_fraction": 0.0, "mix.accumulate": False})
        elif self.loop == "fresh":
            fraction = min(base.mix.real_fraction or 0.5, real_count_for_fresh / base.mix.train_size)
            changes.update({"mix.loop": "fresh", "mix.real_fraction": fraction, "mix.accumulate": False})
        elif self.loop == "real-only":
            changes.update({"mix.loop": "augmentation", "mix.real_fraction": 1.0, "mix.accumulate": False})
        elif self.loop == "accumulate":
            changes.update({"mix.loop": "augmentation", "mix.real_fraction": base.mix.real_fraction or 0.5,
                            "mix.accumulate": True})
        else:
            changes.update({"mix.loop": "augmentation", "mix.real_fraction": base.mix.real_fraction or 0.5,
                            "mix.accumulate": False})
        return base.replace(**changes)


POLICY_SHORT = {"none": "none", "human": "human", "discriminator": "disc", "human+discriminator": "human+disc"}


def variant_name(loop: str, policy: str, guard: bool) -> str:
    return f"{loop}/{POLICY_SHORT[policy]}{'+guard' if guard else ''}"


def study_variants(best_policy: str = "human+discriminator", best_guard: bool = True) -> list[Variant]:
    """The MAD baseline; fully-synthetic under each curating policy with and without the diversity
    guard; the augmentation, fresh and accumulate loops uncurated and with the best curation; and a
    real-only control."""
    variants = [Variant(variant_name("fully-synthetic", "none", False), "fully-synthetic", "none", False)]
    for policy in ("human", "discriminator", "human+discriminator"):
        for guard in (False, True):
            variants.append(Variant(variant_name("fully-synthetic", policy, guard), "fully-synthetic", policy, guard))
    for loop in ("augmentation", "fresh", "accumulate"):
        variants.append(Variant(variant_name(loop, "none", False), loop, "none", False))
        variants.append(Variant(variant_name(loop, best_policy, best_guard), loop, best_policy, best_guard))
    # The control: the same retraining every generation, on real data only. What it loses or gains is
    # the training procedure's doing, not the synthetic data's.
    variants.append(Variant(variant_name("real-only", "none", False), "real-only", "none", False))
    return variants


@dataclass(frozen=True)
class StudyPlan:
    base: ExperimentConfig
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    generations: int  # including G0
    output: Path
    device: str = "auto"
    preset: str = ""

    def config(self, variant: Variant, seed: int) -> ExperimentConfig:
        reservoir = len(load_digits_dataset()) - self.base.pool_size
        fresh_count = reservoir // max(1, self.generations - 1)
        return variant.config(self.base, real_count_for_fresh=fresh_count).replace(
            seed=seed, generations=self.generations
        )

    def folder(self, seed: int, variant: Optional[Variant], generation: int) -> Path:
        owner = G0 if variant is None else variant.name.replace("/", "--")
        return self.output / "runs" / f"seed-{seed}" / owner / f"g{generation:02d}"

    def validate(self) -> None:
        if self.generations < 2:
            raise ConfigError("a study needs at least 2 generations (G0 and one that trains on curated data)")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError("variant names must be distinct")
        for variant in self.variants:
            self.config(variant, self.seeds[0])  # raises ConfigError naming the bad setting


@dataclass
class StudyRun:
    plan: StudyPlan
    seconds: float = 0.0
    steps_run: int = 0
    steps_reused: int = 0
    results: dict = field(default_factory=dict)  # (variant, seed, generation) -> result dict


# --- steps --------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _real_models(plan: StudyPlan) -> RealModels:
    path = plan.output / f"real-models{SUFFIX}"
    if path.exists():
        return load_model(path.read_bytes())
    data = load_digits_dataset()
    models = fit_real_models(data.images, data.labels)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(dump_model(models))
    os.replace(tmp, path)
    return models


def _train_and_sample(plan, config: ExperimentConfig, folder: Path, images: np.ndarray, generation: int,
                      init_from: Optional[Path]) -> tuple[np.ndarray, dict]:
    """Train a generation's model on `images`, sample its candidates, and measure them."""
    models = _real_models(plan)
    train_config, _ = config.train_config_for(
        generation, seed=sample_seed(config.seed, TRAIN_KEY, generation), device=plan.device
    )
    started = time.monotonic()
    train_unet(images, model_config=config.model, train_config=train_config, checkpoint_dir=folder / "checkpoint",
               init_from=init_from)
    trained = time.monotonic()
    samples_path = folder / "samples.npy"
    if samples_path.exists():
        pixels = np.load(samples_path)
    else:
        seeds = [sample_seed(config.seed, SAMPLE_KEY, generation, i) for i in range(config.samples_per_generation)]
        sample_config = dataclasses.replace(config.sample, device=plan.device)
        pixels = images_to_uint8(sample_images(folder / "checkpoint", seeds, sample_config))
        _save_array(samples_path, pixels)
    samples = images_from_uint8(pixels)
    metrics = sample_metrics(models.reference, models.real_features, samples[: config.metric_samples])
    metrics["seconds_train"] = round(trained - started, 2)
    metrics["seconds_sample_measure"] = round(time.monotonic() - trained, 2)
    return samples, metrics


def _curate(plan, config: ExperimentConfig, samples: np.ndarray, generation: int) -> dict:
    """Simulated votes on the rating budget, the discriminator fitted on them, and the policy's decision."""
    models = _real_models(plan)
    count = len(samples)
    order = np.random.default_rng(sample_seed(config.seed, RATING_ORDER_KEY, generation)).permutation(count)
    rated = np.sort(order[: config.rating.rating_budget])
    vote_share = np.full(count, np.nan)
    if len(rated):
        panel = config.rating.panel
        confidence = models.rater_model.confidence(samples[rated])
        keys = generation * ID_STRIDE + rated
        verdicts = np.stack([simulated_votes(confidence, keys, rater) for rater in panel])
        ups = np.zeros(len(rated))
        for k in range(config.rating.votes_per_sample):  # the same rotation through the panel as the pipeline
            ups += verdicts[(rated + k) % len(panel), np.arange(len(rated))]
        vote_share[rated] = ups / config.rating.votes_per_sample
    scores = np.full(count, np.nan)
    fit = None
    if config.curation.needs_discriminator and len(rated):
        features = image_features(samples)
        fit = fit_discriminator(features[rated], vote_share[rated] >= 0.5, seed=generation)
        scores = fit.score(features)
    groups = models.reference.predict(samples)
    decision = curate(
        config.curation,
        vote_share=vote_share,
        discriminator_score=scores,
        groups=groups,
        group_proportions=models.class_proportions,
        seed=sample_seed(config.seed, generation),
    )
    voted = ~np.isnan(vote_share)
    return {
        "accepted": np.flatnonzero(decision.accepted).tolist(),
        "acceptance_rate": float(decision.accepted.mean()),
        "vote_up_rate": float((vote_share[voted] >= 0.5).mean()) if voted.any() else None,
        "discriminator_accuracy": fit.accuracy if fit else None,
        "discriminator_auc": fit.auc if fit else None,
    }


def run_g0(plan: StudyPlan, seed: int) -> dict:
    """Train and sample the G0 every variant of this seed starts from."""
    folder = plan.folder(seed, None, 0)
    if (folder / RESULT).exists():
        return json.loads((folder / RESULT).read_text())
    config = plan.config(plan.variants[0], seed)
    data = load_digits_dataset()
    pool = split_real(len(data), config.pool_size, seed=config.seed).pool
    _, metrics = _train_and_sample(plan, config, folder, data.images[pool], 0, None)
    result = {**metrics, "train_real": len(pool), "train_fresh": 0, "train_synthetic": 0, "shortfall": 0}
    _write_json(folder / RESULT, result)
    return result


def run_step(plan: StudyPlan, variant: Variant, seed: int, generation: int) -> dict:
    """One variant's generation: its training mix, model, samples, metrics and curation."""
    folder = plan.folder(seed, variant, generation)
    if (folder / RESULT).exists():
        return json.loads((folder / RESULT).read_text())
    config = plan.config(variant, seed)
    if generation == 0:
        shared = plan.folder(seed, None, 0)
        samples = images_from_uint8(np.load(shared / "samples.npy"))
        result = {k: v for k, v in json.loads((shared / RESULT).read_text()).items() if not k.startswith("seconds")}
        result["fresh_ids"] = []
    else:
        data = load_digits_dataset()
        split = split_real(len(data), config.pool_size, seed=config.seed)
        previous = [_result(plan, variant, seed, g) for g in range(generation)]
        used = {i for r in previous for i in r["fresh_ids"]}
        mix = build_mix(
            config.mix,
            pool=split.pool.tolist(),
            reservoir_unused=[int(i) for i in split.reservoir if int(i) not in used],
            accepted_by_generation={g: [g * ID_STRIDE + i for i in r["accepted"]] for g, r in enumerate(previous)},
            last_generation=generation - 1,
            seed=config.seed,
        )
        parts = [data.images[mix.real]] if mix.real else []
        for source, ids in sorted(mix.synthetic.items()):
            pixels = np.load(_samples_folder(plan, variant, seed, source) / "samples.npy")
            parts.append(images_from_uint8(pixels[[i - source * ID_STRIDE for i in ids]]))
        init_from = _samples_folder(plan, variant, seed, generation - 1) / "checkpoint"
        samples, result = _train_and_sample(plan, config, folder, np.concatenate(parts), generation, init_from)
        result.update({"train_real": len(mix.real), "train_fresh": len(mix.fresh),
                       "train_synthetic": mix.synthetic_total, "shortfall": mix.shortfall, "fresh_ids": mix.fresh})
    result.update(_curate(plan, config, samples, generation))
    _write_json(folder / RESULT, result)
    return result


def _samples_folder(plan: StudyPlan, variant: Variant, seed: int, generation: int) -> Path:
    return plan.folder(seed, None, 0) if generation == 0 else plan.folder(seed, variant, generation)


def _result(plan: StudyPlan, variant: Variant, seed: int, generation: int) -> dict:
    return json.loads((plan.folder(seed, variant, generation) / RESULT).read_text())


# --- running ------------------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _check_resumable(path: Path, described: dict) -> None:
    """A folder resumes only the study it holds: the results of other settings must not be mixed in.
    (Other seeds or another subset of variants may join: each runs its own chain.)"""
    if not path.exists():
        return
    stored = json.loads(path.read_text())
    keys = ("generations", "base")
    differing = [key for key in keys if stored.get(key) != described[key]]
    if differing:
        changes = _differences({key: stored.get(key) for key in keys}, {key: described[key] for key in keys})
        raise ConfigError(
            f"{path.parent} holds a study with other {' and '.join(differing)} ({'; '.join(changes)}); "
            "resume it with its own settings or choose another --output"
        )


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


def run_study(plan: StudyPlan, *, workers: int = 1, progress: Optional[Progress] = None) -> StudyRun:
    """Run (or resume) every step, generation by generation, `workers` steps at a time."""
    plan.validate()
    plan.output.mkdir(parents=True, exist_ok=True)
    described = json.loads(json.dumps({
        "preset": plan.preset, "generations": plan.generations, "seeds": list(plan.seeds), "device": plan.device,
        "variants": [v.__dict__ for v in plan.variants], "base": plan.base.to_dict(),
    }))
    _check_resumable(plan.output / "plan.json", described)
    _write_json(plan.output / "plan.json", described)
    _real_models(plan)
    run = StudyRun(plan)
    started = time.monotonic()
    waves = [[(run_g0, (plan, seed)) for seed in plan.seeds]]
    waves += [[(run_step, (plan, v, seed, g)) for v in plan.variants for seed in plan.seeds] for g in range(plan.generations)]
    total = sum(len(w) for w in waves)
    done = 0
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    executor = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(threads,)) if workers > 1 else None
    try:
        for wave in waves:
            pending = [job for job in wave if not _finished(plan, job)]
            run.steps_reused += len(wave) - len(pending)
            done += len(wave) - len(pending)
            if executor is None:
                for function, args in pending:
                    function(*args)
                    done += 1
                    _report(progress, done, total, function, args)
            else:
                futures = {executor.submit(function, *args): (function, args) for function, args in pending}
                for future in as_completed(futures):
                    future.result()
                    done += 1
                    _report(progress, done, total, *futures[future])
            run.steps_run += len(pending)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    run.seconds = time.monotonic() - started
    for variant in plan.variants:
        for seed in plan.seeds:
            for g in range(plan.generations):
                run.results[(variant.name, seed, g)] = _result(plan, variant, seed, g)
    return run


def _finished(plan: StudyPlan, job) -> bool:
    function, args = job
    if function is run_g0:
        return (plan.folder(args[1], None, 0) / RESULT).exists()
    _, variant, seed, generation = args
    return (plan.folder(seed, variant, generation) / RESULT).exists()


def _report(progress, done, total, function, args) -> None:
    if progress is None:
        return
    label = f"G0 seed {args[1]}" if function is run_g0 else f"G{args[3]} {args[1].name} seed {args[2]}"
    progress(done, total, label)


# --- reporting ----------------------------------------------------------------------------------


def summarise(run: StudyRun) -> dict:
    """Per variant, generation and metric: mean, standard deviation and count over seeds."""
    summary: dict = {}
    for variant in run.plan.variants:
        for g in range(run.plan.generations):
            for metric in METRICS:
                values = [run.results[(variant.name, s, g)].get(metric) for s in run.plan.seeds]
                values = np.array([v for v in values if v is not None], dtype=float)
                summary[(variant.name, g, metric)] = (
                    (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values))
                    if len(values) else None
                )
    return summary


def verdicts(run: StudyRun, summary: dict) -> dict:
    """Per variant, last generation against G0 (means over seeds): did it get better, hold, or degrade?
    'better' is the study's question: FD no higher, precision and recall no lower than G0's."""
    last = run.plan.generations - 1
    out = {}
    for variant in run.plan.variants:
        def delta(metric):
            return summary[(variant.name, last, metric)][0] - summary[(variant.name, 0, metric)][0]

        per_seed_better = 0
        for seed in run.plan.seeds:
            first, final = run.results[(variant.name, seed, 0)], run.results[(variant.name, seed, last)]
            per_seed_better += (
                final["fd"] <= first["fd"] and final["precision"] >= first["precision"] and final["recall"] >= first["recall"]
            )
        d_fd, d_precision, d_recall = delta("fd"), delta("precision"), delta("recall")
        better = d_fd <= 0 and d_precision >= 0 and d_recall >= 0
        degraded = d_fd > 0 and (d_precision < 0 or d_recall < 0)
        out[variant.name] = {
            "fd_change": d_fd,
            "fd_ratio": summary[(variant.name, last, "fd")][0] / summary[(variant.name, 0, "fd")][0],
            "precision_change": d_precision,
            "recall_change": d_recall,
            "better": better,
            "degraded": degraded,
            "seeds_better": per_seed_better,
        }
    return out


def write_outputs(run: StudyRun, *, machine: str = "") -> dict:
    """report.md, metrics.csv, one PNG per metric (a curve per variant), and sample grids."""

    plan = run.plan
    summary = summarise(run)
    judged = verdicts(run, summary)
    _write_csv(run)
    for metric in CURVE_METRICS:
        series = {}
        for variant in plan.variants:
            points = [summary[(variant.name, g, metric)] for g in range(plan.generations)]
            series[variant.name] = [p[:2] if p else (np.nan, 0.0) for p in points]
        floor = _real_models(plan).real_floor["fd"] if metric == "fd" else None
        (plan.output / f"plot-{metric}.png").write_bytes(curves_png(metric, series, reference=floor, reference_label="real vs real"))
    last = plan.generations - 1
    grids = plan.output / "grids"
    grids.mkdir(exist_ok=True)
    seed = plan.seeds[0]
    (grids / "g00-shared.png").write_bytes(_grid(plan.folder(seed, None, 0)))
    for variant in plan.variants:
        (grids / f"g{last:02d}-{variant.name.replace('/', '--')}.png").write_bytes(_grid(plan.folder(seed, variant, last)))
    (plan.output / "report.md").write_text(_report_md(run, summary, judged, machine))
    return judged


def _grid(folder: Path) -> bytes:
    return grid_png(images_from_uint8(np.load(folder / "samples.npy")[:128]))


def _write_csv(run: StudyRun) -> None:
    columns = ["variant", "seed", "generation", *METRICS, "vote_up_rate", "discriminator_accuracy", "train_real",
               "train_fresh", "train_synthetic", "shortfall", "seconds_train", "seconds_sample_measure"]
    path = run.plan.output / "metrics.csv"
    tmp = path.with_name(".metrics.csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for (variant, seed, g), result in sorted(run.results.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])):
            writer.writerow([variant, seed, g, *(_cell(result.get(c)) for c in columns[3:])])
    os.replace(tmp, path)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _fmt(entry, digits=3) -> str:
    if entry is None:
        return "–"
    mean, spread, count = entry
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if count > 1 else f"{mean:.{digits}f}"


def _changed_settings(plan: StudyPlan) -> list[str]:
    if plan.preset not in PRESETS:
        return []
    changed = _differences(PRESETS[plan.preset].to_dict(), plan.base.to_dict())
    return [f"Settings changed from the preset: {'; '.join(changed)}.", ""] if changed else []


def _report_md(run: StudyRun, summary: dict, judged: dict, machine: str) -> str:
    plan = run.plan
    base = plan.base
    last = plan.generations - 1
    floor = _real_models(plan).real_floor["fd"]
    lines = [
        "# Collapse study",
        "",
        f"{len(plan.variants)} loop variants × {len(plan.seeds)} seeds ({', '.join(map(str, plan.seeds))}) × "
        f"{plan.generations} generations (G0–G{last}), every variant of a seed starting from the same G0. "
        f"Preset `{plan.preset or 'custom'}`; digits (scikit-learn `load_digits`), real pool {base.pool_size}, "
        f"training sets of {base.mix.train_size}, {base.samples_per_generation} candidate samples per generation "
        f"({base.sample.sampler}, {base.sample.steps} steps), G0 trained {base.train.steps} steps, later generations "
        + (f"continue from the previous weights for {base.continue_steps} steps. " if base.continue_training
           else f"retrained from scratch for {base.train.steps} steps. ")
        + f"Simulated raters ({len(base.rating.panel)}-rater panel, {base.rating.votes_per_sample} votes per sample) "
        f"rate {base.rating.rating_budget} samples a generation; the discriminator scores the rest. Loops with real "
        f"data train on a real fraction of {base.mix.real_fraction or 0.5} (fresh: as far as its reservoir allows).",
        "",
        *_changed_settings(plan),
        f"Ran in {run.seconds / 60:.1f} min ({run.steps_run} steps run, {run.steps_reused} reused from an earlier "
        f"run) on {machine or platform.machine()}, device `{plan.device}`. Cells are mean ± standard deviation over "
        f"seeds. Real-vs-real FD floor (two halves of digits): {floor:.3f}.",
        "",
        "## What the figures show",
        "",
        *_statements(run, summary, judged),
        "",
        "## Last generation against G0",
        "",
        f"| variant | FD G0 → G{last} | × | precision G0 → G{last} | recall G0 → G{last} | better than G0 (mean) | seeds better |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in plan.variants:
        v = variant.name
        j = judged[v]
        lines.append(
            f"| {v} | {_fmt(summary[(v, 0, 'fd')])} → {_fmt(summary[(v, last, 'fd')])} | {j['fd_ratio']:.2f} | "
            f"{_fmt(summary[(v, 0, 'precision')])} → {_fmt(summary[(v, last, 'precision')])} | "
            f"{_fmt(summary[(v, 0, 'recall')])} → {_fmt(summary[(v, last, 'recall')])} | "
            f"{'yes' if j['better'] else 'degraded' if j['degraded'] else 'no'} | {j['seeds_better']}/{len(plan.seeds)} |"
        )
    lines += ["", "## Every metric per variant and generation", ""]
    for metric in METRICS:
        lines += [f"### {metric}", "", "| variant | " + " | ".join(f"G{g}" for g in range(plan.generations)) + " |",
                  "|---|" + "---|" * plan.generations]
        digits = 1 if metric == "classes_covered" else 3
        for variant in plan.variants:
            cells = [_fmt(summary[(variant.name, g, metric)], digits) for g in range(plan.generations)]
            lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Plots and grids", ""]
    lines += [f"![{m}](plot-{m}.png)" for m in CURVE_METRICS]
    lines += ["", f"Sample grids of seed {plan.seeds[0]}: `grids/g00-shared.png` (G0) and "
              f"`grids/g{last:02d}-<variant>.png` (G{last} of each variant). Raw figures: `metrics.csv`.", ""]
    return "\n".join(lines)


def _statements(run: StudyRun, summary: dict, judged: dict) -> list[str]:
    """Plain sentences derived from the figures: nothing here is written in advance."""
    plan = run.plan
    last = plan.generations - 1
    lines = []
    baseline = next((v for v in plan.variants if v.loop == "fully-synthetic" and v.policy == "none"), None)
    if baseline is not None:
        j = judged[baseline.name]
        state = "degraded" if j["degraded"] else ("did not degrade" if not j["fd_change"] > 0 else "drifted")
        lines.append(
            f"- The uncurated fully-synthetic loop (the MAD baseline) {state}: FD ×{j['fd_ratio']:.2f} from G0 to "
            f"G{last}, precision {j['precision_change']:+.3f}, recall {j['recall_change']:+.3f}, "
            f"classes covered {_fmt(summary[(baseline.name, 0, 'classes_covered')], 1)} → "
            f"{_fmt(summary[(baseline.name, last, 'classes_covered')], 1)}."
        )
    better = [v.name for v in plan.variants if judged[v.name]["better"]]
    if better:
        lines.append(
            "- Variants that ended *better* than G0 on average (FD no higher, precision and recall no lower): "
            + ", ".join(f"{name} ({judged[name]['seeds_better']}/{len(plan.seeds)} seeds)" for name in better) + "."
        )
    else:
        lines.append("- No variant ended better than G0 on all three of FD, precision and recall (means over seeds).")
    ranked = [f"{v.name} {summary[(v.name, last, 'fd')][0]:.3f}"
              for v in sorted(plan.variants, key=lambda v: summary[(v.name, last, "fd")][0])]
    if len(ranked) > 6:
        lines.append(f"- Lowest FD at G{last}: {', '.join(ranked[:3])}; highest: {', '.join(ranked[-3:])}.")
    else:
        lines.append(f"- FD at G{last}, lowest first: {', '.join(ranked)}.")
    synthetic = [v for v in plan.variants if v.loop == "fully-synthetic"]
    if baseline is not None and len(synthetic) > 1:
        base_fd = summary[(baseline.name, last, "fd")][0]
        curated_better = [v.name for v in synthetic if v is not baseline and summary[(v.name, last, "fd")][0] < base_fd]
        lines.append(
            f"- Fully-synthetic loops with curation ending below the baseline's G{last} FD ({base_fd:.3f}): "
            + (", ".join(curated_better) if curated_better else "none") + "."
        )
    control = next((v for v in plan.variants if v.loop == "real-only"), None)
    if control is not None:
        j = judged[control.name]
        control_fd = summary[(control.name, last, "fd")][0]
        below = [v.name for v in plan.variants if v is not control and summary[(v.name, last, "fd")][0] <= control_fd]
        lines.append(
            f"- The real-only control (the same retraining on real data alone) moved FD ×{j['fd_ratio']:.2f}, "
            f"precision {j['precision_change']:+.3f}, recall {j['recall_change']:+.3f} from G0 to G{last}: that much "
            "comes from the training procedure, not from synthetic data. Loops with synthetic data ending at or below "
            f"its G{last} FD ({control_fd:.3f}): " + (", ".join(below) if below else "none") + "."
        )
    spread = max(summary[(v.name, last, "fd")][1] for v in plan.variants)
    if len(plan.seeds) > 1:
        lines.append(f"- The largest seed-to-seed standard deviation of G{last} FD is {spread:.3f}; differences "
                     "smaller than that are not resolved by this many seeds.")
    else:
        lines.append("- One seed: differences between variants carry no estimate of their noise.")
    return lines
