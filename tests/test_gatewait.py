"""The worker waits at a gate for a reply from Telegram, against a local stand-in for the Bot API
(getUpdates long-polled, buttons, replies, edits): the real worker as a subprocess for the button that
approves, parent commands, signals, `start`/`stop` and time-outs; in-process (tests/inproc.py) where the
point is the conversation (Q&A answers, requested changes, malformed updates, other chats, old and
refused buttons); the poller's back-off through its seam."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from inproc import InProc
from test_commands import QA, TO_DONE, TO_PLAN_WAIT
from test_notify import TOKEN, FakeTelegram, closed_port, logged, no_proxy, serving  # noqa: F401 (no_proxy: autouse)

from worker.bot import Conversation
from worker.config import Settings
from worker.runtime import Outcome
from worker.session import SessionPaths


@pytest.fixture
def bot() -> Iterator[FakeTelegram]:
    yield from serving()


QA_THEN_PLAN = [
    {"signal": {"status": "continue", "phase": "requirements"}},
    {"signal": {"status": "waiting", "for": "qa_answers", "reason": "2 questions"}, "files": {"_qa.md": QA}},
    {"signal": {"status": "continue", "phase": "planning"}},
    {
        "signal": {"status": "waiting", "for": "plan_approval", "reason": "plan"},
        "files": TO_PLAN_WAIT["planning"]["files"],
    },
]


def env_of(url: str, wait: float = 60) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_CHAT_ID": "42",
        "TELEGRAM_API_BASE": url,
        "SAMOCODE_GATE_WAIT": str(wait),
    }


def until(check: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@contextmanager
def worker(project, name: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = project.start("--config", str(project.config), "--session", name, "--task", "t", env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def buttons(server: FakeTelegram, label: str) -> tuple[int, str] | None:
    """(message id, callback data) of the newest message with a button so labelled."""
    for message_id, body in reversed(list(server.messages.items())):
        for row in body.get("reply_markup", {}).get("inline_keyboard", []):
            for button in row:
                if button["text"] == label:
                    return message_id, button["callback_data"]
    return None


def message_saying(server: FakeTelegram, words: str) -> int | None:
    return next((i for i, body in reversed(list(server.messages.items())) if words in body["text"]), None)


def press(server: FakeTelegram, found: tuple[int, str], chat: int = 42) -> int:
    message_id, data = found
    return server.push(
        {
            "callback_query": {
                "id": f"cb-{time.monotonic_ns()}",
                "from": {"id": 7},
                "message": {"message_id": message_id, "chat": {"id": chat}},
                "data": data,
            }
        }
    )


def say(server: FakeTelegram, text: str, chat: int = 42, reply_to: int | None = None) -> int:
    message = {
        "message_id": 5000 + len(server.updates),
        "date": int(time.time()),
        "chat": {"id": chat},
        "text": text,
    }
    if reply_to is not None:
        message["reply_to_message"] = {"message_id": reply_to}
    return server.push({"message": message})


def history(project, name: str) -> list[dict]:
    lines = (project.session_dir(name) / "_signal_history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def overview(project, name: str) -> str:
    return (project.session_dir(name) / "_overview.md").read_text()


def no_token_anywhere(project, name: str, *outputs: str) -> None:
    for text in outputs:
        assert TOKEN not in text
    for path in project.session_dir(name).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for record in project.records():
        assert "TELEGRAM_BOT_TOKEN" not in record["env"]


def test_a_plan_approved_by_a_button_goes_on_to_implementation_without_a_restart(project, bot):
    project.scenario(by_phase={**TO_PLAN_WAIT, **TO_DONE})
    with worker(project, "phone", env_of(bot.url)) as proc:
        approve = until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        plan_text = bot.messages[approve[0]]["text"]
        assert "Session spend: $0.04" in plan_text  # three iterations at $0.0125 each
        assert (
            "Plan: " in plan_text
            and "-plan-x.md" in plan_text
            and "worker waits for your reply until" in plan_text
        )
        press(bot, approve)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "Phase: done" in overview(project, "phone")
    [approved] = [r for r in history(project, "phone") if r.get("event") == "approved"]
    assert approved["by"] == "Telegram"
    assert "Plan approved for implementation via Telegram" in overview(project, "phone")
    [answered] = bot.calls("answerCallbackQuery")
    assert "plan approved" in answered["text"] and not answered["show_alert"]
    [edit] = bot.calls("editMessageText")
    assert (
        edit["message_id"] == approve[0] and "✅ plan approved" in edit["text"] and "reply_markup" not in edit
    )
    assert [r["phase"] for r in project.records()].count("planning") == 1  # one run, no restart
    no_token_anywhere(project, "phone", out, err)


def test_questions_answered_by_an_option_button_and_a_text_reply_go_into_qa_md(project, bot, loop):
    def phone() -> None:
        first = until(lambda: buttons(bot, "B) In Redis"), "Q1's option buttons")
        second = until(
            lambda: message_saying(
                bot, "Q2. Which log format?\n  A) JSON\n  B) Text\n  Suggestion: A\nReply"
            ),
            "Q2's message",
        )
        assert buttons(bot, "Accept all suggestions")
        press(bot, first)
        until(
            lambda: "**Answer:** B) In Redis" in (project.session_dir("qa") / "_qa.md").read_text(),
            "Q1 answered",
        )
        say(bot, "Plain text, one line per event", reply_to=second)
        until(lambda: buttons(bot, "Approve plan"), "the session going on to the plan gate")
        loop.stop.set()  # Ctrl-C

    loop.scenario(sequence=QA_THEN_PLAN)
    assert in_process(loop, bot.url, "qa", phone).code == 130
    qa = (project.session_dir("qa") / "_qa.md").read_text()
    assert "**Answer:** B) In Redis\n" in qa and "**Answer:** Plain text, one line per event\n" in qa
    answered = [r for r in history(project, "qa") if r.get("event") == "answered"]
    assert [(r["questions"], r["via"]) for r in answered] == [([1], "Telegram"), ([2], "Telegram")]
    assert "Answered Q1 via Telegram" in overview(project, "qa")
    replies = [b["text"] for b in bot.calls("sendMessage") if b.get("reply_parameters")]
    assert any(t.startswith("✅ answered Q2") for t in replies), replies


def test_request_changes_and_a_reply_send_planning_back_to_work_with_the_note(project, bot, loop):
    def phone() -> None:
        press(bot, until(lambda: buttons(bot, "Request changes"), "the plan's buttons"))
        until(lambda: message_saying(bot, "What should planning change?"), "the question for the note")
        say(bot, "Split phase 2 into two")
        until(lambda: [c["phase"] for c in loop.child.calls].count("planning") == 2, "planning running again")
        until(
            lambda: len([b for b in bot.messages.values() if "Approve plan" in json.dumps(b)]) == 2,
            "a new plan gate",
        )
        loop.stop.set()  # Ctrl-C

    loop.scenario(by_phase=TO_PLAN_WAIT)
    assert in_process(loop, bot.url, "revise", phone).code == 130
    records = history(project, "revise")
    [asked] = [i for i, r in enumerate(records) if r.get("event") == "changes_requested"]
    assert records[asked]["note"] == "Split phase 2 into two" and records[asked]["by"] == "Telegram"
    change = records[asked]["overview"]["fields"]
    assert change["Next"] == "Revise the plan: Split phase 2 into two" and change["Blocked"] == "no"
    ran_next = next(r["phase"] for r in records[asked + 1 :] if r.get("decision"))
    assert ran_next == "planning"  # planning worked again, with the note as its Next
    assert "Plan changes requested via Telegram: Split phase 2 into two" in overview(project, "revise")


def test_updates_from_another_chat_are_ignored_and_logged(project, bot, loop, caplog):
    def phone() -> None:
        approve = until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        press(bot, approve, chat=666)
        say(bot, "/status", chat=666)
        say(bot, "/status")  # from the configured chat: answered with the report
        # The updates are in order: once the report is sent, the two foreign ones were seen.
        until(lambda: [b for b in bot.calls("sendMessage") if b.get("reply_parameters")], "the report")
        until(lambda: logged(caplog).count("(not TELEGRAM_CHAT_ID)") == 2, "the log lines")
        loop.stop.set()  # Ctrl-C, instead of sitting out the wait

    caplog.set_level(logging.WARNING, logger="samocode.bot")
    loop.scenario(by_phase=TO_PLAN_WAIT)
    assert in_process(loop, bot.url, "other", phone).code == 130
    assert not [r for r in history(project, "other") if r.get("event") == "approved"]
    assert not bot.calls("answerCallbackQuery")
    [report] = [b["text"] for b in bot.calls("sendMessage") if b.get("reply_parameters")]
    assert report.startswith("Session: ") and "Phase: planning" in report
    assert "· waiting for plan_approval (worker waits for a reply until " in report
    log = logged(caplog)
    assert log.count("(not TELEGRAM_CHAT_ID)") == 2 and "from chat 666" in log


def test_a_restart_does_not_apply_an_old_update_again(project, bot):
    blocked = {"signal": {"status": "blocked", "reason": "no access", "needs": "access"}}
    project.scenario(by_phase={"investigation": blocked})
    with worker(project, "again", env_of(bot.url)) as proc:
        asked = until(lambda: message_saying(bot, "Reply with your direction"), "the blocked message")
        lines = bot.messages[asked]["text"].splitlines()
        assert lines[0] == "samocode · again [investigation]: blocked ⛔"
        assert "Reason: no access" in lines and "Needed: access" in lines
        note = say(bot, "use the read replica")
        until(lambda: message_saying(bot, "Reply with your direction") != asked, "the second block")
        proc.send_signal(signal.SIGTERM)  # unblocked, blocked again: no need to sit out this wait
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err)
    offset = json.loads((project.session_dir("again") / ".samocode.telegram.json").read_text())["offset"]
    assert offset == note + 1
    bot.requests.clear()
    with worker(project, "again", env_of(bot.url)) as proc:
        until(lambda: bot.calls("getUpdates"), "the restarted worker's first poll")
        proc.send_signal(signal.SIGTERM)  # the poll shows the offset: no need to sit out this wait
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err)
    polls = bot.calls("getUpdates")
    assert polls and all(p["offset"] > note for p in polls)
    assert len([r for r in history(project, "again") if r.get("event") == "unblocked"]) == 1


def test_a_parent_approve_during_the_wait_ends_it(project, bot):
    project.scenario(by_phase={**TO_PLAN_WAIT, **TO_DONE})
    with worker(project, "parent", env_of(bot.url)) as proc:
        until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        status = project.cli("status", "--config", str(project.config), "--session", "parent")
        assert "waiting for plan_approval (worker waits for a reply until " in status.stdout, status.stdout
        started = time.monotonic()
        approved = project.cli("approve", "--config", str(project.config), "--session", "parent")
        assert approved.returncode == 0 and "plan approved" in approved.stdout, approved.stderr
        assert time.monotonic() - started < 5
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "Phase: done" in overview(project, "parent")


def test_the_wait_runs_out_with_exit_3(project, bot):
    project.scenario(by_phase=TO_PLAN_WAIT)
    started = time.monotonic()
    result = project.worker("late", "--task", "t", env=env_of(bot.url, wait=0.3))
    assert result.returncode == 3, result.stderr
    assert "waiting for plan_approval" in result.stdout
    assert 0.3 <= time.monotonic() - started < 30
    assert message_saying(bot, "The worker stopped waiting for plan_approval")
    assert not (project.session_dir("late") / ".samocode.gatewait.json").exists()


def test_with_the_bot_api_down_a_parent_command_or_the_timeout_still_ends_the_wait(project):
    down = f"http://127.0.0.1:{closed_port()}"
    project.scenario(by_phase={**TO_PLAN_WAIT, **TO_DONE})
    with worker(project, "down", env_of(down)) as proc:
        paths = SessionPaths(until(lambda: next(project.sessions.glob("*-down"), None), "the session"))
        until(lambda: (paths.dir / ".samocode.gatewait.json").exists(), "the wait")
        approved = project.cli("approve", "--config", str(project.config), "--session", "down")
        assert approved.returncode == 0, approved.stderr
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    project.scenario(by_phase=TO_PLAN_WAIT)
    result = project.worker("down2", "--task", "t", env=env_of(down, wait=0.3))
    assert result.returncode == 3 and TOKEN not in result.stdout + result.stderr


def test_sigterm_while_the_bot_api_hangs_stops_the_waiting_worker_at_once(project, bot):
    project.scenario(by_phase=TO_PLAN_WAIT)
    with worker(project, "hang", env_of(bot.url)) as proc:
        until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        bot.delay = 60.0  # every call from now on hangs
        until(lambda: len(bot.calls("getUpdates")) >= 1, "a poll")
        say(bot, "/status")  # the reply to it will hang
        until(lambda: [b for b in bot.calls("sendMessage") if b.get("reply_parameters")], "the reply")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, (out, err)
    assert time.monotonic() - sent < 2.0


def test_an_old_button_and_a_refused_action_are_answered_with_the_reason(project, bot, loop):
    def phone() -> None:
        message_id, data = until(lambda: buttons(bot, "Accept all suggestions"), "the Q&A buttons")
        press(bot, (message_id, "0badc0de:approve"))
        press(bot, (message_id, data))
        until(lambda: len(bot.calls("answerCallbackQuery")) >= 2, "both buttons answered")
        loop.stop.set()  # Ctrl-C, instead of sitting out the wait

    no_suggestion = QA.replace("**Suggestion:** A\n", "")
    loop.scenario(sequence=[QA_THEN_PLAN[0], {**QA_THEN_PLAN[1], "files": {"_qa.md": no_suggestion}}])
    assert in_process(loop, bot.url, "refused", phone).code == 130
    old, refused = bot.calls("answerCallbackQuery")
    assert old["show_alert"] and "older message" in old["text"]
    assert refused["show_alert"] and "question Q2 has no suggestion" in refused["text"]
    assert not bot.calls("editMessageText")
    assert "_waiting_" in (project.session_dir("refused") / "_qa.md").read_text()
    assert not [r for r in history(project, "refused") if r.get("event") == "answered"]


def test_errors_and_rate_limits_from_getupdates_delay_but_do_not_lose_a_reply(tmp_path, bot, caplog):
    """The poller itself, in-process with its back-off shortened: errors back off, a 429's retry_after
    is honoured over a shorter back-off, one log line for the lot, and the reply still comes through."""
    limited = {"ok": False, "error_code": 429, "parameters": {"retry_after": 0.3}}
    bot.poll_replies = [500, 500, (429, limited)]
    reply = say(bot, "use the read replica")
    settings = Settings(telegram_token=TOKEN, telegram_chat_id="42", telegram_api_base=bot.url)
    talk = Conversation(SessionPaths(tmp_path), settings, threading.Event(), lambda _command: (True, ""))
    talk.backoff = 0.01  # the product's 1 s (then 2 s, 4 s) shortened, and retry_after to 0.3 s
    caplog.set_level(logging.WARNING, logger="samocode.bot")
    started = time.monotonic()
    talk.poller.start()
    try:
        update = talk.updates.get(timeout=10)
        took = time.monotonic() - started
    finally:
        talk.close()
        talk.poller.join(timeout=10)
    assert update["update_id"] == reply and update["message"]["text"] == "use the read replica"
    assert 0.3 <= took < 5, took  # 0.01 + 0.02, then max(retry_after 0.3, 0.04) before the fourth poll
    offsets = [body["offset"] for path, body, _ in bot.requests if path.endswith("/getUpdates")]
    assert offsets[:4] == [0, 0, 0, 0], offsets  # the failures lost nothing: the same offset again
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert log.count("telegram getUpdates failed") == 1  # not one line per retry
    assert TOKEN not in log


def test_start_returns_while_the_worker_waits_and_stop_ends_the_wait(project, bot):
    project.scenario(by_phase=TO_PLAN_WAIT)
    env = env_of(bot.url)
    started = project.run("start", "--config", str(project.config), "--session", "bg", "--task", "t", env=env)
    try:
        assert started.returncode == 0 and "started worker pid" in started.stdout, started

        def report() -> dict:
            shown = project.cli("status", "--config", str(project.config), "--session", "bg", "--json")
            return json.loads(shown.stdout)

        data = until(lambda: (r := report()).get("gate_wait") and r, "the wait, in status")
        assert data["gate_wait"].startswith("waiting for plan_approval (worker waits for a reply until ")
        assert data["worker_pid"] and data["waiting_for"] == "plan_approval"
        watched = project.cli("watch", "--config", str(project.config), "--session", "bg", "--timeout", "0.1")
        assert "· waiting for plan_approval (worker waits for a reply until " in watched.stdout
    finally:
        stopped = project.cli("stop", "--config", str(project.config), "--session", "bg")
    assert stopped.returncode == 0 and "(exit 130)" in stopped.stdout, stopped
    record = json.loads((project.session_dir("bg") / "_worker.json").read_text())
    assert record["code"] == 130 and "waiting at the gate" in record["message"]
    assert not (project.session_dir("bg") / ".samocode.gatewait.json").exists()


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    return InProc(project, monkeypatch)


def in_process(loop: InProc, url: str, name: str, phone: Callable[[], None]) -> Outcome:
    """The worker in-process (tests/inproc.py) with a real gate wait against the stand-in Bot API;
    `phone` runs in a thread meanwhile (what the human does; `loop.stop.set()` is Ctrl-C). For the
    tests whose point is the conversation, not the worker's process."""
    thread = threading.Thread(target=phone, daemon=True)
    thread.start()
    telegram = {"telegram_token": TOKEN, "telegram_chat_id": "42", "telegram_api_base": url}
    outcome = loop.run(name, task="t", gate_wait=30, **telegram)
    thread.join(timeout=10)
    return outcome


def test_malformed_updates_are_skipped_and_a_good_one_after_them_still_acts(project, bot, loop, caplog):
    def phone() -> None:
        approve = until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        bot.push({"message": "not an object"})
        bot.push({"message": {"chat": {"id": 42}, "text": "hi", "date": "yesterday"}})
        bot.push({"message": {"chat": {"id": 42}, "text": "hi", "reply_to_message": 5, "date": time.time()}})
        bot.push({"callback_query": {"id": "x", "message": {"chat": {"id": 42}}, "data": 12345}})
        bot.push({"edited_message": {"chat": {"id": 42}}})
        press(bot, approve)

    loop.scenario(by_phase={**TO_PLAN_WAIT, **TO_DONE})
    caplog.set_level(logging.WARNING, logger="samocode.bot")
    outcome = in_process(loop, bot.url, "junk", phone)
    assert outcome.code == 0, outcome.message
    assert "Phase: done" in overview(project, "junk")
    assert len([r for r in history(project, "junk") if r.get("event") == "approved"]) == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert log.count("ignored a Telegram update the worker could not read") == 2


def test_a_wait_no_reply_can_end_exits_at_once_as_before_and_still_notifies(project, bot):
    no_questions = {"signal": {"status": "waiting", "for": "qa_answers", "reason": "questions"}}
    project.scenario(by_phase={"investigation": QA_THEN_PLAN[0], "requirements": no_questions})
    started = time.monotonic()
    result = project.worker("noqa", "--task", "t", env=env_of(bot.url, wait=60))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 30
    assert message_saying(bot, "waiting for you ⏸ waiting for qa_answers")
    assert not bot.calls("getUpdates")


def test_a_dripping_bot_api_holds_up_neither_a_parent_command_nor_sigterm(project, bot):
    blocked = {"signal": {"status": "blocked", "reason": "needs a key", "needs": "access"}}
    project.scenario(by_phase={**TO_PLAN_WAIT, "implementation": blocked})
    with worker(project, "drip", env_of(bot.url)) as proc:
        until(lambda: buttons(bot, "Approve plan"), "the plan's buttons")
        bot.drip = 0.2  # from now on every answer comes one byte at a time, for ever
        before = len(bot.calls("sendMessage"))
        started = time.monotonic()
        approved = project.cli("approve", "--config", str(project.config), "--session", "drip")
        assert approved.returncode == 0, approved.stderr
        assert time.monotonic() - started < 5
        # implementation blocks: the wait's message to the phone now drips; SIGTERM in the middle of it
        until(lambda: "Blocked: yes" in overview(project, "drip"), "the block")
        until(lambda: len(bot.calls("sendMessage")) > before, "the blocked message under way")
        until(lambda: bot.sent >= 2, "the answer dripping")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, (out, err)
    assert time.monotonic() - sent < 2.0
    assert TOKEN not in out + err
