"""Balancers inside Lepton's trainer and CLI: selectable by name with hyperparameters, weights and
gradient conflicts logged to ``metrics.jsonl``, state resumed exactly, bad input one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lepton import MultiTaskModel, Trainer, config_from_dict, prepare_data
from lepton.data.tensors import BatchLoader
from lepton.jacobian import trace_tasks
from lepton.train import TrainingInterrupted

from ..conftest import run_cli


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "monitor" in r]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "extra"),
    [("nash_mtl", ["balancer.max_norm=2.0"]), ("mgda", ["balancer.mode=features"])],
)
def test_cli_trains_with_a_gradient_method_and_logs_weights_and_conflicts(
    tiny_config, write_config, tmp_path: Path, name: str, extra: list[str]
) -> None:
    cfg = write_config(tiny_config)
    sets = [a for kv in [f"balancer.name={name}", *extra] for a in ("--set", kv)]
    proc = run_cli("train", cfg, "--run-dir", tmp_path / "run", "--quiet", *sets)
    assert proc.returncode == 0, proc.stderr
    records = _epochs(tmp_path / "run")
    assert len(records) == tiny_config["train"]["epochs"]
    tasks = list(tiny_config["tasks"])
    for rec in records:
        weights = rec["train"]["weights"]
        assert sorted(weights) == sorted(tasks) and all(v == v for v in weights.values())
        cos = rec["train"]["grad_cosine"]
        assert sorted(cos) == sorted(tasks)
        assert all(-1 <= v <= 1 for row in cos.values() for v in row.values())


@pytest.mark.parametrize(
    ("sets", "message"),
    [(["balancer.name=cagrad", "balancer.c=-1"], "balancer (cagrad): c must be >= 0")],
)
def test_cli_bad_balancer_settings_are_one_clear_error(
    tiny_config, write_config, tmp_path: Path, sets: list[str], message: str
) -> None:
    cfg = write_config(tiny_config)
    args = [a for kv in sets for a in ("--set", kv)]
    proc = run_cli("train", cfg, "--run-dir", tmp_path / "run", "--quiet", *args)
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())  # the console may wrap a long line
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def _trainer(tiny_config: dict, run_dir: Path, balancer: str, **options: Any) -> tuple:
    config = config_from_dict({**tiny_config, "balancer": {"name": balancer, **options}})
    data = prepare_data(config.data, config.build_tasks())
    model = MultiTaskModel.for_data(data, config.model)
    trainer = Trainer(
        model,
        balancer=config.balancer.name,
        balancer_options=config.balancer.options,
        optim=config.optim,
        train=config.train,
        preprocessor=data.preprocessor,
        run_dir=run_dir,
        progress=False,
    )
    return trainer, data


def test_the_trainers_representation_splits_cleanly(tiny_config, tmp_path: Path) -> None:
    trainer, data = _trainer(tiny_config, tmp_path / "r", "mgda", mode="features")
    model = trainer.model
    batch = next(iter(BatchLoader(data.train, 16, shuffle=False, seed=0)))
    rep = model.representation(batch.inputs)
    outputs = model.heads_forward(rep, trainer.names)
    losses, _ = trainer._losses(outputs, batch)
    graph = trace_tasks(losses, rep, model.shared_parameters())
    assert graph.clean  # so mode=features costs one backward through the heads


@pytest.mark.slow
@pytest.mark.parametrize(("balancer", "options"), [("moco", {}), ("famo", {})])
def test_resume_is_exact_with_a_stateful_balancer(
    tiny_config, tmp_path: Path, balancer: str, options: dict
) -> None:
    straight, data = _trainer(tiny_config, tmp_path / "a", balancer, **options)
    straight.fit(data.train, data.val)

    first, data = _trainer(tiny_config, tmp_path / "b", balancer, **options)
    first.add_step_hook(lambda t: t.request_stop() if t.step == 6 else None)
    with pytest.raises(TrainingInterrupted):
        first.fit(data.train, data.val)
    resumed, data = _trainer(tiny_config, tmp_path / "b", balancer, **options)
    resumed.fit(data.train, data.val, resume=True)

    for (n, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), n
    for key, value in straight.balancer.state_dict().items():
        assert torch.equal(value, resumed.balancer.state_dict()[key]), key


def test_epoch_based_loss_weighting_in_the_trainer(tiny_config, tmp_path: Path) -> None:
    tiny_config["train"]["epochs"] = 4
    trainer, data = _trainer(tiny_config, tmp_path / "run", "dwa")
    trainer.fit(data.train, data.val)
    records = _epochs(tmp_path / "run")
    weights = [r["train"]["weights"] for r in records]
    assert all(v == 1.0 for w in weights[:2] for v in w.values())  # DWA: 1 for two epochs
    assert any(abs(v - 1.0) > 1e-6 for v in weights[3].values())
    assert sum(weights[3].values()) == pytest.approx(3.0)  # then K·softmax
    assert "grad_cosine" not in records[0]["train"]  # a loss weighting has no task gradients
