"""The examples run, and the quickstart config reaches the quality the project promises."""

from __future__ import annotations

import runpy

import pytest

from lepton import load_config, run_experiment

from .conftest import ROOT


def test_two_task_fusion_example_runs(capsys, monkeypatch) -> None:
    monkeypatch.setenv("LEPTON_EXAMPLE_EPOCHS", "8")
    module = runpy.run_path(str(ROOT / "examples" / "two_task_fusion.py"))
    metrics = module["main"](epochs=8)
    assert set(metrics) == {"default", "claim", "expected_loss"}
    assert metrics["default"]["accuracy"] > 0.85  # classification reads its own target
    assert metrics["claim"]["r2"] > 0.8  # regression, trained with a regression loss
    assert metrics["expected_loss"]["r2"] > 0.5  # the fused output combines both
    out = capsys.readouterr().out
    assert "applicant_id" in out and "expected_loss" in out


@pytest.mark.slow
def test_quickstart_config_reaches_the_promised_quality(tmp_path) -> None:
    cfg = load_config(ROOT / "examples" / "penguins.yaml", ["logging.progress=false"])
    result = run_experiment(cfg, tmp_path / "run")
    m = result.metrics
    assert m["species"]["accuracy"] >= 0.95
    assert m["sex"]["accuracy"] >= 0.80
    assert m["body_mass_g"]["r2"] >= 0.75


def test_penguins_python_example_runs(tmp_path, capsys) -> None:
    module = runpy.run_path(str(ROOT / "examples" / "penguins.py"))
    module["main"](run_dir=str(tmp_path / "run"), epochs=2)
    out = capsys.readouterr().out
    assert "species" in out and "Δm =" in out
    assert (tmp_path / "run" / "bundle" / "model.safetensors").is_file()
