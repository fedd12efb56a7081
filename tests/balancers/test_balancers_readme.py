"""The README's own-training-loop example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Balancing the tasks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_training_loop_runs(capsys) -> None:
    namespace: dict = {}
    exec(compile(_example(), str(README), "exec"), namespace)  # our own README
    balancer = namespace["balancer"]
    assert balancer.last_weights.shape == (3,) and torch.isfinite(balancer.last_weights).all()
    assert balancer.last_cosines.shape == (3, 3)
    for p in namespace["trunk"].parameters():
        assert p.grad is not None
    assert "tensor" in capsys.readouterr().out
