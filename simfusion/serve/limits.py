"""Guards in front of the endpoints: the upload cap (checked while the body streams in) and the API key.

Both are plain ASGI/HTTP helpers with no FastAPI import at module level, so `serve.py --help`
stays instant.
"""

from __future__ import annotations

import hmac
import json

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB: larger requests get 413
API_KEY_HEADER = "x-api-key"
API_KEY_ENV = "SIMFUSION_API_KEY"


class BodyTooLarge(Exception):
    """A request body past the cap; raised from `receive` while the body is still coming in."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes ({limit // 2**20} MiB)")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, decided from Content-Length when it is
    given and else while the body streams, so an oversized upload is never read whole."""

    def __init__(self, app, *, limit: int = MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(send, self.limit)
            return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await too_large(send, self.limit)


async def too_large(send, limit: int) -> None:
    body = json.dumps({"error": str(BodyTooLarge(limit)), "status": 413}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def key_problem(configured: str | None, given: str | None) -> tuple[int, str] | None:
    """(status, message) when a write request lacks the right API key; None when it may go on."""
    if not configured:
        return None
    if not given:
        return 401, f"this endpoint needs the API key: send it in the {API_KEY_HEADER!r} header"
    if not hmac.compare_digest(given.encode("utf-8"), configured.encode("utf-8")):
        return 403, "the API key is wrong"
    return None


def bearer_or_header(headers) -> str | None:
    """The API key of a request: the X-API-Key header, else `Authorization: Bearer KEY`."""
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
