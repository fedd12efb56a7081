"""The trunk interface and the registry of sharing architectures.

A trunk maps the encoded inputs ``(B, in_dim)`` to the representation each task head reads.
A trunk whose ``shares_representation`` is true returns one tensor read by every head (hard
parameter sharing); otherwise it returns ``{task: tensor}``. Every trunk tells which of its
parameters are shared between tasks (those are what the gradient balancers operate on).
A trunk whose ``shares_encoder`` is false gets one independent copy of the input encoder per task
(``{task: (B, in_dim)}`` as input), so that nothing at all is shared.

Gated trunks (mixtures of experts) keep the gate weights of their last forward pass in
``last_gates``: ``{key: (B, n_experts)}``, each row a distribution; the trainer logs their mean
per epoch. ``gate_labels()`` names the experts behind each column.

New architectures register themselves with :func:`register_trunk` and are then selectable by
name in ``model.architecture``; their constructor's keyword arguments are the config's extra keys.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from lepton.errors import ConfigError
from lepton.models._layers import mlp

#: Constructor arguments every trunk receives from the ``model`` section.
COMMON_ARGS = ("hidden", "dropout", "batch_norm", "activation")


class Trunk(nn.Module):
    """Base class of sharing architectures.

    Subclasses set ``out_dim`` and implement :meth:`forward`; they override
    :meth:`shared_parameters` / :meth:`task_parameters` when some parameters belong to one task.
    """

    name: ClassVar[str] = ""
    shares_representation: ClassVar[bool] = True
    shares_encoder: ClassVar[bool] = True

    def __init__(self, in_dim: int, tasks: Sequence[str]) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.task_names = list(tasks)
        if not self.task_names:
            raise ValueError("a trunk needs at least one task")
        self.out_dim = 0
        self._spec: dict[str, Any] = {}
        self.last_gates: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used by more than one task."""
        return self.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """Trunk parameters that belong to ``task`` alone."""
        return iter(())

    def gate_labels(self) -> dict[str, list[str]]:
        """For each key of ``last_gates``, the names of the experts its columns weight."""
        return {}

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this trunk (JSON-ready)."""
        return {"architecture": self.name, **self._spec}


_TRUNKS: dict[str, type[Trunk]] = {}


def register_trunk(name: str) -> Callable[[type[Trunk]], type[Trunk]]:
    """Class decorator that makes a trunk selectable by ``name`` in ``model.architecture``."""

    def deco(cls: type[Trunk]) -> type[Trunk]:
        if name in _TRUNKS:
            raise ValueError(f"architecture '{name}' is already registered")
        cls.name = name
        _TRUNKS[name] = cls
        _record_arguments(cls)
        return cls

    return deco


def _record_arguments(cls: type[Trunk]) -> None:
    """Make ``cls.__init__`` store its arguments (defaults included) as the trunk's spec, so that
    a trunk built directly, not only through :func:`create_trunk`, can be saved in a bundle."""
    init = cls.__init__
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Trunk, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self) is not cls:  # a subclass records its own arguments
            return
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        self._spec = {
            k: _plain(v)
            for k, v in bound.arguments.items()
            if k not in ("self", "in_dim", "tasks")
            and sig.parameters[k].kind is not inspect.Parameter.VAR_KEYWORD
        }

    cls.__init__ = wrapped  # type: ignore[method-assign]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def available_architectures() -> list[str]:
    """Names usable as ``model.architecture``."""
    return sorted(_TRUNKS)


def trunk_options(name: str) -> list[str]:
    """The architecture-specific hyperparameters of ``name``."""
    cls = _trunk_class(name)
    sig = inspect.signature(cls.__init__)
    return [
        p
        for p in sig.parameters
        if p not in ("self", "in_dim", "tasks", *COMMON_ARGS)
        and sig.parameters[p].kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _trunk_class(name: str) -> type[Trunk]:
    try:
        return _TRUNKS[name]
    except KeyError:
        raise ConfigError(
            f"model.architecture: unknown architecture '{name}'; "
            f"available: {', '.join(available_architectures())}"
        ) from None


def create_trunk(name: str, in_dim: int, tasks: Sequence[str], **kwargs: Any) -> Trunk:
    """Build a registered trunk; unknown or invalid options raise a :class:`ConfigError`."""
    cls = _trunk_class(name)
    allowed = set(trunk_options(name)) | set(COMMON_ARGS)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        accepted = ", ".join(trunk_options(name)) or "none"
        raise ConfigError(
            f"model.{unknown[0]}: unknown option for architecture '{name}' "
            f"(its own options: {accepted})"
        )
    try:
        return cls(in_dim, tasks, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model ({name}): {e}") from None


@register_trunk("shared_bottom")
class SharedBottom(Trunk):
    """Hard parameter sharing: one MLP (with batch norm and dropout) read by every head.

    Parameters
    ----------
    in_dim:
        Width of the encoded inputs.
    tasks:
        Task names (unused: every task reads the same representation).
    hidden:
        Widths of the shared layers; the last one is the representation width.
    dropout, batch_norm, activation:
        Applied after every shared layer.
    """

    shares_representation = True

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.1,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__(in_dim, tasks)
        self.layers = mlp(in_dim, hidden, dropout, batch_norm, activation)
        self.out_dim = list(hidden)[-1] if hidden else in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
