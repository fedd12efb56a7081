"""UPGrad and DualProj (Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024).

Both project onto the dual cone of the task gradients, ``{x : G x ≥ 0}`` — the directions that
conflict with no task. Projecting ``Gᵀu`` gives ``Gᵀv`` with ``v = argmin_{v ≥ u} vᵀ(G Gᵀ)v``
(Proposition 1 of the paper), a non-negative least squares problem on a K×K square root of the
Gramian, solved exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lepton.balancers._base import Mode, PreferenceBalancer, register_balancer
from lepton.balancers._solvers import normalized, project_dual_cone, psd_factor


def _prepared(
    gramian: torch.Tensor, reg_eps: float
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """A square root of the normalised Gramian of the non-zero gradients, that Gramian, and the
    indices of those gradients (a zero gradient constrains nothing: its weight stays at ``u``)."""
    Mn, s = normalized(gramian.cpu().numpy())
    d = np.diag(Mn)
    nz = np.flatnonzero(d > 1e-20 * (d.max() if d.size else 0.0))
    if s == 0.0 or nz.size == 0:
        return None, Mn, nz
    Ms = Mn[np.ix_(nz, nz)]
    if reg_eps:
        Ms = Ms + reg_eps * np.eye(nz.size)
    return psd_factor(Ms), Ms, nz


class _DualCone(PreferenceBalancer):
    """Projections onto the dual cone of the task gradients, with preferences (mean by default)."""

    mean_pref = True

    def __init__(
        self,
        pref: Sequence[float] | None = None,
        reg_eps: float = 0.0,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(pref, mode, chunk_size)
        if reg_eps < 0:
            raise ValueError("reg_eps must be >= 0")
        self.reg_eps = float(reg_eps)


@register_balancer("upgrad")
class UPGrad(_DualCone):
    r"""Unconflicting projection of gradients: project every task gradient onto the dual cone and
    average.

    Quinton & Rey, 2024 (torchjd's ``UPGrad``):

    .. math:: d = \sum_i p_i\, \pi_{G}(g_i), \qquad
              \pi_G(g_i) = G^\top v_i,\; v_i = \arg\min_{v \ge e_i} v^\top G G^\top v

    ``d`` conflicts with no task (``G d ≥ 0``), equals ``p·g`` when no gradients conflict, and is
    ``g`` for one task.

    Parameters
    ----------
    pref:
        Preference weights ``p`` (default ``1/K`` each).
    reg_eps:
        Added to the diagonal of the normalised Gramian (torchjd uses 1e-4 for its QP solver;
        the exact NNLS solver here needs none, and any ``reg_eps > 0`` loosens the guarantee).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        p = self.preferences(tasks)
        A, Ms, nz = _prepared(gramian, self.reg_eps)
        w = p.copy()
        if A is None:
            return torch.from_numpy(w)
        ps = p[nz]
        n = nz.size
        ws = np.zeros(n)
        conflict_free = (Ms >= 0).all(axis=0)  # g_i conflicts with no task: π(g_i) = g_i
        for i in range(n):
            if ps[i] == 0:
                continue
            u = np.zeros(n)
            u[i] = ps[i]
            ws += u if conflict_free[i] else project_dual_cone(A, u)
        w[nz] = ws
        return torch.from_numpy(w)


@register_balancer("dualproj")
class DualProj(_DualCone):
    r"""Project the (preference-weighted) mean gradient onto the dual cone of the task gradients.

    Quinton & Rey, 2024 (torchjd's ``DualProj``):

    .. math:: d = \pi_G(G^\top p) = G^\top v, \qquad v = \arg\min_{v \ge p} v^\top G G^\top v

    ``d`` conflicts with no task and is the closest such direction to the mean ``Gᵀp``.

    Parameters
    ----------
    pref:
        Preference weights ``p`` (default ``1/K`` each).
    reg_eps:
        See :class:`UPGrad`.
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        p = self.preferences(tasks)
        A, Ms, nz = _prepared(gramian, self.reg_eps)
        w = p.copy()
        if A is None or np.all(Ms @ p[nz] >= 0):
            return torch.from_numpy(w)
        w[nz] = project_dual_cone(A, p[nz])
        return torch.from_numpy(w)
