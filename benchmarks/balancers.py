"""Speed and memory of every balancing method against a plain PyTorch step, in the same run.

Setup (issue 3): a hard-parameter-sharing MLP (input 64 → 256 → 256, ReLU), K linear heads
256 → 10 with cross-entropy, batch 256, Adam, ``torch.set_num_threads(2)``, K ∈ {2, 8, 32}. For each
method and mode, steps of the method and of the plain equal-weight step (``sum(losses).backward()``
on the same architecture) alternate, so that machine noise hits both alike; the medians over the
measured steps give ``ms_per_step`` and ``ratio_to_plain``. ``peak_mb`` is the peak of the memory
held by tensors allocated during one step (torch profiler, CPU), for the method and the plain step.

Run from the repository root::

    python benchmarks/balancers.py                    # everything (several minutes)
    python benchmarks/balancers.py --k 8 --methods mgda,upgrad --steps 30

Writes ``benchmarks/results/balancers.json`` (a list of rows ``{"method", "k", "mode",
"ms_per_step", "ratio_to_plain", "peak_mb", ...}``) and ``benchmarks/results/balancers.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lepton.balancers import (  # noqa: E402
    GradientBalancer,
    available,
    balancer_class,
    create,
)

RESULTS = ROOT / "benchmarks" / "results"
IN, HIDDEN, CLASSES, BATCH = 64, 256, 10, 256

#: LibMTL (git HEAD) and torchjd 0.18 on this setup at K = 8, as measured for the issue
REFERENCE = {
    "LibMTL": "4–7× for MGDA, PCGrad, GradVac, IMTL, CAGrad, UPGrad, DB-MTL; 14× Nash-MTL; "
    "1.7× FAMO",
    "torchjd 0.18 (mtl_backward)": "2.5× UPGrad, DualProj; 2.9–3.7× IMTL-G, PCGrad, MGDA, CAGrad; "
    "15× Nash-MTL",
}


class Model(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()
        )
        self.heads = nn.ModuleList(nn.Linear(HIDDEN, CLASSES) for _ in range(k))


def make_step(k: int, method: str | None, mode: str | None, seed: int = 0) -> Callable[[], None]:
    """One training step (forward, backward, Adam) of the plain model or with a balancer."""
    torch.manual_seed(seed)
    model = Model(k)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(BATCH, IN, generator=gen)
    y = torch.randint(0, CLASSES, (k, BATCH), generator=gen)
    balancer = None
    if method is not None:
        hp = {} if mode in (None, "loss") else {"mode": mode}
        balancer = create(method, num_tasks=k, **hp)
    params = [*model.parameters(), *(balancer.parameters() if balancer is not None else [])]
    opt = torch.optim.Adam(params, lr=1e-3)
    shared = list(model.trunk.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        z = model.trunk(x)
        losses = torch.stack([F.cross_entropy(h(z), y[i]) for i, h in enumerate(model.heads)])
        if balancer is None:
            losses.sum().backward()
        else:
            balancer.backward(losses, shared, features=z)
        opt.step()

    return step


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines on stderr: hide them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_mb(step: Callable[[], None]) -> float:
    """Peak memory (MiB) held by tensors allocated during one step."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.time_range.start, e.cpu_memory_usage) for e in prof.events() if e.cpu_memory_usage
    )
    held = peak = 0
    for _, delta in events:
        held += delta
        peak = max(peak, held)
    return peak / 2**20


def measure(k: int, method: str, mode: str, steps: int, warmup: int) -> dict:
    plain = make_step(k, None, None)
    step = make_step(k, method, mode)
    for _ in range(warmup):
        plain()
        step()
    wall: dict[str, list[float]] = {"plain": [], "method": []}
    cpu: dict[str, list[float]] = {"plain": [], "method": []}
    for _ in range(steps):
        for key, fn in (("plain", plain), ("method", step)):
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[key].append(time.process_time() - c)
            wall[key].append(time.perf_counter() - w)
    p, m = statistics.median(wall["plain"]) * 1e3, statistics.median(wall["method"]) * 1e3
    cp, cm = statistics.median(cpu["plain"]) * 1e3, statistics.median(cpu["method"]) * 1e3
    return {
        "method": method,
        "k": k,
        "mode": mode,
        "ms_per_step": round(m, 3),
        "plain_ms_per_step": round(p, 3),
        "ratio_to_plain": round(m / p, 3),
        "min_ratio_to_plain": round(min(wall["method"]) / min(wall["plain"]), 3),
        "cpu_ms_per_step": round(cm, 3),
        "cpu_ratio_to_plain": round(cm / cp, 3) if cp > 0 else None,
        "peak_mb": round(peak_mb(step), 2),
        "plain_peak_mb": round(peak_mb(plain), 2),
    }


def configurations(methods: list[str]) -> list[tuple[str, str]]:
    out = []
    for name in methods:
        cls = balancer_class(name)
        if not issubclass(cls, GradientBalancer):
            out.append((name, "loss"))
            continue
        out.extend((name, mode) for mode in ("params", "features") if mode in cls.modes)
    return out


TARGETS = {("loss", 8): 1.15, ("params", 8): 2.0, ("features", 8): 1.3, ("features", 32): 2.0}


def target_of(row: dict) -> float | None:
    if row["method"] == "nash_mtl" and row["k"] == 8 and row["mode"] == "params":
        return 3.0
    kind = balancer_class(row["method"]).kind
    if kind == "loss" and row["mode"] != "loss" and row["k"] == 8:
        return 1.15 if row["mode"] == "features" else None
    return TARGETS.get((row["mode"], row["k"]))


def write_markdown(rows: list[dict], path: Path, meta: dict) -> None:
    lines = [
        "# Balancers: time and memory per training step",
        "",
        "Command: `python benchmarks/balancers.py` — hard-sharing MLP 64→256→256 (ReLU), K linear "
        "heads 256→10 with cross-entropy, batch 256, Adam, `torch.set_num_threads(2)`. Each ratio "
        "is the method's median step time over the plain PyTorch equal-weight step "
        "(`sum(losses).backward()`, same model) measured alternately in the same run.",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['steps']} measured steps after "
        f"{meta['warmup']} warm-up steps; {meta['date']}; load average at the start "
        f"{meta['load']}.",
        "",
        "`mode`: `loss` — loss weighting (one backward); `features` — per-task gradients with "
        "respect to the shared representation (one backward through the heads, one through the "
        "trunk); `params` — per-task gradients of the shared parameters (layer-wise from the "
        "representation gradients). `ratio (median)` is the issue's measure (medians of wall "
        "time, method over plain); `ratio (min)` compares the fastest steps and `ratio (CPU "
        "time)` the process CPU time — both less sensitive to other processes on a shared "
        "machine. `target`: the issue's target for the row, judged on the median ratio "
        "(✓ met, ✗ not).",
        "",
    ]
    for k in sorted({r["k"] for r in rows}):
        lines += [
            f"## K = {k}",
            "",
            "| method | mode | ms/step | plain ms/step | ratio (median) | ratio (min) "
            "| ratio (CPU time) | target | peak MB | plain peak MB |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in sorted((r for r in rows if r["k"] == k), key=lambda r: (r["mode"], r["method"])):
            t = target_of(r)
            mark = "" if t is None else f"≤ {t}× {'✓' if r['ratio_to_plain'] <= t else '✗'}"
            cpu = "" if r["cpu_ratio_to_plain"] is None else f"{r['cpu_ratio_to_plain']:.2f}"
            lines.append(
                f"| {r['method']} | {r['mode']} | {r['ms_per_step']:.2f} | "
                f"{r['plain_ms_per_step']:.2f} | {r['ratio_to_plain']:.2f} | "
                f"{r['min_ratio_to_plain']:.2f} | {cpu} | {mark} | "
                f"{r['peak_mb']:.1f} | {r['plain_peak_mb']:.1f} |"
            )
        lines.append("")
    lines += ["## For reference (K = 8, from the issue, same setup)", ""]
    lines += [f"- {name}: {text}" for name, text in REFERENCE.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", default="2,8,32", help="numbers of tasks (comma-separated)")
    ap.add_argument("--methods", default=",".join(available()), help="registry names")
    ap.add_argument("--steps", type=int, default=40, help="measured steps per method (≥ 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS), help="output folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ks = [int(v) for v in args.k.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(available()))
    if unknown:
        ap.error(f"unknown methods {unknown}; available: {', '.join(available())}")
    rows = []
    for k in ks:
        for method, mode in configurations(methods):
            row = measure(k, method, mode, args.steps, args.warmup)
            rows.append(row)
            print(
                f"K={k:<3d} {method:14s} {mode:8s} {row['ms_per_step']:8.2f} ms "
                f"({row['ratio_to_plain']:.2f}× plain {row['plain_ms_per_step']:.2f} ms) "
                f"peak {row['peak_mb']:.1f} MB",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d"),
        "load": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    (out / "balancers.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    write_markdown(rows, out / "balancers.md", meta)
    print(f"wrote {out / 'balancers.json'} and {out / 'balancers.md'}")


if __name__ == "__main__":
    main()
