"""``MultiTaskModel``: encoder → shared trunk → one head per task → optional fusion heads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lepton.config import CNNConfig, ModelConfig
from lepton.errors import ConfigError
from lepton.models._encoder import TaskEncoders, build_encoder
from lepton.models._heads import FusionHead, TaskHead
from lepton.models._trunk import Trunk, create_trunk
from lepton.tasks import Task

if TYPE_CHECKING:
    from lepton.data import PreparedData

Representation = torch.Tensor | dict[str, torch.Tensor]


class MultiTaskModel(nn.Module):
    """One shared trunk, one independent head per task, optional fusion heads.

    ``forward(inputs, tasks=None)`` returns ``{task: raw output}`` for the requested tasks
    (all by default); only the heads needed for them run (a fusion task also runs its sources).
    Raw outputs are logits for classification and standardised values for regression; see
    :meth:`lepton.Task.activate` and the bundle's predictor for predictions.

    Parameters
    ----------
    encoder:
        Maps the input tensors to one vector per row (``out_dim`` attribute). For a trunk that
        shares nothing (``trunk.shares_encoder`` false) each task gets its own copy.
    trunk:
        A :class:`lepton.models.Trunk` over the encoder's output, built for the tasks that read a
        representation (:func:`representation_tasks`).
    tasks:
        The tasks, with classes resolved (see :class:`lepton.data.Preprocessor`).
    head_hidden, head_dropout, activation:
        Default tower of each head (a task's ``head_hidden`` overrides the widths).
    """

    def __init__(
        self,
        encoder: nn.Module,
        trunk: Trunk,
        tasks: Sequence[Task],
        head_hidden: Sequence[int] = (32,),
        head_dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not trunk.shares_encoder and not isinstance(encoder, TaskEncoders):
            encoder = TaskEncoders(encoder, trunk.task_names)  # nothing shared, not even inputs
        self.encoder = encoder
        self.trunk = trunk
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self._by_name = {t.name: t for t in self.tasks}
        self.head_hidden = list(head_hidden)
        self.head_dropout = float(head_dropout)
        self.activation = activation
        self.heads = nn.ModuleDict()
        rep_dim = trunk.out_dim
        for t in self.tasks:
            hidden = list(t.head_hidden) if t.head_hidden is not None else self.head_hidden
            if t.is_fusion:
                self.heads[t.name] = FusionHead(
                    t.fusion,
                    [self._by_name[s].output_dim for s in t.fusion],
                    t.output_dim,
                    rep_dim=rep_dim if t.fusion_representation else 0,
                    hidden=hidden,
                    dropout=head_dropout,
                    activation=activation,
                    detach=t.fusion_detach,
                )
            else:
                self.heads[t.name] = TaskHead(
                    rep_dim, t.output_dim, hidden, head_dropout, activation
                )

    # ----------------------------------------------------------------------- forward
    def representation(self, inputs: Mapping[str, torch.Tensor]) -> Representation:
        """The trunk's output: one tensor shared by all heads, or ``{task: tensor}``."""
        return self.trunk(self.encoder(inputs))

    def heads_forward(
        self, rep: Representation, tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the heads of ``tasks`` (all by default) on a representation."""
        wanted = self.task_names if tasks is None else list(tasks)
        unknown = [t for t in wanted if t not in self._by_name]
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; the model has {self.task_names}")
        needed = set(wanted)
        for name in wanted:
            needed.update(self._by_name[name].fusion)
        out: dict[str, torch.Tensor] = {}
        for t in self.tasks:  # ordinary heads first
            if t.name in needed and not t.is_fusion:
                out[t.name] = self.heads[t.name](_rep_for(rep, t.name))
        for t in self.tasks:
            if t.name in needed and t.is_fusion:
                head = self.heads[t.name]
                assert isinstance(head, FusionHead)
                sources = [self._by_name[s].activate(out[s]) for s in t.fusion]
                z = _rep_for(rep, t.name) if head.uses_representation else None
                out[t.name] = head.forward_fused(sources, z)
        return {name: out[name] for name in wanted}

    def forward(
        self, inputs: Mapping[str, torch.Tensor], tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        return self.heads_forward(self.representation(inputs), tasks)

    # -------------------------------------------------------------------- parameters
    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters used by more than one task (encoder and the trunk's shared part)."""
        encoder = [] if isinstance(self.encoder, TaskEncoders) else list(self.encoder.parameters())
        return encoder + list(self.trunk.shared_parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of ``task`` alone: its head, its part of the trunk (and its encoder)."""
        if task not in self._by_name:
            raise KeyError(f"unknown task '{task}'; the model has {self.task_names}")
        params = list(self.heads[task].parameters())
        if task in self.trunk.task_names:
            params += list(self.trunk.task_parameters(task))
            if isinstance(self.encoder, TaskEncoders):
                params += list(self.encoder.encoders[task].parameters())
        return params

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of the images the model takes, or ``None`` for tabular inputs."""
        spec = self.spec()["encoder"]
        return tuple(spec["shape"]) if spec.get("type") == "image" else None  # type: ignore[return-value]

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (heads, task-specific trunk parts)."""
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------- persist
    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which :meth:`from_spec` rebuilds the model."""
        enc_spec = getattr(self.encoder, "spec", None)
        if enc_spec is None:
            raise TypeError("the encoder has no spec(); it cannot be saved in a bundle")
        return {
            "encoder": enc_spec(),
            "trunk": self.trunk.spec(),
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            "activation": self.activation,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], tasks: Sequence[Task]) -> MultiTaskModel:
        encoder = build_encoder(spec["encoder"])
        trunk_spec = dict(spec["trunk"])
        arch = trunk_spec.pop("architecture")
        trunk = create_trunk(arch, encoder.out_dim, representation_tasks(tasks), **trunk_spec)
        return cls(
            encoder,
            trunk,
            tasks,
            head_hidden=spec["head_hidden"],
            head_dropout=spec["head_dropout"],
            activation=spec["activation"],
        )

    @classmethod
    def build(
        cls,
        tasks: Sequence[Task],
        n_numeric: int,
        cardinalities: Sequence[int] = (),
        config: ModelConfig | Mapping[str, Any] | None = None,
        seed: int | None = 0,
    ) -> MultiTaskModel:
        """A model for tabular inputs from a ``model`` config section (or its defaults).

        ``seed`` makes the initial weights reproducible without touching the global random
        state (``None``: draw from the global generator).

        Examples
        --------
        >>> from lepton import Task
        >>> tasks = [Task("y", "binary", classes=(0, 1)), Task("v", "regression")]
        >>> model = MultiTaskModel.build(tasks, n_numeric=4, config={"hidden": [16]})
        >>> out = model({"numeric": torch.zeros(2, 4)})
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'y': (2, 1), 'v': (2, 1)}
        """
        config = _model_config(config)
        if config.cnn is not None:
            raise ConfigError("model.cnn: the CNN encoder is for image data; this data is tabular")
        cards = list(cardinalities)
        dims = None if config.embedding_dim is None else [config.embedding_dim] * len(cards)
        spec = {
            "type": "tabular",
            "n_numeric": int(n_numeric),
            "cardinalities": cards,
            "embedding_dims": [int(d) for d in dims] if dims is not None else None,
        }
        return cls._assemble(tasks, spec, config, seed)

    @classmethod
    def build_image(
        cls,
        tasks: Sequence[Task],
        shape: Sequence[int],
        config: ModelConfig | Mapping[str, Any] | None = None,
        seed: int | None = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> MultiTaskModel:
        """A model for images of ``shape`` ``(C, H, W)``: a :class:`~lepton.models.ConvEncoder`
        (configured by ``model.cnn``) under the configured trunk.

        ``mean``/``std`` (per channel, from the training images) standardise the pixels inside
        the model.

        Examples
        --------
        >>> from lepton import Task
        >>> tasks = [Task("digit", "multiclass", classes=tuple(range(10)))]
        >>> model = MultiTaskModel.build_image(tasks, (1, 28, 28), {"cnn": {"channels": [8]}})
        >>> model({"image": torch.zeros(2, 1, 28, 28)})["digit"].shape
        torch.Size([2, 10])
        """
        config = _model_config(config)
        cnn = config.cnn if config.cnn is not None else CNNConfig()
        spec = {
            "type": "image",
            "shape": [int(s) for s in shape],
            "channels": list(cnn.channels),
            "blocks": cnn.blocks,
            "stem_stride": cnn.stem_stride,
            "mean": None if mean is None else [float(m) for m in mean],
            "std": None if std is None else [float(v) for v in std],
        }
        return cls._assemble(tasks, spec, config, seed)

    @classmethod
    def _assemble(
        cls,
        tasks: Sequence[Task],
        encoder_spec: Mapping[str, Any],
        config: ModelConfig,
        seed: int | None,
    ) -> MultiTaskModel:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            try:
                encoder = build_encoder(encoder_spec)
            except ValueError as e:
                raise ConfigError(f"model: {e}") from None
            trunk = create_trunk(
                config.architecture,
                encoder.out_dim,
                representation_tasks(tasks),
                hidden=list(config.hidden),
                dropout=config.dropout,
                batch_norm=config.batch_norm,
                activation=config.activation,
                **config.options,
            )
            return cls(
                encoder,
                trunk,
                tasks,
                head_hidden=config.head_hidden,
                head_dropout=config.head_dropout,
                activation=config.activation,
            )

    @classmethod
    def for_data(
        cls,
        data: PreparedData,
        config: ModelConfig | Mapping[str, Any] | None = None,
        seed: int | None = 0,
        tasks: Sequence[Task] | None = None,
    ) -> MultiTaskModel:
        """A model for prepared data: its fitted tasks (or ``tasks``) and its inputs — feature
        count and vocabularies of tabular data, or the shape and per-channel statistics of the
        training images."""
        tasks = data.tasks if tasks is None else tasks
        images = data.train.inputs.get("image")
        if images is not None:
            from lepton.data.images import channel_stats

            mean, std = channel_stats(images)
            return cls.build_image(tasks, images.shape[1:], config, seed, mean, std)
        pre = data.preprocessor
        return cls.build(tasks, len(pre.numeric), pre.cardinalities, config, seed)


def representation_tasks(tasks: Sequence[Task]) -> list[str]:
    """The tasks whose heads read the trunk: ordinary tasks, and fusion tasks that read the
    representation (a trunk gets a gate, column or branch for each of them)."""
    return [t.name for t in tasks if not t.is_fusion or t.fusion_representation]


def _model_config(config: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
    if config is None:
        return ModelConfig()
    if isinstance(config, ModelConfig):
        return config
    try:
        return ModelConfig.model_validate(dict(config))
    except Exception as e:
        raise ConfigError(f"model: {e}") from None


def _rep_for(rep: Representation, task: str) -> torch.Tensor:
    return rep[task] if isinstance(rep, dict) else rep
