"""Property tests of every gradient method's ``aggregate(G)`` on generated matrices.

Generic properties (finite output, one task reduces to its gradient, permutation invariance,
linearity under scaling) and each method's defining property from its paper.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lepton.balancers import GradientBalancer, available, balancer_class, create

from .balancer_matrices import cases, full_rank_cases, random

GRADIENT = sorted(n for n in available() if issubclass(balancer_class(n), GradientBalancer))
RANDOMISED = {"pcgrad", "gradvac", "graddrop"}
#: K = 1: aggregate(G) = scale(g) * g with these scales (documented in each class)
ONE_TASK_SCALE = {
    "cagrad": lambda g: (1 + 0.4) / (1 + 0.4**2),
    "nash_mtl": lambda g: 1 / g.norm(),
    "fairgrad": lambda g: 1 / g.norm(),
    "moco": lambda g: 0.5 / g.norm(),
    "db_mtl": lambda g: 0.1,
}
#: update(c·G) = c·update(G)
LINEAR = [
    "mgda",
    "upgrad",
    "dualproj",
    "imtl",
    "aligned_mtl",
    "conflict_free",
    "pcgrad",
    "gradnorm",
]
CASES = cases()
FULL_RANK = full_rank_cases()


def agg(name: str, G: torch.Tensor, **hp) -> torch.Tensor:
    return create(name, **hp).aggregate(G)


def test_every_registry_name_of_the_issue_is_available() -> None:
    expected = [
        *("ew", "static", "uw", "dwa", "rlw", "gls", "si", "famo", "db_mtl", "stch"),
        *("excess_mtl", "gradnorm", "mgda", "pcgrad", "gradvac", "graddrop", "cagrad", "imtl"),
        *("nash_mtl", "aligned_mtl", "moco", "fairgrad", "upgrad", "dualproj", "conflict_free"),
    ]
    assert sorted(expected) == available()


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_output_is_finite(name: str, case: tuple[str, torch.Tensor]) -> None:
    _, G = case
    torch.manual_seed(0)
    d = agg(name, G)
    assert d.shape == (G.shape[1],)
    assert torch.isfinite(d).all()


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_one_task_gives_its_own_gradient(name: str, scale: float) -> None:
    g = random(1, 12, seed=3, scale=scale)
    torch.manual_seed(0)
    d = agg(name, g)
    factor = ONE_TASK_SCALE.get(name, lambda g: 1.0)(g[0])
    torch.testing.assert_close(d, g[0] * factor, rtol=1e-6, atol=0.0)


#: methods whose solution is not unique when gradients are linearly dependent (IMTL-G's linear
#: system is singular; CAGrad's inner problem can have a face of minimisers)
NOT_UNIQUE_WHEN_DEPENDENT = {"imtl", "cagrad"}
DEPENDENT = {"rank2-5x30", "zero-rows-6x20", "parallel-4x20", "opposite-4x20", "k>p-6x4"}
PERM_CASES = [c for c in CASES if not c[0].startswith("random-64")]


@pytest.mark.parametrize("name", sorted(set(GRADIENT) - RANDOMISED))
@pytest.mark.parametrize("case", PERM_CASES, ids=[c[0] for c in PERM_CASES])
def test_permuting_tasks_changes_nothing(name: str, case: tuple[str, torch.Tensor]) -> None:
    label, G = case
    if name in NOT_UNIQUE_WHEN_DEPENDENT and label in DEPENDENT:
        pytest.skip("solution not unique for linearly dependent gradients")
    perm = torch.randperm(G.shape[0], generator=torch.Generator().manual_seed(1))
    d = agg(name, G)
    dp = agg(name, G[perm])
    scale = G.norm(dim=1).max() * max(1.0, float(d.norm() / G.norm(dim=1).max()))
    torch.testing.assert_close(dp / scale, d / scale, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("c", [1e-7, 3.0, 1e7])
def test_linear_under_scaling(name: str, c: float) -> None:
    G = random(5, 30, seed=11)
    torch.manual_seed(0)
    d = agg(name, G)
    torch.manual_seed(0)
    dc = agg(name, c * G)
    torch.testing.assert_close(dc / c, d, rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------------------ MGDA
def _simplex_points(k: int, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.dirichlet(np.ones(k), size=n)
    return np.vstack([pts, np.eye(k)])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mgda_is_the_minimum_norm_point_of_the_hull(case: tuple[str, torch.Tensor]) -> None:
    _, G = case
    b = create("mgda")
    d = b.aggregate(G)
    w = b.last_weights.double()
    assert (w >= -1e-12).all() and abs(float(w.sum()) - 1) < 1e-9
    M = (G @ G.T).numpy()
    s = max(np.trace(M) / len(M), 1e-300)
    nd = float(d @ d) / s
    # KKT of min wᵀMw on the simplex: every vertex's directional derivative ≥ the optimum
    assert np.all((M @ w.numpy()) / s >= nd - 1e-7)
    # no point of the hull is shorter (sampled)
    pts = _simplex_points(G.shape[0])
    norms = np.einsum("ni,ij,nj->n", pts, M, pts) / s
    assert nd <= norms.min() + 1e-9


def test_mgda_known_values() -> None:
    # orthogonal unit vectors: the midpoint; a vector and its half: the shorter one
    torch.testing.assert_close(
        agg("mgda", torch.tensor([[1.0, 0.0], [0.0, 1.0]])), torch.tensor([0.5, 0.5])
    )
    torch.testing.assert_close(
        agg("mgda", torch.tensor([[2.0, 0.0], [1.0, 0.0]])), torch.tensor([1.0, 0.0])
    )
    torch.testing.assert_close(
        agg("mgda", torch.tensor([[1.0, 0.0], [-1.0, 0.0]])), torch.tensor([0.0, 0.0])
    )


# ------------------------------------------------------------------- UPGrad, DualProj
@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dual_cone_methods_conflict_with_no_task(name: str, case) -> None:
    _, G = case
    d = agg(name, G)
    dots = G @ d
    bound = 1e-9 * G.norm(dim=1) * d.norm()
    assert (dots >= -bound).all(), dots.min()


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_are_the_mean_without_conflict(name: str) -> None:
    G = random(4, 10, seed=2).abs()  # all inner products positive
    torch.testing.assert_close(agg(name, G), G.mean(0))


def test_dualproj_is_the_closest_nonconflicting_direction() -> None:
    G = random(4, 6, seed=3)
    d = agg("dualproj", G)
    mean = G.mean(0)
    rng = torch.Generator().manual_seed(0)
    for _ in range(300):  # random non-conflicting candidates are never closer to the mean
        x = d + 0.5 * torch.randn(6, generator=rng, dtype=torch.float64)
        if (G @ x >= 0).all():
            assert (x - mean).norm() >= (d - mean).norm() - 1e-9


# ------------------------------------------------------------------------------ IMTL
@pytest.mark.parametrize("case", FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_imtl_g_projects_equally_on_every_unit_gradient(case) -> None:
    _, G = case
    d = agg("imtl", G, variant="g")
    proj = (G / G.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(proj, proj.mean().expand_as(proj), rtol=1e-7, atol=0.0)
    assert proj.mean() > 0


# ---------------------------------------------------------------------------- CAGrad
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cagrad_with_c_zero_is_the_mean(case) -> None:
    _, G = case
    torch.testing.assert_close(agg("cagrad", G, c=0.0, rescale=0), G.mean(0))


def test_cagrad_known_value() -> None:
    # torchjd's documented example (c = 0.5, no rescaling)
    G = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    torch.testing.assert_close(
        agg("cagrad", G, c=0.5, rescale=0),
        torch.tensor([0.1835, 1.2041, 1.2041]),
        atol=1e-4,
        rtol=0,
    )


@pytest.mark.parametrize("c", [0.2, 0.4, 0.9])
@pytest.mark.parametrize("case", FULL_RANK[:6], ids=[c[0] for c in FULL_RANK[:6]])
def test_cagrad_weights_solve_its_inner_problem(c: float, case) -> None:
    from lepton.balancers._solvers import cagrad_weights, normalized

    _, G = case
    Mn, _ = normalized((G @ G.T).numpy())
    w, _, g0 = cagrad_weights(Mn, c)
    k = len(w)
    b = Mn @ np.full(k, 1 / k)

    def F(x: np.ndarray) -> float:
        return float(b @ x + c * g0 * np.sqrt(max(x @ Mn @ x, 0)))

    assert abs(w.sum() - 1) < 1e-9 and (w >= -1e-12).all()
    best = min(F(x) for x in _simplex_points(k, 500))
    assert F(w) <= best + 1e-9


@pytest.mark.parametrize("c", [0.4, 0.9])
def test_cagrad_maximises_the_worst_improvement_in_the_ball(c: float) -> None:
    G = random(3, 8, seed=5)
    d = agg("cagrad", G, c=c, rescale=0)
    g0 = G.mean(0)
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-6)
    worst = (G @ d).min()
    rng = torch.Generator().manual_seed(1)
    for _ in range(500):  # random points of the ball are never better for the worst task
        u = torch.randn(8, generator=rng, dtype=torch.float64)
        x = g0 + c * g0.norm() * u / u.norm() * torch.rand(1, generator=rng, dtype=torch.float64)
        assert (G @ x).min() <= worst + 1e-6 * g0.norm() ** 2


# ---------------------------------------------------------------- Nash-MTL, FairGrad
@pytest.mark.parametrize("case", FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_nash_mtl_satisfies_the_bargaining_condition(case) -> None:
    _, G = case
    b = create("nash_mtl", max_norm=None)
    d = b.aggregate(G)
    alpha = b.last_weights.double()
    assert (alpha > 0).all()
    # g_k · d = 1/α_k for every task (Theorem 3.2 of the paper)
    torch.testing.assert_close(G @ d, 1.0 / alpha, rtol=1e-6, atol=0.0)


def test_nash_mtl_clips_to_max_norm() -> None:
    G = random(3, 10, seed=1)
    assert float(agg("nash_mtl", G, max_norm=0.5).norm()) == pytest.approx(0.5)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("case", FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_fairgrad_satisfies_its_optimality_condition(alpha: float, case) -> None:
    _, G = case
    b = create("fairgrad", alpha=alpha)
    d = b.aggregate(G)
    w = b.last_weights.double()
    assert (w > 0).all()
    torch.testing.assert_close(G @ d, w ** (-1.0 / alpha), rtol=1e-6, atol=0.0)


# ------------------------------------------------------------------ ConFIG, Aligned-MTL
@pytest.mark.parametrize("case", FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_config_has_equal_positive_cosine_with_every_task(case) -> None:
    _, G = case
    d = agg("conflict_free", G)
    cos = (G @ d) / (G.norm(dim=1) * d.norm())
    torch.testing.assert_close(cos, cos.mean().expand_as(cos), rtol=1e-7, atol=0.0)
    assert cos.mean() > 0
    # length: the sum of the gradients' projections on the direction
    torch.testing.assert_close(d.norm(), (G @ (d / d.norm())).sum(), rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("case", FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_aligned_mtl_makes_the_system_well_conditioned(case) -> None:
    from lepton.balancers._aligned_mtl import AlignedMTL

    _, G = case
    k = G.shape[0]
    # the balance transformation B: Ĝ = B G has every singular value equal to the smallest one
    B = torch.stack(
        [AlignedMTL(pref=[float(i == j) for j in range(k)]).aggregate(G) for i in range(k)]
    )
    sv = torch.linalg.svdvals(B)
    sv_g = torch.linalg.svdvals(G)
    torch.testing.assert_close(sv, sv_g.min().expand_as(sv), rtol=1e-6, atol=0.0)


# ---------------------------------------------------------------------- PCGrad, GradVac
def _pcgrad_reference(G: torch.Tensor, orders: np.ndarray) -> torch.Tensor:
    out = torch.zeros(G.shape[1], dtype=G.dtype)
    for i in range(G.shape[0]):
        gi = G[i].clone()
        for j in orders[i]:
            dot = gi @ G[j]
            if dot < 0 and G[j].norm() > 0:
                gi = gi - dot / (G[j] @ G[j]) * G[j]
        out += gi
    return out


def _orders(k: int, seed: int) -> np.ndarray:
    from lepton.balancers._surgery import _orders as orders

    torch.manual_seed(seed)
    return orders(k)


@pytest.mark.parametrize("case", CASES[1:9], ids=[c[0] for c in CASES[1:9]])
def test_pcgrad_matches_the_papers_algorithm(case) -> None:
    _, G = case
    k = G.shape[0]
    expected = _pcgrad_reference(G, _orders(k, 3))
    torch.manual_seed(3)
    torch.testing.assert_close(agg("pcgrad", G), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_with_two_tasks_conflicts_with_neither(seed: int) -> None:
    G = random(2, 7, seed=seed)
    G[1] = G[1] - ((G[1] @ G[0]) / (G[0] @ G[0]) + 0.5) * G[0]  # make them conflict
    assert G[0] @ G[1] < 0
    d = agg("pcgrad", G)
    assert (G @ d >= -1e-12).all()


def _gradvac_reference(
    G: torch.Tensor, orders: np.ndarray, goals: torch.Tensor, beta: float
) -> torch.Tensor:
    out = torch.zeros(G.shape[1], dtype=G.dtype)
    for i in range(G.shape[0]):
        gi = G[i].clone()
        for j in orders[i]:
            phi = gi @ G[j] / (gi.norm() * G[j].norm())
            goal = goals[i, j]
            if phi < goal:
                w = gi.norm() * (goal * (1 - phi**2).sqrt() - phi * (1 - goal**2).sqrt())
                w = w / (G[j].norm() * (1 - goal**2).sqrt())
                gi = gi + w * G[j]
            goals[i, j] = (1 - beta) * goal + beta * phi
        out += gi
    return out


def test_gradvac_matches_the_papers_algorithm_over_several_steps() -> None:
    b = create("gradvac", beta=0.3, num_tasks=4)
    goals = torch.zeros(4, 4, dtype=torch.float64)
    for step in range(4):
        G = random(4, 9, seed=20 + step)
        expected = _gradvac_reference(G, _orders(4, step), goals, 0.3)
        torch.manual_seed(step)
        torch.testing.assert_close(b.aggregate(G), expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(b.goals, goals, rtol=1e-9, atol=1e-12)


def test_gradvac_reaches_the_similarity_goal() -> None:
    b = create("gradvac", num_tasks=2)
    b.goals.fill_(0.5)
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(0)
    b.aggregate(G)
    # each modified gradient now has cosine 0.5 with the other task: g_1' = g_1 + w g_2
    d = b.last_weights.double() @ G  # = g_1' + g_2' = (1 + w)(1, 1)
    assert float(d[0]) == pytest.approx(float(d[1]))
    w = float(d[0]) - 1
    assert (1 / np.sqrt(1 + w**2) * w) == pytest.approx(0.5)


# ------------------------------------------------------------------------------ GradDrop
def test_graddrop_keeps_one_sign_per_coordinate() -> None:
    G = random(5, 400, seed=4)
    torch.manual_seed(0)
    d = agg("graddrop", G)
    pos = G.clamp(min=0).sum(0)
    neg = G.clamp(max=0).sum(0)
    ok = torch.isclose(d, pos, atol=1e-12) | torch.isclose(d, neg, atol=1e-12)
    assert ok.all()
    # P = 1/2 (1 + Σ∇/Σ|∇|) is the probability of keeping the positive side
    purity = 0.5 * (1 + G.sum(0) / G.abs().sum(0))
    kept_pos = torch.isclose(d, pos, atol=1e-12) & ~torch.isclose(pos, neg, atol=1e-12)
    assert abs(kept_pos.double().mean() - purity.mean()) < 0.1


def test_graddrop_with_full_leak_is_the_sum() -> None:
    G = random(3, 50, seed=1)
    torch.testing.assert_close(agg("graddrop", G, leak=1.0), G.sum(0))


def test_graddrop_agreeing_signs_are_summed() -> None:
    G = random(3, 50, seed=2).abs()
    torch.testing.assert_close(agg("graddrop", G), G.sum(0))
