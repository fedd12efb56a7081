"""Load benchmark of ``lepton serve``: one multi-task service against K single-task services.

    python benchmarks/serve_load.py                 # ≈ 5 minutes on 2 CPU cores
    python benchmarks/serve_load.py --duration 10   # a quicker look

What it does, all on this machine:

1. trains, on the bundled ``synthetic`` dataset (K = 4 tasks: binary, multiclass, multilabel,
   regression), one multi-task bundle and K single-task bundles with the same config restricted
   to one task (same trunk, heads, epochs and seed — how ``lepton train --baselines`` builds its
   baselines);
2. (a) starts one ``lepton serve`` process for the multi-task bundle, and (b) K ``lepton serve``
   processes side by side, one per single-task bundle, each on its own loopback port with the same
   options (1 worker, 1 torch thread, default micro-batching); (c) the multi-task service
   again with 2 worker processes;
3. drives each setup with C concurrent clients (8 and 64) for a fixed time. One client operation
   gets *all K predictions* for R records: (a) one ``POST /predict``; (b) K concurrent
   ``POST /predict``, one per service, the operation ending when the last answers;
4. reports requests/s, records/s (records with all K tasks predicted), latency percentiles of an
   operation, errors (must be 0), the servers' CPU time per 1,000 records and their mean
   micro-batch, and the ratio (a)/(b) of records/s, which the issue asks to be ≥ 0.7 × K.

The client (aiohttp, asyncio; the ``bench`` extra) runs in this process and shares the CPU
cores with the servers; the machine is described in the results. Results:
``benchmarks/results/serve.md`` and ``serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from lepton._optional import require  # noqa: E402

CONFIG: dict[str, Any] = {
    "data": {"dataset": "synthetic", "split": {"val": 0.15, "test": 0.15, "seed": 0}},
    "tasks": {
        "flag": {"kind": "binary"},
        "segment": {"kind": "multiclass"},
        "tags": {"kind": "multilabel", "target": ["tag_a", "tag_b", "tag_c"]},
        "score": {"kind": "regression"},
    },
    "model": {"hidden": [256, 256], "head_hidden": [64], "dropout": 0.1},
    "optim": {"lr": 0.003},
    "train": {"epochs": 5, "batch_size": 128, "seed": 0},
    "logging": {"progress": False},
}


# --------------------------------------------------------------------------- bundles
def train_bundles(workdir: Path, epochs: int) -> tuple[Path, dict[str, Path], dict[str, int]]:
    """The multi-task bundle, one single-task bundle per task, and parameter counts."""
    import copy

    from lepton import Bundle, config_from_dict, run_experiment

    def train(cfg: dict[str, Any], name: str) -> Path:
        cfg = copy.deepcopy(cfg)
        cfg["train"]["epochs"] = epochs
        cfg["logging"]["run_name"] = name
        run_experiment(config_from_dict(cfg), workdir / name, overwrite=True, progress=False)
        return workdir / name / "bundle"

    multi = train(CONFIG, "multi-task")
    singles = {}
    for task, spec in CONFIG["tasks"].items():
        cfg = copy.deepcopy(CONFIG)
        cfg["tasks"] = {task: spec}
        singles[task] = train(cfg, f"single-{task}")
    params = {"multi-task": Bundle.load(multi).model.num_parameters()}
    params.update({t: Bundle.load(p).model.num_parameters() for t, p in singles.items()})
    return multi, singles, params


def sample_records(n: int) -> list[dict[str, Any]]:
    from lepton.data import make_synthetic

    df = make_synthetic(n, seed=1)
    cols = [f"x{i}" for i in range(10)] + ["group"]
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in df[cols].to_dict("records")
    ]


# --------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, bundle: Path, log: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
        self.log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "lepton", "serve", str(bundle)),
                *("--port", str(self.port), "--log-level", "warning", *extra),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server on {self.url} exited; see {self.log.name}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server on {self.url} did not become ready")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and its worker processes (Linux /proc)."""
        return _tree_cpu(self.proc.pid)

    def batching(self) -> dict[str, Any] | None:
        if self.workers > 1:  # each worker counts its own batches; one answers at random
            return None
        return httpx.get(self.url + "/metadata", timeout=10).json()["batching"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants, NaN where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return math.nan
    return total + sum(_tree_cpu(int(c)) for c in children)


# --------------------------------------------------------------------------- load
async def drive(
    urls: list[str],
    records: list[dict[str, Any]],
    per_request: int,
    clients: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """C clients in closed loop; one operation = one request to each of ``urls``, concurrently."""
    aiohttp = require("aiohttp", "bench", "the load generator")

    latencies: list[float] = []
    errors = 0
    ops = 0
    rng = random.Random(0)
    bodies = [
        json.dumps({"records": rng.sample(records, per_request)}).encode() for _ in range(256)
    ]
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients * len(urls) + 8)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def one(url: str, body: bytes) -> bool:
            try:
                async with http.post(url + "/predict", data=body, headers=headers) as r:
                    payload = await r.read()
                    if r.status != 200:
                        return False
                return len(json.loads(payload)["predictions"]) == per_request
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                return False

        async def client(i: int) -> None:
            nonlocal errors, ops
            k = i
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                body = bodies[k % len(bodies)]
                k += clients
                if len(urls) == 1:
                    ok = [await one(urls[0], body)]
                else:
                    ok = await asyncio.gather(*(one(u, body) for u in urls))
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    ops += 1
                    latencies.append(t1 - t0)
                    errors += sum(1 for x in ok if not x)

        await asyncio.gather(*(client(i) for i in range(clients)))
    lat = np.array(latencies) * 1000
    return {
        "operations": ops,
        "requests_per_s": ops * len(urls) / duration,
        "records_per_s": ops * per_request / duration,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else math.nan,
        "p95_ms": float(np.percentile(lat, 95)) if len(lat) else math.nan,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else math.nan,
        "errors": errors,
    }


def run_setup(
    name: str,
    servers: list[Server],
    records: list[dict[str, Any]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    rows = []
    for clients in args.clients:
        cpu0 = [s.cpu_seconds() for s in servers]
        batch0 = [s.batching() for s in servers]
        client0 = time.process_time()
        res = asyncio.run(
            drive([s.url for s in servers], records, args.records, clients, args.duration, 2.0)
        )
        client_cpu = time.process_time() - client0
        cpu = sum(s.cpu_seconds() - c for s, c in zip(servers, cpu0, strict=True))
        batch1 = [s.batching() for s in servers]
        n_rec = n_bat = 0
        for b0, b1 in zip(batch0, batch1, strict=True):
            if b0 is None or b1 is None:
                n_bat = 0
                break
            n_rec += b1["records"] - b0["records"]
            n_bat += b1["batches"] - b0["batches"]
        served = res["records_per_s"] * (args.duration + 2.0)  # warm-up included, like the CPU
        res.update(
            setup=name,
            clients=clients,
            server_cpu_ms_per_1000_records=1e6 * cpu / served if served else math.nan,
            client_cpu_s=client_cpu,
            mean_batch_records=n_rec / n_bat if n_bat else math.nan,
        )
        rows.append(res)
        print(
            f"{name:>22} C={clients:<3} {res['requests_per_s']:8.1f} req/s "
            f"{res['records_per_s']:8.1f} rec/s  p50 {res['p50_ms']:.1f} ms  "
            f"p99 {res['p99_ms']:.1f} ms  errors {res['errors']}",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- report
def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    k = meta["K"]
    out = [
        "# Serving load: one multi-task service vs K single-task services",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        f"Software: {meta['software']}",
        "",
        f"K = {k} tasks ({', '.join(meta['tasks'])}) on the bundled `synthetic` dataset; "
        f"model: shared MLP {meta['hidden']}, heads {meta['head_hidden']}. "
        f"Parameters: multi-task {meta['params']['multi-task']:,}; single-task "
        + ", ".join(f"{t} {meta['params'][t]:,}" for t in meta["tasks"])
        + f" (total {sum(meta['params'][t] for t in meta['tasks']):,}).",
        "",
        f"Each setup ran {meta['duration']:.0f} s per client count after a 2 s warm-up; "
        f"{meta['records']} record(s) per request. One *operation* gets all {k} predictions for "
        "those records: (a) one request to the multi-task service; (b) one request to each "
        f"of the {k} single-task services, concurrently, the operation ending with the last "
        "answer. Every service: `lepton serve` with 1 worker process (the last setup: 2), "
        "1 torch thread, the default micro-batching (2 ms window, 512 records). The load "
        "generator (aiohttp, asyncio, one process) runs on the same machine and shares its "
        "cores.",
        "",
        "| setup | clients | requests/s | records/s (all tasks) | p50 ms | p95 ms | p99 ms "
        "| errors | server CPU ms / 1000 records | mean micro-batch (records) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['setup']} | {r['clients']} | {r['requests_per_s']:.0f} | "
            f"{r['records_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {r['server_cpu_ms_per_1000_records']:.0f} | "
            f"{_num(r['mean_batch_records'])} |"
        )
    out += ["", "Records with all tasks per second, multi-task / single-task services:", ""]
    by = {(r["setup"], r["clients"]): r for r in rows}
    for c in meta["clients"]:
        a, b = by[("multi-task", c)], by[(f"{k} single-task", c)]
        ratio = a["records_per_s"] / b["records_per_s"] if b["records_per_s"] else math.nan
        verdict = "meets" if ratio >= 0.7 * k else "does NOT meet"
        out.append(
            f"- {c} clients, one worker process each: **{ratio:.2f}×** (target ≥ 0.7 × K = "
            f"{0.7 * k:.1f}×: {verdict}); p99 latency {a['p99_ms']:.1f} ms vs {b['p99_ms']:.1f} ms"
        )
        cpu_a = a["server_cpu_ms_per_1000_records"]
        cpu_b = b["server_cpu_ms_per_1000_records"]
        if cpu_a and not math.isnan(cpu_a) and not math.isnan(cpu_b):
            out.append(
                f"- {c} clients: server CPU per record {cpu_b / cpu_a:.1f}× lower for the "
                "multi-task service (CPU time is less sensitive than throughput to the other load "
                "on the machine)"
            )
        w = by.get(("multi-task, 2 workers", c))
        if w is not None and b["records_per_s"]:
            out.append(
                f"- {c} clients, the multi-task service with 2 worker processes (the single-task "
                f"services hold {k} processes): {w['records_per_s'] / b['records_per_s']:.2f}×"
            )
    errors = sum(r["errors"] for r in rows)
    out += ["", f"Errors over all runs: {errors}.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per measurement")
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64])
    ap.add_argument("--records", type=int, default=1, help="records per request")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.md")
    ap.add_argument("--workdir", type=Path, default=None, help="keep bundles and logs here")
    args = ap.parse_args()

    import torch

    from lepton import __version__

    load_before = os.getloadavg()[0]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lepton-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"training bundles in {work} ...", flush=True)
    multi, singles, params = train_bundles(work, args.epochs)
    records = sample_records(2000)
    k = len(singles)
    rows: list[dict[str, Any]] = []

    setups = [
        ("multi-task", [multi], []),
        (f"{k} single-task", list(singles.values()), []),
        ("multi-task, 2 workers", [multi], ["--workers", "2"]),
    ]
    for name, bundles, extra in setups:
        servers = [Server(b, work / f"{b.parent.name}.log", extra) for b in bundles]
        try:
            for s in servers:
                s.wait_ready()
            rows += run_setup(name, servers, records, args)
        finally:
            for s in servers:
                s.stop()

    cpu = platform.processor() or platform.machine()
    meta = {
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, shared with the "
        f"load generator; 1-minute load average at the start {load_before:.1f}, at the end "
        f"{os.getloadavg()[0]:.1f}",
        "software": f"lepton {__version__}, torch {torch.__version__.split('+')[0]}, "
        f"Python {platform.python_version()}",
        "K": k,
        "tasks": list(singles),
        "hidden": CONFIG["model"]["hidden"],
        "head_hidden": CONFIG["model"]["head_hidden"],
        "params": params,
        "duration": args.duration,
        "records": args.records,
        "clients": args.clients,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, meta))
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
