"""Notifications with what a decision needs: the text from the session's files, and the worker's loop
(in this process, tests/inproc.py) sending it through the real Telegram notifier to a local stand-in
for the Bot API. A worker process sending to the stand-in is test_notify.py's."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

from inproc import InProc
from test_commands import QA, TO_PLAN_WAIT
from test_notify import TOKEN, telegram  # noqa: F401  (the fixture)

from worker import brief
from worker.notify import make_notifier


def telegram_loop(project, monkeypatch, url: str) -> InProc:
    """The loop in-process with the notifier a run makes from TELEGRAM_* settings, not the fake one."""
    loop = InProc(project, monkeypatch)
    loop.notes = make_notifier(TOKEN, "42", url, cancel=loop.stop)  # type: ignore[assignment]
    return loop


def texts(server) -> list[str]:
    return [body["text"] for path, body, _ in server.requests if path.endswith("/sendMessage")]


def test_plan_lines_give_title_first_items_and_path(tmp_path: Path):
    plan = tmp_path / "11-29-17:00-plan-dark.md"
    plan.write_text(
        textwrap.dedent(
            """\
            # Dark mode for the settings page
            ## Phase 1: tokens
            - [ ] Add colour tokens
            - [x] Read the theme from the OS
            ## Phase 2
            - [ ] Toggle in settings
            - [ ] Tests for the toggle
            """
        )
    )
    lines = brief.plan_lines(plan)
    assert lines == [
        "Plan: Dark mode for the settings page",
        "• Add colour tokens",
        "• Read the theme from the OS",
        "• Toggle in settings",
        "… and 1 more",
        f"File: {plan}",
    ]


def test_plan_lines_fall_back_to_sections_and_the_file_name(tmp_path: Path):
    plan = tmp_path / "p-plan-x.md"
    plan.write_text("## Phase 1\nwords\n## Phase 2\n")
    assert brief.plan_lines(plan)[:3] == ["Plan: p-plan-x", "• Phase 1", "• Phase 2"]
    assert brief.plan_lines(None) == ["Plan: no plan file found"]


def test_qa_lines_list_each_waiting_question_with_options_and_suggestion(tmp_path: Path):
    qa = tmp_path / "_qa.md"
    qa.write_text(QA.replace("**Answer:** _waiting_", "**Answer:** B", 1))
    assert brief.qa_lines(qa) == [
        f"Questions (1 waiting, {qa}):",
        "Q2. Which log format?",
        "  A) JSON",
        "  B) Text",
        "  Suggestion: A",
    ]


def test_iteration_line_counts_files_commits_cost_and_time():
    last = brief.LastIteration(12, 65.2, 0.4249, 3, 1)
    assert brief.iteration_line(last) == "Last iteration 012: 3 files changed, 1 commit, $0.42, 1m 05s"
    unknown = brief.LastIteration(1, 5, None, None, None)
    assert brief.iteration_line(unknown) == "Last iteration 001: cost unknown, 5s"


def test_compose_names_project_host_session_and_phase():
    where = brief.Where("shop", "box", "dark-mode", "planning")
    text = brief.compose("waiting", where, "waiting for plan_approval", body=["Plan: X"])
    assert text.splitlines() == [
        "samocode · dark-mode [planning]: waiting for you ⏸ waiting for plan_approval",
        "shop on box",
        "Plan: X",
    ]


def test_the_plan_gate_notification_the_loop_sends(project, monkeypatch, telegram):  # noqa: F811
    plan = "# Dark mode\n## Phase 1\n- [ ] Add tokens\n- [ ] Wire the toggle\n"
    scenario = {
        **TO_PLAN_WAIT,
        "planning": {**TO_PLAN_WAIT["planning"], "files": {"{prefix}-plan-x.md": plan}},
    }
    scenario["requirements"] = {**scenario["requirements"], "code": {"a.txt": "1\n", "b.txt": "2\n"}}
    loop = telegram_loop(project, monkeypatch, telegram.url)
    loop.scenario(by_phase=scenario)
    result = loop.run("phone", task="t")
    assert result.code == 3, result.message
    last = texts(telegram)[-1].splitlines()
    assert last[0].startswith("samocode · phone [planning]: waiting for you")
    assert last[1] == f"{project.main_repo.name} on {socket.gethostname().split('.')[0]}"
    assert last[2].startswith("Last iteration 003: 0 files changed, 0 commits, ")
    assert "Plan: Dark mode" in last and "• Add tokens" in last and "• Wire the toggle" in last
    [path] = [line for line in last if line.startswith("File: ")]
    assert path.endswith("-plan-x.md") and Path(path[6:]).parent == project.session_dir("phone")
    earlier = "\n".join(texts(telegram))
    assert "Last iteration 002: 2 files changed, 1 commit" in earlier  # requirements committed a.txt, b.txt


def test_the_qa_and_blocked_notifications_the_loop_sends(project, monkeypatch, telegram):  # noqa: F811
    loop = telegram_loop(project, monkeypatch, telegram.url)
    loop.scenario(
        by_phase={
            "investigation": {"signal": {"status": "continue", "phase": "requirements"}},
            "requirements": {
                "signal": {"status": "waiting", "for": "qa_answers", "reason": "2 questions"},
                "files": {"_qa.md": QA},
            },
        }
    )
    assert loop.run("qa", task="t").code == 3
    last = texts(telegram)[-1]
    for line in (
        "Q1. Where should tokens be stored?",
        "  A) In memory",
        "  B) In Redis",
        "  Suggestion: B, because tokens must be shared.",
        "Q2. Which log format?",
        "  Suggestion: A",
    ):
        assert line in last.splitlines(), last
    loop.scenario(
        by_phase={
            "investigation": {
                "signal": {"status": "blocked", "reason": "no access to the staging DB", "needs": "access"}
            }
        }
    )
    assert loop.run("blk", task="t").code == 4
    last = texts(telegram)[-1].splitlines()
    assert "Reason: no access to the staging DB" in last
    assert "Needed: access" in last
