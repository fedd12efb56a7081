"""From raw records to per-task predictions with a bundle's preprocessor and model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lepton.data.preprocess import Preprocessor
from lepton.errors import DataError
from lepton.tasks import Task

if TYPE_CHECKING:
    from lepton.bundle._bundle import Bundle


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
        self, df: pd.DataFrame, tasks: Sequence[str] | None = None, source: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Raw head outputs ``{task: (N, width)}`` (logits / standardised values)."""
        names = self.check_tasks(tasks)
        if self.image_shape is not None:
            raise DataError(
                f"{source or 'input'}: this model takes images {self.image_shape}, not table "
                "rows; give an .npy/.npz file (Predictor.predict_images)"
            )
        return self.raw_tensors(self.preprocessor.transform(df, source), names)

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
        """``{task: decode(...)}`` for the requested tasks."""
        raw = self.raw(df, tasks, source)
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
        out = pd.DataFrame({c: df[c].to_numpy() for c in keep})
        return self._prediction_table(self.decoded(df, tasks, source), out)

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
        self, images: np.ndarray, tasks: Sequence[str] | None = None, source: str = "images"
    ) -> dict[str, dict[str, Any]]:
        """``{task: decode(...)}`` for images already ``float32 (N, C, H, W)`` (raw pixels, as
        the model takes them: it standardises them itself)."""
        from lepton.data.images import check_image_shape

        self._require_images(source)
        check_image_shape(images, self.image_shape, source)
        names = self.check_tasks(tasks)
        raw = self.raw_tensors({"image": torch.from_numpy(images)}, names)
        return {t: decode(self.tasks[t], r, self.preprocessor) for t, r in raw.items()}

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
        """
        if self.image_shape is not None:
            rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else records
            images = self._record_images(rows)
            return self._per_record(self.decoded_images(images, tasks, "records"), len(images))
        df = (
            records
            if isinstance(records, pd.DataFrame)
            else pd.DataFrame.from_records(list(records))
        )
        return self._per_record(self.decoded(df, tasks, source="records"), len(df))

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
