"""IMTL: impartial multi-task learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from lepton.balancers._base import GramianBalancer, Mode, as_loss_vector, register_balancer
from lepton.balancers._solvers import normalized, single_thread_blas


def imtl_g_weights(M: np.ndarray) -> np.ndarray:
    """IMTL-G's closed form on a (normalised) Gramian; zero gradients get weight 0."""
    k = M.shape[0]
    norms = np.sqrt(np.clip(np.diag(M), 0, None))
    nz = np.flatnonzero(norms > 1e-12 * max(1.0, norms.max(initial=0.0)))
    w = np.zeros(k)
    if nz.size == 0:
        return np.full(k, 1.0 / k)
    if nz.size == 1:
        w[nz[0]] = 1.0
        return w
    Ms = M[np.ix_(nz, nz)]
    n = norms[nz]
    # g_i·u_j = M_ij / n_j ; D_i = g_1 − g_i, U_j = u_1 − u_j  (i, j ≥ 2)
    P = Ms / n[None, :]  # P[i, j] = g_i·u_j
    g1U = P[0, 0] - P[0, 1:]  # g_1·U_j
    DU = (P[0, 0] - P[0, 1:])[None, :] - (P[1:, 0][:, None] - P[1:, 1:])  # D_i·U_j
    with single_thread_blas(k):
        a, *_ = np.linalg.lstsq(DU.T, g1U, rcond=None)
    ws = np.concatenate([[1.0 - a.sum()], a])
    w[nz] = ws
    return w


@register_balancer("imtl")
class IMTL(GramianBalancer):
    r"""Impartial multi-task learning: equal projections of the update on every task's gradient
    direction (IMTL-G), losses scaled to stay comparable (IMTL-L), or both (hybrid).

    Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021.

    * IMTL-G: with unit gradients ``u_k = g_k/‖g_k‖``, ``D = [g_1 − g_k]ᵀ``, ``U = [u_1 − u_k]ᵀ``
      (``k = 2..K``): ``α_{2:K} = g_1 Uᵀ (D Uᵀ)^{-1}``, ``α_1 = 1 − Σ α_{2:K}``; the update
      ``d = Σ α_k g_k`` has the same projection ``d·u_k`` on every task.
    * IMTL-L: learnable scales ``s_k``; each loss becomes ``e^{s_k} L_k − s_k`` (its minimum over
      ``s_k`` makes every scaled loss 1). The ``s_k`` are parameters of this module: add
      ``balancer.parameters()`` to the optimizer.
    * hybrid (the paper's IMTL): IMTL-G on the gradients of the IMTL-L-scaled losses.

    ``variant="l"`` is a pure loss weighting (one ordinary backward, no per-task gradients).

    Parameters
    ----------
    variant:
        ``"g"``, ``"l"`` or ``"hybrid"``.
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer` (unused by ``"l"``).

    Examples
    --------
    >>> d = IMTL(variant="g").aggregate(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
    >>> u = torch.tensor([[1.0, 0.0], [0.4472, 0.8944]])
    >>> (u @ d).round(decimals=3)
    tensor([0.7240, 0.7240])
    """

    def __init__(
        self,
        variant: Literal["g", "l", "hybrid"] = "hybrid",
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if variant not in ("g", "l", "hybrid"):
            raise ValueError("variant must be 'g', 'l' or 'hybrid'")
        self.variant = variant
        self.kind = "loss" if variant == "l" else "gradient"  # type: ignore[misc]
        self.scales: nn.Parameter | None = None

    def _build(self, num_tasks: int) -> None:
        if self.variant != "g":
            self.scales = nn.Parameter(torch.zeros(num_tasks))

    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.scales is None:
            return losses
        s = self.scales.to(losses)
        if valid is not None:
            v = valid.to(losses.device).reshape(-1).bool()
            s = torch.where(v, s, s.detach())
            return torch.where(v, torch.exp(s) * losses - s, losses * 0.0)
        return torch.exp(s) * losses - s

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        Mn, s = normalized(gramian.cpu().numpy())
        k = gramian.shape[0]
        if s == 0.0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        return torch.from_numpy(imtl_g_weights(Mn))

    def backward(
        self,
        losses: torch.Tensor | Sequence[torch.Tensor],
        shared_params: Iterable[torch.Tensor],
        features: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        if self.variant != "l":
            return super().backward(losses, shared_params, features, valid)
        vec = as_loss_vector(losses)
        self._check_k(vec.shape[0])
        assert self.scales is not None
        self.last_cosines = None
        self.last_weights = torch.exp(self.scales.detach()).float()
        self.transform(vec, valid).sum().backward()
