"""The two-task toy problem of the CAGrad (Liu et al., 2021) and Nash-MTL (Navon et al., 2022)
papers: methods that claim convergence to the Pareto front reach it, on CPU in seconds."""

from __future__ import annotations

import pytest
import torch

from lepton.balancers import create

LOWER = 5e-6
#: the papers' five starting points
STARTS = [(-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)]


def toy(x: torch.Tensor) -> torch.Tensor:
    """(…, 2) → (…, 2): the two objectives (as in the papers' code)."""
    x1, x2 = x[..., 0], x[..., 1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
    return torch.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2], -1)


def gradients(x: torch.Tensor) -> torch.Tensor:
    """(S, 2 tasks, 2 coordinates)."""
    x = x.detach().requires_grad_(True)
    f = toy(x)
    rows = [torch.autograd.grad(f[:, k].sum(), x, retain_graph=True)[0] for k in range(2)]
    return torch.stack(rows, 1)


def pareto_stationarity(G: torch.Tensor) -> torch.Tensor:
    """‖min-norm point of the segment [g1, g2]‖ / max‖g_k‖ per start (0: Pareto-stationary)."""
    g1, g2 = G[:, 0], G[:, 1]
    diff = g1 - g2
    t = ((g2 * -diff).sum(1) / (diff * diff).sum(1).clamp(min=1e-300)).clamp(0, 1)
    d = t[:, None] * g1 + (1 - t[:, None]) * g2
    return d.norm(dim=1) / G.norm(dim=2).max(1).values.clamp(min=1e-300)


def optimise(name: str, starts: list[tuple[float, float]], steps: int, **hp) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.tensor(starts, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    balancers = [create(name, num_tasks=2, **hp) for _ in starts]
    for _ in range(steps):
        G = gradients(x)
        opt.zero_grad()
        x.grad = torch.stack([b.aggregate(g) for b, g in zip(balancers, G, strict=True)])
        opt.step()
        sched.step()
    return x.detach()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nash_mtl", "fairgrad"])
def test_bargaining_methods_reach_the_front_from_every_start(name: str) -> None:
    x = optimise(name, STARTS, steps=500)
    assert (pareto_stationarity(gradients(x)) < 1e-4).all()
    assert ((x[:, 1] + 8.4).abs() < 0.1).all()  # the Pareto set lies at x2 ≈ -8.4, |x1| < 7
    assert (x[:, 0].abs() < 7).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "mgda",
        "cagrad",
        "pcgrad",
        "upgrad",
        "dualproj",
        "imtl",
        "conflict_free",
        "aligned_mtl",
        "moco",
    ],
)
def test_gradient_methods_reach_the_front(name: str) -> None:
    x = optimise(name, [STARTS[1], STARTS[4]], steps=300)
    s = pareto_stationarity(gradients(x))
    assert s[0] < 1e-3 and abs(float(x[0, 1]) + 8.4) < 0.1  # from the lower-left start: there
    assert s[1] < 0.05 and float(x[1, 1]) < -6  # from the far side: well on the way
