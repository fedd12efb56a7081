"""DSelect-k: differentiable top-k selection of experts (Hazimeh et al., NeurIPS 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._layers import check_float, check_int
from lepton.models._mmoe import MMoE
from lepton.models._trunk import register_trunk


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """The cubic smooth-step: 0 below ``-γ/2``, 1 above ``γ/2``, ``-2t³/γ³ + 3t/(2γ) + 1/2``
    between (Hazimeh et al. 2021, eq. 4); continuously differentiable, exactly 0 or 1 outside."""
    inner = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(
        t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), inner)
    )


class DSelectKGate(nn.Module):
    """A per-example DSelect-k gate over ``num_experts`` experts with ``k`` selectors.

    Selector ``i`` reads ``m = ⌈log₂ n⌉`` logits ``z_i = W_i x + b_i``; through the smooth-step
    ``S`` they give a distribution over the ``2^m`` binary codes,
    ``r(z_i)_c = Π_j S(z_ij)^{c_j} (1 − S(z_ij))^{1 − c_j}``; the selectors are mixed by
    ``softmax(w(x))``. Once the smooth-steps saturate, each selector picks exactly one expert, so
    at most ``k`` experts get a non-zero weight.

    When ``n`` is not a power of two, code ``c ≥ n`` is folded onto expert ``c − n``, so that the
    weights always sum to one (the authors' implementation instead adds a penalty that keeps the
    mass on the first ``n`` codes). The optional entropy regulariser of the paper is not applied.
    """

    def __init__(self, in_dim: int, num_experts: int, k: int, gamma: float) -> None:
        super().__init__()
        self.num_experts, self.k, self.gamma = num_experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(num_experts)))
        self.z = nn.Linear(in_dim, k * self.bits)
        self.w = nn.Linear(in_dim, k)
        # as the authors' code: z starts in ±γ/100 (every code equally likely), w in ±0.05
        nn.init.uniform_(self.z.weight, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.z.bias, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.w.weight, -0.05, 0.05)
        nn.init.uniform_(self.w.bias, -0.05, 0.05)
        codes = torch.arange(2**self.bits)
        bits = (codes[:, None] >> torch.arange(self.bits - 1, -1, -1)) & 1  # (2^m, m), MSB first
        self.register_buffer("codes", bits.float(), persistent=False)
        fold = torch.zeros(2**self.bits, num_experts)
        fold[codes, codes % num_experts] = 1.0
        self.register_buffer("fold", fold, persistent=False)

    def selectors(self, x: torch.Tensor) -> torch.Tensor:
        """Each selector's distribution over the experts: ``(B, k, num_experts)``."""
        s = smooth_step(self.z(x).reshape(-1, self.k, 1, self.bits), self.gamma)
        c = self.codes
        r = (s * c + (1.0 - s) * (1.0 - c)).prod(dim=-1)  # (B, k, 2^m)
        return r @ self.fold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.w(x), dim=-1)  # (B, k)
        return torch.einsum("bk,bke->be", weights, self.selectors(x))


@register_trunk("dselect_k")
class DSelectK(MMoE):
    """Mixture of shared experts with one DSelect-k gate per task (Hazimeh, Zhao, Chowdhery,
    Sathiamoorthy, Chen, Mazumder, Hong & Chi, *DSelect-k: Differentiable Selection in the
    Mixture of Experts with Applications to Multi-Task Learning*, NeurIPS 2021).

    Like :class:`~lepton.models.MMoE`, but each task's gate is sparse: it converges to at most
    ``k`` experts per example while staying differentiable. The experts are shared; each gate
    belongs to its task. ``last_gates[task]``: ``(B, num_experts)``.

    Parameters
    ----------
    hidden, dropout, batch_norm, activation:
        Every expert is an MLP with widths ``hidden``.
    num_experts:
        Number of shared experts ``n``.
    k:
        Number of selectors per gate: at most ``k`` experts per task and example (``k ≤ n``).
    gamma:
        Width of the smooth-step's cubic region.

    Examples
    --------
    >>> trunk = DSelectK(8, ["a", "b"], hidden=[16], num_experts=4, k=2)
    >>> _ = trunk(torch.randn(5, 8))
    >>> torch.allclose(trunk.last_gates["a"].sum(dim=1), torch.ones(5))
    True
    """

    min_experts = 2

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        *,
        num_experts: int = 8,
        k: int = 2,
        gamma: float = 1.0,
    ) -> None:
        self._options = (k, gamma)
        super().__init__(
            in_dim, tasks, hidden, dropout, batch_norm, activation, num_experts=num_experts
        )

    def _check_options(self) -> None:
        k, gamma = self._options
        self.k = check_int("k", k)
        if self.k > self.num_experts:
            raise ValueError(f"k ({k}) cannot exceed num_experts ({self.num_experts})")
        self.gamma = check_float("gamma", gamma, 0.0, math.inf, "()")

    def make_gate(self, in_dim: int) -> nn.Module:
        return DSelectKGate(in_dim, self.num_experts, self.k, self.gamma)
