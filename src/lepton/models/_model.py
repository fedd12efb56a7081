"""``MultiTaskModel``: encoder → shared trunk → one head per task → optional fusion heads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lepton.config import ModelConfig
from lepton.errors import ConfigError
from lepton.models._encoder import TabularEncoder, build_encoder
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
        Maps the input tensors to one vector per row (``out_dim`` attribute).
    trunk:
        A :class:`lepton.models.Trunk` over the encoder's output.
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
        return list(self.encoder.parameters()) + list(self.trunk.shared_parameters())

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
        trunk = create_trunk(arch, encoder.out_dim, [t.name for t in tasks], **trunk_spec)
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
        if config is None:
            config = ModelConfig()
        elif not isinstance(config, ModelConfig):
            try:
                config = ModelConfig.model_validate(dict(config))
            except Exception as e:
                raise ConfigError(f"model: {e}") from None
        cards = list(cardinalities)
        dims = None if config.embedding_dim is None else [config.embedding_dim] * len(cards)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            encoder = TabularEncoder(n_numeric, cards, dims)
            trunk = create_trunk(
                config.architecture,
                encoder.out_dim,
                [t.name for t in tasks],
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
    ) -> MultiTaskModel:
        """A model for prepared data (its fitted tasks, feature count and vocabularies)."""
        pre = data.preprocessor
        return cls.build(data.tasks, len(pre.numeric), pre.cardinalities, config, seed)


def _rep_for(rep: Representation, task: str) -> torch.Tensor:
    return rep[task] if isinstance(rep, dict) else rep
