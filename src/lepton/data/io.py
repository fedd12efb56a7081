"""Reading and writing tables (CSV, TSV, Parquet) with errors that name the file."""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lepton.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; a clear error for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise DataError(
        f"{path}: unsupported file type '{suffix or '(none)'}'; use .csv, .tsv or .parquet"
    )


def _csv_sep(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a whole CSV/TSV/Parquet file into a DataFrame."""
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    try:
        df = pd.read_parquet(p) if fmt == "parquet" else pd.read_csv(p, sep=_csv_sep(p))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None
    except Exception as e:  # pyarrow raises its own types for corrupt Parquet files
        raise DataError(f"{p}: cannot be read as {fmt}: {e}") from None
    if len(df.columns) == 0:
        raise DataError(f"{p}: the file has no columns")
    return df


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV/TSV/Parquet file, read from its header or schema only."""
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(p).schema_arrow.names)
        return [str(c) for c in pd.read_csv(p, sep=_csv_sep(p), nrows=0).columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: the file has no columns") from None
    except Exception as e:  # parser and pyarrow errors of every kind
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None


def iter_table(
    path: str | Path,
    chunk_rows: int = 65536,
    *,
    columns: Sequence[str] | None = None,
    dtype: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    bad_lines: Callable[[int, str], None] | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a CSV/TSV/Parquet file in chunks of at most ``chunk_rows`` rows (bounded memory).

    ``columns`` reads only those columns; ``dtype`` fixes the type of CSV columns (the same type
    in every chunk, e.g. ``{"id": str}``); ``progress(bytes_read, bytes_total)`` is called after
    each chunk. Each chunk keeps pandas' index: CSV chunks continue the row count, Parquet
    batches restart at 0.

    A CSV line with more fields than the header is an error naming the line, unless
    ``bad_lines`` is given: such lines are then left out and ``bad_lines(line, reason)`` is
    called for each (``line``: 1-based line of the file), before the chunk that follows them is
    yielded (after the last chunk for trailing ones). A line with fewer fields reads as missing
    values in its last columns, as CSV readers do.
    """
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    total = p.stat().st_size
    cols = None if columns is None else list(columns)
    try:
        with open(p, "rb") as fh:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(fh)
                for rb in pf.iter_batches(batch_size=chunk_rows, columns=cols):
                    chunk = rb.to_pandas()
                    if progress is not None:
                        progress(min(fh.tell(), total), total)
                    yield chunk
            else:
                # Every column is parsed (``usecols`` would let pandas ignore extra fields,
                # hiding a shifted line) and none becomes the index. Over-long lines at the top
                # are found first: after one, pandas would cut every later line to the header.
                leading = _leading_long_lines(p)
                if leading and bad_lines is None:
                    raise DataError(f"{p}: {leading[0][1]}")
                for line, why in leading:
                    assert bad_lines is not None
                    bad_lines(line, why)
                reader = pd.read_csv(
                    fh,
                    sep=_csv_sep(p),
                    chunksize=chunk_rows,
                    dtype=dtype,
                    index_col=False,
                    skiprows=[line - 1 for line, _ in leading] or None,
                    on_bad_lines="error" if bad_lines is None else "warn",
                )
                while True:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", pd.errors.ParserWarning)
                        chunk = next(reader, None)
                    _report_bad_lines(caught, bad_lines)
                    if chunk is None:
                        break
                    if progress is not None:
                        progress(min(fh.tell(), total), total)
                    yield chunk if cols is None else chunk[cols]
    except pd.errors.ParserError as e:
        m = _TOO_MANY_FIELDS.search(str(e))
        if m is not None:
            expected, line, saw = m.groups()
            raise DataError(
                f"{p}: line {line} has {saw} fields, the header has {expected}"
            ) from None
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None
    except (OSError, ValueError) as e:  # pyarrow errors derive from these
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None


_TOO_MANY_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


_HEADER_MISMATCH = "Length of header or names does not match length of data"


def _leading_long_lines(p: Path, limit: int = 1000) -> list[tuple[int, str]]:
    """The lines right after the header that have more fields than it (up to the first one
    that does not), as ``(line, reason)``."""
    found: list[tuple[int, str]] = []
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=_csv_sep(p))
            header = next(reader, None)
            if header is None:
                return found
            for record in reader:
                if len(record) <= len(header):
                    return found
                line = reader.line_num
                found.append((line, f"line {line} has {len(record)} fields, the header has "
                                    f"{len(header)}"))  # fmt: skip
                if len(found) >= limit:
                    raise DataError(
                        f"{p}: the first {limit} lines after the header all have more fields "
                        "than the header (another separator?)"
                    )
    except (UnicodeDecodeError, csv.Error):
        return found  # pandas names the problem
    return found


def _report_bad_lines(
    caught: list[warnings.WarningMessage], bad_lines: Callable[[int, str], None] | None
) -> None:
    """Turn pandas' "Skipping line N" warnings into ``bad_lines(N, reason)`` calls (other
    warnings are issued again)."""
    for w in caught:
        message = str(w.message)
        found = _SKIPPED_LINE.findall(message)
        if not found and not message.startswith(_HEADER_MISMATCH):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for line, expected, saw in found:
            if bad_lines is not None:
                bad_lines(int(line), f"line {line} has {saw} fields, the header has {expected}")


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame as CSV/TSV/Parquet, chosen by the file name."""
    p = Path(path)
    fmt = table_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, sep=_csv_sep(p), index=False)
