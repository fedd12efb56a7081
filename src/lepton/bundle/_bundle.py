"""The deployable model bundle: ``model.safetensors`` + ``lepton.json``. Loading never unpickles.

``lepton.json`` holds the tasks (kinds, classes, targets), the model's architecture spec, the
fitted preprocessor with the rules to apply it, a description of every output, the versions it
was made with, and optionally the test metrics of the run that made it.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lepton.data.preprocess import Preprocessor
from lepton.errors import BundleError, LeptonError
from lepton.models import MultiTaskModel
from lepton.tasks import Task
from lepton.train._checkpoint import current_umask

BUNDLE_FORMAT = "lepton-bundle"
BUNDLE_VERSION = 1
WEIGHTS = "model.safetensors"
META = "lepton.json"


def _version() -> str:
    from lepton import __version__

    return __version__


def _output_description(task: Task) -> dict[str, Any]:
    activation = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax"}
    return {
        "kind": task.kind,
        "width": task.output_dim,
        "activation": activation.get(task.kind, "none (standardised; value = output * std + mean)"),
        "labels": list(task.labels),
        "threshold": task.threshold if task.kind in ("binary", "multilabel") else None,
    }


def _image_input(model: MultiTaskModel) -> dict[str, Any]:
    shape = model.image_shape
    if shape is None:
        return {}
    return {
        "image": {
            "shape": list(shape),
            "layout": "NCHW float32, raw pixel values (standardised inside the model)",
        }
    }


def bundle_dir(path: str | Path) -> Path:
    """The bundle folder ``path`` names: itself, or ``path/bundle`` for a run directory."""
    path = Path(path)
    if (path / "bundle" / META).is_file() and not (path / META).is_file():
        return path / "bundle"
    return path


class Bundle:
    """A trained model with everything needed to predict from raw records.

    Examples
    --------
    >>> bundle = Bundle(model, preprocessor, name="penguins")  # doctest: +SKIP
    >>> bundle.save("runs/x/bundle")                           # doctest: +SKIP
    >>> Bundle.load("runs/x/bundle").predictor().predict(df)   # doctest: +SKIP
    """

    def __init__(
        self,
        model: MultiTaskModel,
        preprocessor: Preprocessor,
        name: str = "lepton-model",
        version: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.preprocessor = preprocessor
        self.tasks = list(model.tasks)
        self.name = name
        self.version = version or datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.metrics = dict(metrics or {})
        self.metadata = dict(metadata or {})
        self.versions: dict[str, str] = {}
        #: The folder this bundle was loaded from or last saved to (``None`` for a new bundle).
        self.path: Path | None = None

    # ------------------------------------------------------------------------- save
    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.metadata.get("created")
            or datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {
                "lepton": _version(),
                "torch": torch.__version__.split("+")[0],
                "python": platform.python_version(),
            },
            "tasks": [t.to_dict() for t in self.tasks],
            "model": self.model.spec(),
            "inputs": {
                "numeric": self.preprocessor.numeric,
                "categorical": self.preprocessor.categorical,
                **_image_input(self.model),
            },
            "outputs": {t.name: _output_description(t) for t in self.tasks},
            "preprocessor": self.preprocessor.to_dict(),
            "metrics": self.metrics,
            **{k: v for k, v in self.metadata.items() if k != "created"},
        }

    def save(self, path: str | Path) -> Path:
        """Write the bundle folder (replacing an existing bundle only once the new one is whole)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            tmp.chmod(0o777 & ~current_umask())
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, tmp / WEIGHTS, metadata={"format": "pt", "lepton": _version()})
            (tmp / META).write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = path
        return path

    # ------------------------------------------------------------------------- load
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Bundle:
        """Read a bundle folder (or a run directory holding ``bundle/``)."""
        path = bundle_dir(path)
        meta_path, weights_path = path / META, path / WEIGHTS
        if not path.is_dir():
            raise BundleError(f"bundle not found: {path}")
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise BundleError(f"{path} is not a Lepton bundle: {p.name} is missing")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{meta_path}: not valid JSON ({e})") from None
        if meta.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{meta_path}: not a Lepton bundle description")
        if meta.get("format_version", 0) > BUNDLE_VERSION:
            raise BundleError(
                f"{path}: bundle format {meta['format_version']} is newer than this Lepton "
                f"supports ({BUNDLE_VERSION}); upgrade lepton-mtl"
            )
        try:
            tasks = [Task.from_dict(t) for t in meta["tasks"]]
            model = MultiTaskModel.from_spec(meta["model"], tasks)
            preprocessor = Preprocessor.from_dict(meta["preprocessor"], tasks)
        except (KeyError, TypeError, ValueError, LeptonError) as e:
            raise BundleError(f"{meta_path}: incomplete or inconsistent bundle ({e})") from None
        try:
            state = load_file(str(weights_path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise BundleError(f"{weights_path}: cannot read the weights ({e})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise BundleError(f"{weights_path}: weights do not fit the model ({first})") from None
        model.to(device).eval()
        known = {
            "format",
            "format_version",
            "name",
            "version",
            "tasks",
            "model",
            "inputs",
            "outputs",
            "preprocessor",
            "metrics",
            "versions",
        }
        bundle = cls(
            model,
            preprocessor,
            name=meta.get("name", "lepton-model"),
            version=meta.get("version"),
            metrics=meta.get("metrics"),
            metadata={k: v for k, v in meta.items() if k not in known},
        )
        bundle.versions = meta.get("versions", {})
        bundle.path = path
        return bundle

    def predictor(self, device: str | torch.device = "cpu", batch_size: int = 4096) -> Any:
        """A :class:`lepton.bundle.Predictor` over this bundle."""
        from lepton.bundle._predictor import Predictor

        return Predictor(self, device=device, batch_size=batch_size)
