"""Per-task gradients: the K×P Jacobian of K task losses, at the lowest exact cost.

Three routes, all exact (equal, to rounding, to K separate backward passes):

* :func:`jacobian` — one batched backward over any parameters
  (``torch.autograd.grad(..., is_grads_batched=True)``), chunked over tasks with ``chunk_size``;
  rows one by one where an operation has no batching rule. Works for any graph.
* :func:`trace_tasks` + :func:`split_backward` — the gradients with respect to the shared
  representation ``z`` of all K tasks from ONE backward through the heads (hooks on each task's
  consumers of ``z``), the MGDA-UB trick without its K backward passes.
* :func:`trunk_jacobian` — from those K representation gradients, the per-task gradients of the
  trunk's parameters, layer by layer (``∂L_k/∂W = δ_kᵀ a`` for a linear layer), one matrix product
  per layer for all tasks.

:func:`gramian_cosine` and :func:`pairwise_cosine` give the pairwise cosine similarities (gradient
conflict) that the balancers report.
"""

from lepton.jacobian._batched import gramian_cosine, jacobian, pairwise_cosine
from lepton.jacobian._graph import TaskGraph, split_backward, task_roots, trace_tasks
from lepton.jacobian._layerwise import trunk_jacobian

__all__ = [
    "TaskGraph",
    "gramian_cosine",
    "jacobian",
    "pairwise_cosine",
    "split_backward",
    "task_roots",
    "trace_tasks",
    "trunk_jacobian",
]
