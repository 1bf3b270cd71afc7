"""The model's and the training run's configurations: plain frozen dataclasses without torch, so the
web process can read and validate them without loading torch (training.model and training.train
re-export them beside the code that uses them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    sample_size: int = 8
    channels: int = 1
    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    # "linear" or "squaredcos_cap_v2" (cosine). Cosine measured better on digits (DDPM-1000 FD 0.279 vs
    # 0.333, precision 0.954 vs 0.923): see bench/results/samplers.md.
    beta_schedule: str = "squaredcos_cap_v2"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = dict(data)
        data["block_out_channels"] = tuple(data["block_out_channels"])
        return cls(**data)


# Native 8x8 digits with a two-level UNet and no attention: the fast CPU preset (~160k parameters).
DIGITS_MODEL = ModelConfig()
# A wider UNet for a GPU, still at native resolution so no resampling blurs the data.
DIGITS_MODEL_LARGE = ModelConfig(block_out_channels=(64, 128), layers_per_block=2, norm_num_groups=32)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    # EMA 0.995 took digits' FD from 3.2 (raw weights) to 0.65 in an early probe.
    ema_decay: float = 0.995
    # When training continues from earlier weights: the average starts from them at the full decay
    # (instead of ramping up from nothing), so a short fine-tune moves the weights by a fraction of
    # its own noise. Ignored when training from scratch.
    warm_ema: bool = False
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
