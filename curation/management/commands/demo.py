"""Start the embedded service with a demo experiment: a Celery worker, the web server, digits."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from typing import Callable, Optional

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from curation import tasks
from curation.datasets import ensure_digits_dataset, real_models
from curation.ml.experiment_config import preset
from curation.models import Experiment, Generation, Rater
from curation.services import create_experiment, start_experiment

DEMO_NAME = "Demo: digits, augmentation loop, human+discriminator curation"
RATING_DEMO_NAME = "Demo: rate it yourself (digits, human raters)"


class Command(BaseCommand):
    help = "Create a staff user and a demo experiment on digits, then run a Celery worker and the web server."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--address", default="127.0.0.1:8000")
        parser.add_argument("--generations", type=int, default=3)
        parser.add_argument("--no-serve", action="store_true", help="Set up and enqueue, but start no processes.")

    def handle(self, *args, **options) -> None:
        staff_password = self._ensure_user("demo", staff=True)
        rater_password = self._ensure_user("rater", staff=False)
        self.stdout.write("Preparing the digits dataset and its reference models...")
        dataset = ensure_digits_dataset()
        real_models(dataset.pk)  # fitted now, while nothing else runs, rather than in the first worker step
        # First: the simulated demo's first step is queued only once these samples are open for rating
        # (the worker takes one task at a time, in order; queued at once, the simulated demo's G0, 2,000
        # steps, would come between this G0 and its sampling). This G0 trains 600 steps instead of 2,000
        # (about 45 s instead of 150 s on 2 cores): rougher digits, some of them worth a vote down, open
        # for rating sooner (held-out FD 1.69 against 1.44 at 1,000 steps in one run of each).
        rating_config = preset("digits").replace(**{
            "generations": 2, "samples_per_generation": 1000, "rating.raters": "human",
            "rating.rating_budget": 64, "rating.votes_per_sample": 1, "train.steps": 600,
        })
        rating_demo, _ = self._start(RATING_DEMO_NAME, rating_config)
        experiment, waiting = self._start(DEMO_NAME, preset("digits").replace(generations=options["generations"]),
                                          enqueue=False)
        base = f"http://{options['address']}"
        self.stdout.write(self.style.SUCCESS(
            f"\nOuroboros is starting at {base}/\n"
            f"  staff: log in as 'demo' with password {staff_password} and watch {base}/experiments/{experiment.pk}/\n"
            f"  rater: log in as 'rater' with password {rater_password} and rate at {base}/rate/\n"
            "The rate-it-yourself experiment opens 64 samples for rating once its G0 is trained (about a minute).\n"
            "The simulated demo starts then: it trains G0 on 1,000 real digits, samples 1,000, lets simulated\n"
            "raters vote, fits the discriminator, curates and trains the next generation: about 2-3 minutes a\n"
            "generation on 2 cores.\n"
            "Stop with Ctrl-C.\n"
        ))

        def start_waiting() -> bool:
            """Queue the simulated demo once the rating demo is open for rating (or stopped)."""
            if waiting is None:
                return True
            rating_demo.refresh_from_db()
            if rating_demo.status != Experiment.Status.RUNNING or rating_demo.generations.filter(
                    open_for_raters=True).exists():
                tasks.enqueue(waiting.pk)
                return True
            return False

        if options["no_serve"]:
            if waiting is not None:
                tasks.enqueue(waiting.pk)  # nothing will wait for the rating demo here
            return
        self._serve(options["address"], start_waiting)

    def _start(self, name: str, config, *, enqueue: bool = True) -> tuple[Experiment, Optional[Generation]]:
        """The experiment, created and started if new; its first generation when it was started now and
        not queued (`enqueue` off), else None."""
        experiment = Experiment.objects.filter(name=name).first()
        if experiment is None:
            experiment = create_experiment(name=name, config=config)
        if experiment.status == Experiment.Status.DRAFT:
            generation = start_experiment(experiment=experiment)
            if not enqueue:
                return experiment, generation
            tasks.enqueue(generation.pk)
        return experiment, None

    def _ensure_user(self, username: str, *, staff: bool) -> str:
        """The user, with a password kept in var/ so that a second start prints the same one."""
        password_file = settings.VAR_DIR / f"demo-password-{username}.txt"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None or not password_file.exists():
            password = os.environ.get("OUROBOROS_DEMO_PASSWORD") or secrets.token_urlsafe(9)
            user = user or user_model(username=username, is_staff=staff, is_superuser=staff)
            user.set_password(password)
            user.save()
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password)
        Rater.objects.get_or_create(user=user, defaults={"name": username, "kind": Rater.Kind.HUMAN})
        return password_file.read_text().strip()

    def _serve(self, address: str, start_waiting: Callable[[], bool] = lambda: True) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        # -B: Celery beat inside the worker, running the reconciler that re-queues a stalled step.
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-B", "--loglevel", "INFO"],
            cwd=settings.BASE_DIR,
        )
        web = subprocess.Popen([*manage, "runserver", "--noreload", address], cwd=settings.BASE_DIR)
        try:
            started = False
            while worker.poll() is None and web.poll() is None:
                started = started or start_waiting()
                try:
                    web.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            pass
        finally:
            for process in (web, worker):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in (web, worker):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
