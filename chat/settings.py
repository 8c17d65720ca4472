"""Environment -> one frozen Settings struct, validated once at start-up.

Every variable is listed in ``SETTINGS_TABLE`` with its parser and default, so the README table,
the parser and the error messages cannot drift apart. A bad value raises ``SettingsError`` whose
text is one line naming the variable and what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

Backend = Literal["auto", "openai", "local", "fake"]
OpenAIApi = Literal["responses", "chat_completions"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant. Answer clearly and concisely, and say so when you do not know."
)


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the service, resolved from the environment."""

    backend: Backend = "auto"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    model: str | None = None
    openai_api: OpenAIApi | None = None
    openai_impl: Literal["fast", "stock"] = "fast"
    openai_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    openai_max_retries: int = 1
    openai_connect_timeout_s: float = 5.0
    instructions: str = DEFAULT_INSTRUCTIONS
    fake_tokens: int = 64
    fake_delay_ms: float = 0.0
    max_body_bytes: int = 65536
    max_message_chars: int = 32000
    max_concurrent_streams: int = 0  # 0: sized for the machine, see effective_max_streams()
    adaptive_limit: bool = True  # shed load by event-loop lag, under max_concurrent_streams
    adaptive_target_lag_ms: float = 5.0
    adaptive_min_streams: int = 4
    ping_interval_s: float = 15.0
    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    total_timeout_s: float = 300.0
    shutdown_grace_s: float = 5.0
    detached_grace_s: float = 10.0
    send_timeout_s: float = 30.0  # 0: a reader may stall for ever
    stream_ttl_s: float = 300.0
    stream_max_finished: int = 10_000
    stream_lease_s: float = 10.0
    sse_retry_ms: int = 1000
    redis_url: str | None = None
    data_dir: str = "./data"
    history_max_turns: int = 50
    conversation_ttl_s: float = 604_800.0
    conversation_max_turns: int = 1000
    conversation_max_bytes: int = 4 * 1024 * 1024
    conversation_lock_ttl_s: float = 30.0
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    log_content: bool = False
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    tracing: bool = False
    metrics: bool = True
    metrics_public: bool = False
    local_model_path: str | None = None
    local_threads: int | None = None
    local_context: int = 2048
    local_queue: int = 4
    max_output_tokens: int | None = None  # local backend: 512 when unset
    # `python -m chat` only (uvicorn's listen address and processes); the app ignores them.
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    def resolved_backend(self) -> Literal["openai", "local", "fake"]:
        """``auto`` means openai when it is configured, else the embedded default."""
        if self.backend != "auto":
            return self.backend
        if self.openai_api_key or self.openai_base_url:
            return "openai"
        return "local"

    def resolved_openai_api(self) -> OpenAIApi:
        """Chat Completions with a custom base URL: many compatible servers lack Responses."""
        if self.openai_api is not None:
            return self.openai_api
        return "chat_completions" if self.openai_base_url else "responses"

    def resolved_model(self) -> str:
        """The model name sent to the provider."""
        if self.model:
            return self.model
        backend = self.resolved_backend()
        if backend == "openai":
            return "gpt-4o-mini"
        if backend == "local":
            return "smollm2-135m-instruct"
        return "fake"

    def effective_max_streams(self) -> int:
        """The hard cap on streams at once; by default generous per core, as streams are mostly
        idle (the adaptive limit finds the real figure under it)."""
        if self.max_concurrent_streams > 0:
            return self.max_concurrent_streams
        return 1000 * (os.cpu_count() or 1)


# --- parsers: str -> value, raising ValueError with what was expected -------------------------


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(_range_text("an integer", low, high)) from None
        if value < low or (high is not None and value > high):
            raise ValueError(_range_text("an integer", low, high))
        return value

    return parse


def _float_range(low: float, high: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(_range_text("a number", low, high)) from None
        if value != value or value < low or (high is not None and value > high):
            raise ValueError(_range_text("a number", low, high))
        return value

    return parse


def _range_text(kind: str, low: float, high: float | None) -> str:
    if high is None:
        return f"expected {kind} >= {low}"
    return f"expected {kind} between {low} and {high}"


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a non-empty value")
    return raw


def _url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


def _optional_threads(raw: str) -> int | None:
    if raw.strip().lower() in {"", "auto"}:
        return None
    return _int_range(1, 256)(raw)


# variable -> (field, parser). Order follows API.md's configuration table.
SETTINGS_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "OPENAI_API_KEY": ("openai_api_key", _text),
    "OPENAI_BASE_URL": ("openai_base_url", _url),
    "CHAT_BACKEND": ("backend", _choice("auto", "openai", "local", "fake")),
    "CHAT_MODEL": ("model", _text),
    "CHAT_OPENAI_API": ("openai_api", _choice("responses", "chat_completions")),
    "CHAT_OPENAI_IMPL": ("openai_impl", _choice("fast", "stock")),
    "CHAT_OPENAI_TRANSPORT": ("openai_transport", _choice("aiohttp", "httpx")),
    "CHAT_OPENAI_MAX_RETRIES": ("openai_max_retries", _int_range(0, 10)),
    "CHAT_OPENAI_CONNECT_TIMEOUT_S": ("openai_connect_timeout_s", _float_range(0.1, 300)),
    "CHAT_INSTRUCTIONS": ("instructions", _text),
    "CHAT_FAKE_TOKENS": ("fake_tokens", _int_range(0, 1_000_000)),
    "CHAT_FAKE_DELAY_MS": ("fake_delay_ms", _float_range(0, 600_000)),
    "CHAT_MAX_BODY_BYTES": ("max_body_bytes", _int_range(64, 64 * 1024 * 1024)),
    "CHAT_MAX_MESSAGE_CHARS": ("max_message_chars", _int_range(1, 10_000_000)),
    "CHAT_MAX_CONCURRENT_STREAMS": ("max_concurrent_streams", _int_range(1, 1_000_000)),
    "CHAT_ADAPTIVE_LIMIT": ("adaptive_limit", _parse_bool),
    "CHAT_ADAPTIVE_TARGET_LAG_MS": ("adaptive_target_lag_ms", _float_range(0.1, 10_000)),
    "CHAT_ADAPTIVE_MIN_STREAMS": ("adaptive_min_streams", _int_range(1, 1_000_000)),
    "CHAT_PING_INTERVAL_S": ("ping_interval_s", _float_range(0.1, 3600)),
    "CHAT_FIRST_TOKEN_TIMEOUT_S": ("first_token_timeout_s", _float_range(0.01, 3600)),
    "CHAT_IDLE_TIMEOUT_S": ("idle_timeout_s", _float_range(0.01, 3600)),
    "CHAT_TOTAL_TIMEOUT_S": ("total_timeout_s", _float_range(0.01, 86400)),
    "CHAT_SHUTDOWN_GRACE_S": ("shutdown_grace_s", _float_range(0, 3600)),
    "CHAT_DETACHED_GRACE_S": ("detached_grace_s", _float_range(0, 3600)),
    "CHAT_SEND_TIMEOUT_S": ("send_timeout_s", _float_range(0, 3600)),
    "CHAT_STREAM_TTL_S": ("stream_ttl_s", _float_range(1, 86400)),
    "CHAT_STREAM_MAX_FINISHED": ("stream_max_finished", _int_range(0, 10_000_000)),
    "CHAT_STREAM_LEASE_S": ("stream_lease_s", _float_range(0.3, 3600)),
    "CHAT_SSE_RETRY_MS": ("sse_retry_ms", _int_range(0, 600_000)),
    "REDIS_URL": ("redis_url", _redis_url),
    "CHAT_DATA_DIR": ("data_dir", _text),
    "CHAT_HISTORY_MAX_TURNS": ("history_max_turns", _int_range(0, 100_000)),
    "CHAT_CONVERSATION_TTL_S": ("conversation_ttl_s", _float_range(1, 10 * 365 * 86400)),
    "CHAT_CONVERSATION_MAX_TURNS": ("conversation_max_turns", _int_range(1, 1_000_000)),
    "CHAT_CONVERSATION_MAX_BYTES": ("conversation_max_bytes", _int_range(1024, 1 << 30)),
    "CHAT_CONVERSATION_LOCK_TTL_S": ("conversation_lock_ttl_s", _float_range(1, 3600)),
    "CHAT_LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error", "critical")),
    "CHAT_LOG_FORMAT": ("log_format", _choice("json", "console")),
    "CHAT_LOG_CONTENT": ("log_content", _parse_bool),
    "CHAT_API_KEYS": ("api_keys", _csv),
    "CHAT_CORS_ORIGINS": ("cors_origins", _csv),
    "CHAT_TRACING": ("tracing", _parse_bool),
    "CHAT_METRICS": ("metrics", _parse_bool),
    "CHAT_METRICS_PUBLIC": ("metrics_public", _parse_bool),
    "CHAT_LOCAL_MODEL_PATH": ("local_model_path", _text),
    "CHAT_LOCAL_THREADS": ("local_threads", _optional_threads),
    "CHAT_LOCAL_CONTEXT": ("local_context", _int_range(128, 1_048_576)),
    "CHAT_LOCAL_QUEUE": ("local_queue", _int_range(0, 10_000)),
    "CHAT_MAX_OUTPUT_TOKENS": ("max_output_tokens", _int_range(1, 1_000_000)),
    "CHAT_HOST": ("host", _text),
    "CHAT_PORT": ("port", _int_range(0, 65535)),
    "CHAT_WORKERS": ("workers", _int_range(1, 256)),
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every known variable; unset or empty ones keep their defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable, (field, parse) in SETTINGS_TABLE.items():
        raw = env.get(variable)
        if raw is None or (raw.strip() == "" and field not in {"api_keys", "cors_origins"}):
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{variable}: {exc}") from None
    values.update(overrides)
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.backend == "openai" and not (settings.openai_api_key or settings.openai_base_url):
        raise SettingsError(
            "CHAT_BACKEND: 'openai' expected OPENAI_API_KEY or OPENAI_BASE_URL to be set"
        )
    if settings.workers > 1 and not settings.redis_url:
        # Stream logs and conversations live in one process without Redis: a reader that
        # reconnects, or a conversation's next turn, would land on a worker that knows nothing
        # of it. Refuse rather than serve 404s at random. (Sticky routing was the alternative:
        # it needs the proxy's help, and a worker restart still loses its streams.)
        raise SettingsError(
            f"CHAT_WORKERS: {settings.workers} workers need REDIS_URL (streams and conversations "
            "must be shared between workers); set REDIS_URL or run 1 worker"
        )
    for origin in settings.cors_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(f"CHAT_CORS_ORIGINS: expected http(s) origins, got {origin!r}")
