"""A run directory's results and curves as ``report.md`` + ``report.html`` with plots.

Plots (``plots/``): training loss per task, the validation main metric per task, the task weights
the balancer applied, and — when the balancer computed per-task gradients — their pairwise
cosine similarity (gradient conflict) over epochs. ``lepton report RUN_DIR`` (re)writes it;
``lepton train`` writes it at the end of every run.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from lepton.errors import RunDirError
from lepton.train._checkpoint import atomic_write_bytes


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: metrics.jsonl is missing")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if "monitor" in rec:  # epoch lines (step lines have no monitor)
                rows.append(rec)
    return rows


def _plot_series(
    ax: Any, epochs: list[int], series: dict[str, list[float | None]], ylabel: str
) -> None:
    for name, values in series.items():
        pts = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)


def _plots(
    run_dir: Path, rows: list[dict[str, Any]], main: dict[str, str]
) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    epochs = [r["epoch"] for r in rows]
    tasks = list(rows[0]["train"]["loss"]) if rows else []
    figures: list[tuple[str, str, dict[str, list[float | None]]]] = [
        (
            "train_loss",
            "training loss",
            {t: [r["train"]["loss"].get(t) for r in rows] for t in tasks},
        ),
    ]
    if rows and "val" in rows[0]:
        figures.append(
            (
                "val_main_metric",
                "validation main metric",
                {
                    f"{t} ({main.get(t, '?')})": [
                        r["val"]["metrics"].get(t, {}).get(main.get(t, ""))  # type: ignore[union-attr]
                        for r in rows
                    ]
                    for t in tasks
                },
            )
        )
    if rows and "weights" in rows[0]["train"]:
        figures.append(
            (
                "task_weights",
                "task weight",
                {t: [r["train"]["weights"].get(t) for r in rows] for t in tasks},
            )
        )
    if rows and "grad_cosine" in rows[0]["train"]:
        pairs = {}
        for i, a in enumerate(tasks):
            for b in tasks[i + 1 :]:
                pairs[f"{a} · {b}"] = [r["train"]["grad_cosine"][a][b] for r in rows]
        figures.append(("gradient_cosine", "gradient cosine similarity", pairs))
    saved = []
    for name, label, series in figures:
        # one panel per series when their scales differ (the validation metrics)
        panels = list(series.items()) if name == "val_main_metric" else [(label, series)]
        fig, axes = plt.subplots(
            1, len(panels), figsize=(min(4.0 * len(panels), 12.8), 3.4), squeeze=False
        )
        for ax, (title, data) in zip(axes[0], panels, strict=True):
            if name == "val_main_metric":
                _plot_series(ax, epochs, {title: data}, "")  # type: ignore[dict-item]
                ax.get_legend().remove()
            else:
                _plot_series(ax, epochs, data, label)  # type: ignore[arg-type]
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        saved.append((label, path))
    return saved


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _metrics_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    base = results.get("baselines") or {}
    for task, metrics in results.get("tasks", {}).items():
        for metric, value in metrics.items():
            star = " *" if results.get("main_metric", {}).get(task) == metric else ""
            row = [task, metric + star, _fmt(value)]
            if base:
                row.append(_fmt((base.get(task) or {}).get(metric)))
            rows.append(row)
    return rows


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/`` into ``run_dir``; return the md path."""
    run_dir = Path(run_dir)
    rows = _epochs(run_dir)
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    config = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    main = results.get("main_metric", {})
    plots = _plots(run_dir, rows, main)

    header = ["task", "metric", "multi-task"] + (
        ["single-task"] if results.get("baselines") else []
    )
    table = _metrics_rows(results)
    md = [f"# Lepton run report: {run_dir.name}", ""]
    arch = (config.get("model") or {}).get("architecture", "?")
    bal = (config.get("balancer") or {}).get("name", "?")
    md.append(
        f"Architecture `{arch}`, balancer `{bal}`, {len(rows)} epochs run, best epoch "
        f"{results.get('best_epoch', '?')}; metrics on the {results.get('split', '?')} split "
        "(* main metric)."
    )
    md.append("")
    if table:
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in table]
        md.append("")
    if results.get("delta_m") is not None:
        md += [
            f"**Δm = {results['delta_m']:+.2f}%** (mean relative gain over single-task models).",
            "",
        ]
    eff = results.get("efficiency")
    if eff:
        p, s = eff["params"], eff["train_seconds"]
        md += [
            f"Parameters: multi-task {p['multi_task']:,} vs single-task total "
            f"{p['single_task_total']:,}. Training time: {s['multi_task']:.1f}s vs "
            f"{s['single_task_total']:.1f}s.",
            "",
        ]
    for label, path in plots:
        md += [f"## {label}", "", f"![{label}](plots/{path.name})", ""]
    md_path = run_dir / "report.md"
    atomic_write_bytes(md_path, "\n".join(md).encode())

    body = [
        f"<h1>Lepton run report: {html.escape(run_dir.name)}</h1>",
        f"<p>{html.escape(md[2])}</p>",
    ]
    if table:
        body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for r in table:
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        body.append("</table>")
    if results.get("delta_m") is not None:
        body.append(f"<p><b>Δm = {results['delta_m']:+.2f}%</b></p>")
    for label, path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f"<h2>{html.escape(label)}</h2><img src='data:image/png;base64,{data}'>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Lepton report</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "</style></head><body>" + "\n".join(body) + "</body></html>"
    )
    atomic_write_bytes(run_dir / "report.html", page.encode())
    return md_path
