"""DB-MTL: dual-balancing multi-task learning (Lin, Ye, Xu, Shi, Zhang & Kwok, 2023)."""

from __future__ import annotations

import torch

from lepton.balancers._base import GradientBalancer, Mode, register_balancer


@register_balancer("db_mtl")
class DBMTL(GradientBalancer):
    r"""DB-MTL: balance loss scales with a log transform and gradient magnitudes with the largest
    norm.

    Lin et al., *Dual-Balancing Multi-Task Learning*, arXiv:2308.12029 (2023). Each task's
    gradient ``g_k = ∇ log L_k`` (loss-scale balancing) is tracked with an exponential moving
    average ``ĝ_k ← g_k + β_t (ĝ_k − g_k)``, ``β_t = β / t^σ``, and the update gives every task the
    largest tracked norm:

    .. math:: d = \sum_k \frac{\max_j \|\hat g_j\|}{\|\hat g_k\|}\, \hat g_k

    Task-specific parameters get ``∇ log L_k``. The tracked gradients are K×P state, so DB-MTL
    works on parameters only; its cost is that of the per-task gradients (it is a loss weighting
    in spirit, but its update needs them). The scales ``max_j‖ĝ_j‖/‖ĝ_k‖`` are reported as
    weights.

    Parameters
    ----------
    beta:
        EMA factor ``β`` (LibMTL default 0.9).
    beta_sigma:
        Decay exponent ``σ`` of ``β_t`` (default 0: constant).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer` (``"params"`` only).
    """

    kind = "loss"
    modes = ("params",)
    lazy_buffers = ("tracked",)

    def __init__(
        self,
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if not 0 <= beta < 1:
            raise ValueError("beta must be in [0, 1)")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("tracked", torch.zeros(num_tasks, 0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log(losses + 1e-8)

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_tasks is None:
            self.setup(G.shape[0])
        k_all = int(self.num_tasks or G.shape[0])
        if self.tracked.shape != (k_all, G.shape[1]) or self.tracked.dtype != G.dtype:
            self.tracked = G.new_zeros(k_all, G.shape[1])
        self.steps.add_(1)
        if G.shape[0] == 0:
            return G.new_zeros(G.shape[1]), G.new_zeros(0)
        beta_t = self.beta / int(self.steps) ** self.beta_sigma
        idx = tasks.to(self.tracked.device)
        self.tracked[idx] = G + beta_t * (self.tracked[idx] - G)
        Y = self.tracked[idx]
        norms = Y.norm(dim=1)
        alpha = torch.where(norms > 0, norms.max() / norms.clamp(min=1e-300), 0.0)
        return alpha @ Y, alpha
