"""An experiment's whole configuration as one frozen value, with named presets.

Every setting of the loop lives here (PRODUCT.md's loop options); the database stores
`ExperimentConfig.to_dict()` and rebuilds it with `from_dict`, which rejects unknown or invalid
settings with a message naming them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from curation.ml.policy import CurationConfig
from curation.ml.raters import SimulatedRaterConfig
from generation.config import SampleConfig
from training.config import DIGITS_MODEL, DIGITS_MODEL_LARGE, ModelConfig, TrainConfig
from training.mix import MixConfig

RATER_KINDS = ("simulated", "human")


class ConfigError(ValueError):
    pass


# Keys that separate the seeds a generation derives from the experiment seed (with `sample_seed`):
# stored samples, metric-only samples, rating order and training.
SAMPLE_KEY, METRIC_KEY, RATING_ORDER_KEY, TRAIN_KEY = 1, 2, 3, 4


def default_panel() -> tuple[SimulatedRaterConfig, ...]:
    # Three raters of differing strictness and care, as a real panel would be.
    return (
        SimulatedRaterConfig(threshold=0.8, noise=0.05, bias=0.0, seed=1),
        SimulatedRaterConfig(threshold=0.7, noise=0.10, bias=0.0, seed=2),
        SimulatedRaterConfig(threshold=0.9, noise=0.15, bias=0.0, seed=3),
    )


@dataclass(frozen=True)
class RatingConfig:
    raters: str = "simulated"
    votes_per_sample: int = 3
    # How many of a generation's samples go to raters; the discriminator scores the rest.
    rating_budget: int = 256
    panel: tuple[SimulatedRaterConfig, ...] = field(default_factory=default_panel)
    # Human rating: gold items mixed into the queue, short claims, active learning.
    gold_rate: float = 0.1
    gold_real_items: int = 40
    gold_bad_items: int = 40
    gold_accuracy_bar: float = 0.7
    gold_min_answers: int = 8
    claim_minutes: float = 5.0
    active_learning: bool = False
    # Under active learning, the queue is re-ordered by a refitted discriminator every this many votes.
    refit_every_votes: int = 64

    def __post_init__(self) -> None:
        if self.raters not in RATER_KINDS:
            raise ValueError(f"raters must be one of {', '.join(RATER_KINDS)}, not {self.raters!r}")
        if self.votes_per_sample < 1:
            raise ValueError("each sample needs at least one vote")
        if self.raters == "simulated" and self.votes_per_sample > len(self.panel):
            raise ValueError(
                f"{self.votes_per_sample} votes per sample need at least that many distinct raters; "
                f"the simulated panel has {len(self.panel)}"
            )
        if self.rating_budget < 0:
            raise ValueError("the rating budget cannot be negative")
        if not 0.0 <= self.gold_rate < 1.0:
            raise ValueError(f"the gold rate must be within [0, 1), not {self.gold_rate}")
        if not 0.0 <= self.gold_accuracy_bar <= 1.0:
            raise ValueError(f"the gold accuracy bar must be within [0, 1], not {self.gold_accuracy_bar}")
        if self.claim_minutes <= 0:
            raise ValueError("claims must last a positive number of minutes")
        if self.refit_every_votes < 1:
            raise ValueError("refit_every_votes must be at least 1")


@dataclass(frozen=True)
class ExperimentConfig:
    # The name of a stored real dataset: "digits" (the embedded default) or one imported by staff.
    dataset: str = "digits"
    dataset_size: int | None = None
    pool_size: int = 1000
    generations: int = 3
    samples_per_generation: int = 1000
    # Metrics use at least this many samples: on 256, FD has a floor near 0.95 even for real data.
    metric_samples: int = 1000
    seed: int = 0
    # After G0, start each generation from the previous generation's weights and train it for
    # `continue_steps` steps, instead of training a new model from scratch for `train.steps`.
    continue_training: bool = False
    continue_steps: int = 500
    # The peak learning rate when continuing; None keeps train.learning_rate. A warm restart at the
    # from-scratch rate shakes a trained model more than a few hundred steps can settle.
    continue_learning_rate: float | None = None
    # Create and start the next generation as soon as one is done; off, staff advance by hand.
    auto_advance: bool = True
    model: ModelConfig = DIGITS_MODEL
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    mix: MixConfig = MixConfig()
    curation: CurationConfig = CurationConfig()
    rating: RatingConfig = RatingConfig()

    def __post_init__(self) -> None:
        if not self.dataset.strip():
            raise ValueError("choose a dataset")
        if self.generations < 1:
            raise ValueError("an experiment runs at least one generation (G0)")
        if self.samples_per_generation < 1:
            raise ValueError("each generation needs at least one sample")
        if self.rating.rating_budget > self.samples_per_generation:
            raise ValueError(
                f"the rating budget ({self.rating.rating_budget}) exceeds the samples per generation "
                f"({self.samples_per_generation})"
            )
        if self.curation.policy in ("human", "human+discriminator", "discriminator") and self.rating.rating_budget == 0:
            raise ValueError(f"the {self.curation.policy!r} policy needs votes: set a rating budget above 0")
        if self.continue_steps < 1:
            raise ValueError("continue_steps must be at least 1")
        if self.continue_learning_rate is not None and self.continue_learning_rate <= 0:
            raise ValueError("continue_learning_rate must be positive")
        if self.pool_size < 1:
            raise ValueError("the real pool needs at least one image")

    def train_config_for(self, generation: int, *, seed: int, device: str) -> tuple[TrainConfig, bool]:
        """The training settings of one generation, and whether it starts from the previous one's weights."""
        continues = self.continue_training and generation > 0
        config = dataclasses.replace(self.train, seed=seed, device=device)
        if continues:
            config = dataclasses.replace(
                config, steps=self.continue_steps, warmup_steps=min(config.warmup_steps, self.continue_steps // 10),
                learning_rate=self.continue_learning_rate or config.learning_rate,
            )
        return config, continues

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        try:
            return _build(cls, data, path="")
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from error

    def replace(self, **changes: Any) -> "ExperimentConfig":
        """A copy with changes; nested settings by dotted name, e.g. {"mix.loop": "fresh"}."""
        data = self.to_dict()
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            target = data
            for parent in parents:
                if parent not in target or not isinstance(target[parent], dict):
                    raise ConfigError(f"unknown setting {dotted!r}")
                target = target[parent]
            if leaf not in target:
                raise ConfigError(f"unknown setting {dotted!r}")
            target[leaf] = value
        return self.from_dict(data)


NESTED = {
    "model": ModelConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "mix": MixConfig,
    "curation": CurationConfig,
    "rating": RatingConfig,
}


def _build(cls, data: dict[str, Any], path: str):
    if not isinstance(data, dict):
        raise ValueError(f"setting {path or 'config'!r} must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown setting {path + unknown[0]!r}; known: {', '.join(sorted(names))}")
    values = {}
    for name, value in data.items():
        if cls is ExperimentConfig and name in NESTED:
            value = _build(NESTED[name], value, path=f"{name}.")
        elif cls is RatingConfig and name == "panel":
            value = tuple(_build(SimulatedRaterConfig, rater, path="rating.panel.") for rater in value)
        elif cls is ModelConfig and name == "block_out_channels":
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"{path.rstrip('.') or 'config'}: {error}") from error


PRESETS: dict[str, ExperimentConfig] = {
    # The fast CPU preset: native 8x8 digits, ~2.5 minutes a generation on 2 cores.
    "digits": ExperimentConfig(),
    # For tests and smoke runs: seconds a generation, samples barely digit-like.
    "digits-tiny": ExperimentConfig(
        pool_size=300,
        samples_per_generation=96,
        metric_samples=128,
        train=TrainConfig(steps=40, batch_size=32, checkpoint_every=20, warmup_steps=5),
        sample=SampleConfig(steps=10),
        mix=MixConfig(train_size=300),
        rating=RatingConfig(rating_budget=48),
    ),
    # The collapse study on a CPU: G0 as in `digits` but on a 500-image pool (leaving a reservoir for
    # fresh loops), later generations continuing from the previous weights for 300 steps.
    "study-cpu": ExperimentConfig(
        pool_size=500,
        mix=MixConfig(train_size=500),
        continue_training=True,
        continue_steps=300,
    ),
    # The collapse study on CUDA: the wider UNet, every generation trained from scratch.
    "study-gpu": ExperimentConfig(
        pool_size=500,
        mix=MixConfig(train_size=500),
        model=DIGITS_MODEL_LARGE,
        train=TrainConfig(steps=6000, batch_size=256, learning_rate=1e-3),
    ),
    # For a GPU: a wider UNet trained longer, same native resolution.
    "digits-large": ExperimentConfig(
        model=DIGITS_MODEL_LARGE,
        train=TrainConfig(steps=6000, batch_size=256, learning_rate=1e-3),
    ),
}


def preset(name: str) -> ExperimentConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
