"""A whole run from a config: data → (baselines) → model → training → test metrics → bundle.

This is what ``lepton train`` calls; it is also the shortest Python route::

    from lepton import load_config, run_experiment
    result = run_experiment(load_config("examples/penguins.yaml"), "runs/penguins", baselines=True)
    print(result.metrics, result.delta_m)

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/``,
``bundle/``, ``results.json``, ``sample_input.csv``, ``report.md``/``report.html`` with
``plots/`` and, with baselines, ``baselines/<task>/``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from lepton.bundle import Bundle
from lepton.config import Config, config_from_dict, read_yaml
from lepton.data import PreparedData, prepare_data
from lepton.data.io import write_table
from lepton.errors import RunDirError
from lepton.evaluate import Metrics, delta_m
from lepton.models import MultiTaskModel
from lepton.tasks import Task
from lepton.train import Trainer, seed_everything
from lepton.train._checkpoint import atomic_write_bytes

SAMPLE_ROWS = 20


@dataclass
class RunResult:
    """What a run produced (also written to ``results.json``)."""

    run_dir: Path
    metrics: Metrics
    split: str
    main_metric: dict[str, str]
    baselines: Metrics | None = None
    delta_m: float | None = None
    best_epoch: int | None = None
    epochs_completed: int = 0
    efficiency: dict[str, Any] = field(default_factory=dict)
    sample_input: str = "sample_input.csv"

    @property
    def bundle_dir(self) -> Path:
        return self.run_dir / "bundle"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tasks": self.metrics,
            "main_metric": self.main_metric,
            "split": self.split,
            "best_epoch": self.best_epoch,
            "epochs_completed": self.epochs_completed,
        }
        if self.baselines is not None:
            out["baselines"] = self.baselines
            out["delta_m"] = self.delta_m
        if self.efficiency:
            out["efficiency"] = self.efficiency
        return out


def default_run_dir(config: Config, config_path: str | Path | None) -> Path:
    """``<logging.runs_dir>/<run_name or config stem>-<YYYYmmdd-HHMMSS>``."""
    stem = config.logging.run_name or (Path(config_path).stem if config_path else "run")
    return Path(config.logging.runs_dir) / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Refuse to reuse a run directory unless resuming or explicitly overwriting.

    Touches nothing; returns True if an existing run would be replaced.
    """
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise RunDirError(f"cannot resume: {run_dir} holds no checkpoints/last.pt")
        return False
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise RunDirError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        if not (run_dir / "config.yaml").is_file():
            raise RunDirError(
                f"refusing to overwrite {run_dir}: not a Lepton run directory (no config.yaml)"
            )
        return True
    return False


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """:func:`check_run_dir`, then replace (``overwrite``) or create the directory."""
    if check_run_dir(run_dir, resume, overwrite):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def _single_task(task: Task) -> Task:
    """A task as its own single-task baseline (a fusion task predicts from the features)."""
    d = task.to_dict()
    d.update(fusion=[], fusion_representation=False, fusion_detach=False)
    return Task.from_dict(d)


def _build_model(config: Config, data: PreparedData, tasks: list[Task]) -> MultiTaskModel:
    return MultiTaskModel.for_data(data, config.model, seed=config.train.seed, tasks=tasks)


def train_baselines(
    config: Config,
    data: PreparedData,
    run_dir: Path | None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Train one single-task model per task with the same trunk, budget and seed.

    Returns ``{task: {"val": metrics, "test": metrics, "params": n, "train_seconds": s}}``.
    Results already in ``run_dir/baselines/<task>/results.json`` are reused (a resumed run does
    not train its baselines again).
    """
    console = console or Console(stderr=True)
    out: dict[str, dict[str, Any]] = {}
    for i, task in enumerate(data.tasks, 1):
        task_dir = None if run_dir is None else run_dir / "baselines" / task.name
        cached = None if task_dir is None else task_dir / "results.json"
        if cached is not None and cached.is_file():
            out[task.name] = json.loads(cached.read_text())
            continue
        if progress:
            console.print(f"baseline {i}/{len(data.tasks)}: single-task model for '{task.name}'")
        single = _single_task(task)
        model = _build_model(config, data, [single])
        train_cfg = config.train.model_copy(deep=True)
        monitor = f"{single.name}.{single.main_metric}" if data.val is not None else "loss"
        train_cfg.early_stopping.monitor = monitor
        if task_dir is not None:
            shutil.rmtree(task_dir, ignore_errors=True)
        trainer = Trainer(
            model,
            balancer="ew",
            optim=config.optim,
            train=train_cfg,
            augment=config.data.augment,
            preprocessor=data.preprocessor,
            run_dir=task_dir,
            progress=progress,
            console=console,
        )
        fit = trainer.fit(data.train, data.val)
        res = {
            "val": trainer.evaluate(data.val).metrics.get(task.name)
            if data.val is not None
            else None,
            "test": trainer.evaluate(data.test).metrics.get(task.name)
            if data.test is not None
            else None,
            "params": model.num_parameters(),
            "train_seconds": fit.train_seconds,
            "best_epoch": fit.best_epoch,
        }
        if task_dir is not None:
            shutil.rmtree(task_dir / "checkpoints", ignore_errors=True)
            _write_json(task_dir / "results.json", res)
        out[task.name] = res
    return out


def run_experiment(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    baselines: bool | None = None,
    progress: bool | None = None,
    console: Console | None = None,
    config_path: str | Path | None = None,
) -> RunResult:
    """Run a whole experiment; see the module docstring for the run directory layout.

    With ``resume=True`` the run continues from ``run_dir`` with the config saved there.
    """
    console = console or Console(stderr=True)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config, config_path)
    check_run_dir(run_dir, resume, overwrite)
    if resume:
        saved = config_from_dict(read_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
        config = saved
    if baselines is not None and baselines != config.train.baselines:
        config = config.model_copy(
            update={"train": config.train.model_copy(update={"baselines": baselines})}
        )
    show = config.logging.progress if progress is None else progress
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    seed_everything(config.train.seed, config.train.deterministic)

    # Everything that can reject the input (data, model, balancer, optimiser, early stopping)
    # is checked before the run directory is created or an existing run replaced.
    tasks = config.build_tasks()
    data = prepare_data(config.data, tasks)
    model = _build_model(config, data, data.tasks)

    def make_trainer(references: dict[str, Any] | None) -> Trainer:
        return Trainer(
            model,
            balancer=config.balancer.name,
            balancer_options=config.balancer.options,
            optim=config.optim,
            train=config.train,
            augment=config.data.augment,
            preprocessor=data.preprocessor,
            run_dir=run_dir,
            references=references,
            progress=show,
            console=console,
            log_every_steps=config.logging.log_every_steps,
        )

    with_references = config.train.baselines and data.val is not None
    make_trainer({t.name: {} for t in data.tasks} if with_references else None).check_data(
        data.train
    )

    prepare_run_dir(run_dir, resume, overwrite)
    if not resume:
        atomic_write_bytes(
            run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode()
        )

    base: dict[str, dict[str, Any]] | None = None
    if config.train.baselines:
        base = train_baselines(config, data, run_dir, show, console)

    references = None
    if base is not None and data.val is not None:
        references = {k: v["val"] for k, v in base.items() if v.get("val")}
    trainer = make_trainer(references)
    fit = trainer.fit(data.train, data.val, resume=resume)

    split = "test" if data.test is not None else "val" if data.val is not None else "train"
    eval_data = {"test": data.test, "val": data.val, "train": data.train}[split]
    assert eval_data is not None
    metrics = trainer.evaluate(eval_data).metrics
    result = RunResult(
        run_dir=run_dir,
        metrics=metrics,
        split=split,
        main_metric={t.name: t.main_metric for t in data.tasks},
        best_epoch=fit.best_epoch,
        epochs_completed=fit.epochs_completed,
    )
    if base is not None:
        key = "test" if split == "test" else "val"
        result.baselines = {k: v[key] for k, v in base.items() if v.get(key)}
        result.delta_m = delta_m(metrics, result.baselines, data.tasks)
        result.efficiency = {
            "params": {
                "multi_task": model.num_parameters(),
                "single_task_total": sum(v["params"] for v in base.values()),
            },
            "train_seconds": {
                "multi_task": fit.train_seconds,
                "single_task_total": sum(v["train_seconds"] for v in base.values()),
            },
        }
    name = config.logging.run_name or (Path(config_path).stem if config_path else run_dir.name)
    Bundle(model, data.preprocessor, name=name, metrics={split: metrics}).save(run_dir / "bundle")
    _write_json(run_dir / "results.json", result.to_json())
    _write_sample(data, run_dir, result)
    return result


def _write_sample(data: PreparedData, run_dir: Path, result: RunResult) -> None:
    """A few input rows to try ``lepton predict`` on: a table, or an ``.npy`` of images."""
    held_out = data.test if data.test is not None else data.train
    if "image" in held_out.inputs:
        result.sample_input = "sample_input.npy"
        images = held_out.inputs["image"][:SAMPLE_ROWS].numpy()
        atomic_write_bytes(run_dir / result.sample_input, _npy_bytes(images))
        return
    sample = data.frames.test if data.frames.test is not None else data.frames.train
    write_table(
        sample[data.preprocessor.feature_columns].head(SAMPLE_ROWS), run_dir / "sample_input.csv"
    )


def _npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
