"""Gradient surgery: PCGrad (Yu et al., NeurIPS 2020) and GradVac (Wang et al., ICLR 2021).

Both modify each task's gradient by adding multiples of the other tasks' gradients, visiting the
others in a random order, and sum the results. Every modified gradient stays a combination
``g_i' = Σ_l C_il g_l`` of the original rows, so the whole procedure runs on the K×K Gramian
``M``: ``g_i'·g_j = (C M)_ij`` and ``‖g_i'‖² = (C M Cᵀ)_ii``. The update ``Σ_i g_i'`` is
``wᵀG`` with ``w = 1ᵀC`` — no K×P work beyond the Gramian.
"""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import GramianBalancer, Mode, register_balancer
from lepton.balancers._solvers import normalized


def _orders(k: int) -> np.ndarray:
    """For each task i, the other tasks in a random order (torch's global generator)."""
    r = torch.rand(k, k, dtype=torch.float64).numpy()
    np.fill_diagonal(r, np.inf)
    return np.argsort(r, axis=1)[:, : k - 1]


@register_balancer("pcgrad")
class PCGrad(GramianBalancer):
    r"""Projecting conflicting gradients.

    Yu et al., *Gradient Surgery for Multi-Task Learning*, NeurIPS 2020, Algorithm 1: for each
    task ``i``, for each other task ``j`` in random order,

    .. math:: \text{if } g_i'\cdot g_j < 0:\quad g_i' \leftarrow g_i' -
              \frac{g_i'\cdot g_j}{\|g_j\|^2} g_j

    and the update is ``Σ_i g_i'``. After each projection ``g_i'`` no longer conflicts with
    ``g_j``; with two tasks the update conflicts with neither task. The random orders use torch's
    global generator (reproducible from the seed).

    Parameters
    ----------
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.

    Examples
    --------
    >>> PCGrad().aggregate(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.5000, 1.5000])
    """

    def __init__(self, mode: Mode = "params", chunk_size: int | None = None) -> None:
        super().__init__(mode, chunk_size)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        Mn, s = normalized(gramian.cpu().numpy())
        C = np.eye(k)
        if s == 0.0 or k == 1:
            return torch.from_numpy(C.sum(0))
        diag = np.diag(Mn)
        rows = np.arange(k)
        for j in _orders(k).T:  # one random "round": task i visits j[i]
            dots = np.einsum("il,il->i", C, Mn[:, j].T)
            hit = (dots < 0) & (diag[j] > 0)
            C[rows[hit], j[hit]] -= dots[hit] / diag[j[hit]]
        return torch.from_numpy(C.sum(0))


@register_balancer("gradvac")
class GradVac(GramianBalancer):
    r"""Gradient Vaccine: align each pair of gradients to an adaptive similarity goal.

    Wang, Tsvetkov, Firat & Cao, *Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models*, ICLR 2021, Algorithm 1: for each task ``i`` and
    each other task ``j`` (random order), with ``φ_ij = cos(g_i', g_j)`` and the goal ``φ̂_ij``
    (an exponential moving average of past similarities, starting at 0),

    .. math:: \text{if } \phi_{ij} < \hat\phi_{ij}:\quad g_i' \leftarrow g_i' +
              \frac{\|g_i'\|\big(\hat\phi_{ij}\sqrt{1-\phi_{ij}^2}-\phi_{ij}\sqrt{1-\hat\phi_{ij}^2}\big)}
                   {\|g_j\|\sqrt{1-\hat\phi_{ij}^2}}\, g_j,
              \qquad \hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij}

    and the update is ``Σ_i g_i'``. The correction makes ``cos(g_i', g_j) = φ̂_ij`` exactly.
    Applied to the whole shared parameter vector (the paper also studies per-layer variants).

    Parameters
    ----------
    beta:
        EMA rate of the similarity goals (LibMTL and torchjd default 0.5).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def __init__(
        self, beta: float = 0.5, mode: Mode = "params", chunk_size: int | None = None
    ) -> None:
        super().__init__(mode, chunk_size)
        if not 0.0 <= beta <= 1.0:
            raise ValueError("beta must be in [0, 1]")
        self.beta = float(beta)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("goals", torch.zeros(num_tasks, num_tasks, dtype=torch.float64))

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        k = gramian.shape[0]
        Mn, s = normalized(gramian.cpu().numpy())
        C = np.eye(k)
        if s == 0.0 or k == 1:
            return torch.from_numpy(C.sum(0))
        idx = tasks.cpu().numpy()
        goals = self.goals.cpu().numpy()[np.ix_(idx, idx)].copy()
        norms = np.sqrt(np.clip(np.diag(Mn), 0, None))
        rows = np.arange(k)
        for j in _orders(k).T:
            CM = np.einsum("il,il->i", C, Mn[:, j].T)  # g_i'·g_j
            ni = np.sqrt(np.clip(np.einsum("il,lm,im->i", C, Mn, C), 0, None))  # ‖g_i'‖
            denom = ni * norms[j]
            phi = np.where(denom > 0, CM / np.where(denom > 0, denom, 1.0), 0.0)
            phi = np.clip(phi, -1.0, 1.0)
            goal = goals[rows, j]
            hit = (phi < goal) & (denom > 0) & (goal < 1.0)
            if hit.any():
                sq_goal = np.sqrt(1.0 - goal[hit] ** 2)
                coef = ni[hit] * (goal[hit] * np.sqrt(1.0 - phi[hit] ** 2) - phi[hit] * sq_goal)
                coef /= norms[j[hit]] * sq_goal
                C[rows[hit], j[hit]] += coef
            ok = denom > 0
            goals[rows[ok], j[ok]] = (1 - self.beta) * goal[ok] + self.beta * phi[ok]
        full = self.goals.cpu().numpy()
        full[np.ix_(idx, idx)] = np.where(np.eye(k, dtype=bool), full[np.ix_(idx, idx)], goals)
        self.goals.copy_(torch.from_numpy(full))
        return torch.from_numpy(C.sum(0))
