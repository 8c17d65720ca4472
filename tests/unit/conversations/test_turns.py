"""The stored items of a conversation, their turns, and their text."""

from __future__ import annotations

from typing import Any

from chat.conversations.turns import (
    assistant_item,
    group_turns,
    item_bytes,
    messages_of,
    turn_items,
    user_item,
)


def test_turn_items_when_answer_delivered_then_message_and_answer() -> None:
    assert turn_items("hi", "Hello!") == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
    ]


def test_turn_items_when_no_text_delivered_then_message_only() -> None:
    assert turn_items("hi", "") == [{"role": "user", "content": "hi"}]


def test_group_turns_when_window_starts_mid_turn_then_orphan_answer_left_out() -> None:
    items = [
        assistant_item("a0"),
        user_item("u1"),
        assistant_item("a1"),
        user_item("u2"),
        user_item("u3"),
        assistant_item("a3"),
    ]
    assert group_turns(items) == [
        [user_item("u1"), assistant_item("a1")],
        [user_item("u2")],
        [user_item("u3"), assistant_item("a3")],
    ]


def test_messages_of_when_sdk_items_mixed_in_then_roles_and_texts_oldest_first() -> None:
    sdk_output: dict[str, Any] = {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "Hel", "annotations": []},
            {"type": "output_text", "text": "lo"},
        ],
    }
    items = [
        user_item("hi"),
        sdk_output,
        {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
        {"role": "user", "content": [{"type": "input_text", "text": "again"}]},
    ]
    assert messages_of(items) == [
        {"role": "user", "text": "hi"},
        {"role": "assistant", "text": "Hello"},
        {"role": "user", "text": "again"},
    ]


def test_item_bytes_when_text_is_not_ascii_then_utf8_bytes_counted() -> None:
    assert item_bytes([user_item("é"), assistant_item("😀")]) == 2 + 4
