"""Per-task metrics on a labelled split, and Δm against single-task baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lepton.data.preprocess import Preprocessor
from lepton.data.tensors import TensorData
from lepton.tasks import Task, TaskMetrics

Metrics = dict[str, dict[str, float | None]]


@dataclass
class EvalResult:
    """Metrics ``{task: {metric: value}}``, mean losses ``{task: loss}`` and label counts."""

    metrics: Metrics
    losses: dict[str, float | None]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total_loss(self) -> float:
        """Sum of the per-task mean losses (tasks without labels count 0)."""
        return float(sum(v for v in self.losses.values() if v is not None))


def _scale_shift(
    pre: Preprocessor | None, task: Task
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if pre is None or task.kind != "regression":
        return None, None
    info = pre.targets[task.name]
    return torch.tensor(info.std), torch.tensor(info.mean)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: TensorData,
    tasks: Sequence[Task],
    preprocessor: Preprocessor | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Metrics and mean losses of ``model`` on ``data`` for the tasks it has labels for.

    Regression metrics are in the target's original units when ``preprocessor`` is given.
    Missing labels are skipped; a task with no label at all gets ``None`` everywhere.
    """
    was_training = model.training
    model.eval()
    labelled = [t for t in tasks if t.name in data.targets]
    meters = {t.name: TaskMetrics(t, *_scale_shift(preprocessor, t)) for t in labelled}
    loss_sum = dict.fromkeys(meters, 0.0)
    count = dict.fromkeys(meters, 0)
    try:
        for start in range(0, len(data), batch_size):
            batch = data.batch(slice(start, start + batch_size)).to(device)
            outputs = model(batch.inputs, tasks=[t.name for t in labelled])
            for t in labelled:
                target, mask = batch.targets[t.name], batch.masks[t.name]
                n = int(mask.sum())
                if n:
                    loss_sum[t.name] += float(t.loss_fn(outputs[t.name], target, mask)) * n
                    count[t.name] += n
                meters[t.name].update(outputs[t.name], target, mask)
    finally:
        model.train(was_training)
    metrics = {name: m.compute() for name, m in meters.items()}
    losses = {name: (loss_sum[name] / count[name] if count[name] else None) for name in meters}
    return EvalResult(metrics, losses, count)


def main_metric_values(metrics: Metrics, tasks: Sequence[Task]) -> dict[str, float | None]:
    """Each task's main metric value."""
    return {t.name: metrics.get(t.name, {}).get(t.main_metric) for t in tasks}


def delta_m(
    metrics: Metrics,
    baselines: Mapping[str, Mapping[str, float | None]],
    tasks: Sequence[Task],
) -> float | None:
    """Mean relative gain of a multi-task model over single-task baselines, in percent.

    ``Δm = 100/K · Σ_k (-1)^{l_k} (M_k − B_k) / |B_k|`` over each task's main metric, with
    ``l_k = 1`` where lower is better (Maninis et al. 2019; Vandenhende et al. 2021).
    Tasks whose value or baseline is missing or zero are left out; ``None`` if none remain.

    Examples
    --------
    >>> t = [Task("a", "multiclass", classes=(0, 1)), Task("b", "regression")]
    >>> delta_m({"a": {"accuracy": 0.9}, "b": {"mae": 1.0}},
    ...         {"a": {"accuracy": 0.8}, "b": {"mae": 2.0}}, t)
    31.25
    """
    gains = []
    for t in tasks:
        m = metrics.get(t.name, {}).get(t.main_metric)
        b = baselines.get(t.name, {}).get(t.main_metric)
        if m is None or b is None or b == 0:
            continue
        sign = 1.0 if t.higher_is_better else -1.0
        gains.append(sign * (m - b) / abs(b))
    if not gains:
        return None
    return 100.0 * sum(gains) / len(gains)
