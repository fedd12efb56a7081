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

from lepton.balancers._base import GramianBalancer, Mode, register_balancer
from lepton.balancers._solvers import normalized, project_dual_cone, psd_factor


def _prepared(gramian: torch.Tensor, reg_eps: float) -> tuple[np.ndarray | None, np.ndarray]:
    Mn, s = normalized(gramian.cpu().numpy())
    if s == 0.0:
        return None, Mn
    if reg_eps:
        Mn = Mn + reg_eps * np.eye(Mn.shape[0])
    return psd_factor(Mn), Mn


def _pref(pref: Sequence[float] | None, tasks: torch.Tensor) -> np.ndarray:
    k = tasks.numel()
    if pref is None:
        return np.full(k, 1.0 / k)
    return np.asarray(pref, dtype=np.float64)[tasks.cpu().numpy()]


@register_balancer("upgrad")
class UPGrad(GramianBalancer):
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

    def __init__(
        self,
        pref: Sequence[float] | None = None,
        reg_eps: float = 0.0,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if reg_eps < 0:
            raise ValueError("reg_eps must be >= 0")
        self.pref = None if pref is None else [float(p) for p in pref]
        self.reg_eps = float(reg_eps)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        p = _pref(self.pref, tasks)
        A, Mn = _prepared(gramian, self.reg_eps)
        if A is None:
            return torch.from_numpy(p)
        k = len(p)
        w = np.zeros(k)
        conflict_free = Mn >= 0  # column i all ≥ 0: g_i already in the dual cone
        for i in range(k):
            if p[i] == 0:
                continue
            u = np.zeros(k)
            u[i] = p[i]
            w += u if conflict_free[:, i].all() else project_dual_cone(A, u)
        return torch.from_numpy(w)


@register_balancer("dualproj")
class DualProj(GramianBalancer):
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

    def __init__(
        self,
        pref: Sequence[float] | None = None,
        reg_eps: float = 0.0,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if reg_eps < 0:
            raise ValueError("reg_eps must be >= 0")
        self.pref = None if pref is None else [float(p) for p in pref]
        self.reg_eps = float(reg_eps)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        p = _pref(self.pref, tasks)
        A, Mn = _prepared(gramian, self.reg_eps)
        if A is None or np.all(Mn @ p >= 0):
            return torch.from_numpy(p)
        return torch.from_numpy(project_dual_cone(A, p))
