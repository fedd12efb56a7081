"""Nash-MTL (Navon et al., ICML 2022) and FairGrad (Ban & Ji, ICML 2024).

Both find weights ``w > 0`` solving ``(G Gᵀ) w = w^(-1/α)`` element-wise (Nash-MTL is ``α = 1``).
This is the stationarity condition of the strictly convex function
``f(w) = ½ wᵀ(G Gᵀ)w − Σ_k φ(w_k)`` with ``φ' (w) = w^(-1/α)``, so a damped Newton method on K
variables finds it to machine precision in a handful of iterations — no general convex solver
(the official Nash-MTL code runs a sequence of cvxpy problems; FairGrad calls
``scipy.optimize.least_squares``).
"""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import GramianBalancer, Mode, register_balancer
from lepton.balancers._solvers import normalized, power_weights


def fair_weights(Mn: np.ndarray, alpha: float, start: np.ndarray | None = None) -> np.ndarray:
    """Solve ``Mn w = w^(-1/α)`` (``Mn`` normalised); a tiny ridge keeps it finite when the
    gradients are linearly dependent."""
    return power_weights(Mn, 1.0 / alpha, start)


@register_balancer("nash_mtl")
class NashMTL(GramianBalancer):
    r"""Nash-MTL: the Nash bargaining solution between tasks.

    Navon et al., *Multi-Task Learning as a Bargaining Game*, ICML 2022: the update
    ``d = Σ_k α_k g_k`` with ``α > 0`` solving

    .. math:: (G G^\top)\,\alpha = 1/\alpha \quad\text{(element-wise)}

    i.e. ``g_k·d = 1/α_k`` for every task — the bargaining optimality condition (Theorem 3.2). It
    is solved exactly at every step (Newton's method on the convex ``½αᵀGGᵀα − Σ log α_k``,
    warm-started from the previous ``α``). As in the official implementation the update's norm
    is clipped to ``max_norm`` (``None``/0: no clipping) and the weights can be refreshed every
    ``update_weights_every`` steps only.

    Parameters
    ----------
    max_norm:
        Clip the combined update to this norm (official default 1.0).
    update_weights_every:
        Solve for ``α`` every n-th step, reuse it in between (official default 1).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def __init__(
        self,
        max_norm: float | None = 1.0,
        update_weights_every: int = 1,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if max_norm is not None and max_norm < 0:
            raise ValueError("max_norm must be >= 0 or None")
        if update_weights_every < 1:
            raise ValueError("update_weights_every must be >= 1")
        self.max_norm = None if not max_norm else float(max_norm)
        self.update_weights_every = int(update_weights_every)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("alpha", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def solve(self, gramian: torch.Tensor, start: np.ndarray | None = None) -> np.ndarray:
        """``α`` with ``M α = 1/α`` for the Gramian ``M`` (unnormalised)."""
        M = gramian.cpu().numpy()
        Mn, s = normalized(M)
        k = M.shape[0]
        if s == 0.0:
            return np.ones(k)
        a = fair_weights(Mn, 1.0, None if start is None else start * np.sqrt(s))
        return a / np.sqrt(s)  # (M/s) a = 1/a  ⇒  M (a/√s) = 1/(a/√s)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        if self.num_tasks is None:
            self.setup(gramian.shape[0])
        idx = tasks.cpu().numpy()
        step = int(self.steps)
        self.steps.add_(1)
        alpha = self.alpha.cpu().numpy().copy()
        if step % self.update_weights_every == 0:
            alpha[idx] = self.solve(gramian, alpha[idx] if step else None)
            self.alpha.copy_(torch.from_numpy(alpha))
        return torch.from_numpy(alpha[idx])

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        update, w = super().combine(G, gramian, tasks)
        if self.max_norm is not None and w is not None and w.numel():
            norm = float(torch.sqrt(torch.clamp(w.double() @ gramian @ w.double(), min=0)))
            if norm > self.max_norm:
                factor = self.max_norm / norm
                update, w = update * factor, w * factor
        return update, w


@register_balancer("fairgrad")
class FairGrad(GramianBalancer):
    r"""FairGrad: α-fair allocation of the update between tasks.

    Ban & Ji, *Fair Resource Allocation in Multi-Task Learning*, ICML 2024: the update
    ``d = Σ_k w_k g_k`` with ``w > 0`` solving

    .. math:: (G G^\top)\, w = w^{-1/\alpha} \quad\text{(element-wise)}

    — ``g_k·d = w_k^{-1/α}``, the optimality condition of maximising ``Σ_k u_k^{1-α}/(1-α)``
    (``log`` for ``α = 1``, which is Nash-MTL) over the tasks' improvements ``u_k = g_k·d`` with
    ``‖d‖`` bounded. Solved exactly (Newton's method) at every step.

    Parameters
    ----------
    alpha:
        The fairness parameter ``α > 0`` (1: proportional fairness; → ∞: max-min fairness).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    def __init__(
        self, alpha: float = 1.0, mode: Mode = "params", chunk_size: int | None = None
    ) -> None:
        super().__init__(mode, chunk_size)
        if not alpha > 0:
            raise ValueError("alpha must be > 0")
        self.alpha = float(alpha)

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        M = gramian.cpu().numpy()
        Mn, s = normalized(M)
        k = M.shape[0]
        if s == 0.0:
            return torch.ones(k, dtype=torch.float64)
        w = fair_weights(Mn, self.alpha)
        # (M/s) w' = w'^(-1/α)  ⇒  w = s^(-α/(α+1)) w'  solves  M w = w^(-1/α)
        return torch.from_numpy(w * s ** (-self.alpha / (self.alpha + 1.0)))
