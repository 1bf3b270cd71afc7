"""Agreement scores and Dawid-Skene on votes whose truth is known."""

import numpy as np
import pytest

from curation.ml.agreement import dawid_skene, gwet_ac1, krippendorff_alpha, majority


def votes_from(matrix):
    """Rows are items, columns raters; None where a rater did not vote."""
    items, raters, votes = [], [], []
    for i, row in enumerate(matrix):
        for r, vote in enumerate(row):
            if vote is not None:
                items.append(i), raters.append(r), votes.append(vote)
    return np.array(items), np.array(raters), np.array(votes)


def test_perfect_agreement_scores_one():
    items, raters, votes = votes_from([[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert krippendorff_alpha(items, raters, votes) == pytest.approx(1.0)
    assert gwet_ac1(items, votes) == pytest.approx(1.0)


def test_ac1_stays_high_where_kappa_style_alpha_collapses_on_nearly_unanimous_votes():
    # 19 items all up from 3 raters, one item with a single dissent: alpha's paradox.
    matrix = [[1, 1, 1]] * 19 + [[1, 1, 0]]
    items, raters, votes = votes_from(matrix)
    alpha = krippendorff_alpha(items, raters, votes)
    ac1 = gwet_ac1(items, votes)
    assert alpha < 0.1
    assert ac1 > 0.95


def test_ac1_matches_a_hand_computed_value():
    # Two raters, four items: agree on three (1,1), (0,0), (1,1); disagree on one.
    items, raters, votes = votes_from([[1, 1], [0, 0], [1, 1], [1, 0]])
    # p_a = 3/4; pi_up = mean(1, 0, 1, 0.5) = 0.625; p_e = 2 * 0.625 * 0.375 = 0.46875
    assert gwet_ac1(items, votes) == pytest.approx((0.75 - 0.46875) / (1 - 0.46875))


def test_random_votes_have_agreement_near_zero():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 2, size=(2000, 3)).tolist()
    items, raters, votes = votes_from(matrix)
    assert abs(krippendorff_alpha(items, raters, votes)) < 0.05
    assert abs(gwet_ac1(items, votes)) < 0.05


def test_dawid_skene_trusts_good_raters_over_a_majority_of_careless_ones():
    rng = np.random.default_rng(1)
    truth = rng.random(2000) < 0.6
    # Raters 0 and 1 are careful; raters 2-4 are right only 60% of the time.
    accuracies = [0.95, 0.9, 0.6, 0.6, 0.6]
    matrix = [[int(t) if rng.random() < a else int(not t) for a in accuracies] for t in truth]
    items, raters, votes = votes_from(matrix)
    result = dawid_skene(items, raters, votes, item_count=2000, rater_count=5)
    ds_accuracy = ((result.posterior_up >= 0.5) == truth).mean()
    majority_accuracy = ((majority(items, votes, 2000) >= 0.5) == truth).mean()
    assert ds_accuracy > majority_accuracy + 0.03 and ds_accuracy > 0.92
    skill = (result.sensitivity + result.specificity) / 2
    assert skill[0] > 0.85 and skill[1] > 0.85
    assert skill[2:].max() < 0.7


def test_unvoted_items_have_no_aggregate():
    items, raters, votes = votes_from([[1, 1], [None, None]])
    assert np.isnan(majority(items, votes, 2)[1])
    assert np.isnan(dawid_skene(items, raters, votes, 2, 2).posterior_up[1])
