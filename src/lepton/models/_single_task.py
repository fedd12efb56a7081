"""Independent single-task trunks behind the multi-task interface: the Δm baseline."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lepton.models._layers import mlp
from lepton.models._trunk import Trunk, register_trunk


@register_trunk("single_task")
class SingleTask(Trunk):
    """``K`` independent trunks, one per task, with the interface of every other trunk.

    Task ``k`` reads column ``k``: an MLP with the widths of ``hidden`` (as ``shared_bottom``)
    over its *own copy* of the input encoder (``shares_encoder`` is false, so
    :class:`~lepton.models.MultiTaskModel` gives each task an independently initialised encoder —
    embeddings, or the CNN for images). Nothing is shared: ``shared_parameters()`` is empty and
    the gradient of one task's loss never reaches another task's parameters. Training it is
    training ``K`` single-task models side by side, with the same batches and budget.

    Parameters
    ----------
    hidden, dropout, batch_norm, activation:
        Each column's layers (as :class:`~lepton.models.SharedBottom`).

    Examples
    --------
    >>> trunk = SingleTask(4, ["a", "b"], hidden=[8])
    >>> rep = trunk({"a": torch.randn(3, 4), "b": torch.randn(3, 4)})
    >>> {k: tuple(v.shape) for k, v in rep.items()}, list(trunk.shared_parameters())
    ({'a': (3, 8), 'b': (3, 8)}, [])
    """

    shares_representation = False
    shares_encoder = False

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.1,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__(in_dim, tasks)
        self.columns = nn.ModuleDict(
            {t: mlp(in_dim, hidden, dropout, batch_norm, activation) for t in self.task_names}
        )
        self.out_dim = list(hidden)[-1] if hidden else in_dim

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(x, dict):
            return {t: col(x[t]) for t, col in self.columns.items()}
        return {t: col(x) for t, col in self.columns.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.columns[task].parameters()
