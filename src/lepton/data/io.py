"""Reading and writing tables (CSV, TSV, Parquet) with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


def iter_table(path: str | Path, chunk_rows: int = 65536) -> Iterator[pd.DataFrame]:
    """Stream a CSV/TSV/Parquet file in chunks of at most ``chunk_rows`` rows (bounded memory)."""
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            for rb in pf.iter_batches(batch_size=chunk_rows):
                yield rb.to_pandas()
        else:
            yield from pd.read_csv(p, sep=_csv_sep(p), chunksize=chunk_rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
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
