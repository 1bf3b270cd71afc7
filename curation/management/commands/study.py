"""The collapse study: every loop variant as ordinary experiments over several seeds, and its report."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.management.database import require_migrated
from curation.management.set_option import add_set_argument, parse_set
from curation.ml.experiment_config import ConfigError, preset
from curation.ml.study import StudyPlan, lever_variants, study_variants
from curation.models import Study
from curation.selectors import study_progress
from curation.services import CurationError
from curation.studies import create_study, plan_study, queue_study, run_study, variants_named, write_study_report
from training.model import resolve_device


class Command(BaseCommand):
    help = (
        "Run the collapse study on a real dataset with simulated raters: each loop (fully-synthetic, augmentation, "
        "fresh, accumulate) uncurated, with a size-matched random filter and with curation, plus a real-only "
        "control, each over several seeds from the same G0. Every run is an ordinary experiment (see "
        "/experiments/), carried out here (--workers) or by the Celery workers (--queue); the report (report.md, "
        "headline.md, metrics.csv, plots with 95%% bands) is computed from their stored metrics into --output. "
        "Run it again with the same --name to resume."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True, help="The study's name; the same name resumes it.")
        parser.add_argument("--output", required=True, help="Folder for the report, metrics.csv and plots.")
        parser.add_argument("--generations", type=int, help="Generations after G0 (G1..GN). Given for an existing study, "
                                 "a larger number extends every experiment of it to GN.")
        parser.add_argument("--seeds", type=int, default=5, help="Number of seeds (0..S-1); default 5.")
        parser.add_argument("--preset", help="Configuration preset; default study-cpu on a CPU, study-gpu on CUDA.")
        parser.add_argument("--variants", help="Comma-separated subset of variant names (default: all); with "
                                               "--report-only, the variants the report covers, in that order "
                                               "(the study's own, and with --include an earlier run's).")
        parser.add_argument("--first", help="Comma-separated variant names to run ahead of the others.")
        parser.add_argument("--levers", action="store_true",
                            help="Study the levers of curation (verifier, resampling, all real data kept with "
                                 "synthetic capped, warm EMA) with their baselines, instead of the loop variants.")
        parser.add_argument("--workers", type=int, help="Experiments run at once in this process (default: cores / 2).")
        parser.add_argument("--queue", action="store_true",
                            help="Hand the experiments to the Celery workers instead of running them here.")
        parser.add_argument("--report-only", action="store_true", help="Write the report from what has finished.")
        parser.add_argument("--include", action="append", default=[], metavar="METRICS_CSV",
                            help="An earlier run's metrics.csv whose other variants join the report (a study run in "
                                 "parts: the same code, settings and seeds; each seed's G0 must agree). Repeatable.")
        add_set_argument(parser)

    def handle(self, *args, **options) -> None:
        require_migrated()
        device = resolve_device(settings.OUROBOROS_DEVICE)
        study = self._study(options, device.type)
        plan = StudyPlan.from_dict(study.plan)
        try:
            first = tuple(v.name for v in variants_named(study, _names(options["first"])))
        except CurationError as error:
            raise CommandError(f"--first: {error}") from error
        counts = study_progress(study)
        self.stdout.write(f"study {study.name!r}: {len(plan.variants)} variants × {len(plan.seeds)} seeds × "
                          f"G0..G{plan.generations - 1} = {counts['experiments']} experiments; "
                          f"{counts['done']}/{counts['total']} generations done")
        started = time.monotonic()
        if options["queue"]:
            queued = queue_study(study=study)
            self.stdout.write(f"queued {queued} experiment(s) for the Celery workers; watch them on the study's page "
                              f"(/studies/{study.pk}/), and when they are done run this command again with --report-only")
            return
        if not options["report_only"]:
            cores = os.cpu_count() or 1
            workers = options["workers"] or max(1, cores // 2)
            bar = tqdm(total=counts["total"], initial=counts["done"], unit="generation", desc="study")

            def progress(done: int, total: int, message: str) -> None:
                bar.total, bar.n = total, done
                bar.set_postfix_str(message, refresh=False)
                bar.refresh()

            try:
                stopped = run_study(study=study, workers=workers, progress=progress, first=first)
            finally:
                bar.close()
            for experiment in stopped:
                self.stderr.write(f"{experiment.name}: {experiment.status}")
        import torch

        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
        machine = f"{os.cpu_count()} CPU cores, {gpu}, {platform.system()} {platform.machine()}"
        try:
            report = write_study_report(study=study, output=Path(options["output"]), machine=machine,
                                        device=device.type,
                                        seconds=None if options["report_only"] else time.monotonic() - started,
                                        variants=_names(options["variants"]) if options["report_only"] else (),
                                        include=tuple(Path(path) for path in options["include"]))
        except CurationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(self.style.SUCCESS(f"wrote {report}"))

    def _study(self, options, device: str) -> Study:
        existing = Study.objects.filter(name=options["name"].strip()).first()
        if existing is not None and options["generations"] is None:
            return existing
        if options["generations"] is None:
            raise CommandError(f"no study named {options['name']!r} yet: give --generations to plan one")
        if options["generations"] < 1 or options["seeds"] < 1:
            raise CommandError("--generations and --seeds must be at least 1")
        name = options["preset"] or ("study-gpu" if device == "cuda" else "study-cpu")
        variants = lever_variants() if options["levers"] else study_variants()
        if options["variants"]:
            wanted = list(_names(options["variants"]))
            known = {v.name: v for v in variants}
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise CommandError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
            variants = [known[w] for w in wanted]
        try:
            plan = plan_study(base=preset(name).replace(**parse_set(options["set"])), variants=variants,
                              seeds=list(range(options["seeds"])), generations=options["generations"] + 1,
                              preset=name)
            return create_study(name=options["name"], plan=plan)
        except (ConfigError, CurationError) as error:
            raise CommandError(f"invalid study: {error}") from error


def _names(listed: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (listed or "").split(",") if name.strip())
