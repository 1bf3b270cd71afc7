"""An experiment's whole configuration as one frozen value, with named presets.

Every setting of the loop lives here (PRODUCT.md's loop options); the database stores
`ExperimentConfig.to_dict()` and rebuilds it with `from_dict`, which rejects unknown or invalid
settings with a message naming them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from curation.ml.policy import ACCEPTANCE, CURATING, DISCRIMINATORS, GUARD_MODES, POLICIES, CurationPolicy
from curation.ml.raters import SimulatedRaterConfig
from generation.config import SAMPLERS, SampleConfig
from training.config import DIGITS_MODEL, DIGITS_MODEL_LARGE, ModelConfig, TrainConfig
from training.mix import LOOPS, MixConfig

RATER_KINDS = ("simulated", "human")
GUIDANCE_SOURCES = ("own", "rejected")


class ConfigError(ValueError):
    """Settings the loop does not accept, with the reason; `setting` names the one at fault, if one is."""

    def __init__(self, message: str, *, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting


# Keys that separate the seeds a generation derives from the experiment seed (with `sample_seed`):
# stored samples, metric-only samples, rating order, training and the guidance model's training.
SAMPLE_KEY, METRIC_KEY, RATING_ORDER_KEY, TRAIN_KEY, GUIDE_KEY = 1, 2, 3, 4, 5


# --- bounds -------------------------------------------------------------------------------------
# Every setting's type and range, checked before anything is built from it: the form, the API and
# the command line all go through `ExperimentConfig.replace` / `from_dict`, so they refuse the same
# values with the same message. The limits keep one generation within what a worker can hold (a
# 64x64 colour sample is 48 KiB as float32: 100,000 of them are 4.7 GiB) and every value within
# what the database, numpy and the clock can represent (claims of 10^12 minutes overflow a date).

MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch accept any such seed
MAX_IMAGES = 100_000  # as many as an imported dataset may hold (training.image_folder.MAX_IMAGES)
MAX_STEPS = 1_000_000
BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,2})?")


@dataclass(frozen=True)
class Bound:
    """What one setting accepts. `kind`: int, number, bool, text, choice, device, levels (a list of
    whole numbers) or panel (a list of simulated raters); the range is inclusive unless `*_open`, and
    for the lists `length` bounds how many entries."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    length: tuple[int, int] = (0, 0)
    optional: bool = False

    def describe(self) -> str:
        if self.kind == "int":
            text = f"a whole number from {_number(self.low)} to {_number(self.high)}"
        elif self.kind == "number":
            low = f"above {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}"
            high = f"below {_number(self.high)}" if self.high_open else f"at most {_number(self.high)}"
            closed = not (self.low_open or self.high_open)
            text = f"a number from {_number(self.low)} to {_number(self.high)}" if closed else f"a number {low} and {high}"
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "text":
            text = f"a name of 1 to {self.high:.0f} characters"
        elif self.kind in ("choice", "device"):
            choices = self.choices if self.kind == "choice" else ("auto", "cpu", "cuda", "cuda:N", "mps")
            text = "one of " + ", ".join(f'"{c}"' for c in choices)
        elif self.kind == "levels":
            text = (f"a list of {self.length[0]} to {self.length[1]} whole numbers "
                    f"from {_number(self.low)} to {_number(self.high)}")
        else:
            text = f"a list of {self.length[0]} to {self.length[1]} raters (threshold, noise, bias, seed, reject_real)"
        return text + (", or null" if self.optional else "")

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not self._accepts(value):
            raise ConfigError(f"{name} must be {self.describe()}, not {_shown(value)}", setting=name)

    def _accepts(self, value: Any) -> bool:
        if self.kind == "int":
            return _is_int(value) and self.low <= value <= self.high
        if self.kind == "number":
            if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
                return False
            above = value > self.low if self.low_open else value >= self.low
            below = value < self.high if self.high_open else value <= self.high
            return above and below
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str) and bool(value.strip()) and len(value) <= self.high
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "device":
            return isinstance(value, str) and DEVICE.fullmatch(value) is not None
        if not isinstance(value, (list, tuple)) or not self.length[0] <= len(value) <= self.length[1]:
            return False
        if self.kind == "levels":
            return all(_is_int(v) and self.low <= v <= self.high for v in value)
        return all(isinstance(v, (dict, SimulatedRaterConfig)) for v in value)  # each rater's settings: BOUNDS too


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:g}"


def _shown(value: Any) -> str:
    """A bad value as the user wrote it (JSON's words), short, with its type where that is the fault."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # (str() of a number of thousands of digits raises: Python limits that conversion)
        return str(value) if abs(value) < 10**30 else f"a whole number of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value[:40] + ("..." if len(value) > 40 else "")) + " (text)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_int = functools.partial(Bound, "int")
_fraction = Bound("number", 0, 1)

BOUNDS: dict[str, Bound] = {
    "dataset": Bound("text", high=100),
    "dataset_size": _int(1, MAX_IMAGES, optional=True),
    "pool_size": _int(1, MAX_IMAGES),
    "generations": _int(1, 100),
    "samples_per_generation": _int(1, MAX_IMAGES),
    # Precision/recall/density/coverage compare every sample with every other: n^2 distances.
    "metric_samples": _int(16, 10_000),
    "seed": _int(0, MAX_SEED),
    "continue_training": Bound("bool"),
    "continue_steps": _int(1, MAX_STEPS),
    "continue_learning_rate": Bound("number", 0, 1, low_open=True, optional=True),
    "auto_advance": Bound("bool"),
    "model.sample_size": _int(1, 64),  # images are at most 64x64 (training.image_folder.MAX_SIDE)
    "model.channels": _int(1, 4),
    "model.block_out_channels": Bound("levels", 1, 1024, length=(1, 4)),
    "model.layers_per_block": _int(1, 4),
    "model.norm_num_groups": _int(1, 128),
    "model.num_train_timesteps": _int(10, 10_000),
    "model.beta_schedule": Bound("choice", choices=BETA_SCHEDULES),
    "train.steps": _int(1, MAX_STEPS),
    "train.batch_size": _int(1, 4096),
    "train.learning_rate": Bound("number", 0, 1, low_open=True),
    "train.weight_decay": _fraction,
    "train.warmup_steps": _int(0, MAX_STEPS),
    "train.ema_decay": Bound("number", 0, 1, high_open=True),
    "train.warm_ema": Bound("bool"),
    "train.max_grad_norm": Bound("number", 0, 1000, low_open=True),
    "train.checkpoint_every": _int(1, MAX_STEPS),
    "train.seed": _int(0, MAX_SEED),
    "train.device": Bound("device"),
    "sample.sampler": Bound("choice", choices=SAMPLERS),
    "sample.steps": _int(1, 1000),
    "sample.temperature": Bound("number", 0, 2, low_open=True),
    "sample.guidance": Bound("number", 0, 10),
    "guidance_source": Bound("choice", choices=GUIDANCE_SOURCES),
    "guidance_steps": _int(1, MAX_STEPS),
    "sample.batch_size": _int(1, 16_384),
    "sample.device": Bound("device"),
    "mix.loop": Bound("choice", choices=LOOPS),
    "mix.real_fraction": _fraction,
    "mix.accumulate": Bound("bool"),
    "mix.train_size": _int(1, MAX_IMAGES),
    "mix.keep_real": Bound("bool"),
    "mix.synthetic_ratio": Bound("number", 0, 10, low_open=True, optional=True),
    "curation.policy": Bound("choice", choices=POLICIES),
    "curation.threshold": _fraction,
    "curation.diversity_guard": Bound("bool"),
    "curation.guard_floor": _fraction,
    "curation.guard_mode": Bound("choice", choices=GUARD_MODES),
    "curation.match": Bound("choice", choices=CURATING),
    "curation.acceptance": Bound("choice", choices=ACCEPTANCE),
    "curation.resample_cap": Bound("number", 1, 1000),
    "curation.discriminator": Bound("choice", choices=DISCRIMINATORS),
    "curation.keep": Bound("number", 0, 1, low_open=True),
    "rating.raters": Bound("choice", choices=RATER_KINDS),
    "rating.votes_per_sample": _int(1, 50),
    "rating.rating_budget": _int(0, MAX_IMAGES),
    "rating.panel": Bound("panel", length=(1, 50)),
    "rating.panel.threshold": _fraction,
    "rating.panel.noise": Bound("number", 0, 0.5),
    "rating.panel.bias": Bound("number", -1, 1),
    "rating.panel.seed": _int(0, MAX_SEED),
    "rating.panel.reject_real": Bound("number", 0, 0.5, optional=True),
    "rating.gold_rate": Bound("number", 0, 0.99),
    "rating.gold_real_items": _int(0, 1000),
    "rating.gold_bad_items": _int(0, 1000),
    "rating.gold_accuracy_bar": _fraction,
    "rating.gold_min_answers": _int(1, 1000),
    "rating.claim_minutes": Bound("number", 1, 24 * 60),
    "rating.active_learning": Bound("bool"),
    "rating.refit_every_votes": _int(1, MAX_IMAGES),
}


def _check_values(config: "ExperimentConfig") -> None:
    """`check_settings` for a configuration built directly (the presets, the study's variants)."""
    for top in dataclasses.fields(config):
        value = getattr(config, top.name)
        if top.name not in NESTED:
            BOUNDS[top.name].check(top.name, value)
            continue
        for inner in dataclasses.fields(value):
            name = f"{top.name}.{inner.name}"
            BOUNDS[name].check(name, getattr(value, inner.name))
    for index, rater in enumerate(config.rating.panel):
        for inner in dataclasses.fields(rater):
            BOUNDS[f"rating.panel.{inner.name}"].check(f"rating.panel[{index}].{inner.name}", getattr(rater, inner.name))


def check_settings(data: Any, cls: type | None = None, *, name: str = "", bound: str = "") -> None:
    """Refuse unknown settings and values of the wrong type or out of their bounds, naming the first.
    `name` prefixes settings in messages (``rating.panel[2].``), `bound` in BOUNDS (``rating.panel.``)."""
    cls = cls or ExperimentConfig
    if not isinstance(data, dict):
        where = name.rstrip(".") or "the configuration"
        raise ConfigError(f"{where} must be a mapping of settings, not {_shown(data)}", setting=name.rstrip("."))
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {name + str(key)!r}; known: {', '.join(name + k for k in sorted(known))}")
        if cls is ExperimentConfig and key in NESTED:
            check_settings(value, NESTED[key], name=f"{key}.", bound=f"{key}.")
            continue
        BOUNDS[bound + key].check(name + key, value)
        if bound + key == "rating.panel":
            for index, rater in enumerate(value):
                check_settings(rater, SimulatedRaterConfig, name=f"rating.panel[{index}].", bound="rating.panel.")


def default_panel() -> tuple[SimulatedRaterConfig, ...]:
    # Three raters of differing strictness and care, as a real panel would be, each calibrated to turn
    # down 0.5-1.5% of real images it has not seen. On digits' held-out split their majority accepts 98%
    # of real digits and turns down 99% of noise, blank, blurred, blotched and inverted images and 93% of
    # 50/50 blends of two digits (tests/curation/ml/test_raters.py); over ten splits (split seeds 0-9),
    # 96.6-99.4% of real digits and 87-95% of blends. Stricter raters turn down more of both.
    return (
        SimulatedRaterConfig(reject_real=0.005, noise=0.02, bias=0.0, seed=1),
        SimulatedRaterConfig(reject_real=0.015, noise=0.03, bias=0.0, seed=2),
        SimulatedRaterConfig(reject_real=0.01, noise=0.05, bias=0.0, seed=3),
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
    # G0's real images, drawn from the dataset's training split (digits: 988 of 1,797; the rest is held
    # out for the curators and for evaluation).
    pool_size: int = 800
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
    # Negative guidance (sample.guidance > 0), from G1 on: the guide is this generation's model
    # fine-tuned for `guidance_steps` on the previous generation's samples ("own": all of them, as in
    # self-improving diffusion with synthetic data) or on those curation turned down ("rejected").
    guidance_source: str = "own"
    guidance_steps: int = 200
    # Create and start the next generation as soon as one is done; off, staff advance by hand.
    auto_advance: bool = True
    model: ModelConfig = DIGITS_MODEL
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    mix: MixConfig = MixConfig()
    curation: CurationPolicy = CurationPolicy()
    rating: RatingConfig = RatingConfig()

    def __post_init__(self) -> None:
        _check_values(self)  # every setting's type and range (BOUNDS)
        # Then the settings that must agree with one another.
        if self.rating.rating_budget > self.samples_per_generation:
            raise ConfigError(
                f"the rating budget ({self.rating.rating_budget}) exceeds the samples per generation "
                f"({self.samples_per_generation})", setting="rating.rating_budget",
            )
        if self.curation.needs_votes and self.rating.rating_budget == 0:
            raise ConfigError(f"the {self.curation.policy!r} policy needs votes: set a rating budget above 0",
                              setting="rating.rating_budget")
        model = self.model
        if any(width % model.norm_num_groups for width in model.block_out_channels):
            raise ConfigError(
                f"model.block_out_channels {list(model.block_out_channels)} must each divide by model.norm_num_groups "
                f"({model.norm_num_groups})", setting="model.block_out_channels",
            )
        levels = len(model.block_out_channels)
        if model.sample_size % 2 ** (levels - 1):
            raise ConfigError(
                f"{model.sample_size}x{model.sample_size} images cannot pass through a {levels}-level UNet: "
                f"model.sample_size must divide by {2 ** (levels - 1)}", setting="model.block_out_channels",
            )
        if self.sample.steps > model.num_train_timesteps:
            raise ConfigError(
                f"sample.steps ({self.sample.steps}) cannot exceed model.num_train_timesteps ({model.num_train_timesteps})",
                setting="sample.steps",
            )

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
        check_settings(data)  # before anything is built from the values
        try:
            return _build(cls, data, path="")
        except ConfigError:
            raise
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
    "curation": CurationPolicy,
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
    except ConfigError:
        raise
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
