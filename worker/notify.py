"""Telegram notifications: one plain-text message per stop, phase change, provider switch or usage
wait; never fatal.

`requests` is imported on the first send, not at start-up (the worker must start fast). The bot
token is part of the URL, so it is scrubbed from every message this module logs and from the
records urllib3 logs about the request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import requests

log = logging.getLogger("samocode.notify")

DEFAULT_API_BASE = "https://api.telegram.org"
MAX_TEXT = 4096  # Telegram's limit for one message
MAX_DETAIL = 600  # a notification is a pointer to the session, not its log
MAX_RETRY_AFTER = 2.0  # a longer 429 back-off is not worth holding the worker for
MAX_RESPONSE = 64 * 1024  # the Bot API's answer to sendMessage is under 1 KB; never read more
_READ_CHUNK = 4096
_SLICE = 0.05  # how often a waiting send looks at the cancel event
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")


@dataclass(frozen=True)
class Answer:
    """What one Bot API call came to: its `result` when ok, else why not (the token scrubbed)."""

    ok: bool
    result: Any
    retry_after: float  # seconds a 429 asked to wait, else 0
    error: str


class Notifier(Protocol):
    def send(self, text: str) -> bool: ...


class NullNotifier:
    """Used when Telegram is not configured: sends nothing."""

    def send(self, text: str) -> bool:
        return False


class _Scrub(logging.Filter):
    """Rewrites a log record so it no longer contains any of the given secrets."""

    def __init__(self) -> None:
        super().__init__("samocode-token-scrub")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


_scrub_filter = _Scrub()


def _guard_third_party_logs(token: str) -> None:
    # urllib3 logs the request line (with the token in the path) at DEBUG; if anyone turns that on,
    # the token must still not reach a log.
    if token in _scrub_filter.secrets:
        return
    _scrub_filter.secrets.add(token)
    for name in _URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if _scrub_filter not in logger.filters:
            logger.addFilter(_scrub_filter)


class TelegramNotifier:
    """Bot API `sendMessage`, plain text, one retry on transient failures; never raises."""

    def __init__(
        self,
        token: str,
        chat_id: str,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 5.0,
        retries: int = 1,
        session: requests.Session | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self._token = token
        self.chat_id = chat_id
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, retries)
        self._session = session
        self._cancel = cancel  # set when the worker is told to stop: a send in progress gives up

    def __repr__(self) -> str:
        return (
            f"TelegramNotifier(token={masked(self._token)}, chat_id={self.chat_id!r}, api={self.api_base!r})"
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def send(self, text: str) -> bool:
        try:
            import requests
        except ImportError as exc:
            log.warning("telegram send skipped: %s", exc)
            return False
        _guard_third_party_logs(self._token)
        url = f"{self.api_base}/bot{self._token}/sendMessage"
        # No parse_mode: plain text needs no escaping and can never be rejected for markup.
        body = {
            "chat_id": self.chat_id,
            "text": self._scrub(text)[:MAX_TEXT],
            "disable_web_page_preview": True,
        }
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            if self._cancelled():
                return False
            answer = self._post(url, body)
            if isinstance(answer, BaseException):
                failure = "timed out" if isinstance(answer, TimeoutError) else self._scrub(str(answer))
                log.warning("telegram send failed (attempt %d/%d): %s", attempt, attempts, failure)
                if isinstance(answer, requests.RequestException | ValueError | TimeoutError):
                    continue
                return False
            status, raw = answer
            if 200 <= status < 300:
                return True
            log.warning(
                "telegram answered %d (attempt %d/%d): %s",
                status,
                attempt,
                attempts,
                self._scrub(raw[:200].decode("utf-8", "replace")),
            )
            if status != 429 and status < 500:
                return False  # our request is wrong (bad chat id, bad token); repeating it cannot help
            if status == 429 and attempt < attempts:
                wait = _retry_after(raw)
                if wait > MAX_RETRY_AFTER:
                    log.warning("telegram asks to wait %.0f s; message dropped", wait)
                    return False
                if self._cancel is not None and self._cancel.wait(wait):
                    return False
                if self._cancel is None:
                    time.sleep(wait)
        return False

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def call(self, method: str, body: dict[str, Any], timeout: float | None = None) -> Answer:
        """One Bot API call (no retry: the caller decides), ended within `timeout` seconds in all
        (default: the notifier's), or at once when the cancel event is set. Never raises."""
        try:
            import requests  # noqa: F401  (only to report its absence as one line)
        except ImportError as exc:
            return Answer(False, None, 0.0, f"requests is missing: {exc}")
        _guard_third_party_logs(self._token)
        answer = self._post(f"{self.api_base}/bot{self._token}/{method}", body, timeout)
        if isinstance(answer, BaseException):
            failure = "timed out" if isinstance(answer, TimeoutError) else self._scrub(str(answer))
            return Answer(False, None, 0.0, failure)
        status, raw = answer
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if 200 <= status < 300 and isinstance(data, dict) and data.get("ok"):
            return Answer(True, data.get("result"), 0.0, "")
        retry = _retry_after(raw) if status == 429 else 0.0
        said = data.get("description", "") if isinstance(data, dict) else raw[:120].decode("utf-8", "replace")
        return Answer(False, None, retry, self._scrub(f"{status} {said}".strip()))

    def _post(
        self, url: str, body: dict[str, Any], timeout: float | None = None
    ) -> tuple[int, bytes] | BaseException:
        """One POST that ends within `timeout` in all: requests' timeout bounds each socket read, so a
        server dripping one byte at a time would hold a plain call for ever. The call runs in a
        daemon thread that gives up at the same deadline; the caller waits in short slices so a
        stop request (SIGTERM) ends the wait at once."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        box: list[tuple[int, bytes] | BaseException] = []
        thread = threading.Thread(
            target=self._call, args=(url, body, deadline, timeout, box), name="samocode-telegram", daemon=True
        )
        thread.start()
        while thread.is_alive() and time.monotonic() < deadline and not self._cancelled():
            thread.join(min(_SLICE, max(0.0, deadline - time.monotonic())))
        return box[0] if box else TimeoutError()

    def _call(
        self,
        url: str,
        body: dict[str, Any],
        deadline: float,
        timeout: float,
        box: list[tuple[int, bytes] | BaseException],
    ) -> None:
        import requests

        post = self._session.post if self._session is not None else requests.post
        try:
            with post(url, json=body, timeout=timeout, stream=True) as response:
                raw = bytearray()
                for chunk in response.iter_content(_READ_CHUNK):
                    raw += chunk
                    if len(raw) >= MAX_RESPONSE or time.monotonic() >= deadline:
                        break  # an answer to sendMessage is a few hundred bytes: the rest is not read
                if time.monotonic() < deadline:
                    box.append((response.status_code, bytes(raw[:MAX_RESPONSE])))
        except BaseException as exc:  # reported by the waiting caller, whatever it is
            box.append(exc)


def _retry_after(raw: bytes) -> float:
    try:
        return max(0.0, float(json.loads(raw)["parameters"]["retry_after"]))
    except (ValueError, KeyError, TypeError):
        return 1.0


def make_notifier(
    token: str | None,
    chat_id: str | None,
    api_base: str | None = None,
    cancel: threading.Event | None = None,
) -> Notifier:
    """Telegram when both the token and the chat id are set, otherwise a notifier that does nothing."""
    if token and chat_id:
        return TelegramNotifier(token, chat_id, api_base or DEFAULT_API_BASE, cancel=cancel)
    return NullNotifier()


def masked(token: str | None) -> str:
    """A token for settings dumps: a short prefix and the length, or only `***` when short."""
    if not token:
        return ""
    if len(token) < 20:
        return "***"
    return f"{token[:3]}…({len(token)} chars)"


_HEADLINES = {
    "phase_change": "phase {detail}",
    "done": "done ✅ {detail}",
    "waiting": "waiting for you ⏸ {detail}",
    "blocked": "blocked ⛔ {detail}",
    "failed": "provider failed ❌ {detail}",
    "interrupted": "stopped ({detail})",
    "usage_wait": "usage limit hit, {detail}",
}  # other kinds (switched, paused) read "<kind> <detail>"


def format_event(
    kind: str,
    session: str,
    phase: str,
    detail: str = "",
    *,
    iteration: int | None = None,
    cost_usd: float | None = None,
) -> str:
    """A short plain-text message: 'samocode · <session> [<phase>]: <headline>' plus optional numbers."""
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "…"
    headline = _HEADLINES.get(kind, kind + " {detail}").replace("{detail}", detail).strip()
    where = f" [{phase}]" if phase and phase != "?" else ""
    lines = [f"samocode · {session}{where}: {headline}"]
    facts = []
    if iteration is not None:
        facts.append(f"iteration {iteration}")
    if cost_usd is not None:
        facts.append(f"${cost_usd:.2f}")
    if facts:
        lines.append(" · ".join(facts))
    return "\n".join(lines)[:MAX_TEXT]
