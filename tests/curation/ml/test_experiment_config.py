"""Every setting has bounds, and any value of any JSON type either builds a configuration within them
or is refused with a ConfigError naming the setting, the value and what it accepts."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.ml.experiment_config import (
    BOUNDS,
    NESTED,
    PRESETS,
    ConfigError,
    ExperimentConfig,
    preset,
)
from curation.ml.raters import SimulatedRaterConfig


def leaf_settings() -> set[str]:
    names = set()
    for top in dataclasses.fields(ExperimentConfig):
        if top.name in NESTED:
            names |= {f"{top.name}.{inner.name}" for inner in dataclasses.fields(NESTED[top.name])}
        else:
            names.add(top.name)
    return names | {f"rating.panel.{f.name}" for f in dataclasses.fields(SimulatedRaterConfig)}


def test_every_setting_has_a_bound_and_every_bound_a_setting():
    assert set(BOUNDS) == leaf_settings()


def test_every_numeric_setting_has_a_minimum_and_a_maximum():
    for name, bound in BOUNDS.items():
        if bound.kind in ("int", "number", "levels"):
            assert bound.low is not None and bound.high is not None and bound.low < bound.high, name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_presets_lie_within_the_bounds(name):
    config = preset(name)
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("changes, setting, words", [
    # The values the issue found: memory exhausted, a claim that overflows a date, 500s from the API.
    ({"samples_per_generation": 10**9}, "samples_per_generation", "from 1 to 100,000, not 1000000000"),
    ({"rating.claim_minutes": 10**12}, "rating.claim_minutes", "from 1 to 1,440, not 1000000000000"),
    ({"dataset": 5}, "dataset", "must be a name of 1 to 100 characters, not 5"),
    ({"seed": -1}, "seed", "from 0 to 4,294,967,295, not -1"),
    ({"seed": 2**32}, "seed", "not 4294967296"),
    ({"seed": True}, "seed", "a whole number from 0 to 4,294,967,295, not true"),
    ({"seed": 1.5}, "seed", "not 1.5"),
    ({"seed": 10**5000}, "seed", "not a whole number of about 5001 digits"),
    ({"generations": 101}, "generations", "from 1 to 100"),
    ({"train.learning_rate": 0}, "train.learning_rate", "a number above 0 and at most 1, not 0"),
    ({"train.learning_rate": 1.5}, "train.learning_rate", "not 1.5"),
    ({"mix.real_fraction": float("nan")}, "mix.real_fraction", "from 0 to 1, not nan"),
    ({"mix.real_fraction": "half"}, "mix.real_fraction", 'not "half" (text)'),
    ({"rating.votes_per_sample": 51}, "rating.votes_per_sample", "from 1 to 50"),
    ({"train.batch_size": 0}, "train.batch_size", "from 1 to 4,096"),
    ({"mix.loop": "sideways"}, "mix.loop", 'one of "fully-synthetic", "augmentation", "fresh", not "sideways" (text)'),
    ({"auto_advance": "yes"}, "auto_advance", "true or false"),
    ({"continue_learning_rate": -1}, "continue_learning_rate", "or null, not -1"),
    ({"train.device": "tpu"}, "train.device", '"cuda:N"'),
    ({"mix": 5}, "mix", "mix must be a mapping of settings, not 5"),
    ({"rating.panel": []}, "rating.panel", "a list of 1 to 50 raters"),
    ({"rating.panel": [{"threshold": 0.5, "noise": 0.9}]}, "rating.panel[0].noise", "from 0 to 0.5, not 0.9"),
    ({"model.block_out_channels": [16, 36]}, "model.block_out_channels", "divide by model.norm_num_groups (8)"),
    ({"model.block_out_channels": [8, 16, 32, 64, 128]}, "model.block_out_channels", "a list of 1 to 4 whole numbers"),
    ({"sample.steps": 1000, "model.num_train_timesteps": 100}, "sample.steps", "cannot exceed"),
])
def test_a_bad_value_is_refused_naming_the_setting_the_value_and_the_range(changes, setting, words):
    with pytest.raises(ConfigError) as refused:
        preset("digits").replace(**changes)
    assert refused.value.setting == setting
    assert setting in str(refused.value) and words in str(refused.value)


@pytest.mark.parametrize("name", sorted(n for n, b in BOUNDS.items() if b.kind in ("int", "number")))
def test_each_numeric_setting_refuses_values_just_outside_its_range(name):
    bound = BOUNDS[name]
    step = 1 if bound.kind == "int" else 1e-9
    outside = [bound.low if bound.low_open else bound.low - step, bound.high if bound.high_open else bound.high + step]
    dotted = name if not name.startswith("rating.panel.") else "rating.panel"
    for value in outside:
        change = value if dotted == name else [{name.rsplit(".", 1)[1]: value}]
        with pytest.raises(ConfigError) as refused:
            preset("digits").replace(**{dotted: change})
        assert bound.describe() in str(refused.value), (name, value)


def test_unknown_settings_are_refused():
    for dotted in ("colour", "mix.colour", "mix.loop.x", "rating.panel.threshold", ""):
        with pytest.raises(ConfigError, match="unknown setting"):
            preset("digits").replace(**{dotted: 1})
    with pytest.raises(ConfigError, match="unknown setting 'rating.panel\\[0\\].mood'"):
        preset("digits").replace(**{"rating.panel": [{"mood": 1}]})


# --- any JSON, anywhere --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def near_the_bounds(name: str):
    """Values a setting accepts or just misses, so that valid configurations are drawn too."""
    bound = BOUNDS.get(name)
    if bound is None or bound.kind not in ("int", "number", "choice", "bool", "device"):
        return json_values
    if bound.kind in ("choice", "device"):
        return st.sampled_from(bound.choices or ("auto", "cpu", "cuda:1", "cuda:123"))
    if bound.kind == "bool":
        return st.booleans()
    if bound.kind == "int":
        return st.integers(min_value=int(bound.low) - 2, max_value=int(min(bound.high, bound.low + 10**6)) + 2)
    return st.floats(min_value=bound.low - 1, max_value=bound.high + 1)


setting_names = st.sampled_from(sorted(leaf_settings() - {n for n in BOUNDS if n.startswith("rating.panel.")}) +
                                ["rating.panel", "mix", "rating", "model", "no.such", "train.no_such"])
changes = st.dictionaries(setting_names, st.none(), min_size=1, max_size=6).flatmap(
    lambda names: st.fixed_dictionaries({n: json_values | near_the_bounds(n) for n in names})
)


def assert_within_bounds(config: ExperimentConfig) -> None:
    data = config.to_dict()
    for name, bound in BOUNDS.items():
        if name.startswith("rating.panel."):
            for rater in data["rating"]["panel"]:
                bound.check(name, rater[name.rsplit(".", 1)[1]])
            continue
        value = data
        for part in name.split("."):
            value = value[part]
        bound.check(name, value)
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=300, deadline=None)
@given(changes)
def test_any_json_for_any_settings_builds_a_bounded_configuration_or_is_refused_with_a_message(changes):
    base = preset("digits-tiny")
    try:
        config = base.replace(**changes)
    except ConfigError as error:
        assert str(error)
        return
    assert_within_bounds(config)
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@settings(max_examples=150, deadline=None)
@given(json_values | st.dictionaries(st.sampled_from(sorted(NESTED) + ["seed", "dataset"]), json_values))
def test_any_json_as_a_whole_configuration_is_built_or_refused(data):
    try:
        config = ExperimentConfig.from_dict(data)
    except ConfigError as error:
        assert str(error)
        return
    assert_within_bounds(config)
