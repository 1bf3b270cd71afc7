"""The next generation's training set: real and synthetic images in the configured mix.

Loop types, as in the MAD paper (Alemohammad et al. 2023):
- `fully-synthetic`: only synthetic samples, no real data after G0;
- `augmentation`: a fixed real set (the same images every generation) plus synthetic samples;
- `fresh`: a new draw of real images every generation, from a reservoir G0 never saw, never reused.
`accumulate` draws the synthetic share from the accepted samples of every generation so far
(Gerstgrasser et al. 2024); `replace` only from the last generation's.

The training set size stays fixed; `real_fraction` of it is real. When the accepted synthetic
samples are fewer than their share, the set is smaller and the shortfall is recorded.

`keep_real` (augmentation loops) trains on the whole real pool every generation instead of a
`real_fraction` of `train_size`, and the synthetic part is then every accepted candidate, or with
`accumulate` every accepted sample so far, a set that grows each generation. `synthetic_ratio`
caps the synthetic part at that many synthetic images per real one: Bertrand et al. (2024) show
iterative retraining stable while the synthetic share stays small enough, so 0.5 keeps synthetic
images at a third of the set. Without `keep_real` the cap applies within the fixed-size set. When the
fresh-data reservoir cannot supply a draw, `ReservoirExhausted` says so: fresh real data is never
reused, so a fresh loop cannot run on past its reservoir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

LOOPS = ("fully-synthetic", "augmentation", "fresh")


class ReservoirExhausted(Exception):
    pass


@dataclass(frozen=True)
class MixConfig:
    loop: str = "augmentation"
    # Half real by default: synthetic images never outnumber real ones, the condition under which
    # Bertrand et al. (2024) show iterative retraining stays stable.
    real_fraction: float = 0.5
    accumulate: bool = False
    train_size: int = 1000
    keep_real: bool = False
    synthetic_ratio: Optional[float] = None

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"unknown loop type {self.loop!r}; choose one of {', '.join(LOOPS)}")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(f"the real fraction must be within [0, 1], not {self.real_fraction}")
        if self.loop == "fully-synthetic" and self.real_fraction != 0.0:
            raise ValueError("a fully-synthetic loop trains on no real data: set the real fraction to 0")
        if self.loop != "fully-synthetic" and self.real_fraction == 0.0:
            raise ValueError(f"a {self.loop} loop needs a real fraction above 0 (or use fully-synthetic)")
        if self.train_size < 1:
            raise ValueError("the training set needs at least one image")
        if self.keep_real and self.loop != "augmentation":
            raise ValueError(f"keeping all real data applies to augmentation loops, not {self.loop}: a fully-synthetic "
                             "loop has none, a fresh loop draws new real data each generation")
        if self.synthetic_ratio is not None and self.loop == "fully-synthetic":
            raise ValueError("a synthetic-to-real cap needs real data in the mix: a fully-synthetic loop has none")

    @property
    def real_count(self) -> int:
        return int(round(self.train_size * self.real_fraction))

    @property
    def synthetic_count(self) -> int:
        return self.train_size - self.real_count

    def fresh_draws_possible(self, reservoir_size: int) -> int:
        """How many generations after G0 a fresh loop can run before its reservoir is empty."""
        if self.loop != "fresh":
            return 10**9
        return reservoir_size // max(1, self.real_count)


@dataclass
class TrainingMix:
    real: list[int]  # real image ids
    synthetic: dict[int, list[int]]  # source generation index -> sample ids
    fresh: list[int] = field(default_factory=list)  # the subset of `real` newly drawn from the reservoir
    shortfall: int = 0

    @property
    def synthetic_total(self) -> int:
        return sum(len(ids) for ids in self.synthetic.values())

    def summary(self) -> dict:
        return {
            "real": len(self.real),
            "fresh": len(self.fresh),
            "synthetic": self.synthetic_total,
            "synthetic_by_generation": {str(g): len(ids) for g, ids in sorted(self.synthetic.items())},
            "shortfall": self.shortfall,
        }


def build_mix(
    config: MixConfig,
    *,
    pool: list[int],
    reservoir_unused: list[int],
    accepted_by_generation: dict[int, list[int]],
    last_generation: int,
    seed: int,
) -> TrainingMix:
    """The training set that follows `last_generation`. `reservoir_unused` is in draw order."""
    rng = np.random.default_rng((seed, last_generation))
    real: list[int] = []
    fresh: list[int] = []
    if config.loop == "augmentation" and config.keep_real:
        real = list(pool)
    elif config.loop == "augmentation":
        fixed_order = np.random.default_rng(seed).permutation(len(pool))  # the same subset every time
        real = [pool[i] for i in sorted(fixed_order[: config.real_count])]
        if len(real) < config.real_count:
            raise ValueError(f"the real pool holds {len(pool)} images but the mix asks for {config.real_count}")
    elif config.loop == "fresh":
        if len(reservoir_unused) < config.real_count:
            raise ReservoirExhausted(
                f"the fresh-data reservoir has {len(reservoir_unused)} unused real images but generation "
                f"{last_generation + 1} needs {config.real_count}: lower the real fraction or training "
                "size, shrink the G0 pool to enlarge the reservoir, or run fewer generations"
            )
        real = fresh = list(reservoir_unused[: config.real_count])

    sources = sorted(accepted_by_generation) if config.accumulate else [last_generation]
    candidates = [(g, sid) for g in sources for sid in accepted_by_generation.get(g, [])]
    wanted = len(candidates) if config.keep_real else config.synthetic_count
    if config.synthetic_ratio is not None:
        wanted = min(wanted, int(config.synthetic_ratio * len(real)))
    if len(candidates) > wanted:
        chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), size=wanted, replace=False))]
    else:
        chosen = candidates
    synthetic: dict[int, list[int]] = {}
    for generation, sample_id in chosen:
        synthetic.setdefault(generation, []).append(sample_id)
    return TrainingMix(real=real, synthetic=synthetic, fresh=fresh, shortfall=wanted - len(chosen))
