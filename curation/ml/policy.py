"""Curation: which samples are accepted into the next generation's training data, and why.

Policies: `none` accepts everything (the MAD baseline); `human` accepts what the votes accept;
`discriminator` accepts what the vote-trained discriminator scores at or above the threshold;
`human+discriminator` takes the votes where a sample has them and the discriminator elsewhere;
`random-matched` accepts as many samples as the policy named by `match` would, drawn uniformly at
random: the control that tells what a curating policy's choice adds beyond the size of the training
set it leaves (human curation can only accept the rated samples, so it trains on fewer).

A curating policy keeps what its score passes (`acceptance` "threshold"), or resamples: keeps each
sample with a probability that grows with its score's odds, capped (`acceptance` "resample").

The diversity guard, which any policy can switch on, keeps curation from starving the rare modes:
keeping only confident samples trades diversity for quality, and whole classes vanish. With the
guard, the number the policy would accept is shared out among groups (predicted class or cluster) in
the real data's proportions; each group takes its best-scored samples that pass the threshold, and
where a group falls short, its best remaining samples down to `guard_floor` fill the gap. A quota
that still cannot be filled stays empty: the guard keeps the proportions rather than handing the
places back to the groups that already have their share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

CURATING = ("human", "discriminator", "human+discriminator")
POLICIES = ("none", *CURATING, "random-matched")
REASONS = ("all", "human", "discriminator", "both", "guard", "random")
ACCEPTANCE = ("threshold", "resample")
DISCRIMINATORS = ("votes", "verifier")
GUARD_MODES = ("classes", "coverage")


@dataclass(frozen=True)
class CurationPolicy:
    policy: str = "human+discriminator"
    threshold: float = 0.5
    diversity_guard: bool = False
    guard_floor: float = 0.25
    # "classes": each class takes its best-scored samples; "coverage": each class takes samples spread
    # over its variety (farthest-point in image space), and may rescue unrated samples the
    # discriminator scores at or above the floor.
    guard_mode: str = "classes"
    # The policy whose number of acceptances `random-matched` copies (with its guard setting).
    match: str = "human"
    # How a score becomes a decision: "threshold" keeps what scores at or above `threshold`;
    # "resample" keeps each sample with probability min(c, s/(1-s))/c, c = `resample_cap`.
    acceptance: str = "threshold"
    resample_cap: float = 4.0
    # What scores the samples for the discriminator policies: "votes", a discriminator fitted on this
    # generation's votes; "verifier", the real-anchored verifier (curation.ml.verifier), which needs no votes.
    discriminator: str = "votes"

    def __post_init__(self) -> None:
        if self.acceptance not in ACCEPTANCE:
            raise ValueError(f"unknown acceptance {self.acceptance!r}; choose one of {', '.join(ACCEPTANCE)}")
        if self.guard_mode not in GUARD_MODES:
            raise ValueError(f"unknown guard mode {self.guard_mode!r}; choose one of {', '.join(GUARD_MODES)}")
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"unknown discriminator {self.discriminator!r}; choose one of {', '.join(DISCRIMINATORS)}")
        if not self.resample_cap >= 1.0:
            raise ValueError(f"the resampling cap must be at least 1 (odds at which a sample is always kept), "
                             f"not {self.resample_cap}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown curation policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.match not in CURATING:
            raise ValueError(f"random-matched copies one of {', '.join(CURATING)}, not {self.match!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the acceptance threshold must be within [0, 1], not {self.threshold}")
        if not 0.0 <= self.guard_floor <= self.threshold:
            raise ValueError("the guard floor must lie between 0 and the acceptance threshold")

    @property
    def needs_votes(self) -> bool:
        """Whether this policy cannot decide without rated samples (the verifier needs none)."""
        return self.policy in ("human", "human+discriminator") or (
            self.policy == "discriminator" and self.discriminator == "votes")

    @property
    def needs_discriminator(self) -> bool:
        policy = self.match if self.policy == "random-matched" else self.policy
        return policy in ("discriminator", "human+discriminator")


@dataclass(frozen=True)
class Decision:
    accepted: np.ndarray  # bool (N,)
    reason: np.ndarray  # str (N,): one of REASONS where accepted, "" where not
    score: np.ndarray  # float (N,): the score the decision ranked by; NaN where there was none


def curate(
    config: CurationPolicy,
    *,
    vote_share: np.ndarray,
    discriminator_score: np.ndarray,
    groups: np.ndarray,
    group_proportions: dict,
    seed: int = 0,
    features: Optional[np.ndarray] = None,
) -> Decision:
    """Decide every sample. `vote_share` is the up-vote fraction (NaN where a sample lacks its votes);
    `discriminator_score` is P(accept) (NaN where there is no discriminator); `features` (N, D), what
    the coverage guard spreads its choice over."""
    count = len(vote_share)
    voted = ~np.isnan(vote_share)
    if config.policy == "random-matched":
        matched = curate(replace(config, policy=config.match), vote_share=vote_share,
                         discriminator_score=discriminator_score, groups=groups, group_proportions=group_proportions,
                         seed=seed, features=features)
        score = np.random.default_rng(seed).random(count)
        accepted = np.zeros(count, dtype=bool)
        accepted[np.argsort(score, kind="stable")[: int(matched.accepted.sum())]] = True
        return Decision(accepted=accepted, reason=np.where(accepted, "random", "").astype(object), score=score)
    if config.policy == "none":
        # No signal: rank at random so the guard (if on) draws each group's quota uniformly.
        score = np.random.default_rng(seed).random(count)
        accepted = np.ones(count, dtype=bool)
        reason = np.full(count, "all", dtype=object)
    else:
        if config.policy == "human":
            score = np.where(voted, vote_share, np.nan)
            source = np.full(count, "human", dtype=object)
        elif config.policy == "discriminator":
            score = discriminator_score.copy()
            source = np.full(count, "discriminator", dtype=object)
        else:
            score = np.where(voted, vote_share, discriminator_score)
            agrees = voted & (discriminator_score >= config.threshold)
            source = np.where(voted, np.where(agrees, "both", "human"), "discriminator").astype(object)
        accepted = _accept(config, score, seed)
        reason = np.where(accepted, source, "").astype(object)

    if config.diversity_guard and config.guard_mode == "coverage":
        if features is None:
            raise ValueError("the coverage guard needs the samples' features")
        rescue_score = np.where(np.isnan(score), discriminator_score, score)
        accepted, reason = _apply_guard(config, rescue_score, accepted, reason, groups, group_proportions,
                                        np.asarray(features, dtype=np.float64))
    elif config.diversity_guard:
        accepted, reason = _apply_guard(config, score, accepted, reason, groups, group_proportions)
    return Decision(accepted=accepted, reason=reason, score=score)


def _accept(config: CurationPolicy, score: np.ndarray, seed: int) -> np.ndarray:
    """Threshold: every scored sample at or above the threshold. Resample: each scored sample with
    probability min(c, s / (1 - s)) / c, s its score read as the probability of being good and c the
    cap (discriminator rejection sampling, Azadi et al. 2019): a sample scored 0.5 is kept 1 time in c,
    so regions the model over-produces are thinned rather than cut off, and those it under-produces,
    which score high, are kept."""
    scored = ~np.isnan(score)
    if config.acceptance == "threshold":
        return scored & (score >= config.threshold)
    s = np.where(scored, score, 0.0)
    with np.errstate(divide="ignore"):
        odds = np.where(s >= 1.0, np.inf, s / np.maximum(1.0 - s, 1e-12))
    keep = np.minimum(config.resample_cap, odds) / config.resample_cap
    return scored & (np.random.default_rng((seed, 1)).random(len(score)) < keep)


def quotas(total: int, proportions: dict) -> dict:
    """Share `total` among groups in the given proportions, largest remainders first, summing exactly."""
    keys = list(proportions)
    weights = np.array([proportions[k] for k in keys], dtype=float)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(keys), 1.0 / len(keys))
    exact = weights * total
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return dict(zip(keys, base.tolist()))


def _apply_guard(config, score, accepted, reason, groups, group_proportions, features=None):
    """Share the accepted count among groups in the real data's proportions. Within a group, the
    "classes" guard keeps its best-scored accepted samples and fills a short quota with its
    best-scored others at or above the floor; the "coverage" guard chooses both by farthest-point in
    `features` (the highest-scored first, then each the farthest from those chosen), a spread over the
    group's variety rather than its most typical samples."""
    target = int(accepted.sum())
    new_accepted = np.zeros_like(accepted)
    new_reason = np.full(len(accepted), "", dtype=object)
    ranked_score = np.where(np.isnan(score), -np.inf, score)

    def pick(candidates, chosen, count) -> list[int]:
        if features is not None:
            return _farthest_points(features, candidates, chosen, count, ranked_score)
        return candidates[np.argsort(-ranked_score[candidates], kind="stable")][:max(0, count)].tolist()

    for group, quota in quotas(target, group_proportions).items():
        members = np.flatnonzero(groups == group)
        kept = pick(members[accepted[members]], [], quota)
        rescued = pick(members[~accepted[members] & (ranked_score[members] >= config.guard_floor)], kept, quota - len(kept))
        new_accepted[kept] = True
        new_reason[kept] = reason[kept]
        new_accepted[rescued] = True
        new_reason[rescued] = "guard"
    return new_accepted, new_reason


def _farthest_points(features, candidates, chosen, count, ranked_score) -> list[int]:
    """Up to `count` of `candidates`, each the farthest from those already chosen (starting from the
    best-scored candidate when nothing is chosen yet)."""
    candidates = np.asarray(candidates, dtype=int)
    if count <= 0 or len(candidates) == 0:
        return []
    if count >= len(candidates):
        return candidates.tolist()
    picked: list[int] = []
    if chosen:
        nearest = np.min(np.linalg.norm(features[candidates, None, :] - features[None, chosen, :], axis=2), axis=1)
    else:
        first = int(np.argmax(ranked_score[candidates]))
        picked.append(int(candidates[first]))
        nearest = np.linalg.norm(features[candidates] - features[candidates[first]], axis=1)
        nearest[first] = -np.inf
    while len(picked) < count:
        best = int(np.argmax(nearest))
        picked.append(int(candidates[best]))
        nearest = np.minimum(nearest, np.linalg.norm(features[candidates] - features[candidates[best]], axis=1))
        nearest[best] = -np.inf
    return picked
