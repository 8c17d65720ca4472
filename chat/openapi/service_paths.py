"""The service routes of the OpenAPI document: probes, metrics, the document, the demo page."""

from __future__ import annotations

from typing import Any

from chat.openapi.parts import (
    JSON,
    OPTIONAL_KEY,
    REQUEST_ID_PARAM,
    errors,
    headers_of,
    json_reply,
    no_content,
)


def service_paths() -> dict[str, Any]:
    """The routes around the chat: health, readiness, metrics, this document, the demo page."""
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process serves",
                "tags": ["operations"],
                "parameters": [REQUEST_ID_PARAM],
                "responses": {"200": json_reply("Health", "The process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the backend and the stores are ready",
                "tags": ["operations"],
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "200": json_reply("Ready", "Ready to serve streams."),
                    "503": errors(503, "not_ready", "shutting_down", "store_unavailable"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over all workers",
                "tags": ["operations"],
                "security": OPTIONAL_KEY,
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "Prometheus text format (OpenMetrics when asked for).",
                        "headers": headers_of(),
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    "401": errors(401, "unauthorized"),
                    "404": {
                        **errors(404, "not_found"),
                        "description": "`not_found`: metrics are off (CHAT_METRICS=false)",
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "headers": headers_of(),
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "demoPage",
                "summary": "The demo chat page (plain HTML, no build step, no remote assets)",
                "tags": ["demo"],
                "parameters": [REQUEST_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "The page.",
                        "headers": headers_of(),
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/static/{path}": {
            "get": {
                "operationId": "demoAsset",
                "summary": "The demo page's scripts and styles",
                "tags": ["demo"],
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                    REQUEST_ID_PARAM,
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "headers": headers_of(),
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/html": {"schema": {"type": "string"}},
                        },
                    },
                    "304": no_content("Not modified (If-None-Match / If-Modified-Since)."),
                    "404": errors(404, "not_found"),
                },
            }
        },
    }
