"""The general route: the K×P Jacobian of K losses by one batched backward.

One batched backward (``torch.autograd.grad(..., is_grads_batched=True)``: a vmap over the
backward pass) gives all K rows at once; ``chunk_size`` bounds memory by doing the rows in groups.
Where an operation has no batching rule, the rows are computed one by one instead — same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_loss_vector(losses: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(losses, torch.Tensor):
        return losses.reshape(-1)
    return torch.stack([torch.as_tensor(loss).reshape(()) for loss in losses])


def jacobian(
    losses: torch.Tensor | Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    chunk_size: int | None = None,
    retain_graph: bool = True,
) -> torch.Tensor:
    """The matrix ``G`` with ``G[k] = ∂ losses[k] / ∂ params`` (flattened, concatenated).

    Parameters
    ----------
    losses:
        K scalar losses (a 1-D tensor or a sequence of 0-d tensors) sharing one graph.
    params:
        Tensors requiring grad; a parameter a loss does not reach gets zeros in that row.
    chunk_size:
        At most this many rows per batched backward (``None``: all K at once).
    retain_graph:
        Keep the graph for a later backward (the task-specific parameters need one).

    Returns
    -------
    Tensor of shape ``(K, P)`` with ``P = sum(p.numel() for p in params)``.

    Examples
    --------
    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> jacobian(torch.stack([w.sum(), (w ** 2).sum()]), [w])
    tensor([[1., 1.],
            [2., 4.]])
    """
    vec = _as_loss_vector(losses)
    k = vec.shape[0]
    params = list(params)
    if k == 0 or not params:
        return vec.new_zeros((k, sum(p.numel() for p in params)))
    step = k if chunk_size is None else max(1, int(chunk_size))
    rows: list[torch.Tensor] = []
    eye = torch.eye(k, dtype=vec.dtype, device=vec.device)
    for start in range(0, k, step):
        stop = min(k, start + step)
        last = stop == k
        keep = retain_graph or not last
        try:
            grads = torch.autograd.grad(
                vec,
                params,
                grad_outputs=eye[start:stop],
                is_grads_batched=True,
                retain_graph=keep,
                allow_unused=True,
            )
            rows.append(_flat(grads, params, stop - start, vec))
        except RuntimeError:
            for i in range(start, stop):
                grads = torch.autograd.grad(
                    vec[i],
                    params,
                    retain_graph=keep or i < stop - 1,
                    allow_unused=True,
                )
                rows.append(_flat(grads, params, 1, vec))
    return torch.cat(rows, dim=0)


def _flat(
    grads: Sequence[torch.Tensor | None],
    params: Sequence[torch.Tensor],
    rows: int,
    like: torch.Tensor,
) -> torch.Tensor:
    parts = [
        like.new_zeros((rows, p.numel())) if g is None else g.reshape(rows, -1)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts, dim=1)


def pairwise_cosine(G: torch.Tensor) -> torch.Tensor:
    """``K×K`` cosine similarities between the rows of ``G`` (0 where a row is zero)."""
    return gramian_cosine(G @ G.T)


def gramian_cosine(gramian: torch.Tensor) -> torch.Tensor:
    """Cosine similarities from the Gramian ``G Gᵀ``: ``M_ij / sqrt(M_ii M_jj)`` (0 for zero rows).

    Examples
    --------
    >>> gramian_cosine(torch.tensor([[1.0, -2.0], [-2.0, 4.0]]))
    tensor([[ 1., -1.],
            [-1.,  1.]])
    """
    d = gramian.diagonal().clamp(min=0).sqrt()
    denom = d[:, None] * d[None, :]
    cos = torch.where(denom > 0, gramian / denom.clamp(min=torch.finfo(gramian.dtype).tiny), 0.0)
    return cos.clamp(-1.0, 1.0)
