"""From raw records to per-task predictions with a bundle's preprocessor and model."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lepton.data.preprocess import Preprocessor
from lepton.errors import DataError
from lepton.tasks import Task

if TYPE_CHECKING:
    from lepton.bundle._bundle import Bundle


#: Largest magnitude a Python integer may have to convert to a float (beyond: ``OverflowError``).
FLOAT64_MAX = sys.float_info.max
#: Digits of the largest float's integer part: an integer with more overflows a float.
_FLOAT64_DIGITS = len(str(int(FLOAT64_MAX)))
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


class NonFiniteOutputError(DataError):
    """The model's output is NaN or infinite for some rows: their values, each in range on its
    own, overflow the model together (bad input, like a value too large for the model).

    ``positions`` are the 0-based positions of the rows in the input, ``tasks`` the first task
    (in the order asked for) whose output is not finite for each of them.
    """

    def __init__(self, message: str, positions: Sequence[int], tasks: Sequence[str]) -> None:
        super().__init__(message)
        self.positions = list(positions)
        self.tasks = list(tasks)


def nonfinite_reason(task: str) -> str:
    """Why a row whose output of ``task`` is NaN or infinite is bad (for messages, side files)."""
    return (
        f"task '{task}': the model's output is NaN or infinite (the values are too large for "
        "the model together)"
    )


def nonfinite_outputs(raw: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, list[str]]:
    """The positions of the rows some output of which is NaN or infinite (ascending), and for
    each the first such task (in the order of ``raw``). One vectorised check per task."""
    first: np.ndarray | None = None
    names = list(raw)
    for k, r in enumerate(raw.values()):
        # rows × values (explicit widths: a chunk may have no rows left, e.g. all of them bad)
        bad = ~torch.isfinite(r.reshape(r.shape[0], math.prod(r.shape[1:]))).all(dim=1).numpy()
        if first is None:
            first = np.full(len(bad), -1, dtype=np.intp)
        first[(first < 0) & bad] = k
    if first is None:
        return np.zeros(0, dtype=np.intp), []
    positions = (first >= 0).nonzero()[0]
    return positions, [names[k] for k in first[positions].tolist()]


def huge_integer_text(value: int) -> str:
    """A short description of an integer too large for a float (``str`` may refuse it)."""
    try:
        digits = len(str(abs(value)))
    except ValueError:  # beyond Python's limit on integer-to-text conversion
        return "an integer of thousands of digits"
    return f"an integer of {digits} digits"


def _huge_integer(value: Any) -> int | None:
    """``value`` as an int when it is an integer (or the text of one) beyond the float range."""
    if type(value) is int:
        return None if -FLOAT64_MAX <= value <= FLOAT64_MAX else value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        try:
            number = int(value)
        except ValueError:  # more digits than Python converts
            return 10 ** (len(value) - 1)
        return None if -FLOAT64_MAX <= number <= FLOAT64_MAX else number
    return None


def overflowing_integers(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """The rows of ``df`` whose value in one of ``columns`` is an integer too large to become a
    float, with the reason, indexed like ``df``.

    Only a column of Python objects or of text can hold one (a numeric column cannot): a Python
    ``int`` (pandas cannot even convert it, ``OverflowError``) or the text of an integer of more
    than 308 digits (which would read as infinite). Such a value is too large for the model, and
    is found before the preprocessor looks at the column.
    """
    reasons: dict[Any, str] = {}
    for col in columns:
        series = df[col]
        if series.dtype != object and not pd.api.types.is_string_dtype(series.dtype):
            continue
        values = series.to_numpy()
        # the candidates, cheaply: Python ints, and long texts
        long_text = series.astype(str).str.len().to_numpy() > _FLOAT64_DIGITS
        ints = np.fromiter((type(v) is int for v in values), dtype=bool, count=len(values))
        for i in (ints | long_text).nonzero()[0].tolist():
            number = _huge_integer(values[i])
            if number is not None:
                reasons.setdefault(
                    series.index[i],
                    f"column '{col}' holds a value too large for the model: "
                    f"{huge_integer_text(number)}",
                )
    if not reasons:
        return pd.Series([], index=df.index[:0], dtype=object)
    order = [label for label in df.index if label in reasons]
    return pd.Series([reasons[k] for k in order], index=order, dtype=object)


def _row_label(label: Any) -> str:
    """``row N`` (1 = first row) for a position-like index label, else the label's repr."""
    if isinstance(label, int | np.integer):
        return f"row {int(label) + 1}"
    return f"row {label!r}"


def prediction_columns(task: Task) -> list[str]:
    """Names of the columns :meth:`Predictor.predict` writes for ``task``."""
    if task.kind in ("binary", "multiclass", "multilabel"):
        return [task.name] + [f"{task.name}_prob_{label}" for label in task.labels]
    if task.output_dim == 1:
        return [task.name]
    return [f"{task.name}_{col}" for col in task.target]


def decode(task: Task, raw: torch.Tensor, pre: Preprocessor) -> dict[str, Any]:
    """Raw outputs ``(N, width)`` → ``{"label", "probabilities" (N, C)}`` or ``{"value" (N, D)}``.

    Labels are the class values themselves (binary/multiclass) or lists of label names
    (multilabel); values are in the target's original units.
    """
    raw = raw.detach().float().cpu()
    if task.kind == "binary":
        p = torch.sigmoid(raw.reshape(-1)).numpy()
        labels = _objects(task.labels)[(p >= task.threshold).astype(np.intp)].tolist()
        return {"label": labels, "probabilities": np.stack([1.0 - p, p], axis=1)}
    if task.kind == "multiclass":
        probs = torch.softmax(raw, dim=1).numpy()
        labels = _objects(task.labels)[probs.argmax(axis=1)].tolist()
        return {"label": labels, "probabilities": probs}
    if task.kind == "multilabel":
        probs = torch.sigmoid(raw).numpy()
        sets, inverse = _label_sets(probs >= task.threshold, task.labels)
        return {"label": [list(sets[i]) for i in inverse.tolist()], "probabilities": probs}
    info = pre.targets[task.name]
    values = raw.numpy() * np.asarray(info.std) + np.asarray(info.mean)
    return {"value": values}


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (kept as the Python values they are)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _label_sets(on: np.ndarray, names: Sequence[Any]) -> tuple[list[list[Any]], np.ndarray]:
    """For a boolean matrix ``(N, L)``: the distinct label sets and each row's index into them."""
    if on.shape[0] == 0:
        return [], np.zeros(0, dtype=np.intp)
    if on.shape[1] <= 62:  # one integer per row: a fast 1-D unique
        codes = on.astype(np.int64) @ (np.int64(1) << np.arange(on.shape[1], dtype=np.int64))
        uniq, inverse = np.unique(codes, return_inverse=True)
        rows = (uniq[:, None] >> np.arange(on.shape[1], dtype=np.int64)) & 1
    else:
        rows, inverse = np.unique(on, axis=0, return_inverse=True)
    sets = [[n for n, v in zip(names, row, strict=True) if v] for row in rows.tolist()]
    return sets, inverse.reshape(-1)


class Predictor:
    """Runs a bundle on tables or records, only for the tasks asked for.

    Examples
    --------
    >>> pred = Bundle.load("runs/penguins/bundle").predictor()      # doctest: +SKIP
    >>> pred.predict(df, tasks=["species"]).columns.tolist()         # doctest: +SKIP
    ['species', 'species_prob_Adelie', 'species_prob_Chinstrap', 'species_prob_Gentoo']
    """

    def __init__(
        self, bundle: Bundle, device: str | torch.device = "cpu", batch_size: int = 4096
    ) -> None:
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.preprocessor = bundle.preprocessor
        self.tasks = {t.name: t for t in bundle.tasks}
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.image_shape = self.model.image_shape  # (C, H, W) for an image model, else None

    def check_tasks(self, tasks: Iterable[str] | None) -> list[str]:
        """The requested task names, checked (all tasks when ``None``)."""
        if tasks is None:
            return list(self.tasks)
        names = [t for t in tasks]
        unknown = [t for t in names if t not in self.tasks]
        if unknown:
            raise DataError(
                f"unknown task(s) {', '.join(unknown)}; the model predicts: {', '.join(self.tasks)}"
            )
        if not names:
            raise DataError("no task selected")
        return names

    @torch.no_grad()
    def raw(
        self,
        df: pd.DataFrame,
        tasks: Sequence[str] | None = None,
        source: str | None = None,
        *,
        check_outputs: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Raw head outputs ``{task: (N, width)}`` (logits / standardised values).

        A row whose output is NaN or infinite (values that overflow the model together) raises
        :class:`NonFiniteOutputError` naming the row and the task, unless ``check_outputs`` is
        false (see :func:`nonfinite_outputs` to find such rows yourself).
        """
        names = self.check_tasks(tasks)
        if self.image_shape is not None:
            raise DataError(
                f"{source or 'input'}: this model takes images {self.image_shape}, not table "
                "rows; give an .npy/.npz file (Predictor.predict_images)"
            )
        huge = overflowing_integers(df, [c for c in self.preprocessor.numeric if c in df.columns])
        if len(huge):
            where = f"{source}: " if source else ""
            raise DataError(f"{where}{_row_label(huge.index[0])}: {huge.iloc[0]}")
        raw = self.raw_tensors(self.preprocessor.transform(df, source), names)
        if check_outputs:
            where = f"{source}: " if source else ""
            index = df.index
            self.check_finite(raw, lambda i: f"{where}{_row_label(index[i])}")
        return raw

    def check_finite(self, raw: Mapping[str, torch.Tensor], name_row: Callable[[int], str]) -> None:
        """Raise :class:`NonFiniteOutputError` when some row's output is NaN or infinite; the
        message names the first such row (``name_row(position)``) and its task."""
        positions, tasks = nonfinite_outputs(raw)
        if len(positions):
            more = f" (and {len(positions) - 1} more row(s))" if len(positions) > 1 else ""
            raise NonFiniteOutputError(
                f"{name_row(int(positions[0]))}: {nonfinite_reason(tasks[0])}{more}",
                positions.tolist(),
                tasks,
            )

    @torch.no_grad()
    def raw_tensors(
        self, inputs: Mapping[str, torch.Tensor], tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Raw head outputs for inputs that are already model tensors, in batches."""
        names = self.check_tasks(tasks)
        n = next(iter(inputs.values())).shape[0] if inputs else 0
        parts: dict[str, list[torch.Tensor]] = {t: [] for t in names}
        for start in range(0, n, self.batch_size):
            chunk = {
                k: v[start : start + self.batch_size].to(self.device) for k, v in inputs.items()
            }
            out = self.model(chunk, tasks=names)
            for t in names:
                parts[t].append(out[t].cpu())
        return {
            t: torch.cat(p) if p else torch.zeros(0, self.tasks[t].output_dim)
            for t, p in parts.items()
        }

    def decoded(
        self, df: pd.DataFrame, tasks: Sequence[str] | None = None, source: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{task: decode(...)}`` for the requested tasks (see :meth:`raw` for the errors)."""
        return self.decode_raw(self.raw(df, tasks, source))

    def decode_raw(self, raw: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
        """``{task: decode(...)}`` of raw head outputs (as :meth:`raw` returns them)."""
        return {t: decode(self.tasks[t], r, self.preprocessor) for t, r in raw.items()}

    def predict(
        self,
        df: pd.DataFrame,
        tasks: Sequence[str] | None = None,
        keep: Sequence[str] = (),
        source: str | None = None,
    ) -> pd.DataFrame:
        """A table with the ``keep`` columns of ``df``, then per task its prediction columns:
        the label and one probability column per class (classification) or the value(s)
        (regression). Multilabel labels are joined with ``|``."""
        missing = [c for c in keep if c not in df.columns]
        if missing:
            raise DataError(
                f"{source or 'input'}: column(s) to keep not found: {', '.join(missing)}"
            )
        return self.prediction_table(self.raw(df, tasks, source), df, keep)

    def prediction_table(
        self, raw: Mapping[str, torch.Tensor], df: pd.DataFrame, keep: Sequence[str] = ()
    ) -> pd.DataFrame:
        """The table of :meth:`predict` from the raw outputs of ``df``'s rows (as :meth:`raw`
        returns them): the ``keep`` columns of ``df``, then each task's prediction columns."""
        out = pd.DataFrame({c: df[c].to_numpy() for c in keep})
        return self._prediction_table(self.decode_raw(raw), out)

    def predict_images(
        self,
        images: np.ndarray,
        tasks: Sequence[str] | None = None,
        keep: pd.DataFrame | None = None,
        source: str = "images",
    ) -> pd.DataFrame:
        """Predictions for an image model: ``images`` as ``(N, H, W)``, ``(N, C, H, W)`` or
        ``(N, H, W, C)`` raw pixel values; the columns of ``keep`` (N rows) come first."""
        from lepton.data.images import to_nchw

        self._require_images(source)
        arr = to_nchw(images, source)
        decoded = self.decoded_images(arr, tasks, source)
        out = pd.DataFrame(index=pd.RangeIndex(len(arr))) if keep is None else keep.copy()
        if len(out) != len(arr):
            raise DataError(f"{source}: {len(arr)} images but {len(out)} rows to keep")
        return self._prediction_table(decoded, out.reset_index(drop=True))

    def decoded_images(
        self,
        images: np.ndarray,
        tasks: Sequence[str] | None = None,
        source: str = "images",
        name_row: Callable[[int], str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{task: decode(...)}`` for images already ``float32 (N, C, H, W)`` (raw pixels, as
        the model takes them: it standardises them itself).

        An image whose output is NaN or infinite raises :class:`NonFiniteOutputError` naming it
        (``name_row(position)``; default ``SOURCE: row N``, 1 = the first image) and the task.
        """
        from lepton.data.images import check_image_shape

        self._require_images(source)
        check_image_shape(images, self.image_shape, source)
        names = self.check_tasks(tasks)
        raw = self.raw_tensors({"image": torch.from_numpy(images)}, names)
        self.check_finite(raw, name_row or (lambda i: f"{source}: row {i + 1}"))
        return self.decode_raw(raw)

    def _require_images(self, source: str) -> None:
        if self.image_shape is None:
            raise DataError(f"{source}: this model takes table rows, not images")

    def _record_images(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The ``image`` of each record (see :func:`lepton.data.images.record_image`), stacked
        as ``float32 (N, C, H, W)``; a :class:`DataError` names the first bad record."""
        from lepton.data.images import record_image

        assert self.image_shape is not None
        c, h, w = self.image_shape
        images = np.empty((len(records), c, h, w), dtype=np.float32)
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping) or "image" not in rec:
                raise DataError(f"records[{i}]: an image model needs the field 'image'")
            try:
                images[i] = record_image(rec["image"], self.image_shape)
            except DataError as e:
                raise DataError(f"records[{i}].image: {e}") from None
        return images

    def _prediction_table(
        self, decoded: Mapping[str, Mapping[str, Any]], out: pd.DataFrame
    ) -> pd.DataFrame:
        for name, d in decoded.items():
            task = self.tasks[name]
            cols = prediction_columns(task)
            clash = [c for c in cols if c in out.columns]
            if clash:
                raise DataError(f"prediction column(s) {clash} clash with kept input columns")
            if "value" in d:
                for j, c in enumerate(cols):
                    out[c] = d["value"][:, j]
                continue
            if task.kind == "multilabel":  # joined once per distinct set of labels
                sets, inverse = _label_sets(d["probabilities"] >= task.threshold, task.labels)
                joined = _objects(["|".join(map(str, labels)) for labels in sets])
                out[cols[0]] = joined[inverse] if len(inverse) else []
            else:
                out[cols[0]] = d["label"]
            for j, c in enumerate(cols[1:]):
                out[c] = d["probabilities"][:, j]
        return out

    def predict_records(
        self,
        records: Sequence[Mapping[str, Any]] | pd.DataFrame,
        tasks: Sequence[str] | None = None,
    ) -> list[dict[str, dict[str, Any]]]:
        """Per record ``{task: {"label", "probabilities"} | {"value"}}``, plain Python values.

        ``records`` is a sequence of mappings (feature name → value) or a DataFrame. For an
        image model each record holds ``"image"``: raw pixel values as an array or nested lists
        of shape ``(C, H, W)`` (or ``(H, W)`` with one channel).
        Probabilities map each class (or label) name, as text, to its probability; a value is a
        number, or a list for a multi-output regression task.

        A record whose output is NaN or infinite (numbers that overflow the model together)
        raises :class:`NonFiniteOutputError` naming it (``records[i]``, 0-based) and the task.
        """
        if self.image_shape is not None:
            rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else records
            images = self._record_images(rows)
            decoded = self.decoded_images(images, tasks, "records", lambda i: f"records[{i}]")
            return self._per_record(decoded, len(images))
        df = (
            records
            if isinstance(records, pd.DataFrame)
            else pd.DataFrame.from_records(list(records))
            if len(records)
            else pd.DataFrame(columns=self.preprocessor.feature_columns)  # no records: none back
        )
        raw = self.raw(df, tasks, source="records", check_outputs=False)
        self.check_finite(raw, lambda i: f"records[{i}]")
        return self._per_record(self.decode_raw(raw), len(df))

    def _per_record(
        self, decoded: Mapping[str, Mapping[str, Any]], n: int
    ) -> list[dict[str, dict[str, Any]]]:
        out: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
        for name, d in decoded.items():
            task = self.tasks[name]
            if "value" in d:
                values = d["value"].tolist()
                single = task.output_dim == 1
                for row, v in zip(out, values, strict=True):
                    row[name] = {"value": v[0] if single else v}
                continue
            keys = [str(label) for label in task.labels]
            probs = d["probabilities"].tolist()
            for row, label, p in zip(out, d["label"], probs, strict=True):
                row[name] = {
                    "label": _plain(label),
                    "probabilities": dict(zip(keys, p, strict=True)),
                }
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
