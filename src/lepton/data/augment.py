"""Training-time augmentation of tabular inputs.

Applied by the trainer to training batches only, never at evaluation or prediction. Its random
numbers come from its own generator, whose state is checkpointed, so a resumed run sees exactly
the same noise as an uninterrupted one.
"""

from __future__ import annotations

import torch

from lepton.data.preprocess import UNKNOWN_INDEX


class TabularAugment:
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
