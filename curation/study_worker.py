"""The entry points of a study's worker processes. They are spawned (a fresh interpreter, no torch or
database state shared with the parent), and unpickling a function imports its module before anything
runs: so this module imports nothing of Django at its top, and sets Django up before the rest."""

from __future__ import annotations


def start(threads: int) -> None:
    import django
    import torch

    django.setup()
    torch.set_num_threads(threads)


def run_generation_of(experiment_id: int):
    from curation.studies import run_generation_of

    return run_generation_of(experiment_id)
