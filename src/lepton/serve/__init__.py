"""The HTTP prediction service (FastAPI + uvicorn): ``lepton serve`` and its Python API.

Needs the ``serve`` extra: ``pip install 'lepton-mtl[serve]'``.

Examples
--------
>>> from lepton.serve import ServeSettings, create_app, serve       # doctest: +SKIP
>>> serve("runs/penguins/bundle", port=8000)                        # doctest: +SKIP
"""

from lepton._optional import require

require("fastapi", "serve", "the prediction service")
require("uvicorn", "serve", "the prediction service")

from lepton.serve._app import ServeSettings, create_app  # noqa: E402
from lepton.serve._batcher import BatchStats, MicroBatcher  # noqa: E402
from lepton.serve._run import is_loopback, serve  # noqa: E402
from lepton.serve._security import read_token_file  # noqa: E402

__all__ = [
    "BatchStats",
    "MicroBatcher",
    "ServeSettings",
    "create_app",
    "is_loopback",
    "read_token_file",
    "serve",
]
