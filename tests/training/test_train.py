"""Training is seeded, writes a self-describing checkpoint, and resumes where it was cut off."""

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch

from training.data import load_digits_dataset
from training.model import DIGITS_MODEL
from training.train import CARD_FILE, STATE_FILE, TrainConfig, train_unet, training_key

pytestmark = pytest.mark.slow
CONFIG = TrainConfig(steps=20, batch_size=16, checkpoint_every=10, warmup_steps=2, device="cpu")


@pytest.fixture(scope="module")
def images():
    return load_digits_dataset(size=64).images


class Interrupt(Exception):
    pass


def test_training_writes_a_checkpoint_that_describes_itself(images, tmp_path):
    result = train_unet(images, model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert card["step"] == 20 and card["seed"] == CONFIG.seed
    assert card["model_config"]["block_out_channels"] == [16, 32]
    assert card["weights_sha256"] == result.weights_sha256
    assert (tmp_path / "unet" / "config.json").exists() and (tmp_path / "scheduler").exists()


def test_an_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(images, tmp_path):
    config = dataclasses.replace(CONFIG, steps=30, checkpoint_every=15)
    straight = train_unet(images, model_config=DIGITS_MODEL, train_config=config, checkpoint_dir=tmp_path / "a")

    def cut_at_step_20(done, total, message):
        if done == 20:  # five steps past the last checkpoint: they are lost and redone
            raise Interrupt

    with pytest.raises(Interrupt):
        train_unet(images, model_config=DIGITS_MODEL, train_config=config, checkpoint_dir=tmp_path / "b", progress=cut_at_step_20)
    assert (tmp_path / "b" / STATE_FILE).exists() and not (tmp_path / "b" / CARD_FILE).exists()
    resumed = train_unet(images, model_config=DIGITS_MODEL, train_config=config, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from_step == 15
    assert resumed.weights_sha256 == straight.weights_sha256


def test_training_a_finished_checkpoint_again_does_nothing(images, tmp_path):
    first = train_unet(images, model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path)
    calls = []
    again = train_unet(images, model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path,
                       progress=lambda *a: calls.append(a))
    assert again.weights_sha256 == first.weights_sha256 and calls == []


def test_an_empty_training_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty training set"):
        train_unet(load_digits_dataset(size=1).images[:0], model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path)


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_training_state_that_would_run_code_when_loaded_is_refused(images, tmp_path):
    # The state file lives in the shared media folder: whoever can write there must not run code on a worker.
    marker = tmp_path / "code-ran"
    (tmp_path / "run").mkdir()
    torch.save({"step": 5, "model": RunsCodeWhenUnpickled(marker)}, tmp_path / "run" / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        train_unet(images, model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path / "run")
    assert not marker.exists()


def test_a_warm_ema_keeps_a_continued_model_near_the_weights_it_started_from(images, tmp_path):
    from diffusers import UNet2DModel

    def weights(folder: Path) -> torch.Tensor:
        model = UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    train_unet(images, model_config=DIGITS_MODEL, train_config=CONFIG, checkpoint_dir=tmp_path / "g0")
    start = weights(tmp_path / "g0")
    moved = {}
    for warm in (False, True):
        config = dataclasses.replace(CONFIG, warm_ema=warm, seed=1)
        folder = tmp_path / f"g1-{warm}"
        train_unet(images, model_config=DIGITS_MODEL, train_config=config, checkpoint_dir=folder, init_from=tmp_path / "g0")
        moved[warm] = float((weights(folder) - start).norm())
    # 20 steps at decay 0.995 keep about 90% of the start in the average; restarted, it tracks the new weights.
    assert 0 < moved[True] < 0.3 * moved[False]


def test_the_training_key_names_what_a_from_scratch_run_depends_on():
    images = load_digits_dataset().images[:16]
    config = TrainConfig(steps=10)
    key = training_key(images, DIGITS_MODEL, config)
    # A warm EMA applies only when training continues: from scratch it trains the same weights.
    assert training_key(images, DIGITS_MODEL, dataclasses.replace(config, warm_ema=True)) == key
    assert training_key(images, DIGITS_MODEL, dataclasses.replace(config, steps=11)) != key
    assert training_key(images[:15], DIGITS_MODEL, config) != key
