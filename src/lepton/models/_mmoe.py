"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lepton.models._experts import ExpertBank, SoftmaxGate, mix
from lepton.models._layers import check_int
from lepton.models._trunk import Trunk, register_trunk


@register_trunk("mmoe")
class MMoE(Trunk):
    """Multi-gate Mixture-of-Experts: ``n`` shared experts, one softmax gate per task.

    Task ``k`` reads ``z_k = Σ_i g_k(x)_i · f_i(x)`` with ``g_k(x) = softmax(W_k x + b_k)``
    (Ma, Zhao, Yi, Chen, Hong & Chi, *Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts*, KDD 2018). The experts are shared by every task; gate ``k``
    belongs to task ``k`` alone. ``last_gates[task]`` holds ``g_k(x)`` of the last batch
    ``(B, num_experts)``.

    Parameters
    ----------
    in_dim, tasks:
        Width of the encoded inputs; the task names (one gate each).
    hidden:
        Widths of each expert MLP; the last one is the representation width.
    dropout, batch_norm, activation:
        Applied after every expert layer.
    num_experts:
        Number of shared experts ``n``.

    Examples
    --------
    >>> trunk = MMoE(8, ["a", "b"], hidden=[16], num_experts=3)
    >>> rep = trunk(torch.randn(5, 8))
    >>> {k: tuple(v.shape) for k, v in rep.items()}, tuple(trunk.last_gates["a"].shape)
    ({'a': (5, 16), 'b': (5, 16)}, (5, 3))
    """

    shares_representation = False

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        *,
        num_experts: int = 4,
    ) -> None:
        super().__init__(in_dim, tasks)
        self.num_experts = check_int("num_experts", num_experts, self.min_experts)
        self._check_options()
        self.experts = ExpertBank(self.num_experts, in_dim, hidden, dropout, batch_norm, activation)
        self.gates = nn.ModuleDict({t: self.make_gate(in_dim) for t in tasks})
        self.out_dim = self.experts.out_dim

    min_experts = 1

    def _check_options(self) -> None:
        """Validate a subclass's own options (set before the gates are built)."""

    def make_gate(self, in_dim: int) -> nn.Module:
        """One task's gate: ``(B, in_dim)`` → ``(B, num_experts)`` weights summing to one."""
        return SoftmaxGate(in_dim, self.num_experts)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        experts = self.experts(x)
        gates = {t: gate(x) for t, gate in self.gates.items()}
        self.last_gates = {t: g.detach() for t, g in gates.items()}
        return {t: mix(g, experts) for t, g in gates.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.experts.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.gates[task].parameters()

    def gate_labels(self) -> dict[str, list[str]]:
        return {t: [f"expert{i}" for i in range(self.num_experts)] for t in self.task_names}
