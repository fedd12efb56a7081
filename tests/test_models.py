"""MultiTaskModel: shapes, fusion heads, selective heads, shared vs task parameters, specs."""

from __future__ import annotations

import pytest
import torch

from lepton import ConfigError, MultiTaskModel, Task
from lepton.models import SharedBottom, available_architectures

TASKS = [
    Task("b", "binary", classes=("n", "p")),
    Task("m", "multiclass", classes=("x", "y", "z")),
    Task("l", "multilabel", target=("p", "q")),
    Task("r", "regression", target=("u", "v")),
    Task("f", "regression", target=("w",), fusion=("b", "m"), fusion_representation=True),
]


def make(**cfg) -> MultiTaskModel:
    return MultiTaskModel.build(
        TASKS, n_numeric=4, cardinalities=[5, 3], config={"hidden": [16, 8], **cfg}
    )


def inputs(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "numeric": torch.randn(n, 4, generator=g),
        "categorical": torch.randint(0, 3, (n, 2), generator=g),
    }


def test_output_shapes_per_task() -> None:
    out = make()(inputs())
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "b": (6, 1),
        "m": (6, 3),
        "l": (6, 2),
        "r": (6, 2),
        "f": (6, 1),
    }


def test_fusion_head_reads_source_outputs_and_representation() -> None:
    model = make()
    head = model.heads["f"]
    first = head.tower[0]
    assert first.in_features == 1 + 3 + 8  # binary prob + 3 class probs + representation
    # its loss reaches the source heads and the trunk (not detached by default)
    out = model(inputs())
    out["f"].sum().backward()
    assert model.heads["b"].out.weight.grad is not None
    assert model.heads["m"].out.weight.grad is not None
    assert model.heads["r"].out.weight.grad is None


def test_detached_fusion_does_not_train_its_sources() -> None:
    tasks = [*TASKS[:4], Task("f", "regression", fusion=("b",), fusion_detach=True)]
    model = MultiTaskModel.build(tasks, n_numeric=4, cardinalities=[5, 3])
    model(inputs())["f"].sum().backward()
    assert model.heads["b"].out.weight.grad is None
    assert model.heads["f"].out.weight.grad is not None


def test_only_requested_heads_run() -> None:
    model = make()
    calls: list[str] = []
    for name, head in model.heads.items():
        head.register_forward_hook(lambda *_, n=name: calls.append(n))
    out = model(inputs(), tasks=["f"])
    assert list(out) == ["f"]
    assert sorted(calls) == ["b", "f", "m"]  # the fusion task's sources run, nothing else
    with pytest.raises(KeyError, match="unknown task"):
        model(inputs(), tasks=["nope"])


def test_shared_and_task_specific_parameters_partition_the_model() -> None:
    model = make()
    shared = {id(p) for p in model.shared_parameters()}
    specific = {id(p) for p in model.task_specific_parameters()}
    assert shared and specific and not (shared & specific)
    assert shared | specific == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.trunk.parameters()} <= shared
    assert {id(p) for p in model.heads.parameters()} == specific


def test_spec_rebuilds_an_identical_model() -> None:
    model = make(dropout=0.0, architecture="shared_bottom")
    again = MultiTaskModel.from_spec(model.spec(), TASKS)
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    a, b = model(inputs()), again(inputs())
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = make(), make()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_trunk_registry_and_option_errors() -> None:
    assert "shared_bottom" in available_architectures()
    assert isinstance(make().trunk, SharedBottom)
    with pytest.raises(ConfigError, match="unknown architecture 'nope'"):
        make(architecture="nope")
    with pytest.raises(
        ConfigError, match=r"model\.n_experts: unknown option for architecture 'shared_bottom'"
    ):
        make(n_experts=4)


def test_batch_norm_and_dropout_layers_are_configurable() -> None:
    with_bn = make(batch_norm=True, dropout=0.2)
    kinds = {type(m).__name__ for m in with_bn.trunk.modules()}
    assert {"BatchNorm1d", "Dropout"} <= kinds
    plain = make(batch_norm=False, dropout=0.0)
    kinds = {type(m).__name__ for m in plain.trunk.modules()}
    assert "BatchNorm1d" not in kinds and "Dropout" not in kinds
