"""Sharing architectures: shapes, which parameters are shared, gates, specs, defining properties."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lepton import ConfigError, MultiTaskModel, Task
from lepton.models import (
    CGC,
    PLE,
    CrossStitch,
    DSelectK,
    DSelectKGate,
    ExpertBank,
    MMoE,
    SingleTask,
    available_architectures,
    create_trunk,
    representation_tasks,
    smooth_step,
    trunk_options,
)
from lepton.train import decay_split

ARCHS = ["shared_bottom", "mmoe", "cgc", "ple", "cross_stitch", "dselect_k", "single_task"]
GATED = ["mmoe", "cgc", "ple", "dselect_k"]
TASKS = [
    Task("b", "binary", classes=("n", "p")),
    Task("m", "multiclass", classes=("x", "y", "z")),
    Task("r", "regression", target=("u", "v")),
]


def build(arch: str, tasks=TASKS, **options) -> MultiTaskModel:
    cfg = {"architecture": arch, "hidden": [12], "dropout": 0.0, "head_hidden": [6], **options}
    return MultiTaskModel.build(tasks, n_numeric=5, cardinalities=[4], config=cfg, seed=0)


def inputs(n: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "numeric": torch.randn(n, 5, generator=g),
        "categorical": torch.randint(0, 4, (n, 1), generator=g),
    }


def test_every_architecture_is_registered() -> None:
    assert sorted(ARCHS) == available_architectures()
    assert trunk_options("mmoe") == ["num_experts"]
    assert trunk_options("ple") == ["num_shared_experts", "num_task_experts", "num_levels"]
    assert trunk_options("dselect_k") == ["num_experts", "k", "gamma"]


@pytest.mark.parametrize("arch", ARCHS)
def test_output_and_representation_shapes(arch: str) -> None:
    model = build(arch)
    rep = model.representation(inputs(7))
    if model.trunk.shares_representation:
        assert isinstance(rep, torch.Tensor) and rep.shape == (7, model.trunk.out_dim)
    else:
        assert set(rep) == {"b", "m", "r"}
        assert all(v.shape == (7, model.trunk.out_dim) for v in rep.values())
    out = model(inputs(7))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"b": (7, 1), "m": (7, 3), "r": (7, 2)}


@pytest.mark.parametrize("arch", ARCHS)
def test_parameters_partition_into_shared_and_per_task(arch: str) -> None:
    model = build(arch)
    shared = {id(p) for p in model.shared_parameters()}
    owned = {t.name: {id(p) for p in model.task_parameters(t.name)} for t in TASKS}
    every = {id(p) for p in model.parameters()}
    assert shared.isdisjoint(set().union(*owned.values()))
    for a in owned:
        for b in owned:
            assert a == b or owned[a].isdisjoint(owned[b])
    assert shared | set().union(*owned.values()) == every
    assert {id(p) for p in model.task_specific_parameters()} == every - shared


def _reached(model: MultiTaskModel, task: str) -> set[int]:
    """Parameters that receive a non-zero gradient from ``task``'s output alone."""
    model.zero_grad(set_to_none=True)
    model(inputs())[task].pow(2).sum().backward()
    return {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("arch", ARCHS)
def test_declared_sharing_matches_where_gradients_flow(arch: str) -> None:
    """A task's own parameters are reached by that task only; a shared parameter by several."""
    model = build(arch)
    reached = {t.name: _reached(model, t.name) for t in TASKS}
    for t in TASKS:
        for p in model.task_parameters(t.name):
            assert id(p) in reached[t.name]
            assert all(id(p) not in reached[o] for o in reached if o != t.name)
    for p in model.shared_parameters():
        assert sum(id(p) in r for r in reached.values()) >= 2


def test_single_task_shares_nothing_not_even_the_encoder() -> None:
    model = build("single_task")
    assert model.shared_parameters() == []
    encoders = model.encoder.encoders
    assert set(encoders) == {"b", "m", "r"}
    emb = [encoders[t].embeddings[0].weight for t in ("b", "m", "r")]
    assert not torch.equal(emb[0], emb[1])  # independently initialised copies
    # one optimizer step on task b's loss moves nothing that belongs to m or r
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(inputs())["b"].sum().backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".b." in f".{n}." or n.startswith(("heads.b.",)) for n in moved)


def test_single_task_with_one_task_and_plain_numeric_input() -> None:
    model = MultiTaskModel.build([Task("y", "regression")], n_numeric=3, config={
        "architecture": "single_task", "hidden": [4]})  # fmt: skip
    assert model({"numeric": torch.zeros(2, 3)})["y"].shape == (2, 1)


@pytest.mark.parametrize("arch", GATED)
def test_gates_are_distributions_and_observable(arch: str) -> None:
    model = build(arch)
    assert model.trunk.last_gates is None
    model(inputs(9))
    gates = model.trunk.last_gates
    labels = model.trunk.gate_labels()
    assert gates is not None and set(gates) == set(labels)
    assert {"b", "m", "r"} <= set(gates)
    for key, g in gates.items():
        assert g.shape == (9, len(labels[key]))
        assert not g.requires_grad
        assert (g >= 0).all()
        torch.testing.assert_close(g.sum(dim=1), torch.ones(9), rtol=0, atol=1e-5)


def test_mmoe_is_a_gated_sum_of_shared_experts() -> None:
    trunk = MMoE(6, ["a", "b"], hidden=[5], num_experts=3)
    x = torch.randn(4, 6)
    rep = trunk(x)
    layer = trunk.experts.layers[0]
    experts = [F.relu(x @ layer.weight[i] + layer.bias[i, 0]) for i in range(3)]
    for t in ("a", "b"):
        g = torch.softmax(trunk.gates[t].linear(x), dim=1)
        expected = sum(g[:, i : i + 1] * experts[i] for i in range(3))
        torch.testing.assert_close(rep[t], expected)


def test_expert_bank_equals_separate_mlps() -> None:
    bank = ExpertBank(3, 4, [6, 2], activation="tanh")
    x = torch.randn(5, 4)
    out = bank(x)
    for e in range(3):
        h = x
        for layer in bank.layers:
            h = torch.tanh(h @ layer.weight[e] + layer.bias[e, 0])
        torch.testing.assert_close(out[e], h)
    # one input per expert gives the same as the shared input repeated
    torch.testing.assert_close(bank(x.expand(3, 5, 4)), out)


def test_cgc_gate_columns_are_own_experts_then_shared() -> None:
    trunk = CGC(6, ["a", "b"], hidden=[4], num_shared_experts=2, num_task_experts=1)
    x = torch.randn(3, 6)
    rep = trunk(x)
    layer = trunk.levels[0]
    own = layer.task_experts["a"](x)
    shared = layer.shared(x)
    g = trunk.last_gates["a"]
    expected = torch.einsum("be,ebh->bh", g, torch.cat([own, shared]))
    torch.testing.assert_close(rep["a"], expected)
    assert trunk.gate_labels()["a"] == ["a.expert0", "shared.expert0", "shared.expert1"]


def test_ple_with_one_level_is_cgc() -> None:
    torch.manual_seed(0)
    ple = PLE(6, ["a", "b"], hidden=[4], num_levels=1)
    torch.manual_seed(0)
    cgc = CGC(6, ["a", "b"], hidden=[4])
    x = torch.randn(3, 6)
    for t in ("a", "b"):
        torch.testing.assert_close(ple(x)[t], cgc(x)[t])


def test_ple_shared_gate_mixes_every_expert_of_the_level() -> None:
    trunk = PLE(6, ["a", "b"], hidden=[4], num_shared_experts=2, num_task_experts=3, num_levels=3)
    trunk(torch.randn(2, 6))
    assert trunk.last_gates["level1/shared"].shape == (2, 2 * 3 + 2)
    assert trunk.last_gates["level2/a"].shape == (2, 3 + 2)
    assert "level3/a" not in trunk.last_gates and trunk.last_gates["a"].shape == (2, 5)


def test_cross_stitch_units() -> None:
    trunk = CrossStitch(6, ["a", "b", "c"], hidden=[4, 4], self_weight=0.8)
    alpha = trunk.stitches()
    assert len(alpha) == 2
    torch.testing.assert_close(alpha[0], torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1],
                                                        [0.1, 0.1, 0.8]]))  # fmt: skip
    # the units are neither weight-decayed nor penalised
    decay, _ = decay_split(trunk)
    assert all(id(p) not in {id(d) for d in decay} for p in trunk.alphas)
    # with identity units the columns are independent: column a ignores column b's weights
    with torch.no_grad():
        for a in trunk.alphas:
            a.copy_(torch.eye(3).reshape(-1))
    x = torch.randn(5, 6)
    before = trunk(x)["a"]
    with torch.no_grad():
        trunk.layers[0].weight[1].add_(1.0)
    torch.testing.assert_close(trunk(x)["a"], before)
    assert not torch.allclose(trunk(x)["b"], before)


def test_smooth_step() -> None:
    t = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0, 0.25])
    s = smooth_step(t, gamma=1.0)
    torch.testing.assert_close(s[:5], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert 0.5 < s[5] < 1.0
    # continuously differentiable: zero slope at the ends of the cubic region
    x = torch.tensor([-0.5, 0.5], requires_grad=True)
    (g,) = torch.autograd.grad(smooth_step(x, 1.0).sum(), x)
    torch.testing.assert_close(g, torch.zeros(2))


@pytest.mark.parametrize("n", [4, 5, 8])
def test_dselect_k_picks_at_most_k_experts_once_saturated(n: int) -> None:
    gate = DSelectKGate(3, num_experts=n, k=2, gamma=1.0)
    x = torch.randn(16, 3)
    g = gate(x)  # at initialisation: dense, every code about equally likely
    torch.testing.assert_close(g.sum(dim=1), torch.ones(16))
    assert (g > 0).all()
    with torch.no_grad():  # saturate every smooth-step: each selector picks one expert
        gate.z.weight.zero_()
        gate.z.bias.copy_(torch.tensor([5.0, -5.0, 5.0, -5.0, 5.0, -5.0])[: gate.z.bias.numel()])
    g = gate(x)
    torch.testing.assert_close(g.sum(dim=1), torch.ones(16))
    assert ((g > 0).sum(dim=1) <= 2).all()
    selectors = gate.selectors(x)
    assert set(selectors.flatten().tolist()) <= {0.0, 1.0}


def test_dselect_k_trunk_gates_and_validation() -> None:
    trunk = DSelectK(6, ["a"], hidden=[4], num_experts=5, k=3)
    trunk(torch.randn(2, 6))
    assert trunk.last_gates["a"].shape == (2, 5)
    with pytest.raises(ConfigError, match=r"k \(6\) cannot exceed num_experts \(5\)"):
        create_trunk("dselect_k", 6, ["a"], hidden=[4], num_experts=5, k=6)


@pytest.mark.parametrize(
    ("arch", "options", "message"),
    [
        ("mmoe", {"num_experts": 0}, "num_experts must be an integer >= 1, got 0"),
        ("mmoe", {"num_expert": 3}, r"model.num_expert: unknown option .*num_experts"),
        ("ple", {"num_levels": "two"}, "num_levels must be an integer"),
        ("cross_stitch", {"self_weight": 1.5}, r"self_weight must be a number in \(0.0, 1.0\]"),
        ("dselect_k", {"gamma": 0}, "gamma must be a number"),
        ("shared_bottom", {"num_experts": 2}, r"unknown option .*own options: none"),
    ],
)
def test_bad_options_name_the_field(arch: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(arch, **options)


@pytest.mark.parametrize("arch", ["mmoe", "cgc", "ple", "cross_stitch", "dselect_k"])
def test_expert_architectures_need_a_layer(arch: str) -> None:
    with pytest.raises(ConfigError, match="at least one layer"):
        MultiTaskModel.build(TASKS, n_numeric=5, config={"architecture": arch, "hidden": []})


@pytest.mark.parametrize("arch", ARCHS)
def test_spec_round_trip_through_json(arch: str) -> None:
    model = build(arch, batch_norm=True).eval()
    spec = json.loads(json.dumps(model.spec()))
    rebuilt = MultiTaskModel.from_spec(spec, TASKS)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    x = inputs(6)
    for k, v in model(x).items():
        torch.testing.assert_close(rebuilt(x)[k], v)


def test_a_directly_built_trunk_records_its_arguments() -> None:
    assert MMoE(8, ["a"], hidden=(4,), num_experts=3).spec() == {
        "architecture": "mmoe", "hidden": [4], "dropout": 0.0, "batch_norm": False,
        "activation": "relu", "num_experts": 3,
    }  # fmt: skip
    assert SingleTask(8, ["a"]).spec()["architecture"] == "single_task"


def test_fusion_tasks_get_a_gate_only_when_they_read_the_representation() -> None:
    tasks = [
        *TASKS,
        Task("f", "regression", fusion=("b", "m")),
        Task("g", "regression", fusion=("b",), fusion_representation=True),
    ]
    assert representation_tasks(tasks) == ["b", "m", "r", "g"]
    model = build("mmoe", tasks=tasks)
    assert set(model.trunk.gates) == {"b", "m", "r", "g"}
    out = model(inputs(4))
    assert out["f"].shape == (4, 1) and out["g"].shape == (4, 1)
    assert model.task_parameters("f") == list(model.heads["f"].parameters())
