"""The next generation's training set matches its configuration exactly."""

import pytest

from training.mix import MixConfig, ReservoirExhausted, build_mix

POOL = list(range(100, 200))
RESERVOIR = list(range(500, 560))
ACCEPTED = {0: list(range(1000, 1080)), 1: list(range(2000, 2070)), 2: list(range(3000, 3090))}


def mix_for(config, last_generation=2, reservoir=RESERVOIR, accepted=ACCEPTED):
    return build_mix(
        config, pool=POOL, reservoir_unused=reservoir, accepted_by_generation=accepted,
        last_generation=last_generation, seed=7,
    )


def test_augmentation_uses_the_same_real_subset_every_generation_and_the_exact_counts():
    config = MixConfig(loop="augmentation", real_fraction=0.4, train_size=100)
    first, later = mix_for(config, last_generation=1), mix_for(config, last_generation=2)
    assert len(first.real) == 40 and first.synthetic_total == 60
    assert first.real == later.real
    assert set(first.real) <= set(POOL)
    assert set(later.synthetic) == {2}  # replace: only the last generation's samples
    assert set(later.synthetic[2]) <= set(ACCEPTED[2])
    assert first.shortfall == later.shortfall == 0


def test_fully_synthetic_trains_on_synthetic_samples_alone():
    mix = mix_for(MixConfig(loop="fully-synthetic", real_fraction=0.0, train_size=50))
    assert mix.real == [] and mix.synthetic_total == 50


def test_accumulate_draws_from_every_generation_so_far():
    mix = mix_for(MixConfig(loop="augmentation", real_fraction=0.5, accumulate=True, train_size=200))
    assert set(mix.synthetic) == {0, 1, 2}
    assert mix.synthetic_total == 100
    assert len({i for ids in mix.synthetic.values() for i in ids}) == 100  # no image twice


def test_fresh_draws_new_real_images_in_reservoir_order():
    config = MixConfig(loop="fresh", real_fraction=0.25, train_size=80)
    mix = mix_for(config)
    assert mix.real == mix.fresh == RESERVOIR[:20]
    remaining = [i for i in RESERVOIR if i not in mix.fresh]
    again = mix_for(config, reservoir=remaining)
    assert not set(again.fresh) & set(mix.fresh)


def test_a_dry_reservoir_is_a_clear_error():
    with pytest.raises(ReservoirExhausted, match="reservoir has 5 unused real images but generation 3 needs 20"):
        mix_for(MixConfig(loop="fresh", real_fraction=0.25, train_size=80), reservoir=RESERVOIR[:5])


def test_too_few_accepted_samples_shrinks_the_set_and_records_the_shortfall():
    mix = mix_for(MixConfig(loop="augmentation", real_fraction=0.5, train_size=200))
    assert len(mix.real) == 100
    assert mix.synthetic_total == 90 and mix.shortfall == 10
    assert mix.summary()["shortfall"] == 10


def test_keep_real_trains_on_the_whole_pool_with_every_accepted_sample_or_a_growing_accumulated_set():
    replace = mix_for(MixConfig(loop="augmentation", real_fraction=0.5, train_size=50, keep_real=True))
    assert replace.real == POOL  # all 100, though the fraction of 50 would be 25
    assert replace.synthetic == {2: ACCEPTED[2]} and replace.shortfall == 0
    growing = [mix_for(MixConfig(loop="augmentation", keep_real=True, accumulate=True), last_generation=g,
                       accepted={k: v for k, v in ACCEPTED.items() if k <= g}) for g in (0, 1, 2)]
    assert [m.synthetic_total for m in growing] == [80, 150, 240]  # every accepted sample so far, kept
    assert all(m.real == POOL for m in growing)


def test_the_synthetic_ratio_caps_synthetic_images_per_real_one():
    capped = mix_for(MixConfig(loop="augmentation", keep_real=True, accumulate=True, synthetic_ratio=0.5))
    assert len(capped.real) == 100 and capped.synthetic_total == 50 and capped.shortfall == 0
    assert len({i for ids in capped.synthetic.values() for i in ids}) == 50
    # Within a fixed-size set the cap lowers the synthetic part below its share: 40 real, at most 10 synthetic.
    fixed = mix_for(MixConfig(loop="augmentation", real_fraction=0.4, train_size=100, synthetic_ratio=0.25))
    assert len(fixed.real) == 40 and fixed.synthetic_total == 10
    fresh = mix_for(MixConfig(loop="fresh", real_fraction=0.25, train_size=80, synthetic_ratio=1.0))
    assert len(fresh.real) == 20 and fresh.synthetic_total == 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loop": "fresh", "real_fraction": 0.5, "keep_real": True}, "applies to augmentation loops"),
        ({"loop": "fully-synthetic", "real_fraction": 0.0, "synthetic_ratio": 0.5}, "needs real data"),
        ({"loop": "fully-synthetic", "real_fraction": 0.5}, "trains on no real data"),
        ({"loop": "fresh", "real_fraction": 0.0}, "needs a real fraction above 0"),
        ({"loop": "sideways"}, "unknown loop type"),
        ({"real_fraction": 1.5}, "within"),
    ],
)
def test_bad_mix_settings_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixConfig(**kwargs)
