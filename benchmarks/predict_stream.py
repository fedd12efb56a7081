"""Memory and speed of streaming ``lepton predict`` on growing CSV files.

    python benchmarks/predict_stream.py            # ≈ 3 minutes on 2 CPU cores
    python benchmarks/predict_stream.py --rows 100000,400000

For each size it writes a CSV of the bundled ``synthetic`` dataset's features (in pieces, so
the generator stays small), then runs ``lepton predict`` on it in a fresh process and records
the process's peak resident memory and its rows per second. The baseline, measured in the same
run, is the whole-file route (``read_table`` + ``Predictor.predict``, what ``lepton predict``
did before streaming) on the same files. Streaming keeps the peak flat as the file grows; the
whole-file route grows with it. Results: ``benchmarks/results/predict_stream.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG: dict[str, Any] = {
    "data": {"dataset": "synthetic"},
    "tasks": {
        "flag": {"kind": "binary"},
        "segment": {"kind": "multiclass"},
        "tags": {"kind": "multilabel", "target": ["tag_a", "tag_b", "tag_c"]},
        "score": {"kind": "regression"},
    },
    "model": {"hidden": [64, 64], "head_hidden": [32]},
    "train": {"epochs": 2, "batch_size": 256, "seed": 0},
    "logging": {"progress": False},
}

WHOLE_FILE = """
import sys
from lepton import Bundle
from lepton.data import read_table, write_table
predictor = Bundle.load(sys.argv[1]).predictor()
write_table(predictor.predict(read_table(sys.argv[2])), sys.argv[3])
"""


def write_csv(path: Path, rows: int) -> None:
    from lepton.data import make_synthetic

    cols = [f"x{i}" for i in range(10)] + ["group"]
    done = 0
    with open(path, "w", newline="") as f:
        while done < rows:
            n = min(200_000, rows - done)
            make_synthetic(n, seed=done)[cols].to_csv(f, header=done == 0, index=False)
            done += n


# Linux counts the memory a child had before exec (a copy of its parent) in its peak RSS, so the
# command is started from a bare Python process that imports nothing heavy.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a command run in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *cmd], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    code, kib = res.stdout.split()
    if res.returncode != 0 or code != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr}")
    return wall, int(kib) / 1024  # Linux reports kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="250000,1000000,2000000")
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/predict_stream.md")
    args = ap.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]

    import torch

    from lepton import __version__, config_from_dict, run_experiment

    work = Path(tempfile.mkdtemp(prefix="lepton-stream-bench-"))
    run_experiment(config_from_dict(CONFIG), work / "run", progress=False)
    bundle = work / "run" / "bundle"
    rows = []
    for n in sizes:
        src = work / f"in-{n}.csv"
        write_csv(src, n)
        mib = src.stat().st_size / 2**20
        stream = measure(
            [
                *(sys.executable, "-m", "lepton", "predict", str(bundle), str(src), "-q"),
                *("-o", str(work / "out.parquet"), "--chunk-rows", str(args.chunk_rows)),
            ]
        )
        whole = measure(
            [sys.executable, "-c", WHOLE_FILE, str(bundle), str(src), str(work / "w.parquet")]
        )
        rows.append((n, mib, stream, whole))
        print(
            f"{n:>9} rows ({mib:.0f} MiB): streaming {stream[1]:.0f} MiB peak, "
            f"{n / stream[0]:,.0f} rows/s; whole file {whole[1]:.0f} MiB, "
            f"{n / whole[0]:,.0f} rows/s",
            flush=True,
        )
        src.unlink()

    lines = [
        "# Streaming `lepton predict`: peak memory and speed",
        "",
        f"Command: `python benchmarks/predict_stream.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), 1-minute load average at "
        f"the end {os.getloadavg()[0]:.1f}  ",
        f"Software: lepton {__version__}, torch {torch.__version__.split('+')[0]}, "
        f"Python {platform.python_version()}",
        "",
        "Input: CSV files of the `synthetic` dataset's 11 feature columns; output Parquet; a "
        f"4-task model (MLP {CONFIG['model']['hidden']}). Streaming: `lepton predict "
        f"--chunk-rows {args.chunk_rows}` in a fresh process. Baseline, same files, same run: "
        "the whole file read with `read_table` and predicted in one `Predictor.predict` call. "
        "Peak memory is the process's maximum resident set size (it includes about 300 MiB of "
        "Python, torch and pandas).",
        "",
        "| rows | CSV MiB | streaming peak MiB | streaming rows/s | whole-file peak MiB "
        "| whole-file rows/s | peak ratio whole/streaming |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, mib, (sw, sm), (ww, wm) in rows:
        lines.append(
            f"| {n:,} | {mib:.0f} | {sm:.0f} | {n / sw:,.0f} | {wm:.0f} | {n / ww:,.0f} "
            f"| {wm / sm:.2f}× |"
        )
    growth_s = rows[-1][2][1] - rows[0][2][1]
    growth_w = rows[-1][3][1] - rows[0][3][1]
    lines += [
        "",
        f"From {rows[0][0]:,} to {rows[-1][0]:,} rows the streaming peak grew by "
        f"{growth_s:.0f} MiB, the whole-file peak by {growth_w:.0f} MiB.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
