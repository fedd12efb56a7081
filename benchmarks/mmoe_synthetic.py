r"""The synthetic experiment of the MMoE paper (Ma et al., KDD 2018, section 5.3), on CPU.

Two regression tasks from ``lepton.data.make_mmoe_synthetic`` with task correlations 0.5, 0.9
and 1.0; for each correlation and seed: a shared-bottom model, MMoE and single-task models,
trained with Lepton's Trainer on the same data with the same budget. The paper's finding — the
advantage of MMoE over shared-bottom grows as the tasks become less related — should show.

    python benchmarks/mmoe_synthetic.py      # the committed results (64 seeds, 4 epochs)
    python benchmarks/mmoe_synthetic.py --sizes paper --seeds 32 --first-seed 200 \
        --name mmoe_synthetic_paper_rough     # the paper's sizes on the same data
    python benchmarks/mmoe_synthetic.py --sizes paper --scale 0.2 --seeds 64 --first-seed 400 \
        --name mmoe_synthetic_paper_scale02   # the paper's sizes on gentler rough functions
    python benchmarks/mmoe_synthetic.py --seeds 48 --epochs 60 --frequencies normal \
        --scale 1.0 --n 12000 --name mmoe_synthetic_smooth    # smooth functions, 60 epochs
    python benchmarks/mmoe_synthetic.py --seeds 64 --first-seed 0 --epochs 20 \
        --frequencies normal --scale 1.0 --n 12000 --name mmoe_synthetic_20epochs
    python benchmarks/mmoe_synthetic.py --sizes paper --seeds 8 --first-seed 0 --epochs 40 \
        --frequencies normal --scale 1.0 --n 12000
    python benchmarks/mmoe_synthetic.py --seeds 2 --epochs 1 --out /tmp/x   # a quick look
    python benchmarks/mmoe_synthetic.py --seeds 96 --reuse OLD_runs.json   # train new seeds only

The default data are rough functions (``frequencies="integer"``: sinusoids of frequency 1 … 10,
``scale`` 0.5) on 50,000 training rows: enough rows that a 4-epoch budget does not overfit, and
functions hard enough that the correlation matters — a 32-unit shared layer fits two unrelated
ones worse than one. With the smooth functions of ``frequencies="normal"`` every model fits both
tasks almost perfectly and the correlation makes no difference (``mmoe_synthetic_smooth``,
``mmoe_synthetic_20epochs``).

``--reuse RUNS.json`` takes every run of an earlier ``*_runs.json`` made with the same settings
(correlation, model, seed and every option that changes a result) instead of training it again:
training is deterministic on CPU, so more seeds cost only the new runs.

Writes ``mmoe_synthetic.json`` (``{"<correlation>": {model: {"mean", "std", "seeds"}}}``, the
final test loss), ``mmoe_synthetic.md`` (tables with the budget), ``mmoe_synthetic.png`` and
``mmoe_synthetic_runs.json`` (every run) to ``benchmarks/results/``; with ``--sizes paper`` the
files are ``mmoe_synthetic_paper.*``.
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
CORRELATIONS = (0.5, 0.9, 1.0)
#: Two size settings, each parameter-matched between shared-bottom and MMoE (towers of 8 units):
#: ``compact`` (the default: the shared layer is narrow enough for the two tasks to compete for
#: it) and ``paper`` (the sizes of the paper: 113 units vs 8 experts of 16). Single-task: one
#: network of the shared-bottom's width per task.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "compact": {
        "shared_bottom": {"architecture": "shared_bottom", "hidden": [32]},
        "mmoe": {"architecture": "mmoe", "hidden": [8], "num_experts": 4},
        "single_task": {"architecture": "single_task", "hidden": [32]},
    },
    "paper": {
        "shared_bottom": {"architecture": "shared_bottom", "hidden": [113]},
        "mmoe": {"architecture": "mmoe", "hidden": [16], "num_experts": 8},
        "single_task": {"architecture": "single_task", "hidden": [113]},
    },
}
MODELS = SIZES["compact"]
#: The options of a job that change its result (besides correlation, model and seed).
SETTINGS = ("epochs", "lr", "batch_size", "n", "n_test", "dim", "sizes", "frequencies", "scale")
#: The values of settings added later, for runs recorded before them.
SETTING_DEFAULTS = {"frequencies": "normal", "scale": 1.0}
COMMON = {"dropout": 0.0, "batch_norm": False, "activation": "relu", "head_hidden": [8]}


FREQUENCIES = {
    "normal": "α, β ~ N(0, 1) per seed: smooth functions",
    "integer": "α_i = i, β_i = (i−1)²: rough functions, waves up to frequency 10",
}


#: Where the spread over seeds comes from, by ``--frequencies``.
SPREAD = {
    "normal": "Most of the spread over seeds is the difficulty of each seed's function (its α, "
    "β), hence the comparison paired by seed.",
    "integer": "Every seed has the same function (fixed α, β; x is isotropic, so u₁, u₂ only "
    "rotate it): the spread over seeds is training — initial weights, sample and batch order — "
    "and pairing by seed removes the part due to the sample.",
}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model on one dataset; return its final test loss."""
    import torch

    torch.set_num_threads(1)
    from lepton import MultiTaskModel, Task, Trainer
    from lepton.data import from_frame, make_mmoe_synthetic

    df = make_mmoe_synthetic(
        n=job["n"], correlation=job["correlation"], dim=job["dim"], seed=job["seed"],
        scale=job["scale"], frequencies=job["frequencies"],
    )  # fmt: skip
    tasks = [Task("y1", "regression"), Task("y2", "regression")]
    data = from_frame(
        df, tasks, numeric=[f"x{i}" for i in range(job["dim"])], val=0.0,
        test=job["n_test"] / job["n"], seed=job["seed"],
    )  # fmt: skip
    spec = SIZES[job["sizes"]][job["model"]]
    model = MultiTaskModel.for_data(data, {**spec, **COMMON}, seed=job["seed"])
    trainer = Trainer(
        model,
        balancer="ew",
        optim={"name": "adam", "lr": job["lr"], "scheduler": {"name": "cosine"}},
        train={"epochs": job["epochs"], "batch_size": job["batch_size"], "seed": job["seed"],
               "restore_best": False},
        preprocessor=data.preprocessor,
        progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(data.train)
    seconds = time.perf_counter() - start
    losses = trainer.evaluate(data.test).losses
    return {
        **{k: job[k] for k in ("correlation", "model", "seed")},
        "settings": {k: job[k] for k in SETTINGS},
        "test_loss": sum(losses.values()) / len(losses),  # type: ignore[arg-type]
        "task_loss": losses,
        "params": model.num_parameters(),
        "train_seconds": seconds,
    }


MODEL_ORDER = {m: i for i, m in enumerate(MODELS)}


def job_key(job: dict[str, Any]) -> str:
    """What identifies a run's result: correlation, model, seed and :data:`SETTINGS`."""
    settings = {**SETTING_DEFAULTS, **(job.get("settings") or {k: job[k] for k in SETTINGS})}
    return json.dumps([job["correlation"], job["model"], job["seed"], settings], sort_keys=True)


def reusable(path: Path) -> dict[str, dict[str, Any]]:
    """The runs of an earlier ``*_runs.json`` by :func:`job_key` (runs without recorded
    settings cannot be matched and are left out)."""
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--reuse {path}: cannot read the runs ({exc})") from None
    return {job_key(r): r for r in runs if isinstance(r, dict) and "settings" in r}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for p in CORRELATIONS:
        out[str(p)] = {}
        for m in MODELS:
            vals = [r["test_loss"] for r in runs if r["correlation"] == p and r["model"] == m]
            out[str(p)][m] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "seeds": len(vals),
            }
    return out


def advantage(runs: list[dict[str, Any]], p: float) -> tuple[float, float, int]:
    """Shared-bottom minus MMoE test loss, paired by seed: mean, standard error, wins of MMoE."""
    by = {(r["model"], r["seed"]): r["test_loss"] for r in runs if r["correlation"] == p}
    seeds = sorted({s for (_, s) in by})
    diffs = [by[("shared_bottom", s)] - by[("mmoe", s)] for s in seeds]
    sem = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), sem, sum(d > 0 for d in diffs)


def growth(runs: list[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """How the advantage changes between correlations, paired by seed: (from, to, mean, s.e.)."""
    by = {(r["correlation"], r["model"], r["seed"]): r["test_loss"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})

    def adv(p: float, s: int) -> float:
        return by[(p, "shared_bottom", s)] - by[(p, "mmoe", s)]

    out = []
    for a, b in ((0.5, 0.9), (0.9, 1.0), (0.5, 1.0)):
        d = [adv(a, s) - adv(b, s) for s in seeds]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
        out.append((a, b, statistics.fmean(d), se))
    return out


def write_markdown(path: Path, runs: list[dict[str, Any]], table: dict, args: argparse.Namespace,
                   wall: float, stem: str, reused: int = 0) -> str:  # fmt: skip
    params = {m: next(r["params"] for r in runs if r["model"] == m) for m in MODELS}
    size = SIZES[args.sizes]
    sb, mm = size["shared_bottom"]["hidden"][0], size["mmoe"]
    lines = [
        "# MMoE synthetic experiment (Ma et al., KDD 2018, section 5.3)",
        "",
        f"Command: `{command(args)}`. Data: `make_mmoe_synthetic(n={args.n}, dim={args.dim}, "
        f"scale={args.scale:g}, sinusoids=10, noise_std=0.1, seed=s, "
        f'frequencies="{args.frequencies}")` ({FREQUENCIES[args.frequencies]}), '
        f"{args.n - args.n_test} training and {args.n_test} test rows; for one seed the three "
        "correlations share the inputs, u1, u2, α, β and the noise.",
        "",
        f"**Budget, identical for every model:** {args.epochs} epochs, batch {args.batch_size}, "
        f"Adam lr {args.lr} with a cosine schedule, equal weighting (`ew`), no dropout or batch "
        f"norm, towers of 8 units; seeds {args.first_seed} … "
        f"{args.first_seed + args.seeds - 1} (the seed draws the data, the split and the "
        "initial weights). Test loss: the mean over the two tasks of the MSE on standardised "
        "targets (1 ≈ predicting the mean), after the last "
        "epoch.",
        "",
        "| model | architecture | parameters |",
        "|---|---|---|",
        f"| shared_bottom | one shared layer of {sb} units | {params['shared_bottom']:,} |",
        f"| mmoe | {mm['num_experts']} experts of {mm['hidden'][0]} units, a softmax gate per "
        f"task | {params['mmoe']:,} |",
        f"| single_task | one {sb}-unit network per task | {params['single_task']:,} |",
        "",
        f"## Final test loss, mean ± std over {args.seeds} seeds",
        "",
        "| correlation | shared_bottom | mmoe | single_task "
        "| shared_bottom − mmoe (paired, ± s.e.) | seeds where mmoe wins |",
        "|---|---|---|---|---|---|",
    ]
    for p in CORRELATIONS:
        row = table[str(p)]
        adv, sem, wins = advantage(runs, p)
        cells = [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in MODELS]
        lines.append(
            f"| {p} | {' | '.join(cells)} | {adv:+.4f} ± {sem:.4f} | {wins}/{args.seeds} |"
        )
    adv = [advantage(runs, p) for p in CORRELATIONS]
    advs = [a[0] for a in adv]
    grows = advs[0] > advs[1] > advs[2]
    verdict = (
        "it grows as the correlation drops, as in the paper."
        if grows
        else "**it does not grow monotonically as the correlation drops here.**"
    )
    sb = " / ".join(f"{table[str(p)]['shared_bottom']['mean']:.4f}" for p in CORRELATIONS)
    mm = " / ".join(f"{table[str(p)]['mmoe']['mean']:.4f}" for p in CORRELATIONS)
    lines += [
        "",
        "MMoE's advantage over shared-bottom at correlation 0.5 / 0.9 / 1.0: "
        f"{advs[0]:+.4f} / {advs[1]:+.4f} / {advs[2]:+.4f} — {verdict} "
        "How much it grows, paired by seed (mean ± s.e. of the per-seed difference of "
        "advantages): "
        + "; ".join(
            f"{a}→{b}: {m:+.4f} ± {se:.4f} (t = {m / se:.1f})" if se else f"{a}→{b}: {m:+.4f}"
            for a, b, m, se in growth(runs)
        )
        + f" — with {args.seeds} seeds, |t| below 2 is within the noise.",
        "",
        f"Mean test loss at 0.5 / 0.9 / 1.0 — shared-bottom {sb}; MMoE {mm}. "
        + SPREAD[args.frequencies],
        "",
        f"Training time {sum(r['train_seconds'] for r in runs) / 60:.1f} min summed over the "
        f"{len(runs)} runs (one thread each); {provenance(args, wall, reused, len(runs))}"
        + f"; every run is in `{stem}_runs.json`.",
        "",
        f"![test loss by correlation]({stem}.png)",
        "",
    ]  # fmt: skip
    text = "\n".join(lines)
    path.write_text(text)
    return text


def provenance(args: argparse.Namespace, wall: float, reused: int, total: int) -> str:
    """Where this invocation's runs come from: trained here (wall time) or an earlier file."""
    taken = f"taken from `{args.reuse.name}` (same settings)" if args.reuse else ""
    if args.reuse and reused == total:
        return f"this invocation trained nothing: all {reused} runs {taken}"
    here = f"this invocation: {wall / 60:.1f} min wall with {args.jobs} process(es) on "
    here += f"{platform.machine()} ({platform.python_version()})"
    return here + (f", {reused} run(s) {taken}" if reused else "")


def plot(path: Path, runs: list[dict[str, Any]], table: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    xs = list(CORRELATIONS)
    for i, m in enumerate(MODELS):
        mean = [table[str(p)][m]["mean"] for p in xs]
        std = [table[str(p)][m]["std"] for p in xs]
        ax.errorbar([x + (i - 1) * 0.01 for x in xs], mean, yerr=std, marker="o", capsize=3,
                    label=m)  # fmt: skip
    ax.set_xlabel("task correlation p")
    ax.set_ylabel("final test loss (MSE, standardised)")
    ax.set_xticks(xs)
    ax.legend()
    ax.set_title(f"mean ± std, {args.seeds} seeds, {args.epochs} epochs")
    adv = [advantage(runs, p) for p in xs]
    bx.bar([str(p) for p in xs], [a[0] for a in adv], yerr=[a[1] for a in adv], capsize=4,
           color="tab:orange")  # fmt: skip
    bx.set_xlabel("task correlation p")
    bx.set_ylabel("shared_bottom − mmoe test loss")
    bx.set_title("MMoE's advantage (paired by seed, ± s.e.)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", choices=sorted(SIZES), default="compact")
    # The committed run: 64 seeds from 100. Its data (integer frequencies, scale 0.5, 52,000
    # rows) and budget (4 epochs) were chosen on seeds 0-7, where MMoE's advantage grew as the
    # correlation dropped, after the smooth functions had shown no such dependence (64 seeds at
    # 20 epochs, 48 at 60); the committed run, on seeds not looked at to choose them, is the
    # test of that choice (and did not confirm it).
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds first-seed … +seeds-1")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--frequencies", choices=sorted(FREQUENCIES), default="integer",
                    help="α, β of the sinusoids (make_mmoe_synthetic)")  # fmt: skip
    ap.add_argument("--scale", type=float, default=0.5, help="c, the norm of the weight vectors")
    ap.add_argument("--n", type=int, default=52000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (one thread each)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default=None, help="file stem (default: mmoe_synthetic[_paper])")
    ap.add_argument(
        "--reuse", type=Path, default=None,
        help="an earlier *_runs.json: its runs with the same settings are not trained again",
    )  # fmt: skip
    return ap


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces ``args``' results: ``--seeds`` and ``--epochs``, and
    every other option that changes them (``--jobs``, ``--out`` and ``--name`` do not)."""
    ap, parts = parser(), ["python benchmarks/mmoe_synthetic.py"]
    for key, value in vars(args).items():
        if key in ("seeds", "epochs") or (
            key not in ("jobs", "out", "name", "reuse") and value != ap.get_default(key)
        ):
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("mmoe_synthetic" if args.sizes == "compact" else "mmoe_synthetic_paper")
    jobs = [
        {"correlation": p, "model": m, "seed": s, "epochs": args.epochs, "lr": args.lr,
         "batch_size": args.batch_size, "n": args.n, "n_test": args.n_test, "dim": args.dim,
         "sizes": args.sizes, "frequencies": args.frequencies, "scale": args.scale}
        for s in range(args.first_seed, args.first_seed + args.seeds)
        for p in CORRELATIONS for m in MODELS
    ]  # fmt: skip
    done = reusable(args.reuse) if args.reuse else {}
    runs: list[dict[str, Any]] = [done[key] for key in map(job_key, jobs) if key in done]
    todo = [job for job in jobs if job_key(job) not in done]
    if args.reuse:
        print(f"{len(runs)} run(s) taken from {args.reuse}, {len(todo)} to train", flush=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, r in enumerate(pool.map(run_one, todo), 1):
            runs.append(r)
            head = f"[{i}/{len(todo)}] p={r['correlation']} {r['model']:<13} seed {r['seed']}"
            print(f"{head}: test loss {r['test_loss']:.4f} ({r['train_seconds']:.0f}s)", flush=True)
    wall = time.perf_counter() - start
    runs.sort(key=lambda r: (r["seed"], r["correlation"], MODEL_ORDER[r["model"]]))
    table = summarise(runs)
    (args.out / f"{stem}.json").write_text(json.dumps(table, indent=2) + "\n")
    (args.out / f"{stem}_runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    reused = len(runs) - len(todo)
    text = write_markdown(args.out / f"{stem}.md", runs, table, args, wall, stem, reused)
    plot(args.out / f"{stem}.png", runs, table, args)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
