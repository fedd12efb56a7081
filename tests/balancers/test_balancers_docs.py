"""docs/balancers.md lists every method with its hyperparameters and their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.balancers import available, balancer_class, hyperparameters

DOC = Path(__file__).resolve().parents[2] / "docs" / "balancers.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_method_has_a_row() -> None:
    assert sorted(_rows()) == available()


@pytest.mark.parametrize("name", available())
def test_row_matches_the_class(name: str) -> None:
    _, kind, paper, hparams, cost = _rows()[name]
    cls = balancer_class(name)
    assert kind == cls.kind
    assert paper and cost
    for hp, default in hyperparameters(name).items():
        if hp == "chunk_size" or (hp == "mode" and default == "params" and "mode" not in hparams):
            continue
        assert f"`{hp}`" in hparams, (name, hp)
        if name != "static":  # static's default is "the tasks' declared weights"
            shown = f'"{default}"' if isinstance(default, str) else str(default)
            assert f"`{hp}` ({shown})" in hparams, (name, hp, default)
