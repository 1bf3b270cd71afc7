"""Sampling is seeded per sample: any sample can be regenerated alone, in any batch."""

import numpy as np
import pytest

from generation.sampling import SAMPLERS, SampleConfig, sample_images, sample_seed
from training.data import load_digits_dataset
from training.model import DIGITS_MODEL
from training.train import TrainConfig, train_unet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint")
    config = TrainConfig(steps=10, batch_size=16, warmup_steps=2, device="cpu")
    train_unet(load_digits_dataset(size=64).images, model_config=DIGITS_MODEL, train_config=config, checkpoint_dir=path)
    return path


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_sample_is_the_same_alone_or_in_a_batch(checkpoint, sampler):
    config = SampleConfig(sampler=sampler, steps=8, device="cpu", batch_size=2)
    batch = sample_images(checkpoint, [11, 22, 33], config)
    alone = sample_images(checkpoint, [22], config)
    assert batch.shape == (3, 1, 8, 8)
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    np.testing.assert_allclose(alone[0], batch[1], atol=1e-5)
    assert not np.allclose(batch[0], batch[1])


def test_temperature_below_one_shrinks_the_starting_noise(checkpoint):
    hot = sample_images(checkpoint, [5, 6, 7, 8], SampleConfig(steps=8, device="cpu", temperature=1.0))
    cold = sample_images(checkpoint, [5, 6, 7, 8], SampleConfig(steps=8, device="cpu", temperature=0.3))
    assert not np.allclose(hot, cold)


def test_negative_guidance_steers_away_from_the_guide_and_is_a_no_op_against_the_model_itself(checkpoint, tmp_path):
    seeds = [3, 4, 5, 6]
    plain = sample_images(checkpoint, seeds, SampleConfig(steps=8, device="cpu"))
    guided = SampleConfig(steps=8, device="cpu", guidance=1.5)
    # (1 + w) e - w e = e: guided away from itself, the model samples as it would alone.
    np.testing.assert_allclose(sample_images(checkpoint, seeds, guided, guide_dir=checkpoint), plain, atol=1e-4)
    # A guide fine-tuned on other images (inverted digits) moves the samples; w = 0 ignores it.
    config = TrainConfig(steps=10, batch_size=16, warmup_steps=2, device="cpu", seed=1)
    train_unet(1.0 - load_digits_dataset(size=64).images, model_config=DIGITS_MODEL, train_config=config,
               checkpoint_dir=tmp_path, init_from=checkpoint)
    assert not np.allclose(sample_images(checkpoint, seeds, guided, guide_dir=tmp_path), plain, atol=1e-3)
    off = SampleConfig(steps=8, device="cpu", guidance=0.0)
    np.testing.assert_allclose(sample_images(checkpoint, seeds, off, guide_dir=tmp_path), plain, atol=1e-6)


def test_seeds_are_stable_and_distinct():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(0, 1, i) for i in range(1000)}) == 1000


@pytest.mark.parametrize("kwargs, message", [({"sampler": "euler"}, "unknown sampler"), ({"steps": 0}, "at least one step"),
                                             ({"temperature": 0}, "temperature"), ({"guidance": -1}, "guidance")])
def test_bad_sampling_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig(**kwargs)


def test_sampling_an_untrained_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="training has not finished"):
        sample_images(tmp_path, [1], SampleConfig(device="cpu"))
