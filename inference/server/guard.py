"""The door in front of every endpoint, WebSocket included: the API key, and the web origins allowed."""
from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError


class Guard:
    """ASGI middleware that refuses a request before it runs: a wrong or missing API key, or a foreign `Origin`.

    Browsers send "simple" cross-origin POSTs without asking first, so a foreign origin is refused here; CORS
    headers alone would only hide the answer from the page. A page served by this very host is not foreign."""

    def __init__(self, app: ASGIApp, api_key: str, origins: list[str]):
        self.app, self.api_key, self.origins = app, api_key, set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and "*" not in self.origins and origin not in self.origins \
                and urlsplit(origin).netloc != headers.get("host"):
            return await self._refuse(scope, send, ApiError(403, f"requests from the web origin {origin} are not "
                                                                 "allowed (server setting cors_origins)"))
        if self.api_key and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                return await self._refuse(scope, send, ApiError(
                    401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", None,
                    "invalid_api_key"))
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, error: ApiError) -> None:
        if scope["type"] == "websocket":  # before the handshake completes: the client sees HTTP 403
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
            return
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
