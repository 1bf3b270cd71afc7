"""Curation policies accept what they should, and the diversity guard keeps the rare classes."""

import numpy as np
import pytest

from curation.ml.policy import CurationPolicy, curate, herding_order, quotas

NAN = np.nan


def decide(policy, votes, scores, groups=None, proportions=None, seed=0, features=None, **kwargs):
    groups = np.zeros(len(votes), dtype=int) if groups is None else groups
    return curate(
        CurationPolicy(policy=policy, **kwargs),
        features=features,
        vote_share=np.array(votes, dtype=float),
        discriminator_score=np.array(scores, dtype=float),
        groups=groups,
        group_proportions=proportions or {0: 1.0},
        seed=seed,
    )


def test_no_curation_accepts_everything():
    decision = decide("none", [NAN, 0.0, 1.0], [NAN, NAN, NAN])
    assert decision.accepted.all() and set(decision.reason) == {"all"}


def test_human_curation_accepts_only_samples_voted_up():
    decision = decide("human", [1.0, 0.34, NAN, 0.67], [0.9, 0.9, 0.9, 0.1])
    assert decision.accepted.tolist() == [True, False, False, True]


def test_discriminator_curation_ignores_votes():
    decision = decide("discriminator", [0.0, 1.0, NAN], [0.8, 0.2, 0.6])
    assert decision.accepted.tolist() == [True, False, True]
    assert decision.reason.tolist() == ["discriminator", "", "discriminator"]


def test_human_plus_discriminator_uses_votes_where_present_and_the_discriminator_elsewhere():
    decision = decide("human+discriminator", [1.0, 0.0, NAN, NAN, 1.0], [0.9, 0.9, 0.7, 0.3, 0.1])
    assert decision.accepted.tolist() == [True, False, True, False, True]
    assert decision.reason.tolist() == ["both", "", "discriminator", "", "human"]


def test_random_matched_accepts_as_many_as_the_matched_policy_at_random():
    rng = np.random.default_rng(7)  # (not the curation seed's stream, which would mirror the rated ones)
    votes = np.where(rng.random(200) < 0.3, rng.random(200), NAN)  # 30% rated, as human curation sees them
    scores = rng.random(200)
    human = decide("human", votes, scores)
    chosen = [decide("random-matched", votes, scores, seed=s) for s in range(3)]
    assert all(c.accepted.sum() == human.accepted.sum() for c in chosen)
    assert set(chosen[0].reason) == {"random", ""}
    # Drawn from every sample, rated or not, and differently for each seed (the curation seed).
    assert np.isnan(votes[chosen[0].accepted]).any()
    assert not np.array_equal(chosen[0].accepted, chosen[1].accepted)
    both = decide("human+discriminator", votes, scores)
    assert decide("random-matched", votes, scores, match="human+discriminator").accepted.sum() == both.accepted.sum()
    assert CurationPolicy(policy="random-matched", match="discriminator").needs_discriminator
    assert not CurationPolicy(policy="random-matched").needs_discriminator


def test_resampling_keeps_each_sample_with_its_capped_odds_over_the_cap():
    scores = np.repeat([0.2, 0.5, 0.8, 0.95, NAN], 4000)
    decision = decide("discriminator", np.full(len(scores), NAN), scores, acceptance="resample", resample_cap=4.0, seed=3)
    kept = decision.accepted.reshape(5, 4000).mean(axis=1)
    # odds 0.25, 1, 4, 19 -> kept 1/16, 1/4, 1, 1; unscored never.
    assert kept[:2] == pytest.approx([1 / 16, 1 / 4], abs=0.02) and kept[2:4].tolist() == [1.0, 1.0] and kept[4] == 0
    assert set(decision.reason[decision.accepted]) == {"discriminator"}
    again = decide("discriminator", np.full(len(scores), NAN), scores, acceptance="resample", resample_cap=4.0, seed=3)
    assert (again.accepted == decision.accepted).all()  # seeded
    # Votes count as scores too: a unanimous up-vote is always kept, a unanimous down-vote never.
    votes = decide("human+discriminator", [1.0, 0.0, NAN], [0.1, 0.9, 0.99], acceptance="resample")
    assert votes.accepted.tolist() == [True, False, True] and votes.reason.tolist() == ["human", "", "discriminator"]


def test_the_coverage_guard_keeps_a_spread_within_a_class_and_rescues_unrated_samples():
    # One class: 60 near-identical high scorers clustered at 0, 20 rated samples spread out scoring 0.6.
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 0.01, (60, 2)), rng.uniform(-5, 5, (20, 2)), rng.uniform(-5, 5, (20, 2))])
    votes = np.concatenate([np.full(60, 1.0), np.full(20, 0.67), np.full(20, NAN)])
    scores = np.concatenate([np.full(60, 0.9), np.full(20, 0.6), np.full(20, 0.4)])
    best = decide("human", votes, scores, diversity_guard=True)
    spread = decide("human", votes, scores, diversity_guard=True, guard_mode="coverage", features=features)
    assert best.accepted.sum() == spread.accepted.sum() == 80  # the same count, chosen differently
    def reach(decision):  # the farthest any sample is from the accepted set: how well it is covered
        kept = features[decision.accepted]
        return np.linalg.norm(features[:, None] - kept[None], axis=2).min(axis=1).max()
    assert reach(spread) <= reach(best)
    # Fewer passing than the quota: unrated samples the discriminator scores above the floor fill it.
    few = decide("human", np.concatenate([np.full(5, 1.0), np.full(95, NAN)]), np.full(100, 0.3),
                 groups=np.array([0] * 50 + [1] * 50), proportions={0: 0.4, 1: 0.6}, diversity_guard=True,
                 guard_mode="coverage", features=features)
    assert few.accepted.sum() == 5 and set(few.reason[few.accepted]) <= {"human", "guard"}
    assert (few.reason == "guard").sum() == 3  # class 1's quota of 3, all unrated, rescued
    with pytest.raises(ValueError, match="needs the samples' features"):
        decide("human", votes, scores, diversity_guard=True, guard_mode="coverage")


def test_quotas_share_a_total_exactly_in_proportion():
    shares = quotas(10, {0: 0.5, 1: 0.3, 2: 0.2})
    assert shares == {0: 5, 1: 3, 2: 2}
    assert sum(quotas(7, {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}).values()) == 7


def test_the_guard_keeps_a_rare_class_that_confident_curation_would_starve():
    # 90 typical samples (class 0) score high; 10 rare ones (class 1) score just under the threshold.
    groups = np.array([0] * 90 + [1] * 10)
    scores = np.concatenate([np.linspace(0.6, 1.0, 90), np.linspace(0.3, 0.45, 10)])
    votes = np.full(100, NAN)
    proportions = {0: 0.8, 1: 0.2}
    plain = decide("discriminator", votes, scores, groups, proportions)
    assert plain.accepted[groups == 1].sum() == 0
    guarded = decide("discriminator", votes, scores, groups, proportions, diversity_guard=True)
    # Quotas of the 90 the policy accepted: 72 for class 0, 18 for class 1. Class 1 has only 10
    # samples, all above the floor, so all are rescued and 8 places stay empty rather than going
    # back to the class that already has its share.
    assert guarded.accepted[groups == 1].sum() == 10
    assert set(guarded.reason[groups == 1]) == {"guard"}
    assert guarded.accepted[groups == 0].sum() == 72
    assert guarded.accepted.sum() == 82
    # The typical class keeps its best: the 72 accepted are its 72 highest scores.
    kept = np.flatnonzero(guarded.accepted & (groups == 0))
    assert scores[kept].min() >= np.sort(scores[groups == 0])[-72]


def test_the_guard_never_accepts_below_its_floor():
    groups = np.array([0] * 8 + [1] * 2)
    scores = np.array([0.9] * 8 + [0.1, 0.1])
    guarded = decide("discriminator", np.full(10, NAN), scores, groups, {0: 0.5, 1: 0.5}, diversity_guard=True)
    assert not guarded.accepted[groups == 1].any()


def _two_modes(rng, count, share_b, outliers=0):
    """Points from two modes (A at the origin, B at (6, 6)), a share from B, and far outliers."""
    b = rng.random(count) < share_b
    points = rng.normal(size=(count, 2)) * 0.5 + np.where(b[:, None], 6.0, 0.0)
    if outliers:
        points[:outliers] = rng.normal(size=(outliers, 2)) + 40.0
    return points, b


def test_match_keeps_the_samples_that_stand_for_the_real_data():
    rng = np.random.default_rng(3)
    real, _ = _two_modes(rng, 300, 0.5)  # the curator split: both modes alike
    samples, in_b = _two_modes(rng, 400, 0.15, outliers=20)  # the model: B under-produced, some artefacts

    def match(keep):
        return curate(CurationPolicy(policy="match", keep=keep), vote_share=np.full(400, NAN),
                      discriminator_score=np.full(400, NAN), groups=np.zeros(400, int), group_proportions={0: 1.0},
                      embedding=samples, real_embedding=real)

    decision = match(0.5)
    kept, modelled = decision.accepted, np.arange(400) >= 20
    assert kept.sum() == 200 and set(decision.reason[kept]) == {"match"}
    # What the model under-produces is kept more often, what it over-produces is thinned: the kept
    # set's share of B moves toward the real data's half.
    assert kept[in_b & modelled].mean() > 0.75 and kept[~in_b & modelled].mean() < 0.5
    assert in_b[kept].mean() > 1.4 * in_b[modelled].mean()
    # The score ranks by the order of choice: every kept sample above every other.
    assert decision.score[kept].min() > decision.score[~kept].max()
    # The artefacts, far from every real image, come after the real data's modes have their share.
    assert not match(0.2).accepted[:20].any()


def test_herding_orders_every_sample_and_random_matched_copies_its_count():
    rng = np.random.default_rng(4)
    real, _ = _two_modes(rng, 50, 0.5)
    samples, _ = _two_modes(rng, 60, 0.5)
    order = herding_order(samples, real)
    assert sorted(order.tolist()) == list(range(60))
    matched = curate(CurationPolicy(policy="random-matched", match="match", keep=0.25), vote_share=np.full(60, NAN),
                     discriminator_score=np.full(60, NAN), groups=np.zeros(60, int), group_proportions={0: 1.0},
                     embedding=samples, real_embedding=real)
    assert matched.accepted.sum() == 15 and set(matched.reason[matched.accepted]) == {"random"}
    # Without the guard the count is the share alone: no embeddings needed, no herding run for it.
    alone = curate(CurationPolicy(policy="random-matched", match="match", keep=0.25), vote_share=np.full(60, NAN),
                   discriminator_score=np.full(60, NAN), groups=np.zeros(60, int), group_proportions={0: 1.0})
    assert np.array_equal(alone.accepted, matched.accepted)
    assert not CurationPolicy(policy="random-matched", match="match").needs_embeddings
    assert CurationPolicy(policy="random-matched", match="match", diversity_guard=True).needs_embeddings
    assert CurationPolicy(policy="match").needs_embeddings and not CurationPolicy(policy="none").needs_embeddings
    assert CurationPolicy(policy="random-matched", match="match").deciding == "match"
    assert not CurationPolicy(policy="match").needs_votes and not CurationPolicy(policy="match").needs_discriminator
    with pytest.raises(ValueError, match="needs the samples' and the curator split's embeddings"):
        decide("match", [NAN] * 3, [NAN] * 3)


@pytest.mark.parametrize("kwargs, message", [({"policy": "vibes"}, "unknown curation policy"),
                                             ({"keep": 0}, "share the match policy keeps"),
                                             ({"keep": 1.5}, "share the match policy keeps"),
                                             ({"threshold": 2}, "threshold"), ({"guard_floor": 0.9}, "guard floor"),
                                             ({"match": "none"}, "random-matched copies one of"),
                                             ({"acceptance": "vibes"}, "unknown acceptance"),
                                             ({"resample_cap": 0.5}, "resampling cap must be at least 1"),
                                             ({"guard_mode": "vibes"}, "unknown guard mode")])
def test_bad_curation_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CurationPolicy(**kwargs)
