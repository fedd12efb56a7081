"""`lepton predict` at scale: chunked input, CSV/Parquet output, task selection, bad rows."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from lepton import Bundle
from lepton.bundle import predict_file
from lepton.errors import DataError

from .conftest import run_cli
from .serving_support import fusion_bundle, overflowing_record, penguin_frame


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fusion_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(bundle_dir: Path) -> pd.DataFrame:
    """Whole-table predictions (one call, no chunks), with the id column."""
    df = penguin_frame()
    return Bundle.load(bundle_dir).predictor().predict(df, keep=["id"])


def _bad_penguins(path: Path) -> pd.DataFrame:
    df = penguin_frame()
    df["bill_length_mm"] = df["bill_length_mm"].astype(object)
    df.loc[100, "bill_length_mm"] = "long"  # data row 101, in the 11th chunk of 10 rows
    df.loc[250, "flipper_length_mm"] = np.inf  # data row 251
    df.loc[300, "bill_depth_mm"] = 1e300  # data row 301: overflows the model's float32 inputs
    df.to_csv(path, index=False)
    return df


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), 1e-6)
        else:
            assert got[col].astype(str).tolist() == want[col].astype(str).tolist(), col


def test_cli_streams_csv_to_csv_in_chunks(
    bundle_dir: Path, expected: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    penguin_frame().to_csv(src, index=False)
    out = tmp_path / "out.csv"
    res = run_cli("predict", bundle_dir, src, "-o", out, "--keep", "id", "--chunk-rows", "25")
    assert res.returncode == 0, res.stderr
    assert f"wrote 344 rows × 3 task(s) to {out}" in res.stderr
    got = pd.read_csv(out, dtype={"id": str})
    assert got["id"].iloc[7] == "0007"  # kept columns are copied as text
    _assert_same(got, expected)


def test_parquet_in_parquet_out_with_selected_tasks(
    bundle_dir: Path, expected: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    penguin_frame().to_parquet(src, index=False)
    out = tmp_path / "out.parquet"
    res = predict_file(bundle_dir, src, out, ["sex"], keep=["id"], chunk_rows=50)
    assert (res.rows_read, res.rows_written, res.chunks) == (344, 344, 7)
    got = pd.read_parquet(out)
    _assert_same(got, expected[["id", "sex", "sex_prob_female", "sex_prob_male"]])


def test_default_stops_at_the_bad_row_and_writes_nothing(bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    _bad_penguins(src)
    out = tmp_path / "out.parquet"
    res = run_cli("predict", bundle_dir, src, "-o", out, "--chunk-rows", "10")
    assert res.returncode == 1
    msg = res.stderr.strip().replace("\n", " ")
    assert msg.startswith(f"error: {src}: row 101: column 'bill_length_mm' must be numeric")
    assert "'long'" in msg and "--on-error skip" in msg
    assert "Traceback" not in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # no partial file


def test_skip_writes_bad_rows_with_reasons_to_a_side_file(
    bundle_dir: Path, expected: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "bad.csv"
    _bad_penguins(src)
    out = tmp_path / "out.csv"
    side = tmp_path / "rejects.csv"
    res = run_cli(
        "predict", bundle_dir, src, "-o", out, "--keep", "id", "--chunk-rows", "10",
        "--on-error", "skip", "--errors-file", side,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "skipped 3 bad row(s)" in res.stderr
    rejects = pd.read_csv(side, dtype={"id": str})
    assert rejects["row"].tolist() == [101, 251, 301]
    assert rejects["id"].tolist() == ["0100", "0250", "0300"]
    assert rejects["error"].tolist() == [
        "column 'bill_length_mm' must be numeric, but holds 'long'",
        "column 'flipper_length_mm' holds an infinite value",
        "column 'bill_depth_mm' holds a value too large for the model: 1e+300",
    ]
    got = pd.read_csv(out, dtype={"id": str})
    _assert_same(got, expected.drop(index=[100, 250, 300]).reset_index(drop=True))


def _overflowing_penguins(path: Path, bundle_dir: Path) -> list[str]:
    """Penguins where data row 21 holds a 400-digit integer and row 42 numbers that overflow
    the model together; the tasks whose output the latter makes NaN or infinite."""
    df = penguin_frame().astype({"bill_length_mm": object})
    df.loc[20, "bill_length_mm"] = 10**400
    record, failed = overflowing_record(bundle_dir)
    for col, value in record.items():
        df[col] = df[col].astype(object)
        df.loc[41, col] = value
    df.to_csv(path, index=False)
    return failed


def test_values_too_large_together_are_bad_rows(
    bundle_dir: Path, expected: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "huge.csv"
    failed = _overflowing_penguins(src, bundle_dir)
    out = tmp_path / "out.csv"
    res = run_cli("predict", bundle_dir, src, "-o", out, "--chunk-rows", "16")
    assert res.returncode == 1
    assert "row 21: column 'bill_length_mm'" in res.stderr, res.stderr
    assert not out.exists()
    src.write_text(src.read_text().replace(str(10**400), "40.1"))
    res = run_cli("predict", bundle_dir, src, "-o", out)
    assert res.returncode == 1 and "row 42" in res.stderr, res.stderr
    assert f"task '{failed[0]}'" in res.stderr and "NaN or infinite" in res.stderr
    src.write_text(src.read_text().replace("40.1", str(10**400), 1))
    result = predict_file(bundle_dir, src, out, keep=["id"], chunk_rows=16, on_error="skip")
    assert (result.rows_skipped, result.rows_written) == (2, len(expected) - 2)
    rejects = pd.read_csv(result.errors_path)
    assert rejects["row"].tolist() == [21, 42]
    assert rejects["error"][0].startswith("column 'bill_length_mm'")
    assert rejects["error"][1].startswith(f"task '{failed[0]}'")
    got = pd.read_csv(out, dtype={"id": str})
    _assert_same(got, expected.drop(index=[20, 41]).reset_index(drop=True))


def test_skip_with_clean_input_writes_an_empty_side_file(bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    penguin_frame().head(30).to_csv(src, index=False)
    res = predict_file(bundle_dir, src, tmp_path / "out.parquet", on_error="skip")
    assert res.rows_skipped == 0 and res.errors_path == tmp_path / "out.errors.csv"
    assert len(pd.read_csv(res.errors_path)) == 0


def test_chunks_left_without_rows_are_predicted_as_empty(bundle_dir: Path, tmp_path: Path) -> None:
    # every row bad (skipped), or no data rows at all: an empty output with its columns
    df = penguin_frame().head(12)
    df["bill_length_mm"] = "long"
    src = tmp_path / "bad.csv"
    df.to_csv(src, index=False)
    res = predict_file(bundle_dir, src, tmp_path / "out.csv", chunk_rows=5, on_error="skip")
    assert (res.rows_written, res.rows_skipped) == (0, 12)
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 0 and "species_prob_Adelie" in out.columns
    df.head(0).to_csv(src, index=False)
    proc = run_cli("predict", bundle_dir, src, "-o", tmp_path / "none.parquet")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_parquet(tmp_path / "none.parquet")) == 0


def test_input_problems_are_named_before_anything_is_written(
    bundle_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    penguin_frame().drop(columns=["island"]).to_csv(src, index=False)
    with pytest.raises(DataError, match="feature column 'island' not found"):
        predict_file(bundle_dir, src, tmp_path / "out.csv")
    penguin_frame().to_csv(src, index=False)
    with pytest.raises(DataError, match=r"column.*to keep not found: nope"):
        predict_file(bundle_dir, src, tmp_path / "out.csv", keep=["nope"])
    with pytest.raises(DataError, match="would overwrite the input"):
        predict_file(bundle_dir, src, src)
    with pytest.raises(DataError, match="unknown task"):
        predict_file(bundle_dir, src, tmp_path / "out.csv", ["wings"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_progress_bar_on_a_terminal(bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    penguin_frame().to_csv(src, index=False)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    out = tmp_path / "o.csv"
    predict_file(bundle_dir, src, out, chunk_rows=100, progress=True, console=console)
    text = buffer.getvalue()
    assert "predicting in.csv" in text and "344 rows" in text


def _malformed_penguins(path: Path) -> list[int]:
    """The penguins CSV with lines holding an extra field (an unquoted comma in a text, say):
    data rows 1 (the first line, which pandas would otherwise cut to the header's width), 45
    (inside a chunk), 344 (the last line); row 101 keeps its bad value. Returns those rows."""
    df = _bad_penguins(path)
    lines = path.read_text().splitlines()
    for row in (1, 45, 344):
        lines[row] = lines[row] + ",Biscoe"  # line row+1 of the file, data row `row`
    path.write_text("\n".join(lines) + "\n")
    assert len(df) == 344
    return [1, 45, 344]


def test_lines_with_extra_fields_are_bad_rows(
    bundle_dir: Path, expected: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "shifted.csv"
    malformed = _malformed_penguins(src)
    # default: stop, naming the line
    with pytest.raises(DataError, match=r"shifted.csv: line 2 has \d+ fields, the header has \d+"):
        predict_file(bundle_dir, src, tmp_path / "out.csv", keep=["id"], chunk_rows=10)
    assert not (tmp_path / "out.csv").exists()
    lines = src.read_text().splitlines()
    lines[1] = lines[1].removesuffix(",Biscoe")
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 46 has \d+ fields, the header has \d+"):
        predict_file(bundle_dir, src, tmp_path / "out.csv", keep=["id"], chunk_rows=10)
    # skip: left out and listed with their row numbers; the rows after them keep theirs
    _malformed_penguins(src)
    res = predict_file(
        bundle_dir, src, tmp_path / "out.csv", keep=["id"], chunk_rows=10, on_error="skip"
    )
    skipped = sorted([*malformed, 101, 251, 301])
    assert (res.rows_read, res.rows_skipped, res.rows_written) == (344, 6, 338)
    rejects = pd.read_csv(res.errors_path, dtype={"id": str}).sort_values("row")
    assert rejects["row"].tolist() == skipped
    reasons = dict(zip(rejects["row"], rejects["error"], strict=True))
    assert re.fullmatch(r"line 2 has (\d+) fields, the header has \d+", reasons[1])
    assert re.fullmatch(r"line 46 has (\d+) fields, the header has \d+", reasons[45])
    assert reasons[344].startswith("line 345 has ")
    assert reasons[101] == "column 'bill_length_mm' must be numeric, but holds 'long'"
    got = pd.read_csv(tmp_path / "out.csv", dtype={"id": str})
    want = expected.drop(index=[r - 1 for r in skipped]).reset_index(drop=True)
    _assert_same(got, want)
