"""The collapse study: variants from a shared G0, resumable, with its report, table and plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from curation.ml.experiment_config import ConfigError, preset
from curation.ml.study import StudyPlan, run_study, study_variants, write_outputs


def tiny_plan(output, variants=("fully-synthetic/none", "augmentation/human+disc+guard"), generations=3):
    chosen = {v.name: v for v in study_variants()}
    return StudyPlan(
        base=preset("digits-tiny").replace(continue_training=True, continue_steps=10),
        variants=tuple(chosen[name] for name in variants),
        seeds=(0, 1),
        generations=generations,
        output=output,
        device="cpu",
        preset="digits-tiny",
    )


def test_the_variant_list_covers_the_study_design():
    names = [v.name for v in study_variants()]
    assert names[0] == "fully-synthetic/none"
    for policy in ("human", "disc", "human+disc"):
        assert f"fully-synthetic/{policy}" in names and f"fully-synthetic/{policy}+guard" in names
    for loop in ("augmentation", "fresh", "accumulate"):
        assert f"{loop}/none" in names and f"{loop}/human+disc+guard" in names
    assert names[-1] == "real-only/none"
    assert len(names) == len(set(names)) == 14


def test_variants_share_g0_and_differ_after_it(tmp_path):
    plan = tiny_plan(tmp_path)
    run = run_study(plan, workers=1)
    assert run.steps_run == 2 + 2 * 2 * 3 and run.steps_reused == 0
    for seed in plan.seeds:
        synthetic = run.results[("fully-synthetic/none", seed, 0)]
        augmented = run.results[("augmentation/human+disc+guard", seed, 0)]
        # The same G0 model and samples: identical quality metrics; the curation differs.
        assert synthetic["fd"] == augmented["fd"] and synthetic["recall"] == augmented["recall"]
        assert synthetic["acceptance_rate"] == 1.0 and augmented["acceptance_rate"] < 1.0
        g1_synthetic = run.results[("fully-synthetic/none", seed, 1)]
        g1_augmented = run.results[("augmentation/human+disc+guard", seed, 1)]
        assert g1_synthetic["train_real"] == 0 and g1_synthetic["train_synthetic"] == 96 and g1_synthetic["shortfall"] == 204
        assert g1_augmented["train_real"] == 150 and 0 < g1_augmented["train_synthetic"] <= 150
        assert g1_synthetic["fd"] != g1_augmented["fd"]
    # Seeds are different runs.
    assert run.results[("fully-synthetic/none", 0, 0)]["fd"] != run.results[("fully-synthetic/none", 1, 0)]["fd"]

    judged = write_outputs(run, machine="test machine")
    report = (tmp_path / "report.md").read_text()
    assert "fully-synthetic/none" in report and "## What the figures show" in report
    assert "uncurated fully-synthetic loop (the MAD baseline)" in report
    for metric in ("fd", "precision", "recall", "coverage", "classes_covered", "acceptance_rate"):
        assert (tmp_path / f"plot-{metric}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"### {metric}" in report
    assert (tmp_path / "grids" / "g02-fully-synthetic--none.png").exists()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 2 * 2 * 3
    row = next(r for r in rows if r["variant"] == "fully-synthetic/none" and r["seed"] == "1" and r["generation"] == "2")
    assert float(row["fd"]) == pytest.approx(run.results[("fully-synthetic/none", 1, 2)]["fd"], abs=1e-4)
    # The verdict is computed from the figures, both ways.
    for name, verdict in judged.items():
        fd0 = np.mean([run.results[(name, s, 0)]["fd"] for s in plan.seeds])
        fd2 = np.mean([run.results[(name, s, 2)]["fd"] for s in plan.seeds])
        assert verdict["fd_change"] == pytest.approx(fd2 - fd0)
        assert verdict["better"] == (fd2 <= fd0 and verdict["precision_change"] >= 0 and verdict["recall_change"] >= 0)


def test_an_interrupted_study_resumes_without_redoing_finished_steps(tmp_path):
    plan = tiny_plan(tmp_path, variants=("fully-synthetic/human+disc",), generations=2)
    first = run_study(plan, workers=2)
    before = json.loads((plan.folder(1, plan.variants[0], 1) / "result.json").read_text())
    # As if killed after training G1 of seed 1 but before it was measured and curated.
    (plan.folder(1, plan.variants[0], 1) / "result.json").unlink()
    (plan.folder(1, plan.variants[0], 1) / "samples.npy").unlink()
    again = run_study(plan, workers=1)
    assert again.steps_run == 1 and again.steps_reused == first.steps_run - 1
    after = json.loads((plan.folder(1, plan.variants[0], 1) / "result.json").read_text())
    assert after["fd"] == pytest.approx(before["fd"])
    assert after["accepted"] == before["accepted"]

    # The folder resumes only its own study: other settings are refused before anything runs.
    with pytest.raises(ConfigError, match=r"other generations"):
        run_study(dataclasses.replace(plan, generations=3))
    with pytest.raises(ConfigError, match=r"mix.real_fraction: 0.5 → 0.8"):
        run_study(dataclasses.replace(plan, base=plan.base.replace(**{"mix.real_fraction": 0.8})))


def test_bad_studies_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 generations"):
        tiny_plan(tmp_path, generations=1).validate()
    with pytest.raises(CommandError, match="unknown variant"):
        call_command("study", "--generations", "1", "--output", str(tmp_path), "--variants", "loop/nothing")
    with pytest.raises(CommandError, match="the value must be JSON"):
        call_command("study", "--generations", "1", "--output", str(tmp_path), "--set", "sample.sampler=ddim")
    with pytest.raises(CommandError, match=r"mix.real_fraction must be a number from 0 to 1, not 2"):
        call_command("study", "--generations", "1", "--output", str(tmp_path), "--set", "mix.real_fraction=2")


def test_the_command_writes_the_report(tmp_path, capsys):
    call_command("study", "--generations", "1", "--seeds", "1", "--preset", "digits-tiny",
                 "--variants", "fully-synthetic/none,fresh/human+disc+guard", "--workers", "1",
                 "--set", "mix.real_fraction=0.8", "--output", str(tmp_path / "study"))
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| fresh/human+disc+guard |" in report
    assert "Settings changed from the preset: mix.real_fraction: 0.5 → 0.8." in report
    assert "wrote" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "study")
