"""Input encoders: from the model's input tensors to one feature vector per row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


def default_embedding_dim(cardinality: int) -> int:
    """Embedding width for a vocabulary of ``cardinality`` entries: ``min(16, 1.6·n^0.56)``."""
    return max(2, min(16, round(1.6 * cardinality**0.56)))


class TabularEncoder(nn.Module):
    """Standardised numeric features, concatenated with one embedding per categorical feature.

    Input: ``{"numeric": float (B, n_numeric), "categorical": long (B, n_categorical)}``.
    Output: ``(B, out_dim)``.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: Sequence[int] = (),
        embedding_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        cardinalities = list(cardinalities)
        if embedding_dims is None:
            embedding_dims = [default_embedding_dim(c) for c in cardinalities]
        if len(embedding_dims) != len(cardinalities):
            raise ValueError("one embedding width per categorical feature")
        self.n_numeric = int(n_numeric)
        self.cardinalities = cardinalities
        self.embedding_dims = [int(d) for d in embedding_dims]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, self.embedding_dims, strict=True)
        )
        self.out_dim = self.n_numeric + sum(self.embedding_dims)
        if self.out_dim == 0:
            raise ValueError("the model has no input features")

    def spec(self) -> dict[str, Any]:
        return {
            "type": "tabular",
            "n_numeric": self.n_numeric,
            "cardinalities": self.cardinalities,
            "embedding_dims": self.embedding_dims,
        }

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.n_numeric:
            parts.append(inputs["numeric"])
        if self.embeddings:
            cat = inputs["categorical"]
            parts.extend(emb(cat[:, j]) for j, emb in enumerate(self.embeddings))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def build_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """An encoder from its :meth:`spec` (``tabular`` or ``image``)."""
    kind = spec.get("type")
    if kind == "tabular":
        return TabularEncoder(spec["n_numeric"], spec["cardinalities"], spec["embedding_dims"])
    if kind == "image":
        from lepton.models._cnn import ConvEncoder

        return ConvEncoder(
            spec["shape"],
            spec["channels"],
            spec["blocks"],
            spec["stem_stride"],
            spec["mean"],
            spec["std"],
        )
    raise ValueError(f"unknown encoder type {kind!r}")


class TaskEncoders(nn.Module):
    """One independent encoder per task: ``inputs → {task: (B, out_dim)}``.

    Used for trunks that share nothing (``single_task``). The first task gets ``encoder``; the
    others get fresh copies built from its spec (drawn from the current random state).
    """

    def __init__(self, encoder: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        spec = getattr(encoder, "spec", None)
        if spec is None:
            raise TypeError("an encoder without spec() cannot be copied per task")
        names = list(tasks)
        self.encoders = nn.ModuleDict(
            {t: encoder if i == 0 else build_encoder(spec()) for i, t in enumerate(names)}
        )
        self.out_dim = encoder.out_dim

    def spec(self) -> dict[str, Any]:
        first = next(iter(self.encoders.values()))
        return first.spec()  # type: ignore[operator, no-any-return]

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: enc(inputs) for t, enc in self.encoders.items()}
