"""Start-up checks of what the settings need, so they fail before serving: Redis, the model file."""

from __future__ import annotations

from chat.settings import Settings


def preflight(settings: Settings) -> None:
    """Check at start-up what would otherwise fail later: Redis, an unusable local model file."""
    if settings.redis_url:
        from chat.streams.redis_url import check_redis_url

        check_redis_url(settings.redis_url)
    if settings.resolved_backend() != "local":
        return
    try:
        from chat.models.local.backend import check_model_file
    except ImportError:
        return  # build_backend falls back to fake, loudly, or raises for CHAT_BACKEND=local
    check_model_file(settings)
