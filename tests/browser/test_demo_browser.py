"""The demo page in a real browser: Debian's Chromium, driven by Playwright, against the service.

Every wait is on a DOM condition with a bounded timeout, never a fixed sleep. Screenshots go to
``artifacts/browser/``. Without Chromium or Playwright the tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from chat.models.fake import fake_tokens
from tests.support.service import ROOT, Service
from tests.support.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

TOKENS: Final = 40
EXPECTED: Final = "".join(fake_tokens(TOKENS))
ARTIFACTS: Final = ROOT / "artifacts" / "browser"
TIMEOUT_MS: Final = 15_000
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",  # root in a container: the setuid sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    # The machine has no outside network: anything that phones home would only add hangs.
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Keeps every EventSource the page makes, so tests can read the real object's readyState.
RECORD_EVENT_SOURCES: Final = """
(() => {
  const Native = window.EventSource;
  window.__eventSources = [];
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      window.__eventSources.push(this);
    }
  };
})();
"""

STATE_IS: Final = "s => document.getElementById('app').dataset.state === s"


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; in CI a missing browser is a broken setup, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    return path if Path(path).is_file() else shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    chromium = _chromium_path()
    if chromium is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The service on the fake model: 40 tokens, 50 ms apart (2 s per answer)."""
    env = {"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": str(TOKENS), "CHAT_FAKE_DELAY_MS": "50"}
    with Service(env) as service:
        yield service


class Demo:
    """The page plus what went wrong in it (uncaught errors, CSP violations)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"csp: {message.text}")

    def open(self, base_url: str) -> None:
        """Load the page and wait for its script to have run."""
        self.page.goto(base_url + "/")
        self.page.wait_for_function(STATE_IS, arg="idle")

    def ask(self, message: str) -> None:
        """Type a message and click Send."""
        self.page.get_by_label("Your message").fill(message)
        self.page.get_by_role("button", name="Send").click()

    def wait_state(self, state: str) -> None:
        """Wait until ``<main data-state>`` is ``state``."""
        self.page.wait_for_function(STATE_IS, arg=state)

    def wait_events(self, at_least: int) -> None:
        """Wait until the page has rendered event ``at_least`` while still streaming."""
        self.page.wait_for_function(
            """n => {
              const main = document.getElementById('app');
              return main.dataset.state === 'streaming' && Number(main.dataset.lastEventId) >= n;
            }""",
            arg=at_least,
        )

    def data(self, name: str) -> str:
        """A ``data-*`` attribute of ``<main>``."""
        value = self.page.get_attribute("#app", f"data-{name}")
        assert value is not None
        return value

    def text(self, selector: str) -> str:
        """The text content of one element."""
        return self.page.text_content(selector) or ""

    def ready_states(self) -> list[int]:
        """``readyState`` of every EventSource the page made (2 is CLOSED)."""
        return self.page.evaluate("() => window.__eventSources.map(s => s.readyState)")

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot under ``artifacts/browser``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture
def demo(browser: Browser) -> Iterator[Demo]:
    """A fresh browser context (no shared cache or cookies) with the page helper."""
    context = browser.new_context(viewport={"width": 900, "height": 760})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(RECORD_EVENT_SOURCES)
    try:
        yield Demo(context.new_page())
    finally:
        context.close()


def test_send_when_message_submitted_then_answer_streams_in_and_source_closes(
    demo: Demo, service: Service
) -> None:
    demo.open(service.base_url)
    assert demo.page.get_attribute("#answer", "aria-live") == "polite"
    demo.ask("Tell me something")

    demo.page.wait_for_function(
        """() => document.getElementById('app').dataset.state === 'streaming'
                 && document.getElementById('answer').textContent.length > 0"""
    )
    first = demo.text("#answer")
    assert demo.page.get_attribute("#answer", "aria-busy") == "true"
    demo.page.wait_for_function(
        """n => document.getElementById('app').dataset.state === 'streaming'
                && document.getElementById('answer').textContent.length > n""",
        arg=len(first),
    )
    later = demo.text("#answer")
    demo.screenshot("streaming")
    assert EXPECTED.startswith(first)
    assert EXPECTED.startswith(later)
    assert len(first) < len(later)

    demo.wait_state("done")
    assert demo.text("#answer") == EXPECTED
    assert demo.ready_states() == [2]
    assert demo.data("last-event-id") == str(TOKENS + 1)  # 40 deltas, then done
    assert demo.data("reconnects") == "0"
    assert demo.text("#status").startswith("Done")
    assert demo.page.get_attribute("#answer", "aria-busy") == "false"
    assert demo.page.is_hidden("#error")
    assert demo.page.is_enabled("#send")
    assert demo.page.is_disabled("#stop")
    demo.screenshot("done")
    assert demo.problems == []


def test_reconnect_when_proxy_drops_connections_then_answer_shown_exactly_once(
    demo: Demo, service: Service
) -> None:
    with TcpProxy("127.0.0.1", service.port) as proxy:
        demo.open(proxy.base_url)
        demo.ask("Survive a dropped connection")
        demo.wait_events(5)

        assert proxy.drop_all() >= 1
        # The status says so while EventSource waits its `retry` (1 s) before reconnecting.
        demo.page.wait_for_function(
            """() => Number(document.getElementById('app').dataset.reconnects) >= 1
                     && document.getElementById('status').textContent.includes('reconnecting')"""
        )
        demo.screenshot("reconnecting")
        demo.wait_state("done")
        assert proxy.accepted >= 2  # the reconnect went through the proxy too

    assert demo.text("#answer") == EXPECTED
    assert int(demo.data("reconnects")) >= 1
    assert demo.data("last-event-id") == str(TOKENS + 1)
    assert demo.ready_states() == [2]
    # The browser resumed with Last-Event-ID rather than replaying from the start.
    url = demo.page.evaluate("() => window.__eventSources[0].url")
    path = url.removeprefix(proxy.base_url)
    resumed = service.wait_for_line(
        lambda line: _access(line, path).get("resumed_after", 0) >= 5, timeout=10
    )
    assert _access(resumed, path)["outcome"] == "done"
    assert demo.problems == []


def test_stop_when_clicked_mid_stream_then_cancelled_error_shown(
    demo: Demo, service: Service
) -> None:
    demo.open(service.base_url)
    demo.ask("Start, then stop")
    demo.wait_events(3)
    demo.page.get_by_role("button", name="Stop").click()

    demo.wait_state("error")
    assert demo.text("#error-code") == "cancelled"
    assert demo.page.is_visible("#error")
    assert demo.text("#error-message").strip() != ""
    assert demo.text("#status") == "Stopped."
    partial = demo.text("#answer")
    assert partial
    assert EXPECTED.startswith(partial)
    assert len(partial) < len(EXPECTED)
    assert demo.ready_states() == [2]
    assert demo.page.is_enabled("#send")
    demo.screenshot("stopped")
    assert demo.problems == []


def test_send_when_service_answers_503_then_code_and_message_shown(
    demo: Demo, service: Service
) -> None:
    body = {"error": {"code": "overloaded", "message": "Too many streams.", "request_id": "r-1"}}
    # The service's own 503 needs a saturated server; the page's handling is what is tested.
    demo.page.route(
        "**/chat/streams",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            headers={"Retry-After": "1"},
            body=json.dumps(body),
        ),
    )
    demo.open(service.base_url)
    demo.ask("Anyone there?")

    demo.wait_state("error")
    assert demo.text("#error-code") == "overloaded"
    assert demo.text("#error-message") == "Too many streams."
    assert demo.text("#answer") == ""
    assert demo.ready_states() == []
    assert demo.page.is_enabled("#send")
    assert demo.problems == []


def test_guard_when_stream_replays_event_ids_then_text_rendered_once(
    demo: Demo, service: Service
) -> None:
    # The service never replays (it resumes after Last-Event-ID); a stand-in stream does, to
    # prove the page's own guard: an id at or below the last rendered one is ignored.
    frames = [
        ("delta", 1, {"type": "delta", "text": "one"}),
        ("delta", 2, {"type": "delta", "text": " two"}),
        ("delta", 1, {"type": "delta", "text": "one"}),
        ("delta", 2, {"type": "delta", "text": " two"}),
        ("delta", 3, {"type": "delta", "text": " three"}),
        ("done", 4, {"type": "done", "finish_reason": "stop", "usage": {}, "request_id": "r"}),
    ]
    stream = "retry: 1000\n\n" + "".join(
        f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n"
        for event, event_id, data in frames
    )
    created = {"stream_id": "s", "events_url": "/chat/streams/s", "request_id": "r"}
    demo.page.route(
        "**/chat/streams",
        lambda route: route.fulfill(
            status=201, content_type="application/json", body=json.dumps(created)
        ),
    )
    demo.page.route(
        "**/chat/streams/s",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=stream),
    )
    demo.open(service.base_url)
    demo.ask("Replay, please")

    demo.wait_state("done")
    assert demo.text("#answer") == "one two three"
    assert demo.data("last-event-id") == "4"
    assert demo.ready_states() == [2]
    assert demo.problems == []


def test_layout_when_narrow_screen_and_enter_pressed_then_fits_and_sends(
    demo: Demo, service: Service
) -> None:
    demo.page.set_viewport_size({"width": 360, "height": 740})
    demo.open(service.base_url)
    demo.page.get_by_label("Your message").fill("From a phone")
    demo.page.get_by_label("Your message").press("Enter")

    demo.wait_state("done")
    assert demo.text("#answer") == EXPECTED
    no_overflow = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert demo.page.evaluate(no_overflow)
    for selector in ("#send", "#stop", "#message"):
        box = demo.page.locator(selector).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 360
    demo.screenshot("narrow")
    assert demo.problems == []


def _access(line: str, path: str) -> dict[str, Any]:
    """The access-log record of a GET of ``path`` in ``line``, else an empty dict."""
    if not line.startswith("{"):
        return {}
    record = json.loads(line)
    if record.get("event") == "request" and record.get("path") == path:
        return record
    return {}


def _transcript(demo: Demo) -> list[tuple[str, str]]:
    """(role class, text) of every message in the page's transcript, in order."""
    rows = demo.page.evaluate(
        """() => Array.from(document.querySelectorAll('#transcript .turn'), item => [
              item.classList.contains('user') ? 'user' : 'assistant',
              item.querySelector('.text').textContent,
            ])"""
    )
    return [(role, text) for role, text in rows]


def test_conversation_when_two_turns_then_reload_shows_both_and_new_chat_none(
    demo: Demo, service: Service
) -> None:
    demo.open(service.base_url)
    conversation_id = demo.data("conversation-id")
    assert len(conversation_id) == 32
    demo.ask("My name is Ada.")
    demo.wait_state("done")
    demo.ask("What is my name?")
    demo.wait_state("done")
    assert _transcript(demo) == [
        ("user", "My name is Ada."),
        ("assistant", EXPECTED),
        ("user", "What is my name?"),
    ]
    assert demo.text("#answer") == EXPECTED
    assert demo.page.input_value("#message") == ""

    demo.page.reload()
    demo.page.wait_for_function("() => document.getElementById('app').dataset.history === 'loaded'")
    demo.wait_state("idle")
    assert demo.data("conversation-id") == conversation_id
    assert _transcript(demo) == [
        ("user", "My name is Ada."),
        ("assistant", EXPECTED),
        ("user", "What is my name?"),
        ("assistant", EXPECTED),
    ]
    assert demo.text("#answer") == ""
    assert demo.text("#status") == "Conversation restored."
    demo.screenshot("conversation-restored")

    demo.page.get_by_role("button", name="New chat").click()
    assert _transcript(demo) == []
    assert demo.page.is_visible("#transcript-empty")
    fresh = demo.data("conversation-id")
    assert fresh != conversation_id
    demo.page.reload()
    demo.page.wait_for_function("() => document.getElementById('app').dataset.history === 'empty'")
    demo.wait_state("idle")
    assert demo.data("conversation-id") == fresh
    assert _transcript(demo) == []
    # The server still holds the old conversation; the page simply moved on from it.
    old = service.base_url + f"/conversations/{conversation_id}"
    assert len(demo.page.request.get(old).json()["turns"]) == 4
    assert demo.problems == []
