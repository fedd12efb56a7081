"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021)."""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import GramianBalancer, Mode, register_balancer
from lepton.balancers._solvers import cagrad_weights, normalized


@register_balancer("cagrad")
class CAGrad(GramianBalancer):
    r"""Conflict-averse gradient: the direction in a ball around the mean gradient that maximises
    the worst task's improvement.

    Liu et al., *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS 2021,
    Algorithm 1: with ``g_0 = (1/K)Σ g_k`` and ``g_w = Σ w_k g_k``,

    .. math:: w^* = \arg\min_{w\in\Delta_K}\; g_w^\top g_0 + c\|g_0\|\,\|g_w\|, \qquad
              d = g_0 + \frac{c\|g_0\|}{\|g_{w^*}\|}\, g_{w^*}

    (the dual of ``max_d min_k g_kᵀd`` s.t. ``‖d − g_0‖ ≤ c‖g_0‖``). ``c = 0`` gives the mean.
    The inner problem is solved exactly (NNLS sub-problems and Brent's method on its one scalar
    parameter), not with the official code's 20 SGD steps (nor its ``+1e-4`` on ``‖g_w‖``); when
    ``g_w = 0`` (0 in the hull) the mean is returned. ``rescale`` divides ``d`` by ``1 + c²`` (1)
    or ``1 + c`` (2), the official code's options (default 1).

    Parameters
    ----------
    c:
        Radius of the ball relative to ``‖g_0‖`` (``c ≥ 0``; the paper uses 0.4 for NYUv2).
    rescale:
        0, 1 or 2 (see above).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.

    Examples
    --------
    >>> CAGrad(c=0.5, rescale=0).aggregate(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.1835, 1.2041, 1.2041])
    """

    def __init__(
        self,
        c: float = 0.4,
        rescale: int = 1,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if c < 0:
            raise ValueError("c must be >= 0")
        if rescale not in (0, 1, 2):
            raise ValueError("rescale must be 0, 1 or 2")
        self.c = float(c)
        self.rescale = int(rescale)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        mean = np.full(k, 1.0 / k)
        Mn, s = normalized(gramian.cpu().numpy())
        if s == 0.0 or self.c == 0.0:
            w = mean
        else:
            ww, gw_norm, g0_norm = cagrad_weights(Mn, self.c)
            if gw_norm > 1e-12 * max(g0_norm, 1e-300):
                w = mean + (self.c * g0_norm / gw_norm) * ww
            else:  # 0 is in the hull: no direction to add, keep the mean
                w = mean
        if self.rescale == 1:
            w = w / (1.0 + self.c**2)
        elif self.rescale == 2:
            w = w / (1.0 + self.c)
        return torch.from_numpy(w)
