"""Shared fixtures: small configs and data, and a helper that runs the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def cli_env() -> dict[str, str]:
    """Environment for a `python -m lepton` subprocess that imports *this* checkout's sources."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["COLUMNS"] = "200"
    env.pop("LEPTON_DEBUG", None)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m lepton ARGS`` and return the completed process (never raises)."""
    return subprocess.run(
        [sys.executable, "-m", "lepton", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=cli_env(),
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    """A fast penguins config (a few epochs) as a plain mapping."""
    return {
        "data": {"dataset": "penguins", "split": {"val": 0.15, "test": 0.2, "seed": 0}},
        "tasks": {
            "species": {"kind": "multiclass"},
            "sex": {"kind": "binary"},
            "body_mass_g": {"kind": "regression"},
        },
        "model": {"hidden": [16], "head_hidden": [8]},
        "optim": {"lr": 0.01},
        "train": {"epochs": 3, "batch_size": 64, "seed": 0},
        "logging": {"progress": False},
    }


@pytest.fixture
def write_config(tmp_path: Path):
    def write(cfg: dict[str, Any], name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return write


@pytest.fixture
def small_frame() -> pd.DataFrame:
    """120 rows with one label of every kind, some labels and features missing."""
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=(n, 3))
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    df["color"] = rng.choice(["red", "green", "blue"], size=n)
    df["y_bin"] = np.where(x[:, 0] > 0, "pos", "neg")
    df["y_cls"] = np.array(["u", "v", "w"])[rng.integers(0, 3, size=n)]
    df["l1"] = (x[:, 1] > 0).astype(float)
    df["l2"] = (x[:, 2] > 0).astype(float)
    df["y_reg"] = 100 + 10 * x[:, 0] + rng.normal(size=n)
    df.loc[::7, "y_bin"] = None
    df.loc[::11, "y_reg"] = np.nan
    df.loc[::13, "l2"] = np.nan
    df.loc[5, "a"] = np.nan
    return df
