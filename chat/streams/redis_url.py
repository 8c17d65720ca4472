"""REDIS_URL at start-up: one synchronous PING, and the URL without its password for messages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis import Redis as SyncRedis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry as SyncRetry

from chat.settings import SettingsError


def check_redis_url(url: str, *, timeout_s: float = 5.0) -> None:
    """PING synchronously, for start-up checks that run before the event loop."""
    try:
        client = SyncRedis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # At start-up one clear answer beats a minute of backoff.
            retry=SyncRetry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise SettingsError(f"REDIS_URL: {scrub(str(exc), url)}") from None
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise unreachable(url, exc) from None
    finally:
        client.close()


def unreachable(url: str, exc: BaseException) -> SettingsError:
    """The start-up error for a Redis that did not answer, naming REDIS_URL without secrets."""
    reason = scrub(str(exc), url) or type(exc).__name__
    return SettingsError(f"REDIS_URL: cannot reach {redact_url(url)}: {reason}")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def scrub(text: str, url: str) -> str:
    """``text`` without the URL's password, wherever a library chose to quote it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(url, redact_url(url))
    if password:
        text = text.replace(password, "***")
    return " ".join(text.split())
