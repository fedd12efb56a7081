"""ConFIG: conflict-free inverse gradients (Liu, Chu, Thuerey, ICLR 2025)."""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import PreferenceBalancer, register_balancer
from lepton.balancers._solvers import normalized, single_thread_blas


@register_balancer("conflict_free")
class ConFIG(PreferenceBalancer):
    r"""ConFIG: the direction with the same cosine to every task gradient, scaled by the sum of the
    gradients' projections on it.

    Liu, Chu & Thuerey, *ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks*, ICLR 2025, eq. (2): with unit gradients ``U = [g_k/‖g_k‖]``,

    .. math:: \hat d = \frac{U^+ p}{\|U^+ p\|}, \qquad d = \Big(\sum_k g_k^\top \hat d\Big)\,\hat d

    (``U⁺`` the pseudo-inverse; ``p`` preferences, default ones). ``d`` has the same positive
    cosine to every task when the gradients are linearly independent. Everything follows from the
    Gramian: ``U⁺p = Uᵀ(UUᵀ)⁺p``.

    Parameters
    ----------
    pref:
        Preference weights ``p`` (default ones).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        p = self.preferences(tasks)
        Mn, s = normalized(gramian.cpu().numpy())
        w = np.zeros(k)
        if s == 0.0:
            return torch.from_numpy(w)
        n = np.sqrt(np.clip(np.diag(Mn), 0, None))
        nz = n > 1e-12 * n.max()
        inv = np.where(nz, 1.0 / np.where(nz, n, 1.0), 0.0)
        UU = Mn * inv[:, None] * inv[None, :]  # Gramian of the unit gradients
        with single_thread_blas(k):
            beta = np.linalg.pinv(UU, hermitian=True) @ p
        c = beta * inv  # best direction = Σ_k c_k g_k
        sq = float(c @ Mn @ c)
        if not sq > 0:
            return torch.from_numpy(w)
        length = float(np.ones(k) @ Mn @ c) / np.sqrt(sq)  # Σ_k g_k·d̂ (normalised units)
        w = (length / np.sqrt(sq)) * c
        return torch.from_numpy(w)
