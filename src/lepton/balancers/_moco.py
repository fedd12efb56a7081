"""MoCo: correcting the bias of stochastic multi-gradient methods (Fernando et al., ICLR 2023)."""

from __future__ import annotations

import numpy as np
import torch

from lepton.balancers._base import GradientBalancer, Mode, register_balancer
from lepton.balancers._solvers import project_simplex


@register_balancer("moco")
class MoCo(GradientBalancer):
    r"""MoCo: track each task's gradient with a moving average and run a projected-gradient step
    on the simplex weights.

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, *Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach*, ICLR 2023, Algorithm 1: with the
    stochastic task gradients ``h_k`` (here normalised to ``L_k·h_k/‖h_k‖``, as in the authors'
    code), step sizes ``β_t = β/t^{σ_β}``, ``γ_t = γ/t^{σ_γ}``,

    .. math:: y_k \leftarrow y_k - \beta_t (y_k - h_k), \qquad
              \lambda \leftarrow
              \Pi_{\Delta}\big(\lambda - \gamma_t (Y Y^\top + \rho I)\lambda\big),
              \qquad d = Y^\top\lambda

    (the authors' code replaces the projection ``Π_Δ`` by a softmax; this follows the paper).
    The tracked gradients ``Y`` (K×P) are state across steps, so MoCo works on parameters only.
    ``λ`` is reported as the task weights.

    Parameters
    ----------
    beta, beta_sigma:
        Tracking rate of ``y`` and its decay exponent (authors' code: 0.5, 0.5).
    gamma, gamma_sigma:
        Step size of ``λ`` and its decay exponent (authors' code: 0.1, 0.5).
    rho:
        ℓ2 regularisation of the ``λ`` sub-problem (0).
    normalize:
        Rescale each task gradient to norm ``L_k`` before tracking (authors' code: yes).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer` (``"params"`` only).
    """

    modes = ("params",)
    lazy_buffers = ("tracked",)

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        normalize: bool = True,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        if not (0 < beta <= 1) or gamma <= 0 or rho < 0:
            raise ValueError("need 0 < beta <= 1, gamma > 0, rho >= 0")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma = float(gamma), float(gamma_sigma)
        self.rho = float(rho)
        self.normalize = bool(normalize)
        self._losses: torch.Tensor | None = None

    def _build(self, num_tasks: int) -> None:
        self.register_buffer(
            "lambd", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        )
        self.register_buffer("tracked", torch.zeros(num_tasks, 0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        self._losses = losses.detach()
        return losses

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_tasks is None:
            self.setup(G.shape[0])
        k_all = self.lambd.shape[0]
        if self.tracked.shape != (k_all, G.shape[1]) or self.tracked.dtype != G.dtype:
            self.tracked = G.new_zeros(k_all, G.shape[1])
        self.steps.add_(1)
        t = int(self.steps)
        h = G
        if self.normalize:
            losses = self._losses if self._losses is not None else torch.ones(k_all)
            norms = G.norm(dim=1, keepdim=True)
            unit = torch.where(norms > 0, G / norms.clamp(min=1e-300), 0.0)
            h = unit * losses.to(G)[tasks].reshape(-1, 1)
        beta_t = self.beta / t**self.beta_sigma
        idx = tasks.to(self.tracked.device)
        self.tracked[idx] -= beta_t * (self.tracked[idx] - h)
        Y = self.tracked
        YY = (Y @ Y.T).double().cpu().numpy() + self.rho * np.eye(k_all)
        gamma_t = self.gamma / t**self.gamma_sigma
        prev = self.lambd.cpu().numpy()
        lam = project_simplex(prev - gamma_t * (YY @ prev))
        self.lambd.copy_(torch.from_numpy(lam))
        self._losses = None
        w = self.lambd.to(G)
        return w @ Y, w[tasks]
