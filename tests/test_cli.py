"""End to end through the real command line (`python -m lepton` in a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import ROOT, cli_env, run_cli

TINY = {
    "data": {
        "dataset": "penguins",
        "split": {"val": 0.15, "test": 0.2, "seed": 0, "stratify": "species"},
    },
    "tasks": {
        "species": {"kind": "multiclass"},
        "sex": {"kind": "binary"},
        "body_mass_g": {"kind": "regression"},
    },
    "model": {"hidden": [16], "head_hidden": [8]},
    "optim": {"lr": 0.01},
    "train": {"epochs": 3, "batch_size": 64},
}


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def fails(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One trained run directory shared by the tests of this module."""
    base = tmp_path_factory.mktemp("cli")
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    proc = ok(run_cli("train", cfg, "--run-dir", base / "run", "--quiet", "--baselines"))
    peng = pd.read_csv(base / "run" / "sample_input.csv")
    from palmerpenguins import load_penguins

    load_penguins().to_csv(base / "labelled.csv", index=False)
    return {"base": base, "config": cfg, "dir": base / "run", "proc": proc, "sample": peng}


def test_train_prints_metrics_run_dir_and_how_to_predict(run) -> None:
    out = run["proc"].stdout
    for word in ("species", "sex", "body_mass_g", "accuracy", "mae", "single-task", "Δm"):
        assert word in out
    assert f"run directory: {run['dir']}" in out
    assert f"lepton predict {run['dir'] / 'bundle'}" in out
    files = {p.name for p in run["dir"].iterdir()}
    assert {
        "config.yaml",
        "metrics.jsonl",
        "checkpoints",
        "bundle",
        "results.json",
        "sample_input.csv",
    } <= files


def test_results_json_shape(run) -> None:
    res = json.loads((run["dir"] / "results.json").read_text())
    assert set(res["tasks"]) == {"species", "sex", "body_mass_g"}
    assert set(res["tasks"]["sex"]) == {"accuracy", "f1", "auroc"}
    assert res["main_metric"] == {"species": "accuracy", "sex": "accuracy", "body_mass_g": "mae"}
    assert set(res["baselines"]) == {"species", "sex", "body_mass_g"}
    assert isinstance(res["delta_m"], float)
    assert (
        res["efficiency"]["params"]["single_task_total"] > res["efficiency"]["params"]["multi_task"]
    )


def test_evaluate_json_has_the_results_shape(run) -> None:
    proc = ok(run_cli("evaluate", run["dir"], "--data", run["base"] / "labelled.csv", "--json"))
    got = json.loads(proc.stdout)
    res = json.loads((run["dir"] / "results.json").read_text())
    assert set(got) == {"tasks"}
    assert {t: set(m) for t, m in got["tasks"].items()} == {
        t: set(m) for t, m in res["tasks"].items()
    }
    table = ok(run_cli("evaluate", run["dir"] / "bundle", "--data", run["base"] / "labelled.csv"))
    assert "species" in table.stdout and "accuracy" in table.stdout


def test_evaluate_split_reproduces_the_results_file(run) -> None:
    proc = ok(run_cli("evaluate", run["dir"], "--split", "test", "--json"))
    res = json.loads((run["dir"] / "results.json").read_text())
    got = json.loads(proc.stdout)["tasks"]
    assert got.keys() == res["tasks"].keys()
    for task, metrics in res["tasks"].items():
        for name, value in metrics.items():
            assert got[task][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, name)
    ok(run_cli("evaluate", run["dir"] / "bundle", "--split", "val"))
    fails(run_cli("evaluate", run["dir"]), "give either --data FILE or --split")
    both = run_cli("evaluate", run["dir"], "--split", "test", "--data", run["base"] / "x.csv")
    fails(both, "give either --data FILE or --split")


def test_predict_writes_one_column_set_per_task(run, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    ok(run_cli("predict", run["dir"] / "bundle", run["dir"] / "sample_input.csv", "-o", out))
    df = pd.read_csv(out)
    assert (
        "species" in df
        and "species_prob_Gentoo" in df
        and "sex_prob_male" in df
        and "body_mass_g" in df
    )
    assert len(df) == len(run["sample"])
    sub = tmp_path / "sub.parquet"
    ok(
        run_cli(
            "predict",
            run["dir"] / "bundle",
            run["dir"] / "sample_input.csv",
            "-o",
            sub,
            "--tasks",
            "sex",
            "--keep",
            "island",
        )
    )
    assert list(pd.read_parquet(sub).columns) == [
        "island",
        "sex",
        "sex_prob_female",
        "sex_prob_male",
    ]


def test_predict_with_unseen_category_uses_unknown_bucket(run, tmp_path: Path) -> None:
    df = run["sample"].copy()
    df["island"] = "Atlantis"
    df.to_csv(tmp_path / "in.csv", index=False)
    proc = ok(
        run_cli("predict", run["dir"] / "bundle", tmp_path / "in.csv", "-o", tmp_path / "o.csv")
    )
    assert "unknown bucket" in proc.stderr and "island" in proc.stderr
    assert len(pd.read_csv(tmp_path / "o.csv")) == len(df)


def test_existing_run_dir_is_refused_then_overwritten(run, tmp_path: Path) -> None:
    target = tmp_path / "again"
    shutil.copytree(run["dir"], target)
    fails(run_cli("train", run["config"], "--run-dir", target, "-q"), "already exists")
    ok(
        run_cli(
            "train",
            run["config"],
            "--run-dir",
            target,
            "-q",
            "--overwrite",
            "--set",
            "train.epochs=1",
            "--set",
            "balancer.name=uw",
        )
    )
    lines = (target / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    resolved = yaml.safe_load((target / "config.yaml").read_text())
    assert resolved["balancer"]["name"] == "uw" and resolved["train"]["epochs"] == 1


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path: Path, run) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("do not delete")
    fails(
        run_cli("train", run["config"], "--run-dir", tmp_path / "precious", "--overwrite", "-q"),
        "not a Lepton run directory",
    )
    assert (tmp_path / "precious" / "thesis.txt").exists()


def test_resume_continues_a_run(run, tmp_path: Path) -> None:
    target = tmp_path / "r"
    ok(run_cli("train", run["config"], "--run-dir", target, "-q", "--set", "train.epochs=2"))
    cfg = yaml.safe_load((target / "config.yaml").read_text())
    cfg["train"]["epochs"] = 3  # extend the finished run by one epoch
    (target / "config.yaml").write_text(yaml.safe_dump(cfg))
    import torch

    ck = torch.load(target / "checkpoints" / "last.pt", weights_only=True)
    ck["finished"] = False
    torch.save(ck, target / "checkpoints" / "last.pt")
    ok(run_cli("train", run["config"], "--run-dir", target, "-q", "--resume"))
    epochs = [json.loads(x)["epoch"] for x in (target / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    fails(
        run_cli("train", run["config"], "--run-dir", tmp_path / "none", "--resume"), "cannot resume"
    )


def _bad_csv(tmp_path: Path, mutate) -> Path:
    from palmerpenguins import load_penguins

    df = load_penguins()
    mutate(df)
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_key", "train.epoch: unknown field"),
        ("wrong_type", "train.epochs: Input should be a valid integer"),
        ("bad_set", "optim.lr: Input should be greater than 0"),
        ("missing_config", "config file not found"),
        ("missing_data", "data file not found"),
        ("missing_column", "feature column 'beak_mm' not found; the data has: species, island"),
        ("non_numeric", "column 'bill_depth_mm' must be numeric, but row 8 holds 'deep'"),
        ("all_labels_missing", "task 'sex': every label in the training split is missing"),
        ("unknown_dataset", "unknown dataset 'pengwings'"),
        ("unknown_balancer", "balancer.name: unknown method 'pcgard'"),
        ("bad_monitor", "train.early_stopping.monitor: unknown value 'sex.mae'"),
    ],
)
def test_bad_input_gets_one_clear_error(case: str, message: str, tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(TINY))
    extra: list[str] = []
    path = tmp_path / "c.yaml"
    if case == "unknown_key":
        cfg["train"]["epoch"] = 3
    elif case == "wrong_type":
        cfg["train"]["epochs"] = "ten"
    elif case == "bad_set":
        extra = ["--set", "optim.lr=-1"]
    elif case == "missing_config":
        path = tmp_path / "nope.yaml"
    elif case == "missing_data":
        cfg["data"] = {"path": str(tmp_path / "missing.csv"), "features": {"numeric": ["x"]}}
    elif case == "missing_column":
        cfg["data"]["features"] = {"numeric": ["beak_mm"]}
    elif case == "non_numeric":
        bad = _bad_csv(
            tmp_path,
            lambda df: (
                df.__setitem__("bill_depth_mm", df["bill_depth_mm"].astype(object))
                or df.__setitem__("bill_depth_mm", df["bill_depth_mm"].where(df.index != 7, "deep"))
            ),
        )
        cfg["data"] = {
            "path": str(bad),
            "features": {"numeric": ["bill_length_mm", "bill_depth_mm"]},
        }
    elif case == "all_labels_missing":
        bad = _bad_csv(tmp_path, lambda df: df.__setitem__("sex", np.nan))
        cfg["data"] = {"path": str(bad), "features": {"numeric": ["bill_length_mm"]}}
    elif case == "unknown_dataset":
        cfg["data"]["dataset"] = "pengwings"
    elif case == "unknown_balancer":
        extra = ["--set", "balancer.name=pcgard"]
    elif case == "bad_monitor":
        extra = ["--set", "train.early_stopping.monitor=sex.mae"]
    if case != "missing_config":
        path.write_text(yaml.safe_dump(cfg))
    proc = run_cli("train", path, "--run-dir", tmp_path / "run", "-q", *extra)
    fails(proc, message)
    # the input is checked before the run directory is made: the fixed command just works
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_input_to_evaluate_and_predict_gets_one_clear_error(
    run, tmp_path: Path, command: str
) -> None:
    labelled = pd.read_csv(run["base"] / "labelled.csv")

    def call(target: Path, data: Path) -> subprocess.CompletedProcess:
        if command == "evaluate":
            return run_cli("evaluate", target, "--data", data)
        return run_cli("predict", target / "bundle", data, "-o", tmp_path / "out.csv")

    fails(call(run["dir"], tmp_path / "missing.csv"), "data file not found")
    fails(call(tmp_path / "no_run", run["base"] / "labelled.csv"), "bundle not found")
    labelled.drop(columns=["island"]).to_csv(tmp_path / "no_island.csv", index=False)
    fails(call(run["dir"], tmp_path / "no_island.csv"), "feature column 'island' not found")
    bad = labelled.astype({"bill_depth_mm": object})
    bad.loc[7, "bill_depth_mm"] = "deep"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = call(run["dir"], tmp_path / "bad.csv")
    fails(proc, "column 'bill_depth_mm' must be numeric")
    assert "row 8" in proc.stderr  # the row (1 = the first data row) and the column are named
    assert not (tmp_path / "out.csv").exists()


def test_an_output_path_the_file_system_refuses_is_a_user_error(run, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder")
    sample = run["dir"] / "sample_input.csv"
    proc = run_cli("predict", run["dir"] / "bundle", sample, "-o", a_file / "out.csv")
    fails(proc, f"error: {a_file}")
    assert "internal error" not in proc.stderr
    proc = run_cli("train", run["config"], "--run-dir", a_file / "run", "-q")
    fails(proc, f"error: {a_file / 'run'}: Not a directory")
    assert a_file.read_text() == "a file, not a folder"


def test_overwrite_with_bad_input_keeps_the_previous_run(run, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run["dir"], copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    proc = run_cli(
        "train", run["config"], "--run-dir", copy, "--overwrite", "-q", "--set", "balancer.c=1"
    )
    fails(proc, "balancer.c: unknown hyperparameter of 'ew'")
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
    assert (copy / "bundle" / "model.safetensors").is_file()


def test_usage_errors_exit_non_zero() -> None:
    proc = run_cli("train")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
    proc = run_cli("predict", "x", "y", "-o", "out.xlsx")
    assert proc.returncode == 1 and "unsupported file type '.xlsx'" in proc.stderr


def test_datasets_and_module_entry_point_agree() -> None:
    a = ok(run_cli("datasets", "--json"))
    rows = json.loads(a.stdout)
    assert {r["name"] for r in rows} >= {"penguins", "synthetic"}
    penguins = next(r for r in rows if r["name"] == "penguins")
    assert penguins["tasks"] == {
        "species": "multiclass",
        "sex": "binary",
        "body_mass_g": "regression",
    }
    script = shutil.which("lepton", path=str(Path(sys.executable).parent))
    if script is not None:
        b = subprocess.run(
            [script, "datasets", "--json"], capture_output=True, text=True, env=cli_env(), cwd=ROOT
        )
        assert b.returncode == 0 and json.loads(b.stdout) == rows
    assert ok(run_cli("--version")).stdout.startswith("lepton ")
