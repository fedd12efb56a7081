"""Task heads and fusion heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._layers import mlp


class TaskHead(nn.Module):
    """A small MLP tower from a task's representation to its raw output."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.tower = mlp(in_dim, hidden, dropout, False, activation)
        self.out = nn.Linear(list(hidden)[-1] if hidden else in_dim, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.tower(z))


class FusionHead(TaskHead):
    """A head whose input is other tasks' outputs (probabilities or standardised values),
    optionally concatenated with the representation. It is trained with its own loss.

    ``detach=True`` keeps the fusion loss from flowing back into the source heads and trunk.
    """

    def __init__(
        self,
        sources: Sequence[str],
        source_dims: Sequence[int],
        out_dim: int,
        rep_dim: int = 0,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
        activation: str = "relu",
        detach: bool = False,
    ) -> None:
        super().__init__(sum(source_dims) + rep_dim, out_dim, hidden, dropout, activation)
        self.sources = list(sources)
        self.uses_representation = rep_dim > 0
        self.detach = detach

    def forward_fused(
        self, source_outputs: Sequence[torch.Tensor], z: torch.Tensor | None
    ) -> torch.Tensor:
        parts = [o.detach() if self.detach else o for o in source_outputs]
        if self.uses_representation:
            assert z is not None
            parts.append(z.detach() if self.detach else z)
        return self(torch.cat(parts, dim=1))
