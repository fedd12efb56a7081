"""A small ResNet-style convolutional encoder for image inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class BasicBlock(nn.Module):
    """``conv3×3 → BN → ReLU → conv3×3 → BN``, plus the input (projected by a 1×1 convolution
    when the width or resolution changes), then ReLU (He et al., CVPR 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` → one feature vector per image ``(B, channels[-1])``.

    Per-channel standardisation with the training images' ``mean``/``std`` (part of the model,
    so a bundle takes raw pixel values), a stem ``conv3×3 → BN → ReLU`` with stride
    ``stem_stride``, then one stage per entry of ``channels``, each of ``blocks`` residual
    :class:`BasicBlock`\\ s (every stage after the first halves the resolution), and global
    average pooling.

    Input: ``{"image": float (B, C, H, W)}``.

    Examples
    --------
    >>> enc = ConvEncoder((1, 28, 28), channels=(8, 16))
    >>> enc({"image": torch.zeros(2, 1, 28, 28)}).shape
    torch.Size([2, 16])
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        stem_stride: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.shape = [int(s) for s in shape]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"image shape must be (channels, height, width), got {shape}")
        self.channels = [int(c) for c in channels]
        if not self.channels or min(self.channels) < 1:
            raise ValueError("model.cnn.channels: give at least one positive stage width")
        self.blocks = int(blocks)
        self.stem_stride = int(stem_stride)
        c = self.shape[0]
        self.mean_ = [0.0] * c if mean is None else [float(m) for m in mean]
        self.std_ = [1.0] * c if std is None else [float(s) for s in std]
        if len(self.mean_) != c or len(self.std_) != c or min(self.std_) <= 0:
            raise ValueError(f"one mean and one positive std per channel ({c}) are needed")
        self.register_buffer("mean", torch.tensor(self.mean_).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.std_).view(1, c, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(c, self.channels[0], 3, stride=self.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(self.channels[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        width = self.channels[0]
        for i, out in enumerate(self.channels):
            for b in range(self.blocks):
                stride = 2 if i > 0 and b == 0 else 1
                stages.append(BasicBlock(width, out, stride))
                width = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = width

    def spec(self) -> dict[str, Any]:
        return {
            "type": "image",
            "shape": self.shape,
            "channels": self.channels,
            "blocks": self.blocks,
            "stem_stride": self.stem_stride,
            "mean": self.mean_,
            "std": self.std_,
        }

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["image"]
        if x.stride() != _nchw_strides(x.shape):
            # Plain NCHW strides: with one channel, (N, H, W, 1) data permuted to NCHW counts as
            # contiguous yet also as channels-last, and torch 2.13's CPU convolution backward
            # corrupts the heap on such input mixed with NCHW tensors (found in this project).
            x = x.clone(memory_format=torch.contiguous_format)
        x = (x - self.mean) / self.std
        x = self.stages(self.stem(x))
        return self.pool(x).flatten(1)


def _nchw_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
