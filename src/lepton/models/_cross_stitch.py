"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._experts import BatchedLinear
from lepton.models._layers import activation as make_activation
from lepton.models._layers import check_float
from lepton.models._trunk import Trunk, register_trunk


@register_trunk("cross_stitch")
class CrossStitch(Trunk):
    """One MLP column per task, with a learned linear mix of the columns after every layer.

    After layer ``l`` the activations of the ``K`` columns are recombined by a cross-stitch unit
    ``h̃_k = Σ_j α^l_{kj} h_j`` (Misra et al., *Cross-stitch Networks for Multi-task Learning*,
    CVPR 2016); column ``k``'s output after the last unit is task ``k``'s representation.
    ``α^l`` starts at ``self_weight`` on the diagonal and ``(1 − self_weight)/(K − 1)`` elsewhere
    (the paper's ``α_S = 0.9, α_D = 0.1`` for two tasks) and is learned with the rest. The
    units are not weight-decayed or L1/L2-penalised.

    Every column reaches every task through the units, so all trunk parameters count as shared
    for the balancers (the heads remain task-specific). ``stitches()`` returns the ``α``
    matrices; for image inputs the columns run on the encoder's features.

    Parameters
    ----------
    hidden:
        Widths of each column's layers (one cross-stitch unit after each).
    dropout, batch_norm, activation:
        Applied after every column layer, before the unit.
    self_weight:
        Initial diagonal of every ``α`` (in ``(0, 1]``).

    Examples
    --------
    >>> trunk = CrossStitch(8, ["a", "b"], hidden=[16, 16])
    >>> trunk.stitches()[0]
    tensor([[0.9000, 0.1000],
            [0.1000, 0.9000]])
    """

    shares_representation = False

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        *,
        self_weight: float = 0.9,
    ) -> None:
        super().__init__(in_dim, tasks)
        widths = [int(w) for w in hidden]
        if not widths:
            raise ValueError("cross_stitch needs at least one layer per column: set model.hidden")
        self.self_weight = check_float("self_weight", self_weight, 0.0, 1.0, "(]")
        k = len(self.task_names)
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        d = in_dim
        for w in widths:
            self.layers.append(BatchedLinear(k, d, w))
            if batch_norm:
                self.norms.append(nn.BatchNorm1d(k * w))
            d = w
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if k == 1:
            init = torch.ones(1, 1)
        else:
            off = (1.0 - self.self_weight) / (k - 1)
            init = torch.full((k, k), off) + (self.self_weight - off) * torch.eye(k)
        # stored flat (1-D) so that the optimizer's weight decay and L1/L2 leave the units alone
        self.alphas = nn.ParameterList(
            nn.Parameter(init.reshape(-1).clone()) for _ in range(len(widths))
        )
        self.out_dim = d

    def stitches(self) -> list[torch.Tensor]:
        """The ``K×K`` cross-stitch matrices, one per layer (row ``k``: what column ``k`` reads)."""
        k = len(self.task_names)
        return [a.detach().reshape(k, k).clone() for a in self.alphas]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        k = len(self.task_names)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)  # (K, B, w)
            if self.norms:
                _, b, w = h.shape
                h = self.norms[i](h.transpose(0, 1).reshape(b, k * w))
                h = h.reshape(b, k, w).transpose(0, 1)
            h = self.dropout(self.act(h))
            h = torch.einsum("kj,jbw->kbw", self.alphas[i].reshape(k, k), h)
        return {t: h[i] for i, t in enumerate(self.task_names)}
