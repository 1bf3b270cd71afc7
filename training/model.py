"""The diffusion model: a diffusers UNet2DModel and its DDPM noise schedule, sized by a preset
(`ModelConfig`, defined in training.config)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel

from training.config import DIGITS_MODEL, DIGITS_MODEL_LARGE, ModelConfig  # noqa: F401 (re-exported)


def build_unet(config: ModelConfig) -> UNet2DModel:
    levels = len(config.block_out_channels)
    return UNet2DModel(
        sample_size=config.sample_size,
        in_channels=config.channels,
        out_channels=config.channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
    )


def build_noise_scheduler(config: ModelConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        clip_sample=True,
    )


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU; anything else is taken as a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
    return device
