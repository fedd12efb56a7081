"""Trainer: determinism, exact resume, early stopping, NaN guard, logs, regularisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lepton import MultiTaskModel, Task, Trainer, TrainingError
from lepton.data import from_frame
from lepton.train import TrainingInterrupted, load_checkpoint

TASKS = [
    Task("y_bin", "binary"),
    Task("y_cls", "multiclass"),
    Task("tags", "multilabel", target=("l1", "l2")),
    Task("y_reg", "regression"),
]


@pytest.fixture
def data(small_frame):
    return from_frame(small_frame, TASKS, numeric=["a", "b", "c"], categorical=["color"], seed=0)


def trainer(data, run_dir=None, **train) -> Trainer:
    model = MultiTaskModel.for_data(data, {"hidden": [16], "head_hidden": [8], "dropout": 0.2})
    cfg = {"epochs": 4, "batch_size": 16, "seed": 0, **train}
    return Trainer(
        model,
        balancer="uw",
        optim={"name": "adamw", "lr": 0.01, "weight_decay": 0.01, "scheduler": {"name": "cosine"}},
        train=cfg,
        augment={"noise_std": 0.1, "feature_dropout": 0.1},
        preprocessor=data.preprocessor,
        run_dir=run_dir,
        progress=False,
    )


def params(t: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*t.model.parameters(), *t.balancer.parameters()]]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_training_is_deterministic_and_learns(data) -> None:
    a, b = trainer(data), trainer(data)
    ra, rb = a.fit(data.train, data.val), b.fit(data.train, data.val)
    assert same(params(a), params(b))
    losses = [h["train"]["total_loss"] for h in ra.history]
    assert losses[-1] < losses[0]
    assert ra.epochs_completed == 4 and rb.epochs_completed == 4


def test_resume_after_a_crash_continues_from_the_last_epoch_checkpoint(
    data, tmp_path: Path
) -> None:
    full = trainer(data, restore_best=False)
    full.fit(data.train, data.val)
    crashed = trainer(data, tmp_path / "run", restore_best=False)
    per_epoch = -(-len(data.train) // 16)

    def crash(t: Trainer) -> None:
        if t.step == 2 * per_epoch + 1:  # one step into epoch 3: nothing saved since epoch 2
            raise RuntimeError("simulated crash")

    crashed.add_step_hook(crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(data.train, data.val)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = trainer(data, tmp_path / "run", restore_best=False)
    resumed.fit(data.train, data.val, resume=True)
    assert same(params(full), params(resumed))
    epochs = [
        json.loads(x)["epoch"]
        for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3, 4]


def test_resume_mid_epoch_after_interrupt_is_bit_identical(data, tmp_path: Path) -> None:
    full = trainer(data, tmp_path / "full", restore_best=False)
    full.fit(data.train, data.val)
    interrupted = trainer(data, tmp_path / "run", restore_best=False)
    interrupted.add_step_hook(lambda t: t.request_stop() if t.step == 7 else None)
    with pytest.raises(TrainingInterrupted, match="continue with --resume"):
        interrupted.fit(data.train, data.val)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 7 and state["loader"]["position"] > 0  # stopped inside an epoch
    resumed = trainer(data, tmp_path / "run", restore_best=False)
    resumed.fit(data.train, data.val, resume=True)
    assert same(params(full), params(resumed))
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    run_log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time_s"}  # noqa: E731
    assert [strip(x) for x in full_log] == [strip(x) for x in run_log]


def test_metrics_log_has_per_task_losses_weights_and_metrics(data, tmp_path: Path) -> None:
    t = trainer(data, tmp_path / "run")
    t.fit(data.train, data.val)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4]
    rec = lines[-1]
    names = [t.name for t in TASKS]
    assert list(rec["train"]["loss"]) == names
    assert list(rec["train"]["weights"]) == names
    assert set(rec["val"]["metrics"]["y_reg"]) == {"mae", "rmse", "r2"}
    assert rec["monitor"]["name"] == "loss"
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "last.pt"]  # no temporary files left behind


def test_early_stopping_restores_the_best_epoch(data) -> None:
    t = trainer(
        data, epochs=50, restore_best=True, early_stopping={"monitor": "y_reg.mae", "patience": 2}
    )
    t.optim_cfg  # noqa: B018
    result = t.fit(data.train, data.val)
    assert result.stopped_early
    assert result.epochs_completed == result.best_epoch + 2
    best = min(h["val"]["metrics"]["y_reg"]["mae"] for h in result.history)
    now = t.evaluate(data.val).metrics["y_reg"]["mae"]
    assert now == pytest.approx(best, rel=1e-5)


def test_monitor_errors_name_the_choices(data) -> None:
    from lepton import ConfigError

    with pytest.raises(ConfigError, match=r"unknown value 'y_reg\.accuracy'"):
        trainer(data, early_stopping={"monitor": "y_reg.accuracy", "patience": 2})
    with pytest.raises(ConfigError, match="'delta_m' needs single-task baselines"):
        trainer(data, early_stopping={"monitor": "delta_m", "patience": 2})


def test_nan_guard_stops_clearly_and_keeps_the_last_good_state(data, tmp_path: Path) -> None:
    t = trainer(data, tmp_path / "run")
    good = params(t)
    original = t.model.heads_forward

    def poisoned(rep, tasks=None):
        out = original(rep, tasks)
        if t.step == 3:
            out["y_reg"] = out["y_reg"] * float("nan")
        return out

    t.model.heads_forward = poisoned
    with pytest.raises(
        TrainingError, match=r"loss of task\(s\) y_reg became non-finite.*last good state"
    ):
        t.fit(data.train, data.val)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not same(good, params(t))  # three good steps were taken and kept


def test_batch_without_labels_for_a_task_is_harmless(small_frame) -> None:
    df = small_frame.copy()
    df.loc[df.index[:60], "y_reg"] = float("nan")  # the first half has no regression label
    data = from_frame(df, TASKS, numeric=["a", "b", "c"], categorical=["color"], val=0.0, test=0.0)
    t = trainer(data, batch_size=8)
    t.cfg.batch_size  # noqa: B018
    result = t.fit(data.train)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert all(v is not None for v in result.history[-1]["train"]["loss"].values())


def test_l1_l2_penalties_add_their_gradients() -> None:
    from lepton.train import add_penalty_gradients

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0]))
    w.grad = torch.zeros(3)
    add_penalty_gradients([w], l1=0.5, l2=0.1)
    assert torch.allclose(w.grad, torch.tensor([0.5 + 0.1, -0.5 - 0.2, 0.0]))


@pytest.mark.parametrize("name", ["cosine", "step", "plateau", "none"])
def test_every_schedule_trains(data, name: str) -> None:
    from lepton.config import OptimConfig
    from lepton.train import build_scheduler

    model = MultiTaskModel.for_data(data, {"hidden": [8]})
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    assert (build_scheduler(OptimConfig(lr=0.01, scheduler={"name": name}), opt, 4) is None) == (
        name == "none"
    )
    warmup = 0 if name == "plateau" else 1
    cfg = OptimConfig(lr=0.01, scheduler={"name": name, "warmup_epochs": warmup, "step_size": 1})
    t = Trainer(model, optim=cfg, train={"epochs": 3, "batch_size": 32}, progress=False)
    result = t.fit(data.train, data.val)
    lrs = [h["lr"] for h in result.history]
    if warmup:
        assert lrs[0] == pytest.approx(0.005)  # warm-up starts at lr / (warmup_epochs + 1)
    if name in ("cosine", "step"):
        assert lrs[2] < lrs[1]


def test_cosine_schedule_reaches_min_lr() -> None:
    from lepton.config import OptimConfig
    from lepton.train import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(
        OptimConfig(lr=1.0, scheduler={"name": "cosine", "min_lr": 0.1}), opt, 5
    )
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_grad_clip_bounds_the_update(data) -> None:
    t = Trainer(
        MultiTaskModel.for_data(data, {"hidden": [8]}),
        optim={"name": "sgd", "lr": 0.1, "momentum": 0.0, "grad_clip": 1e-3},
        train={"epochs": 1, "batch_size": 32},
        progress=False,
    )
    before = params(t)
    t.fit(data.train)
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(params(t), before, strict=True)))
    steps = t.step
    assert float(moved) <= 0.1 * 1e-3 * steps + 1e-6
