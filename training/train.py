"""Train a diffusion UNet on images: one readable loop, seeded, with EMA weights and resumable checkpoints.

Layout of a checkpoint directory:
    training_state.pt   step, configs, seed, code version, model/optimizer/scheduler/EMA/RNG state
    unet/               the EMA weights via `save_pretrained`; present only once training finished
    scheduler/          the training noise schedule via `save_pretrained`
    checkpoint.json     what the final weights are: step, configs, seed, loss, sha256 of the weights
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from training.config import ModelConfig, TrainConfig
from training.files import temporary_beside, write_atomically, written_atomically
from training.model import build_noise_scheduler, build_unet, resolve_device
from training.progress import ProgressCallback, report

CODE_VERSION = "ouroboros-train-1"
STATE_FILE = "training_state.pt"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
CARD_FILE = "checkpoint.json"


@dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    steps: int
    final_loss: float
    seconds: float
    weights_sha256: str
    resumed_from_step: int


def is_trained(checkpoint_dir: Path) -> bool:
    return (Path(checkpoint_dir) / CARD_FILE).exists()


def read_card(checkpoint_dir: Path) -> dict:
    return json.loads((Path(checkpoint_dir) / CARD_FILE).read_text())


def train_unet(
    images: np.ndarray,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    init_from: Optional[Path] = None,
    progress: Optional[ProgressCallback] = None,
    on_checkpoint: Optional[Callable[[], None]] = None,
) -> TrainResult:
    """Train on `images` (N, C, H, W) in [0, 1]. Idempotent: a finished checkpoint is returned as is,
    an interrupted one resumes from its last saved step. `on_checkpoint` is called after each
    intermediate save (to send the state where another machine can resume from it)."""
    checkpoint_dir = Path(checkpoint_dir)
    if is_trained(checkpoint_dir):
        card = read_card(checkpoint_dir)
        return TrainResult(checkpoint_dir, card["step"], card["final_loss"], 0.0, card["weights_sha256"], card["step"])
    if len(images) == 0:
        raise ValueError("cannot train on an empty training set")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    # Device, precision and seeds are decided once, here.
    device = resolve_device(train_config.device)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    torch.manual_seed(train_config.seed)
    batch_generator = torch.Generator().manual_seed(train_config.seed)

    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) * 2.0 - 1.0
    model = build_unet(model_config)
    if init_from is not None:
        from diffusers import UNet2DModel

        model.load_state_dict(UNet2DModel.from_pretrained(Path(init_from) / UNET_DIR, low_cpu_mem_usage=False).state_dict())
    model.to(device)
    noise_scheduler = build_noise_scheduler(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, train_config.warmup_steps, train_config.steps)
    ema = EMAModel(model.parameters(), decay=train_config.ema_decay)
    if init_from is not None and train_config.warm_ema:
        # The average already holds the earlier weights: at full decay from the first step (EMAModel's
        # decay ramps up from 0 over its first steps, which would forget them at once).
        ema.optimization_step = 10**6
    ema.to(device)

    start_step = 0
    state_path = checkpoint_dir / STATE_FILE
    if state_path.exists():
        # Tensors and plain containers only: a state file in the shared media folder never runs code. Loaded
        # on the CPU: the random generators' states must stay there (the weights move with load_state_dict).
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        ema.load_state_dict(state["ema"])
        ema.to(device)
        batch_generator.set_state(state["batch_generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step = state["step"]

    def save_state(step: int) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "ema": ema.state_dict(),
            "batch_generator": batch_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "model_config": model_config.to_dict(),
            "train_config": asdict(train_config),
            "code_version": CODE_VERSION,
        }
        with written_atomically(state_path) as handle:
            torch.save(state, handle)

    started = time.monotonic()
    model.train()
    loss_value = float("nan")
    recent_losses: list[float] = []
    for step in range(start_step, train_config.steps):
        batch_index = torch.randint(0, len(data), (train_config.batch_size,), generator=batch_generator)
        clean = data[batch_index].to(device)
        noise = torch.randn(clean.shape, generator=batch_generator).to(device)
        timesteps = torch.randint(
            0, model_config.num_train_timesteps, (len(clean),), generator=batch_generator
        ).to(device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            predicted = model(noisy, timesteps).sample
        loss = F.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        ema.step(model.parameters())

        recent_losses.append(loss.item())
        recent_losses = recent_losses[-50:]
        loss_value = float(np.mean(recent_losses))
        done = step + 1
        if done % train_config.checkpoint_every == 0 and done < train_config.steps:
            save_state(done)
            if on_checkpoint is not None:
                on_checkpoint()
        if done % 10 == 0 or done == train_config.steps:
            report(progress, done, train_config.steps, f"training step {done}/{train_config.steps}, loss {loss_value:.4f}")

    save_state(train_config.steps)
    ema.copy_to(model.parameters())
    sha = _save_final(model, noise_scheduler, checkpoint_dir)
    card = {
        "step": train_config.steps,
        "final_loss": loss_value,
        "weights_sha256": sha,
        "model_config": model_config.to_dict(),
        "train_config": asdict(train_config),
        "seed": train_config.seed,
        "code_version": CODE_VERSION,
        "init_from": str(init_from) if init_from else None,
    }
    write_atomically(checkpoint_dir / CARD_FILE, json.dumps(card, indent=2))
    return TrainResult(checkpoint_dir, train_config.steps, loss_value, time.monotonic() - started, sha, start_step)


def _save_final(model, noise_scheduler, checkpoint_dir: Path) -> str:
    """Write the EMA weights and the noise schedule under temporary names, then rename into place."""
    for name, obj in ((UNET_DIR, model), (SCHEDULER_DIR, noise_scheduler)):
        final, tmp = checkpoint_dir / name, checkpoint_dir / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        obj.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    digest = hashlib.sha256()
    for path in sorted((checkpoint_dir / UNET_DIR).iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def training_key(images: np.ndarray, model_config: ModelConfig, train_config: TrainConfig) -> str:
    """What a from-scratch training run is a function of: its images, its settings and the code. Two runs
    with the same key train the same weights, so one can take the other's checkpoint."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    # (warm_ema applies only when training continues: from scratch, both values train the same weights)
    settings = asdict(replace(train_config, warm_ema=False))
    digest.update(json.dumps([model_config.to_dict(), settings, CODE_VERSION], sort_keys=True).encode())
    return digest.hexdigest()[:32]


def copy_checkpoint(source: Path, destination: Path) -> None:
    """Copy a finished checkpoint's weights, schedule and card (not its training state); the card, which
    marks it finished, lands last."""
    source, destination = Path(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (UNET_DIR, SCHEDULER_DIR):
        tmp = temporary_beside(destination / name)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / name, tmp)
        shutil.rmtree(destination / name, ignore_errors=True)
        os.replace(tmp, destination / name)
    write_atomically(destination / CARD_FILE, (source / CARD_FILE).read_bytes())
