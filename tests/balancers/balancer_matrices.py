"""Generated per-task gradient matrices for property tests (the style of torchjd's suite)."""

from __future__ import annotations

import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random(k: int, p: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(k, p, generator=_gen(seed), dtype=torch.float64) * scale


def rank_deficient(k: int, p: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    return torch.randn(k, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, p, generator=g, dtype=torch.float64
    )


def with_zero_rows(k: int, p: int, seed: int = 0) -> torch.Tensor:
    G = random(k, p, seed)
    G[:: max(2, k // 2)] = 0.0
    return G


def parallel_rows(k: int, p: int, seed: int = 0) -> torch.Tensor:
    G = random(k, p, seed)
    G[1] = 3.0 * G[0]
    return G


def opposite_rows(k: int, p: int, seed: int = 0) -> torch.Tensor:
    G = random(k, p, seed)
    G[1] = -2.0 * G[0]
    return G


def conflicting(k: int, p: int, seed: int = 0) -> torch.Tensor:
    """Rows with strongly negative pairwise inner products (a simplex-like configuration)."""
    g = _gen(seed)
    base = torch.randn(k, p, generator=g, dtype=torch.float64)
    base = base - 0.9 * base.mean(0, keepdim=True) * k / max(1, k - 1)
    return base


def cases() -> list[tuple[str, torch.Tensor]]:
    """(name, G) for a spread of shapes, ranks and scales; K from 1 to 64."""
    out: list[tuple[str, torch.Tensor]] = []
    for k, p in [(1, 5), (2, 3), (2, 40), (3, 10), (5, 50), (8, 200), (16, 40), (64, 300)]:
        out.append((f"random-{k}x{p}", random(k, p, seed=k)))
    out.append(("k>p-6x4", random(6, 4, seed=1)))
    out.append(("rank2-5x30", rank_deficient(5, 30, 2, seed=2)))
    out.append(("zero-rows-6x20", with_zero_rows(6, 20, seed=3)))
    out.append(("parallel-4x20", parallel_rows(4, 20, seed=4)))
    out.append(("opposite-4x20", opposite_rows(4, 20, seed=5)))
    out.append(("conflicting-4x30", conflicting(4, 30, seed=6)))
    for e in (-8, -4, 4, 8):
        out.append((f"scale1e{e}-5x30", random(5, 30, seed=7, scale=10.0**e)))
    spread = torch.tensor([[1e-3], [1.0], [1e3], [1e6]], dtype=torch.float64)
    out.append(("mixed-scales-4x30", random(4, 30, seed=8) * spread))
    return out


def full_rank_cases() -> list[tuple[str, torch.Tensor]]:
    """Linearly independent rows (K ≤ P), where equal-projection properties are attainable."""
    out = []
    for k, p in [(2, 3), (2, 40), (3, 10), (5, 50), (8, 200), (16, 40)]:
        out.append((f"random-{k}x{p}", random(k, p, seed=10 + k)))
    out.append(("conflicting-4x30", conflicting(4, 30, seed=6)))
    for e in (-8, 8):
        out.append((f"scale1e{e}-5x30", random(5, 30, seed=7, scale=10.0**e)))
    return out
