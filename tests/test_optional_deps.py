"""A missing optional dependency is one line naming the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lepton._optional import require
from lepton.errors import MissingDependencyError

from .conftest import ROOT, cli_env


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'lepton-mtl\[serve\]'"):
        require("no_such_module_for_lepton", "serve", "the prediction service")


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [
        ("fastapi", ["serve", "{bundle}"], "serve"),
        ("onnxscript", ["export", "{bundle}", "--onnx", "{tmp}/m.onnx"], "onnx"),
    ],
)
def test_cli_without_an_extra(
    blocked: str,
    command: list[str],
    extra: str,
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"  # the dependency is checked before the bundle is read
    shadow = tmp_path / "shadow" / blocked
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError('{blocked} is not installed')\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path / 'shadow'}:{env['PYTHONPATH']}"
    args = [a.format(bundle=bundle, tmp=tmp_path) for a in command]
    res = subprocess.run(
        [sys.executable, "-m", "lepton", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert res.returncode == 1
    assert f"needs the optional dependency '{blocked}'" in res.stderr
    assert f"pip install 'lepton-mtl[{extra}]'" in res.stderr.replace("\n", "")
    assert "Traceback" not in res.stderr
