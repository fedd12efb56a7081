"""Prediction for files of any size: read in chunks, predict, append to the output.

Memory stays bounded by the chunk size whatever the size of the input. The output (and the side
file of skipped rows) is written to a temporary file beside it and renamed into place at the
end, so a failed run never leaves half a file under the output's name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from lepton.bundle._bundle import Bundle
from lepton.bundle._predictor import (
    Predictor,
    nonfinite_outputs,
    nonfinite_reason,
    overflowing_integers,
)
from lepton.data.io import _csv_sep, iter_table, table_columns, table_format
from lepton.data.preprocess import require_columns
from lepton.errors import DataError
from lepton.train._checkpoint import current_umask

OnError = Literal["stop", "skip"]
DEFAULT_CHUNK_ROWS = 50_000


@dataclass
class PredictFileResult:
    """What :func:`predict_file` did."""

    output: Path
    tasks: list[str]
    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    chunks: int = 0
    errors_path: Path | None = None
    unknown_categories: dict[str, int] = field(default_factory=dict)


def default_errors_path(output: str | Path) -> Path:
    """Where skipped rows go by default: ``OUT.errors.csv`` beside the output."""
    output = Path(output)
    return output.with_name(f"{output.stem}.errors.csv")


class _TempFile:
    """A file written beside ``target`` under a temporary name, renamed into place by ``commit``."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        self.path = Path(tmp)
        os.chmod(self.path, 0o666 & ~current_umask())

    def commit(self) -> None:
        os.replace(self.path, self.target)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _TableWriter:
    """Appends DataFrames to a CSV/TSV file or a Parquet file (one schema for every chunk)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.format = table_format(target)
        self.file = _TempFile(target)
        self._csv: IO[str] | None = None
        self._parquet: Any = None
        self._schema: Any = None
        self._empty: pd.DataFrame | None = None

    def write(self, df: pd.DataFrame) -> None:
        if self.format == "csv":
            if self._csv is None:
                self._csv = open(self.file.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                df.to_csv(self._csv, sep=_csv_sep(self.target), index=False)
            else:
                df.to_csv(self._csv, sep=_csv_sep(self.target), index=False, header=False)
            return
        if len(df) == 0:  # an empty chunk cannot fix the column types; remember its columns
            if self._empty is None:
                self._empty = df
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._parquet is None:
            # a column that is empty in the first chunk becomes text, so later values still fit
            fields = [
                pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields)
            self._parquet = pq.ParquetWriter(self.file.path, self._schema)
        if table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                changed = [
                    f"'{f.name}' ({self._schema.field(f.name).type} then {f.type})"
                    for f in table.schema
                    if f.type != self._schema.field(f.name).type
                ]
                raise DataError(
                    f"{self.target}: column {', '.join(changed)} changes type between chunks; "
                    "write CSV instead, or pass a larger chunk size"
                ) from None
        self._parquet.write_table(table)

    def commit(self) -> None:
        if self.format == "csv":
            if self._csv is None:  # no chunk at all: an empty file
                self._csv = open(self.file.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._csv.close()
        else:
            if self._parquet is None:
                empty = self._empty if self._empty is not None else pd.DataFrame()
                empty.to_parquet(self.file.path, index=False)
            else:
                self._parquet.close()
        self.file.commit()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self._csv is not None:
                self._csv.close()
            if self._parquet is not None:
                self._parquet.close()
        self.file.discard()


@contextlib.contextmanager
def _progress_bar(
    enabled: bool, console: Console, description: str
) -> Iterator[Any]:  # yields update(bytes_done, bytes_total, rows) or None
    if not (enabled and console.is_terminal):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=None, rows=0)

        def update(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=rows)

        yield update


class _RowNumbers:
    """0-based data-row numbers of the rows a CSV reader yields, around the lines it left out."""

    def __init__(self) -> None:
        self.next = 0
        self.skipped: set[int] = set()

    def skip(self, rows: Sequence[int]) -> None:
        self.skipped.update(r - 1 for r in rows)

    def take(self, n: int) -> pd.Index:
        ahead = sorted(r for r in self.skipped if r >= self.next)
        if not ahead:
            start, self.next = self.next, self.next + n
            return pd.RangeIndex(start, start + n)
        numbers = np.arange(self.next, self.next + n + len(ahead))
        numbers = numbers[~np.isin(numbers, ahead)][:n]
        self.next = int(numbers[-1]) + 1 if n else self.next
        self.skipped = {r for r in self.skipped if r >= self.next}
        return pd.Index(numbers)


def predict_file(
    bundle: Bundle | Predictor | str | Path,
    input: str | Path,
    output: str | Path,
    tasks: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_error: OnError = "stop",
    errors_path: str | Path | None = None,
    progress: bool = False,
    console: Console | None = None,
) -> PredictFileResult:
    """Predict every row of a CSV/TSV/Parquet file into a CSV/TSV/Parquet file, in chunks.

    Parameters
    ----------
    bundle:
        A bundle (object or folder) or a :class:`Predictor`.
    input, output:
        The files (format by suffix: ``.csv``, ``.tsv``, ``.parquet``). The output holds the
        ``keep`` columns, then each task's prediction columns (see :meth:`Predictor.predict`).
    tasks:
        Tasks to predict (default: all); only their heads run.
    keep:
        Input columns to copy to the output (an id, say). From a CSV file they are copied as
        text (``007`` stays ``007``) unless they are also numeric features.
    chunk_rows:
        Rows read, predicted and written at a time: memory is bounded by the chunk, not the file.
    on_error:
        ``"stop"`` (default): a row with a bad value (text in a numeric feature, an infinite
        number or one too large for the model, values whose output is NaN or infinite because
        they overflow the model together) or a CSV line with more fields than the header stops
        the run with a :class:`DataError` naming the file, the row (1 = first data row) or
        line, and the column, and no output is written. ``"skip"``: such rows are left out of
        the output and written, with their row number and the reason, to ``errors_path`` (a
        malformed line with its number and field count, its values blank).
    errors_path:
        The side file of skipped rows (CSV; default ``OUT.errors.csv``); written whenever
        ``on_error="skip"``, with a header only when no row was skipped.
    progress, console:
        Show a progress bar (bytes read, rows) on ``console`` (stderr) when it is a terminal.

    Examples
    --------
    >>> res = predict_file("runs/penguins/bundle", "big.csv", "out.parquet",
    ...                    on_error="skip")                           # doctest: +SKIP
    >>> res.rows_written, res.rows_skipped, res.errors_path           # doctest: +SKIP
    (999998, 2, PosixPath('out.errors.csv'))
    """
    if on_error not in ("stop", "skip"):
        raise DataError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    input, output = Path(input), Path(output)
    table_format(output)
    table_format(input)
    predictor = bundle if isinstance(bundle, Predictor) else _as_bundle(bundle).predictor()
    pre = predictor.preprocessor
    names = predictor.check_tasks(tasks)
    errors_file = None
    if on_error == "skip":
        errors_file = Path(errors_path) if errors_path is not None else default_errors_path(output)
        table_format(errors_file)
    for other in (output, errors_file):
        if other is not None and input.resolve() == other.resolve():
            raise DataError(f"{other}: the output would overwrite the input file")
    if errors_file is not None and errors_file.resolve() == output.resolve():
        raise DataError(f"{errors_file}: the side file of skipped rows would overwrite the output")

    header = table_columns(input)
    require_columns(pd.DataFrame(columns=header), pre.feature_columns, str(input), "feature")
    keep = list(dict.fromkeys(keep))
    missing = [c for c in keep if c not in header]
    if missing:
        raise DataError(f"{input}: column(s) to keep not found: {', '.join(missing)}")
    wanted = set(pre.feature_columns) | set(keep)
    columns = [c for c in header if c in wanted]
    text_columns = {c: str for c in keep if c not in pre.feature_columns}

    console = console or Console(stderr=True)
    result = PredictFileResult(output=output, tasks=names, errors_path=errors_file)
    writer = _TableWriter(output)
    skipped = _TableWriter(errors_file) if errors_file is not None else None
    unknown: dict[str, int] = {}
    try:
        with _progress_bar(progress, console, f"predicting {input.name}") as bar:
            state = {"done": 0, "total": 0}

            def on_bytes(done: int, total: int) -> None:
                state["done"], state["total"] = done, total

            bad_lines: list[tuple[int, str]] = []
            numbering = _RowNumbers()

            def write_bad_lines() -> None:
                if not bad_lines:
                    return
                assert skipped is not None
                rows = [line - 1 for line, _ in bad_lines]  # line 1 is the header
                numbering.skip(rows)
                side = pd.DataFrame({"row": rows, "error": [r for _, r in bad_lines]})
                skipped.write(side.reindex(columns=["row", "error", *columns]))
                result.rows_read += len(bad_lines)
                result.rows_skipped += len(bad_lines)
                bad_lines.clear()

            chunks = iter_table(
                input,
                chunk_rows,
                columns=columns,
                dtype=text_columns or None,
                progress=on_bytes,
                bad_lines=None
                if skipped is None
                else lambda line, why: bad_lines.append((line, why)),
            )
            for chunk in chunks:
                write_bad_lines()
                n = len(chunk)
                chunk.index = numbering.take(n)
                result.rows_read += n
                result.chunks += 1
                good, raw, bad = _predict_chunk(predictor, chunk, names, str(input))
                if len(bad):
                    if skipped is None:
                        row = int(bad.index[0]) + 1
                        raise DataError(
                            f"{input}: row {row}: {bad.iloc[0]} (--on-error skip leaves bad rows "
                            "out and lists them in a side file)"
                        )
                    side = pd.DataFrame({"row": bad.index.to_numpy() + 1, "error": bad.to_numpy()})
                    rows = chunk.loc[bad.index].reset_index(drop=True)
                    skipped.write(pd.concat([side, rows.astype(object)], axis=1))
                    result.rows_skipped += len(bad)
                for col, count in pre.unknown_categories(good).items():
                    unknown[col] = unknown.get(col, 0) + count
                predictions = predictor.prediction_table(raw, good, keep)
                writer.write(predictions)
                result.rows_written += len(predictions)
                if bar is not None:
                    bar(state["done"], state["total"], result.rows_read)
            write_bad_lines()  # lines after the last good row
        writer.commit()
        if skipped is not None:
            if result.rows_skipped == 0:
                skipped.write(pd.DataFrame(columns=["row", "error", *columns]))
            skipped.commit()
    except BaseException:
        writer.discard()
        if skipped is not None:
            skipped.discard()
        raise
    result.unknown_categories = unknown
    return result


def _predict_chunk(
    predictor: Predictor, chunk: pd.DataFrame, tasks: Sequence[str], source: str
) -> tuple[pd.DataFrame, dict[str, torch.Tensor], pd.Series]:
    """``(good rows, their raw outputs, bad rows' reasons)`` for one chunk.

    Bad rows: a numeric feature holding an integer too large for a float, text that is not a
    number, an infinite number or one too large for the model (see
    :meth:`Preprocessor.invalid_rows`), and rows whose output is NaN or infinite (values that
    overflow the model together). The reasons are indexed by row label, in order.
    """
    pre = predictor.preprocessor
    huge = overflowing_integers(chunk, pre.numeric)  # pandas cannot convert these at all
    rest = chunk.drop(index=huge.index) if len(huge) else chunk
    invalid = pre.invalid_rows(rest)
    good = rest.drop(index=invalid.index) if len(invalid) else rest
    # the rows are checked above: transform and run them without checking them again
    raw = predictor.raw_tensors(pre.transform(good, source), list(tasks))
    positions, failed = nonfinite_outputs(raw)
    parts = [r for r in (huge, invalid) if len(r)]
    if len(positions):
        parts.append(pd.Series([nonfinite_reason(t) for t in failed], index=good.index[positions]))
        keep = np.ones(len(good), dtype=bool)
        keep[positions] = False
        good = good[keep]
        mask = torch.from_numpy(keep)
        raw = {t: r[mask] for t, r in raw.items()}
    if not parts:
        return good, raw, pd.Series([], index=chunk.index[:0], dtype=object)
    bad = pd.concat(parts) if len(parts) > 1 else parts[0]
    return good, raw, bad.sort_index(kind="stable").astype(object)


def _as_bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
