"""Random Loss Weighting (Lin, Ye, Xu, Shi, Zhang & Kwok, TMLR 2022)."""

from __future__ import annotations

from typing import Literal

import torch

from lepton.balancers._base import LossWeighting, register_balancer


@register_balancer("rlw")
class RandomLossWeighting(LossWeighting):
    r"""Random loss weighting: fresh random weights at every step.

    Lin et al., *Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning*, TMLR 2022: :math:`\lambda \sim p(\lambda)`, :math:`w = \mathrm{softmax}(\lambda)`
    (weights positive, summing to 1), loss :math:`\sum_k w_k L_k`. The paper's default (and best)
    distribution is the standard normal. Draws use torch's global generator, so runs are
    reproducible from the seed and resume exactly.

    Parameters
    ----------
    distribution:
        ``"normal"`` (``λ ~ N(0, I)``), ``"uniform"`` (``λ ~ U(0, 1)``) — both through a softmax —
        or ``"dirichlet"`` (``w ~ Dir(1, …, 1)`` directly).
    """

    def __init__(self, distribution: Literal["normal", "uniform", "dirichlet"] = "normal") -> None:
        super().__init__()
        if distribution not in ("normal", "uniform", "dirichlet"):
            raise ValueError("distribution must be 'normal', 'uniform' or 'dirichlet'")
        self.distribution = distribution

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        k = losses.shape[0]
        if self.distribution == "normal":
            w = torch.softmax(torch.randn(k), dim=0)
        elif self.distribution == "uniform":
            w = torch.softmax(torch.rand(k), dim=0)
        else:
            e = -torch.log(torch.rand(k).clamp(min=1e-12))  # Exp(1) draws → Dirichlet(1)
            w = e / e.sum()
        return w.to(losses)
