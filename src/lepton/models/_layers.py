"""Small building blocks shared by trunks and heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``gelu``, ``silu``, ``tanh``, ``leaky_relu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def mlp(
    in_dim: int,
    widths: Sequence[int],
    dropout: float = 0.0,
    batch_norm: bool = False,
    act: str = "relu",
) -> nn.Sequential:
    """``Linear → [BatchNorm] → activation → [Dropout]`` for each width (empty: identity)."""
    layers: list[nn.Module] = []
    d = in_dim
    for w in widths:
        layers.append(nn.Linear(d, w))
        if batch_norm:
            layers.append(nn.BatchNorm1d(w))
        layers.append(activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = w
    return nn.Sequential(*layers)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: object, low: float, high: float, closed: str = "[]") -> float:
    """``value`` as a float in the interval ``low..high`` (``closed`` says which ends belong)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v >= low if closed[0] == "[" else v > low) and (
            v <= high if closed[1] == "]" else v < high
        )
    if not ok:
        interval = f"{closed[0]}{low}, {high}{closed[1]}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)  # type: ignore[arg-type]
