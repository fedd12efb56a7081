"""Every architecture end to end: config → training (two balancers) → bundle → predictions;
single-task baselines with each architecture; gate logging; gradient balancers on
per-task representations; exact resume; the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lepton import Bundle, MultiTaskModel, Trainer, config_from_dict, evaluate, run_experiment
from lepton.data import from_frame, make_synthetic, prepare_data
from lepton.errors import ConfigError
from lepton.train import TrainingInterrupted

from .conftest import run_cli

ARCHS = ["shared_bottom", "mmoe", "cgc", "ple", "cross_stitch", "dselect_k", "single_task"]
GATED = {"mmoe", "cgc", "ple", "dselect_k"}


def arch_config(arch: str, balancer: str, epochs: int = 3) -> dict[str, Any]:
    return {
        "data": {"dataset": "penguins", "split": {"val": 0.15, "test": 0.2, "seed": 0}},
        "tasks": {
            "species": {"kind": "multiclass"},
            "sex": {"kind": "binary"},
            "body_mass_g": {"kind": "regression"},
        },
        "model": {"architecture": arch, "hidden": [16], "head_hidden": [8]},
        "balancer": {"name": balancer},
        "optim": {"lr": 0.01},
        "train": {"epochs": epochs, "batch_size": 64, "seed": 0},
        "logging": {"progress": False},
    }


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["ew", "uw", "upgrad"])
@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_trains_from_config_and_round_trips(
    arch: str, balancer: str, tmp_path: Path
) -> None:
    cfg = config_from_dict(arch_config(arch, balancer))
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    # the bundle, loaded from disk, reproduces the run's test metrics exactly
    bundle = Bundle.load(tmp_path / "run")
    assert bundle.model.spec()["trunk"]["architecture"] == arch
    data = prepare_data(cfg.data, cfg.build_tasks())
    again = evaluate(bundle.model, data.test, bundle.tasks, bundle.preprocessor).metrics
    assert again == saved["tasks"] == result.metrics
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(x["train"]["total_loss"]) for x in lines)
    gates = lines[-1]["train"].get("gates")
    if arch in GATED:
        assert {"species", "sex", "body_mass_g"} <= set(gates)
        assert all(sum(v.values()) == pytest.approx(1.0) for v in gates.values())
        # each weight is named by the expert it weights
        labels = bundle.model.trunk.gate_labels()
        assert {k: list(v) for k, v in gates.items()} == {k: labels[k] for k in gates}
    else:
        assert gates is None


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_single_task_baselines_with_each_architecture(arch: str, tmp_path: Path) -> None:
    cfg = config_from_dict(arch_config(arch, "ew", epochs=1))
    result = run_experiment(cfg, tmp_path / "run", progress=False, baselines=True)
    assert set(result.baselines) == {"species", "sex", "body_mass_g"}
    assert result.delta_m is not None and np.isfinite(result.delta_m)
    eff = result.efficiency["params"]
    assert eff["multi_task"] > 0 and eff["single_task_total"] > 0
    if arch == "single_task":  # K single-task trunks = the K baselines, parameter for parameter
        assert eff["multi_task"] == eff["single_task_total"]


@pytest.mark.parametrize("arch", ["mmoe", "cross_stitch", "single_task"])
def test_gradient_balancers_on_per_task_representations(arch: str, tmp_path: Path) -> None:
    # these trunks give each task its own representation: a gradient method works on the shared
    # parameters (mode auto → params) and logs the task-gradient conflicts ...
    cfg = config_from_dict(arch_config(arch, "pcgrad", epochs=1))
    run_experiment(cfg, tmp_path / "run", progress=False)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(line["train"]["total_loss"])
    if arch != "single_task":  # nothing is shared between single-task trunks: nothing to compare
        assert line["train"]["grad_cosine"] is not None
    # ... and asking for the representation mode is a clear configuration error
    raw = arch_config(arch, "mgda", epochs=1)
    raw["balancer"]["mode"] = "features"
    with pytest.raises(ConfigError, match="mode 'features' needs the shared representation"):
        run_experiment(config_from_dict(raw), tmp_path / "run2", progress=False)


def _fit(model: MultiTaskModel, data, run_dir: Path, stop_at: int | None = None) -> Trainer:
    trainer = Trainer(
        model, balancer="uw", train={"epochs": 2, "batch_size": 32, "seed": 1},
        run_dir=run_dir, progress=False,
    )  # fmt: skip
    if stop_at is not None:
        trainer.add_step_hook(lambda t: t.request_stop() if t.step == stop_at else None)
    return trainer


def test_resume_is_exact_and_logs_the_same_gates(tmp_path: Path) -> None:
    from lepton import Task

    tasks = [Task("flag", "binary"), Task("score", "regression")]
    data = from_frame(make_synthetic(300, seed=2), tasks, numeric=[f"x{i}" for i in range(10)],
                      categorical=["group"])  # fmt: skip
    config = {"architecture": "ple", "hidden": [8], "num_levels": 2}
    whole = _fit(MultiTaskModel.for_data(data, config), data, tmp_path / "a")
    whole.fit(data.train, data.val)
    part = _fit(MultiTaskModel.for_data(data, config), data, tmp_path / "b", stop_at=5)
    with pytest.raises(TrainingInterrupted):
        part.fit(data.train, data.val)
    resumed = _fit(MultiTaskModel.for_data(data, config), data, tmp_path / "b")
    resumed.fit(data.train, data.val, resume=True)
    for (n, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(p, q), n

    def logged(d: str) -> list[dict]:
        rows = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]

    assert logged("a") == logged("b")
    assert "level1/shared" in logged("a")[0]["train"]["gates"]


# ---------------------------------------------------------------------------------- the CLI
def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc


def fails(proc, message: str) -> None:
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_trains_and_predicts_with_an_architecture_and_its_options(tmp_path: Path) -> None:
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(arch_config("mmoe", "uw", epochs=2)))
    run = tmp_path / "run"
    proc = ok(run_cli("train", cfg, "--run-dir", run, "--quiet",
                      "--set", "model.architecture=dselect_k", "--set", "model.num_experts=3",
                      "--set", "model.k=1"))  # fmt: skip
    assert "sample_input.csv" in proc.stdout
    meta = json.loads((run / "bundle" / "lepton.json").read_text())
    assert meta["model"]["trunk"] == {
        "architecture": "dselect_k", "hidden": [16], "dropout": 0.1, "batch_norm": True,
        "activation": "relu", "num_experts": 3, "k": 1, "gamma": 1.0,
    }  # fmt: skip
    ok(run_cli("predict", run / "bundle", run / "sample_input.csv", "-o", tmp_path / "p.csv"))
    assert len(pd.read_csv(tmp_path / "p.csv")) == 20
    fails(
        run_cli("train", cfg, "--run-dir", tmp_path / "r2", "--set", "model.num_experts=0"),
        "error: model (mmoe): num_experts must be an integer >= 1, got 0",
    )


def _stripes(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 2, n), rng.integers(0, 3, n)
    imgs = rng.integers(0, 40, size=(n, 10, 10)).astype(np.uint8)
    for i in range(n):
        imgs[i, 2 + 4 * rows[i], :] = 255
        imgs[i, :, 1 + 3 * cols[i]] = 200
    return {"images": imgs, "row": rows, "col": cols, "id": np.arange(n) + 1000 * seed}


@pytest.mark.slow
def test_cli_image_run_predicts_and_evaluates_from_array_files(tmp_path: Path) -> None:
    import yaml

    for split, (n, seed) in {"train": (80, 0), "val": (20, 1), "test": (30, 2)}.items():
        np.savez(tmp_path / f"{split}.npz", **_stripes(n, seed))
    cfg = {
        "data": {"images": {s: str(tmp_path / f"{s}.npz") for s in ("train", "val", "test")},
                 "augment": {"shift": 1}},
        "tasks": {"row": {"kind": "binary"}, "col": {"kind": "multiclass"}},
        "model": {"architecture": "cgc", "hidden": [8], "cnn": {"channels": [4, 8]}},
        "balancer": {"name": "uw"},
        "train": {"epochs": 2, "batch_size": 16},
        "logging": {"progress": False},
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = tmp_path / "run"
    proc = ok(run_cli("train", tmp_path / "c.yaml", "--run-dir", run, "--quiet"))
    assert "sample_input.npy" in proc.stdout
    assert np.load(run / "sample_input.npy").shape == (20, 1, 10, 10)
    out = tmp_path / "p.csv"
    ok(run_cli("predict", run / "bundle", tmp_path / "test.npz", "-o", out, "--keep", "id"))
    pred = pd.read_csv(out)
    assert list(pred.columns[:3]) == ["id", "row", "row_prob_0"] and pred["id"].iloc[0] == 2000
    proc = ok(run_cli("evaluate", run, "--data", tmp_path / "test.npz", "--json"))
    saved = json.loads((run / "results.json").read_text())["tasks"]
    assert json.loads(proc.stdout)["tasks"] == saved
    # labels in a table and images in an .npy give the same numbers
    arrays = np.load(tmp_path / "test.npz")
    np.save(tmp_path / "test_images.npy", arrays["images"])
    pd.DataFrame({"row": arrays["row"], "col": arrays["col"]}).to_csv(tmp_path / "t.csv")
    proc = ok(run_cli("evaluate", run, "--data", tmp_path / "t.csv", "--images",
                      tmp_path / "test_images.npy", "--json"))  # fmt: skip
    assert json.loads(proc.stdout)["tasks"] == saved


def test_cli_lists_the_new_datasets_with_their_options() -> None:
    proc = ok(run_cli("datasets", "--json"))
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["mmoe_synthetic"]["options"]["correlation"] == 0.5
    assert rows["mmoe_synthetic"]["tasks"] == {"y1": "regression", "y2": "regression"}
    assert rows["multi_mnist"]["images"] is True
    assert rows["multi_mnist"]["tasks"] == {"left": "multiclass", "right": "multiclass"}
    assert rows["penguins"]["images"] is False and rows["penguins"]["options"] == {}
