"""Curation: which samples are accepted into the next generation's training data, and why.

Policies: `none` accepts everything (the MAD baseline); `human` accepts what the votes accept;
`discriminator` accepts what the vote-trained discriminator scores at or above the threshold;
`human+discriminator` takes the votes where a sample has them and the discriminator elsewhere;
`random-matched` accepts as many samples as the policy named by `match` would, drawn uniformly at
random: the control that tells what a curating policy's choice adds beyond the size of the training
set it leaves (human curation can only accept the rated samples, so it trains on fewer).

`match` needs neither votes nor a discriminator: it keeps the share `keep` of the samples that together
best stand for the real data, chosen one at a time by kernel herding so that the kept set's kernel
mean tracks that of the curator split (real images no model trains on and no metric compares with),
in the metrics' feature space: what the model over-produces is left out, what it under-produces kept.

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

CURATING = ("human", "discriminator", "human+discriminator", "match")
POLICIES = ("none", *CURATING, "random-matched")
REASONS = ("all", "human", "discriminator", "both", "guard", "random", "match")
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
    # The share of the samples the `match` policy keeps.
    keep: float = 0.8

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
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"the share the match policy keeps must lie in (0, 1], not {self.keep}")

    @property
    def needs_votes(self) -> bool:
        """Whether this policy cannot decide without rated samples (the verifier needs none)."""
        return self.policy in ("human", "human+discriminator") or (
            self.policy == "discriminator" and self.discriminator == "votes")

    @property
    def deciding(self) -> str:
        """The policy whose decision counts: the one `random-matched` copies the count of, or this one."""
        return self.match if self.policy == "random-matched" else self.policy

    @property
    def needs_embeddings(self) -> bool:
        """Whether deciding needs the samples' and the curator split's embeddings: the match policy's
        choice, and a random filter's copy of it with the guard on (whose count depends on the choice)."""
        return self.policy == "match" or (self.policy == "random-matched" and self.match == "match"
                                          and self.diversity_guard)

    @property
    def needs_discriminator(self) -> bool:
        return self.deciding in ("discriminator", "human+discriminator")


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
    embedding: Optional[np.ndarray] = None,
    real_embedding: Optional[np.ndarray] = None,
) -> Decision:
    """Decide every sample. `vote_share` is the up-vote fraction (NaN where a sample lacks its votes);
    `discriminator_score` is P(accept) (NaN where there is no discriminator); `features` (N, D), what
    the coverage guard spreads its choice over; `embedding` (N, E) and `real_embedding` (M, E), the
    samples and the curator split in the metrics' feature space, what the match policy compares."""
    count = len(vote_share)
    voted = ~np.isnan(vote_share)
    if config.policy == "random-matched":
        if config.match == "match" and not config.diversity_guard:
            matched_count = _match_count(config, count)  # whatever it chooses, `match` keeps this many
        else:
            matched_count = int(curate(
                replace(config, policy=config.match), vote_share=vote_share, discriminator_score=discriminator_score,
                groups=groups, group_proportions=group_proportions, seed=seed, features=features, embedding=embedding,
                real_embedding=real_embedding).accepted.sum())
        score = np.random.default_rng(seed).random(count)
        accepted = np.zeros(count, dtype=bool)
        accepted[np.argsort(score, kind="stable")[:matched_count]] = True
        return Decision(accepted=accepted, reason=np.where(accepted, "random", "").astype(object), score=score)
    if config.policy == "none":
        # No signal: rank at random so the guard (if on) draws each group's quota uniformly.
        score = np.random.default_rng(seed).random(count)
        accepted = np.ones(count, dtype=bool)
        reason = np.full(count, "all", dtype=object)
    elif config.policy == "match":
        if embedding is None or real_embedding is None:
            raise ValueError("the match policy needs the samples' and the curator split's embeddings")
        order = herding_order(np.asarray(embedding, dtype=np.float64), np.asarray(real_embedding, dtype=np.float64))
        score = np.empty(count)
        score[order] = 1.0 - np.arange(count) / count  # the earlier chosen, the higher
        accepted = np.zeros(count, dtype=bool)
        accepted[order[:_match_count(config, count)]] = True
        reason = np.where(accepted, "match", "").astype(object)
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


def _match_count(config: CurationPolicy, count: int) -> int:
    return int(round(config.keep * count))


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


def herding_order(embedding: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Every row of `embedding` in the order kernel herding chooses them (Chen et al. 2010): each next
    the one that brings the chosen set's kernel mean embedding nearest the real set's, i.e. the row
    maximising mean_r k(x, r) - sum_{chosen c} k(x, c) / (t + 1). The RBF kernel's width is the real
    set's median nearest-neighbour (squared) distance, so the choice follows the real data's modes and
    spread, not only its centre. Once every mode holds its share, a row far from all of them (gain 0)
    goes before one where the chosen set is already dense (gain below 0): the order spreads out rather
    than piling onto the modes. Memory stays linear in the rows (one kernel column per step)."""
    real_sq = np.einsum("ij,ij->i", real, real)
    real_distances = np.maximum(real_sq[:, None] + real_sq[None, :] - 2.0 * real @ real.T, 0.0)
    np.fill_diagonal(real_distances, np.inf)
    width = float(np.median(real_distances.min(axis=1))) or 1.0
    rows_sq = np.einsum("ij,ij->i", embedding, embedding)

    def kernel(against: np.ndarray, against_sq: np.ndarray) -> np.ndarray:
        return np.exp(-np.maximum(rows_sq[:, None] + against_sq[None, :] - 2.0 * embedding @ against.T, 0.0) / width)

    target = kernel(real, real_sq).mean(axis=1)
    pulled = np.zeros(len(embedding))
    free = np.ones(len(embedding), dtype=bool)
    order = np.empty(len(embedding), dtype=int)
    for t in range(len(embedding)):
        gain = np.where(free, target - pulled / (t + 1), -np.inf)
        best = int(np.argmax(gain))
        order[t], free[best] = best, False
        pulled += kernel(embedding[best : best + 1], rows_sq[best : best + 1])[:, 0]
    return order


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
