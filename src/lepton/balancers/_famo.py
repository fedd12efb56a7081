"""FAMO: Fast Adaptive Multitask Optimization (Liu, Liu, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lepton.balancers._base import LossWeighting, register_balancer


@register_balancer("famo")
class FAMO(LossWeighting):
    r"""FAMO: decrease all losses at an equal *rate*, with O(1) cost per step.

    Liu et al., *FAMO: Fast Adaptive Multitask Optimization*, NeurIPS 2023. With logits ``ξ``,
    ``z = softmax(ξ)`` and ``D_k = L_k − b_k`` (``b`` the losses' lower bounds), the step follows

    .. math:: d = \sum_k \frac{z_k}{c\, D_k} \nabla L_k, \qquad c = \sum_k \frac{z_k}{D_k}

    (the gradient of ``Σ_k (z_k/c) log D_k``; the weights ``z_k/(c D_k)`` sum to 1 and are
    reported). After a step, with the improvement ``δ_k = log D_k(t) − log D_k(t+1)``, the logits
    move by one Adam step (learning rate ``w_lr``, L2 decay ``gamma``, as in the official code) on
    ``∇_ξ zᵀδ = z ⊙ (δ − zᵀδ)``.

    ``D(t+1)`` is the loss of the *next* step (this batch's losses when :meth:`weights` is called
    again), which keeps FAMO at one backward per step; call :meth:`update` with the losses of the
    same batch after the optimizer step to use the paper's exact rule instead.

    Parameters
    ----------
    w_lr:
        Learning rate of the logits (paper: 0.025).
    gamma:
        Weight decay of the logits (official code: 0.01; LibMTL uses 1e-3).
    min_losses:
        The lower bounds ``b_k`` (default 0).
    """

    def __init__(
        self,
        w_lr: float = 0.025,
        gamma: float = 0.01,
        min_losses: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not w_lr > 0 or gamma < 0:
            raise ValueError("w_lr must be > 0 and gamma >= 0")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self.min_losses = None if min_losses is None else [float(b) for b in min_losses]

    def _build(self, num_tasks: int) -> None:
        if self.min_losses is not None and len(self.min_losses) != num_tasks:
            raise ValueError(f"{len(self.min_losses)} min_losses for {num_tasks} tasks")
        b = self.min_losses or [0.0] * num_tasks
        self.register_buffer("bounds", torch.tensor(b, dtype=torch.float64))
        self.register_buffer("logits", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.long))
        self.register_buffer("prev_losses", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("prev_valid", torch.zeros(num_tasks, dtype=torch.bool))

    def _log_d(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.log((losses - self.bounds).clamp(min=0) + 1e-8)

    def update(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Move the logits using the losses reached after the last step (same batch)."""
        cur = losses.detach().to(self.logits).reshape(-1)
        ok = self.prev_valid.clone()
        if valid is not None:
            ok &= valid.to(ok.device).reshape(-1).bool()
        if not bool(ok.any()):
            self.prev_valid.zero_()
            return
        delta = torch.where(ok, self._log_d(self.prev_losses) - self._log_d(cur), 0.0)
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.gamma * self.logits
        # one Adam step (betas 0.9, 0.999, eps 1e-8), as torch.optim.Adam with weight_decay
        self.adam_t.add_(1)
        t = int(self.adam_t)
        self.adam_m.mul_(0.9).add_(grad, alpha=0.1)
        self.adam_v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat = self.adam_m / (1 - 0.9**t)
        v_hat = self.adam_v / (1 - 0.999**t)
        self.logits.sub_(self.w_lr * m_hat / (v_hat.sqrt() + 1e-8))
        self.prev_valid.zero_()

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        cur = losses.detach().to(self.logits).reshape(-1)
        m = (
            torch.ones_like(cur, dtype=torch.bool)
            if valid is None
            else valid.to(cur.device).reshape(-1).bool()
        )
        if bool(self.prev_valid.any()):
            self.update(cur, m)
        z = torch.softmax(self.logits, dim=0)
        d = (cur - self.bounds).clamp(min=0) + 1e-8
        inv = torch.where(m, z / d, 0.0)
        c = inv.sum()
        w = inv / c if c > 0 else inv
        self.prev_losses.copy_(cur)
        self.prev_valid.copy_(m)
        return w.to(losses)
