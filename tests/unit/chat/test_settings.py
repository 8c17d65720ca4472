"""Environment -> Settings: defaults, parsing, and one-line errors that name the variable."""

from __future__ import annotations

import pytest

from chat.settings import SETTINGS_TABLE, Settings, SettingsError, load_settings


def test_empty_environment_when_loaded_then_contract_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.max_body_bytes == 65536
    assert settings.max_message_chars == 32000
    assert settings.ping_interval_s == 15
    assert (settings.first_token_timeout_s, settings.idle_timeout_s) == (30, 30)
    assert settings.total_timeout_s == 300
    assert (settings.fake_tokens, settings.fake_delay_ms) == (64, 0)
    assert (settings.log_level, settings.log_format, settings.log_content) == (
        "info",
        "json",
        False,
    )
    assert settings.api_keys == ()
    assert settings.resolved_backend() == "local"
    assert settings.send_timeout_s == 30
    assert settings.stream_lease_s == 10


@pytest.mark.parametrize(
    ("env", "backend", "api"),
    [
        ({"OPENAI_API_KEY": "sk-x"}, "openai", "responses"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai", "chat_completions"),
        ({"OPENAI_BASE_URL": "http://h/v1", "CHAT_OPENAI_API": "responses"}, "openai", "responses"),
        ({"CHAT_BACKEND": "fake", "OPENAI_API_KEY": "sk-x"}, "fake", "responses"),
    ],
)
def test_auto_backend_when_openai_configured_then_openai(
    env: dict[str, str], backend: str, api: str
) -> None:
    settings = load_settings(env)
    assert settings.resolved_backend() == backend
    assert settings.resolved_openai_api() == api


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CHAT_MAX_BODY_BYTES", "abc", "expected an integer"),
        ("CHAT_MAX_BODY_BYTES", "-1", "expected an integer"),
        ("CHAT_PING_INTERVAL_S", "nan", "expected a number"),
        ("CHAT_PING_INTERVAL_S", "0", "expected a number"),
        ("CHAT_BACKEND", "gpt", "expected one of auto, openai, local, fake"),
        ("CHAT_LOG_FORMAT", "xml", "expected one of json, console"),
        ("CHAT_LOG_CONTENT", "maybe", "expected true or false"),
        ("OPENAI_BASE_URL", "localhost:8080", "expected an http:// or https:// URL"),
        ("CHAT_MAX_CONCURRENT_STREAMS", "0", "expected an integer"),
        ("CHAT_CORS_ORIGINS", "example.com", "expected http(s) origins"),
    ],
)
def test_bad_value_when_loaded_then_one_line_naming_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    text = str(info.value)
    assert text.startswith(variable + ":")
    assert expected in text
    assert "\n" not in text


def test_openai_backend_without_key_or_url_when_loaded_then_error() -> None:
    with pytest.raises(SettingsError, match="CHAT_BACKEND"):
        load_settings({"CHAT_BACKEND": "openai"})


def test_lists_and_booleans_when_loaded_then_parsed() -> None:
    settings = load_settings(
        {"CHAT_API_KEYS": " a, b ,,c", "CHAT_LOG_CONTENT": "TRUE", "CHAT_LOCAL_THREADS": "auto"}
    )
    assert settings.api_keys == ("a", "b", "c")
    assert settings.log_content is True
    assert settings.local_threads is None


def test_every_table_field_exists_on_settings() -> None:
    fields = set(Settings.__struct_fields__)
    assert {field for field, _ in SETTINGS_TABLE.values()} <= fields


def test_several_workers_without_redis_when_loaded_then_one_line_naming_both_variables() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CHAT_WORKERS": "2"})
    text = str(info.value)
    assert text.startswith("CHAT_WORKERS: 2 workers need REDIS_URL")
    assert "\n" not in text


def test_several_workers_with_redis_when_loaded_then_accepted() -> None:
    settings = load_settings({"CHAT_WORKERS": "4", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings.workers == 4
    assert load_settings({}).workers == 1


@pytest.mark.parametrize(
    ("variable", "value"), [("CHAT_WORKERS", "0"), ("CHAT_WORKERS", "two"), ("CHAT_PORT", "70000")]
)
def test_listen_settings_when_bad_then_one_line_naming_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: expected an integer"):
        load_settings({variable: value})
