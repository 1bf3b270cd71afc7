"""The train/curator/test split: fixed by its seed, stratified by label, disjoint and complete."""

import numpy as np
import pytest

from training.data import NO_LABEL, split_dataset

LABELS = np.repeat(np.arange(10), 180)  # as digits: ten classes of about 180


def test_the_split_is_disjoint_covers_every_image_and_is_sorted():
    split = split_dataset(LABELS)
    parts = (split.train, split.curator, split.test)
    assert sum(len(p) for p in parts) == len(LABELS)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    assert all(np.array_equal(p, np.sort(p)) for p in parts)


def test_each_label_is_split_in_the_same_proportions():
    split = split_dataset(LABELS, test_fraction=0.3, curator_fraction=0.15)
    for label in range(10):
        assert np.sum(LABELS[split.test] == label) == 54
        assert np.sum(LABELS[split.curator] == label) == 27
        assert np.sum(LABELS[split.train] == label) == 99


def test_images_without_a_label_form_a_stratum_of_their_own():
    labels = np.concatenate([np.zeros(20, int), np.full(80, NO_LABEL)])
    split = split_dataset(labels, test_fraction=0.25, curator_fraction=0.25)
    assert np.sum(labels[split.test] == NO_LABEL) == 20 and np.sum(labels[split.test] == 0) == 5
    assert np.sum(labels[split.curator] == NO_LABEL) == 20


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    first, again, other = split_dataset(LABELS, seed=3), split_dataset(LABELS, seed=3), split_dataset(LABELS, seed=4)
    assert all(np.array_equal(getattr(first, p), getattr(again, p)) for p in ("train", "curator", "test"))
    assert not np.array_equal(first.test, other.test)


@pytest.mark.parametrize("fractions, words", [
    ({"test_fraction": 0.0}, "test_fraction must be above 0 and below 1, not 0.0"),
    ({"curator_fraction": 1.2}, "curator_fraction must be above 0 and below 1, not 1.2"),
    ({"test_fraction": 0.6, "curator_fraction": 0.4}, "leave nothing to train on"),
])
def test_fractions_out_of_range_are_refused(fractions, words):
    with pytest.raises(ValueError, match=words):
        split_dataset(LABELS, **fractions)


def test_a_dataset_too_small_for_a_part_is_refused_naming_the_part():
    with pytest.raises(ValueError, match="leaves no curator images"):
        split_dataset(np.arange(3))  # three singleton labels: each image goes to train
