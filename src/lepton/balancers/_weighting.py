"""Loss weighting: equal weights, static weights, uncertainty weighting (Kendall et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lepton.balancers._base import LossWeighting, register_balancer


@register_balancer("ew")
class EqualWeighting(LossWeighting):
    """Equal weighting: ``Σ_k L_k`` (every weight is 1).

    Examples
    --------
    >>> EqualWeighting().weights(torch.tensor([0.5, 2.0]))
    tensor([1., 1.])
    """

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones_like(losses)


@register_balancer("static")
class StaticWeighting(LossWeighting):
    """Fixed weights ``Σ_k w_k L_k``.

    Parameters
    ----------
    weights:
        One non-negative weight per task. ``None`` uses each task's declared ``weight``
        (``tasks.<name>.weight`` in config, default 1).

    Examples
    --------
    >>> StaticWeighting(weights=[1.0, 0.5]).weights(torch.tensor([1.0, 1.0]))
    tensor([1.0000, 0.5000])
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if weights is not None:
            weights = [float(w) for w in weights]
            if any(not (w >= 0 and w < float("inf")) for w in weights):
                raise ValueError("static weights must be finite and >= 0")
        self.weights_ = None if weights is None else torch.tensor(weights)

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weights_ if self.weights_ is not None else self.task_weights
        if w is None:
            return torch.ones_like(losses)
        if w.shape[0] != losses.shape[0]:
            raise ValueError(f"{w.shape[0]} static weights for {losses.shape[0]} losses")
        return w.to(losses)

    def extra_repr(self) -> str:
        w = self.weights_ if self.weights_ is not None else self.task_weights
        return f"weights={None if w is None else w.tolist()}"


@register_balancer("uw")
class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Learns ``s_k = log σ_k²`` per task and minimises ``Σ_k exp(-s_k)·L_k + s_k`` — the paper's
    regression form scaled by 2, so that the weights ``exp(-s_k)`` start at ``exp(-init)``
    (1 by default) and each ``s_k`` settles at ``log L_k``. Add ``balancer.parameters()`` to the
    optimizer. A task with no label in a batch (``valid`` false) leaves its ``s_k`` unchanged.

    Parameters
    ----------
    init:
        Initial value of every ``s_k`` (log-variance).
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.init = float(init)
        self.log_vars: nn.Parameter | None = None

    def _build(self, num_tasks: int) -> None:
        self.log_vars = nn.Parameter(torch.full((num_tasks,), self.init))

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        assert self.log_vars is not None
        return torch.exp(-self.log_vars.detach()).to(losses)

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        assert self.log_vars is not None
        s = self.log_vars.to(losses)
        if valid is not None:
            s = torch.where(valid.to(losses.device), s, s.detach())
            reg = torch.where(valid.to(losses.device), s, torch.zeros_like(s))
        else:
            reg = s
        self.last_weights = torch.exp(-s).detach()
        return (torch.exp(-s) * losses + reg).sum()

    def extra_repr(self) -> str:
        return f"init={self.init}"
