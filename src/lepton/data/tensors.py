"""Tables as tensors, batches, and a resumable batch loader."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from lepton.data.preprocess import Preprocessor


@dataclass
class Batch:
    """Rows of model inputs with per-task targets and label masks."""

    inputs: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def to(self, device: torch.device | str) -> Batch:
        def move(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, non_blocking=True) for k, v in d.items()}

        return Batch(move(self.inputs), move(self.targets), move(self.masks))


class TensorData:
    """A split held as tensors: inputs, and for each labelled task its target and mask.

    Examples
    --------
    >>> import torch
    >>> labels = {"y": (torch.zeros(5), torch.ones(5, dtype=torch.bool))}
    >>> data = TensorData({"numeric": torch.zeros(5, 2)}, labels)
    >>> len(data), len(data.batch(torch.tensor([0, 2])))
    (5, 2)
    """

    def __init__(
        self,
        inputs: Mapping[str, torch.Tensor],
        labels: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.inputs = dict(inputs)
        labels = dict(labels or {})
        self.targets = {k: v[0] for k, v in labels.items()}
        self.masks = {k: v[1] for k, v in labels.items()}
        sizes = {v.shape[0] for v in self.inputs.values()}
        sizes |= {v.shape[0] for v in self.targets.values()}
        if len(sizes) != 1:
            raise ValueError(f"inputs and targets disagree on the number of rows: {sorted(sizes)}")
        self._n = sizes.pop()

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, preprocessor: Preprocessor, source: str | None = None
    ) -> TensorData:
        """Inputs and (where the columns exist) targets of ``df``, encoded by ``preprocessor``."""
        return cls(
            preprocessor.transform(df, source), preprocessor.encode_targets(df, source=source)
        )

    def __len__(self) -> int:
        return self._n

    @property
    def tasks(self) -> list[str]:
        return list(self.targets)

    def label_counts(self) -> dict[str, int]:
        """Number of rows with at least one label, per task."""
        return {k: int((m if m.dim() == 1 else m.any(dim=1)).sum()) for k, m in self.masks.items()}

    def batch(self, index: torch.Tensor | slice) -> Batch:
        return Batch(
            {k: v[index] for k, v in self.inputs.items()},
            {k: v[index] for k, v in self.targets.items()},
            {k: v[index] for k, v in self.masks.items()},
        )


class BatchLoader:
    """Batches of a :class:`TensorData`, shuffled per epoch, resumable mid-epoch.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a loader restored from
    :meth:`state_dict` yields exactly the batches an uninterrupted one would. A trailing batch
    smaller than ``min_batch`` is dropped (batch norm cannot train on a single row).
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        min_batch: int = 1,
    ) -> None:
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.min_batch = int(min_batch)
        self.epoch = 0
        self.position = 0  # batches already consumed in the current epoch

    def _order(self, epoch: int) -> torch.Tensor:
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        full, rest = divmod(n, b)
        return full + (1 if rest >= self.min_batch and rest > 0 else 0)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order(self.epoch)
        for i in range(self.position, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            self.position = i + 1
            yield self.data.batch(idx)
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])
