"""The collapse study: every loop variant side by side from the same G0, over several seeds."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.management.set_option import add_set_argument, parse_set
from curation.ml.experiment_config import ConfigError, preset
from curation.ml.policy import POLICIES
from curation.ml.study import StudyPlan, run_study, study_variants, write_outputs
from training.model import resolve_device


class Command(BaseCommand):
    help = (
        "Run the collapse study on digits with simulated raters: the uncurated fully-synthetic loop, every "
        "curation policy with and without the diversity guard, and the augmentation, fresh and accumulate "
        "loops, each over several seeds from the same G0. Writes report.md, metrics.csv and PNG plots to "
        "--output. Interrupted runs resume where they stopped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--generations", type=int, required=True, help="Generations after G0 (G1..GN).")
        parser.add_argument("--seeds", type=int, default=3, help="Number of seeds (0..S-1).")
        parser.add_argument("--output", required=True, help="Study folder: results, report and plots go here.")
        parser.add_argument("--preset", help="Configuration preset; default study-cpu on a CPU, study-gpu on CUDA.")
        parser.add_argument("--workers", type=int, help="Steps run in parallel (default: one per 1-2 CPU cores).")
        parser.add_argument("--variants", help="Comma-separated subset of variant names (default: all).")
        parser.add_argument("--best-policy", default="human+discriminator", choices=POLICIES[1:],
                            help="The curation the augmentation, fresh and accumulate loops are run with.")
        parser.add_argument("--best-without-guard", action="store_true", help="Run the best curation without the guard.")
        add_set_argument(parser)

    def handle(self, *args, **options) -> None:
        device = resolve_device(settings.OUROBOROS_DEVICE)
        name = options["preset"] or ("study-gpu" if device.type == "cuda" else "study-cpu")
        if options["generations"] < 1 or options["seeds"] < 1:
            raise CommandError("--generations and --seeds must be at least 1")
        variants = study_variants(options["best_policy"], not options["best_without_guard"])
        if options["variants"]:
            wanted = [v.strip() for v in options["variants"].split(",") if v.strip()]
            known = {v.name: v for v in variants}
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise CommandError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
            variants = [known[w] for w in wanted]
        try:
            plan = StudyPlan(
                base=preset(name).replace(**parse_set(options["set"])),
                variants=tuple(variants),
                seeds=tuple(range(options["seeds"])),
                generations=options["generations"] + 1,
                output=Path(options["output"]),
                device=device.type,
                preset=name,
            )
            plan.validate()
        except ConfigError as error:
            raise CommandError(f"invalid study: {error}") from error
        cores = os.cpu_count() or 1
        workers = options["workers"] or (min(8, max(1, cores // 2)) if device.type == "cuda" else max(1, cores // 1))
        jobs = len(plan.seeds) * (1 + len(plan.variants) * plan.generations)
        self.stdout.write(
            f"study: {len(plan.variants)} variants × {len(plan.seeds)} seeds × G0..G{plan.generations - 1} "
            f"({jobs} steps), preset {name}, device {device.type}, {workers} worker(s) → {plan.output}"
        )
        bar = tqdm(total=jobs, unit="step", desc="study")

        def progress(done: int, total: int, message: str) -> None:
            bar.n = done
            bar.set_postfix_str(message[-50:], refresh=False)
            bar.refresh()

        try:
            run = run_study(plan, workers=workers, progress=progress)
        except ConfigError as error:
            raise CommandError(f"invalid study: {error}") from error
        finally:
            bar.close()
        import torch

        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
        machine = f"{cores} CPU cores, {gpu}, {platform.system()} {platform.machine()}"
        judged = write_outputs(run, machine=machine)
        better = [name for name, j in judged.items() if j["better"]]
        self.stdout.write(f"finished in {run.seconds / 60:.1f} min; variants better than G0: {', '.join(better) or 'none'}")
        self.stdout.write(self.style.SUCCESS(f"wrote {plan.output / 'report.md'}"))
