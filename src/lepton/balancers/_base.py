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
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from lepton.errors import ConfigError
from lepton.jacobian import jacobian, split_backward, trace_tasks, trunk_jacobian


def as_loss_vector(losses: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """K task losses as one 1-D tensor (accepts a list of 0-d tensors)."""
    if isinstance(losses, torch.Tensor):
        return losses if losses.dim() == 1 else losses.reshape(-1)
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
    #: buffers whose shape is only known after the first step (e.g. K×P tracked gradients);
    #: loading a checkpoint resizes them instead of failing on the shape
    lazy_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.num_tasks: int | None = None
        self.task_weights: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None
        self.last_cosines = None

    @property
    def last_cosines(self) -> torch.Tensor | None:
        """K×K cosine similarities of the last step's per-task gradients (``None`` if the method
        computed none); worked out from the Gramian when first read."""
        pending = self.__dict__.get("_cosines_from")
        if pending is not None:
            self.__dict__["_last_cosines"] = _cosines(*pending)
            self.__dict__["_cosines_from"] = None
        return self.__dict__.get("_last_cosines")

    @last_cosines.setter
    def last_cosines(self, value: torch.Tensor | None) -> None:
        self.__dict__["_last_cosines"] = value
        self.__dict__["_cosines_from"] = None

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in self.lazy_buffers:
            value = state_dict.get(prefix + name)
            mine = getattr(self, name, None)
            if (
                isinstance(value, torch.Tensor)
                and isinstance(mine, torch.Tensor)
                and value.shape != mine.shape
            ):
                setattr(self, name, mine.new_empty(value.shape, dtype=value.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def end_epoch(self) -> None:
        """Mark the end of an epoch (methods that average losses per epoch — DWA, STCH's warm-up —
        use it; the trainer calls it, a custom loop should too). Default: nothing."""

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

    def weights(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The K weights for this step (detached); stateful methods update their state here,
        once per call. ``valid`` (optional, boolean K-vector) marks tasks with labels in the
        batch: methods with per-task statistics leave the others' statistics alone."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar to backpropagate. Default ``Σ w_k L_k`` with ``w = weights(losses)``."""
        w = self.weights(losses.detach(), valid).to(losses)
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


Mode = Literal["params", "features", "auto"]


class GradientBalancer(Balancer):
    """Methods that combine per-task gradients into one update.

    Subclasses implement :meth:`combine` (or, for methods defined by weights found from the
    Gramian ``G Gᵀ`` alone, :class:`GramianBalancer`'s :meth:`~GramianBalancer.gramian_weights`).
    :meth:`aggregate` applies the method to a K×P matrix; :meth:`backward` computes the matrix at
    the lowest exact cost and writes ``.grad``:

    * ``mode="features"`` — gradients with respect to the shared representation ``features``
      (MGDA-UB's idea): all K come from ONE backward through the heads (hooks on each task's
      consumers of the representation, see :func:`lepton.jacobian.trace_tasks`); the combined
      gradient then makes ONE backward through the trunk.
    * ``mode="params"`` — gradients with respect to the shared parameters. With ``features`` the
      K representation gradients come from that same single backward and the trunk's rows are
      built layer by layer (:func:`lepton.jacobian.trunk_jacobian`); without it, one batched
      backward over the whole graph (:func:`lepton.jacobian.jacobian`).
    * ``mode="auto"`` — ``features`` when a representation is passed, else ``params``.

    Task-specific parameters always receive the gradient of their own task's (transformed) loss.
    Tasks marked invalid (``valid`` false: no label in the batch) are left out of the combination
    and get weight 0.

    Parameters
    ----------
    mode:
        Where the per-task gradients are taken (see above).
    chunk_size:
        At most this many tasks per batched backward (bounds memory; ``None``: all at once).
    """

    kind = "gradient"
    #: Modes this method supports (stateful per-coordinate methods are parameter-only).
    modes: ClassVar[tuple[str, ...]] = ("params", "features", "auto")

    def __init__(self, mode: Mode = "params", chunk_size: int | None = None) -> None:
        super().__init__()
        if mode not in ("params", "features", "auto"):
            raise ValueError(f"mode must be 'params', 'features' or 'auto', got {mode!r}")
        if mode not in self.modes:
            raise ValueError(
                f"mode={mode!r} is not supported by {type(self).__name__} "
                f"(supported: {', '.join(self.modes)})"
            )
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError("chunk_size must be a positive integer or None")
        self.mode = mode
        self.chunk_size = chunk_size
        #: relative weights of each task's loss for the task-specific parameters, set by
        #: :meth:`combine` when they differ from those used in :meth:`transform` (else None)
        self.head_scale: torch.Tensor | None = None

    # ------------------------------------------------------------------ to override
    def transform(self, losses: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The per-task objectives whose gradients are combined (default: the losses)."""
        return losses

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Combine the rows of ``G`` (one per task in ``tasks``) into one vector.

        ``gramian`` is ``G Gᵀ`` (float64), ``tasks`` the task index of each row (for methods with
        per-task state). Returns the update and the weights it applied (``None`` if the update is
        not a combination of the rows). A subclass may implement :meth:`aggregate` instead.
        """
        if type(self).aggregate is GradientBalancer.aggregate:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither combine nor aggregate"
            )
        return self.aggregate(G), None

    def combine_features(
        self,
        G: torch.Tensor,
        gramian: torch.Tensor,
        tasks: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`combine` for representation gradients ``G``, shape ``(k, *features.shape)``."""
        update, w = self.combine(G.reshape(G.shape[0], -1), gramian, tasks)
        return update.view_as(features), w

    # ------------------------------------------------------------------ public
    def aggregate(self, G: torch.Tensor) -> torch.Tensor:
        """Combine the K×P matrix of per-task gradients into one P-vector.

        Examples
        --------
        >>> import lepton
        >>> lepton.balancers.create("mgda").aggregate(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([0.5000, 0.5000])
        """
        if G.dim() != 2:
            raise ValueError(f"aggregate expects a K×P matrix, got shape {tuple(G.shape)}")
        k = G.shape[0]
        self._check_k(k)
        tasks = torch.arange(k)
        update, w = self.combine(G, _gramian(G), tasks)
        self.last_weights = None if w is None else w.detach()
        return update

    def backward(
        self,
        losses: torch.Tensor | Sequence[torch.Tensor],
        shared_params: Iterable[torch.Tensor],
        features: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        vec = as_loss_vector(losses)
        k = vec.shape[0]
        self._check_k(k)
        shared = [p for p in shared_params if p.requires_grad]
        if features is not None and not features.requires_grad:
            features = None  # nothing below it to train
        mode = self.mode
        if mode == "auto":
            mode = "features" if features is not None else "params"
        if mode == "features" and features is None:
            raise ConfigError(
                f"balancer ({self.name or type(self).__name__}): mode 'features' needs the shared "
                "representation (backward(..., features=z), requiring grad); this model has none "
                "(not hard sharing), use mode: params"
            )
        tasks = _valid_tasks(valid, k, vec.device)
        self.head_scale = None
        ell = self.transform(vec, valid)
        objective = ell.sum()
        graph = trace_tasks(vec, features, shared, objective=objective)

        leaf_grads: list[torch.Tensor | None] | None = None
        if features is not None and graph.clean:
            GZ, leaf_grads = split_backward(objective, graph, features)
        elif features is not None and mode == "features":
            GZ = jacobian(ell, [features], chunk_size=self.chunk_size).view(k, *features.shape)
        else:
            GZ = None
        every = tasks.numel() == k
        if mode == "features":
            assert GZ is not None and features is not None
            J = GZ if every else GZ[tasks]
            M = _gramian(J.reshape(J.shape[0], -1))
            update, w = self.combine_features(J, M, tasks, features)
        else:
            if GZ is not None:
                assert features is not None
                J = trunk_jacobian(features, GZ if every else GZ[tasks], shared, self.chunk_size)
            else:
                J = jacobian(ell, shared, chunk_size=self.chunk_size, retain_graph=True)
                J = J if every else J[tasks]
            M = _gramian(J)
            update, w = self.combine(J, M, tasks)
        self._record(k, tasks, M, w)

        # task-specific parameters: their own task's (transformed) loss
        if leaf_grads is None:
            head_obj = (
                objective if self.head_scale is None else (self.head_scale.to(ell) * ell).sum()
            )
            leaves = [p for p in graph.leaves if p.requires_grad]
            grads = (
                torch.autograd.grad(
                    head_obj, leaves, allow_unused=True, retain_graph=mode == "features"
                )
                if leaves
                else ()
            )
            _accumulate(leaves, grads)
        else:
            if self.head_scale is not None:
                scale = self.head_scale.detach()
                leaf_grads = [
                    g if g is None or o < 0 else g * scale[o].to(g)
                    for g, o in zip(leaf_grads, graph.owners, strict=True)
                ]
            _accumulate(graph.leaves, leaf_grads)

        # shared parameters: the combined update
        if mode == "features":
            assert features is not None
            torch.autograd.backward(features, update.to(features.dtype))
        else:
            offset = 0
            pieces = []
            for p in shared:
                n = p.numel()
                pieces.append(update[offset : offset + n].view_as(p).to(p.dtype))
                offset += n
            _accumulate(shared, pieces)

    # ------------------------------------------------------------------ helpers
    def _record(self, k: int, tasks: torch.Tensor, M: torch.Tensor, w: torch.Tensor | None) -> None:
        idx = tasks.cpu().numpy()
        self.__dict__["_cosines_from"] = (k, idx, M)  # cosines computed only if read
        if w is None:
            self.last_weights = None
        else:
            full = np.zeros(k)
            full[idx] = w.detach().double().cpu().numpy()
            self.last_weights = torch.from_numpy(full)


class GramianBalancer(GradientBalancer):
    """Gradient methods whose update is ``wᵀG`` with weights found from ``M = G Gᵀ`` alone.

    Subclasses implement :meth:`gramian_weights`.
    """

    def gramian_weights(self, gramian: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """The weights (one per row) from the K×K Gramian (float64)."""
        raise NotImplementedError

    def combine(
        self, G: torch.Tensor, gramian: torch.Tensor, tasks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if G.shape[0] == 0:
            return G.new_zeros(G.shape[1]), G.new_zeros(0)
        w = self.gramian_weights(gramian, tasks).to(G)
        return w @ G, w


class PreferenceBalancer(GramianBalancer):
    """A :class:`GramianBalancer` with task preferences ``pref`` (one weight per task).

    ``pref=None`` means equal preferences: ``1/K`` each when :attr:`mean_pref` is true (the
    update is then a mean), ones otherwise (the method's paper sums).
    """

    mean_pref: ClassVar[bool] = False

    def __init__(
        self,
        pref: Sequence[float] | None = None,
        mode: Mode = "params",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(mode, chunk_size)
        self.pref = None if pref is None else [float(p) for p in pref]

    def preferences(self, tasks: torch.Tensor) -> np.ndarray:
        """The preferences of the tasks in ``tasks`` (float64)."""
        k = tasks.numel()
        if self.pref is None:
            return np.full(k, 1.0 / k if self.mean_pref else 1.0)
        return np.asarray(self.pref, dtype=np.float64)[tasks.cpu().numpy()]


def _cosines(k: int, idx: np.ndarray, M: torch.Tensor) -> torch.Tensor:
    """The K×K cosine similarities from the Gramian ``M`` of the tasks ``idx`` (0 elsewhere)."""
    m = M.numpy()
    d = np.sqrt(np.clip(np.diag(m), 0.0, None))
    denom = d[:, None] * d[None, :]
    cos = np.zeros((k, k))
    cos[np.ix_(idx, idx)] = np.clip(
        np.divide(m, denom, out=np.zeros_like(m), where=denom > 0), -1.0, 1.0
    )
    return torch.from_numpy(cos)


def _gramian(J: torch.Tensor) -> torch.Tensor:
    """``J Jᵀ`` as a float64 CPU tensor (what the small solvers read)."""
    J = J.reshape(J.shape[0], -1)
    return (J @ J.T).double().cpu()


def _valid_tasks(valid: torch.Tensor | None, k: int, device: torch.device) -> torch.Tensor:
    if valid is None:
        return torch.arange(k, device=device)
    v = torch.as_tensor(valid, device=device).reshape(-1).bool()
    if v.numel() != k:
        raise ValueError(f"valid has {v.numel()} entries for {k} tasks")
    return torch.nonzero(v, as_tuple=False).reshape(-1)


def _accumulate(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None] | tuple
) -> None:
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        g = g.detach()
        if p.grad is None:
            p.grad = g if g.is_contiguous() else g.contiguous()
        else:
            p.grad = p.grad + g


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
