"""Batched, seeded sampling of a trained UNet with a choice of sampler.

Every sample has its own seed: the noise it starts from (and any noise a stochastic sampler adds)
comes from a generator seeded with it alone, so a sample can be regenerated on its own, in any
batch, and a half-finished sampling run can be completed without redrawing the rest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from generation.config import SAMPLERS, SampleConfig
from training.model import resolve_device
from training.progress import ProgressCallback, report
from training.train import SCHEDULER_DIR, UNET_DIR

def sample_seed(base_seed: int, *keys: int) -> int:
    """A stable 63-bit seed derived from a base seed and integer keys (e.g. generation, index)."""
    text = ":".join(str(k) for k in (base_seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def build_sampler(name: str, checkpoint_dir: Path, steps: int):
    """The inference scheduler for `name`, configured from the noise schedule the model trained with."""
    config = DDPMScheduler.load_config(Path(checkpoint_dir) / SCHEDULER_DIR)
    if name == "ddpm":
        scheduler = DDPMScheduler.from_config(config)
    elif name == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    elif name == "dpm-solver++":
        # Without x0 clipping, DPM-Solver++ drifts into saturated blobs on some schedules (cosine in
        # particular); dynamic thresholding at 1.0 keeps its x0 estimates inside the data range.
        scheduler = DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0
        )
    else:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    scheduler.set_timesteps(steps)
    return scheduler


def load_unet(checkpoint_dir: Path, device: torch.device) -> UNet2DModel:
    unet_dir = Path(checkpoint_dir) / UNET_DIR
    if not unet_dir.exists():
        raise FileNotFoundError(f"no trained model in {checkpoint_dir}: its training has not finished")
    return UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False).to(device).eval()


@torch.no_grad()
def sample_images(
    checkpoint_dir: Path,
    seeds: Sequence[int],
    config: SampleConfig = SampleConfig(),
    progress: Optional[ProgressCallback] = None,
    guide_dir: Optional[Path] = None,
) -> np.ndarray:
    """One image per seed, as float32 (N, C, H, W) in [0, 1]. With a `guide_dir` (a model of the same
    shape) and `config.guidance` w > 0, each step follows (1 + w) * base - w * guide's noise."""
    device = resolve_device(config.device)
    unet = load_unet(checkpoint_dir, device)
    guide = load_unet(guide_dir, device) if guide_dir is not None and config.guidance > 0 else None
    size, channels = unet.config.sample_size, unet.config.in_channels
    out = np.empty((len(seeds), channels, size, size), dtype=np.float32)
    total_steps = max(1, len(seeds) * config.steps)
    for start in range(0, len(seeds), config.batch_size):
        batch_seeds = seeds[start : start + config.batch_size]
        generators = [torch.Generator().manual_seed(int(s)) for s in batch_seeds]
        noise = torch.stack([torch.randn((channels, size, size), generator=g) for g in generators])
        scheduler = build_sampler(config.sampler, checkpoint_dir, config.steps)
        x = (noise * config.temperature * scheduler.init_noise_sigma).to(device)
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(x, t)
            # Mixed precision on CUDA for the network only; the sampler's arithmetic stays in float32.
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                predicted_noise = unet(model_input, t).sample.float()
                if guide is not None:
                    away = guide(model_input, t).sample.float()
                    predicted_noise = (1.0 + config.guidance) * predicted_noise - config.guidance * away
            x = _step(scheduler, predicted_noise, t, x, generators)
            if (i + 1) % 10 == 0 or i + 1 == len(scheduler.timesteps):
                done = start * config.steps + len(batch_seeds) * (i + 1)
                report(progress, done, total_steps, f"sampling {start + len(batch_seeds)}/{len(seeds)}")
        out[start : start + len(batch_seeds)] = (x.float().cpu().numpy() + 1.0) / 2.0
    return np.clip(out, 0.0, 1.0)


def _step(scheduler, predicted_noise, t, x, generators):
    # A list of generators makes diffusers draw any per-step noise (DDPM) one sample at a time, each
    # from that sample's own generator on the CPU, so results do not depend on batching or device.
    return scheduler.step(predicted_noise, t, x, generator=generators).prev_sample
