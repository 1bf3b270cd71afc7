"""The collapse study: ordinary experiments run by the pipeline, sharing each seed's G0, resumable, and a
report whose statistics come from their stored metrics."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from curation.ml.experiment_config import ConfigError, preset
from curation.ml.study import (
    StudyPlan, Variant, beats_chance, chance_markdown, chance_statements, comparisons, goal_markdown, goal_rows,
    goal_statements, headline_table, include_runs, lever_variants, metrics_csv, read_metrics_csv, report_generations, study_variants,
    uncurated,
)
from curation.models import Experiment, Generation, Study
from curation.services import CurationError
from curation.selectors import study_results
from curation.studies import create_study, plan_study, run_study, write_study_report

pytestmark = pytest.mark.django_db

TWO = ("fully-synthetic/none", "fully-synthetic/random(human)")


def tiny_plan(variants=TWO, seeds=(0, 1), generations=2) -> StudyPlan:
    chosen = {v.name: v for v in study_variants()}
    base = preset("digits-tiny").replace(continue_training=True, continue_steps=10)
    return plan_study(base=base, variants=[chosen[name] for name in variants], seeds=list(seeds),
                      generations=generations, preset="digits-tiny")


def test_the_variants_cover_every_loop_with_its_baselines():
    names = [v.name for v in study_variants()]
    for loop in ("fully-synthetic", "augmentation", "fresh", "accumulate"):
        assert f"{loop}/none" in names and f"{loop}/random(human+disc)" in names
    for policy in ("human", "disc", "human+disc"):
        assert f"fully-synthetic/{policy}" in names and f"fully-synthetic/{policy}+guard" in names
    assert "fully-synthetic/random(human)" in names and names[-1] == "real-only/none"
    assert len(names) == len(set(names)) == 19


def test_each_variant_runs_the_settings_it_names():
    plan = tiny_plan(variants=[v.name for v in study_variants()], generations=3)
    configs = {v.name: plan.config(v, 7) for v in plan.variants}
    assert all(c.seed == 7 and c.generations == 3 and c.rating.raters == "simulated" for c in configs.values())
    assert configs["fully-synthetic/none"].mix.real_fraction == 0.0
    matched = configs["fully-synthetic/random(human)"].curation
    assert (matched.policy, matched.match) == ("random-matched", "human")
    assert configs["real-only/none"].mix.real_fraction == 1.0
    fresh = configs["fresh/none"].mix
    assert fresh.loop == "fresh" and fresh.real_count * 2 <= plan.reservoir  # two fresh draws fit its reservoir
    assert configs["accumulate/none"].mix.accumulate and not configs["augmentation/none"].mix.accumulate


def test_the_lever_variants_pull_their_settings_and_are_judged_against_baselines_with_the_same_mix():
    plan = plan_study(base=preset("digits-tiny").replace(continue_training=True), variants=lever_variants(), seeds=[0],
                      generations=3, preset="digits-tiny")
    by_name = {v.name: v for v in plan.variants}
    resampled = plan.config(by_name["augmentation/disc+keep-real+verifier+resample"], 0)
    assert resampled.mix.keep_real and resampled.mix.accumulate and resampled.mix.synthetic_ratio == 0.5
    assert (resampled.curation.discriminator, resampled.curation.acceptance) == ("verifier", "resample")
    assert plan.config(by_name["fully-synthetic/none+warm-ema"], 0).train.warm_ema
    # The baseline of a curated variant pulls its mix levers, not its curation levers.
    assert uncurated(plan, by_name["augmentation/human+disc+guard+keep-real"]).name == "augmentation/none+keep-real"
    assert uncurated(plan, by_name["fully-synthetic/disc+verifier+resample"]).name == "fully-synthetic/none"
    with pytest.raises(ConfigError, match="unknown lever 'magic'"):
        plan_study(base=preset("digits-tiny"), variants=[Variant("fully-synthetic", "none", levers="magic")], seeds=[0],
                   generations=2)
    with pytest.raises(ConfigError, match="keeping all real data applies to augmentation loops"):
        plan_study(base=preset("digits-tiny"), variants=[Variant("fresh", "none", levers="keep-real")], seeds=[0],
                   generations=2)


def test_a_study_is_experiments_that_share_each_seeds_g0_and_resume(tmp_path):
    study = create_study(name="tiny", plan=tiny_plan())
    experiments = list(study.experiments.all())
    assert len(experiments) == 4 and all(e.status == Experiment.Status.RUNNING for e in experiments)
    assert run_study(study=study, workers=1) == []
    g0 = {(g.experiment.study_variant, g.experiment.study_seed): g
          for g in Generation.objects.filter(experiment__study=study, index=0).select_related("experiment")}
    # One G0 per seed: trained once, the other variant took the same weights from the training cache.
    for seed in (0, 1):
        assert g0[(TWO[0], seed)].checkpoint_sha256 == g0[(TWO[1], seed)].checkpoint_sha256
    assert g0[(TWO[0], 0)].checkpoint_sha256 != g0[(TWO[0], 1)].checkpoint_sha256
    results = study_results(study)
    assert len(results) == 8 and all(0 <= r["memorization"] <= 1 and r["fd"] >= 0 for r in results.values())
    # The random filter accepted as many samples as human curation would have, not all of them.
    g1 = results[(TWO[1], 0, 1)]
    assert g1["accepted"] < results[(TWO[0], 0, 1)]["accepted"] and set(g1["accept_reasons"]) <= {"random"}

    # Asked again, nothing is redone.
    finished = {g.pk: g.finished_at for g in Generation.objects.filter(experiment__study=study)}
    assert create_study(name="tiny", plan=tiny_plan()).pk == study.pk and study.experiments.count() == 4
    run_study(study=study, workers=1)
    assert {g.pk: g.finished_at for g in Generation.objects.filter(experiment__study=study)} == finished

    report = write_study_report(study=study, output=tmp_path, seconds=1.0, machine="test", device="cpu")
    text = report.read_text()
    assert "held-out test split" in text and "| real vs real (floor) |" in text
    assert "| fully-synthetic/random(human) |" in text
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {r["variant"] for r in rows} == set(TWO)
    assert (tmp_path / "plot-fd.png").read_bytes().startswith(b"\x89PNG")


def test_a_study_name_cannot_be_reused_for_other_settings():
    create_study(name="taken", plan=tiny_plan(variants=TWO[:1], seeds=(0,)))
    other = tiny_plan(variants=TWO[:1], seeds=(0,))
    other = StudyPlan(**{**other.__dict__, "base": other.base.replace(continue_steps=11)})
    with pytest.raises(CurationError, match="exists with other settings"):
        create_study(name="taken", plan=other)
    # More seeds of the same plan join it.
    create_study(name="taken", plan=tiny_plan(variants=TWO[:1], seeds=(0, 1)))
    assert Study.objects.get(name="taken").experiments.count() == 2


def test_a_finished_study_extends_to_more_generations_without_redoing_any():
    study = create_study(name="longer", plan=tiny_plan(variants=TWO[:1], seeds=(0,)))
    run_study(study=study, workers=1)
    before = {g.index: g.finished_at for g in Generation.objects.filter(experiment__study=study)}
    assert sorted(before) == [0, 1] and study.experiments.get().status == Experiment.Status.DONE

    extended = create_study(name="longer", plan=tiny_plan(variants=TWO[:1], seeds=(0,), generations=3))
    experiment = extended.experiments.get()
    assert experiment.status == Experiment.Status.RUNNING and experiment.loop_config.generations == 3
    assert StudyPlan.from_dict(Study.objects.get(pk=study.pk).plan).generations == 3
    assert run_study(study=extended, workers=1) == []
    after = {g.index: g.finished_at for g in Generation.objects.filter(experiment__study=study)}
    assert sorted(after) == [0, 1, 2] and {i: after[i] for i in (0, 1)} == before
    assert (2, ) == tuple(i for (_, _, i) in study_results(study) if i > 1)
    with pytest.raises(CurationError, match="not shorten it to G1"):
        create_study(name="longer", plan=tiny_plan(variants=TWO[:1], seeds=(0,)))


def test_variants_named_first_run_ahead_and_a_report_can_cover_some_variants(monkeypatch, tmp_path):
    from curation import studies

    study = create_study(name="ahead", plan=tiny_plan(seeds=(0,)))
    ran = []
    real = studies.run_generation_of

    def recorded(pk):
        ran.append(Experiment.objects.get(pk=pk).study_variant)
        return real(pk)

    monkeypatch.setattr(studies, "run_generation_of", recorded)
    assert run_study(study=study, workers=1, first=(TWO[1],)) == []
    # Every generation of the variant named first ran before any of the other's.
    assert ran.index(TWO[0]) > max(n for n, name in enumerate(ran) if name == TWO[1])

    Generation.objects.filter(experiment__study_variant=TWO[0]).update(timings={"training": 3600.0})  # not its cost
    write_study_report(study=study, output=tmp_path, seconds=1.0, machine="test", device="cpu", variants=(TWO[1],))
    with (tmp_path / "metrics.csv").open() as handle:
        assert {row["variant"] for row in csv.DictReader(handle)} == {TWO[1]}
    assert f"| {TWO[0]} |" not in (tmp_path / "headline.md").read_text()
    # The cost it states is of that variant's experiment alone.
    hours = sum(sum(t.values()) for t in Generation.objects.filter(experiment__study_variant=TWO[1]).values_list(
        "timings", flat=True)) / 3600
    assert f"The steps of its 1 experiments took {hours:.2f} h" in (tmp_path / "report.md").read_text()
    with pytest.raises(CurationError, match="has no variant 'loop/no'"):
        write_study_report(study=study, output=tmp_path, seconds=1.0, machine="test", device="cpu", variants=("loop/no",))
    with pytest.raises(CommandError, match="--first: study 'ahead' has no variant 'loop/no'"):
        call_command("study", "--name", "ahead", "--first", "loop/no", "--output", str(tmp_path))


def test_a_study_with_fresh_loops_is_not_extended():
    create_study(name="fresh", plan=tiny_plan(variants=("fresh/none",), seeds=(0,)))
    with pytest.raises(CurationError, match="cannot be extended"):
        create_study(name="fresh", plan=tiny_plan(variants=("fresh/none",), seeds=(0,), generations=3))
    assert Experiment.objects.get(study__name="fresh").loop_config.generations == 2


def test_the_command_runs_a_study_and_refuses_bad_ones(tmp_path, capsys):
    call_command("study", "--name", "cli", "--generations", "1", "--seeds", "1", "--preset", "digits-tiny",
                 "--variants", TWO[0], "--workers", "1", "--output", str(tmp_path), "--set", "continue_training=true",
                 "--set", "continue_steps=10")
    assert (tmp_path / "report.md").exists() and (tmp_path / "headline.md").exists()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(CommandError, match="unknown variant"):
        call_command("study", "--name", "x", "--generations", "1", "--output", str(tmp_path), "--variants", "loop/no")
    with pytest.raises(CommandError, match="must be JSON"):
        call_command("study", "--name", "x", "--generations", "1", "--output", str(tmp_path), "--set", "seed=zero")
    with pytest.raises(CommandError, match="real_fraction"):
        call_command("study", "--name", "x", "--generations", "1", "--output", str(tmp_path),
                     "--set", "mix.real_fraction=2")
    with pytest.raises(CommandError, match="no study named"):
        call_command("study", "--name", "never planned", "--output", str(tmp_path), "--report-only")


def test_a_report_joins_the_variants_of_an_earlier_run_when_their_shared_generations_agree(tmp_path):
    call_command("study", "--name", "part", "--generations", "1", "--seeds", "1", "--preset", "digits-tiny",
                 "--variants", TWO[0], "--workers", "1", "--output", str(tmp_path / "mine"),
                 "--set", "continue_training=true", "--set", "continue_steps=10")
    # An earlier run of the other variant, kept as its metrics.csv (here: the same figures under its name).
    lines = (tmp_path / "mine" / "metrics.csv").read_text().splitlines()
    earlier = tmp_path / "earlier" / "metrics.csv"
    earlier.parent.mkdir()
    earlier.write_text("\n".join([lines[0]] + [line.replace(TWO[0], TWO[1], 1) for line in lines[1:]]) + "\n")
    call_command("study", "--name", "part", "--report-only", "--include", str(earlier), "--output", str(tmp_path / "both"))
    report = (tmp_path / "both" / "report.md").read_text()
    assert f"**Run in parts:** this report reads variants from earlier runs' metrics.csv: {TWO[1]} from " \
           f"`earlier/metrics.csv`" in report and str(tmp_path) not in report
    assert "2 ordinary experiments run by the product's pipeline (1 of them in earlier runs, below)" in report
    assert "last invocation" not in report  # (it only reported)
    assert f"| {TWO[1]} |" in (tmp_path / "both" / "headline.md").read_text()
    assert f"{TWO[1]} G1 − {TWO[0]} G1" in report  # compared seed by seed with this study's own variants
    with (tmp_path / "both" / "metrics.csv").open() as handle:
        assert {row["variant"] for row in csv.DictReader(handle)} == set(TWO)
    # Chosen by name, the study's own and the earlier run's alike, in the order named.
    call_command("study", "--name", "part", "--report-only", "--include", str(earlier), "--output", str(tmp_path / "some"),
                 "--variants", f"{TWO[1]},{TWO[0]}")
    headline = (tmp_path / "some" / "headline.md").read_text()
    assert headline.index(f"| {TWO[1]} |") < headline.index(f"| {TWO[0]} |")
    with pytest.raises(CommandError, match="name at least one of study 'part'"):
        call_command("study", "--name", "part", "--report-only", "--include", str(earlier), "--output", str(tmp_path),
                     "--variants", TWO[1])
    with pytest.raises(CommandError, match="nor the included runs have variant 'loop/no'"):
        call_command("study", "--name", "part", "--report-only", "--include", str(earlier), "--output", str(tmp_path),
                     "--variants", f"{TWO[0]},loop/no")
    # A run whose G0 differs ran other settings or data: refused, naming what disagrees.
    fd = lines[0].split(",").index("fd")
    g0 = next(line.split(",") for line in lines[1:] if line.split(",")[2] == "0")
    g0[0], g0[fd] = TWO[1], f"{float(g0[fd]) * 1.05 + 0.05:.5f}"
    earlier.write_text("\n".join([lines[0], ",".join(g0)]) + "\n")
    with pytest.raises(CommandError, match=rf"earlier/metrics.csv: {re.escape(TWO[1])}, seed 0, G0 has fd .* cannot join"):
        call_command("study", "--name", "part", "--report-only", "--include", str(earlier), "--output", str(tmp_path))
    with pytest.raises(CommandError, match="cannot read earlier/missing.csv"):
        call_command("study", "--name", "part", "--report-only", "--include", str(tmp_path / "earlier" / "missing.csv"),
                     "--output", str(tmp_path))


def test_the_g0_row_costs_what_training_each_seeds_g0_took():
    plan = StudyPlan(base=preset("digits-tiny"), seeds=(0, 1, 2), generations=2, reservoir=600,
                     variants=(Variant("fully-synthetic", "none"), Variant("fully-synthetic", "human")))
    results = synthetic_results(plan, shift=0.0)
    trained = {(0, 0): 300.0, (0, 1): 310.0, (1, 2): 290.0}  # (variant, seed): the experiment that trained it
    for n, variant in enumerate(plan.variants):
        for seed in plan.seeds:
            results[(variant.name, seed, 0)]["step_seconds"] = trained.get((n, seed), 5.0)  # the others copy it
            results[(variant.name, seed, 1)]["step_seconds"] = 40.0 + n
    header, rows = headline_table(plan, results, floor={})
    assert header[-1] == "s/generation"
    assert [row[-1] for row in rows] == ["–", "300", "40", "41"]


def test_runs_read_back_join_a_study_only_as_parts_of_it():
    plan = StudyPlan(base=preset("digits-tiny"), seeds=(0, 1, 2), generations=3, reservoir=600,
                     variants=(Variant("fully-synthetic", "human"),))
    other = StudyPlan(base=plan.base, seeds=plan.seeds, generations=3, reservoir=600,
                      variants=(Variant("fully-synthetic", "none"),))
    both = StudyPlan(base=plan.base, seeds=plan.seeds, generations=3, reservoir=600, variants=plan.variants + other.variants)
    results = synthetic_results(both, shift=0.2)
    for seed in plan.seeds:  # every variant of a seed starts from the same G0
        results[(other.variants[0].name, seed, 0)] = results[(plan.variants[0].name, seed, 0)]
    mine = {key: row for key, row in results.items() if key[0] == plan.variants[0].name}
    run = read_metrics_csv(metrics_csv(other, results))
    assert run[("fully-synthetic/none", 1, 2)]["fd"] == pytest.approx(results[("fully-synthetic/none", 1, 2)]["fd"], abs=1e-5)

    joined, merged, taken = include_runs(plan, mine, {"earlier": run})
    assert [v.name for v in joined.variants] == ["fully-synthetic/human", "fully-synthetic/none"]
    assert taken == {"earlier": ["fully-synthetic/none"]} and len(merged) == 2 * 3 * 3
    labels = {c.label for c in comparisons(joined, merged)}
    assert "fully-synthetic/human G2 − fully-synthetic/none G2" in labels
    # Read back with the study's own variant in it too: that variant is not taken from it.
    joined, merged, taken = include_runs(plan, mine, {"all": read_metrics_csv(metrics_csv(both, results))})
    assert taken == {"all": ["fully-synthetic/none"]} and merged[("fully-synthetic/human", 1, 2)] is mine[
        ("fully-synthetic/human", 1, 2)]

    def refused(run: dict, match: str, results: dict = mine) -> None:
        with pytest.raises(ConfigError, match=match):
            include_runs(plan, results, {"earlier": run})

    refused({**run, ("fully-synthetic/none", 2, 0): {**run[("fully-synthetic/none", 2, 0)], "recall": 0.5}},
            "fully-synthetic/none, seed 2, G0 has recall 0.50000 there")
    refused({k: v for k, v in run.items() if k[1] != 1}, "fully-synthetic/none has no G0 for seed 1")
    refused({("loop/no", 0, 0): {}}, "unknown variant 'loop/no'")
    refused(run | {("fully-synthetic/none", s, 0): {"accepted": 3} for s in (0, 1, 2)}, "G0 of seed 0 has none of")
    refused(run, "not finished the G0 of seed 2", {k: v for k, v in mine.items() if k[1] != 2})
    with pytest.raises(ConfigError, match="no generation, seed column"):
        read_metrics_csv("variant,fd\nx,1\n")
    with pytest.raises(ConfigError, match="line 3 of the metrics.csv"):
        read_metrics_csv("variant,seed,generation,fd\nx,0,0,1.0\nx,0,1,high\n")


def synthetic_results(plan: StudyPlan, shift: float, noise: float = 0.01) -> dict:
    """Per-generation metrics where the curated variant's FD is `shift` above the uncurated one's."""
    rng = np.random.default_rng(0)
    results = {}
    for variant in plan.variants:
        for seed in plan.seeds:
            for g in range(plan.generations):
                fd = 1.0 + 0.1 * g + (shift * g if variant.policy != "none" else 0.0) + noise * rng.standard_normal()
                results[(variant.name, seed, g)] = {"fd": fd, "precision": 0.9, "recall": 0.9, "coverage": 0.9,
                                                    "memorization": 0.05}
    return results


def test_the_report_calls_a_difference_only_when_its_corrected_interval_excludes_zero():
    plan = StudyPlan(base=preset("digits-tiny"), seeds=tuple(range(5)), generations=6, reservoir=600,
                     variants=(Variant("fully-synthetic", "none"), Variant("fully-synthetic", "human")))
    results = synthetic_results(plan, shift=0.2)
    assert report_generations(plan, results) == [5]
    # Stopped early (one seed of one variant short of G4 and G5): compared where every experiment is.
    partial = {key: value for key, value in results.items() if not (key[1] == 3 and key[2] >= 4 and "human" in key[0])}
    assert report_generations(plan, partial) == [3]
    assert {c.label for c in comparisons(plan, partial)} == {"fully-synthetic/none G3 − G0", "fully-synthetic/human G3 − G0",
                                                           "fully-synthetic/human G3 − fully-synthetic/none G3"}
    only_g0 = {key: value for key, value in results.items() if key[2] == 0}
    assert report_generations(plan, only_g0) == [] and comparisons(plan, only_g0) == []
    found = {(c.label, c.metric): c for c in comparisons(plan, results)}
    worse = found[("fully-synthetic/human G5 − fully-synthetic/none G5", "fd")]
    assert worse.verdict == "worse" and worse.adjusted_interval.low > 0
    # Metrics that do not move are no difference; one family holds every comparison.
    assert found[("fully-synthetic/human G5 − G0", "precision")].verdict == "no difference"
    assert len(found) == 3 * 5
    # A shift lost in the noise is not called.
    quiet = {(c.label, c.metric): c for c in comparisons(plan, synthetic_results(plan, shift=0.001, noise=0.2))}
    assert quiet[("fully-synthetic/human G5 − fully-synthetic/none G5", "fd")].verdict == "no difference"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_workers_run_a_studys_experiments_in_processes_of_their_own(monkeypatch, media_root, tmp_path):
    """`--workers 2`: spawned processes (a fresh interpreter each) set Django up and run the pipeline on
    the same database and media as the parent."""
    from django.conf import settings

    from tests.conftest import database_url

    study = create_study(name="parallel", plan=tiny_plan(seeds=(0,), generations=2))
    for name, value in (("DATABASE_URL", database_url()), ("MEDIA_ROOT", str(media_root)),
                        ("OUROBOROS_VAR_DIR", str(settings.VAR_DIR))):
        monkeypatch.setenv(name, value)  # what the spawned workers read their settings from
    assert run_study(study=study, workers=2) == []
    assert set(study.experiments.values_list("status", flat=True)) == {Experiment.Status.DONE}
    assert len(study_results(study)) == 4


def test_the_report_counts_the_seeds_where_curation_beat_chance():
    plan = StudyPlan(base=preset("digits-tiny"), seeds=tuple(range(5)), generations=3, reservoir=600,
                     variants=(Variant("fully-synthetic", "none"), Variant("fully-synthetic", "human")))
    results = synthetic_results(plan, shift=0.0)
    for seed in plan.seeds:
        for g in (1, 2):
            # The human curation wins in seeds 0-3 at G1, in seeds 0-1 only at G2 (recall lost there).
            results[("fully-synthetic/human", seed, g)].update(
                chosen_fd=0.5, chance_fd=0.6, chosen_recall=0.7 if seed < (4 if g == 1 else 2) else 0.5,
                chance_recall=0.6)
    assert beats_chance(plan, results, "fully-synthetic/human", 1) == (4, 5)
    assert beats_chance(plan, results, "fully-synthetic/human", 2) == (2, 5)
    assert beats_chance(plan, results, "fully-synthetic/none", 1) == (0, 0)  # accepts everything: not measured
    table = chance_markdown(plan, results)
    assert "| fully-synthetic/human | 4/5 (fd -0.100" in table and "| 2/5 (fd" in table
    assert "fully-synthetic/none" not in table
    assert "No curating variant beat" in chance_statements(plan, results)[0]
    for seed in plan.seeds:
        results[("fully-synthetic/human", seed, 2)]["chosen_recall"] = 0.7
    assert "at every generation in: fully-synthetic/human" in chance_statements(plan, results)[0]


def test_the_report_says_how_close_each_curated_loop_came_to_the_bars_against_g0():
    plan = StudyPlan(base=preset("digits-tiny"), seeds=tuple(range(5)), generations=3, reservoir=600,
                     variants=tuple(Variant(loop, policy) for loop in ("fully-synthetic", "augmentation")
                                    for policy in ("none", "human", "random-matched")))
    rng = np.random.default_rng(1)

    def metrics(variant: Variant, g: int) -> dict:
        fd, recall = {("fully-synthetic", "none"): (1 + 0.5 * g, 0.9 - 0.1 * g),
                      ("fully-synthetic", "human"): (1 + 0.5 * g, 0.9 - 0.02 * g),  # keeps recall: +0.16 at G2
                      ("augmentation", "none"): (1 + 0.05 * g, 0.9),
                      ("augmentation", "human"): (1 - 0.1 * g, 0.9)}.get((variant.loop, variant.policy), (1.0, 0.9))
        return {"fd": fd + 0.01 * rng.standard_normal(), "precision": 0.9, "recall": recall, "coverage": 0.9,
                "memorization": 0.05}

    results = {(v.name, seed, g): metrics(v, g) for v in plan.variants for seed in plan.seeds for g in range(3)}
    found = comparisons(plan, results)
    rows = {row.variant.name: row for row in goal_rows(plan, found, 2)}
    assert set(rows) == {"fully-synthetic/human", "augmentation/human"}  # no uncurated loop, no random filter
    assert rows["augmentation/human"].bars(adjusted=False) == {
        "not worse than G0": True, "better than G0": True, "better than uncurated": True}
    assert rows["fully-synthetic/human"].bars(adjusted=False) == {
        "not worse than G0": False, "better than G0": False, "recall ≥ uncurated +0.10": True}
    table = goal_markdown(plan, results, found)
    assert table.count("\n") == 4 and "| augmentation/human | -0.2" in table
    said = goal_statements(plan, results, found)
    assert said[0].startswith("- Better than G0 at G2") and said[0].endswith("augmentation/human.")
    # Where no loop meets a bar, the report names the closest and its figure.
    for seed in plan.seeds:
        results[("augmentation/human", seed, 2)]["fd"] += 0.5
    said = goal_statements(plan, results, comparisons(plan, results))
    assert said[0].startswith("- No curated loop meets \"better than G0\" at G2; closest on FD: augmentation/human, FD − G0 +0.2")
    assert said[0].endswith("(the bar: its upper end below zero).")
    assert said[1].endswith("(the bar: its upper end at most +0.05).")


def test_staff_watch_a_study_on_its_page_with_its_figures_as_they_stand(client):
    from django.contrib.auth import get_user_model

    study = create_study(name="watched", plan=tiny_plan(seeds=(0, 1, 2)))
    client.force_login(get_user_model().objects.create_user("staff", password="x" * 12, is_staff=True))
    assert "No generation has finished yet" in client.get(f"/studies/{study.pk}/").content.decode()
    assert client.get(f"/studies/{study.pk}/fd.png").status_code == 404
    rng = np.random.default_rng(0)
    for experiment in study.experiments.all():
        for index in (0, 1):
            Generation.objects.update_or_create(experiment=experiment, index=index, defaults={
                "state": Generation.State.DONE, "timings": {"training": 10.0},
                "metrics": {"fd": 1.0 + index * (0.5 if "random" in experiment.study_variant else 0.2)
                            + 0.01 * rng.standard_normal(), "precision": 0.9, "recall": 0.9, "coverage": 0.9,
                            "memorization": 0.05}})
    Generation.objects.filter(experiment=study.experiments.first(), index=1).update(state=Generation.State.TRAINING)

    progress = client.get(f"/studies/{study.pk}/progress.json").json()
    assert progress == {"done": 11, "total": 12, "finished": 0, "experiments": 6, "running": 1}
    assert f'href="/studies/{study.pk}/"' in client.get("/studies/").content.decode()
    page = client.get(f"/studies/{study.pk}/").content.decode()
    # Compared where every experiment has arrived: G0 only while one G1 still trains.
    assert "No generation has finished yet" not in page and "fd G0" in page and "fd G1" not in page
    assert "11 / 12 generations done" in page and "G1 training" in page
    Generation.objects.filter(experiment__study=study, index=1).update(state=Generation.State.DONE)
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert "<td>fully-synthetic/random(human)</td>" in page and "fd G1" in page
    assert "fully-synthetic/random(human) G1 − G0 on fd" in page  # a statement derived from the figures
    plot = client.get(f"/studies/{study.pk}/fd.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert client.get(f"/studies/{study.pk}/vibes.png").status_code == 404
    assert client.get(f"/studies/{study.pk + 1}/").status_code == 404
    experiment = study.experiments.first()
    assert f'href="/studies/{study.pk}/"' in client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert f'href="/studies/{study.pk}/">watched</a> (fully-synthetic' in client.get("/experiments/").content.decode()
