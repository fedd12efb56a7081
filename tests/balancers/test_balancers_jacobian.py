"""The ``jacobian`` routes are exact: every one equals K separate backward passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lepton.jacobian import jacobian, split_backward, trace_tasks, trunk_jacobian


def _per_row(
    outputs: torch.Tensor, grads: torch.Tensor, params: list[torch.Tensor]
) -> torch.Tensor:
    rows = []
    for g in grads:
        gs = torch.autograd.grad(
            outputs, params, g, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        rows.append(torch.cat([x.reshape(-1) for x in gs]))
    return torch.stack(rows)


class Residual(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.lin(x))


class WithEmbedding(nn.Module):
    """Numeric columns concatenated with an embedding (the tabular encoder's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3, padding_idx=0)
        self.body = nn.Sequential(nn.Linear(7, 6), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cats = (x[:, 0].abs() * 10).long() % 5
        return self.body(torch.cat([x[:, :4], self.emb(cats)], dim=1))


class Conv(nn.Module):
    """A layer without a batched rule: evaluated task by task."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.lin = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.relu(self.conv(x[:, None, :4])).flatten(1))


TRUNKS = {
    "linear": lambda: nn.Sequential(nn.Linear(4, 6)),
    "no-bias": lambda: nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU()),
    "mlp-relu": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU()),
    "threshold": lambda: nn.Sequential(nn.Linear(4, 8), nn.Threshold(0.1, -0.5), nn.Linear(8, 6)),
    "relu-inplace": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 6)),
    "batchnorm-train": lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU()),
    "batchnorm-eval": lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).eval(),
    "dropout": lambda: nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.3)),
    "activations": lambda: nn.Sequential(
        nn.Linear(4, 6),
        nn.Tanh(),
        nn.Linear(6, 6),
        nn.Sigmoid(),
        nn.Linear(6, 6),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 6),
        nn.ELU(),
        nn.Linear(6, 6),
        nn.Softplus(),
    ),
    "residual": lambda: nn.Sequential(nn.Linear(4, 6), Residual(6), nn.LayerNorm(6)),
    "embedding-cat": WithEmbedding,
    "conv": Conv,
}


@pytest.mark.parametrize("name", list(TRUNKS))
@pytest.mark.parametrize("chunk", [None, 2])
def test_trunk_jacobian_equals_k_backward_passes(name: str, chunk: int | None) -> None:
    torch.manual_seed(0)
    trunk = TRUNKS[name]()
    x = torch.randn(10, 4)
    z = trunk(x)
    params = [p for p in trunk.parameters() if p.requires_grad]
    grads = torch.randn(5, *z.shape)
    expected = _per_row(z, grads, params)
    got = trunk_jacobian(z, grads, params, chunk_size=chunk)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_trunk_jacobian_of_a_parameter_it_does_not_reach_is_zero() -> None:
    trunk = nn.Linear(3, 2)
    other = nn.Parameter(torch.ones(4))
    z = trunk(torch.randn(5, 3))
    G = trunk_jacobian(z, torch.randn(2, 5, 2), [*trunk.parameters(), other])
    assert G.shape == (2, 8 + 4) and G[:, -4:].abs().sum() == 0


def _heads_model(fusion: bool = False):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(6, 2) for _ in range(3))
    x, y = torch.randn(8, 4), torch.randn(3, 8, 2)
    z = trunk(x)
    outs = [h(z) for h in heads]
    if fusion:
        outs[2] = outs[2] + outs[1].detach() * 0 + outs[1]
    losses = torch.stack([F.mse_loss(o, y[i]) for i, o in enumerate(outs)])
    return trunk, heads, z, losses


def test_split_backward_gives_every_task_gradient_from_one_backward() -> None:
    trunk, heads, z, losses = _heads_model()
    expected = jacobian(losses, [z]).view(3, *z.shape)
    head_expected = torch.autograd.grad(losses.sum(), list(heads.parameters()), retain_graph=True)
    graph = trace_tasks(losses, z, list(trunk.parameters()))
    assert graph.clean and len(graph.consumers) == 3
    assert sorted(graph.owners) == [0, 0, 1, 1, 2, 2]
    GZ, leaf_grads = split_backward(losses.sum(), graph, z)
    torch.testing.assert_close(GZ, expected)
    by_id = {id(p): g for p, g in zip(graph.leaves, leaf_grads, strict=True)}
    for p, e in zip(heads.parameters(), head_expected, strict=True):
        torch.testing.assert_close(by_id[id(p)], e)
    # the trunk was not traversed: its graph is intact and its parameters have no gradient
    assert all(p.grad is None for p in trunk.parameters())
    z.backward(torch.ones_like(z))


def test_a_head_reading_another_task_is_not_clean() -> None:
    trunk, _, z, losses = _heads_model(fusion=True)
    assert not trace_tasks(losses, z, list(trunk.parameters())).clean


def test_a_shared_parameter_used_above_the_split_is_not_clean() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    z = lin(torch.randn(3, 4))
    losses = torch.stack([(z * lin.weight.sum()).sum(), z.pow(2).sum()])
    assert not trace_tasks(losses, z, list(lin.parameters())).clean


def test_losses_not_built_per_task_are_not_clean() -> None:
    trunk, _, z, _ = _heads_model()
    losses = (z[:, :3] ** 2).mean(0)  # one op produces all three
    assert not trace_tasks(losses, z, list(trunk.parameters())).clean


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_general_jacobian_matches_rows(chunk: int | None) -> None:
    trunk, _, _, losses = _heads_model()
    params = list(trunk.parameters())
    expected = torch.stack(
        [
            torch.cat(
                [g.reshape(-1) for g in torch.autograd.grad(losses[k], params, retain_graph=True)]
            )
            for k in range(3)
        ]
    )
    torch.testing.assert_close(jacobian(losses, params, chunk_size=chunk), expected)
