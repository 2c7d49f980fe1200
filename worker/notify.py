"""Telegram notifications: one plain-text message per stop and phase change; never fatal.

`requests` is imported on the first send, not at start-up. The bot token is part of the URL, so
every message logged about a failure is scrubbed of it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("samocode.notify")
MAX_TEXT = 4096  # Telegram's limit for one message


class Notifier(Protocol):
    def send(self, text: str) -> bool: ...


class NullNotifier:
    """Used when Telegram is not configured."""

    def send(self, text: str) -> bool:
        return False


class TelegramNotifier:
    def __init__(
        self,
        token: str,
        chat_id: str,
        api_base: str = "https://api.telegram.org",
        timeout: float = 5.0,
        retries: int = 1,
    ) -> None:
        self.token = token
        self.chat_id = chat_id
        self.url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self.timeout = timeout
        self.retries = retries

    def _scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    def send(self, text: str) -> bool:
        import requests

        body = {"chat_id": self.chat_id, "text": text[:MAX_TEXT], "disable_web_page_preview": True}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = requests.post(self.url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                log.warning("telegram send failed (attempt %d): %s", attempt + 1, self._scrub(str(exc)))
                if last:
                    return False
                continue
            if response.ok:
                return True
            retryable = response.status_code == 429 or response.status_code >= 500
            log.warning(
                "telegram answered %d (attempt %d): %s",
                response.status_code,
                attempt + 1,
                self._scrub(response.text[:200]),
            )
            if not retryable or last:
                return False
            if response.status_code == 429:
                time.sleep(min(_retry_after(response), 2.0))
        return False


def _retry_after(response: object) -> float:
    try:
        return float(response.json()["parameters"]["retry_after"])  # type: ignore[attr-defined]
    except (ValueError, KeyError, TypeError):
        return 1.0


def make_notifier(token: str | None, chat_id: str | None, api_base: str | None = None) -> Notifier:
    if token and chat_id:
        return TelegramNotifier(token, chat_id, api_base or "https://api.telegram.org")
    return NullNotifier()


_HEADLINES = {
    "phase_change": "phase {detail}",
    "done": "done ✅ {detail}",
    "waiting": "waiting for you ⏸ {detail}",
    "blocked": "blocked ⛔ {detail}",
    "failed": "provider failed ❌ {detail}",
    "interrupted": "stopped ({detail})",
    "usage_wait": "usage limit hit, {detail}",
    "limit": "paused: {detail}",
}


def format_event(kind: str, session: str, phase: str, detail: str = "") -> str:
    """One short plain-text message: 'samocode · <session> [<phase>]: <headline>'."""
    headline = _HEADLINES.get(kind, kind + " {detail}").format(detail=detail).strip()
    return f"samocode · {session} [{phase}]: {headline}"[:MAX_TEXT]
