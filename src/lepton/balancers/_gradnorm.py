"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

from __future__ import annotations

import torch
from torch import nn

from lepton.balancers._base import GradientBalancer, Mode, register_balancer


@register_balancer("gradnorm")
class GradNorm(GradientBalancer):
    r"""GradNorm: learn loss weights so that every task's gradient norm tracks its training rate.

    Chen et al., *GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
    Networks*, ICML 2018. The step uses ``Σ_k w_k L_k``; with ``G_k = ‖∇_W w_k L_k‖``,
    ``Ḡ = mean_k G_k``, the inverse training rates ``r_k = L̃_k / mean(L̃)`` (``L̃_k = L_k/L_k(0)``)
    and the targets ``Ḡ·r_k^α`` held constant, the weights follow the gradient of

    .. math:: L_{grad} = \sum_k \big| G_k - \bar G\, r_k^{\alpha} \big|, \qquad
              \frac{\partial L_{grad}}{\partial w_k} = \mathrm{sign}(G_k - \bar G r_k^\alpha)\,
              \|\nabla_W L_k\|

    which is written to ``w.grad`` — add ``balancer.parameters()`` to the optimizer — and the
    weights are renormalised to sum to K before each step. ``W``: the shared representation
    (``mode="features"``, cheap: no extra backward) or all shared parameters (``"params"``; the
    paper uses the last shared layer's weights).

    Parameters
    ----------
    alpha:
        Strength of the restoring force towards equal training rates (LibMTL default 1.5).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer` (``"auto"``: the representation when given).
    """

    kind = "loss"

    def __init__(
        self, alpha: float = 1.5, mode: Mode = "auto", chunk_size: int | None = None
    ) -> None:
        super().__init__(mode, chunk_size)
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        self.alpha = float(alpha)
        self.loss_weights: nn.Parameter | None = None

    def _build(self, num_tasks: int) -> None:
        self.loss_weights = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.zeros(num_tasks, dtype=torch.float64))
        self._losses: torch.Tensor | None = None

    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        assert self.loss_weights is not None
        with torch.no_grad():  # renormalise after the optimizer's last step: Σ w = K
            w = self.loss_weights.clamp(min=1e-8)
            self.loss_weights.copy_(w * (len(w) / w.sum()))
        d = losses.detach().double().cpu()
        v = (
            torch.ones_like(d, dtype=torch.bool)
            if valid is None
            else valid.reshape(-1).bool().cpu()
        )
        init = self.initial_losses.cpu()
        first = (init == 0) & v & (d > 0)
        init[first] = d[first]
        self.initial_losses.copy_(init)
        self._losses = d
        return self.loss_weights.detach().to(losses) * losses

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert self.loss_weights is not None
        w = self.loss_weights.detach()
        if G.shape[0] > 0 and self._losses is not None:  # (aggregate() alone: no losses, no update)
            gk = gramian.diagonal().clamp(min=0).sqrt().cpu()  # ‖∇ w_k L_k‖ of the tasks in `tasks`
            idx = tasks.cpu()
            init = self.initial_losses.cpu()[idx]
            rel = torch.where(init > 0, self._losses[idx] / init.clamp(min=1e-300), 1.0)
            r = rel / rel.mean().clamp(min=1e-300)
            target = gk.mean() * r**self.alpha
            raw_norm = gk / w.cpu()[idx].double().clamp(min=1e-8)
            grad = torch.zeros(w.shape, dtype=w.dtype)
            grad[idx] = (torch.sign(gk - target) * raw_norm).to(grad)
            grad = grad.to(w.device)
            if self.loss_weights.grad is None:
                self.loss_weights.grad = grad
            else:
                self.loss_weights.grad = self.loss_weights.grad + grad
        self._losses = None
        return G.sum(0), w.to(G)[tasks]
