"""Helpers shared by the export, serving and streaming-prediction tests.

One small penguins bundle with a fusion task, and one small image bundle (10×10 stripes), are
trained once per test session (shared by the pytest-xdist workers through a file lock), and a
real ``lepton serve`` process can be started on a free loopback port.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from filelock import FileLock

from .conftest import ROOT, cli_env

FUSION_CONFIG: dict[str, Any] = {
    "data": {"dataset": "penguins", "split": {"val": 0.15, "test": 0.2, "seed": 0}},
    "tasks": {
        "species": {"kind": "multiclass"},
        "sex": {"kind": "binary"},
        # a fusion head: reads the species and sex outputs and the shared representation
        "body_mass_g": {
            "kind": "regression",
            "fusion": ["species", "sex"],
            "fusion_representation": True,
        },
    },
    "model": {"hidden": [16], "head_hidden": [8]},
    "optim": {"lr": 0.01},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0},
    "logging": {"progress": False},
}


def session_dir(tmp_path_factory: Any) -> Path:
    """A folder of this test session shared by its pytest-xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def fusion_bundle(tmp_path_factory: Any) -> Path:
    """The session's trained bundle folder (trained by the first worker that asks)."""
    from lepton import config_from_dict, run_experiment

    base = session_dir(tmp_path_factory)
    root = base / "lepton-fusion-bundle"
    bundle = root / "run" / "bundle"
    with FileLock(str(base / "lepton-fusion-bundle.lock")):
        if not (bundle / "lepton.json").is_file():
            run_experiment(config_from_dict(FUSION_CONFIG), root / "run", overwrite=True)
    return bundle


def stripes(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` noisy 10×10 one-channel images with a bright row (``row``: 0/1) and column
    (``col``: 0/1/2), plus an ``id`` per image."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 2, n), rng.integers(0, 3, n)
    imgs = rng.integers(0, 40, size=(n, 10, 10)).astype(np.uint8)
    for i in range(n):
        imgs[i, 2 + 4 * rows[i], :] = 255
        imgs[i, :, 1 + 3 * cols[i]] = 200
    return {"images": imgs, "row": rows, "col": cols, "id": np.arange(n) + 1000 * seed}


def image_run(tmp_path_factory: Any) -> Path:
    """The session's trained image run directory (a tiny CNN: tasks ``row`` binary, ``col``
    multiclass; ``test.npz`` beside it holds 30 labelled images)."""
    from lepton import config_from_dict, run_experiment

    base = session_dir(tmp_path_factory)
    root = base / "lepton-image-bundle"
    run = root / "run"
    with FileLock(str(base / "lepton-image-bundle.lock")):
        if not (run / "bundle" / "lepton.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            for split, (n, seed) in {"train": (64, 0), "val": (16, 1), "test": (30, 2)}.items():
                np.savez(root / f"{split}.npz", **stripes(n, seed))
            cfg = {
                "data": {"images": {s: str(root / f"{s}.npz") for s in ("train", "val", "test")}},
                "tasks": {"row": {"kind": "binary"}, "col": {"kind": "multiclass"}},
                "model": {"hidden": [8], "head_hidden": [4], "cnn": {"channels": [4, 8]}},
                "train": {"epochs": 2, "batch_size": 16, "seed": 0},
                "logging": {"progress": False},
            }
            run_experiment(config_from_dict(cfg), run, overwrite=True)
    return run


def penguin_frame() -> pd.DataFrame:
    """The penguins table with an ``id`` text column (leading zeros)."""
    from lepton.data import get_dataset

    df = get_dataset("penguins").load()
    df.insert(0, "id", [f"{i:04d}" for i in range(len(df))])
    return df


FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "island"]


def penguin_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` feature records as JSON-ready dicts (missing values as None)."""
    df = penguin_frame().iloc[start : start + n]
    out = []
    for row in df[FEATURES].to_dict("records"):
        out.append(
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        )
    return out


def overflowing_record(bundle_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """A feature record each number of which fits the model's float32 inputs on its own
    (standardised to ±0.99 × the float32 maximum) but which together overflow the model, and
    the tasks whose output is then NaN or infinite (in the bundle's order)."""
    from itertools import product

    import torch

    from lepton import Bundle
    from lepton.data.preprocess import FLOAT32_MAX

    bundle = Bundle.load(bundle_dir)
    pre = bundle.preprocessor
    predictor = bundle.predictor()
    for signs in product((1.0, -1.0), repeat=len(pre.numeric)):
        record: dict[str, Any] = {
            c: float(m + s * 0.99 * FLOAT32_MAX * sd)
            for c, m, sd, s in zip(pre.numeric, pre.means, pre.stds, signs, strict=True)
        }
        record.update({c: pre.vocabularies[c][0] for c in pre.categorical})
        raw = predictor.raw(pd.DataFrame([record]), check_outputs=False)
        failed = [t for t, r in raw.items() if not bool(torch.isfinite(r).all())]
        if failed:
            return record, failed
    raise AssertionError("no record overflows the model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``python -m lepton serve`` subprocess on a free loopback port."""

    def __init__(self, bundle: Path, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lepton", "serve", str(bundle), "--port", str(self.port), *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=cli_env(),
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"the server did not become ready: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@contextlib.contextmanager
def running_server(bundle: Path, *args: str, log: Path) -> Iterator[Server]:
    server = Server(bundle, *args, log=log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
