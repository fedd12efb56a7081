"""Banks of experts and softmax gates, shared by the mixture-of-experts trunks.

A bank holds ``E`` MLPs of the same shape and evaluates them together: each layer is one batched
matrix product over an ``(E, d_in, d_out)`` weight, instead of a Python loop over ``E`` modules.
The result equals ``E`` separate ``nn.Linear`` stacks with the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._layers import activation as make_activation


class BatchedLinear(nn.Module):
    """``E`` independent linear maps ``d_in → d_out`` applied in one batched product.

    Input ``(B, d_in)`` (the same rows for every map) or ``(E, B, d_in)`` (one input per map);
    output ``(E, B, d_out)``. Initialised like ``nn.Linear`` (uniform in ``±1/√d_in``).
    """

    def __init__(self, num: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.num, self.in_dim, self.out_dim = int(num), int(in_dim), int(out_dim)
        self.weight = nn.Parameter(torch.empty(self.num, self.in_dim, self.out_dim))
        self.bias = nn.Parameter(torch.empty(self.num, 1, self.out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim) if self.in_dim else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.einsum("bd,edo->ebo", x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num={self.num}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class ExpertBank(nn.Module):
    """``num`` expert MLPs with widths ``hidden``: ``Linear → [BatchNorm] → act → [Dropout]``.

    ``forward`` takes ``(B, d)`` (every expert reads the same rows) or ``(num, B, d)`` and
    returns ``(num, B, hidden[-1])``. Batch norm normalises each unit of each expert separately.
    """

    def __init__(
        self,
        num: int,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = [int(w) for w in hidden]
        if not widths:
            raise ValueError("experts need at least one layer: set model.hidden, e.g. [64]")
        self.num = int(num)
        self.out_dim = widths[-1]
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        d = int(in_dim)
        for w in widths:
            self.layers.append(BatchedLinear(self.num, d, w))
            if batch_norm:
                self.norms.append(nn.BatchNorm1d(self.num * w))
            d = w
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.norms:
                e, b, w = h.shape
                h = self.norms[i](h.transpose(0, 1).reshape(b, e * w))
                h = h.reshape(b, e, w).transpose(0, 1)
            h = self.dropout(self.act(h))
        return h


class SoftmaxGate(nn.Module):
    """A linear layer followed by a softmax over ``num`` choices: ``(B, d) → (B, num)``."""

    def __init__(self, in_dim: int, num: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``Σ_e gates[b, e] · experts[e, b, :]``: gates ``(B, E)``, experts ``(E, B, H)`` →
    ``(B, H)``."""
    return torch.einsum("be,ebh->bh", gates, experts)
