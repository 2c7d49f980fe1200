"""Telegram notifications against a local HTTP server standing in for the Bot API."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.notify import NullNotifier, TelegramNotifier, format_event, make_notifier

TOKEN = "123456:SECRET-TOKEN-VALUE"


class FakeTelegram:
    """Answers sendMessage with the scripted statuses, in order (then 200); records every request."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay = delay
        self.requests: list[tuple[str, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, body))
                if owner.delay:
                    time.sleep(owner.delay)
                status = owner.statuses.pop(0) if owner.statuses else 200
                payload = json.dumps({"ok": status == 200}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    server = FakeTelegram()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_send_posts_plain_text_to_the_bot_path(telegram):
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("hello <b>&</b>")
    (path, body) = telegram.requests[0]
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == "42" and body["text"] == "hello <b>&</b>" and "parse_mode" not in body


def test_a_server_error_is_retried_once(telegram):
    telegram.statuses = [500]
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 2


def test_two_failures_give_up_and_log_without_the_token(telegram, caplog):
    telegram.statuses = [502, 503]
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 2
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


def test_a_client_error_is_not_retried(telegram):
    telegram.statuses = [400]
    assert not TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 1


def test_unreachable_server_is_logged_without_the_token(caplog):
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", "http://127.0.0.1:9", timeout=1).send("x")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "telegram send failed" in text and TOKEN not in text and "***" in text


def test_a_hanging_server_costs_at_most_the_timeout_per_try(telegram):
    telegram.delay = 2.0
    started = time.monotonic()
    assert not TelegramNotifier(TOKEN, "42", telegram.url, timeout=0.5).send("x")
    assert time.monotonic() - started < 0.5 * 2 + 1.0


def test_long_text_is_cut_to_telegrams_limit(telegram):
    TelegramNotifier(TOKEN, "42", telegram.url).send("y" * 5000)
    assert len(telegram.requests[0][1]["text"]) == 4096


def test_unconfigured_notifier_sends_nothing():
    assert isinstance(make_notifier("", "42"), NullNotifier)
    assert isinstance(make_notifier(TOKEN, None), NullNotifier)
    assert not NullNotifier().send("x")


def test_messages_name_session_and_phase():
    text = format_event("blocked", "dark-mode", "testing", "tests fail")
    assert "dark-mode" in text and "testing" in text and "tests fail" in text


def test_worker_notifies_phase_changes_and_the_stop(project, telegram):
    project.scenario(
        by_phase={
            "investigation": {"signal": {"status": "continue", "phase": "requirements"}},
            "requirements": {
                "signal": {"status": "blocked", "reason": "need a human", "needs": "human_decision"}
            },
        }
    )
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_BASE": telegram.url}
    result = project.worker("notified", env=env)
    assert result.returncode == 4
    texts = [body["text"] for _, body in telegram.requests]
    assert any("investigation -> requirements" in t for t in texts), texts
    assert any("blocked" in t and "need a human" in t for t in texts), texts
    assert TOKEN not in result.stdout + result.stderr
