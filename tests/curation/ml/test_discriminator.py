"""The discriminator learns the rule votes follow, and is honest when it cannot."""

import numpy as np
import pytest

from curation.ml.discriminator import fit_discriminator, image_features
from training.data import load_digits_dataset


@pytest.fixture(scope="module")
def features_and_labels():
    digits = load_digits_dataset()
    return image_features(digits.images), digits.labels


def test_it_learns_a_rule_the_votes_follow(features_and_labels):
    features, labels = features_and_labels
    votes_up = labels % 2 == 0  # raters who like even digits
    fit = fit_discriminator(features[:600], votes_up[:600], seed=0)
    assert fit.held_out_count == 150 and fit.train_count == 450
    assert fit.accuracy > 0.85 and fit.auc > 0.9
    unseen = fit.score(features[600:])
    assert ((unseen >= 0.5) == votes_up[600:]).mean() > 0.85


def test_it_learns_an_artefact_rule_from_image_statistics():
    digits = load_digits_dataset()
    rng = np.random.default_rng(0)
    noisy = np.clip(digits.images[:400] + rng.normal(0, 0.25, digits.images[:400].shape), 0, 1)
    images = np.concatenate([digits.images[400:800], noisy])
    votes_up = np.array([True] * 400 + [False] * 400)
    fit = fit_discriminator(image_features(images), votes_up, seed=0)
    assert fit.auc > 0.95


def test_unanimous_votes_give_a_constant_verdict_and_say_so(features_and_labels):
    features, _ = features_and_labels
    fit = fit_discriminator(features[:50], np.ones(50, dtype=bool))
    assert fit.accuracy is None and fit.auc is None
    assert "all 50 votes were up" in fit.note
    assert np.all(fit.score(features[:5]) == 1.0)


def test_no_votes_is_an_error(features_and_labels):
    features, _ = features_and_labels
    with pytest.raises(ValueError, match="at least one voted sample"):
        fit_discriminator(features[:0], np.array([], dtype=bool))
