"""The YAML configuration of a run, as pydantic models.

Top-level sections: ``data``, ``tasks``, ``model``, ``balancer``, ``optim``, ``train``,
``logging``. Unknown keys are errors, and every error names the field path
(``train.epochs: Input should be a valid integer``). :func:`load_config` reads a file and applies
``--set key=value`` overrides by dotted path before validation, so an override is checked exactly
like the file.

``model`` and ``balancer`` also accept the hyperparameters of the chosen architecture or method
(``balancer: {name: dwa, temperature: 2.0}``); those are checked against the constructor of the
chosen class when the run is built, with the same kind of message.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lepton.errors import ConfigError
from lepton.tasks import Task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeaturesConfig(_Strict):
    """Input columns: numeric ones are standardised, categorical ones get embeddings."""

    numeric: list[str] = Field(default_factory=list, description="numeric feature columns")
    categorical: list[str] = Field(
        default_factory=list, description="categorical feature columns (embedded)"
    )


class SplitConfig(_Strict):
    """Random train/val/test split by fraction (used when no separate files are given)."""

    val: float = Field(0.15, ge=0.0, lt=1.0, description="validation fraction")
    test: float = Field(0.15, ge=0.0, lt=1.0, description="test fraction")
    seed: int = Field(0, description="seed of the random split")
    stratify: str | None = Field(None, description="task whose labels stratify the split")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val + self.test >= 1.0:
            raise ValueError("val + test must leave a non-empty training split (sum < 1)")
        return self


class AugmentConfig(_Strict):
    """Training-time augmentation (never applied at evaluation or prediction).

    ``noise_std`` and ``feature_dropout`` apply to tabular features; ``shift``, ``crop_scale``,
    ``hflip`` and ``vflip`` to images. Enable a flip only where it keeps every label true.
    """

    noise_std: float = Field(0.0, ge=0.0, description="Gaussian noise on standardised numerics")
    feature_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="probability of blanking each feature (mean / unknown)"
    )
    shift: int = Field(0, ge=0, description="images: random shift by up to this many pixels")
    crop_scale: float = Field(
        1.0, gt=0.0, le=1.0, description="images: random crop of at least this area, resized back"
    )
    hflip: bool = Field(False, description="images: random horizontal flip")
    vflip: bool = Field(False, description="images: random vertical flip")

    @property
    def image_active(self) -> bool:
        return self.shift > 0 or self.crop_scale < 1.0 or self.hflip or self.vflip

    @property
    def tabular_active(self) -> bool:
        return self.noise_std > 0 or self.feature_dropout > 0


class ImagesConfig(_Strict):
    """Image inputs: arrays in ``.npy``/``.npz`` files whose rows line up with the label table.

    ``file`` goes with ``data.path`` (one table, split by ``split``), ``train``/``val``/``test``
    with the ``data.train``/``val``/``test`` tables. Without a table, the labels are the 1-D
    arrays stored beside the images in the ``.npz`` files.
    """

    file: str | None = Field(None, description="one image array, split like its table")
    train: str | None = Field(None, description="training images (with `data.train`, if any)")
    val: str | None = Field(None, description="validation images")
    test: str | None = Field(None, description="test images")
    key: str | None = Field(None, description="name of the image array inside .npz files")

    @model_validator(mode="after")
    def _one_source(self) -> ImagesConfig:
        if bool(self.file) == bool(self.train):
            raise ValueError(
                "give `file` (one array, split by fraction) or `train` (+ `val`/`test`)"
            )
        if (self.val or self.test) and not self.train:
            raise ValueError("`val`/`test` image files go with a `train` image file")
        return self


class DataConfig(_Strict):
    """Where the data comes from and which columns are inputs."""

    dataset: str | None = Field(None, description="a bundled dataset name (`lepton datasets`)")
    path: str | None = Field(None, description="one CSV/Parquet file, split by `split`")
    train: str | None = Field(None, description="a separate training file")
    val: str | None = Field(None, description="a separate validation file")
    test: str | None = Field(None, description="a separate test file")
    features: FeaturesConfig | None = Field(None, description="default: the dataset's own")
    images: ImagesConfig | None = Field(None, description="image inputs (.npy/.npz arrays)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="parameters of a bundled dataset's generator"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        given = [n for n in ("dataset", "path", "train") if getattr(self, n)]
        if self.images is not None:
            _check_images(self, given)
        elif len(given) != 1:
            raise ValueError(
                "give exactly one data source: `dataset` (bundled), `path` (one file to split) "
                f"or `train` (+ `val`/`test` files); got {given or 'none'}"
            )
        if (self.val or self.test) and not self.train:
            raise ValueError("`val`/`test` files go with a `train` file")
        if self.options and not self.dataset:
            raise ValueError("`options` are the parameters of a bundled `dataset`")
        return self


def _check_images(cfg: DataConfig, given: list[str]) -> None:
    images = cfg.images
    assert images is not None
    if cfg.dataset:
        raise ValueError(
            "`images` go with your own labels (`path`/`train`); a bundled dataset "
            "brings its own inputs"
        )
    if len(given) > 1:
        raise ValueError(f"give at most one label table (`path` or `train`); got {given}")
    if cfg.features is not None:
        raise ValueError("`features`: with `images` the images are the model's input")
    if cfg.path and not images.file:
        raise ValueError("`path` (one table split by fraction) goes with `images.file`")
    if cfg.train and not images.train:
        raise ValueError("`train` (+ `val`/`test` tables) goes with `images.train` (+ val/test)")
    if cfg.train and (bool(cfg.val) != bool(images.val) or bool(cfg.test) != bool(images.test)):
        raise ValueError(
            "give an image file for each table: `val`/`test` and "
            "`images.val`/`images.test` go together"
        )


class TaskConfig(_Strict):
    """One task; see :class:`lepton.Task` for the meaning of each field."""

    kind: Literal["binary", "multiclass", "multilabel", "regression"] = Field(
        description="what the head predicts"
    )
    target: str | list[str] | None = Field(
        None, description="target column(s); default: the task name"
    )
    loss: str | None = Field(None, description="bce, cross_entropy, mse, l1, huber, smooth_l1")
    metrics: list[str] | None = Field(None, description="default: all of the kind's metrics")
    main_metric: str | None = Field(None, description="decides Δm and early stopping")
    weight: float = Field(1.0, ge=0.0, description="static loss weight (`static` balancer)")
    classes: list[str | int | float | bool] | None = Field(
        None, description="class labels in output order; default: sorted from the training split"
    )
    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="binary/multilabel decision threshold"
    )
    fusion: list[str] | None = Field(None, description="tasks whose outputs feed this head")
    fusion_representation: bool = Field(False, description="a fusion head also reads the trunk")
    fusion_detach: bool = Field(False, description="keep the fusion loss out of its sources")
    head_hidden: list[int] | None = Field(None, description="this head's widths (model default)")


class CNNConfig(_Strict):
    """The CNN encoder of image data: a small ResNet (``lepton.models.ConvEncoder``)."""

    channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64],
        description="width of each stage; every stage after the first halves the resolution",
    )
    blocks: int = Field(1, ge=1, description="residual blocks per stage")
    stem_stride: int = Field(1, ge=1, le=4, description="stride of the first convolution")

    @field_validator("channels")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("give at least one stage, with positive widths")
        return v


class ModelConfig(BaseModel):
    """Architecture and widths. Extra keys are the architecture's own hyperparameters."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    architecture: str = Field(
        "shared_bottom", description="a registered trunk (docs/architectures.md)"
    )
    hidden: list[int] = Field(default_factory=lambda: [64, 64], description="trunk layer widths")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each trunk layer")
    batch_norm: bool = Field(True, description="batch norm after each trunk layer")
    activation: Literal["relu", "gelu", "silu", "tanh", "leaky_relu"] = Field(
        "relu", description="activation of trunk and heads"
    )
    embedding_dim: int | None = Field(None, ge=1, description="None: by vocabulary size")
    head_hidden: list[int] = Field(default_factory=lambda: [32], description="task head widths")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout inside task heads")
    cnn: CNNConfig | None = Field(None, description="the CNN encoder of image data")

    @field_validator("hidden", "head_hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("layer widths must be positive integers")
        return v

    @property
    def options(self) -> dict[str, Any]:
        """The architecture-specific hyperparameters (the extra keys)."""
        return dict(self.model_extra or {})


class BalancerConfig(BaseModel):
    """Balancing method by registry name; extra keys are its hyperparameters."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field("ew", description="a registered method (docs/balancers.md)")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SchedulerConfig(_Strict):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["none", "cosine", "step", "plateau"] = Field("none", description="schedule")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up from lr/(n+1)")
    min_lr: float = Field(0.0, ge=0.0, description="cosine floor / plateau floor")
    step_size: int = Field(30, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: decay factor")
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau: decay factor")
    patience: int = Field(10, ge=0, description="plateau: epochs without improvement")

    @model_validator(mode="after")
    def _warmup(self) -> SchedulerConfig:
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("warmup_epochs is not available with the plateau schedule")
        return self


class OptimConfig(_Strict):
    """Optimizer, regularisation and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer")
    lr: float = Field(1e-3, gt=0.0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="optimizer weight decay (not on biases)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam/adamw only")
    l1: float = Field(0.0, ge=0.0, description="L1 penalty on weights (not biases/norms)")
    l2: float = Field(0.0, ge=0.0, description="L2 penalty 0.5·λ·‖w‖² on weights")
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)


class EarlyStoppingConfig(_Strict):
    """Stop when the monitored validation value has not improved for `patience` epochs.

    ``monitor``: ``auto`` (Δm when baselines exist, else the validation loss), ``loss``,
    ``delta_m`` or ``<task>.<metric>``. ``patience: 0`` turns early stopping off (the best epoch
    is still tracked and restored).
    """

    monitor: str = Field("auto", description="auto, loss, delta_m or <task>.<metric>")
    patience: int = Field(0, ge=0, description="epochs without improvement; 0: never stop")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts")


class TrainConfig(_Strict):
    """Training loop settings."""

    epochs: int = Field(50, ge=1, description="maximum number of epochs")
    batch_size: int = Field(64, ge=1, description="training batch size")
    eval_batch_size: int = Field(1024, ge=1, description="evaluation batch size")
    seed: int = Field(0, description="seeds initialisation, shuffling, dropout, augmentation")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    restore_best: bool = Field(True, description="end with the best epoch's weights")
    baselines: bool = Field(False, description="also train single-task baselines and report Δm")
    checkpoint_every: int = Field(1, ge=1, description="epochs between last.pt checkpoints")
    deterministic: bool = Field(True, description="torch deterministic algorithms")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (None: default)")


class LoggingConfig(_Strict):
    """Where runs go and what is shown."""

    runs_dir: str = Field("runs", description="parent of default run directories")
    run_name: str | None = Field(None, description="run and bundle name (default: config stem)")
    progress: bool = Field(True, description="progress bar / periodic lines on stderr")
    report: bool = Field(True, description="write report.md/.html with plots after training")
    log_every_steps: int = Field(0, ge=0, description="0: one metrics.jsonl line per epoch")


class Config(_Strict):
    """A whole run."""

    data: DataConfig
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    model: ModelConfig = Field(default_factory=ModelConfig)
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def build_tasks(self) -> list[Task]:
        """The declared tasks as :class:`Task` objects, checked against each other."""
        return tasks_from_mapping(
            {n: t.model_dump(exclude_none=True) for n, t in self.tasks.items()}
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that :func:`config_from_dict` turns back into this config."""
        return self.model_dump(mode="json")


def tasks_from_mapping(spec: dict[str, dict[str, Any]]) -> list[Task]:
    """Build and cross-check tasks from ``{name: {kind: ..., ...}}``."""
    if not spec:
        raise ConfigError("tasks: declare at least one task")
    tasks: list[Task] = []
    for name, fields in spec.items():
        try:
            tasks.append(Task(name=name, **fields))
        except ConfigError as e:
            raise ConfigError(f"tasks.{name}: {e}") from None
    check_tasks(tasks)
    return tasks


def check_tasks(tasks: list[Task]) -> None:
    """Names unique; fusion tasks read existing, non-fusion tasks."""
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"tasks: duplicate task names {dupes}")
    by_name = {t.name: t for t in tasks}
    for t in tasks:
        for src in t.fusion:
            if src not in by_name:
                raise ConfigError(
                    f"tasks.{t.name}.fusion: unknown task '{src}' (tasks: {', '.join(names)})"
                )
            if by_name[src].is_fusion:
                raise ConfigError(
                    f"tasks.{t.name}.fusion: '{src}' is itself a fusion task; "
                    "a fusion head reads the outputs of ordinary task heads"
                )


# ------------------------------------------------------------------------------- loading
def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        given = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(given, dict | list):
            msg += f" (got {given!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain mapping into a :class:`Config` (errors name the field path)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_format_validation_error(e)}") from None
    if cfg.tasks:
        try:
            cfg.build_tasks()
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` → (``["a", "b", "c"]``, value parsed as a YAML scalar/list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set train.epochs=10)")
    key, _, text = item.partition("=")
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {item!r}: the key must be a dotted field path")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` override applied by dotted path."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item}: {where} is not an index of the list")
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {where} is not a section")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"--set {item}: {last} is not an index of the list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item}: {'.'.join(path[:-1])} is not a section")
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise ConfigError(f"{p}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate.

    Examples
    --------
    >>> cfg = load_config("examples/penguins.yaml", ["train.epochs=5"])  # doctest: +SKIP
    """
    raw = apply_overrides(read_yaml(path), list(overrides or []))
    return config_from_dict(raw, source=str(path))
