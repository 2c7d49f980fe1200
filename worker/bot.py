"""The conversation at a gate over the Telegram Bot API: buttons and replies that act.

A poller thread long-polls `getUpdates` (each call bounded in total time and cancelled when the wait ends
or the worker stops; failures back off, a 429's retry_after is honoured up to a cap) and queues the
updates; the waiting worker takes them from the queue between its looks at the session. Only updates from
TELEGRAM_CHAT_ID are acted on; each update's id is saved in the session folder before it is acted on, so
no update is applied twice, across restarts too. Every action is one of the parent commands, run through
`act` (which lets go of the lease for it), so its checks and refusals are the command line's; the result
is shown on the phone (the button answered, the message edited, or a reply).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from worker import brief
from worker.config import Settings
from worker.gatelease import read_small, write_small
from worker.notify import TelegramNotifier
from worker.session import SessionPaths

log = logging.getLogger("samocode.bot")

OFFSET_FILE = ".samocode.telegram.json"
LONG_POLL = 20  # seconds Telegram holds a getUpdates open when nothing comes
CALL_TIMEOUT = 5.0  # sendMessage, answerCallbackQuery, editMessageText
MAX_BACKOFF = 30.0
VIA = "Telegram"
_BUTTON = 40  # characters of an option shown on its button

# An action: the command to run (it takes the lease itself); `act` runs it and returns (ok, message).
Act = Callable[[Callable[[], str]], tuple[bool, str]]


class Conversation:
    backoff = 1.0  # seconds: the first pause after a failed poll, doubled up to MAX_BACKOFF; tests shorten it

    def __init__(self, paths: SessionPaths, settings: Settings, stop: threading.Event, act: Act) -> None:
        self.paths = paths
        self.settings = settings
        self.chat_id = str(settings.telegram_chat_id)
        self.act = act
        self.api = TelegramNotifier(
            settings.telegram_token, self.chat_id, settings.telegram_api_base, CALL_TIMEOUT, cancel=stop
        )
        self.quit = threading.Event()  # ends the poller (and its call in flight)
        self.stop = stop
        self.updates: queue.Queue[dict] = queue.Queue()
        self.tag = os.urandom(4).hex()  # buttons of this wait's messages carry it
        self.kind = ""
        self.texts: dict[int, str] = {}  # message id -> its text (to edit it after an action)
        self.question_of: dict[int, int] = {}  # message id -> question number
        self.expect_changes = False
        saved = self._load_offset()
        self.offset = saved or 0
        # The first wait of a session ignores text sent before it began: it was meant for something else.
        self.since = 0.0 if saved is not None else time.time() - 5
        self.failures = 0
        self.poller = threading.Thread(target=self._poll, name="samocode-telegram-poll", daemon=True)

    # -- the messages at the start ------------------------------------------------------------------

    def open(self, gate: brief.Gate, text: str, until: dt.datetime) -> None:
        self.kind = gate.kind
        tail = f"\n\nThe worker waits for your reply until {until:%H:%M}. /status for the report."
        if gate.kind == brief.PLAN_GATE:
            buttons = [[("Approve plan", "approve")], [("Request changes", "changes")]]
            self._send(text + tail, buttons)
        elif gate.kind == brief.QA_GATE:
            # A Bot API that failed the first message would only hold the wait up with the others.
            if self._send(text + tail, [[("Accept all suggestions", "all")]]) is not None:
                self._send_questions()
        else:
            self._send(text + "\n\nReply with your direction: it becomes the unblock note." + tail)
        self.poller.start()

    def _send_questions(self) -> None:
        from worker import qa

        with contextlib.suppress(OSError):
            for q in qa.questions(qa.read(self.paths.qa, errors="replace")):
                if not q.waiting:
                    continue
                lines = brief.question_lines(q.number, q.title, q.options, q.suggestion)
                rows = [
                    [(f"{letter}) {brief.clip(opt, _BUTTON)}", f"q{q.number}:{letter}")]
                    for letter, opt in q.options
                ]
                text = "\n".join([*lines, "Reply to this message to answer in your own words."])
                if (sent := self._send(text, rows)) is None:
                    break
                self.question_of[sent] = q.number

    def close(self, note: str = "") -> None:
        self.quit.set()
        if note:
            self._send(note)

    # -- the updates --------------------------------------------------------------------------------

    def pump(self) -> bool:
        """Handle the updates received so far; True when an action ran (the gate may be open now)."""
        acted = False
        while not self.stop.is_set():
            try:
                update = self.updates.get_nowait()
            except queue.Empty:
                break
            try:
                acted = self._handle(update) or acted
            except (AttributeError, TypeError, ValueError, KeyError) as exc:  # a malformed update
                log.warning("ignored a Telegram update the worker could not read: %s", type(exc).__name__)
        return acted

    def _handle(self, update: dict) -> bool:
        uid = update.get("update_id")
        if not isinstance(uid, int) or uid < self.offset:
            return False
        self._save_offset(uid + 1)  # before acting: an update is applied at most once
        button = update.get("callback_query")
        message = button.get("message") if isinstance(button, dict) else update.get("message")
        chat = message.get("chat", {}).get("id") if isinstance(message, dict) else None
        if not isinstance(message, dict) or chat is None or str(chat) != self.chat_id:
            log.warning("ignored Telegram update %d from chat %s (not TELEGRAM_CHAT_ID)", uid, chat)
            return False
        if isinstance(button, dict):
            return self._on_button(button, message)
        return self._on_text(message)

    def _on_button(self, button: dict, message: dict) -> bool:
        tag, _, action = str(button.get("data", "")).partition(":")
        answer_id = button.get("id")
        if tag != self.tag:
            self._answer(
                answer_id, "This button belongs to an older message; use the newest one.", alert=True
            )
            return False
        if action == "changes":
            self.expect_changes = True
            self._answer(answer_id, "Send what should change as your next message.")
            self._send("What should planning change? Your next message becomes its note.")
            return False
        from worker import commands

        now = dt.datetime.now
        if action == "approve":
            ok, said = self.act(lambda: commands.approve(self.paths, now(), via=VIA))
        elif action == "all":
            ok, said = self.act(lambda: commands.answer(self.paths, {}, True, now(), via=VIA))
        elif action.startswith("q") and ":" in action:
            number, _, letter = action[1:].partition(":")
            ok, said = self._answer_option(int(number) if number.isdigit() else 0, letter)
        else:
            ok, said = False, f"unknown button '{action}'"
        self._answer(answer_id, said, alert=not ok)
        if ok and isinstance(message.get("message_id"), int):
            self._edit(message["message_id"], f"✅ {said}")
        return ok

    def _answer_option(self, number: int, letter: str) -> tuple[bool, str]:
        from worker import commands, qa

        try:
            found = qa.questions(qa.read(self.paths.qa, errors="replace"))
        except OSError as exc:
            return False, f"cannot read _qa.md: {exc.strerror}"
        options = dict(found[number - 1].options) if 0 < number <= len(found) else {}
        if letter not in options:
            return False, f"question {number} has no option {letter}"
        value = f"{letter}) {options[letter]}"
        return self.act(
            lambda: commands.answer(self.paths, {number: value}, False, dt.datetime.now(), via=VIA)
        )

    def _on_text(self, message: dict) -> bool:
        from worker import commands, qa

        text = " ".join(str(message.get("text") or "").split())
        reply_to = message.get("message_id")
        if not text or float(message.get("date") or 0) < self.since:
            return False
        if text.split()[0].split("@")[0] == "/status":
            self._send(self._status(), reply_to=reply_to)
            return False
        if qa.WAITING in text:
            self._send(f"⛔ An answer may not contain '{qa.WAITING}'.", reply_to=reply_to)
            return False
        now = dt.datetime.now
        replied = (message.get("reply_to_message") or {}).get("message_id")
        if self.kind == brief.PLAN_GATE and self.expect_changes:
            ok, said = self.act(lambda: commands.revise(self.paths, text, now(), via=VIA))
            self.expect_changes = not ok
        elif self.kind == brief.PLAN_GATE:
            ok, said = False, "Use the buttons under the plan: Approve plan, or Request changes first."
        elif self.kind == brief.QA_GATE and replied in self.question_of:
            number = self.question_of[replied]
            ok, said = self.act(lambda: commands.answer(self.paths, {number: text}, False, now(), via=VIA))
        elif self.kind == brief.QA_GATE:
            ok, said = False, "Reply to a question's message to answer it, or press one of its buttons."
        else:
            ok, said = self.act(lambda: commands.unblock(self.paths, text, now(), via=VIA))
        self._send(("✅ " if ok else "⛔ ") + said, reply_to=reply_to)
        return ok

    def _status(self) -> str:
        from worker import status, statusbuild

        try:
            return status.render_text(statusbuild.build(self.paths, statusbuild.rails_of(self.settings)))
        except OSError as exc:
            return f"status unavailable: {exc.strerror}"

    # -- the Bot API --------------------------------------------------------------------------------

    def _send(self, text: str, rows: list | None = None, reply_to: int | None = None) -> int | None:
        body: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": text[:4096],
            "disable_web_page_preview": True,
        }
        if rows:
            body["reply_markup"] = {"inline_keyboard": self._keyboard(rows)}
        if reply_to is not None:
            body["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        answer = self.api.call("sendMessage", body)
        if not answer.ok:
            log.warning("telegram sendMessage failed: %s", answer.error)
            return None
        message_id = answer.result.get("message_id") if isinstance(answer.result, dict) else None
        if isinstance(message_id, int):
            self.texts[message_id] = body["text"]
        return message_id

    def _keyboard(self, rows: list) -> list:
        return [
            [{"text": label, "callback_data": f"{self.tag}:{data}"} for label, data in row] for row in rows
        ]

    def _answer(self, answer_id: object, text: str, alert: bool = False) -> None:
        body = {"callback_query_id": answer_id, "text": brief.clip(text, 190), "show_alert": alert}
        if not (answer := self.api.call("answerCallbackQuery", body)).ok:
            log.warning("telegram answerCallbackQuery failed: %s", answer.error)

    def _edit(self, message_id: int, line: str) -> None:
        """The message with its buttons gone and what happened under it."""
        text = (self.texts.get(message_id, "") + "\n\n" + line).strip()[:4096]
        body = {"chat_id": self.chat_id, "message_id": message_id, "text": text}
        if not (answer := self.api.call("editMessageText", body)).ok:
            log.warning("telegram editMessageText failed: %s", answer.error)

    def _poll(self) -> None:
        poll = TelegramNotifier(
            self.settings.telegram_token, self.chat_id, self.settings.telegram_api_base, cancel=self.quit
        )
        offset, backoff = self.offset, self.backoff
        while not self.quit.is_set():
            body = {"offset": offset, "timeout": LONG_POLL, "allowed_updates": ["message", "callback_query"]}
            answer = poll.call("getUpdates", body, timeout=LONG_POLL + 10)
            if self.quit.is_set():
                return
            if not answer.ok or not isinstance(answer.result, list):
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:  # not a line per retry for hours
                    log.warning("telegram getUpdates failed (%d so far): %s", self.failures, answer.error)
                self.quit.wait(min(max(answer.retry_after, backoff), MAX_BACKOFF))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = self.backoff
            for update in answer.result:
                if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                    offset = max(offset, update["update_id"] + 1)
                    self.updates.put(update)

    # -- the offset, kept in the session folder -----------------------------------------------------

    def _load_offset(self) -> int | None:
        try:
            value = json.loads(read_small(self.paths.dir / OFFSET_FILE))["offset"]
        except (ValueError, KeyError, TypeError):
            return None
        return value if isinstance(value, int) else None

    def _save_offset(self, offset: int) -> None:
        self.offset = offset
        path = self.paths.dir / OFFSET_FILE
        try:
            tmp = path.with_name(path.name + ".tmp")
            write_small(tmp, json.dumps({"offset": offset}), sync=True)  # survives a crash too
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot save the Telegram offset in %s: %s", path.name, exc.strerror)
