"""Running the service with uvicorn: one process, or several worker processes."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lepton._optional import require
from lepton.bundle import Bundle, bundle_dir
from lepton.errors import ServeError
from lepton.serve._app import ServeSettings, create_app
from lepton.serve._security import read_token_file

#: Environment variable through which worker processes receive the bundle and the settings.
WORKER_ENV = "LEPTON_SERVE_WORKER"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_config(log_level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["lepton.serve"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    return config


def serve(
    bundle: Bundle | str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    token_file: str | Path | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve ``bundle`` over HTTP until interrupted (Ctrl-C, SIGTERM).

    Binds to the loopback interface unless ``host`` says otherwise. With ``workers > 1`` each
    worker process loads the bundle from its folder and runs its own micro-batcher; the port is
    shared. ``token_file`` holds the bearer token that every request must carry.

    Examples
    --------
    >>> serve("runs/penguins/bundle", port=8000, token_file="token.txt")  # doctest: +SKIP
    """
    uvicorn = require("uvicorn", "serve", "lepton serve")
    settings = settings or ServeSettings()
    if token_file is not None:
        settings.token, _ = read_token_file(token_file)
    settings.check()
    if workers < 1:
        raise ServeError("workers must be at least 1")
    if not 0 <= port <= 65535:
        raise ServeError(f"port {port} is not a TCP port (0-65535)")
    common = {
        "host": host,
        "port": port,
        "log_level": log_level.lower(),
        "log_config": _log_config(log_level),
        "access_log": access_log,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        uvicorn.run(create_app(bundle, settings), **common)
        return
    if isinstance(bundle, Bundle):
        if bundle.path is None:
            raise ServeError("several workers load the bundle from its folder: save it first")
        folder = bundle.path
    else:
        folder = bundle_dir(bundle)
        Bundle.load(folder)  # fail here, once, rather than in every worker
    if settings.token is not None and token_file is None:
        raise ServeError("several workers read the token from a file: pass token_file")
    spec = {
        "bundle": str(Path(folder).resolve()),
        "settings": {k: v for k, v in asdict(settings).items() if k != "token"},
        "token_file": None if token_file is None else str(Path(token_file).resolve()),
    }
    os.environ[WORKER_ENV] = json.dumps(spec)
    uvicorn.run("lepton.serve._run:worker_app", factory=True, workers=workers, **common)


def worker_app() -> Any:
    """The app of one worker process (uvicorn factory; reads :data:`WORKER_ENV`)."""
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        raise ServeError(f"{WORKER_ENV} is not set: start workers with lepton serve --workers N")
    spec = json.loads(raw)
    settings = ServeSettings(**spec["settings"])
    if spec.get("token_file"):
        settings.token, _ = read_token_file(spec["token_file"])
    return create_app(spec["bundle"], settings)
