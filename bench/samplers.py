"""Which sampler, at how many steps? Each against DDPM-1000 on the same checkpoint.

Trains a digits checkpoint per noise schedule (or reuses one), draws the same seeds with every
sampler, and reports FD / precision / recall against the real data and FD against the DDPM-1000
samples, with time relative to DDPM-1000 measured in the same run. Writes
bench/results/samplers.json and bench/results/samplers.md.

    python bench/samplers.py [--samples 1000] [--schedules linear,squaredcos_cap_v2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.ml.metrics import frechet_distance, sample_metrics  # noqa: E402
from curation.ml.reference import ReferenceClassifier  # noqa: E402
from generation.sampling import SampleConfig, sample_images  # noqa: E402
from training.data import load_digits_dataset  # noqa: E402
from training.model import DIGITS_MODEL  # noqa: E402
from training.train import TrainConfig, train_unet  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CANDIDATES = [("ddpm", 1000), ("ddpm", 100), ("ddim", 20), ("ddim", 50), ("ddim", 100),
              ("dpm-solver++", 10), ("dpm-solver++", 20), ("dpm-solver++", 50)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--schedules", default="linear,squaredcos_cap_v2")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps")
    args = parser.parse_args()

    digits = load_digits_dataset()
    reference = ReferenceClassifier.fit(digits.images, digits.labels)
    real_features = reference.features(digits.images)
    seeds = list(range(args.samples))
    rows = []
    for schedule in args.schedules.split(","):
        model = dataclasses.replace(DIGITS_MODEL, beta_schedule=schedule)
        checkpoint = RESULTS / "checkpoints" / f"digits-{schedule}-{args.steps}"
        train_unet(digits.images, model_config=model, train_config=TrainConfig(steps=args.steps), checkpoint_dir=checkpoint)
        baseline_features = baseline_seconds = None
        for sampler, steps in CANDIDATES:
            started = time.perf_counter()
            images = sample_images(checkpoint, seeds, SampleConfig(sampler=sampler, steps=steps))
            seconds = time.perf_counter() - started
            metrics = sample_metrics(reference, real_features, images)
            features = reference.features(images)
            if baseline_features is None:
                baseline_features, baseline_seconds = features, seconds
            row = {
                "schedule": schedule, "sampler": sampler, "steps": steps,
                "fd_vs_real": round(metrics["fd"], 4), "precision": round(metrics["precision"], 4),
                "recall": round(metrics["recall"], 4), "coverage": round(metrics["coverage"], 4),
                "fd_vs_ddpm1000": round(frechet_distance(baseline_features, features), 4),
                "seconds": round(seconds, 2), "time_vs_ddpm1000": round(seconds / baseline_seconds, 4),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "samplers.json").write_text(json.dumps({"samples": args.samples, "rows": rows}, indent=2))
    lines = [f"# Samplers against DDPM-1000 ({args.samples} samples, digits, {args.steps} training steps)", "",
             "| schedule | sampler | steps | FD vs real | precision | recall | coverage | FD vs DDPM-1000 | seconds | time vs DDPM-1000 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['schedule']} | {r['sampler']} | {r['steps']} | {r['fd_vs_real']} | {r['precision']} | {r['recall']} | "
              f"{r['coverage']} | {r['fd_vs_ddpm1000']} | {r['seconds']} | {r['time_vs_ddpm1000']} |" for r in rows]
    (RESULTS / "samplers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
