"""Image inputs: array files, the CNN encoder, augmentation (training only), bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lepton import Bundle, ConfigError, DataError, MultiTaskModel, Task, Trainer, config_from_dict
from lepton.data import ImageAugment, TabularAugment, build_augment, from_arrays, prepare_data
from lepton.data.augment import Augment
from lepton.data.images import channel_stats, image_tensor_data, read_image_file, to_nchw
from lepton.models import ConvEncoder


def stripes(n: int = 60, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Tiny 8×8 images: a bright row (label `row`) and a bright column (label `col`)."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 2, n), rng.integers(0, 3, n)
    imgs = rng.integers(0, 40, size=(n, 8, 8)).astype(np.uint8)
    for i in range(n):
        imgs[i, 2 + 3 * rows[i], :] = 255
        imgs[i, :, 1 + 3 * cols[i]] = 200
    return imgs, pd.DataFrame({"row": rows, "col": cols})


TASKS = [Task("row", "binary"), Task("col", "multiclass")]


# ----------------------------------------------------------------------------- array files
def test_to_nchw_accepts_the_usual_layouts() -> None:
    x = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    assert to_nchw(x).shape == (2, 1, 5, 6) and to_nchw(x).dtype == np.float32
    rgb = np.zeros((2, 5, 6, 3))
    assert to_nchw(rgb).shape == (2, 3, 5, 6)
    assert to_nchw(np.zeros((2, 3, 5, 6))).shape == (2, 3, 5, 6)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5)), r"expected images as \(N, H, W\)"),
        (np.zeros((2, 5, 6, 7)), "cannot tell the channel axis"),
        (np.array([["a"]], dtype=object).reshape(1, 1, 1), "must be numbers"),
    ],
)
def test_to_nchw_rejects_bad_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        to_nchw(array, "imgs.npy")


def test_non_finite_pixels_name_the_image() -> None:
    x = np.zeros((3, 4, 4), dtype=np.float32)
    x[1, 2, 2] = np.nan
    with pytest.raises(DataError, match=r"imgs.npy: image 1 \(row 2\) holds a NaN"):
        to_nchw(x, "imgs.npy")


def test_npz_files_hold_images_and_label_arrays(tmp_path: Path) -> None:
    imgs, labels = stripes(10)
    np.savez(tmp_path / "d.npz", images=imgs, row=labels["row"].to_numpy(), other=np.zeros((3, 2)))
    arr, table = read_image_file(tmp_path / "d.npz")
    assert arr.shape == (10, 1, 8, 8) and list(table.columns) == ["row"]
    np.savez(tmp_path / "two.npz", a=imgs, b=imgs)
    with pytest.raises(DataError, match="cannot tell which array holds the images"):
        read_image_file(tmp_path / "two.npz")
    assert read_image_file(tmp_path / "two.npz", key="b")[0].shape == (10, 1, 8, 8)
    with pytest.raises(DataError, match="no array named 'c'; the file has a, b"):
        read_image_file(tmp_path / "two.npz", key="c")
    with pytest.raises(DataError, match="image file not found"):
        read_image_file(tmp_path / "nope.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read"):
        read_image_file(tmp_path / "obj.npy")  # never unpickled


def test_config_with_npy_images_and_a_csv_table(tmp_path: Path) -> None:
    imgs, labels = stripes(50)
    np.save(tmp_path / "x.npy", imgs)
    labels.to_csv(tmp_path / "y.csv", index=False)
    cfg = config_from_dict({
        "data": {"path": str(tmp_path / "y.csv"), "images": {"file": str(tmp_path / "x.npy")},
                 "split": {"val": 0.2, "test": 0.2, "seed": 1, "stratify": "row"}},
        "tasks": {"row": {"kind": "binary"}, "col": {"kind": "multiclass"}},
    })  # fmt: skip
    data = prepare_data(cfg.data, cfg.build_tasks())
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sizes == [30, 10, 10]
    # every split keeps each image with its own labels
    for split, frame in (("train", data.frames.train), ("test", data.frames.test)):
        tensor = getattr(data, split).inputs["image"]
        np.testing.assert_array_equal(tensor.numpy()[:, 0], imgs[frame.index.to_numpy()])
    # fewer rows than images: a clear error naming both files
    labels.head(40).to_csv(tmp_path / "short.csv", index=False)
    cfg2 = cfg.model_copy(deep=True)
    cfg2.data.path = str(tmp_path / "short.csv")
    with pytest.raises(DataError, match=r"x.npy holds 50 images but .*short.csv has 40 rows"):
        prepare_data(cfg2.data, cfg.build_tasks())


def test_config_with_npz_splits_holding_their_labels(tmp_path: Path) -> None:
    for split, seed in (("train", 0), ("test", 1)):
        imgs, labels = stripes(30, seed)
        np.savez(tmp_path / f"{split}.npz", images=imgs, **{c: labels[c].to_numpy()
                                                             for c in labels})  # fmt: skip
    cfg = config_from_dict({
        "data": {"images": {"train": str(tmp_path / "train.npz"),
                            "test": str(tmp_path / "test.npz")}},
        "tasks": {"row": {"kind": "binary"}, "col": {"kind": "multiclass"}},
    })  # fmt: skip
    data = prepare_data(cfg.data, cfg.build_tasks())
    assert len(data.train) == 30 and data.val is None and len(data.test) == 30
    assert data.tasks[1].classes == (0, 1, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"path": "y.csv", "images": {"file": "x.npy"}, "features": {"numeric": ["a"]}},
         "the images are the model's input"),
        ({"path": "y.csv", "images": {"train": "x.npy"}}, "goes with `images.file`"),
        ({"images": {"file": "x.npy"}, "augment": {"noise_std": 0.1}}, None),
    ],
)  # fmt: skip
def test_image_config_errors(data: dict, message: str | None, tmp_path: Path) -> None:
    raw = {"data": data, "tasks": {"row": {"kind": "binary"}}}
    if message is not None:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw)
        return
    imgs, labels = stripes(20)
    np.savez(tmp_path / "x.npz", images=imgs, row=labels["row"].to_numpy())
    raw["data"]["images"]["file"] = str(tmp_path / "x.npz")
    cfg = config_from_dict(raw)
    with pytest.raises(ConfigError, match="noise_std and feature_dropout apply to tabular"):
        prepare_data(cfg.data, cfg.build_tasks())


def test_image_augmentation_asked_of_tabular_data_is_an_error(small_frame) -> None:
    cfg = config_from_dict({"data": {"dataset": "penguins", "augment": {"hflip": True}},
                            "tasks": {"sex": {"kind": "binary"}}})  # fmt: skip
    with pytest.raises(ConfigError, match="apply to images; this data is tabular"):
        prepare_data(cfg.data, cfg.build_tasks())


# -------------------------------------------------------------------------------- encoder
def test_conv_encoder_shapes_and_standardisation() -> None:
    enc = ConvEncoder((3, 12, 10), channels=(4, 8, 6), blocks=2, mean=[1, 2, 3], std=[2, 2, 4])
    x = torch.rand(5, 3, 12, 10) * 255
    assert enc({"image": x}).shape == (5, 6) and enc.out_dim == 6
    plain = ConvEncoder((3, 12, 10), channels=(4, 8, 6), blocks=2)
    plain.load_state_dict(enc.state_dict())
    z = (x - torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1)) / torch.tensor([2.0, 2, 4]).view(
        1, 3, 1, 1
    )
    enc.eval(), plain.eval()
    torch.testing.assert_close(enc({"image": x}), plain({"image": z}))
    # mean/std live in the spec (JSON), not in the weights
    assert "mean" not in enc.state_dict() and enc.spec()["std"] == [2.0, 2.0, 4.0]


def test_channel_stats() -> None:
    x = torch.stack([torch.full((4, 4), 2.0), torch.arange(16.0).reshape(4, 4)]).expand(3, 2, 4, 4)
    mean, std = channel_stats(x)
    assert mean == pytest.approx([2.0, 7.5]) and std[0] == 1.0  # a constant channel: std 1


@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe", "cgc", "ple", "cross_stitch",
                                  "dselect_k", "single_task"])  # fmt: skip
def test_every_architecture_runs_on_cnn_features(arch: str) -> None:
    model = MultiTaskModel.build_image(
        [Task("a", "binary", classes=(0, 1)), Task("b", "regression")],
        (1, 8, 8),
        {"architecture": arch, "hidden": [6], "cnn": {"channels": [4, 8]}},
    )
    out = model({"image": torch.rand(3, 1, 8, 8)})
    assert out["a"].shape == (3, 1) and out["b"].shape == (3, 1)
    cnn_params = {id(p) for m in model.encoder.modules() if isinstance(m, ConvEncoder)
                  for p in m.parameters()}  # fmt: skip
    shared = {id(p) for p in model.shared_parameters()}
    if arch == "single_task":  # one CNN per task, none shared
        assert len(model.encoder.encoders) == 2 and not (cnn_params & shared)
    else:  # one CNN shared by the tasks
        assert cnn_params <= shared


def test_cnn_settings_with_tabular_data_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.cnn: the CNN encoder is for image data"):
        MultiTaskModel.build([Task("y", "regression")], 3, config={"cnn": {"channels": [4]}})


# ---------------------------------------------------------------------------- augmentation
def test_shift_moves_every_image_by_at_most_the_shift() -> None:
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = ImageAugment(shift=2)(({"image": x}), torch.Generator().manual_seed(0))["image"]
    pos = out[:, 0].flatten(1).argmax(dim=1)
    rows, cols = pos // 9, pos % 9
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # content moved, not lost
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # per image, random


def test_augmented_and_permuted_images_get_plain_strides() -> None:
    out = ImageAugment(shift=1)({"image": torch.rand(4, 1, 6, 6)}, torch.Generator())["image"]
    assert out.stride() == (36, 36, 6, 1)
    # (N, H, W, 1) data seen as NCHW: "contiguous" and channels-last at once; the encoder copies
    # it to plain strides (torch 2.13's CPU conv backward corrupts memory on the mix otherwise)
    enc = ConvEncoder((1, 10, 10), channels=(4, 8))
    nhwc = torch.rand(16, 10, 10, 1).permute(0, 3, 1, 2)
    assert nhwc.stride() == (100, 1, 10, 1)
    for _ in range(20):
        enc({"image": nhwc}).sum().backward()
    enc.eval()
    plain = nhwc.clone(memory_format=torch.contiguous_format)
    torch.testing.assert_close(enc({"image": nhwc}), enc({"image": plain}))


def test_flips_and_crops() -> None:
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(32, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = ImageAugment(hflip=True)({"image": x}, g)["image"]
    flipped = (out == x.flip(3)).flatten(1).all(dim=1)
    same = (out == x).flatten(1).all(dim=1)
    assert (flipped | same).all() and flipped.any() and same.any()
    crop = ImageAugment(crop_scale=0.5)({"image": x}, g)["image"]
    assert crop.shape == x.shape and not torch.equal(crop, x)
    assert crop.min() >= x.min() and crop.max() <= x.max()  # resampled inside the image


def test_augmentation_is_reproducible_from_the_generator_and_a_noop_when_off() -> None:
    x = torch.rand(8, 3, 6, 6)
    aug = ImageAugment(shift=1, crop_scale=0.7, hflip=True, vflip=True)
    a = aug({"image": x}, torch.Generator().manual_seed(3))["image"]
    b = aug({"image": x}, torch.Generator().manual_seed(3))["image"]
    assert torch.equal(a, b)
    inputs = {"image": x}
    assert ImageAugment()(inputs, torch.Generator()) is inputs
    from lepton.config import AugmentConfig

    assert isinstance(build_augment(AugmentConfig(noise_std=0.1)), TabularAugment)
    assert isinstance(build_augment(AugmentConfig(shift=1)), ImageAugment)


class _Recording(Augment):
    def __init__(self) -> None:
        self.calls = 0

    @property
    def active(self) -> bool:
        return True

    def __call__(self, inputs, generator):
        self.calls += 1
        return {**inputs, "image": inputs["image"] + 1000.0}  # visible if it ever leaked


def test_augmentation_touches_training_batches_only() -> None:
    imgs, labels = stripes(48)
    data = from_arrays(imgs, labels, TASKS, val=0.25, test=0.25, seed=0)
    model = MultiTaskModel.for_data(data, {"hidden": [8], "cnn": {"channels": [4]}})
    aug = _Recording()
    trainer = Trainer(model, augment=aug, train={"epochs": 2, "batch_size": 8}, progress=False)
    trainer.fit(data.train, data.val)
    assert aug.calls == trainer.step == 2 * 3  # once per training step, never in validation
    before = aug.calls
    trainer.evaluate(data.test)
    Bundle(model, data.preprocessor).predictor().predict_images(imgs[:5])
    assert aug.calls == before


# ---------------------------------------------------------------------------------- bundle
def test_image_bundle_round_trip(tmp_path: Path) -> None:
    imgs, labels = stripes(40)
    data = from_arrays(imgs, labels, TASKS, val=0.0, test=0.25, seed=0)
    config = {"architecture": "mmoe", "hidden": [8], "num_experts": 2, "cnn": {"channels": [4, 6]}}
    model = MultiTaskModel.for_data(data, config)
    Trainer(model, train={"epochs": 1, "batch_size": 10}, progress=False).fit(data.train)
    Bundle(model, data.preprocessor, name="stripes").save(tmp_path / "b")
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.model.image_shape == (1, 8, 8)
    model.eval()
    with torch.no_grad():
        expected = model({"image": torch.from_numpy(to_nchw(imgs[:7]))})
    pred = loaded.predictor()
    raw = pred.raw_tensors({"image": torch.from_numpy(to_nchw(imgs[:7]))})
    for t in ("row", "col"):
        torch.testing.assert_close(raw[t], expected[t], rtol=0, atol=0)
    table = pred.predict_images(imgs[:7][..., None])  # (N, H, W, C) works too
    assert list(table.columns[:2]) == ["row", "row_prob_0"] and len(table) == 7
    with pytest.raises(DataError, match=r"images of shape \(1, 9, 9\) .* takes \(1, 8, 8\)"):
        pred.predict_images(np.zeros((2, 9, 9)))
    with pytest.raises(DataError, match="this model takes images"):
        pred.predict(pd.DataFrame({"a": [1]}))
    # evaluation data for an image model: an .npz with labels, or a table plus --images
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match="this model takes images; give them with --images"):
        image_tensor_data(loaded, tmp_path / "labels.csv")
    np.save(tmp_path / "imgs.npy", imgs)
    table, tensors = image_tensor_data(loaded, tmp_path / "labels.csv", tmp_path / "imgs.npy")
    assert len(tensors) == 40 and set(tensors.targets) == {"row", "col"}
    np.save(tmp_path / "small.npy", imgs[:, :6, :6])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"images of shape \(1, 6, 6\)"):
        image_tensor_data(loaded, tmp_path / "labels.csv", tmp_path / "small.npy")
