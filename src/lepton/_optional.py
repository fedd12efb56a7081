"""Optional dependencies: import them with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from lepton.errors import MissingDependencyError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install`` + extra.

    Examples
    --------
    >>> require("json", "serve", "the prediction service").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs the optional dependency '{module.split('.')[0]}': "
            f"pip install 'lepton-mtl[{extra}]'"
        ) from None
