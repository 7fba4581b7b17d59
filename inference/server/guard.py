"""The door in front of every endpoint, WebSocket included: the Host a request was sent to, the web origin it
comes from, the API key, and how many bytes its body may hold."""
from __future__ import annotations

import hmac
import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServerConfig
from .errors import ApiError

LOOPBACK_NAMES = ("localhost", "localhost.")
JSON_OVERHEAD = 64 * 1024  # bytes of a speech request besides `input`: field names, options, white space
MULTIPART_OVERHEAD = 64 * 1024  # bytes of an upload besides the clip: boundaries, part headers, the name field


def host_name(host_header: str) -> str:
    """`example.com:8000` -> `example.com`, `[::1]:8000` -> `::1`, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request sent to `host` may be answered.

    DNS rebinding points a name the attacker owns at this machine, so a page of theirs becomes same-origin with
    the server; its requests carry that name as Host. An IP literal or `localhost` cannot be such a name, so they
    are always answered; other names only when listed (`*` : any, `.example.com` : it and its subdomains)."""
    if is_ip_literal(host) or host in LOOPBACK_NAMES:
        return True
    for name in allowed:
        name = name.lower()
        if name == "*" or host == name or (name.startswith(".") and (host == name[1:] or host.endswith(name))):
            return True
    return False


def body_limit(cfg: ServerConfig, path: str) -> int:
    """Bytes a request body may hold: an upload its clip, anything else a speech request of `max_chars` (each
    character at most 12 bytes, as a JSON-escaped surrogate pair)."""
    if path.rstrip("/") == "/v1/voices":
        return int(cfg.max_upload_mb * 1e6) + MULTIPART_OVERHEAD
    return 12 * cfg.max_chars + JSON_OVERHEAD


class Guard:
    """ASGI middleware that refuses a request before it runs: a Host this server is not meant to be reached by, a
    foreign `Origin`, a wrong or missing API key, or a body larger than its endpoint takes (checked from
    Content-Length, and counted as it streams in, so a chunked body is cut off at the limit, not read whole).

    Browsers send "simple" cross-origin POSTs without asking first, so a foreign origin is refused here; CORS
    headers alone would only hide the answer from the page. A page served by this very (allowed) host is not
    foreign."""

    def __init__(self, app: ASGIApp, cfg: ServerConfig, api_key: str):
        self.app, self.cfg, self.api_key = app, cfg, api_key
        self.origins = set(cfg.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = body_limit(self.cfg, scope["path"])
        try:
            self.check(scope, headers, limit)
        except ApiError as error:
            return await refuse(scope, send, error)
        if scope["type"] == "http":
            receive = counted(receive, limit)
        return await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: dict[str, str], limit: int) -> None:
        host = headers.get("host", "")
        if not host_allowed(host_name(host), self.cfg.allowed_hosts):
            raise ApiError(403, f"this server does not answer requests for the host {host_name(host)!r} "
                                "(server setting allowed_hosts)")
        origin = headers.get("origin")
        if origin and "*" not in self.origins and origin not in self.origins and urlsplit(origin).netloc != host:
            raise ApiError(403, f"requests from the web origin {origin} are not allowed (server setting "
                                "cors_origins)")
        if self.api_key and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", None,
                               "invalid_api_key")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(limit, int(declared))


def too_large(limit: int, size: int | None = None) -> ApiError:
    """413; `size` None: a body without Content-Length, cut off at the limit."""
    said = f"{size / 1e6:.2f} MB" if size is not None else f"over {limit / 1e6:.2f} MB"
    return ApiError(413, f"the request body is {said}; this endpoint takes at most {limit / 1e6:.2f} MB", None,
                    "body_too_large")


def counted(receive: Receive, limit: int) -> Receive:
    """`receive` that raises a 413 once the body passes `limit` bytes (a body sent without Content-Length)."""
    seen = 0

    async def receive_counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return receive_counted


async def refuse(scope: Scope, send: Send, error: ApiError) -> None:
    if scope["type"] == "websocket":  # before the handshake completes: the client sees HTTP 403
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
