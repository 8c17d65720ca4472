"""The ``openai`` backend: the OpenAI API or any OpenAI-compatible server via OPENAI_BASE_URL."""

from __future__ import annotations

import httpx2
from agents import Model, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel
from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpxClient

from chat.models.backend import Backend
from chat.models.openai.fast import build_fast_openai_model
from chat.settings import Settings


def build_openai_client(settings: Settings) -> AsyncOpenAI:
    """A client with our own limits: the library's 600 s timeout and 2 retries suit no sidecar.

    The transport under the client is aiohttp by default (the client's own ``aiohttp`` extra):
    its C HTTP parser reads a streamed body for a fraction of httpcore's per-chunk cost (bench:
    +40% full streams per second on one core). Requests, auth, retries and errors stay the
    client's; ``CHAT_OPENAI_TRANSPORT=httpx`` is the client's default transport.
    """
    timeout = httpx2.Timeout(
        connect=settings.openai_connect_timeout_s,
        # No read timer: every read of a run waits under the run's own deadlines (first token,
        # idle, total: chat/run/deadlines.py), which cancel the request when they pass. A read
        # timer in the client would be re-armed on every network read (aiohttp: a new timer per
        # chunk, 2 % of the server's CPU at 1,000 paced streams, py-spy).
        read=None,
        write=30.0,
        pool=settings.openai_connect_timeout_s,
    )
    limits = httpx2.Limits(
        max_connections=settings.effective_max_streams(),
        # httpcore polls every idle connection's socket on each request start and end: after a
        # peak, 200 idle ones cost ~2 ms of CPU a stream here (bench), more than reconnecting.
        max_keepalive_connections=64,
        keepalive_expiry=30.0,
    )
    if settings.openai_transport == "aiohttp":
        http_client_class: type[httpx2.AsyncClient] = DefaultAioHttpClient
    else:
        http_client_class = DefaultAsyncHttpxClient
    return AsyncOpenAI(
        # Compatible servers (vLLM, Ollama, llama.cpp) accept any key; the client requires one.
        api_key=settings.openai_api_key or "not-needed",
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=settings.openai_max_retries,
        # openai 3.x speaks httpx2; its default client subclass keeps the SDK's own settings.
        # The client's own classes follow redirects by default: a provider answering 3xx would
        # get the prompt re-sent to whatever host it names. A 3xx is an upstream_error instead.
        http_client=http_client_class(timeout=timeout, limits=limits, follow_redirects=False),
    )


def build_openai_backend(settings: Settings, model_settings: ModelSettings) -> Backend:
    """Responses or Chat Completions over one shared client, closed with the app."""
    client = build_openai_client(settings)
    model_name = settings.resolved_model()
    api = settings.resolved_openai_api()
    model: Model
    if settings.openai_impl == "fast":
        # msgspec decoding over the same client; the stock SDK models stay as the reference.
        model = build_fast_openai_model(client, model_name, api)
    elif api == "responses":
        model = OpenAIResponsesModel(model=model_name, openai_client=client)
    else:
        model = OpenAIChatCompletionsModel(model=model_name, openai_client=client)
    name = "openai-responses" if api == "responses" else "openai-chat-completions"
    return Backend(name=name, model=model, model_settings=model_settings, close=client.close)
