"""The training loop.

One step: batch → (augment) → shared representation → heads → per-task masked losses →
``balancer.backward`` → L1/L2 penalty gradients → clipping → NaN/inf guard → optimizer step.
One epoch: the steps, then validation metrics, the monitored value (Δm, a task metric or the
validation loss), the schedule, early stopping, ``best.pt``/``last.pt`` and one
``metrics.jsonl`` line (with the mean gate weights of a gated trunk, ``train.gates``).
``fit(resume=True)`` continues from ``last.pt`` to exactly the parameters an uninterrupted run
reaches (same seed, CPU): model, optimizer, schedule, balancer, every random
state and the position inside the epoch are restored.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from lepton.balancers import Balancer, create
from lepton.config import AugmentConfig, OptimConfig, TrainConfig
from lepton.data.augment import Augment, build_augment
from lepton.data.preprocess import Preprocessor
from lepton.data.tensors import Batch, BatchLoader, TensorData
from lepton.errors import ConfigError, TrainingError
from lepton.evaluate import EvalResult, delta_m, evaluate
from lepton.models import MultiTaskModel
from lepton.tasks import HIGHER_IS_BETTER, Task
from lepton.train._checkpoint import atomic_torch_save, atomic_write_bytes, load_checkpoint
from lepton.train._optim import add_penalty_gradients, build_optimizer, build_scheduler, decay_split
from lepton.train._progress import TrainingProgress

CHECKPOINT_FORMAT = 1


class TrainingInterrupted(TrainingError):
    """Training stopped on request (Ctrl-C, SIGTERM); ``last.pt`` holds the state to resume."""


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{name}' asked for, but CUDA is not available here")
    return device


@dataclass
class Monitor:
    """The value early stopping and best-checkpoint selection look at."""

    name: str
    higher_is_better: bool
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Record this epoch's value; True if it is the best so far."""
        if value is None or not math.isfinite(value):
            self.bad_epochs += 1
            return False
        if self.best is None:
            better = True
        elif self.higher_is_better:
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = s["best"], s["best_epoch"], s["bad_epochs"]


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did."""

    epochs_completed: int
    best_epoch: int | None
    monitor: str
    best_value: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


class _EpochStats:
    """Running per-task sums over an epoch (checkpointed, so a resumed epoch logs the same)."""

    def __init__(
        self, names: Sequence[str], gate_labels: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.names = list(names)
        #: the experts behind each gate's columns (``trunk.gate_labels()``)
        self.gate_labels = {k: list(v) for k, v in (gate_labels or {}).items()}
        k = len(names)
        self.loss_sum = torch.zeros(k, dtype=torch.float64)
        self.loss_count = torch.zeros(k, dtype=torch.float64)
        self.weight_sum = torch.zeros(k, dtype=torch.float64)
        self.weight_steps = 0
        self.cos_sum = torch.zeros(k, k, dtype=torch.float64)
        self.cos_steps = 0
        self.steps = 0
        self.grad_norm_sum = 0.0
        self.gate_sum: dict[str, torch.Tensor] = {}
        self.gate_steps = 0

    def add_gates(self, gates: Mapping[str, torch.Tensor] | None) -> None:
        """Add one step's gate weights ``{key: (B, n_experts)}`` (their batch mean)."""
        if not gates:
            return
        for k, g in gates.items():
            mean = g.detach().double().mean(dim=0).cpu()
            self.gate_sum[k] = self.gate_sum[k] + mean if k in self.gate_sum else mean
        self.gate_steps += 1

    def add(
        self,
        losses: torch.Tensor,
        valid: torch.Tensor,
        weights: torch.Tensor | None,
        cosines: torch.Tensor | None,
        grad_norm: float,
    ) -> None:
        v = valid.cpu().double()
        self.loss_sum += losses.detach().cpu().double() * v
        self.loss_count += v
        if weights is not None:
            self.weight_sum += weights.detach().cpu().double()
            self.weight_steps += 1
        if cosines is not None:
            self.cos_sum += cosines.detach().cpu().double()
            self.cos_steps += 1
        self.steps += 1
        self.grad_norm_sum += grad_norm

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "loss": {
                n: (float(self.loss_sum[i] / self.loss_count[i]) if self.loss_count[i] else None)
                for i, n in enumerate(self.names)
            }
        }
        out["total_loss"] = float(sum(v for v in out["loss"].values() if v is not None))
        if self.weight_steps:
            out["weights"] = {
                n: float(self.weight_sum[i] / self.weight_steps) for i, n in enumerate(self.names)
            }
        if self.steps:
            out["grad_norm"] = self.grad_norm_sum / self.steps
        if self.gate_steps:
            out["gates"] = {}
            for k, v in self.gate_sum.items():
                mean = (v / self.gate_steps).tolist()
                labels = self.gate_labels.get(k)
                out["gates"][k] = (
                    dict(zip(labels, mean, strict=True))
                    if labels and len(labels) == len(mean)
                    else mean
                )
        if self.cos_steps:
            cos = self.cos_sum / self.cos_steps
            out["grad_cosine"] = {
                a: {b: float(cos[i, j]) for j, b in enumerate(self.names) if j != i}
                for i, a in enumerate(self.names)
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "weight_sum": self.weight_sum,
            "weight_steps": self.weight_steps,
            "cos_sum": self.cos_sum,
            "cos_steps": self.cos_steps,
            "steps": self.steps,
            "grad_norm_sum": self.grad_norm_sum,
            "gate_sum": self.gate_sum,
            "gate_steps": self.gate_steps,
        }

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        for k, v in s.items():
            setattr(self, k, v)


def _config(cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls.model_validate(dict(value))


class Trainer:
    """Trains a :class:`MultiTaskModel` with a balancer; evaluates; checkpoints; resumes.

    Parameters
    ----------
    model:
        The model (its ``tasks`` are the tasks trained unless ``tasks`` is given).
    balancer:
        A registry name (``"ew"``, ``"uw"``, …) or a :class:`lepton.balancers.Balancer`.
    balancer_options:
        Hyperparameters of the named balancer.
    optim, train, augment:
        ``OptimConfig`` / ``TrainConfig`` / ``AugmentConfig`` or plain dicts of their fields.
    preprocessor:
        Used to report regression metrics in the target's original units.
    run_dir:
        Where ``metrics.jsonl`` and ``checkpoints/`` go; ``None`` keeps everything in memory.
    references:
        Validation metrics of single-task baselines ``{task: {metric: value}}``: enables the
        ``delta_m`` monitor.
    progress:
        Show a progress bar (terminal) or periodic lines (otherwise).

    Examples
    --------
    >>> trainer = Trainer(model, balancer="uw", train={"epochs": 20})  # doctest: +SKIP
    >>> result = trainer.fit(data.train, data.val)                      # doctest: +SKIP
    >>> trainer.evaluate(data.test).metrics                             # doctest: +SKIP
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task] | None = None,
        *,
        balancer: str | Balancer = "ew",
        balancer_options: Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        train: TrainConfig | Mapping[str, Any] | None = None,
        augment: AugmentConfig | Mapping[str, Any] | Augment | None = None,
        preprocessor: Preprocessor | None = None,
        run_dir: str | Path | None = None,
        references: Mapping[str, Mapping[str, float | None]] | None = None,
        progress: bool = True,
        console: Console | None = None,
        log_every_steps: int = 0,
    ) -> None:
        self.optim_cfg: OptimConfig = _config(OptimConfig, optim)
        self.cfg: TrainConfig = _config(TrainConfig, train)
        self.augment = (
            augment
            if isinstance(augment, Augment)
            else build_augment(_config(AugmentConfig, augment))
        )
        self.tasks = list(tasks) if tasks is not None else list(model.tasks)
        self.names = [t.name for t in self.tasks]
        self.device = resolve_device(self.cfg.device)
        self.model = model.to(self.device)
        self.preprocessor = preprocessor
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.references = {k: dict(v) for k, v in (references or {}).items()}
        self.console = console or Console(stderr=True)
        self.show_progress = progress
        self.log_every_steps = int(log_every_steps)
        if isinstance(balancer, Balancer):
            self.balancer = balancer
            if self.balancer.num_tasks is None:
                self.balancer.setup(len(self.tasks), [t.weight for t in self.tasks])
        else:
            self.balancer = create(
                balancer,
                num_tasks=len(self.tasks),
                task_weights=[t.weight for t in self.tasks],
                **dict(balancer_options or {}),
            )
        self.balancer.to(self.device)
        self.monitor = self._make_monitor()
        self.optimizer = build_optimizer(self.optim_cfg, self.model, self.balancer.parameters())
        self.scheduler = build_scheduler(
            self.optim_cfg, self.optimizer, self.cfg.epochs, self.monitor.higher_is_better
        )
        self._penalised, _ = decay_split(self.model)
        self.aug_generator = torch.Generator().manual_seed(self.cfg.seed + 7919)
        self.epoch = 0  # completed epochs
        self.step = 0
        self.finished = False
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False
        self._best_state: dict[str, torch.Tensor] | None = None
        self._loader: BatchLoader | None = None
        self._stats = self._new_stats()
        self._log_lines = 0
        self._step_hooks: list[Callable[[Trainer], None]] = []

    def _new_stats(self) -> _EpochStats:
        return _EpochStats(self.names, self.model.trunk.gate_labels())

    # ------------------------------------------------------------------ monitor setup
    def _make_monitor(self) -> Monitor:
        es = self.cfg.early_stopping
        name = es.monitor
        if name == "auto":
            name = "delta_m" if self.references else "loss"
        if name == "loss":
            hib = False
        elif name == "delta_m":
            if not self.references:
                raise ConfigError(
                    "train.early_stopping.monitor: 'delta_m' needs single-task baselines "
                    "(run with --baselines / train.baselines: true); or use 'loss' or "
                    "'<task>.<metric>'"
                )
            hib = True
        else:
            task, _, metric = name.partition(".")
            by_name = {t.name: t for t in self.tasks}
            if task not in by_name or metric not in by_name[task].metrics:
                choices = ["auto", "loss", "delta_m"] + [
                    f"{t.name}.{m}" for t in self.tasks for m in t.metrics
                ]
                raise ConfigError(
                    f"train.early_stopping.monitor: unknown value '{name}'; "
                    f"choose one of {', '.join(choices)}"
                )
            hib = HIGHER_IS_BETTER[metric]
        return Monitor(name, hib, es.patience, es.min_delta)

    def _monitor_value(self, ev: EvalResult) -> float | None:
        name = self.monitor.name
        if name == "loss":
            return ev.total_loss
        if name == "delta_m":
            return delta_m(ev.metrics, self.references, self.tasks)
        task, _, metric = name.partition(".")
        return ev.metrics.get(task, {}).get(metric)

    # -------------------------------------------------------------------------- hooks
    def add_step_hook(self, hook: Callable[[Trainer], None]) -> None:
        """Call ``hook(trainer)`` after every optimizer step (e.g. to request a stop)."""
        self._step_hooks.append(hook)

    def request_stop(self) -> None:
        """Stop after the current step; ``last.pt`` is written so the run can be resumed."""
        self._stop_requested = True

    # -------------------------------------------------------------------------- steps
    def _losses(
        self, outputs: Mapping[str, torch.Tensor], batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        losses, valid = [], []
        for t in self.tasks:
            mask = batch.masks[t.name]
            losses.append(t.loss_fn(outputs[t.name], batch.targets[t.name], mask))
            valid.append(bool(mask.any()))
        return torch.stack(losses), torch.tensor(valid, device=self.device)

    def _train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, float]:
        batch = batch.to(self.device)
        inputs = (
            self.augment(batch.inputs, self.aug_generator) if self.augment.active else batch.inputs
        )
        rep = self.model.representation(inputs)
        outputs = self.model.heads_forward(rep, self.names)
        losses, valid = self._losses(outputs, batch)
        if not torch.isfinite(losses).all():
            bad = [
                n for n, v in zip(self.names, losses.tolist(), strict=True) if not math.isfinite(v)
            ]
            self._diverged(f"the loss of task(s) {', '.join(bad)} became non-finite")
        self.optimizer.zero_grad(set_to_none=True)
        features = rep if isinstance(rep, torch.Tensor) else None
        self.balancer.backward(
            losses, self.model.shared_parameters(), features=features, valid=valid
        )
        add_penalty_gradients(self._penalised, self.optim_cfg.l1, self.optim_cfg.l2)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.optim_cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.grad_clip)
        else:
            norm = (
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
                )
                if params
                else torch.zeros(())
            )
        if not torch.isfinite(norm):
            self._diverged("a gradient became non-finite")
        self.optimizer.step()
        return losses.detach(), valid, float(norm)

    def _diverged(self, what: str) -> None:
        assert self._loader is not None
        self._loader.position -= 1  # the offending batch was not applied
        where = f"epoch {self.epoch + 1}, step {self.step + 1}"
        saved = ""
        if self.run_dir is not None:
            path = self.run_dir / "checkpoints" / "last.pt"
            self._save(path)
            saved = f"; the last good state (before this step) is in {path}"
        raise TrainingError(
            f"training stopped at {where}: {what}{saved}. "
            "Try a lower optim.lr, optim.grad_clip, or check the data for extreme values."
        )

    # ---------------------------------------------------------------------- training
    def check_data(self, train: TensorData) -> BatchLoader:
        """Raise a :class:`ConfigError` if ``train`` cannot be trained on (a task without a label
        column or without any label, too few rows for one batch); else its batch loader."""
        missing = [n for n in self.names if n not in train.targets]
        if missing:
            raise ConfigError(f"the training data has no label column for task(s) {missing}")
        counts = train.label_counts()
        empty = [n for n in self.names if counts.get(n, 0) == 0]
        if empty:
            raise ConfigError(f"task(s) {empty}: every label in the training data is missing")
        has_bn = any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()
        )
        loader = BatchLoader(
            train,
            self.cfg.batch_size,
            shuffle=True,
            seed=self.cfg.seed,
            min_batch=2 if has_bn else 1,
        )
        if len(loader) == 0:
            raise ConfigError(
                f"train.batch_size: {len(train)} training rows make no batch of at least 2 rows"
            )
        return loader

    def fit(
        self,
        train: TensorData,
        val: TensorData | None = None,
        resume: bool = False,
    ) -> FitResult:
        """Train for ``train.epochs`` epochs (or until early stopping); return what happened.

        With ``resume=True`` the state is read from ``run_dir/checkpoints/last.pt`` first.
        """
        self._loader = self.check_data(train)
        if resume:
            self._restore()
        elif self.epoch == 0 and self.step == 0:
            seed_everything(self.cfg.seed, self.cfg.deterministic)
            if self.run_dir is not None:
                (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                (self.run_dir / "metrics.jsonl").write_text("")
        start_time = time.perf_counter()
        previous = self._install_signal_handlers()
        try:
            with TrainingProgress(self.cfg.epochs, self.show_progress, self.console) as bar:
                bar.start(self.epoch)
                while not self.finished and self.epoch < self.cfg.epochs:
                    self._run_epoch(bar, val)
        finally:
            self._restore_signal_handlers(previous)
        self.finished = True
        if self.cfg.restore_best:
            self._load_best()
        return FitResult(
            epochs_completed=self.epoch,
            best_epoch=self.monitor.best_epoch,
            monitor=self.monitor.name,
            best_value=self.monitor.best,
            stopped_early=self.monitor.should_stop,
            history=self.history,
            train_seconds=time.perf_counter() - start_time,
        )

    def _run_epoch(self, bar: TrainingProgress, val: TensorData | None) -> None:
        assert self._loader is not None
        epoch = self.epoch + 1
        t0 = time.perf_counter()
        self.model.train()
        self.balancer.train()
        bar.start_epoch(epoch, len(self._loader), self._loader.position)
        for batch in self._loader:
            losses, valid, norm = self._train_step(batch)
            self._stats.add_gates(self.model.trunk.last_gates)
            self.step += 1
            self._stats.add(
                losses, valid, self.balancer.last_weights, self.balancer.last_cosines, norm
            )
            bar.advance_batch(float(losses.sum()))
            if self.log_every_steps and self.step % self.log_every_steps == 0:
                self._log_step(epoch, losses, valid)
            for hook in self._step_hooks:
                hook(self)
            if self._stop_requested:
                self._interrupt()
        self.balancer.end_epoch()
        record: dict[str, Any] = {"epoch": epoch, "step": self.step}
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["train"] = self._stats.summary()
        self._stats = self._new_stats()
        value: float | None
        if val is not None and len(val):
            ev = evaluate(
                self.model,
                val,
                self.tasks,
                self.preprocessor,
                self.cfg.eval_batch_size,
                self.device,
            )
            record["val"] = {"loss": ev.losses, "total_loss": ev.total_loss, "metrics": ev.metrics}
            if self.references:
                record["val"]["delta_m"] = delta_m(ev.metrics, self.references, self.tasks)
            value = self._monitor_value(ev)
        else:
            value = record["train"]["total_loss"] if self.monitor.name == "loss" else None
        improved = self.monitor.update(value, epoch)
        record["monitor"] = {"name": self.monitor.name, "value": value, "best": self.monitor.best}
        self._step_scheduler(value)
        self.epoch = epoch
        record["time_s"] = time.perf_counter() - t0
        self.history.append(record)
        self._write_log(record)
        if improved:
            self._keep_best()
        if self.monitor.should_stop:
            self.finished = True
        if self.epoch >= self.cfg.epochs:
            self.finished = True
        if self.run_dir is not None and (
            self.finished or self.epoch % self.cfg.checkpoint_every == 0
        ):
            self._save(self.run_dir / "checkpoints" / "last.pt")
        summary = f"loss {record['train']['total_loss']:.4f}"
        if value is not None:
            summary += f"  val {self.monitor.name} {value:.4f}"
        bar.end_epoch(epoch, summary)
        if self.monitor.should_stop:
            bar.message(
                f"early stopping after epoch {epoch}: no improvement of {self.monitor.name} "
                f"for {self.monitor.patience} epochs (best at epoch {self.monitor.best_epoch})"
            )

    def _step_scheduler(self, value: float | None) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if value is not None and math.isfinite(value):
                self.scheduler.step(value)
        else:
            self.scheduler.step()

    # ------------------------------------------------------------------------ logging
    def _write_log(self, record: Mapping[str, Any]) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False, default=_json_default) + "\n")
        self._log_lines += 1

    def _log_step(self, epoch: int, losses: torch.Tensor, valid: torch.Tensor) -> None:
        rec: dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "train": {
                "loss": {
                    n: (float(v) if ok else None)
                    for n, v, ok in zip(self.names, losses.tolist(), valid.tolist(), strict=True)
                }
            },
        }
        if self.balancer.last_weights is not None:
            rec["train"]["weights"] = dict(
                zip(self.names, self.balancer.last_weights.tolist(), strict=True)
            )
        self._write_log(rec)

    # --------------------------------------------------------------- best and resume
    def _keep_best(self) -> None:
        if self.run_dir is not None:
            self._save(self.run_dir / "checkpoints" / "best.pt")
        else:
            self._best_state = copy.deepcopy(self.model.state_dict())

    def _load_best(self) -> None:
        if self.monitor.best_epoch is None:
            return
        if self.run_dir is not None:
            path = self.run_dir / "checkpoints" / "best.pt"
            if path.is_file():
                self.model.load_state_dict(load_checkpoint(path)["model"])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where training is now."""
        assert self._loader is not None
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "finished": self.finished,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "monitor": self.monitor.state_dict(),
            "loader": self._loader.state_dict(),
            "epoch_stats": self._stats.state_dict(),
            "log_lines": self._log_lines,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": _py_state_out(random.getstate()),
                "numpy": _np_state_out(np.random.get_state()),
                "augment": self.aug_generator.get_state(),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self._loader is not None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"checkpoint format {state.get('format')} is not supported")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.monitor.load_state_dict(state["monitor"])
        self._loader.load_state_dict(state["loader"])
        self._stats.load_state_dict(state["epoch_stats"])
        self.epoch, self.step, self.finished = state["epoch"], state["step"], state["finished"]
        self._log_lines = state["log_lines"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(_py_state_in(rng["python"]))
        np.random.set_state(_np_state_in(rng["numpy"]))
        self.aug_generator.set_state(rng["augment"])

    def _save(self, path: Path) -> None:
        atomic_torch_save(self.state_dict(), path)

    def _restore(self) -> None:
        if self.run_dir is None:
            raise ConfigError("resume needs a run directory")
        self.load_state_dict(load_checkpoint(self.run_dir / "checkpoints" / "last.pt"))
        log = self.run_dir / "metrics.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True) if log.is_file() else []
        # drop lines written after the checkpoint (a crash between checkpoint and log)
        atomic_write_bytes(log, "".join(lines[: self._log_lines]).encode())
        self.history = [json.loads(x) for x in lines[: self._log_lines] if '"monitor"' in x]

    def _interrupt(self) -> None:
        self._stop_requested = False
        saved = ""
        if self.run_dir is not None:
            path = self.run_dir / "checkpoints" / "last.pt"
            self._save(path)
            saved = f"; state saved to {path} — continue with --resume"
        raise TrainingInterrupted(
            f"training interrupted at epoch {self.epoch + 1}, step {self.step}{saved}"
        )

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda *_: self.request_stop())
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: Mapping[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # --------------------------------------------------------------------- evaluation
    def evaluate(self, data: TensorData) -> EvalResult:
        """Metrics and losses of the current model on ``data``."""
        return evaluate(
            self.model, data, self.tasks, self.preprocessor, self.cfg.eval_batch_size, self.device
        )


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _py_state_out(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _py_state_in(state: Sequence[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(int(x) for x in internal.tolist()), gauss)


def _np_state_out(state: tuple[Any, ...]) -> list[Any]:
    name, keys, pos, has_gauss, cached = state
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _np_state_in(state: Sequence[Any]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
