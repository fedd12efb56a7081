"""The task-specific part of an autograd graph, and per-task gradients from ONE backward pass.

A multi-task step computes K losses from one shared representation ``z`` (hard parameter sharing):
``z = trunk(x)``, ``L_k = loss_k(head_k(z))``. Walking the graph from each loss down to ``z`` finds,
for every task, the operations that read ``z`` (its *consumers*) and the task's own parameters.
When each consumer belongs to exactly one task (the graph above ``z`` is *clean*), a single
backward of ``Σ_k L_k`` through the heads — with a hook on each consumer — yields every task's own
gradient ``∂L_k/∂z``: the K rows of the representation Jacobian cost no more than the heads' part
of an ordinary backward. The trunk is not traversed; the caller decides what flows into it.

When a consumer is reached by several tasks (a fusion head reading other tasks' outputs, losses
that were not built one per task), the graph is not clean and the caller falls back to an exact
batched Jacobian (:func:`lepton.jacobian.jacobian`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.autograd.graph import Node, get_gradient_edge

_MIXED = -1
_ACCUMULATE = type(get_gradient_edge(torch.zeros(1, requires_grad=True)).node)


@dataclass
class TaskGraph:
    """What a walk from the task losses down to the shared representation found.

    Attributes
    ----------
    num_tasks:
        K.
    consumers:
        ``{node: [(input index, task), ...]}`` for every operation that reads the representation.
    leaves:
        Parameters (autograd leaves) reached above the representation that are not shared.
    owners:
        For each leaf, the one task whose loss reaches it (``-1``: several tasks, or unknown).
    clean:
        True if every consumer belongs to one task and no shared parameter is used above the
        representation: the per-task gradients can then be captured in one backward.
    """

    num_tasks: int
    consumers: dict[Node, list[tuple[int, int]]] = field(default_factory=dict)
    leaves: list[torch.Tensor] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    clean: bool = False


def task_roots(losses: torch.Tensor | Sequence[torch.Tensor]) -> list[Node | None] | None:
    """The graph node of each task's loss, or ``None`` if the losses are not separable.

    Separable: a sequence of scalar losses, or a 1-D tensor made by ``torch.stack`` of them.
    """
    if not isinstance(losses, torch.Tensor):
        return [_node_of(t) for t in losses]
    fn = losses.grad_fn
    if fn is None:
        return [None] * losses.numel()
    if (
        type(fn).__name__ == "StackBackward0"
        and getattr(fn, "_saved_dim", None) == 0
        and len(fn.next_functions) == losses.numel()
    ):
        return [nf for nf, _ in fn.next_functions]
    return None


def _node_of(t: torch.Tensor) -> Node | None:
    if not isinstance(t, torch.Tensor) or not t.requires_grad:
        return None
    return get_gradient_edge(t).node


def trace_tasks(
    losses: torch.Tensor | Sequence[torch.Tensor],
    features: torch.Tensor | None,
    shared: Sequence[torch.Tensor],
    objective: torch.Tensor | None = None,
) -> TaskGraph:
    """Walk the graph from each loss down to ``features`` (or to the leaves if ``None``).

    Parameters
    ----------
    losses:
        The K raw task losses (a sequence of scalars or a stacked 1-D tensor).
    features:
        The shared representation where the walk stops (``None``: walk the whole graph).
    shared:
        The shared parameters (reaching one above ``features`` makes the graph not clean).
    objective:
        The scalar actually backpropagated, when it is built on top of the losses (a loss
        transform with its own parameters): the walk from it to the losses collects those too.
    """
    roots = task_roots(losses)
    k = len(roots) if roots is not None else int(torch.as_tensor(losses).numel())
    graph = TaskGraph(num_tasks=k)
    shared_ids = {id(p) for p in shared}
    if features is not None:
        edge = get_gradient_edge(features)
        stop_node, stop_nr = edge.node, edge.output_nr
    else:
        stop_node, stop_nr = None, -1
    owner: dict[Node, int] = {}
    leaf_owner: dict[int, int] = {}
    leaf_of: dict[int, torch.Tensor] = {}
    found: list[tuple[Node, int, int]] = []
    clean = roots is not None

    if roots is None:
        stacked = losses if isinstance(losses, torch.Tensor) else torch.stack(list(losses))
        starts: list[tuple[int, Node | None]] = [(_MIXED, stacked.grad_fn)]
    else:
        starts = list(enumerate(roots))
    if objective is not None and objective.grad_fn is not None:
        # the loss transform above the losses (its parameters belong to no single task)
        raw = {id(r) for r in (roots or []) if r is not None}
        top = losses.grad_fn if isinstance(losses, torch.Tensor) and losses.grad_fn else None
        stop_at = {id(top)} if top is not None else raw
        stack = [objective.grad_fn]
        seen: set[Node] = set()
        while stack:
            node = stack.pop()
            if node in seen or id(node) in stop_at:
                continue
            seen.add(node)
            for nf, _ in node.next_functions:
                if nf is None or id(nf) in stop_at:
                    continue
                if type(nf) is _ACCUMULATE:
                    var = nf.variable
                    if id(var) in shared_ids:
                        clean = False
                    leaf_owner[id(var)] = _MIXED
                    leaf_of[id(var)] = var
                else:
                    stack.append(nf)

    for task, root in starts:
        if root is None:
            continue
        stack = [root]
        while stack:
            node = stack.pop()
            prev = owner.get(node)
            if prev in (task, _MIXED):
                continue
            owner[node] = task if prev is None else _MIXED
            for i, (nf, nr) in enumerate(node.next_functions):
                if nf is None:
                    continue
                if nf is stop_node:
                    if nr == stop_nr:
                        found.append((node, i, task))
                    else:  # another output of the op that made the representation
                        clean = False
                    continue
                if type(nf) is _ACCUMULATE:  # a leaf
                    var = nf.variable
                    if id(var) in shared_ids:
                        clean = False
                        continue
                    was = leaf_owner.get(id(var))
                    leaf_owner[id(var)] = task if was is None or was == task else _MIXED
                    leaf_of[id(var)] = var
                    continue
                stack.append(nf)
    for node, i, task in found:
        if owner.get(node, _MIXED) == _MIXED:
            clean = False
        graph.consumers.setdefault(node, []).append((i, task))
    graph.leaves = list(leaf_of.values())
    graph.owners = [leaf_owner[id(v)] for v in graph.leaves]
    graph.clean = clean and features is not None
    return graph


def split_backward(
    objective: torch.Tensor,
    graph: TaskGraph,
    features: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """One backward of ``objective`` through the task-specific part of the graph only.

    Returns the per-task gradients at ``features`` — shape ``(K, *features.shape)`` — captured
    at each task's consumers, and the gradients of ``graph.leaves`` (not yet accumulated into
    ``.grad``). The graph below ``features`` is left untouched for the caller.
    """
    if not graph.clean:
        raise ValueError("the task graph is not clean: per-task gradients need a batched Jacobian")
    captured: list[torch.Tensor | None] = [None] * graph.num_tasks
    handles = []
    for node, edges in graph.consumers.items():

        def hook(grad_inputs, grad_outputs, edges=edges):
            for i, task in edges:
                g = grad_inputs[i]
                if g is not None:
                    prev = captured[task]
                    captured[task] = g if prev is None else prev + g

        handles.append(node.register_hook(hook))
    try:
        grads = torch.autograd.grad(
            objective, [*graph.leaves, features], allow_unused=True, retain_graph=False
        )
    finally:
        for h in handles:
            h.remove()
    zero = None
    rows = []
    for g in captured:
        if g is None:
            if zero is None:
                zero = torch.zeros_like(features)
            g = zero
        rows.append(g)
    return torch.stack(rows), list(grads[:-1])
