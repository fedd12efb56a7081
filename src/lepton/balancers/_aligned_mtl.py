"""Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, CVPR 2023)."""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import PreferenceBalancer, register_balancer
from lepton.balancers._solvers import normalized, single_thread_blas


@register_balancer("aligned_mtl")
class AlignedMTL(PreferenceBalancer):
    r"""Aligned-MTL: align the principal components of the task gradients.

    Senushkin et al., *Independent Component Alignment for Multi-Task Learning*, CVPR 2023,
    Algorithm 1. With ``G Gᵀ = V Λ Vᵀ`` (rank ``R``, eigenvalues ``λ_1 ≥ … ≥ λ_R > 0``), the
    gradient matrix is replaced by ``Ĝ = √λ_R · V Λ^{-1/2} Vᵀ G`` — a system with condition number
    1 whose components all have the smallest singular value — and the update is ``Ĝᵀ p``:

    .. math:: d = \sum_k \alpha_k g_k, \qquad \alpha = \sqrt{\lambda_R}\, V\Lambda^{-1/2}V^\top p

    with ``p`` the task preferences (default all ones, as in the official code).
    ``mode="features"`` is Aligned-MTL-UB (the representation's gradients).

    Parameters
    ----------
    pref:
        Task preferences ``p`` (one per task; default ones).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        p = self.preferences(tasks)
        Mn, s = normalized(gramian.cpu().numpy())
        if s == 0.0:
            return torch.from_numpy(p.astype(np.float64))
        with single_thread_blas(k):
            lam, V = np.linalg.eigh(Mn)
        tol = lam.max() * k * np.finfo(np.float32).eps  # as the official code (float32 Gramians)
        keep = lam > tol
        lam, V = lam[keep], V[:, keep]
        B = np.sqrt(lam.min()) * (V / np.sqrt(lam)[None, :]) @ V.T
        return torch.from_numpy(B @ p)
