"""The command layer: the grammar built for one subcommand parses as the whole one, its help as wide
as argparse makes it; every command that changes a session writes through the journal (a torn history
line before it stays one line) and never blocks on a FIFO; `status` starts git only where there is a
repository to ask."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from test_commands import PLAN, QA, cmd, make

from worker import commands, history, overview
from worker.cliargs import SUBCOMMANDS, build_parser, parse_args
from worker.errors import ConfigError, Refused
from worker.session import SessionPaths

NOW = dt.datetime(2026, 11, 29, 16, 0)

# -- the grammar ------------------------------------------------------------------------------------

ARGV = [
    ["status", "--config", "c", "--session", "s", "--json"],
    ["watch", "--config", "c", "--session", "s", "--timeout", "0"],
    ["answer", "--config", "c", "--session", "s", "--set", "1=a", "--set", "2=b"],
    ["--config", "c", "--session", "s", "--provider", "gpt"],
    ["run", "--config", "c", "--session", "s", "--max-iterations", "x"],
    ["start", "--config", "c", "--session", "s", "--timeout", "5", "--task", "t"],
    ["status", "--config", "c", "--session", "s", "extra"],
    ["unblock", "--config", "c", "--session", "s"],
    ["--config", "c", "--session", "s", "--ready-fd", "3"],
    ["bogus"],
    [],
    *([name, "-h"] for name in SUBCOMMANDS),
]


def _outcome(parse, argv: list[str]) -> tuple[str, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            result = repr(sorted(vars(parse(argv)).items()))
        except SystemExit as exc:  # -h prints the help and exits
            result = f"exit {exc.code}"
        except ConfigError as exc:  # a usage error, compared as text
            result = f"{type(exc).__name__}: {exc}"
    return result, out.getvalue()


@pytest.mark.parametrize("argv", ARGV, ids=lambda a: " ".join(a) or "empty")
def test_the_grammar_built_for_one_subcommand_parses_as_the_whole_one(argv):
    def whole(args: list[str]):
        args = list(args)
        if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
            args.insert(0, "run")
        return build_parser().parse_args(args)

    assert _outcome(parse_args, argv) == _outcome(whole, argv)


def test_the_top_level_help_lists_every_subcommand():
    _, text = _outcome(parse_args, ["--help"])
    assert all(name in text for name in SUBCOMMANDS), text


@pytest.mark.parametrize("columns", [None, "0", "wide", "37", "200"])
@pytest.mark.parametrize("only", [None, "status", "answer"])
def test_help_is_as_wide_as_argparses_own_formatter_makes_it(monkeypatch, columns, only):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    parser = build_parser(only)
    helper = parser if only is None else parser._subparsers._group_actions[0].choices[only]  # type: ignore[union-attr]
    assert helper.formatter_class is not argparse.HelpFormatter
    ours = helper.format_help()
    helper.formatter_class = argparse.HelpFormatter
    assert helper.format_help() == ours


# -- every command writes through the journal -----------------------------------------------------------

WAITS_FOR_PLAN = {"Phase": "planning", "Blocked": "waiting_human", "Waiting For": "plan_approval"}
PLANS = {k.format(prefix="11-29-15:00"): v for k, v in PLAN.items()}
WRITERS = {
    "approve": (WAITS_FOR_PLAN, PLANS, lambda p: commands.approve(p, NOW), "approved"),
    "revise": (
        WAITS_FOR_PLAN,
        PLANS,
        lambda p: commands.revise(p, "smaller steps", NOW),
        "changes_requested",
    ),
    "resume": ({"Phase": "done"}, {}, lambda p: commands.resume(p, "more work", NOW), "resumed"),
    "unblock": ({"Blocked": "yes"}, {}, lambda p: commands.unblock(p, "use staging", NOW), "unblocked"),
    "answer": (
        {"Phase": "requirements", "Blocked": "waiting_human", "Waiting For": "qa_answers"},
        {"_qa.md": QA},
        lambda p: commands.answer(p, {}, True, NOW, via="Telegram"),
        "answered",
    ),
}


@pytest.mark.parametrize("name", WRITERS)
def test_a_record_every_command_writes_after_a_torn_line_is_readable(project, name):
    fields, files, run, event = WRITERS[name]
    folder = make(project, "t", fields, files)
    path = folder / "_signal_history.jsonl"
    path.write_bytes(b'{"event": "x"}\n{"torn": ')
    run(SessionPaths(folder))
    lines = path.read_text().splitlines()
    assert lines[:2] == ['{"event": "x"}', '{"torn": ']
    assert json.loads(lines[2])["event"] == event
    assert [r.get("event") for r in history.read(path)] == ["x", event]


@pytest.mark.parametrize("name", WRITERS)
def test_every_command_refuses_a_fifo_overview_at_once(project, name):
    fields, files, run, _ = WRITERS[name]
    folder = make(project, "f", fields, files)
    (folder / "_overview.md").unlink()
    os.mkfifo(folder / "_overview.md")
    started = time.monotonic()
    with pytest.raises(Refused, match=r"_overview\.md is not a regular file"):
        run(SessionPaths(folder))
    assert time.monotonic() - started < 5
    assert stat.S_ISFIFO(os.lstat(folder / "_overview.md").st_mode)


def test_answer_refuses_a_fifo_at_qa_md_at_once(project):
    folder = make(
        project, "q", {"Phase": "requirements", "Blocked": "waiting_human", "Waiting For": "qa_answers"}
    )
    os.mkfifo(folder / "_qa.md")
    result = cmd(project, "answer", "q", "--accept-suggestions", timeout=20)  # a hang fails here
    assert result.returncode == 7, result.stdout + result.stderr
    assert result.stderr.count("_qa.md") == 1, result.stderr  # the path once, then the reason
    assert "_qa.md: not a regular file" in result.stderr, result.stderr
    assert not (folder / "_signal_history.jsonl").exists()  # nothing changed


def test_answer_refuses_a_qa_md_that_is_not_utf8_naming_it_once(project):
    folder = make(
        project, "q8", {"Phase": "requirements", "Blocked": "waiting_human", "Waiting For": "qa_answers"}
    )
    (folder / "_qa.md").write_bytes("## Q1\nA: _waiting_ caf\u00e9\n".encode("latin-1"))
    result = cmd(project, "answer", "q8", "--accept-suggestions")
    assert result.returncode == 7, result.stdout + result.stderr
    assert result.stderr.count("_qa.md") == 1 and "_qa.md: not UTF-8 text" in result.stderr, result.stderr
    assert not (folder / "_signal_history.jsonl").exists()  # nothing changed


# -- status and git ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_repository", [False, True], ids=["plain-folder", "repository"])
def test_status_starts_git_only_where_there_is_a_repository(project, tmp_path, in_repository):
    calls = tmp_path / "git-calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    real = shutil.which("git", path=project.env["PATH"])
    (fake / "git").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{real}" "$@"\n')
    (fake / "git").chmod(0o755)
    workdir = project.main_repo if in_repository else tmp_path / "plain"
    workdir.mkdir(exist_ok=True)
    folder = project.sessions / "g"
    folder.mkdir(parents=True)
    first = "[000 @ 01-01 00:00] created"
    (folder / "_overview.md").write_text(
        overview.render_new("g", "2026-01-01 00:00", str(workdir), "task", "", first)
    )
    path = f"{fake}{os.pathsep}{project.env['PATH']}"
    result = project.cli(
        "status", "--config", str(project.config), "--session", "g", "--json", env={"PATH": path}
    )
    assert result.returncode == 0, result.stderr
    commits = json.loads(result.stdout)["commits"]
    if in_repository:
        assert "log" in calls.read_text() and commits
    else:
        assert not calls.exists() and commits == []


def test_the_repository_check_finds_a_work_tree_a_linked_worktree_and_a_bare_repository(tmp_path):
    from worker.statusbuild import _repository_above

    plain, tree, linked, bare = (tmp_path / n for n in ("plain", "tree", "linked", "bare.git"))
    (plain / "sub").mkdir(parents=True)
    (tree / ".git").mkdir(parents=True)
    (tree / "a" / "b").mkdir(parents=True)
    linked.mkdir()
    (linked / ".git").write_text("gitdir: elsewhere\n")
    (bare / "objects").mkdir(parents=True)
    (bare / "refs").mkdir()
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    assert not _repository_above(plain / "sub")
    assert _repository_above(tree / "a" / "b") and _repository_above(linked) and _repository_above(bare)


def test_the_commands_module_neither_prints_nor_parses_arguments():
    source = (Path(commands.__file__)).read_text()
    assert "print(" not in source and "argparse" not in source and "sys.exit" not in source


def test_a_long_note_leaves_a_flow_log_line_as_short_as_the_workers_and_the_history_keeps_it_whole(project):
    """The commands' Flow Log lines are the worker's (`flowlog.flow_line`): a line points at what
    happened, the history keeps the whole text; a 5,000-character note used to land whole."""
    from worker.flowlog import FLOW_EVENT_MAX

    folder = make(project, "n", {"Blocked": "yes"})
    note = "use the staging database " * 200
    commands.unblock(SessionPaths(folder), note, NOW)
    record = history.read(folder / "_signal_history.jsonl")[-1]
    assert record["note"] == " ".join(note.split())
    (line,) = [ln for ln in (folder / "_overview.md").read_text().splitlines() if "Human direction" in ln]
    assert line.startswith("- [000 @ 11-29 16:00] Human direction: use the staging database")
    assert line.endswith("…") and len(line) <= FLOW_EVENT_MAX + len("- [000 @ 11-29 16:00] ")


# -- the suite's in-process runner (conftest.cli) ------------------------------------------------------------


def test_the_in_process_runner_puts_the_process_back_and_never_runs_the_worker(project):
    import sys

    before = (dict(os.environ), os.getcwd(), sys.stdin, sys.stdout, sys.stderr)
    shown = project.cli("status", "--config", str(project.config), "--session", "nope", env={"X_ONLY": "1"})
    assert (shown.returncode, shown.stdout) == (9, "") and shown.stderr.startswith("samocode: no session")
    assert (dict(os.environ), os.getcwd(), sys.stdin, sys.stdout, sys.stderr) == before
    assert project.cli("status", "-h").returncode == 0  # argparse's exit, as a code
    with pytest.raises(AssertionError, match="the worker would run in this process"):
        project.cli("--config", str(project.config), "--session", "fine")
    assert not project.sessions.exists() or not any(project.sessions.iterdir())  # no session made
    assert (dict(os.environ), os.getcwd()) == before[:2]


# -- the 1 KB report -----------------------------------------------------------------------------------


# How deep the sessions folder is -> which paths stay whole: (session_dir, qa, plan).
DEPTHS = {0: (True, True, True), 1: (False, True, True), 2: (False, False, True), 3: (False, False, False)}


@pytest.mark.parametrize(("depth", "expected"), DEPTHS.items(), ids=[f"depth{d}" for d in DEPTHS])
def test_a_report_too_long_for_1kb_clips_its_paths_the_plan_last(depth, expected):
    """However deep the sessions folder, the JSON stays within the budget; the session folder is cut
    first, then the Q&A path, and the plan's (which the parent shows the user at the plan gate) last."""
    from worker.status import MAX_BYTES, Report, render_json

    folder = "/" + "/".join(["a-rather-long-folder-name"] * (2 + depth * 2)) + "/sessions/26-11-29-big"
    huge = "é" * 4000
    report = Report(
        "big", folder, "planning", 3, 3, "waiting_human", "plan_approval", huge, huge, None,
        None, None, None, {"provider": "claude", "timeout_s": 1800.0}, ("[001 @ x] " + huge,) * 3,
        ("84f4d2c init",), f"{folder}/26-11-29-10:00-plan-{'z' * 30}.md", f"{folder}/_qa.md",
    )  # fmt: skip
    out = render_json(report)
    data = json.loads(out)
    assert len(out.encode("utf-8")) <= MAX_BYTES
    whole = (data["session_dir"] == folder, data["qa"] == report.qa, data["plan"] == report.plan)
    assert whole == expected
    cut = [key for key, kept in zip(("session_dir", "qa", "plan"), whole, strict=True) if not kept]
    assert all(data[key].endswith("...") for key in cut), cut
