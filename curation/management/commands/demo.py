"""Start the embedded service with a demo experiment: a Celery worker, the web server, digits."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from curation import tasks
from curation.datasets import ensure_digits_dataset, real_models
from curation.ml.experiment_config import preset
from curation.models import Experiment
from curation.services import create_experiment, start_experiment

DEMO_NAME = "Demo: digits, augmentation loop, human+discriminator curation"


class Command(BaseCommand):
    help = "Create a staff user and a demo experiment on digits, then run a Celery worker and the web server."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--address", default="127.0.0.1:8000")
        parser.add_argument("--generations", type=int, default=3)
        parser.add_argument("--no-serve", action="store_true", help="Set up and enqueue, but start no processes.")

    def handle(self, *args, **options) -> None:
        password = self._ensure_user()
        self.stdout.write("Preparing the digits dataset and its reference models...")
        dataset = ensure_digits_dataset()
        floor = real_models(dataset.pk).real_floor
        experiment = Experiment.objects.filter(name=DEMO_NAME).first()
        if experiment is None:
            config = preset("digits").replace(generations=options["generations"])
            experiment = create_experiment(name=DEMO_NAME, config=config)
            Experiment.objects.filter(pk=experiment.pk).update(real_floor=floor)
        if experiment.status == Experiment.Status.DRAFT:
            generation = start_experiment(experiment=experiment)
            tasks.enqueue(generation.pk)
        self.stdout.write(self.style.SUCCESS(
            f"\nOuroboros is starting at http://{options['address']}/experiments/{experiment.pk}/\n"
            f"Log in as 'demo' with password: {password}\n"
            "The demo trains G0 on 1,000 real digits, samples 1,000, lets simulated raters vote, fits the\n"
            "discriminator, curates and trains the next generation; about 2-3 minutes a generation on 2 cores.\n"
            "Stop with Ctrl-C.\n"
        ))
        if options["no_serve"]:
            return
        self._serve(options["address"])

    def _ensure_user(self) -> str:
        password_file = settings.VAR_DIR / "demo-password.txt"
        user_model = get_user_model()
        user = user_model.objects.filter(username="demo").first()
        if user is not None and password_file.exists():
            return password_file.read_text().strip()
        password = os.environ.get("OUROBOROS_DEMO_PASSWORD") or secrets.token_urlsafe(9)
        if user is None:
            user = user_model(username="demo", is_staff=True, is_superuser=True)
        user.set_password(password)
        user.save()
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password)
        return password

    def _serve(self, address: str) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "INFO"],
            cwd=settings.BASE_DIR,
        )
        web = subprocess.Popen([*manage, "runserver", "--noreload", address], cwd=settings.BASE_DIR)
        try:
            while worker.poll() is None and web.poll() is None:
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
