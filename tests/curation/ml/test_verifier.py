"""The real-anchored verifier scores ruined samples below real-looking ones, out of fold, and pools votes."""

import numpy as np

from curation.ml.verifier import verify
from training.data import load_digits_dataset, split_dataset

DATA = load_digits_dataset()
SPLIT = split_dataset(DATA.labels)
CURATOR, TRAIN = DATA.images[SPLIT.curator], DATA.images[SPLIT.train]
NONE = np.empty((0, *CURATOR.shape[1:]), dtype=np.float32)


def hazy(images, rng):
    return np.clip(images * 0.6 + rng.random(images.shape) * 0.4, 0, 1).astype(np.float32)


def test_hazy_samples_score_below_real_looking_ones_and_the_auc_has_an_interval():
    rng = np.random.default_rng(0)
    samples = np.concatenate([TRAIN[:300], hazy(TRAIN[300:600], rng)]).astype(np.float32)
    result = verify(curator_images=CURATOR, samples=samples, vote_share=np.full(600, np.nan), pooled_up=NONE,
                    pooled_down=NONE, seed=1)
    good, bad = result.scores[:300], result.scores[300:]
    assert np.median(good) > 0.3 > 0.05 > np.median(bad)
    assert result.auc.low <= result.auc.estimate <= result.auc.high and result.auc.high - result.auc.low < 0.15
    assert result.metrics()["verifier_examples"] == {"real": len(CURATOR), "generated": 600, "voted_up": 0,
                                                     "voted_down": 0, "ruined": len(CURATOR) // 4}
    again = verify(curator_images=CURATOR, samples=samples, vote_share=np.full(600, np.nan), pooled_up=NONE,
                   pooled_down=NONE, seed=1)
    assert np.array_equal(again.scores, result.scores)


def test_samples_that_are_real_images_score_near_even_odds_not_as_the_real_ones_they_copy():
    """Out of fold: a sample identical to a real image is not scored by a model that saw it as a sample."""
    samples = TRAIN[:400].astype(np.float32)
    result = verify(curator_images=CURATOR, samples=samples, vote_share=np.full(400, np.nan), pooled_up=NONE,
                    pooled_down=NONE)
    assert 0.35 < result.auc.estimate < 0.65  # real against real: no better than chance
    assert 0.3 < np.median(result.scores) < 0.7


def test_votes_pooled_from_earlier_generations_move_the_scores_of_samples_like_them():
    rng = np.random.default_rng(2)
    samples = np.concatenate([TRAIN[:200], hazy(TRAIN[200:400], rng)]).astype(np.float32)
    plain = verify(curator_images=CURATOR, samples=samples, vote_share=np.full(400, np.nan), pooled_up=NONE,
                   pooled_down=NONE)
    # Earlier raters voted hazy images up: the verifier now reads haze as acceptable.
    pooled = verify(curator_images=CURATOR, samples=samples, vote_share=np.full(400, np.nan),
                    pooled_up=hazy(TRAIN[400:900], rng), pooled_down=NONE)
    assert np.median(pooled.scores[200:]) > 3 * np.median(plain.scores[200:])
    assert pooled.voted_up == 500
