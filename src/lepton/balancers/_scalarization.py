"""Scalarisations of the losses: geometric mean (GLS), log sum (SI), smooth Tchebycheff (STCH)."""

from __future__ import annotations

import torch

from lepton.balancers._base import LossWeighting, register_balancer

_TINY = 1e-20


def _valid_mask(losses: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return torch.ones_like(losses, dtype=torch.bool)
    return valid.to(losses.device).reshape(-1).bool()


@register_balancer("gls")
class GeometricLossStrategy(LossWeighting):
    r"""Geometric loss strategy: minimise the geometric mean of the losses.

    Chennupati et al., *MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
    for Multi-Task Learning*, CVPR Workshops 2019:

    .. math:: L = \Big(\prod_k L_k\Big)^{1/K}, \qquad
              \nabla L = \sum_k \frac{L}{K L_k} \nabla L_k

    so the effective weights (reported) are ``L / (K·L_k)``. Tasks without labels in the batch
    are left out of the product (their loss is an exact zero).

    Examples
    --------
    >>> GeometricLossStrategy().weights(torch.tensor([1.0, 4.0]))
    tensor([1.0000, 0.2500])
    """

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        n = int(m.sum())
        if n == 0:
            return torch.zeros_like(losses)
        logl = torch.log(losses.detach().clamp(min=_TINY))
        gls = torch.exp(torch.where(m, logl, 0.0).sum() / n)
        return torch.where(m, gls / (n * losses.detach().clamp(min=_TINY)), 0.0)

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        self.last_weights = self.weights(losses, valid).detach()
        n = int(m.sum())
        if n == 0:
            return (losses * 0.0).sum()
        logl = torch.log(torch.where(m, losses, torch.ones_like(losses)).clamp(min=_TINY))
        return torch.exp(logl.sum() / n)


@register_balancer("si")
class ScaleInvariantLoss(LossWeighting):
    r"""Scale-invariant scalarisation: minimise ``Σ_k log L_k``.

    The *SI* baseline of Navon et al., *Multi-Task Learning as a Bargaining Game*, ICML 2022:
    invariant to any rescaling of each loss; its gradient is ``Σ_k ∇L_k / L_k``, i.e. weights
    ``1/L_k`` (reported). Tasks without labels in the batch are left out.

    Examples
    --------
    >>> ScaleInvariantLoss().weights(torch.tensor([0.5, 4.0]))
    tensor([2.0000, 0.2500])
    """

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        return torch.where(m, 1.0 / losses.detach().clamp(min=_TINY), 0.0)

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        self.last_weights = self.weights(losses, valid).detach()
        safe = torch.where(m, losses, torch.ones_like(losses)).clamp(min=_TINY)
        return torch.log(safe).sum()


@register_balancer("stch")
class SmoothTchebycheff(LossWeighting):
    r"""Smooth Tchebycheff scalarisation (Lin, Zhang, Yang, Zhang & Zhang, ICML 2024).

    *Smooth Tchebycheff Scalarization for Multi-Objective Optimization*, with the multi-task
    recipe of the authors' code: for the first ``warmup_epochs`` epochs the objective is
    ``Σ_k log L_k`` while the mean losses of the last warm-up epoch are recorded as the nadir
    vector ``n``; afterwards

    .. math:: L = K\,\mu \log \sum_k \exp\Big(\frac{\log(L_k / n_k)}{\mu}\Big)

    a smooth maximum of the normalised log-losses (``μ → 0`` gives the Tchebycheff max). Its
    gradient weights ``K·softmax_k(log(L/n)/μ)/L_k`` are reported. Epochs are counted by
    :meth:`end_epoch` (the trainer calls it); ``warmup_epochs=0`` uses ``n = 1``.

    Parameters
    ----------
    mu:
        Smoothing parameter ``μ > 0``.
    warmup_epochs:
        Epochs of log-loss training before the nadir vector is fixed.
    """

    def __init__(self, mu: float = 1.0, warmup_epochs: int = 4) -> None:
        super().__init__()
        if not mu > 0:
            raise ValueError("mu must be > 0")
        if warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        self.mu = float(mu)
        self.warmup_epochs = int(warmup_epochs)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("nadir", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("loss_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))

    @property
    def warming_up(self) -> bool:
        return int(self.epochs) < self.warmup_epochs

    def _normalised_log(self, losses: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        safe = torch.where(m, losses, torch.ones_like(losses)).clamp(min=_TINY)
        return torch.log(safe / self.nadir.to(losses))

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        d = losses.detach()
        if self.warming_up:
            if int(self.epochs) == self.warmup_epochs - 1:
                v = m.to(self.loss_sum)
                self.loss_sum += d.to(self.loss_sum) * v
                self.loss_count += v
            return torch.where(m, 1.0 / d.clamp(min=_TINY), 0.0)
        z = self._normalised_log(d, m) / self.mu
        z = torch.where(m, z, torch.full_like(z, -torch.inf))
        n = int(m.sum())
        soft = torch.softmax(z, dim=0) if n else torch.zeros_like(z)
        return torch.where(m, n * soft / d.clamp(min=_TINY), 0.0)

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        m = _valid_mask(losses, valid)
        self.last_weights = self.weights(losses, valid).detach()
        if self.warming_up:
            safe = torch.where(m, losses, torch.ones_like(losses)).clamp(min=_TINY)
            return torch.log(safe).sum()
        n = int(m.sum())
        if n == 0:
            return (losses * 0.0).sum()
        z = self._normalised_log(losses, m) / self.mu
        z = torch.where(m, z, torch.full_like(z, -torch.inf))
        return n * self.mu * torch.logsumexp(z, dim=0)

    def end_epoch(self) -> None:
        self.epochs.add_(1)
        if int(self.epochs) == self.warmup_epochs:
            mean = self.loss_sum / self.loss_count.clamp(min=1)
            self.nadir.copy_(torch.where(self.loss_count > 0, mean, torch.ones_like(mean)))
