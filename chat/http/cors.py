"""CORS for an allowlist of origins: Starlette's middleware, silent towards other origins."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Send


class AllowlistCORSMiddleware(CORSMiddleware):
    """Starlette's ``CORSMiddleware``, but an origin off the list gets no CORS header at all.

    Starlette adds ``Access-Control-Expose-Headers`` to the answer of every request that has an
    ``Origin``, allowed or not. Harmless to browsers, but it tells any page which headers we
    would share; an origin that is not allowed gets only ``Vary: Origin`` (caches must still
    tell the answers apart).
    """

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if (
            message["type"] == "http.response.start"
            and origin is not None
            and not self.is_allowed_origin(origin=origin)
        ):
            message.setdefault("headers", [])
            MutableHeaders(scope=message).add_vary_header("Origin")
            await send(message)
            return
        await super().send(message, send, request_headers)
