"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

import torch

from lepton.balancers._base import LossWeighting, register_balancer


@register_balancer("dwa")
class DynamicWeightAverage(LossWeighting):
    r"""Dynamic Weight Average: weight each task by how slowly its loss has been falling.

    Liu, Johns & Davison, *End-to-End Multi-Task Learning with Attention*, CVPR 2019, eq. (7):

    .. math:: w_k(t) = \frac{K \exp(r_k(t-1)/T)}{\sum_i \exp(r_i(t-1)/T)},\qquad
              r_k(t-1) = \frac{\bar L_k(t-1)}{\bar L_k(t-2)}

    where :math:`\bar L_k(t)` is task k's mean training loss over epoch t and ``w = 1`` for the
    first two epochs. Epoch boundaries come from :meth:`end_epoch` (the trainer calls it; a custom
    loop must too — without it the weights stay 1). Weights are positive and sum to K.

    Parameters
    ----------
    temperature:
        ``T``: larger values make the weights more uniform (paper: 2).

    Examples
    --------
    >>> dwa = DynamicWeightAverage().setup(2)
    >>> for epoch_losses in ([1.0, 1.0], [0.5, 0.9]):
    ...     _ = dwa.weights(torch.tensor(epoch_losses)); dwa.end_epoch()
    >>> dwa.weights(torch.tensor([0.4, 0.8]))
    tensor([0.9000, 1.1000])
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)

    def _build(self, num_tasks: int) -> None:
        self.register_buffer("loss_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(num_tasks, dtype=torch.float64))
        # mean losses of the last two completed epochs (row 0: t-2, row 1: t-1)
        self.register_buffer("history", torch.zeros(2, num_tasks, dtype=torch.float64))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        v = torch.ones_like(self.loss_sum) if valid is None else valid.to(self.loss_sum).reshape(-1)
        self.loss_sum += losses.detach().to(self.loss_sum) * v
        self.loss_count += v
        if int(self.epochs) < 2:
            return torch.ones_like(losses)
        prev, last = self.history[0], self.history[1]
        r = torch.where(prev > 0, last / prev.clamp(min=1e-300), torch.ones_like(last))
        w = len(r) * torch.softmax(r / self.temperature, dim=0)
        return w.to(losses)

    def end_epoch(self) -> None:
        mean = torch.where(
            self.loss_count > 0, self.loss_sum / self.loss_count.clamp(min=1), self.history[1]
        )
        self.history[0] = self.history[1]
        self.history[1] = mean
        self.epochs.add_(1)
        self.loss_sum.zero_()
        self.loss_count.zero_()
