"""Safety layers of the service: bearer-token auth and a request body limit (pure ASGI)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from lepton.errors import ServeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths answered without a token: probes, and the API documentation (unless turned off).
PUBLIC_PATHS = frozenset({"/health", "/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
MIN_TOKEN_CHARS = 16


def read_token_file(path: str | Path) -> tuple[str, list[str]]:
    """The bearer token held by ``path`` (surrounding whitespace removed), and warnings.

    The file must hold one non-empty line. Warnings: a token shorter than 16 characters, a file
    that other users may read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServeError(f"--token-file {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ServeError(f"--token-file {p}: cannot be read ({e})") from None
    token = text.strip()
    if not token:
        raise ServeError(f"--token-file {p}: the file is empty")
    if "\n" in token or any(c.isspace() for c in token):
        raise ServeError(f"--token-file {p}: the token must be one word on one line")
    warnings = []
    if len(token) < MIN_TOKEN_CHARS:
        warnings.append(f"the token in {p} is short ({len(token)} characters); use 32 or more")
    try:
        mode = p.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{p} can be read by other users; chmod 600 {p}")
    except OSError:
        pass
    return token, warnings


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def token_matches(given: bytes, expected_digest: bytes) -> bool:
    """Constant-time comparison (of SHA-256 digests, so that the length does not leak either)."""
    return hmac.compare_digest(_digest(given), expected_digest)


async def send_json(
    send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a whole JSON response."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BearerAuth:
    """Answers 401 unless the request carries ``Authorization: Bearer <token>``.

    Every path needs the token except ``public`` ones (the probes and, unless turned off, the
    API documentation). The check runs before the body is read.
    """

    def __init__(self, app: ASGIApp, token: str, public: Iterable[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self._digest = _digest(token.encode())
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.public:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
                break
        if not given or not token_matches(given, self._digest):
            detail = "missing bearer token" if not given else "invalid bearer token"
            await send_json(
                send,
                401,
                {"detail": f"{detail}: send the header 'Authorization: Bearer <token>'"},
                [(b"www-authenticate", b'Bearer realm="lepton"')],
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answers 413 when a request body is larger than ``max_bytes``.

    A ``Content-Length`` above the limit is refused before anything is read; otherwise the body
    is read (chunked bodies included) up to the limit and handed on in one piece.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> dict[str, str]:
        return {
            "detail": f"request body larger than the limit of {self.max_bytes} bytes "
            "(--max-body-bytes); send fewer records per request"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if length > self.max_bytes:
                    await send_json(send, 413, self._too_large())
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await send_json(send, 413, self._too_large())
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
