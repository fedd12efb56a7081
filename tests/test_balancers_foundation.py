"""The balancer interface with equal, static and uncertainty weighting; the jacobian module."""

from __future__ import annotations

import pytest
import torch

from lepton import ConfigError, balancers, jacobian
from lepton.balancers import GradientBalancer


def _problem(k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shared = torch.nn.Linear(4, 5)
    heads = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in range(k))
    with torch.no_grad():
        for p in [*shared.parameters(), *heads.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(8, 4, generator=g)
    y = torch.randn(k, 8, 1, generator=g)

    def losses() -> torch.Tensor:
        z = torch.relu(shared(x))
        return torch.stack([((h(z) - y[i]) ** 2).mean() for i, h in enumerate(heads)])

    return shared, heads, losses


def _grads(modules) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def test_registry() -> None:
    assert {"ew", "static", "uw"} <= set(balancers.available())
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        balancers.create("nope")
    with pytest.raises(ConfigError, match=r"balancer\.temperature: unknown hyperparameter of 'ew'"):
        balancers.create("ew", temperature=2.0)


def test_equal_weighting_is_the_plain_sum() -> None:
    shared, heads, losses = _problem()
    balancers.create("ew").backward(losses(), shared.parameters())
    got = _grads([shared, heads])
    for m in (shared, heads):
        m.zero_grad()
    losses().sum().backward()
    assert all(torch.allclose(a, b) for a, b in zip(got, _grads([shared, heads]), strict=True))


def test_static_weights_from_tasks_or_explicit() -> None:
    b = balancers.create("static", num_tasks=2, task_weights=[2.0, 0.5])
    assert b.weights(torch.ones(2)).tolist() == [2.0, 0.5]
    b = balancers.create("static", weights=[1.0, 3.0])
    assert b.weights(torch.ones(2)).tolist() == [1.0, 3.0]
    with pytest.raises(ConfigError, match="finite and >= 0"):
        balancers.create("static", weights=[1.0, -1.0])


def test_uncertainty_weighting_update_rule() -> None:
    b = balancers.create("uw", num_tasks=2)
    losses = torch.tensor([2.0, 0.5], requires_grad=True)
    b.backward(losses, [])
    # objective Σ exp(-s)·L + s  →  d/ds = 1 - exp(-s)·L = 1 - L at s = 0
    assert torch.allclose(b.log_vars.grad, torch.tensor([1 - 2.0, 1 - 0.5]))
    assert torch.allclose(losses.grad, torch.ones(2))
    assert b.last_weights.tolist() == [1.0, 1.0]


def test_uncertainty_weighting_learns_log_loss_and_leaves_absent_tasks_alone() -> None:
    b = balancers.create("uw", num_tasks=2)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        b.backward(torch.tensor([4.0, 0.0]), [], valid=torch.tensor([True, False]))
        opt.step()
    assert b.log_vars[0].item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-3)
    assert b.log_vars[1].item() == 0.0  # the task had no label: its log-variance did not move


def test_uw_without_setup_explains_itself() -> None:
    b = balancers.create("uw")
    assert b.num_tasks is None
    b.setup(3)
    assert b.log_vars.shape == (3,)
    with pytest.raises(ValueError, match="set up for 3 tasks, got 2"):
        b.backward(torch.ones(2, requires_grad=True), [])


class _Mean(GradientBalancer):
    def aggregate(self, G: torch.Tensor) -> torch.Tensor:
        return G.mean(dim=0)


def test_gradient_balancer_writes_shared_and_task_gradients() -> None:
    shared, heads, losses = _problem(k=3)
    b = _Mean()
    b.backward(losses(), list(shared.parameters()))
    got_shared, got_heads = _grads([shared]), _grads([heads])
    assert b.last_cosines.shape == (3, 3)
    for m in (shared, heads):
        m.zero_grad()
    (losses().sum() / 3).backward(inputs=list(shared.parameters()))
    losses().sum().backward(inputs=list(heads.parameters()))
    assert all(
        torch.allclose(a, c, atol=1e-6) for a, c in zip(got_shared, _grads([shared]), strict=True)
    )
    assert all(
        torch.allclose(a, c, atol=1e-6) for a, c in zip(got_heads, _grads([heads]), strict=True)
    )


def test_jacobian_matches_one_backward_per_task() -> None:
    shared, _, losses = _problem(k=4)
    params = list(shared.parameters())
    G = jacobian(losses(), params)
    G_chunked = jacobian(losses(), params, chunk_size=3)
    rows = []
    for k in range(4):
        grads = torch.autograd.grad(losses()[k], params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    expected = torch.stack(rows)
    assert G.shape == (4, sum(p.numel() for p in params))
    assert torch.allclose(G, expected, atol=1e-6)
    assert torch.allclose(G_chunked, expected, atol=1e-6)


def test_jacobian_gives_zero_rows_for_unreached_parameters() -> None:
    w = torch.ones(3, requires_grad=True)
    v = torch.ones(2, requires_grad=True)
    G = jacobian(torch.stack([w.sum(), (2 * w).sum()]), [w, v])
    assert G.shape == (2, 5)
    assert torch.equal(G[:, 3:], torch.zeros(2, 2))
