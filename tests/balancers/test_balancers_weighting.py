"""Loss-weighting methods: weights finite and positive where the paper says so, and each documented
update rule checked step by step on a fixed sequence of losses (and gradients where they use them).
"""

from __future__ import annotations

import math

import pytest
import torch

from lepton.balancers import LossWeighting, available, balancer_class, create

LOSS = sorted(n for n in available() if issubclass(balancer_class(n), LossWeighting))
SEQUENCE = [
    torch.tensor([2.0, 0.5, 1.0]),
    torch.tensor([1.5, 0.45, 1.2]),
    torch.tensor([1.2, 0.40, 0.9]),
    torch.tensor([1.0, 0.38, 0.8]),
    torch.tensor([0.8, 0.30, 0.7]),
    torch.tensor([0.6, 0.29, 0.5]),
]


def _objective_grad(b, losses: torch.Tensor) -> torch.Tensor:
    """d objective / d losses: the effective weights the method applied."""
    x = losses.clone().requires_grad_(True)
    b.backward(x, [])
    return x.grad


@pytest.mark.parametrize("name", LOSS)
def test_weights_are_finite_and_positive_and_match_the_gradient(name: str) -> None:
    torch.manual_seed(0)
    b = create(name, num_tasks=3)
    for i, losses in enumerate(SEQUENCE):
        g = _objective_grad(b, losses)
        assert torch.isfinite(g).all() and (g > 0).all(), (name, i, g)
        w = b.last_weights
        assert w is not None and torch.isfinite(w).all() and (w > 0).all()
        torch.testing.assert_close(g, w.to(g), rtol=1e-5, atol=0.0)
        b.end_epoch()


@pytest.mark.parametrize("name", LOSS)
def test_one_task_is_plain_gradient_descent_up_to_scale(name: str) -> None:
    torch.manual_seed(0)
    b = create(name, num_tasks=1)
    g = _objective_grad(b, torch.tensor([0.7]))
    assert g.shape == (1,) and float(g) > 0


@pytest.mark.parametrize("name", LOSS)
def test_a_task_without_labels_gets_no_weight_and_no_nan(name: str) -> None:
    torch.manual_seed(0)
    b = create(name, num_tasks=3)
    x = torch.tensor([1.0, 0.0, 0.5], requires_grad=True)
    b.backward(x, [], valid=torch.tensor([True, False, True]))
    assert torch.isfinite(x.grad).all()
    for p in b.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_equal_and_static() -> None:
    assert create("ew").weights(torch.tensor([3.0, 1.0])).tolist() == [1.0, 1.0]
    b = create("static", num_tasks=2, task_weights=[2.0, 0.5])
    assert b.weights(torch.tensor([3.0, 1.0])).tolist() == [2.0, 0.5]


def test_uncertainty_weighting_gradient() -> None:
    b = create("uw", num_tasks=2, init=0.5)
    x = torch.tensor([2.0, 1.0], requires_grad=True)
    b.backward(x, [])
    # d/dL (e^{-s} L + s) = e^{-s};  d/ds = -e^{-s} L + 1
    torch.testing.assert_close(x.grad, torch.full((2,), math.exp(-0.5)))
    torch.testing.assert_close(b.log_vars.grad, 1 - math.exp(-0.5) * torch.tensor([2.0, 1.0]))


def test_dwa_follows_equation_7() -> None:
    b = create("dwa", num_tasks=3, temperature=2.0)
    means = []
    for epoch, losses in enumerate(SEQUENCE[:4]):
        w = b.weights(losses)
        if epoch < 2:
            assert w.tolist() == [1.0, 1.0, 1.0]
        else:
            r = means[-1] / means[-2]
            expected = 3 * torch.softmax(r / 2.0, 0)
            torch.testing.assert_close(w, expected.float())
        means.append(losses.double())
        b.end_epoch()
    # the mean over the epoch, not the last step, is what counts
    b2 = create("dwa", num_tasks=2)
    for losses in ([1.0, 1.0], [3.0, 1.0]):  # epoch 1: mean (2, 1)
        b2.weights(torch.tensor(losses))
    b2.end_epoch()
    b2.weights(torch.tensor([1.0, 1.0]))  # epoch 2: mean (1, 1)
    b2.end_epoch()
    r = torch.tensor([0.5, 1.0])
    torch.testing.assert_close(b2.weights(torch.tensor([1.0, 1.0])), 2 * torch.softmax(r / 2, 0))


def test_rlw_draws_softmax_of_a_standard_normal() -> None:
    b = create("rlw", num_tasks=4)
    torch.manual_seed(5)
    w = b.weights(torch.ones(4))
    torch.manual_seed(5)
    torch.testing.assert_close(w, torch.softmax(torch.randn(4), 0))
    draws = torch.stack([b.weights(torch.ones(4)) for _ in range(2000)])
    assert torch.allclose(draws.sum(1), torch.ones(2000))
    assert (draws.mean(0) - 0.25).abs().max() < 0.02  # exchangeable: mean 1/K
    for dist in ("uniform", "dirichlet"):
        w = create("rlw", distribution=dist).weights(torch.ones(3))
        assert (w > 0).all() and float(w.sum()) == pytest.approx(1.0)


def test_gls_is_the_geometric_mean() -> None:
    b = create("gls", num_tasks=3)
    x = torch.tensor([2.0, 0.5, 1.0], requires_grad=True)
    obj = b.objective(x)
    assert float(obj.detach()) == pytest.approx((2.0 * 0.5 * 1.0) ** (1 / 3))
    obj.backward()
    torch.testing.assert_close(x.grad, obj.detach() / (3 * x.detach()))


def test_si_is_the_log_sum() -> None:
    b = create("si", num_tasks=2)
    x = torch.tensor([2.0, 0.25], requires_grad=True)
    b.backward(x, [])
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 4.0]))


def test_stch_warms_up_then_smooths_the_max() -> None:
    b = create("stch", num_tasks=3, mu=0.5, warmup_epochs=2)
    # epoch 1: log-sum
    g = _objective_grad(b, SEQUENCE[0])
    torch.testing.assert_close(g, 1 / SEQUENCE[0])
    b.end_epoch()
    # epoch 2 (last warm-up epoch): log-sum, and its mean losses become the nadir vector
    for losses in SEQUENCE[1:3]:
        _objective_grad(b, losses)
    b.end_epoch()
    nadir = (SEQUENCE[1] + SEQUENCE[2]).double() / 2
    torch.testing.assert_close(b.nadir, nadir)
    x = SEQUENCE[3]
    g = _objective_grad(b, x)
    z = torch.log(x.double() / nadir) / 0.5
    expected = 3 * torch.softmax(z, 0) / x.double()
    torch.testing.assert_close(g.double(), expected, rtol=1e-5, atol=0.0)
    # small mu: the gradient concentrates on the worst normalised task
    b2 = create("stch", num_tasks=3, mu=1e-3, warmup_epochs=0)
    g2 = _objective_grad(b2, torch.tensor([1.0, 3.0, 2.0]))
    assert int(g2.argmax()) == 1 and float(g2[0] + g2[2]) < 1e-6


def test_famo_weights_and_logit_update() -> None:
    b = create("famo", num_tasks=3, w_lr=0.1, gamma=0.01)
    l0, l1 = SEQUENCE[0], SEQUENCE[1]
    w0 = b.weights(l0)
    # z = softmax(0) = 1/3: weights ∝ z / L, summing to 1
    torch.testing.assert_close(w0, (1 / l0) / (1 / l0).sum(), rtol=1e-6, atol=0.0)
    w1 = b.weights(l1)  # moves the logits with δ = log L0 − log L1, then weights
    delta = torch.log(l0.double() + 1e-8) - torch.log(l1.double() + 1e-8)
    z = torch.full((3,), 1 / 3, dtype=torch.float64)
    grad = z * (delta - (z * delta).sum())  # ∇_ξ zᵀδ (+ γξ = 0 at ξ = 0)
    # first Adam step: m̂ = g, v̂ = g² → ξ = −lr · g / (|g| + eps)
    xi = -0.1 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(b.logits, xi, rtol=1e-6, atol=1e-9)
    zn = torch.softmax(xi, 0)
    expected = (zn / l1.double()) / (zn / l1.double()).sum()
    torch.testing.assert_close(w1.double(), expected, rtol=1e-5, atol=0.0)
    # the task whose loss fell most slowly (task 2: 1.0 → 1.2) gains weight
    assert float(zn[2]) > 1 / 3


def test_famo_explicit_update_uses_the_same_batch() -> None:
    b = create("famo", num_tasks=2)
    b.weights(torch.tensor([1.0, 1.0]))
    b.update(torch.tensor([0.5, 1.0]))  # task 0 improved, task 1 did not
    logits = b.logits.clone()
    assert logits[1] > logits[0]
    b.weights(torch.tensor([0.4, 0.9]))  # no second update for the same step
    torch.testing.assert_close(b.logits, logits)


def test_imtl_l_scales_the_losses() -> None:
    b = create("imtl", variant="l", num_tasks=2)
    with torch.no_grad():
        b.scales.copy_(torch.tensor([0.3, -0.2]))
    x = torch.tensor([2.0, 0.5], requires_grad=True)
    b.backward(x, [])
    s = torch.tensor([0.3, -0.2])
    torch.testing.assert_close(x.grad, torch.exp(s))  # d/dL (e^s L − s)
    torch.testing.assert_close(b.scales.grad, torch.exp(s) * x.detach() - 1)  # d/ds
    assert b.kind == "loss" and b.last_cosines is None
