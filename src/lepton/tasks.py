"""Tasks: what each head predicts, how it is scored and how its loss is computed.

A :class:`Task` is a plain, immutable declaration — name, kind, target column(s), loss, metrics,
main metric, static weight, optional fusion inputs. The kind decides the head size, the default
loss (masked for missing labels), the torchmetrics metrics and how raw outputs become predictions.

Missing labels are never dropped from the data and never turn into NaN: every loss here takes a
boolean ``mask`` of the labels that exist, averages over those only, and returns an exact zero
(that still belongs to the autograd graph) when a batch holds no label for the task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from lepton.errors import ConfigError

if TYPE_CHECKING:  # torchmetrics is imported when metrics are first computed (it is slow to import)
    import torchmetrics

TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]
KINDS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")

#: Loss names each kind accepts; the first one is the default.
LOSSES: dict[str, tuple[str, ...]] = {
    "binary": ("bce",),
    "multiclass": ("cross_entropy",),
    "multilabel": ("bce",),
    "regression": ("mse", "l1", "huber", "smooth_l1"),
}

#: Metric names each kind offers; the first one is the default main metric.
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "f1", "auroc"),
    "multiclass": ("accuracy", "f1", "auroc"),
    "multilabel": ("f1", "accuracy", "auroc"),
    "regression": ("mae", "rmse", "r2"),
}

#: True where a larger value of the metric is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "auroc": True,
    "r2": True,
    "mae": False,
    "rmse": False,
}


def _as_tuple(value: str | Sequence[Any] | None) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Task:
    """One prediction task of a multi-task model.

    Parameters
    ----------
    name:
        Unique task name; also the name of the prediction column(s) and of the model output.
    kind:
        ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
    target:
        Target column(s). Defaults to ``(name,)``. Multilabel tasks take one 0/1 column per label;
        regression tasks may take several columns (multi-output regression).
    loss:
        Loss name (see :data:`LOSSES`); default by kind: ``bce``, ``cross_entropy``, ``bce``,
        ``mse``.
    metrics:
        Metric names to report (see :data:`METRICS`); default: all of the kind's metrics.
    main_metric:
        The metric that decides Δm and early stopping on this task; default: the kind's first.
    weight:
        Static loss weight (used by the ``static`` balancer).
    classes:
        Class labels in output order for binary/multiclass tasks. Fitted from the training split
        when omitted (sorted); for binary tasks the second class is the positive one.
    threshold:
        Probability above which a binary/multilabel output is predicted positive.
    fusion:
        Names of the tasks whose outputs feed this task's head (a *fusion head*).
    fusion_representation:
        A fusion head also reads the shared representation.
    fusion_detach:
        Stop the fusion loss from flowing back into the source tasks' heads and the trunk.
    head_hidden:
        Hidden widths of this task's head; ``None`` uses the model's default.

    Examples
    --------
    >>> Task("species", "multiclass").main_metric
    'accuracy'
    >>> Task("body_mass_g", "regression", loss="huber").target
    ('body_mass_g',)
    """

    name: str
    kind: TaskKind
    target: tuple[str, ...] = ()
    loss: str = ""
    metrics: tuple[str, ...] = ()
    main_metric: str = ""
    weight: float = 1.0
    classes: tuple[Any, ...] | None = None
    threshold: float = 0.5
    fusion: tuple[str, ...] = ()
    fusion_representation: bool = False
    fusion_detach: bool = False
    head_hidden: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        where = f"task '{self.name}'"
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a task needs a non-empty name")
        if self.kind not in KINDS:
            raise ConfigError(
                f"{where}: unknown kind '{self.kind}'; choose one of {', '.join(KINDS)}"
            )
        set_ = object.__setattr__
        set_(self, "target", _as_tuple(self.target) or (self.name,))
        set_(self, "metrics", _as_tuple(self.metrics) or METRICS[self.kind])
        set_(self, "fusion", _as_tuple(self.fusion) or ())
        set_(self, "classes", _as_tuple(self.classes))
        set_(self, "head_hidden", _as_tuple(self.head_hidden))
        set_(self, "loss", self.loss or LOSSES[self.kind][0])
        set_(self, "main_metric", self.main_metric or self.metrics[0])
        if self.loss not in LOSSES[self.kind]:
            raise ConfigError(
                f"{where}: loss '{self.loss}' does not fit kind '{self.kind}'; "
                f"choose one of {', '.join(LOSSES[self.kind])}"
            )
        for m in self.metrics:
            if m not in METRICS[self.kind]:
                raise ConfigError(
                    f"{where}: metric '{m}' does not fit kind '{self.kind}'; "
                    f"choose from {', '.join(METRICS[self.kind])}"
                )
        if self.main_metric not in self.metrics:
            raise ConfigError(
                f"{where}: main_metric '{self.main_metric}' is not among its metrics "
                f"({', '.join(self.metrics)})"
            )
        if self.kind in ("binary", "multiclass") and len(self.target) != 1:
            raise ConfigError(f"{where}: a {self.kind} task reads exactly one target column")
        if self.kind == "multilabel" and len(self.target) < 2:
            raise ConfigError(
                f"{where}: a multilabel task reads one 0/1 column per label (two or more)"
            )
        if self.kind == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ConfigError(
                f"{where}: a binary task has exactly two classes, got {list(self.classes)}"
            )
        if self.kind == "multiclass" and self.classes is not None and len(self.classes) < 2:
            raise ConfigError(f"{where}: a multiclass task needs at least two classes")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"{where}: weight must be a finite number >= 0, got {self.weight}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"{where}: threshold must lie strictly between 0 and 1")
        if self.name in self.fusion:
            raise ConfigError(f"{where}: a fusion task cannot read its own output")

    # ----------------------------------------------------------------- shape and meaning
    @property
    def is_fusion(self) -> bool:
        """True when this task's head reads other tasks' outputs."""
        return bool(self.fusion)

    @property
    def labels(self) -> tuple[Any, ...]:
        """Class names (binary/multiclass), label names (multilabel) or outputs (regression)."""
        if self.kind in ("binary", "multiclass"):
            if self.classes is None:
                raise ConfigError(
                    f"task '{self.name}': classes are not known yet (fit the data first)"
                )
            return self.classes
        return self.target

    @property
    def output_dim(self) -> int:
        """Width of the raw output of this task's head."""
        if self.kind == "binary":
            return 1
        return len(self.labels)

    @property
    def higher_is_better(self) -> bool:
        """Direction of the main metric."""
        return HIGHER_IS_BETTER[self.main_metric]

    def with_classes(self, classes: Sequence[Any]) -> Task:
        """A copy of this task with its class labels set."""
        return replace(self, classes=tuple(classes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (inverse of :meth:`from_dict`)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "target": list(self.target),
            "loss": self.loss,
            "metrics": list(self.metrics),
            "main_metric": self.main_metric,
            "weight": self.weight,
            "classes": None if self.classes is None else list(self.classes),
            "threshold": self.threshold,
            "fusion": list(self.fusion),
            "fusion_representation": self.fusion_representation,
            "fusion_detach": self.fusion_detach,
            "head_hidden": None if self.head_hidden is None else list(self.head_hidden),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        return cls(**d)

    # ----------------------------------------------------------------------------- loss
    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output → probabilities (classification) or standardised values (regression)."""
        if self.kind in ("binary", "multilabel"):
            return torch.sigmoid(raw)
        if self.kind == "multiclass":
            return torch.softmax(raw, dim=-1)
        return raw

    def loss_fn(self, raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labels present in ``mask``; an exact (graph-connected) zero if none.

        Shapes: binary ``raw (B,1)``, ``target (B,)`` float, ``mask (B,)``; multiclass
        ``raw (B,C)``,
        ``target (B,)`` long, ``mask (B,)``; multilabel and regression ``raw (B,D)``,
        ``target (B,D)`` float, ``mask (B,D)``. Entries of ``target`` where ``mask`` is false are
        ignored whatever they hold.
        """
        if self.kind == "binary":
            raw = raw.reshape(-1)
        safe_target = torch.where(mask, target, torch.zeros_like(target))
        if self.kind in ("binary", "multilabel"):
            per = F.binary_cross_entropy_with_logits(raw, safe_target, reduction="none")
        elif self.kind == "multiclass":
            per = F.cross_entropy(raw, safe_target, reduction="none")
        elif self.loss == "mse":
            per = F.mse_loss(raw, safe_target, reduction="none")
        elif self.loss == "l1":
            per = F.l1_loss(raw, safe_target, reduction="none")
        elif self.loss == "huber":
            per = F.huber_loss(raw, safe_target, reduction="none")
        else:
            per = F.smooth_l1_loss(raw, safe_target, reduction="none")
        per = torch.where(mask, per, torch.zeros_like(per))
        count = mask.sum()
        return per.sum() / count.clamp(min=1).to(per.dtype)

    # -------------------------------------------------------------------------- metrics
    def make_metrics(self) -> TaskMetrics:
        """A fresh accumulator of this task's metrics."""
        return TaskMetrics(self)


def _classification_metric(task: Task, name: str) -> torchmetrics.Metric:
    from torchmetrics import classification as tmc

    kw: dict[str, Any] = {"validate_args": False}
    if task.kind == "binary":
        return {
            "accuracy": lambda: tmc.BinaryAccuracy(threshold=task.threshold, **kw),
            "f1": lambda: tmc.BinaryF1Score(threshold=task.threshold, **kw),
            "auroc": lambda: tmc.BinaryAUROC(**kw),
        }[name]()
    if task.kind == "multiclass":
        c = task.output_dim
        return {
            "accuracy": lambda: tmc.MulticlassAccuracy(num_classes=c, average="micro", **kw),
            "f1": lambda: tmc.MulticlassF1Score(num_classes=c, average="macro", **kw),
            "auroc": lambda: tmc.MulticlassAUROC(num_classes=c, average="macro", **kw),
        }[name]()
    n = task.output_dim
    return {
        "accuracy": lambda: tmc.MultilabelAccuracy(
            num_labels=n, threshold=task.threshold, average="micro", ignore_index=-1, **kw
        ),
        "f1": lambda: tmc.MultilabelF1Score(
            num_labels=n, threshold=task.threshold, average="macro", ignore_index=-1, **kw
        ),
        "auroc": lambda: tmc.MultilabelAUROC(num_labels=n, average="macro", ignore_index=-1, **kw),
    }[name]()


def _regression_metric(name: str) -> torchmetrics.Metric:
    from torchmetrics import regression as tmr

    if name == "mae":
        return tmr.MeanAbsoluteError()
    if name == "rmse":
        return tmr.MeanSquaredError(squared=False)
    return tmr.R2Score()


class TaskMetrics:
    """Accumulates one task's metrics over batches, skipping missing labels.

    ``update`` takes the raw head output and the *encoded* target (standardised for regression);
    regression metrics are computed in the original units with ``scale`` and ``shift``
    (``value = standardised * scale + shift``) when given.
    """

    def __init__(
        self,
        task: Task,
        scale: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> None:
        self.task = task
        self.scale = scale
        self.shift = shift
        if task.kind == "regression":
            # one set per output column, so that partially missing rows still count per column
            self._cols = [
                {m: _regression_metric(m) for m in task.metrics} for _ in range(task.output_dim)
            ]
        else:
            self._metrics = {m: _classification_metric(task, m) for m in task.metrics}
        self.count = 0

    def update(self, raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        task = self.task
        raw = raw.detach().float().cpu()
        target = target.detach().cpu()
        mask = mask.detach().cpu()
        if task.kind == "regression":
            if self.scale is not None and self.shift is not None:
                raw = raw * self.scale + self.shift
                target = target * self.scale + self.shift
            for j, col in enumerate(self._cols):
                keep = mask[:, j]
                if keep.any():
                    for metric in col.values():
                        metric.update(raw[keep, j], target[keep, j])
            self.count += int(mask.sum())
            return
        if task.kind == "multilabel":
            probs = torch.sigmoid(raw)
            tgt = torch.where(mask, target.long(), torch.full_like(target, -1, dtype=torch.long))
            if mask.any():
                for metric in self._metrics.values():
                    metric.update(probs, tgt)
            self.count += int(mask.sum())
            return
        keep = mask
        if not keep.any():
            return
        if task.kind == "binary":
            probs = torch.sigmoid(raw.reshape(-1))[keep]
            tgt = target[keep].long()
        else:
            probs = torch.softmax(raw, dim=-1)[keep]
            tgt = target[keep].long()
        for metric in self._metrics.values():
            metric.update(probs, tgt)
        self.count += int(keep.sum())

    def compute(self) -> dict[str, float | None]:
        """Metric name → value; ``None`` where it is undefined (no labels, a single class)."""
        import warnings

        out: dict[str, float | None] = {}
        if self.count == 0:
            return dict.fromkeys(self.task.metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.task.kind == "regression":
                for m in self.task.metrics:
                    vals = []
                    for col in self._cols:
                        metric = col[m]
                        if metric.update_count == 0:
                            continue
                        vals.append(_finite_or_none(metric))
                    good = [v for v in vals if v is not None]
                    out[m] = sum(good) / len(good) if good and len(good) == len(vals) else None
            else:
                for m, metric in self._metrics.items():
                    out[m] = _finite_or_none(metric)
        return out


def _finite_or_none(metric: torchmetrics.Metric) -> float | None:
    try:
        value = float(metric.compute())
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None
