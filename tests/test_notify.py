"""Telegram notifications against a local HTTP server standing in for the Bot API."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from worker.notify import NullNotifier, TelegramNotifier, format_event, make_notifier, masked

TOKEN = "123456:SECRET-TOKEN-VALUE"
REPO = Path(__file__).resolve().parents[1]


class FakeTelegram:
    """Answers sendMessage with the scripted replies, in order (then 200); records every request.

    A reply is a status code or a (status, JSON body) pair. As a bot's server: getUpdates long-polls
    `updates` (queued by `push`) from the given offset; sendMessage answers with a new message id;
    the other methods answer ok. `poll_replies` scripts getUpdates answers the same way.
    """

    def __init__(self) -> None:
        self.replies: list[int | tuple[int, dict]] = []
        self.poll_replies: list[int | tuple[int, dict]] = []
        self.updates: list[dict] = []
        self.changed = threading.Condition()
        self.next_update = 1000
        self.next_message = 1
        self.messages: dict[int, dict] = {}  # id -> sendMessage body
        self.delay = 0.0
        self.drip = 0.0  # seconds between the bytes of a body that never ends
        self.huge = 0  # bytes of a 200 body to send (as fast as the client reads)
        self.sent = 0  # body bytes actually written in drip/huge mode
        self.requests: list[tuple[str, dict, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, body, dict(self.headers)))
                if self.path.endswith("/getUpdates") and not owner.poll_replies and not owner.drip:
                    self._reply(200, {"ok": True, "result": owner.wait_updates(body)})
                    return
                if owner.delay:
                    time.sleep(owner.delay)
                if owner.drip or owner.huge:
                    self._stream(owner)
                    return
                if self.path.endswith("/getUpdates"):
                    reply = owner.poll_replies.pop(0)
                else:
                    reply = owner.replies.pop(0) if owner.replies else 200
                status, answer = reply if isinstance(reply, tuple) else (reply, {"ok": reply == 200})
                if status == 200 and answer.get("ok") and self.path.endswith("/sendMessage"):
                    answer = {"ok": True, "result": owner.message(body)}
                self._reply(status, answer)

            def _reply(self, status: int, answer: dict) -> None:
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def _stream(self, owner: FakeTelegram) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(owner.huge or 10**9))
                    self.end_headers()
                    chunk = b"x" if owner.drip else b" " * 65536
                    deadline = time.monotonic() + 30  # bounded whatever the client does
                    while time.monotonic() < deadline and (owner.drip or owner.sent < owner.huge):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        owner.sent += len(chunk)
                        if owner.drip:
                            time.sleep(owner.drip)
                except OSError:
                    pass  # the client hung up, as it should

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # serve_forever looks for shutdown() every 10 ms: each test's teardown waits that long at most.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def message(self, body: dict) -> dict:
        with self.changed:
            self.next_message += 1
            self.messages[self.next_message] = body
            return {
                "message_id": self.next_message,
                "chat": {"id": int(body["chat_id"])},
                "text": body["text"],
            }

    def push(self, update: dict) -> int:
        """Queue an update (its update_id given here); returns the id."""
        with self.changed:
            self.next_update += 1
            self.updates.append({"update_id": self.next_update, **update})
            self.changed.notify_all()
            return self.next_update

    def wait_updates(self, body: dict) -> list[dict]:
        offset, timeout = int(body.get("offset") or 0), min(float(body.get("timeout") or 0), 30.0)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [u for u in self.updates if u["update_id"] >= offset]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self.changed.wait(min(left, 0.5))

    def calls(self, method: str) -> list[dict]:
        return [body for path, body, _ in self.requests if path.endswith("/" + method)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment must not sit between the notifier and the loopback server.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def serving() -> Iterator[FakeTelegram]:
    """A started FakeTelegram, shut down when the generator is closed (the body of a fixture)."""
    server = FakeTelegram()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(timeout=2)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    yield from serving()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_send_posts_plain_text_json_to_the_bot_path(telegram):
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("hello <b>&</b> *x*")
    [(path, body, _)] = telegram.requests
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body == {"chat_id": "42", "text": "hello <b>&</b> *x*", "disable_web_page_preview": True}


def test_a_trailing_slash_in_the_api_base_is_harmless(telegram):
    assert TelegramNotifier(TOKEN, "42", telegram.url + "/").send("x")
    assert telegram.requests[0][0] == f"/bot{TOKEN}/sendMessage"


def test_a_server_error_is_retried_once(telegram):
    telegram.replies = [500]
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 2


def test_two_server_errors_give_up_and_log_without_the_token(telegram, caplog):
    telegram.replies = [500, 500]
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "samocode.notify"]
    assert warnings and "500" in warnings[-1].getMessage()
    assert TOKEN not in logged(caplog)


def test_a_client_error_is_not_retried(telegram, caplog):
    telegram.replies = [(400, {"ok": False, "description": "Bad Request: chat not found"})]
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 1
    assert "chat not found" in logged(caplog)


def test_too_many_requests_waits_the_short_retry_after_then_retries(telegram):
    telegram.replies = [(429, {"ok": False, "parameters": {"retry_after": 0.15}})]
    started = time.monotonic()
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 2
    assert time.monotonic() - started >= 0.15


def test_too_many_requests_with_a_long_retry_after_is_dropped_at_once(telegram):
    telegram.replies = [(429, {"ok": False, "parameters": {"retry_after": 30}})]
    started = time.monotonic()
    assert not TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert len(telegram.requests) == 1
    assert time.monotonic() - started < 1.5


def test_connection_refused_returns_false_and_logs_without_the_token(caplog):
    notifier = TelegramNotifier(TOKEN, "42", f"http://127.0.0.1:{closed_port()}", timeout=1)
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not notifier.send("x")
    text = logged(caplog)
    assert text.count("telegram send failed") == 2  # the retry happened too
    assert TOKEN not in text and "/bot***/sendMessage" in text


def test_a_hanging_server_costs_at_most_the_timeout_per_try(telegram, caplog):
    telegram.delay = 3.0
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", telegram.url, timeout=0.25).send("x")
    assert time.monotonic() - started < 0.25 * 2 + 0.8
    assert len(telegram.requests) == 2
    assert TOKEN not in logged(caplog)


def test_a_dripping_answer_costs_at_most_the_timeout_per_try_in_all(telegram, caplog):
    telegram.drip = 0.1  # each read is quick, so a per-read timeout alone would wait for ever
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="samocode.notify"):
        assert not TelegramNotifier(TOKEN, "42", telegram.url, timeout=0.4).send("x")
    assert time.monotonic() - started < 0.4 * 2 + 0.8
    assert telegram.sent >= 2  # bytes did come, a read at a time
    assert "timed out" in logged(caplog) and TOKEN not in logged(caplog)


def test_a_huge_answer_is_not_read_into_memory(telegram):
    import resource

    telegram.huge = 300 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    TelegramNotifier(TOKEN, "42", telegram.url, timeout=5.0, retries=0).send("x")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert telegram.sent < 100 * 1024 * 1024  # the notifier stopped reading long before the end


def test_a_cancel_ends_a_send_in_progress_at_once(telegram):
    telegram.delay = 5.0
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    assert not TelegramNotifier(TOKEN, "42", telegram.url, timeout=5.0, cancel=cancel).send("x")
    assert time.monotonic() - started < 1.0
    assert len(telegram.requests) == 1  # no retry after the cancel


def test_urllib3_debug_logs_do_not_show_the_token(telegram, caplog):
    with caplog.at_level(logging.DEBUG):
        assert TelegramNotifier(TOKEN, "42", telegram.url).send("x")
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the guard had something to scrub
    assert TOKEN not in logged(caplog)


def test_a_given_requests_session_is_used(telegram):
    session = requests.Session()
    session.headers["X-Samocode-Test"] = "yes"
    try:
        assert TelegramNotifier(TOKEN, "42", telegram.url, session=session).send("x")
    finally:
        session.close()
    assert telegram.requests[0][2].get("X-Samocode-Test") == "yes"


def test_long_text_is_cut_to_telegrams_limit(telegram):
    assert TelegramNotifier(TOKEN, "42", telegram.url).send("y" * 5000)
    assert telegram.requests[0][1]["text"] == "y" * 4096


def test_the_token_is_not_sent_in_the_text_or_shown_by_repr(telegram):
    notifier = TelegramNotifier(TOKEN, "42", telegram.url)
    assert notifier.send(f"failed: env had {TOKEN}")
    assert TOKEN not in telegram.requests[0][1]["text"]
    assert TOKEN not in repr(notifier)


def test_unconfigured_notifier_sends_nothing(telegram):
    assert isinstance(make_notifier("", "42", telegram.url), NullNotifier)
    assert isinstance(make_notifier(TOKEN, None, telegram.url), NullNotifier)
    assert isinstance(make_notifier(None, None, None), NullNotifier)
    assert not make_notifier(TOKEN, "", telegram.url).send("x")
    assert telegram.requests == []


def test_configured_notifier_uses_the_given_api_base(telegram):
    assert make_notifier(TOKEN, "42", telegram.url).send("x")
    assert isinstance(make_notifier(TOKEN, "42", None), TelegramNotifier)
    assert len(telegram.requests) == 1


def test_importing_the_module_does_not_import_requests():
    code = "import sys, worker.notify; print('requests' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


def test_masked_hides_the_token():
    assert masked(TOKEN + "-padding") == f"123…({len(TOKEN) + 8} chars)"
    assert masked("short") == "***"
    assert masked("") == "" and masked(None) == ""


@pytest.mark.parametrize(
    "kind",
    [
        "phase_change",
        "done",
        "waiting",
        "blocked",
        "failed",
        "interrupted",
        "usage_wait",
        "switched",
        "paused",
    ],
)
def test_every_event_names_session_phase_and_detail(kind):
    text = format_event(kind, "dark-mode", "testing", "tests fail")
    first = text.splitlines()[0]
    assert first.startswith("samocode · dark-mode")
    assert "testing" in first and "tests fail" in first


def test_usage_wait_carries_the_resume_time():
    assert "resuming at 17:05" in format_event("usage_wait", "s", "planning", "resuming at 17:05")


def test_iteration_and_cost_go_on_a_second_line():
    text = format_event("done", "s", "done", "all good", iteration=12, cost_usd=3.456)
    assert text.splitlines()[1] == "iteration 12 · $3.46"
    assert len(format_event("done", "s", "done", "all good").splitlines()) == 1


def test_a_long_detail_is_shortened():
    text = format_event("failed", "s", "testing", "e" * 10_000)
    assert len(text) < 700 and text.endswith("…")


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
    texts = [body["text"] for _, body, _ in telegram.requests]
    assert any("investigation -> requirements" in t for t in texts), texts
    assert any("blocked" in t and "need a human" in t for t in texts), texts
    assert TOKEN not in result.stdout + result.stderr
    session_log = project.session_dir("notified") / "session.log"
    if session_log.exists():
        assert TOKEN not in session_log.read_text()


def test_sigterm_during_a_hung_send_stops_the_worker_at_once(project, telegram):
    import signal

    project.scenario(by_phase={"investigation": {"signal": {"status": "continue", "phase": "requirements"}}})
    telegram.delay = 20.0  # the phase-change notification hangs
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_BASE": telegram.url}
    proc = project.start("--config", str(project.config), "--session", "hung", env=env)
    try:
        deadline = time.monotonic() + 20
        while not telegram.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert telegram.requests, "the worker never tried to notify"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2.0
        assert proc.returncode == 143, (out, err)
        assert TOKEN not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
