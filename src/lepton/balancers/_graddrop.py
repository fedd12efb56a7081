"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

import torch

from lepton.balancers._base import GradientBalancer, Mode, register_balancer


@register_balancer("graddrop")
class GradDrop(GradientBalancer):
    r"""Gradient sign dropout: keep, per coordinate, only the gradients of one sign.

    Chen et al., *Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout*,
    NeurIPS 2020, Algorithm 1. With per-task gradients ``∇_i`` at the layer where tasks split,

    .. math:: P = \tfrac12\Big(1 + \frac{\sum_i \nabla_i}{\sum_i |\nabla_i|}\Big),\quad
              U \sim \mathcal U(0,1),\quad
              M_i = \mathbb 1[P > U]\,\mathbb 1[\nabla_i > 0]
                  + \mathbb 1[P < U]\,\mathbb 1[\nabla_i < 0]

    and the update is ``Σ_i (ℓ + (1−ℓ) M_i) ∇_i`` (``ℓ`` the leak). On the representation
    (``mode="features"``, the paper's placement) the purity ``P`` uses ``sign(z) ⊙ ∇_i`` summed
    over the batch, as in the paper; on parameters each coordinate is its own unit. The update is
    not a combination of the task gradients, so no task weights are reported. Draws use torch's
    global generator.

    Parameters
    ----------
    leak:
        ``ℓ ∈ [0, 1]``: fraction of every gradient kept regardless of sign (paper: 0).
    mode, chunk_size:
        See :class:`lepton.balancers.GradientBalancer` (``"auto"``: the representation when given).
    """

    def __init__(
        self, leak: float = 0.0, mode: Mode = "auto", chunk_size: int | None = None
    ) -> None:
        super().__init__(mode, chunk_size)
        if not 0.0 <= leak <= 1.0:
            raise ValueError("leak must be in [0, 1]")
        self.leak = float(leak)

    def _drop(self, G: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
        # G: (k, *shape); signed: (k, *unit_shape) broadcastable to G after unsqueezing
        total = signed.abs().sum(0)
        purity = 0.5 * (1.0 + signed.sum(0) / total.clamp(min=torch.finfo(G.dtype).tiny))
        u = torch.rand(purity.shape, dtype=purity.dtype).to(purity.device)
        keep = ((purity > u) & (signed > 0)) | ((purity < u) & (signed < 0))
        while keep.dim() < G.dim():
            keep = keep.unsqueeze(1)
        mask = self.leak + (1.0 - self.leak) * keep.to(G.dtype)
        return (G * mask).sum(0)

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if G.shape[0] == 0:
            return G.new_zeros(G.shape[1]), None
        return self._drop(G, G), None

    def combine_features(
        self,
        G: torch.Tensor,
        gramian: torch.Tensor,
        tasks: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if G.shape[0] == 0:
            return torch.zeros_like(features), None
        signed = G * features.detach().sign()
        if G.dim() > 2:
            signed = signed.sum(1)  # over the batch: one unit per feature
        return self._drop(G, signed), None
