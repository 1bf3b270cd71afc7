"""Run a whole experiment unattended, in this process, with progress bars; write its metrics."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation.management.database import require_migrated
from curation import pipeline
from training.files import write_atomically
from curation.datasets import ensure_digits_dataset, real_models
from curation.management.set_option import add_set_argument, parse_set
from curation.ml.experiment_config import PRESETS, ConfigError, preset
from curation.ml.policy import POLICIES
from curation.models import Experiment
from curation.selectors import experiment_report
from curation.services import CurationError, create_experiment, start_experiment
from training.mix import LOOPS


class Command(BaseCommand):
    help = "Run a self-consuming loop end to end with simulated raters and write per-generation metrics as JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--preset", default="digits", choices=sorted(PRESETS))
        parser.add_argument("--generations", type=int, help="Generations including G0.")
        parser.add_argument("--curation", choices=POLICIES, help="Curation policy.")
        parser.add_argument("--loop", choices=LOOPS, help="Loop type.")
        parser.add_argument("--raters", choices=["simulated"], default="simulated")
        parser.add_argument("--real-fraction", type=float, help="Real share of each training set after G0.")
        parser.add_argument("--accumulate", action="store_true", help="Draw synthetic data from every generation so far.")
        parser.add_argument("--diversity-guard", action="store_true", help="Per-class acceptance quotas.")
        parser.add_argument("--threshold", type=float, help="Acceptance threshold.")
        parser.add_argument("--samples", type=int, help="Samples per generation.")
        parser.add_argument("--steps", type=int, help="Training steps per generation.")
        parser.add_argument("--seed", type=int)
        add_set_argument(parser)
        parser.add_argument("--name", default="")
        parser.add_argument("--output", required=True, help="Where to write the JSON report.")

    def handle(self, *args, **options) -> None:
        require_migrated()
        config = self._config(options)
        ensure_digits_dataset()
        name = options["name"] or f"{options['preset']} {config.mix.loop} {config.curation.policy}"
        try:
            experiment = create_experiment(name=name, config=config)
        except CurationError as error:
            raise CommandError(str(error)) from error
        models = real_models(experiment.dataset_id)
        generation = start_experiment(experiment=experiment)
        self.stdout.write(f"experiment {experiment.pk} '{name}': {config.generations} generation(s), "
                          f"real-vs-real FD floor on the held-out test split {models.real_floor['fd']['mean']:.3f} "
                          f"[{models.real_floor['fd']['low']:.3f}, {models.real_floor['fd']['high']:.3f}]")
        output = Path(options["output"])
        while generation is not None:
            try:
                generation = pipeline.run_generation(generation.pk, bar=True)
            except Exception as error:
                self._write(output, experiment)
                raise CommandError(f"generation {generation.index} failed: {error}") from error
            metrics = generation.metrics
            self.stdout.write(
                f"G{generation.index}: FD {metrics.get('fd', float('nan')):.3f}  precision {metrics.get('precision', 0):.3f}  "
                f"recall {metrics.get('recall', 0):.3f}  coverage {metrics.get('coverage', 0):.3f}  "
                f"classes {metrics.get('classes_covered')}  accepted {metrics.get('acceptance_rate', 0):.0%}  "
                f"({sum(generation.timings.values()):.0f} s)"
            )
            self._write(output, experiment)
            generation = experiment.generations.filter(index=generation.index + 1).first()
        self.stdout.write(self.style.SUCCESS(f"wrote {output}"))

    def _config(self, options):
        try:
            config = preset(options["preset"])
            changes = {
                "generations": options["generations"],
                "curation.policy": options["curation"],
                "mix.loop": options["loop"],
                "curation.threshold": options["threshold"],
                "samples_per_generation": options["samples"],
                "train.steps": options["steps"],
                "seed": options["seed"],
                "mix.real_fraction": options["real_fraction"],
            }
            if options["loop"] == "fully-synthetic" and options["real_fraction"] is None:
                changes["mix.real_fraction"] = 0.0
            if options["accumulate"]:
                changes["mix.accumulate"] = True
            if options["diversity_guard"]:
                changes["curation.diversity_guard"] = True
            changes.update(parse_set(options["set"]))
            return config.replace(**{k: v for k, v in changes.items() if v is not None})
        except ConfigError as error:
            raise CommandError(f"invalid configuration: {error}") from error

    def _write(self, output: Path, experiment: Experiment) -> None:
        experiment.refresh_from_db()
        write_atomically(output, json.dumps(experiment_report(experiment), indent=2))
