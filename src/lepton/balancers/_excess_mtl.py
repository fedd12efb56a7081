"""ExcessMTL: robust multi-task learning with excess risks (He, Zhou, Zhao & Jin, ICML 2024)."""

from __future__ import annotations

import torch

from lepton.balancers._base import GradientBalancer, Mode, register_balancer


@register_balancer("excess_mtl")
class ExcessMTL(GradientBalancer):
    r"""ExcessMTL: up-weight the tasks with the largest estimated *excess* risk.

    He et al., *Robust Multi-Task Learning with Excess Risks*, ICML 2024, following the authors'
    code: each task's excess risk is estimated by a diagonal second-order approximation,
    ``e_k = g_kᵀ diag(Σ_t g_{k,t}²)^{-1/2} g_k`` (AdaGrad-style accumulated squared gradients),
    normalised by its value at the first step; the weights follow an exponentiated-gradient step

    .. math:: w_k \leftarrow w_k \exp(\eta\, e_k / e_k(0)), \qquad
              w \leftarrow K\, w / \textstyle\sum w

    and the step uses ``Σ_k w_k L_k``. On the representation (``mode="features"``) the gradients are
    summed over the batch first (one unit per feature), as in LibMTL. Task-specific parameters get
    the weights of this step too.

    Parameters
    ----------
    robust_step_size:
        ``η`` (authors' default 0.01).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer`.
    """

    kind = "loss"
    lazy_buffers = ("grad_sq_sum",)

    def __init__(
        self, robust_step_size: float = 0.01, mode: Mode = "params", chunk_size: int | None = None
    ) -> None:
        super().__init__(mode, chunk_size)
        if robust_step_size < 0:
            raise ValueError("robust_step_size must be >= 0")
        self.robust_step_size = float(robust_step_size)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("loss_weights", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("initial_risk", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("grad_sq_sum", torch.zeros(num_tasks, 0))

    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss_weights.to(losses) * losses

    def _update(self, g: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Raw task gradients ``g`` (rows of ``tasks``) → new weights of those tasks."""
        if self.num_tasks is None:
            self.setup(g.shape[0])
        k_all = int(self.num_tasks or g.shape[0])
        if self.grad_sq_sum.shape != (k_all, g.shape[1]) or self.grad_sq_sum.dtype != g.dtype:
            self.grad_sq_sum = g.new_zeros(k_all, g.shape[1])
        idx = tasks.to(self.grad_sq_sum.device)
        self.grad_sq_sum[idx] += g * g
        h = torch.sqrt(self.grad_sq_sum[idx] + 1e-7)
        risk = ((g * g) / h).sum(1).double().cpu()
        icpu = tasks.cpu()
        init_all = self.initial_risk.cpu()
        init = init_all[icpu]
        fresh = init == 0
        init_all[icpu] = torch.where(fresh, risk, init)
        ratio = torch.where(fresh, 0.0, risk / init.clamp(min=1e-300))
        w = self.loss_weights.cpu()
        w[icpu] = w[icpu] * torch.exp(self.robust_step_size * ratio)
        w = w * (len(w) / w.sum())
        self.initial_risk.copy_(init_all)
        self.loss_weights.copy_(w)
        return w[icpu]

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if G.shape[0] == 0:
            return G.new_zeros(G.shape[1]), G.new_zeros(0)
        used = self.loss_weights.cpu()[tasks.cpu()].to(G)
        raw = G / used[:, None]
        new = self._update(raw, tasks).to(G)
        self._set_head_scale(tasks, new / used)
        return new @ raw, new

    def combine_features(
        self,
        G: torch.Tensor,
        gramian: torch.Tensor,
        tasks: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if G.shape[0] == 0:
            return torch.zeros_like(features), G.new_zeros(0)
        used = self.loss_weights.cpu()[tasks.cpu()].to(G)
        raw = G / used.view(-1, *([1] * (G.dim() - 1)))
        summed = raw.sum(1) if raw.dim() > 2 else raw
        new = self._update(summed.reshape(summed.shape[0], -1), tasks).to(G)
        self._set_head_scale(tasks, new / used)
        return torch.einsum("k,k...->...", new, raw), new

    def _set_head_scale(self, tasks: torch.Tensor, ratio: torch.Tensor) -> None:
        k_all = int(self.num_tasks or ratio.shape[0])
        scale = torch.ones(k_all, dtype=ratio.dtype)
        scale[tasks.cpu()] = ratio.detach().cpu()
        self.head_scale = scale
