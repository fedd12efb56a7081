"""MGDA and MGDA-UB (Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import torch

from lepton.balancers._base import GramianBalancer, Mode, register_balancer
from lepton.balancers._solvers import min_norm_simplex, normalized


@register_balancer("mgda")
class MGDA(GramianBalancer):
    r"""Multiple-gradient descent: the minimum-norm point of the convex hull of the task gradients.

    Sener & Koltun, *Multi-Task Learning as Multi-Objective Optimization*, NeurIPS 2018.

    .. math:: w^* = \arg\min_{w \in \Delta_K} \Big\|\sum_k w_k g_k\Big\|^2, \qquad
              d = \sum_k w^*_k g_k

    ``d`` is a common descent direction of every task (or 0 at a Pareto-stationary point).
    The paper solves the quadratic program with Frank–Wolfe; here it is solved exactly (an NNLS
    reduction on a square root of the Gramian). ``mode="features"`` is MGDA-UB: the weights are
    found from the gradients with respect to the shared representation (the paper's upper bound)
    and applied to the losses — one backward through the trunk.

    Parameters
    ----------
    mode:
        ``"params"`` (MGDA), ``"features"`` (MGDA-UB) or ``"auto"``.
    chunk_size:
        At most this many tasks per batched backward.

    Examples
    --------
    >>> MGDA().aggregate(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    tensor([1., 1.])
    """

    def __init__(self, mode: Mode = "params", chunk_size: int | None = None) -> None:
        super().__init__(mode, chunk_size)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        Mn, s = normalized(gramian.cpu().numpy())
        if s == 0.0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        return torch.from_numpy(min_norm_simplex(Mn))
