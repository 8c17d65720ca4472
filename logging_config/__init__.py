"""Logging for the service: configuration, redaction, request ids and access lines."""

from logging_config.access import ACCESS_STATE_KEY, AccessLogMiddleware
from logging_config.correlation import CorrelationIdMiddleware, get_request_id, request_id_var
from logging_config.setup import configure_logging, shared_processors

__all__ = [
    "ACCESS_STATE_KEY",
    "AccessLogMiddleware",
    "CorrelationIdMiddleware",
    "configure_logging",
    "get_request_id",
    "request_id_var",
    "shared_processors",
]
