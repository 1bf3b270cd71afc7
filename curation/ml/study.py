"""The collapse study: which loop variants, what settings each runs with, and the report's statistics.

A study is a set of ordinary experiments, one per variant and seed, run by the same pipeline and
workers as any other (`curation.studies` creates and runs them); nothing here runs a loop. This module
is pure: it turns a plan into experiment settings, and a table of the experiments' stored
per-generation metrics into the report: means with 95% intervals over seeds, and paired differences
(against G0, and against the uncurated variant of the same loop, seed by seed) with 95% intervals,
Holm-corrected across the whole table (`curation.ml.statistics`). A difference is called better or
worse only when its corrected interval excludes zero.
"""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

from curation.ml.experiment_config import PRESETS, ConfigError, ExperimentConfig
from curation.ml.statistics import LOWER_IS_BETTER, compare, format_interval, mean_interval

# Every metric stored per generation that the report reads, and the headline's columns.
METRICS = ("fd", "kid", "precision", "recall", "density", "coverage", "memorization", "classes_covered",
           "acceptance_rate", "accepted", "discriminator_auc", "discriminator_heldout_auc", "verifier_auc",
           "chosen_fd", "chosen_recall", "chance_fd", "chance_recall", "step_seconds")
# Curation beats chance in a seed when its accepted samples score a lower held-out FD and a higher recall
# than as many drawn at random from the same samples; the bar: in at least this share of the seeds.
CHANCE_BAR = 0.8
HEADLINE = ("fd", "precision", "recall", "coverage", "memorization")
LOOPS = ("fully-synthetic", "augmentation", "fresh", "accumulate", "real-only")
POLICY_SHORT = {"none": "none", "human": "human", "discriminator": "disc", "human+discriminator": "human+disc",
                "random-matched": "random", "match": "match"}


# The levers of curation a variant can pull, each a set of settings. Levers of the loop itself (its
# mix, training and sampling) change what a variant's uncurated baseline is (it pulls them too);
# levers of curation do not.
LEVERS = {
    "keep-real": {"mix.keep_real": True, "mix.accumulate": True, "mix.synthetic_ratio": 0.5},
    "warm-ema": {"train.warm_ema": True},
    "verifier": {"curation.discriminator": "verifier"},
    "resample": {"curation.acceptance": "resample"},
    "guidance": {"sample.guidance": 1.0, "guidance_source": "own"},
    "coverage": {"curation.diversity_guard": True, "curation.guard_mode": "coverage"},
}
LOOP_LEVERS = ("keep-real", "warm-ema", "guidance")


@dataclass(frozen=True)
class Variant:
    """One loop of the study. `loop`: fully-synthetic, augmentation, fresh, accumulate (augmentation,
    accumulating), or real-only: the control retrained every generation exactly as the others are, on
    real data alone. `match`: the policy a random-matched variant copies the acceptance count of.
    `levers`: names from LEVERS joined by "+", pulled on top of the loop's settings."""

    loop: str
    policy: str
    guard: bool = False
    match: str = ""
    levers: str = ""

    @property
    def name(self) -> str:
        policy = POLICY_SHORT[self.policy] + (f"({POLICY_SHORT[self.match]})" if self.match else "")
        return f"{self.loop}/{policy}{'+guard' if self.guard else ''}{'+' + self.levers if self.levers else ''}"

    @property
    def lever_names(self) -> list[str]:
        return [name for name in self.levers.split("+") if name]

    def changes(self, base: ExperimentConfig, *, fresh_per_generation: int) -> dict:
        unknown = [name for name in self.lever_names if name not in LEVERS]
        if unknown:
            raise ConfigError(f"unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
        changes: dict = {"curation.policy": self.policy, "curation.diversity_guard": self.guard}
        if self.match:
            changes["curation.match"] = self.match
        real_fraction = base.mix.real_fraction or 0.5
        if self.loop == "fully-synthetic":
            changes.update({"mix.loop": "fully-synthetic", "mix.real_fraction": 0.0, "mix.accumulate": False})
        elif self.loop == "fresh":
            fraction = min(real_fraction, fresh_per_generation / base.mix.train_size)
            changes.update({"mix.loop": "fresh", "mix.real_fraction": fraction, "mix.accumulate": False})
        elif self.loop == "real-only":
            changes.update({"mix.loop": "augmentation", "mix.real_fraction": 1.0, "mix.accumulate": False})
        else:
            changes.update({"mix.loop": "augmentation", "mix.real_fraction": real_fraction,
                            "mix.accumulate": self.loop == "accumulate"})
        for name in self.lever_names:  # on top of the loop's settings
            changes.update(LEVERS[name])
        return changes


def lever_variants() -> list[Variant]:
    """Each lever of curation with the baselines it is judged against: on the fully-synthetic loop the
    verifier (thresholded, and resampled beside a random filter matched on its count), a warm EMA and
    negative guidance; on the augmentation loop with all real data kept and synthetic capped,
    uncurated (with and without guidance), matched-random, the verifier resampling, and the product's
    default policy with the class guard and with the coverage guard; on both loops the match policy
    (kernel herding toward the curator split; its uncurated loop, which trains on a random draw of
    the same size, is its matched random control). Then the real-only control."""
    synthetic, keep = "fully-synthetic", "augmentation"
    return [Variant(synthetic, "none"), Variant(synthetic, "discriminator", levers="verifier"),
            Variant(synthetic, "discriminator", levers="verifier+resample"),
            Variant(synthetic, "random-matched", match="discriminator", levers="verifier+resample"),
            Variant(synthetic, "none", levers="warm-ema"), Variant(synthetic, "none", levers="guidance"),
            Variant(keep, "none", levers="keep-real"), Variant(keep, "none", levers="keep-real+guidance"),
            Variant(keep, "random-matched", match="discriminator", levers="keep-real+verifier+resample"),
            Variant(keep, "discriminator", levers="keep-real+verifier+resample"),
            Variant(keep, "human+discriminator", True, levers="keep-real"),
            Variant(keep, "human+discriminator", levers="keep-real+coverage"),
            Variant(synthetic, "match"), Variant(keep, "match", levers="keep-real"),
            Variant("real-only", "none")]


def study_variants() -> list[Variant]:
    """Every loop block with its baselines: uncurated (the MAD baseline) and a random filter matched on
    the acceptance count of the curation it is compared with. Fully-synthetic loops run every curating
    policy with and without the diversity guard; the loops with real data run the product's default
    (human votes plus discriminator, guarded). Then the real-only control."""
    variants = [Variant("fully-synthetic", "none"),
                Variant("fully-synthetic", "random-matched", match="human"),
                Variant("fully-synthetic", "random-matched", match="human+discriminator")]
    for policy in ("human", "discriminator", "human+discriminator"):
        variants += [Variant("fully-synthetic", policy, guard) for guard in (False, True)]
    for loop in ("augmentation", "fresh", "accumulate"):
        variants += [Variant(loop, "none"), Variant(loop, "random-matched", match="human+discriminator"),
                     Variant(loop, "human+discriminator", True)]
    variants.append(Variant("real-only", "none"))
    return variants


@dataclass(frozen=True)
class StudyPlan:
    base: ExperimentConfig
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    generations: int  # including G0
    reservoir: int  # real images a fresh loop can draw after G0 (the training split less the pool)
    preset: str = ""

    def config(self, variant: Variant, seed: int) -> ExperimentConfig:
        fresh = self.reservoir // max(1, self.generations - 1)
        return self.base.replace(
            **variant.changes(self.base, fresh_per_generation=fresh), seed=seed, generations=self.generations,
            auto_advance=True, **{"rating.raters": "simulated"})

    def validate(self) -> None:
        if self.generations < 2:
            raise ConfigError("a study needs at least 2 generations (G0 and one that trains on curated data)")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError("variant names must be distinct")
        for variant in self.variants:
            self.config(variant, self.seeds[0])  # raises ConfigError naming the bad setting

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "variants": [asdict(v) for v in self.variants], "seeds": list(self.seeds),
                "generations": self.generations, "reservoir": self.reservoir, "preset": self.preset}

    @classmethod
    def from_dict(cls, data: dict) -> "StudyPlan":
        return cls(base=ExperimentConfig.from_dict(data["base"]), variants=tuple(Variant(**v) for v in data["variants"]),
                   seeds=tuple(data["seeds"]), generations=data["generations"], reservoir=data["reservoir"],
                   preset=data.get("preset", ""))

    def changed_settings(self) -> list[str]:
        """The base settings that differ from the preset's, as `name: preset → study`."""
        if self.preset not in PRESETS:
            return []
        return _differences(PRESETS[self.preset].to_dict(), self.base.to_dict())


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


# --- the report -----------------------------------------------------------------------------------

Results = dict  # (variant name, seed, generation) -> that generation's metrics


def values(plan: StudyPlan, results: Results, variant: str, generation: int, metric: str) -> np.ndarray:
    """One metric of one variant and generation, seed by seed in the plan's order (NaN where missing)."""
    out = []
    for seed in plan.seeds:
        value = results.get((variant, seed, generation), {}).get(metric)
        out.append(np.nan if value is None else float(value))
    return np.array(out)


def uncurated(plan: StudyPlan, variant: Variant) -> Optional[Variant]:
    """The uncurated variant on the same mix (None for itself and the real-only control)."""
    if variant.policy == "none":
        return None
    mix = [name for name in variant.lever_names if name in LOOP_LEVERS]
    return next((v for v in plan.variants if v.loop == variant.loop and v.policy == "none" and v.lever_names == mix),
                None)


def reached(plan: StudyPlan, results: Results) -> int:
    """The last generation every variant and seed of the plan has finished (-1 before every G0 is)."""
    return min((max((g for g in range(plan.generations) if (v.name, seed, g) in results), default=-1)
                for v in plan.variants for seed in plan.seeds), default=-1)


def report_generations(plan: StudyPlan, results: Results) -> list[int]:
    """The generations the headline reports: G5 and G10 where every experiment has reached them, and the
    last generation they all have (a study stopped early is compared where it is complete)."""
    last = reached(plan, results)
    return sorted({g for g in (5, 10) if g <= last} | {last}) if last >= 1 else []


def comparisons(plan: StudyPlan, results: Results, confidence: float = 0.95) -> list:
    """Every headline comparison, as one Holm family: each variant at each reported generation against
    G0 (same seed) and against the uncurated variant of its loop (same seed and generation)."""
    rows = []
    for variant in plan.variants:
        base = uncurated(plan, variant)
        for g in report_generations(plan, results):
            for metric in HEADLINE:
                now = values(plan, results, variant.name, g, metric)
                rows.append((f"{variant.name} G{g} − G0", metric, now, values(plan, results, variant.name, 0, metric)))
                if base is not None:
                    rows.append((f"{variant.name} G{g} − {base.name} G{g}", metric, now,
                                 values(plan, results, base.name, g, metric)))
    # (a study still running has comparisons with no seed finished on both sides yet: not made)
    rows = [row for row in rows if (~np.isnan(row[2]) & ~np.isnan(row[3])).any()]
    return compare(rows, lower_is_better=LOWER_IS_BETTER, confidence=confidence) if rows else []


def _mean_cell(column: np.ndarray) -> str:
    return format_interval(mean_interval(column)) if (~np.isnan(column)).any() else "–"


def headline_table(plan: StudyPlan, results: Results, floor: dict) -> tuple[list[str], list[list[str]]]:
    """The README's table, as its header and rows: the floor, G0, then every variant at the reported
    generations, mean [95% CI] over seeds for each headline metric, and its cost: the median seconds a
    generation after G0 took (a median, so that a generation slowed by something else on the machine does
    not set it)."""
    generations = report_generations(plan, results) or [0]
    header = ["row"] + [f"{metric} G{g}" for g in generations for metric in HEADLINE] + ["s/generation"]
    floor_cells = []
    for _ in generations:
        for metric in HEADLINE:
            entry = floor.get(metric)
            floor_cells.append(f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]" if isinstance(
                entry, dict) else "–")
    rows = [["real vs real (floor)", *floor_cells, "–"]]
    first = plan.variants[0].name
    rows.append(["G0 (every variant's start)", *(_mean_cell(values(plan, results, first, 0, m))
                                                 for _ in generations for m in HEADLINE),
                 _g0_cost(plan, results)])
    later = list(range(1, plan.generations))
    for variant in plan.variants:
        rows.append([variant.name, *(_mean_cell(values(plan, results, variant.name, g, m))
                                     for g in generations for m in HEADLINE), _cost(plan, results, variant.name, later)])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def headline_markdown(plan: StudyPlan, results: Results, floor: dict) -> str:
    return markdown_table(*headline_table(plan, results, floor))


def _cost(plan: StudyPlan, results: Results, variant: str, generations: list[int]) -> str:
    seconds = np.concatenate([values(plan, results, variant, g, "step_seconds") for g in generations])
    seconds = seconds[~np.isnan(seconds)]
    return f"{np.median(seconds):.0f}" if len(seconds) else "–"


def _g0_cost(plan: StudyPlan, results: Results) -> str:
    """What a seed's G0 cost: the experiment that trained it (the others, of any variant, take its weights
    from the training cache in seconds), the median over seeds."""
    trained: dict[int, float] = {}
    for (_, seed, generation), row in results.items():
        if generation == 0 and seed in plan.seeds and row.get("step_seconds") is not None:
            trained[seed] = max(trained.get(seed, 0.0), float(row["step_seconds"]))
    return f"{np.median(list(trained.values())):.0f}" if trained else "–"


def differences_markdown(found: list) -> str:
    """Every paired difference with its Holm-adjusted interval and verdict, significant ones first."""
    lines = ["| comparison | metric | difference [95% CI] | Holm-adjusted interval | adjusted p | verdict |",
             "|---|---|---|---|---|---|"]
    for c in sorted(found, key=lambda c: (c.verdict == "no difference", c.label, c.metric)):
        lines.append(f"| {c.label} | {c.metric} | {format_interval(c.interval, signed=True)} | "
                     f"{format_interval(c.adjusted_interval, signed=True)} | {c.adjusted_p:.3g} | {c.verdict} |")
    return "\n".join(lines) + "\n"


def statements(plan: StudyPlan, results: Results, found: list) -> list[str]:
    """Plain sentences derived from the comparisons: nothing here is written in advance."""
    significant = [c for c in found if c.verdict != "no difference"]
    generations = report_generations(plan, results)
    if not generations:
        return ["- No generation after G0 has finished in every experiment yet: nothing to compare."]
    lines = [f"- {len(found)} paired comparisons (every variant at G{', G'.join(map(str, generations))} "
             f"against G0 and against the uncurated loop of its mix, on {', '.join(HEADLINE)}), Holm-corrected as one "
             f"family over {len(plan.seeds)} seeds: {len(significant)} significant."]
    for verdict in ("better", "worse"):
        chosen = [c for c in significant if c.verdict == verdict]
        if chosen:
            lines.append(f"- Significantly {verdict}: " + "; ".join(
                f"{c.label} on {c.metric} ({format_interval(c.interval, signed=True)})" for c in chosen) + ".")
    curated = [c for c in found if " − " in c.label and "/none G" in c.label.split(" − ")[1]]
    if curated and not any(c.verdict == "better" for c in curated):
        lines.append("- No curated loop is significantly better than the uncurated loop of its mix on any headline "
                     "metric.")
    return lines


def _chance(plan: StudyPlan, results: Results, variant: str, generation: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed by seed, accepted minus random: the held-out FD and the recall differences (NaN where not
    measured)."""
    def difference(metric: str) -> np.ndarray:
        return (values(plan, results, variant, generation, f"chosen_{metric}")
                - values(plan, results, variant, generation, f"chance_{metric}"))

    return difference("fd"), difference("recall")


def beats_chance(plan: StudyPlan, results: Results, variant: str, generation: int) -> tuple[int, int]:
    """Seeds where the variant's accepted samples beat equal-size random subsets of the same samples on
    both held-out FD and recall, of the seeds where that was measured."""
    fd, recall = _chance(plan, results, variant, generation)
    measured = ~np.isnan(fd)
    return int((measured & (fd < 0) & (recall > 0)).sum()), int(measured.sum())


def chance_markdown(plan: StudyPlan, results: Results) -> str:
    """Per curating variant and generation: in how many seeds curation beat chance, and by how much
    (mean paired difference chosen − chance, with its 95% interval)."""
    generations = [g for g in range(plan.generations)
                   if any(beats_chance(plan, results, v.name, g)[1] for v in plan.variants)]
    lines = ["| variant | " + " | ".join(f"G{g}" for g in generations) + " |", "|---|" + "---|" * len(generations)]
    for variant in plan.variants:
        cells = []
        for g in generations:
            wins, measured = beats_chance(plan, results, variant.name, g)
            if not measured:
                cells.append("–")
                continue
            fd, recall = _chance(plan, results, variant.name, g)
            cells.append(f"{wins}/{measured} (fd {format_interval(mean_interval(fd[~np.isnan(fd)]), signed=True)}, "
                         f"recall {format_interval(mean_interval(recall[~np.isnan(recall)]), signed=True)})")
        if any(cell != "–" for cell in cells):
            lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chance_statements(plan: StudyPlan, results: Results) -> list[str]:
    """Which curating variants beat chance in enough seeds at every generation all experiments reached."""
    last = reached(plan, results)
    passing, measured_any = [], False
    for variant in plan.variants:
        counts = [beats_chance(plan, results, variant.name, g) for g in range(last + 1)]
        counts = [(w, n) for w, n in counts if n]
        if not counts:
            continue
        measured_any = True
        if all(w >= CHANCE_BAR * n for w, n in counts):
            passing.append(variant.name)
    if not measured_any:
        return []
    if passing:
        return [f"- Curation beat an equal-size random subset of the same samples (lower held-out FD and higher "
                f"recall) in at least {CHANCE_BAR:.0%} of the seeds at every generation in: {', '.join(passing)}."]
    return [f"- No curating variant beat an equal-size random subset of the same samples (lower held-out FD and "
            f"higher recall) in {CHANCE_BAR:.0%} of the seeds at every generation."]


# The bars a curated loop is held to against its first generation, on the paired intervals (seed by seed)
# of the last generation reported: "not worse than G0" is FD − G0's upper end at most +0.05 and recall −
# G0's lower end at least −0.01; "better than G0" is FD − G0's upper end below zero with recall not worse;
# fully synthetic, the loop's own target is recall above its uncurated loop's by at least +0.10 (lower end).
NOT_WORSE_FD, NOT_WORSE_RECALL, RECALL_GAIN = 0.05, -0.01, 0.10


@dataclass(frozen=True)
class GoalRow:
    """One curated variant against the bars, at one level of confidence: 95% or after Holm's correction."""
    variant: Variant
    generation: int
    against_g0: dict  # metric -> Comparison, the variant minus G0
    against_uncurated: dict  # metric -> Comparison, the variant minus the uncurated loop of its mix

    def bars(self, adjusted: bool) -> dict:
        def interval(comparison):
            return comparison.adjusted_interval if adjusted else comparison.interval

        fd, recall = interval(self.against_g0["fd"]), interval(self.against_g0["recall"])
        fd_base, recall_base = interval(self.against_uncurated["fd"]), interval(self.against_uncurated["recall"])
        recall_kept = recall.low >= NOT_WORSE_RECALL
        out = {"not worse than G0": fd.high <= NOT_WORSE_FD and recall_kept,
               "better than G0": fd.high < 0 and recall_kept}
        if self.variant.loop == "fully-synthetic":
            out[f"recall ≥ uncurated {RECALL_GAIN:+.2f}"] = recall_base.low >= RECALL_GAIN
        else:  # better than its uncurated loop on FD or recall, and worse on neither
            out["better than uncurated"] = ((fd_base.high < 0 or recall_base.low > 0)
                                            and not (fd_base.low > 0 or recall_base.high < 0))
        return out


def goal_rows(plan: StudyPlan, found: list, generation: int) -> list[GoalRow]:
    """Every curated variant (random filters and uncurated loops left out) with its comparisons at
    `generation`, where the report made them."""
    by_label = {(c.label, c.metric): c for c in found}
    rows = []
    for variant in plan.variants:
        base = uncurated(plan, variant)
        if base is None or variant.policy == "random-matched":
            continue
        against_g0 = {m: by_label.get((f"{variant.name} G{generation} − G0", m)) for m in ("fd", "recall")}
        against_base = {m: by_label.get((f"{variant.name} G{generation} − {base.name} G{generation}", m))
                        for m in ("fd", "recall")}
        if None not in against_g0.values() and None not in against_base.values():
            rows.append(GoalRow(variant, generation, against_g0, against_base))
    return rows


def goal_table(plan: StudyPlan, results: Results, found: list) -> Optional[tuple[list[str], list[list[str]]]]:
    """How close each curated loop came to the bars, at the last generation reported: the paired
    differences at 95%, which bars they meet at 95% and after Holm's correction, and at how many
    generations its choice beat chance in enough seeds. None before any curated loop has reached one."""
    generations = report_generations(plan, results)
    rows = goal_rows(plan, found, generations[-1]) if generations else []
    if not rows:
        return None
    g = generations[-1]
    header = ["variant", f"fd − G0 at G{g}", "recall − G0", "fd − uncurated", "recall − uncurated", "bars met at 95%",
              "bars met after Holm", "beats chance"]
    table = []
    for row in rows:
        chance = [beats_chance(plan, results, row.variant.name, n) for n in range(g + 1)]
        chance = [(wins, measured) for wins, measured in chance if measured]
        passed = sum(wins >= CHANCE_BAR * measured for wins, measured in chance)
        cells = [format_interval(row.against_g0[m].interval, signed=True) for m in ("fd", "recall")]
        cells += [format_interval(row.against_uncurated[m].interval, signed=True) for m in ("fd", "recall")]
        for adjusted in (False, True):
            met = [name for name, ok in row.bars(adjusted).items() if ok]
            cells.append(", ".join(met) if met else "none")
        cells.append(f"{passed} of {len(chance)} generations" if chance else "–")
        table.append([row.variant.name, *cells])
    return header, table


def goal_markdown(plan: StudyPlan, results: Results, found: list) -> str:
    table = goal_table(plan, results, found)
    return markdown_table(*table) if table else "No curated loop has reached a reported generation yet.\n"


def goal_statements(plan: StudyPlan, results: Results, found: list) -> list[str]:
    """Which curated loops meet the bars against G0 at the last reported generation, and, where none
    does, the one that came closest (the lowest upper end of FD − G0)."""
    generations = report_generations(plan, results)
    rows = goal_rows(plan, found, generations[-1]) if generations else []
    if not rows:
        return []
    g, lines = generations[-1], []
    for bar in ("better than G0", "not worse than G0"):
        meeting = [row.variant.name for row in rows if row.bars(adjusted=False)[bar]]
        if meeting:
            lines.append(f"- {bar[0].upper() + bar[1:]} at G{g} (at 95%; the table says which hold after Holm): "
                         f"{', '.join(meeting)}.")
        else:
            closest = min(rows, key=lambda row: row.against_g0["fd"].interval.high)
            fd = closest.against_g0["fd"].interval
            lines.append(f"- No curated loop meets \"{bar}\" at G{g}; closest on FD: {closest.variant.name}, FD − G0 "
                         f"{format_interval(fd, signed=True)} (the bar: its upper end "
                         f"{'below zero' if bar == 'better than G0' else f'at most {NOT_WORSE_FD:+.2f}'}).")
    return lines


def metrics_csv(plan: StudyPlan, results: Results) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["variant", "seed", "generation", *METRICS])
    for variant in plan.variants:
        for seed in plan.seeds:
            for g in range(plan.generations):
                row = results.get((variant.name, seed, g))
                if row is not None:
                    writer.writerow([variant.name, seed, g, *(_cell(row.get(m)) for m in METRICS)])
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.5f}" if isinstance(value, float) else str(value)


# --- a study in parts ------------------------------------------------------------------------------

# A rerun of the same code, settings, data and seed on a CPU trains the same G0, and its figures agree up
# to floating-point differences between processes: the same G0 measured by two experiments of one study
# differs by one nearest-neighbour decision in 2,690 at most (coverage 0.0004), and later generations by
# as little (the uncurated fully-synthetic loop's G1-G2 rerun: within 0.0001 in FD, 0.0004 in precision
# and recall). So G0, which every variant of a seed shares, is what two parts of one study must agree on,
# in these metrics, within AGREE (absolute, plus as much relative): a change of settings, data or seed
# moves G0's FD by a few hundredths. The columns read back as counts.
REPRODUCED = ("fd", "kid", "precision", "recall", "density", "coverage", "memorization")
AGREE = 0.001
COUNTS = ("classes_covered", "accepted")


def read_metrics_csv(text: str) -> Results:
    """A report's metrics.csv read back into results (`metrics_csv`'s inverse); the columns an older
    report lacks stay missing."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"variant", "seed", "generation"} - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(f"not a study's metrics.csv: it has no {', '.join(sorted(missing))} column")
    results = {}
    for line, row in enumerate(reader, start=2):
        try:
            results[(row["variant"], int(row["seed"]), int(row["generation"]))] = {
                metric: int(value) if metric in COUNTS else float(value)
                for metric in METRICS if (value := row.get(metric) or "")}
        except (TypeError, ValueError) as error:
            raise ConfigError(f"line {line} of the metrics.csv: {error}") from None
    return results


def include_runs(plan: StudyPlan, results: Results, runs: dict[str, Results],
                 wanted: Optional[tuple[str, ...]] = None) -> tuple[StudyPlan, Results, dict]:
    """The study with the variants of earlier runs added (each run's metrics.csv read back, by its name
    in `runs`; only those `wanted` names, where given): a study run in parts, on other days or machines,
    by the same code. Every variant of a seed starts from the same G0, so each added variant's G0 must
    agree with the study's own on the metrics a rerun reproduces, for every seed of the study, or the run
    is not a part of it (other settings, data or code): ConfigError. Variants the study has are not taken
    from a run. Returns the plan, the results and, per run, the variants taken."""
    known = {v.name: v for v in study_variants() + lever_variants()}
    own = {v.name for v in plan.variants}
    first = plan.variants[0].name
    unfinished = [seed for seed in plan.seeds if (first, seed, 0) not in results]
    if runs and unfinished:
        raise ConfigError(f"this study has not finished the G0 of seed {unfinished[0]} yet: nothing to check an "
                          f"earlier run against")
    variants, merged, taken = list(plan.variants), dict(results), {}
    for source, run in runs.items():
        names = list(dict.fromkeys(name for name, _, _ in run))
        unknown = [name for name in names if name not in known and name not in own]
        if unknown:
            raise ConfigError(f"{source}: unknown variant {unknown[0]!r}")
        added = [known[name] for name in names if name not in own and (wanted is None or name in wanted)]
        for variant in added:
            for seed in plan.seeds:
                if (variant.name, seed, 0) not in run:
                    raise ConfigError(f"{source}: {variant.name} has no G0 for seed {seed}; the study's report "
                                      f"needs every one of its seeds ({', '.join(map(str, plan.seeds))})")
                if not _agree(source, (variant.name, seed, 0), results[(first, seed, 0)], run[(variant.name, seed, 0)]):
                    raise ConfigError(f"{source}: {variant.name}'s G0 of seed {seed} has none of the metrics "
                                      f"{', '.join(REPRODUCED)}: nothing shows it ran the same settings and data")
            merged.update({key: row for key, row in run.items()
                           if key[0] == variant.name and key[1] in plan.seeds and key[2] < plan.generations})
        taken[source] = [variant.name for variant in added]
        variants += added
        own |= {variant.name for variant in added}
    return replace(plan, variants=tuple(variants)), merged, taken


def _agree(source: str, key: tuple, mine: dict, theirs: dict) -> int:
    """How many metrics the two runs' figures of one generation share (all of which must agree)."""
    shared = [metric for metric in REPRODUCED if mine.get(metric) is not None and theirs.get(metric) is not None]
    for metric in shared:
        a, b = mine[metric], theirs[metric]
        if abs(a - b) > AGREE * (1 + abs(a)):
            name, seed, generation = key
            raise ConfigError(f"{source}: {name}, seed {seed}, G{generation} has {metric} {b:.5f} there and {a:.5f} "
                              f"here: not the same code, settings or data, so its rows cannot join this report")
    return len(shared)


def curve_series(plan: StudyPlan, results: Results, metric: str) -> dict:
    """Per variant, (mean, low, high) at each generation: the curves and their 95% bands."""
    series = {}
    for variant in plan.variants:
        points = []
        for g in range(plan.generations):
            column = values(plan, results, variant.name, g, metric)
            if np.isnan(column).all():
                points.append((np.nan, np.nan, np.nan))
                continue
            interval = mean_interval(column)
            points.append((interval.estimate, interval.low, interval.high))
        series[variant.name] = points
    return series


def report_markdown(plan: StudyPlan, results: Results, floor: dict, found: list, *, seconds: Optional[float],
                    step_seconds: float, machine: str, device: str, plots: list[str],
                    included: Optional[dict] = None) -> str:
    """The report; `seconds`: how long the invocation that ran experiments took (None: it only reported);
    `included`: per earlier run, the variants read from its metrics.csv (`include_runs`), whose recorded
    step seconds `step_seconds` counts."""
    base = plan.base
    last = plan.generations - 1
    complete = reached(plan, results)
    changed = plan.changed_settings()
    included = {source: names for source, names in (included or {}).items() if names}
    experiments = len(plan.variants) * len(plan.seeds)
    read = [f"{', '.join(names)} from `{source}`" for source, names in included.items()]
    elsewhere = sum(map(len, included.values())) * len(plan.seeds)
    ran = f"{experiments} ordinary experiments run by the product's pipeline" + (
        f" ({elsewhere} of them in earlier runs, below)" if elsewhere else "")
    lines = [
        "# Collapse study",
        "",
        f"{len(plan.variants)} loop variants × {len(plan.seeds)} seeds ({', '.join(map(str, plan.seeds))}) × "
        f"G0–G{last}: {ran}, every variant of a seed starting from the same G0. Preset `{plan.preset or 'custom'}`; real pool "
        f"{base.pool_size} drawn from the training split, training sets of {base.mix.train_size}, "
        f"{base.samples_per_generation} samples per generation, simulated raters "
        f"({len(base.rating.panel)}-rater panel, {base.rating.votes_per_sample} votes per sample) on "
        f"{base.rating.rating_budget} of them; the discriminator scores the rest.",
        "",
        *([f"Settings changed from the preset: {'; '.join(changed)}.", ""] if changed else []),
        *([f"**Run in parts:** this report reads variants from earlier runs' metrics.csv: {'; '.join(read)}. Every "
           f"variant of a seed starts from the same G0, and each of theirs agrees with this study's on "
           f"{', '.join(REPRODUCED)} within {AGREE} (floating-point differences) for every seed; their experiments are not in this database "
           f"(no sample grids).", ""] if included else []),
        *([f"**Stopped early:** every experiment has finished G0–G{complete} of the planned G0–G{last}; the "
           f"tables compare them there (resume with the same --name).", ""] if complete < last else []),
        f"The steps of its {experiments} experiments took {step_seconds / 3600:.2f} h in "
        f"all (training, sampling, rating, curating; summed over experiments run side by side) on "
        f"{machine or platform.machine()}, device `{device}`"
        + (f"; the last invocation ran {seconds / 60:.1f} min." if seconds is not None else "."),
        "",
        "Every metric is measured on the **held-out test split** (never trained on, never shown to the curators) "
        f"at matched sizes ({floor.get('sample_size', '?')} samples against as many test images, averaged over "
        "reference halves). The floor row is real against real at the same size: the mean and the 2.5–97.5% range "
        f"over {floor.get('repeats', '?')} random splits. Cells are mean [95% t-interval] over seeds; s/generation is what a generation after G0 cost, "
        "the median of its steps' seconds over seeds and generations (for the G0 row, the experiment of each seed that trained it: the others take its weights from the training cache), as the experiments ran "
        "side by side with the study's other workers. Memorization: "
        "the share of samples nearer a training-split image than the 5th percentile of held-out real images' "
        "nearest-training distances (real data scores about 0.05).",
        "",
        "## What the figures show",
        "",
        *statements(plan, results, found),
        *chance_statements(plan, results),
        *goal_statements(plan, results, found),
        "",
        "## Headline",
        "",
        headline_markdown(plan, results, floor),
        "## Paired differences",
        "",
        "Each row: the mean over seeds of the paired difference (seed by seed), its 95% interval, and the interval "
        "at the Holm step's level; the verdict is better or worse only when the adjusted p-value is below 0.05 and "
        "the adjusted interval excludes zero (lower is better for fd, kid and memorization).",
        "",
        differences_markdown(found),
        "## Curation against chance",
        "",
        "Each cell: in how many seeds the generation's accepted samples scored a lower held-out FD *and* a higher "
        "recall than as many samples drawn at random from the same generation (the mean of 10 draws, measured "
        "alike, at the matched size or the accepted count where smaller), then the mean paired differences accepted − "
        "random with their 95% intervals. A loop that accepts everything (or fewer than 30 samples) has no cell.",
        "",
        chance_markdown(plan, results),
        "## Against G0: how close each curated loop came",
        "",
        f"Each curated loop at the last generation reported, seed by seed against G0 and against the uncurated "
        f"loop of its mix (paired differences, 95% intervals). The bars: **not worse than G0**, FD − G0's upper "
        f"end at most {NOT_WORSE_FD:+.2f} and recall − G0's lower end at least {NOT_WORSE_RECALL:+.2f}; **better "
        f"than G0**, FD − G0's upper end below zero with recall not worse; fully synthetic, recall above the "
        f"uncurated loop's by at least {RECALL_GAIN:+.2f} (lower end); with real data, **better than uncurated** "
        f"on FD or recall and worse on neither. Met at 95%, and with the Holm-adjusted intervals of the table "
        f"above; beats chance: the generations where its choice beat an equal-size random subset in at least "
        f"{CHANCE_BAR:.0%} of the seeds.",
        "",
        goal_markdown(plan, results, found),
        "## Plots",
        "",
        *[f"![{name}]({name})" for name in plots],
        "",
        f"Per-seed figures of every metric and generation: `metrics.csv`. Sample grids of seed {plan.seeds[0]}: "
        "`grids/g00-shared.png` (G0) and `grids/gNN-<variant>.png` (each variant's last generation).",
        "",
    ]
    return "\n".join(lines)
