"""The sampler's configuration: a plain frozen dataclass without torch, so the web process can read
and validate it without loading torch (generation.sampling re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("ddpm", "ddim", "dpm-solver++")


@dataclass(frozen=True)
class SampleConfig:
    # Chosen by measured quality against DDPM-1000 on the same checkpoint (bench/results/samplers.md):
    # on digits with the cosine schedule, DPM-Solver++ at 20 steps reaches FD 0.295 against
    # DDPM-1000's 0.279, with higher recall, in 1% of the time; DDIM gets worse with more steps.
    sampler: str = "dpm-solver++"
    steps: int = 20
    # The sampling bias, explicit: the starting noise is scaled by `temperature`. Below 1 it
    # truncates towards the typical samples (the MAD paper's lambda < 1); 1 is unbiased.
    temperature: float = 1.0
    # Negative guidance (w): the noise predicted is (1 + w) * base - w * guide, steering samples away
    # from what a guide model (the base fine-tuned on its own or its rejected samples) produces.
    # 0 samples the base model alone.
    guidance: float = 0.0
    batch_size: int = 512
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError("a sampler needs at least one step")
        if not 0.0 < self.temperature <= 2.0:
            raise ValueError(f"temperature must be in (0, 2], not {self.temperature}")
        if not 0.0 <= self.guidance <= 10.0:
            raise ValueError(f"guidance must be within [0, 10], not {self.guidance}")
