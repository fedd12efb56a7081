"""The one interface of every balancing method, and the registry that maps names to classes.

Two families share :class:`Balancer`:

* :class:`LossWeighting` methods compute a weight per task loss (``weights(losses)``) and back-
  propagate the weighted sum once — their cost is one ordinary backward.
* :class:`GradientBalancer` methods need the per-task gradients ``G`` (K×P) of the shared
  parameters and combine them into one update (``aggregate(G)``); task-specific parameters get
  their own task's gradient.

Both are driven by ``balancer.backward(losses, shared_params, features=None)``, which writes
``.grad`` like ``loss.backward()`` does, so it drops into any training loop::

    balancer = lepton.balancers.create("uw", num_tasks=3)
    optimizer = torch.optim.Adam([*model.parameters(), *balancer.parameters()])
    for batch in loader:
        optimizer.zero_grad()
        losses = torch.stack([loss_k(model, batch) for loss_k in task_losses])
        balancer.backward(losses, model.shared_parameters())
        optimizer.step()
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from lepton.errors import ConfigError
from lepton.jacobian import jacobian, pairwise_cosine


def as_loss_vector(losses: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """K task losses as one 1-D tensor (accepts a list of 0-d tensors)."""
    if isinstance(losses, torch.Tensor):
        return losses.reshape(-1)
    return torch.stack([loss.reshape(()) for loss in losses])


class Balancer(nn.Module):
    """Base class of every balancing method.

    After each :meth:`backward`, ``last_weights`` holds the task weights applied (a K-vector),
    and ``last_cosines`` the K×K cosine similarities of the per-task gradients when the method
    computed them (``None`` otherwise). Learnable state (e.g. uncertainty weighting's
    log-variances) lives in this module's parameters: add ``balancer.parameters()`` to the
    optimizer. Call :meth:`setup` (or pass ``num_tasks`` to :func:`create`) before that.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.num_tasks: int | None = None
        self.task_weights: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None
        self.last_cosines: torch.Tensor | None = None

    def setup(self, num_tasks: int, task_weights: Sequence[float] | None = None) -> Balancer:
        """Declare the number of tasks (and their static weights, from the task declarations)."""
        if num_tasks < 1:
            raise ValueError("num_tasks must be at least 1")
        if task_weights is not None and len(task_weights) != num_tasks:
            raise ValueError(f"{len(task_weights)} task weights for {num_tasks} tasks")
        self.num_tasks = int(num_tasks)
        self.task_weights = (
            None if task_weights is None else torch.tensor(list(task_weights), dtype=torch.float32)
        )
        self._build(self.num_tasks)
        return self

    def _build(self, num_tasks: int) -> None:
        """Create per-task state (parameters, buffers). Default: none."""

    def _check_k(self, k: int) -> None:
        if self.num_tasks is None:
            if any(True for _ in self.parameters()):
                raise RuntimeError(
                    f"{type(self).__name__} has learnable parameters: call setup(num_tasks) "
                    "(or create(..., num_tasks=K)) and add its parameters to the optimizer"
                )
            self.setup(k)
        elif k != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__} was set up for {self.num_tasks} tasks, got {k} losses"
            )

    def backward(
        self,
        losses: torch.Tensor | Sequence[torch.Tensor],
        shared_params: Iterable[torch.Tensor],
        features: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Write ``.grad`` of every parameter reached by ``losses`` (accumulating like autograd).

        Parameters
        ----------
        losses:
            The K task losses of this step.
        shared_params:
            The parameters shared by the tasks (``model.shared_parameters()``).
        features:
            The shared representation, for methods that work on it (else ignored).
        valid:
            Optional boolean K-vector: False for a task with no label in this batch (its loss is
            an exact zero); methods with per-task state leave that task's state alone.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        sig = inspect.signature(type(self).__init__)
        parts = []
        for p in sig.parameters:
            if p != "self" and hasattr(self, p):
                parts.append(f"{p}={getattr(self, p)!r}")
        return ", ".join(parts)


class LossWeighting(Balancer):
    """Methods that weight the task losses: one backward of ``Σ w_k L_k``."""

    kind = "loss"

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The K weights for this step (detached); stateful methods update their state here."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar to backpropagate. Default ``Σ w_k L_k`` with ``w = weights(losses)``."""
        w = self.weights(losses.detach()).to(losses)
        self.last_weights = w.detach()
        return (w.detach() * losses).sum()

    def backward(
        self,
        losses: torch.Tensor | Sequence[torch.Tensor],
        shared_params: Iterable[torch.Tensor] = (),
        features: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        vec = as_loss_vector(losses)
        self._check_k(vec.shape[0])
        self.last_cosines = None
        self.objective(vec, valid).backward()


class GradientBalancer(Balancer):
    """Methods that combine the per-task gradients of the shared parameters.

    Subclasses implement :meth:`aggregate`. Task-specific parameters receive the gradient of
    ``Σ_k L_k`` (each head only sees its own task's loss).
    """

    kind = "gradient"

    def __init__(self, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size

    def aggregate(self, G: torch.Tensor) -> torch.Tensor:
        """Combine the K×P matrix of per-task gradients into one P-vector."""
        raise NotImplementedError

    def backward(
        self,
        losses: torch.Tensor | Sequence[torch.Tensor],
        shared_params: Iterable[torch.Tensor],
        features: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        vec = as_loss_vector(losses)
        self._check_k(vec.shape[0])
        shared = [p for p in shared_params if p.requires_grad]
        G = jacobian(vec, shared, chunk_size=self.chunk_size, retain_graph=True)
        update = self.aggregate(G)
        self.last_cosines = pairwise_cosine(G).detach()
        before = [p.grad for p in shared]
        for p in shared:
            p.grad = None
        vec.sum().backward()
        offset = 0
        for p, g in zip(shared, before, strict=True):
            n = p.numel()
            piece = update[offset : offset + n].view_as(p).to(p.dtype)
            p.grad = piece.clone() if g is None else g + piece
            offset += n


# ---------------------------------------------------------------------------- registry
_BALANCERS: dict[str, type[Balancer]] = {}


def register_balancer(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Class decorator making a balancer selectable by ``name`` (``balancer.name`` in config)."""

    def deco(cls: type[Balancer]) -> type[Balancer]:
        if name in _BALANCERS:
            raise ValueError(f"balancer '{name}' is already registered")
        cls.name = name
        _BALANCERS[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Registry names of every balancing method."""
    return sorted(_BALANCERS)


def balancer_class(name: str) -> type[Balancer]:
    try:
        return _BALANCERS[name]
    except KeyError:
        raise ConfigError(
            f"balancer.name: unknown method '{name}'; available: {', '.join(available())}"
        ) from None


def hyperparameters(name: str) -> dict[str, Any]:
    """The constructor arguments of method ``name`` with their defaults."""
    sig = inspect.signature(balancer_class(name).__init__)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def create(
    name: str,
    num_tasks: int | None = None,
    task_weights: Sequence[float] | None = None,
    **hparams: Any,
) -> Balancer:
    """Build a balancer by registry name; ``num_tasks`` also runs :meth:`Balancer.setup`.

    Unknown or invalid hyperparameters raise a :class:`lepton.errors.ConfigError` naming them.

    Examples
    --------
    >>> b = create("uw", num_tasks=2)
    >>> sorted(available())[:2]
    ['ew', 'static']
    """
    cls = balancer_class(name)
    accepted = hyperparameters(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ConfigError(
            f"balancer.{unknown[0]}: unknown hyperparameter of '{name}' "
            f"(accepted: {', '.join(accepted) or 'none'})"
        )
    try:
        balancer = cls(**hparams)
        if num_tasks is not None:
            balancer.setup(num_tasks, task_weights)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"balancer ({name}): {e}") from None
    return balancer
