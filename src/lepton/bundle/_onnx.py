"""ONNX export of a bundle's model, verified against PyTorch with onnxruntime.

The graph of a tabular model takes the preprocessed input tensors (``numeric`` float32 and
``categorical`` int64, one row per record, any number of rows); the graph of an image model takes
``image``, float32 ``(batch, C, H, W)`` raw pixel values (the model standardises them itself, as
:meth:`lepton.bundle.Predictor.predict_images` feeds them). It has one output per exported task,
named after the task: the raw head output (logits for classification, standardised values for
regression), the same tensor :meth:`lepton.bundle.Predictor.raw` returns. Fusion tasks are
computed inside the graph. Preprocessing and decoding stay outside the graph; the bundle's
``lepton.json`` (and the ONNX file's metadata) describe them for consumers in any language.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lepton._optional import require
from lepton.bundle._bundle import META, Bundle, _output_description
from lepton.data.images import check_image_shape, sample_images, to_nchw
from lepton.data.preprocess import Preprocessor
from lepton.errors import BundleError, DataError, ExportError
from lepton.models import MultiTaskModel
from lepton.train._checkpoint import atomic_write, atomic_write_bytes

#: Tolerances of the verification: ``|onnx - torch| <= ATOL + RTOL * |torch|`` elementwise.
ATOL = 1e-5
RTOL = 1e-5
BATCH_DIM = "batch"


def _short(x: float) -> str:
    """``1e-5`` rather than ``1e-05``."""
    text = f"{x:g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


def tolerance_text(atol: float = ATOL, rtol: float = RTOL) -> str:
    """What the verification checks, in words: ``absolute 1e-5 + relative 1e-5 × |PyTorch|``
    (each ONNX output value may differ from PyTorch's by at most that)."""
    return f"absolute {_short(atol)} + relative {_short(rtol)} × |PyTorch value|"


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and how it was checked (also recorded in ``lepton.json``)."""

    path: Path
    opset: int
    tasks: list[str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    max_abs_diff: dict[str, float]
    verified_rows: int
    #: The check passed: ``|onnx - torch| <= atol + rtol·|torch|`` for every output value.
    tolerance: dict[str, float] = field(default_factory=lambda: {"atol": ATOL, "rtol": RTOL})
    sha256: str = ""
    exported: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["file"] = self.path.name
        del d["path"]
        return d


class OnnxGraph(nn.Module):
    """A :class:`MultiTaskModel` with positional tensor inputs and one output per task.

    ``forward(*tensors)`` feeds ``dict(zip(input_names, tensors))`` to the model and returns the
    outputs of ``tasks`` in order. Only the trunk and the heads those tasks need are traced.
    """

    def __init__(self, model: MultiTaskModel, input_names: Sequence[str], tasks: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.tasks = list(tasks)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.input_names, tensors, strict=True)), tasks=self.tasks)
        return tuple(out[t] for t in self.tasks)


def sample_records(preprocessor: Preprocessor, rows: int = 16, seed: int = 0) -> pd.DataFrame:
    """Raw records that exercise every preprocessing path, for verifying an export.

    Numeric features are drawn around their training mean and standard deviation (one value is
    missing); categorical features cycle through the vocabulary, one value is missing and one
    was never seen in training.
    """
    rng = np.random.default_rng(seed)
    rows = max(int(rows), 4)
    data: dict[str, Any] = {}
    for j, col in enumerate(preprocessor.numeric):
        values = preprocessor.means[j] + preprocessor.stds[j] * rng.normal(size=rows)
        values[j % rows] = np.nan
        data[col] = values
    for j, col in enumerate(preprocessor.categorical):
        vocab = preprocessor.vocabularies[col] or ["?"]
        values = [vocab[i % len(vocab)] for i in range(rows)]
        values[(j + 1) % rows] = None
        values[(j + 2) % rows] = "\x00never seen in training"
        data[col] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def sample_image_input(model: MultiTaskModel, rows: int = 16, seed: int = 0) -> np.ndarray:
    """Raw images ``float32 (rows, C, H, W)`` for verifying the export of an image model: pixels
    around the training images' per-channel mean and std (see
    :func:`lepton.data.images.sample_images`)."""
    encoder = model.spec()["encoder"]
    if encoder.get("type") != "image":
        raise ExportError("the model takes table rows, not images")
    return sample_images(encoder["shape"], encoder["mean"], encoder["std"], rows, seed)


def _check_tasks(bundle: Bundle, tasks: Sequence[str] | None) -> list[str]:
    names = [t.name for t in bundle.tasks]
    if tasks is None:
        return names
    wanted = list(dict.fromkeys(tasks))
    unknown = [t for t in wanted if t not in names]
    if unknown:
        raise DataError(
            f"unknown task(s) {', '.join(unknown)}; the model predicts: {', '.join(names)}"
        )
    if not wanted:
        raise DataError("no task selected")
    return wanted


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and log lines (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(_Discard()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _tensor_inputs(
    preprocessor: Preprocessor, frame: pd.DataFrame, source: str
) -> dict[str, torch.Tensor]:
    inputs = preprocessor.transform(frame, source)
    # an input with no columns (no numeric or no categorical feature) is not part of the graph
    return {k: v for k, v in inputs.items() if v.dim() < 2 or v.shape[1] > 0}


def _input_description(preprocessor: Preprocessor, name: str, t: torch.Tensor) -> dict[str, Any]:
    columns = {"numeric": preprocessor.numeric, "categorical": preprocessor.categorical}.get(name)
    d: dict[str, Any] = {
        "name": name,
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": [BATCH_DIM, *t.shape[1:]],
    }
    if columns is not None:
        d["columns"] = list(columns)
    return d


def _image_description(model: MultiTaskModel) -> dict[str, Any]:
    encoder = model.spec()["encoder"]
    return {
        "name": "image",
        "dtype": "float32",
        "shape": [BATCH_DIM, *encoder["shape"]],
        "layout": "NCHW",
        "values": "raw pixel values; the graph standardises them per channel with mean and std",
        "mean": list(encoder["mean"]),
        "std": list(encoder["std"]),
    }


def _image_inputs(
    model: MultiTaskModel, sample: pd.DataFrame | np.ndarray | None
) -> dict[str, torch.Tensor]:
    if sample is None:
        images = sample_image_input(model)
    elif isinstance(sample, pd.DataFrame):
        raise ExportError(
            f"this model takes images {model.image_shape} (C, H, W): verify it with an image "
            "array (.npy/.npz), not table rows"
        )
    else:
        images = to_nchw(sample, "sample images")
        check_image_shape(images, model.image_shape, "sample images")
    return {"image": torch.from_numpy(images)}


def _graph_inputs(
    bundle: Bundle, sample: pd.DataFrame | np.ndarray | None
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The tensors to trace and verify with, and their descriptions (image or tabular)."""
    if bundle.model.image_shape is not None:
        inputs = _image_inputs(bundle.model, sample)
        return inputs, [_image_description(bundle.model)]
    if sample is not None and not isinstance(sample, pd.DataFrame):
        raise ExportError(
            "this model takes table rows: verify it with records (CSV/Parquet), not an image array"
        )
    pre = bundle.preprocessor
    frame = sample_records(pre) if sample is None else sample
    inputs = _tensor_inputs(pre, frame, "sample records")
    return inputs, [_input_description(pre, k, v) for k, v in inputs.items()]


def export_onnx(
    bundle: Bundle | str | Path,
    path: str | Path,
    tasks: Sequence[str] | None = None,
    *,
    opset: int | None = None,
    sample: pd.DataFrame | np.ndarray | None = None,
    record: bool = True,
) -> OnnxExport:
    """Export a bundle's model to ONNX and verify it with onnxruntime.

    Parameters
    ----------
    bundle:
        A :class:`Bundle` or the path of a bundle folder (or of a run directory).
    path:
        The ``.onnx`` file to write (replaced only once the new graph has been verified).
    tasks:
        Tasks to export (default: all); the graph then holds only the trunk and the heads these
        tasks need, and one output per task, in this order.
    opset:
        ONNX opset version (default: the exporter's).
    sample:
        Raw records (feature columns) to verify with; default: :func:`sample_records`. For an
        image model, raw images (any layout :func:`lepton.data.images.to_nchw` takes);
        default: :func:`sample_image_input`.
    record:
        Record the export (file name, opset, inputs, outputs, checksum) in the list under
        ``"onnx"`` in the bundle's ``lepton.json`` (only for a bundle that lives in a folder).

    Returns
    -------
    OnnxExport
        The opset, the inputs and outputs of the graph and the largest difference to PyTorch
        per task.

    Raises
    ------
    ExportError
        When the model cannot be exported, or onnxruntime's outputs differ from PyTorch's by more
        than ``1e-5 + 1e-5·|torch|`` (absolute plus relative tolerance; the message names the
        task and the largest difference).

    Examples
    --------
    >>> info = export_onnx("runs/penguins/bundle", "penguins.onnx")   # doctest: +SKIP
    >>> info.opset, info.tasks                                         # doctest: +SKIP
    (18, ['species', 'sex', 'body_mass_g'])
    """
    onnx = require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")
    require("onnxruntime", "onnx", "ONNX export")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"{path}: the output file must end in .onnx")
    names = _check_tasks(bundle, tasks)
    pre = bundle.preprocessor
    inputs, input_desc = _graph_inputs(bundle, sample)
    n_rows = next(iter(inputs.values())).shape[0]
    if n_rows < 2:
        raise ExportError("verifying an export needs at least 2 sample records (or images)")
    clash = sorted(set(names) & set(inputs))
    if clash:
        raise ExportError(
            f"task name(s) {clash} clash with the graph's input names {sorted(inputs)}"
        )

    model = bundle.model.cpu().eval()
    graph = OnnxGraph(model, list(inputs), names).eval()
    args = tuple(inputs.values())
    batch = torch.export.Dim(BATCH_DIM)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                args,
                input_names=list(inputs),
                output_names=names,
                dynamic_shapes=(tuple({0: batch} for _ in args),),
                opset_version=opset,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; any failure is an export error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"cannot export the model to ONNX: {first}") from None
    proto = program.model_proto
    used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)

    by_name = {t.name: t for t in bundle.tasks}
    output_desc = [
        {"name": t, "shape": [BATCH_DIM, by_name[t].output_dim]} | _output_description(by_name[t])
        for t in names
    ]
    meta = {
        "lepton.bundle": json.dumps({"name": bundle.name, "version": bundle.version}),
        "lepton.inputs": json.dumps(input_desc),
        "lepton.outputs": json.dumps(output_desc),
        "lepton.preprocessor": json.dumps(pre.to_dict(), allow_nan=False),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "lepton"
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from None
    data = proto.SerializeToString()

    diffs = verify_onnx(data, model, inputs, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    from lepton import __version__

    result = OnnxExport(
        path=path,
        opset=int(used_opset),
        tasks=names,
        inputs=input_desc,
        outputs=output_desc,
        max_abs_diff=diffs,
        verified_rows=n_rows,
        sha256=hashlib.sha256(data).hexdigest(),
        exported=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={
            "lepton": __version__,
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
            "onnxruntime": require("onnxruntime", "onnx", "ONNX export").__version__,
        },
    )
    if record and bundle.path is not None:
        record_export(bundle.path, result)
    return result


def verify_onnx(
    model_bytes: bytes | str | Path,
    model: MultiTaskModel,
    inputs: Mapping[str, torch.Tensor],
    tasks: Sequence[str],
    atol: float = ATOL,
    rtol: float = RTOL,
) -> dict[str, float]:
    """Run the ONNX graph with onnxruntime on ``inputs`` (all rows, then the first row alone)
    and compare each output with ``model``'s; the largest absolute difference per task.

    Raises :class:`ExportError` naming the task with the largest violation of
    ``|onnx - torch| <= atol + rtol·|torch|``.
    """
    ort = require("onnxruntime", "onnx", "ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model_bytes) if isinstance(model_bytes, str | Path) else model_bytes
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported graph: {e}") from None
    with torch.no_grad():
        reference = model.eval()(dict(inputs), tasks=list(tasks))
    diffs = dict.fromkeys(tasks, 0.0)
    worst: tuple[float, str, float] | None = None  # (excess over tolerance, task, diff)
    n = next(iter(inputs.values())).shape[0]
    for rows in (slice(0, n), slice(0, 1)):
        feeds = {k: v[rows].numpy() for k, v in inputs.items()}
        try:
            got = session.run(list(tasks), feeds)
        except Exception as e:
            raise ExportError(f"onnxruntime cannot run the exported graph: {e}") from None
        for task, out in zip(tasks, got, strict=True):
            ref = reference[task][rows].numpy()
            if out.shape != ref.shape:
                raise ExportError(
                    f"ONNX output '{task}' has shape {list(out.shape)}, PyTorch {list(ref.shape)}"
                )
            if not np.isfinite(out).all():
                raise ExportError(f"ONNX output '{task}' holds non-finite values")
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            diffs[task] = max(diffs[task], float(diff.max(initial=0.0)))
            excess = float((diff - (atol + rtol * np.abs(ref))).max(initial=-math.inf))
            if excess > 0 and (worst is None or excess > worst[0]):
                worst = (excess, task, float(diff.max()))
    if worst is not None:
        _, task, diff = worst
        raise ExportError(
            f"the ONNX graph does not reproduce the model: output '{task}' differs from PyTorch "
            f"by up to {diff:.3g} (tolerance: {tolerance_text(atol, rtol)}); largest difference "
            "per task: " + ", ".join(f"{t} {d:.3g}" for t, d in diffs.items())
        )
    return diffs


def record_export(bundle_path: str | Path, export: OnnxExport) -> None:
    """Add ``export`` to the list under ``"onnx"`` in the bundle's ``lepton.json`` (atomically),
    replacing an earlier export to a file of the same name."""
    meta_path = Path(bundle_path) / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{meta_path}: cannot record the export ({e})") from None
    entry = export.to_dict()
    previous = meta.get("onnx")
    exports = [e for e in previous if isinstance(e, dict)] if isinstance(previous, list) else []
    meta["onnx"] = [e for e in exports if e.get("file") != entry["file"]] + [entry]
    try:
        atomic_write_bytes(meta_path, (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode())
    except OSError as e:
        raise BundleError(f"{meta_path}: cannot record the export ({e})") from None
