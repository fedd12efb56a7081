"""Tasks: validation, head widths, masked losses, metrics that skip missing labels."""

from __future__ import annotations

import math

import pytest
import torch

from lepton import ConfigError, Task
from lepton.tasks import METRICS, TaskMetrics


def _kinds() -> list[tuple[Task, torch.Tensor, torch.Tensor]]:
    """(task, raw output, target) for each kind, batch of 6."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            Task("b", "binary", classes=("n", "p")),
            torch.randn(6, 1, generator=g),
            torch.tensor([0, 1, 1, 0, 1, 0.0]),
        ),
        (
            Task("m", "multiclass", classes=("a", "b", "c")),
            torch.randn(6, 3, generator=g),
            torch.tensor([0, 2, 1, 1, 0, 2]),
        ),
        (
            Task("l", "multilabel", target=("x", "y")),
            torch.randn(6, 2, generator=g),
            (torch.rand(6, 2, generator=g) > 0.5).float(),
        ),
        (
            Task("r", "regression", target=("u", "v")),
            torch.randn(6, 2, generator=g),
            torch.randn(6, 2, generator=g),
        ),
    ]


def test_defaults_per_kind() -> None:
    assert Task("a", "binary").loss == "bce"
    assert Task("a", "multiclass").loss == "cross_entropy"
    assert Task("a", "regression").main_metric == "mae"
    assert Task("a", "regression").higher_is_better is False
    assert Task("a", "multiclass").higher_is_better is True
    assert Task("a", "binary").target == ("a",)
    assert Task("a", "binary", classes=("x", "y")).output_dim == 1
    assert Task("a", "multiclass", classes=(1, 2, 3)).output_dim == 3
    assert Task("a", "multilabel", target=["p", "q", "r"]).output_dim == 3
    assert Task("a", "regression", target=["p", "q"]).output_dim == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ranking"}, "unknown kind"),
        ({"kind": "binary", "loss": "mse"}, "loss 'mse' does not fit kind 'binary'"),
        ({"kind": "regression", "metrics": ["accuracy"]}, "metric 'accuracy'"),
        ({"kind": "regression", "main_metric": "r2", "metrics": ["mae"]}, "main_metric 'r2'"),
        ({"kind": "binary", "classes": ["a", "b", "c"]}, "exactly two classes"),
        ({"kind": "multilabel", "target": ["only"]}, "one 0/1 column per label"),
        ({"kind": "binary", "target": ["a", "b"]}, "exactly one target column"),
        ({"kind": "binary", "weight": -1.0}, "weight"),
        ({"kind": "regression", "fusion": ["t"]}, "its own output"),
    ],
)
def test_invalid_tasks_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Task("t", **kwargs)


def test_classes_unknown_until_fitted() -> None:
    with pytest.raises(ConfigError, match="not known yet"):
        _ = Task("s", "multiclass").output_dim


@pytest.mark.parametrize("case", range(4))
def test_masked_loss_equals_loss_on_labelled_subset(case: int) -> None:
    task, raw, target = _kinds()[case]
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[1] = False
    mask[4] = False
    # garbage where labels are missing must not matter
    poisoned = target.clone()
    poisoned[1] = float("nan") if target.is_floating_point() else 0
    full = task.loss_fn(raw, poisoned, mask)
    keep = torch.tensor([0, 2, 3, 5])
    subset = task.loss_fn(raw[keep], target[keep], torch.ones_like(target[keep], dtype=torch.bool))
    assert torch.isfinite(full)
    assert torch.allclose(full, subset, atol=1e-6)


@pytest.mark.parametrize("case", range(4))
def test_batch_without_labels_gives_exact_zero_and_zero_gradient(case: int) -> None:
    task, raw, target = _kinds()[case]
    raw = raw.clone().requires_grad_(True)
    nan_target = torch.full_like(target, float("nan")) if target.is_floating_point() else target
    loss = task.loss_fn(raw, nan_target, torch.zeros_like(target, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert raw.grad is not None
    assert torch.count_nonzero(raw.grad) == 0
    assert torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("case", range(4))
def test_metrics_skip_missing_labels(case: int) -> None:
    task, raw, target = _kinds()[case]
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0] = False
    m_masked = TaskMetrics(task)
    m_masked.update(raw, target, mask)
    m_subset = TaskMetrics(task)
    m_subset.update(raw[1:], target[1:], torch.ones_like(target[1:], dtype=torch.bool))
    a, b = m_masked.compute(), m_subset.compute()
    assert set(a) == set(METRICS[task.kind])
    for k in a:
        if a[k] is None:
            assert b[k] is None
        else:
            assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-7)


def test_metrics_without_any_label_are_none() -> None:
    task = Task("r", "regression")
    m = TaskMetrics(task)
    m.update(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1, dtype=torch.bool))
    assert m.compute() == {"mae": None, "rmse": None, "r2": None}


def test_regression_metrics_in_original_units() -> None:
    task = Task("r", "regression")
    m = TaskMetrics(task, scale=torch.tensor([10.0]), shift=torch.tensor([100.0]))
    m.update(
        torch.tensor([[0.0], [1.0]]),
        torch.tensor([[0.5], [1.0]]),
        torch.ones(2, 1, dtype=torch.bool),
    )
    assert m.compute()["mae"] == pytest.approx(2.5)


def test_task_dict_round_trip() -> None:
    t = Task(
        "f",
        "regression",
        target=("a", "b"),
        fusion=("x",),
        fusion_representation=True,
        head_hidden=(8,),
    )
    assert Task.from_dict(t.to_dict()) == t
