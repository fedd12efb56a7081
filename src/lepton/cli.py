"""The ``lepton`` command line: a thin layer over the Python API.

Every error a user can cause ends as one readable line on stderr and a non-zero exit code;
``LEPTON_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import DataError, LeptonError

app = typer.Typer(
    name="lepton",
    help="Multi-task learning for PyTorch: train one shared model for many tasks, evaluate it "
    "against single-task baselines, predict and deploy.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def _handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors into one line on stderr and a non-zero exit code (1; 130 when interrupted)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = os.environ.get("LEPTON_DEBUG", "") not in ("", "0")
        try:
            return fn(*args, **kwargs)
        except LeptonError as e:
            if debug:
                raise
            err.print(f"error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(130 if isinstance(e, _interrupted()) else 1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:
            if debug:
                raise
            if fs_message := _file_system_error(e):
                # the file system refused a path the user gave (a file where a folder should
                # be, no permission, a read-only or full disk): the user's to fix, not a bug
                err.print(f"error: {fs_message}", markup=False, soft_wrap=True)
                raise typer.Exit(1) from None
            err.print(
                f"internal error: {type(e).__name__}: {e}\n"
                "(a bug in Lepton: run again with LEPTON_DEBUG=1 for the traceback and report it)",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper


_FS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _file_system_error(e: Exception) -> str | None:
    """The message of an OS error about a path (or a full/read-only disk); None for others."""
    if not isinstance(e, OSError) or (e.filename is None and e.errno not in _FS_ERRNOS):
        return None
    paths = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{paths + ': ' if paths else ''}{e.strerror or e} (check the path and its permissions)"


def _interrupted() -> type[Exception]:
    from lepton.train import TrainingInterrupted

    return TrainingInterrupted


def _version_callback(value: bool) -> None:
    if value:
        from lepton import __version__

        out.print(f"lepton {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Lepton command line."""


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.1f}"


def metrics_table(
    metrics: dict[str, dict[str, float | None]],
    main: dict[str, str] | None = None,
    baselines: dict[str, dict[str, float | None]] | None = None,
    title: str | None = None,
) -> Table:
    """Rows task × metric; with baselines, the single-task value and the relative gain."""
    from lepton.tasks import HIGHER_IS_BETTER

    table = Table(title=title, show_lines=False)
    table.add_column("task")
    table.add_column("metric")
    table.add_column("multi-task", justify="right")
    if baselines is not None:
        table.add_column("single-task", justify="right")
        table.add_column("gain", justify="right")
    for task, ms in metrics.items():
        for i, (name, value) in enumerate(ms.items()):
            label = name + (" *" if main and main.get(task) == name else "")
            row = [task if i == 0 else "", label, _fmt(value)]
            if baselines is not None:
                b = (baselines.get(task) or {}).get(name)
                row.append(_fmt(b))
                if value is None or b is None or b == 0:
                    row.append("")
                else:
                    sign = 1 if HIGHER_IS_BETTER.get(name, True) else -1
                    row.append(f"{100 * sign * (value - b) / abs(b):+.1f}%")
            table.add_row(*row)
        table.add_section()
    return table


@app.command()
@_handled
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config file.")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: runs/<name>-<time>).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config field by dotted path: --set train.epochs=10."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --run-dir.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run directory.")
    ] = False,
    baselines: Annotated[
        bool | None,
        typer.Option(
            "--baselines/--no-baselines",
            help="Also train single-task baselines with the same trunk and budget; report Δm.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a multi-task model from a YAML config; print its test metrics."""
    from lepton.config import load_config
    from lepton.experiment import run_experiment

    if resume and run_dir is None:
        raise LeptonError("--resume needs --run-dir (the run to continue)")
    if resume and overrides:
        err.print("note: --set is ignored with --resume; the run continues with its saved config")
    cfg = load_config(config, [] if resume else list(overrides or []))
    result = run_experiment(
        cfg,
        run_dir,
        resume=resume,
        overwrite=overwrite,
        baselines=baselines,
        progress=False if quiet else None,
        console=err,
        config_path=config,
    )
    out.print(
        metrics_table(
            result.metrics,
            result.main_metric,
            result.baselines,
            title=f"{result.split} split (* main metric)",
        )
    )
    if result.baselines is not None:
        dm = "n/a" if result.delta_m is None else f"{result.delta_m:+.2f}%"
        out.print(f"Δm (mean relative gain over single-task models, main metrics): {dm}")
        eff = result.efficiency
        if eff:
            p, s = eff["params"], eff["train_seconds"]
            out.print(
                f"parameters: multi-task {p['multi_task']:,} vs single-task total "
                f"{p['single_task_total']:,}; training time: {s['multi_task']:.1f}s vs "
                f"{s['single_task_total']:.1f}s"
            )
    out.print(f"run directory: {result.run_dir}")
    out.print(
        "predict with the saved model:\n"
        f"  lepton predict {result.bundle_dir} {result.run_dir / result.sample_input} "
        "-o predictions.csv"
    )


@app.command()
@_handled
def evaluate(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run directory or a bundle folder.")
    ],
    data: Annotated[Path | None, typer.Option("--data", help="Labelled CSV/Parquet file.")] = None,
    split: Annotated[
        Split | None,
        typer.Option(
            "--split",
            help="Instead of --data: a split of the run's own data, as config.yaml draws it.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print JSON: {"tasks": {...}}.')] = False,
    tasks: Annotated[
        str | None, typer.Option("--tasks", help="Comma-separated tasks (default: all labelled).")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Image model: .npy/.npz images labelled by --data rows."),
    ] = None,
) -> None:
    """Per-task metrics of a trained model on a labelled file (an image model: an .npz with
    images and label arrays, or --data labels.csv --images images.npy), or with --split on the
    run's own train/val/test split."""
    from lepton.bundle import Bundle
    from lepton.data import TensorData, read_table
    from lepton.evaluate import evaluate as run_eval

    if (data is None) == (split is None):
        raise DataError("evaluate: give either --data FILE or --split train|val|test")
    bundle = Bundle.load(run_dir)
    if split is not None:
        if images is not None:
            raise DataError("--images goes with --data, not --split")
        df, tensors = _run_split(run_dir, split.value, bundle)
        data = Path(f"{run_dir}:{split.value}")
    elif bundle.model.image_shape is not None:
        from lepton.data.images import image_tensor_data

        df, tensors = image_tensor_data(bundle, data, images)
    else:
        if images is not None:
            raise DataError("--images: this model takes table rows, not images")
        df = read_table(data)
        tensors = TensorData.from_frame(df, bundle.preprocessor, str(data))
    wanted = bundle.predictor().check_tasks(_split_list(tasks))
    selected = [t for t in bundle.tasks if t.name in wanted]
    absent = [t.name for t in selected if t.name not in tensors.targets]
    if absent:
        err.print(f"note: {data} has no label column for task(s) {', '.join(absent)}; skipped")
    selected = [t for t in selected if t.name in tensors.targets]
    if not selected:
        raise DataError(f"{data}: no label column of any task ({', '.join(wanted)})")
    unknown = bundle.preprocessor.unknown_categories(df)
    if unknown:
        err.print(f"note: unseen categories mapped to the unknown bucket: {unknown}")
    result = run_eval(bundle.model, tensors, selected, bundle.preprocessor)
    if as_json:
        out.print(json.dumps({"tasks": result.metrics}, indent=2), markup=False)
    else:
        main = {t.name: t.main_metric for t in selected}
        out.print(metrics_table(result.metrics, main, title=f"{data} (* main metric)"))


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


def _run_split(run_dir: Path, split: str, bundle: Any) -> tuple[Any, Any]:
    """The rows of a run's ``split`` (drawn again from its config.yaml) encoded by ``bundle``."""
    from lepton.config import load_config
    from lepton.data import TensorData, prepare_data

    path = run_dir / "config.yaml"
    if not path.is_file() and (run_dir.parent / "config.yaml").is_file():
        path = run_dir.parent / "config.yaml"  # given the run's bundle folder
    if not path.is_file():
        raise DataError(f"--split needs a run directory with a config.yaml; {run_dir} has none")
    config = load_config(path)
    prepared = prepare_data(config.data, config.build_tasks())
    frame = getattr(prepared.frames, split)
    if frame is None:
        raise DataError(f"--split {split}: the run {run_dir} has no {split} split")
    if bundle.model.image_shape is not None:
        return frame, getattr(prepared, split)
    return frame, TensorData.from_frame(frame, bundle.preprocessor, f"{run_dir}:{split}")


class OnError(StrEnum):
    stop = "stop"
    skip = "skip"


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [x.strip() for x in text.split(",") if x.strip()]


@app.command()
@_handled
def predict(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="A bundle folder (or a run directory).")
    ],
    input: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="CSV/TSV/Parquet file with the feature columns (image model: .npy/.npz).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV/TSV/Parquet file.")],
    tasks: Annotated[
        str | None, typer.Option("--tasks", help="Comma-separated tasks (default: all).")
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option("--keep", help="Comma-separated input columns to copy (e.g. an id)."),
    ] = None,
    chunk_rows: Annotated[
        int,
        typer.Option("--chunk-rows", min=1, help="Rows read and predicted at a time."),
    ] = 50_000,
    on_error: Annotated[
        OnError,
        typer.Option(
            "--on-error",
            help="stop: a bad row stops the run, naming the row; skip: bad rows are left out "
            "and written with the reason to --errors-file.",
        ),
    ] = OnError.stop,
    errors_file: Annotated[
        Path | None,
        typer.Option("--errors-file", help="Side file of skipped rows (default: OUT.errors.csv)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Predict every (or the selected) task for each row of a file, streamed in chunks."""
    from lepton.bundle import predict_file
    from lepton.data.images import is_image_file

    if errors_file is not None and on_error is not OnError.skip:
        raise LeptonError("--errors-file goes with --on-error skip")
    if is_image_file(input):
        _predict_images(bundle, input, output, tasks, keep)
        return
    res = predict_file(
        bundle,
        input,
        output,
        _split_list(tasks),
        keep=_split_list(keep) or [],
        chunk_rows=chunk_rows,
        on_error=on_error.value,
        errors_path=errors_file,
        progress=not quiet,
        console=err,
    )
    if res.unknown_categories:
        err.print(f"note: unseen categories mapped to the unknown bucket: {res.unknown_categories}")
    err.print(f"wrote {res.rows_written} rows × {len(res.tasks)} task(s) to {output}")
    if res.errors_path is not None:
        err.print(f"skipped {res.rows_skipped} bad row(s); listed in {res.errors_path}")


def _predict_images(
    bundle: Path, input: Path, output: Path, tasks: str | None, keep: str | None
) -> None:
    """``lepton predict`` on an image array file (.npy/.npz), read whole."""
    from lepton.bundle import Bundle
    from lepton.data import write_table
    from lepton.data.images import read_image_file
    from lepton.data.io import table_format

    table_format(output)
    predictor = Bundle.load(bundle).predictor()
    names = predictor.check_tasks(_split_list(tasks))
    images, table = read_image_file(input)
    kept = _split_list(keep) or []
    missing = [c for c in kept if c not in table.columns]
    if missing:
        raise DataError(f"{input}: array(s) to keep not found: {', '.join(missing)}")
    result = predictor.predict_images(images, names, keep=table[kept], source=str(input))
    write_table(result, output)
    err.print(f"wrote {len(result)} rows × {len(names)} task(s) to {output}")


@app.command()
@_handled
def export(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="A bundle folder (or a run directory).")
    ],
    onnx: Annotated[Path, typer.Option("--onnx", help="The ONNX file to write (.onnx).")],
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Comma-separated tasks (default: all); others are left out."),
    ] = None,
    opset: Annotated[
        int | None, typer.Option("--opset", min=7, help="ONNX opset (default: the exporter's).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="CSV/Parquet rows (an .npy/.npz of images for an image model) to verify with "
            "(default: generated).",
        ),
    ] = None,
    record: Annotated[
        bool,
        typer.Option("--record/--no-record", help="Record the export in the bundle's lepton.json."),
    ] = True,
) -> None:
    """Export the model to ONNX, verified against PyTorch with onnxruntime (to an absolute
    1e-5 plus a relative 1e-5)."""
    from lepton.bundle import export_onnx
    from lepton.bundle._onnx import tolerance_text
    from lepton.data import read_image_file, read_table
    from lepton.data.images import is_image_file

    sample: Any = None
    if data is not None and is_image_file(data):
        sample = read_image_file(data)[0][:256]
    elif data is not None:
        sample = read_table(data).head(256)
    info = export_onnx(bundle, onnx, _split_list(tasks), opset=opset, sample=sample, record=record)
    worst = max(info.max_abs_diff.values(), default=0.0)
    unit = "images" if [i["name"] for i in info.inputs] == ["image"] else "rows"
    inputs = ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in info.inputs)
    out.print(
        f"wrote {onnx} (opset {info.opset}): inputs {inputs}; outputs {', '.join(info.tasks)}",
        markup=False,
    )
    out.print(
        f"verified with onnxruntime on {info.verified_rows} {unit}: largest difference to "
        f"PyTorch {worst:.2g} (tolerance: {tolerance_text(**info.tolerance)})",
        markup=False,
    )


@app.command()
@_handled
def serve(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="A bundle folder (or a run directory).")
    ],
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (default: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="File holding the bearer token every request needs."),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body (413 beyond).")
    ] = 1 << 20,
    max_records: Annotated[
        int, typer.Option("--max-records", min=1, help="Most records per request (413 beyond).")
    ] = 1000,
    batch_window_ms: Annotated[
        float,
        typer.Option("--batch-window-ms", min=0.0, help="Micro-batching window (milliseconds)."),
    ] = 2.0,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most records in one micro-batch.")
    ] = 512,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="Torch threads per worker process.")
    ] = 1,
    docs: Annotated[
        bool, typer.Option("--docs/--no-docs", help="Serve /docs and /openapi.json.")
    ] = True,
    log_level: Annotated[LogLevel, typer.Option("--log-level")] = LogLevel.info,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
) -> None:
    """Serve a bundle over HTTP: POST /predict, GET /health, /ready, /metadata, /docs."""
    from lepton.bundle import Bundle
    from lepton.serve import ServeSettings, is_loopback, read_token_file
    from lepton.serve import serve as run_server

    settings = ServeSettings(
        max_body_bytes=max_body_bytes,
        max_records=max_records,
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        threads=threads,
        docs=docs,
    )
    settings.check()
    if token_file is not None:
        _, warnings = read_token_file(token_file)
        for w in warnings:
            err.print(f"warning: {w}", markup=False)
    elif not is_loopback(host):
        err.print(
            f"warning: serving on {host} without --token-file: anyone who reaches this port "
            "can use the model",
            markup=False,
        )
    b = Bundle.load(bundle)
    tasks = ", ".join(f"{t.name} ({t.kind})" for t in b.tasks)
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"serving {b.name} {b.version} ({tasks}) on http://{shown}:{port} "
        f"with {workers} worker(s); docs at /docs" + ("" if docs else " (off)"),
        markup=False,
    )
    run_server(
        b if workers == 1 else bundle,
        host=host,
        port=port,
        workers=workers,
        settings=settings,
        token_file=token_file,
        log_level=log_level.value,
        access_log=access_log,
    )


@app.command()
@_handled
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory.")],
) -> None:
    """(Re)write a run's report.md / report.html with plots of losses, metrics, task weights
    and gradient conflict."""
    from lepton.report import write_report

    path = write_report(run_dir)
    out.print(f"wrote {path} and {path.with_suffix('.html')}")


@app.command()
@_handled
def datasets(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the bundled datasets and their tasks."""
    from lepton.data import available_datasets, get_dataset

    rows = []
    for name in available_datasets():
        info = get_dataset(name)
        rows.append(
            {
                "name": name,
                "description": info.description,
                "tasks": {t: spec["kind"] for t, spec in info.tasks.items()},
                "numeric": list(info.numeric),
                "categorical": list(info.categorical),
                "images": info.images is not None,
                "options": info.options(),
                "source": info.source,
            }
        )
    if as_json:
        out.print(json.dumps(rows, indent=2), markup=False)
        return
    table = Table(title="bundled datasets (data.dataset: <name>)")
    table.add_column("name")
    table.add_column("tasks")
    table.add_column("description")
    for r in rows:
        table.add_row(
            r["name"], ", ".join(f"{t} ({k})" for t, k in r["tasks"].items()), r["description"]
        )
    out.print(table)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of ``lepton`` and ``python -m lepton``."""
    return app(args=argv, prog_name="lepton")
