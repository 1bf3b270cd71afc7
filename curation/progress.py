"""Progress of a generation's running step: stored on the row for the web UI, and shown as a tqdm
bar on the command line. Pure ML code reports through the (done, total, message) callback."""

from __future__ import annotations

import time

from django.utils import timezone
from tqdm import tqdm

from curation.models import Experiment, Generation

WRITE_INTERVAL_SECONDS = 0.5


class StepInterrupted(Exception):
    """Staff paused or cancelled the experiment while one of its steps was running."""


class GenerationProgress:
    def __init__(self, generation: Generation, step: str, *, bar: bool = False):
        self.generation_id = generation.pk
        self.experiment_id = generation.experiment_id
        self.step = step
        self.last_write = 0.0
        self.bar = tqdm(total=1, desc=f"G{generation.index} {step}", leave=False, unit="it") if bar else None
        self(0, 1, f"{step} started")

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.bar is not None:
            if self.bar.total != total:
                self.bar.reset(total=total)
            self.bar.n = done
            self.bar.set_postfix_str(message[-60:], refresh=False)
            self.bar.refresh()
        now = time.monotonic()
        if done >= total or now - self.last_write >= WRITE_INTERVAL_SECONDS:
            self.last_write = now
            Generation.objects.filter(pk=self.generation_id).update(
                progress_fraction=done / total if total else 1.0,
                progress_message=message[:300],
                progress_updated_at=timezone.now(),
            )
            # Each write also looks at the experiment, so pausing or cancelling stops a step within
            # a second; training resumes from its last checkpoint, other steps redo their unsaved work.
            status = Experiment.objects.filter(pk=self.experiment_id).values_list("status", flat=True).first()
            if status != Experiment.Status.RUNNING:
                raise StepInterrupted(f"the experiment is {status}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "GenerationProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
