"""Reading and writing tables (CSV, TSV, Parquet) with errors that name the file."""

from __future__ import annotations

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
) -> Iterator[pd.DataFrame]:
    """Stream a CSV/TSV/Parquet file in chunks of at most ``chunk_rows`` rows (bounded memory).

    ``columns`` reads only those columns; ``dtype`` fixes the type of CSV columns (the same type
    in every chunk, e.g. ``{"id": str}``); ``progress(bytes_read, bytes_total)`` is called after
    each chunk. Each chunk keeps pandas' index: CSV chunks continue the row count, Parquet
    batches restart at 0.
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
                reader = pd.read_csv(
                    fh, sep=_csv_sep(p), chunksize=chunk_rows, usecols=cols, dtype=dtype
                )
                for chunk in reader:
                    if progress is not None:
                        progress(min(fh.tell(), total), total)
                    yield chunk
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None
    except (OSError, ValueError) as e:  # pyarrow errors derive from these
        raise DataError(f"{p}: cannot be read as {fmt}: {str(e).strip().splitlines()[0]}") from None


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame as CSV/TSV/Parquet, chosen by the file name."""
    p = Path(path)
    fmt = table_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, sep=_csv_sep(p), index=False)
