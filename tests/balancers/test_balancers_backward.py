"""``balancer.backward`` writes the right ``.grad`` on every route (representation gradients from
one backward, the layer-wise trunk Jacobian, the general batched Jacobian), handles tasks without
labels, reduces to plain gradient descent for one task, and keeps its state across checkpoints.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lepton.balancers import GradientBalancer, available, balancer_class, create
from lepton.errors import ConfigError
from lepton.jacobian import jacobian, pairwise_cosine

GRADIENT = sorted(n for n in available() if issubclass(balancer_class(n), GradientBalancer))
K = 3


class Net(nn.Module):
    """A small hard-sharing model: trunk with batch norm, dropout and a residual block."""

    def __init__(self, k: int = K, fusion: bool = False) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(5, 8),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(8, 6),
            nn.Tanh(),
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 2)) for _ in range(k)
        )
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.trunk(x)
        outs = [h(z) for h in self.heads]
        if self.fusion:  # the last task also reads the first task's output: not separable
            outs[-1] = outs[-1] + outs[0]
        return z, outs


def _setup(seed: int = 0, k: int = K, fusion: bool = False):
    torch.manual_seed(seed)
    net = Net(k, fusion)
    x = torch.randn(9, 5)
    y = torch.randn(k, 9, 2)
    return net, x, y


def _losses(net: Net, x: torch.Tensor, y: torch.Tensor, seed: int = 1):
    torch.manual_seed(seed)  # same dropout mask on every call
    z, outs = net(x)
    return z, torch.stack([F.mse_loss(o, y[i]) for i, o in enumerate(outs)])


def _make(name: str, mode: str | None, k: int = K):
    hp = {} if mode is None else {"mode": mode}
    return create(name, num_tasks=k, **hp)


def _reference(name: str, mode: str, fusion: bool = False):
    """Gradients from the definition: explicit Jacobian, aggregate, separate backward passes."""
    net, x, y = _setup(fusion=fusion)
    b = _make(name, mode)
    z, losses = _losses(net, x, y)
    ell = b.transform(losses)
    shared = list(net.trunk.parameters())
    if mode == "features":
        G = jacobian(ell, [z])
        torch.manual_seed(7)
        upd, _ = b.combine_features(G.view(K, *z.shape), (G @ G.T).double(), torch.arange(K), z)
        shared_grads = torch.autograd.grad(z, shared, upd, retain_graph=True)
    else:
        G = jacobian(ell, shared)
        torch.manual_seed(7)
        upd, _ = b.combine(G, (G @ G.T).double(), torch.arange(K))
        shared_grads = [
            u.view_as(p)
            for u, p in zip(upd.split([p.numel() for p in shared]), shared, strict=True)
        ]
    hs = b.head_scale
    head_obj = ell.sum() if hs is None else (hs.to(ell) * ell).sum()
    head_grads = torch.autograd.grad(head_obj, list(net.heads.parameters()))
    return [*shared_grads, *head_grads], pairwise_cosine(G.reshape(K, -1))


def _run(name: str, mode: str, features: bool, fusion: bool = False):
    net, x, y = _setup(fusion=fusion)
    b = _make(name, mode)
    z, losses = _losses(net, x, y)
    torch.manual_seed(7)
    b.backward(losses, net.trunk.parameters(), features=z if features else None)
    grads = [p.grad for p in [*net.trunk.parameters(), *net.heads.parameters()]]
    return grads, b


ROUTES = [
    (name, mode, feats)
    for name in GRADIENT
    for mode, feats in [("params", True), ("params", False), ("features", True)]
    if mode in balancer_class(name).modes
]


@pytest.mark.parametrize(
    ("name", "mode", "features"),
    ROUTES,
    ids=[f"{n}-{m}-{'z' if f else 'noz'}" for n, m, f in ROUTES],
)
def test_backward_equals_the_definition(name: str, mode: str, features: bool) -> None:
    expected, cos = _reference(name, mode)
    got, b = _run(name, mode, features)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.last_cosines.to(cos), cos, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "nash_mtl", "excess_mtl"])
@pytest.mark.parametrize("mode", ["params", "features"])
def test_a_graph_that_is_not_separable_falls_back_exactly(name: str, mode: str) -> None:
    expected, _ = _reference(name, mode, fusion=True)
    got, _ = _run(name, mode, True, fusion=True)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", available())
def test_one_task_is_plain_gradient_descent(name: str) -> None:
    net, x, y = _setup(k=1)
    z, losses = _losses(net, x, y)
    plain = torch.autograd.grad(losses.sum(), list(net.parameters()), retain_graph=True)
    torch.manual_seed(0)
    b = create(name, num_tasks=1)
    b.backward(losses, net.trunk.parameters(), features=z)
    params = list(net.parameters())
    n_shared = len(list(net.trunk.parameters()))
    for part in (slice(0, n_shared), slice(n_shared, None)):  # shared, then task-specific
        got = torch.cat([p.grad.flatten() for p in params[part]])
        want = torch.cat([g.flatten() for g in plain[part]])
        assert float(F.cosine_similarity(got, want, dim=0)) > 1 - 1e-6, name


@pytest.mark.parametrize("name", available())
def test_a_task_without_labels_in_the_batch(name: str) -> None:
    net, x, y = _setup()
    torch.manual_seed(1)
    z, outs = net(x)
    losses = torch.stack([F.mse_loss(o, y[i]) for i, o in enumerate(outs)])
    losses = torch.stack([losses[0], losses[1] * 0.0, losses[2]])  # task 1: an exact, connected 0
    valid = torch.tensor([True, False, True])
    torch.manual_seed(0)
    b = create(name, num_tasks=K)
    b.backward(losses, net.trunk.parameters(), features=z, valid=valid)
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(float(p.grad.abs().sum()) == 0 for p in net.heads[1].parameters())
    if b.last_weights is not None and isinstance(b, GradientBalancer):
        assert float(b.last_weights[1]) == 0.0


def test_grads_accumulate_like_autograd() -> None:
    net, x, y = _setup()
    z, losses = _losses(net, x, y)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    create("mgda").backward(losses, net.trunk.parameters(), features=z)
    net2, x, y = _setup()
    z2, losses2 = _losses(net2, x, y)
    create("mgda").backward(losses2, net2.trunk.parameters(), features=z2)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad + 1)


def test_losses_as_a_list_work_too() -> None:
    net, x, y = _setup()
    torch.manual_seed(1)
    z, outs = net(x)
    losses = [F.mse_loss(o, y[i]) for i, o in enumerate(outs)]
    create("upgrad").backward(losses, net.trunk.parameters(), features=z)
    expected, _ = _reference("upgrad", "params")
    torch.testing.assert_close(next(net.trunk.parameters()).grad, expected[0])


def test_features_mode_needs_features() -> None:
    net, x, y = _setup()
    _, losses = _losses(net, x, y)
    with pytest.raises(ConfigError, match="needs the shared representation"):
        create("mgda", mode="features").backward(losses, net.trunk.parameters())


@pytest.mark.parametrize("name", ["moco", "db_mtl"])
def test_parameter_only_methods_reject_features_mode(name: str) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        create(name, mode="features")


def test_bad_hyperparameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"balancer\.temp: unknown hyperparameter of 'dwa'"):
        create("dwa", temp=2)
    with pytest.raises(ConfigError, match="c must be >= 0"):
        create("cagrad", c=-1)
    with pytest.raises(ConfigError, match="variant"):
        create("imtl", variant="x")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        create("nope")


# ---------------------------------------------------------- methods with gradient statistics
def test_gradnorm_update_rule() -> None:
    net, x, y = _setup()
    b = create("gradnorm", num_tasks=K, alpha=1.5, mode="features")
    z, l0 = _losses(net, x, y)
    b.backward(l0, net.trunk.parameters(), features=z)  # step 0: records L(0)
    # step 1 with other losses: w.grad = sign(G_k − Ḡ r_k^α) ‖∇_z L_k‖
    with torch.no_grad():
        b.loss_weights.copy_(torch.tensor([0.5, 1.0, 1.5]))  # sums to K
        b.loss_weights.grad = None
    net.zero_grad()
    z, l1 = _losses(net, x, y * 0.5)
    gz = jacobian(l1, [z])  # raw per-task representation gradients
    w = torch.tensor([0.5, 1.0, 1.5])
    expected = torch.autograd.grad((w * l1).sum(), list(net.heads.parameters()), retain_graph=True)
    b.backward(l1, net.trunk.parameters(), features=z)
    raw = gz.norm(dim=1)
    gk = w * raw
    rel = l1.detach() / l0.detach()
    target = gk.mean() * (rel / rel.mean()) ** 1.5
    torch.testing.assert_close(
        b.loss_weights.grad, torch.sign(gk - target) * raw, rtol=1e-5, atol=0.0
    )
    # the step used Σ w_k L_k, heads included
    for p, e in zip(net.heads.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    # renormalised to Σw = K before the next step
    b.transform(l1.detach())
    assert float(b.loss_weights.detach().sum()) == pytest.approx(K)


def test_db_mtl_update_rule() -> None:
    b = create("db_mtl", num_tasks=2, beta=0.9)
    gen = torch.Generator().manual_seed(0)
    tracked = torch.zeros(2, 5, dtype=torch.float64)
    for _ in range(3):
        G = torch.randn(2, 5, generator=gen, dtype=torch.float64)
        d = b.aggregate(G)
        tracked = G + 0.9 * (tracked - G)
        n = tracked.norm(dim=1)
        torch.testing.assert_close(d, (n.max() / n) @ tracked)
    # heads get ∇ log L_k
    assert torch.allclose(
        b.transform(torch.tensor([1.0, 2.0])), torch.log(torch.tensor([1.0, 2.0]) + 1e-8)
    )


def test_excess_mtl_update_rule() -> None:
    b = create("excess_mtl", num_tasks=2, robust_step_size=0.5)
    gen = torch.Generator().manual_seed(1)
    sq = torch.zeros(2, 4, dtype=torch.float64)
    w = torch.ones(2, dtype=torch.float64)
    first = None
    for _ in range(3):
        G = torch.randn(2, 4, generator=gen, dtype=torch.float64)
        raw = G / w[:, None]  # aggregate sees gradients of w_k L_k
        d = b.aggregate(G)
        sq += raw**2
        risk = (raw**2 / torch.sqrt(sq + 1e-7)).sum(1)
        if first is None:
            first = risk
        else:
            w = w * torch.exp(0.5 * risk / first)
            w = 2 * w / w.sum()
        torch.testing.assert_close(d, w @ raw)
        torch.testing.assert_close(b.loss_weights, w)


def test_moco_update_rule() -> None:
    b = create("moco", num_tasks=2, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5)
    gen = torch.Generator().manual_seed(2)
    Y = torch.zeros(2, 3, dtype=torch.float64)
    lam = torch.full((2,), 0.5, dtype=torch.float64)
    for t in range(1, 4):
        G = torch.randn(2, 3, generator=gen, dtype=torch.float64)
        d = b.aggregate(G)
        h = G / G.norm(dim=1, keepdim=True)  # losses unknown to aggregate(): L = 1
        Y = Y - 0.5 / t**0.5 * (Y - h)
        v = lam - 0.1 / t**0.5 * (Y @ Y.T) @ lam
        # projection of v onto the simplex (two tasks: shift equally, clip)
        s = (v.sum() - 1) / 2
        lam = (v - s).clamp(min=0)
        lam = lam / lam.sum()
        torch.testing.assert_close(d, lam @ Y)


@pytest.mark.parametrize(
    "name",
    [
        "moco",
        "db_mtl",
        "excess_mtl",
        "gradvac",
        "nash_mtl",
        "famo",
        "dwa",
        "stch",
        "gradnorm",
        "imtl",
    ],
)
def test_state_survives_a_checkpoint(name: str) -> None:
    net, x, y = _setup()
    torch.manual_seed(0)
    b = create(name, num_tasks=K)
    for _ in range(2):
        z, losses = _losses(net, x, y)
        b.backward(losses, net.trunk.parameters(), features=z)
        b.end_epoch()
    state = b.state_dict()
    fresh = create(name, num_tasks=K)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])
    net1, x, y = _setup()
    net2, _, _ = _setup()
    for bal, n in ((b, net1), (fresh, net2)):
        z, losses = _losses(n, x, y)
        torch.manual_seed(3)
        bal.backward(losses, n.trunk.parameters(), features=z)
    for p, q in zip(net1.parameters(), net2.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
