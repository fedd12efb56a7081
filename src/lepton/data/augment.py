"""Training-time augmentation of tabular and image inputs.

Applied by the trainer to training batches only, never at evaluation or prediction. Its random
numbers come from its own generator, whose state is checkpointed, so a resumed run sees exactly
the same noise as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lepton.data.preprocess import UNKNOWN_INDEX

if TYPE_CHECKING:
    from lepton.config import AugmentConfig


class Augment:
    """Base class: ``augment(inputs, generator) -> inputs``; ``active`` false means a no-op."""

    @property
    def active(self) -> bool:
        return False

    def __call__(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return inputs


class TabularAugment(Augment):
    """Gaussian noise on standardised numeric features and random feature dropout.

    Parameters
    ----------
    noise_std:
        Standard deviation of the noise added to each standardised numeric feature.
    feature_dropout:
        Probability of blanking each feature of each row: a numeric feature becomes its training
        mean (0 after standardisation), a categorical one the *unknown* category.

    Examples
    --------
    >>> aug = TabularAugment(noise_std=0.1, feature_dropout=0.1)
    >>> g = torch.Generator().manual_seed(0)
    >>> out = aug({"numeric": torch.zeros(4, 3), "categorical": torch.full((4, 2), 5)}, g)
    >>> out["numeric"].shape, out["categorical"].shape
    (torch.Size([4, 3]), torch.Size([4, 2]))
    """

    def __init__(self, noise_std: float = 0.0, feature_dropout: float = 0.0) -> None:
        if noise_std < 0:
            raise ValueError("noise_std must be >= 0")
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError("feature_dropout must be in [0, 1)")
        self.noise_std = float(noise_std)
        self.feature_dropout = float(feature_dropout)

    @property
    def active(self) -> bool:
        return self.noise_std > 0 or self.feature_dropout > 0

    def __call__(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if not self.active:
            return inputs
        out = dict(inputs)
        num = inputs.get("numeric")
        if num is not None and num.numel():
            if self.noise_std > 0:
                noise = torch.randn(num.shape, generator=generator, dtype=num.dtype)
                num = num + self.noise_std * noise.to(num.device)
            if self.feature_dropout > 0:
                drop = torch.rand(num.shape, generator=generator) < self.feature_dropout
                num = num.masked_fill(drop.to(num.device), 0.0)
            out["numeric"] = num
        cat = inputs.get("categorical")
        if cat is not None and cat.numel() and self.feature_dropout > 0:
            drop = torch.rand(cat.shape, generator=generator) < self.feature_dropout
            out["categorical"] = cat.masked_fill(drop.to(cat.device), UNKNOWN_INDEX)
        return out

    def __repr__(self) -> str:
        return f"TabularAugment(noise_std={self.noise_std}, feature_dropout={self.feature_dropout})"


class ImageAugment(Augment):
    """Random crops, shifts and flips of ``inputs["image"]`` ``(B, C, H, W)``, per image.

    Parameters
    ----------
    shift:
        Translate each image by up to ``shift`` pixels along each axis (zero padding, then a
        random ``H×W`` window: the classic "pad and random-crop").
    crop_scale:
        Keep a random square-ish window of at least this fraction of the area (same aspect
        ratio) and resize it back to ``H×W`` (bilinear); ``1`` turns it off.
    hflip, vflip:
        Mirror each image left-right / upside-down with probability 1/2. Only where every label
        stays true (a left/right digit task must not be flipped).

    Examples
    --------
    >>> aug = ImageAugment(shift=2, hflip=True)
    >>> g = torch.Generator().manual_seed(0)
    >>> aug({"image": torch.rand(4, 1, 8, 8)}, g)["image"].shape
    torch.Size([4, 1, 8, 8])
    """

    def __init__(
        self, shift: int = 0, crop_scale: float = 1.0, hflip: bool = False, vflip: bool = False
    ) -> None:
        if shift < 0:
            raise ValueError("shift must be >= 0")
        if not 0.0 < crop_scale <= 1.0:
            raise ValueError("crop_scale must be in (0, 1]")
        self.shift = int(shift)
        self.crop_scale = float(crop_scale)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.crop_scale < 1.0 or self.hflip or self.vflip

    def __call__(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        x = inputs.get("image")
        if x is None or not self.active:
            return inputs
        if self.crop_scale < 1.0:
            x = self._crop(x, generator)
        if self.shift > 0:
            x = self._shift(x, generator)
        if self.hflip:
            x = self._flip(x, generator, dim=3)
        if self.vflip:
            x = self._flip(x, generator, dim=2)
        return {**inputs, "image": x}

    def _shift(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        s = self.shift
        padded = F.pad(x, (s, s, s, s))
        off = torch.randint(0, 2 * s + 1, (2, b), generator=g).to(x.device)
        rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        idx = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)
        return out.clone(memory_format=torch.contiguous_format)  # plain NCHW strides

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        u = torch.rand(3, b, generator=g, dtype=torch.float64)
        area = self.crop_scale + (1.0 - self.crop_scale) * u[0]
        side = area.sqrt()  # fraction of each side kept
        tx = (2 * u[1] - 1) * (1 - side)  # window centre, in [-1, 1] coordinates
        ty = (2 * u[2] - 1) * (1 - side)
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 1, 1] = side, side
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _flip(self, x: torch.Tensor, g: torch.Generator, dim: int) -> torch.Tensor:
        which = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
        return torch.where(which[:, None, None, None], x.flip(dim), x)

    def __repr__(self) -> str:
        return (
            f"ImageAugment(shift={self.shift}, crop_scale={self.crop_scale}, "
            f"hflip={self.hflip}, vflip={self.vflip})"
        )


class Compose(Augment):
    """Several augmentations applied in turn."""

    def __init__(self, *parts: Augment) -> None:
        self.parts = [p for p in parts if p.active]

    @property
    def active(self) -> bool:
        return bool(self.parts)

    def __call__(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        for part in self.parts:
            inputs = part(inputs, generator)
        return inputs

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.parts))})"


def build_augment(cfg: AugmentConfig) -> Augment:
    """The augmentation a ``data.augment`` section asks for (tabular and/or image parts)."""
    tabular = TabularAugment(cfg.noise_std, cfg.feature_dropout)
    image = ImageAugment(cfg.shift, cfg.crop_scale, cfg.hflip, cfg.vflip)
    if not image.active:
        return tabular
    if not tabular.active:
        return image
    return Compose(tabular, image)
