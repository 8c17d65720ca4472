"""The API's routes (the demo page's are the app's own)."""

from __future__ import annotations

from starlette.routing import Route

from chat.http.chat_routes import chat, create_stream
from chat.http.conversation_routes import conversation_resource
from chat.http.ops_routes import healthz, metrics, openapi, readyz
from chat.http.stream_routes import stream_resource


def api_routes() -> list[Route]:
    """Every route of the contract, with the methods it answers (others: 405)."""
    return [
        Route("/chat", chat, methods=["POST"]),
        Route("/chat/streams", create_stream, methods=["POST"]),
        Route("/chat/streams/{stream_id}", stream_resource, methods=["GET", "DELETE"]),
        Route("/conversations/{conversation_id}", conversation_resource, methods=["GET", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
