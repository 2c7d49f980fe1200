"""`samocode doctor`: versions against the tested range, logins seen without a network call, a
session's last stream; in-process through `doctor.diagnose` (fake CLIs, a temp HOME) and as the CLI
(`worker.cli.main` in this process, conftest's `cli`: its output and exit code as a process's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli

from worker import doctor, tested
from worker.errors import ConfigError, ExitCode, NoSession

REPO = Path(__file__).resolve().parents[1]
FAKE_CODEX = REPO / "tests" / "fakes" / "fake_codex.py"  # `--version` prints "codex-cli 0.169.0"
SECRET = "sk-do-not-print-0123456789"


def fake_cli(folder: Path, name: str, script: str) -> Path:
    """A stand-in CLI: a shell script answering `--version` as the body says."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def environ(home: Path, **extra: str) -> dict[str, str]:
    """No real PATH entries that could hold a real claude/codex: only the system folders."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "SAMOCODE_ENV_FILE": str(home / "none.env"), **extra}


def claude_at(tmp_path: Path, version: str = "2.1.250") -> str:
    return str(fake_cli(tmp_path / "bin", "claude", f'echo "{version} (Claude Code)"'))


def test_version_inside_the_range_and_an_api_key_is_all_well(tmp_path, home):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY=SECRET)

    report = doctor.diagnose(env)

    claude = report.clis[0]
    assert (claude.name, claude.version, claude.in_range) == ("claude", "2.1.250", True)
    assert claude.auth == doctor.Auth("api_key", "ANTHROPIC_API_KEY")
    assert report.problems == [] and report.code is ExitCode.DONE
    text = "\n".join(doctor.render(report))
    assert "claude: 2.1.250 at " in text and "(tested: 2.1.197..2.1.332)" in text
    assert "API key (ANTHROPIC_API_KEY)" in text
    assert "codex (not in use): CODEX_PATH=codex: not on PATH" in text  # shown, but not a problem
    assert text.endswith("all well")
    assert SECRET not in text


@pytest.mark.parametrize(("version", "inside"), [("2.1.196", False), ("2.1.333", False), ("2.1.332", True)])
def test_a_version_outside_the_tested_range_is_a_problem(tmp_path, home, version, inside):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path, version), ANTHROPIC_API_KEY="k")

    report = doctor.diagnose(env)

    assert report.clis[0].in_range is inside
    if inside:
        assert report.code is ExitCode.DONE
    else:
        assert report.code is ExitCode.USAGE
        assert report.problems == [
            f"claude {version} is outside the tested range 2.1.197..2.1.332: its stream may not be understood"
        ]
        assert "NOT tested" in "\n".join(doctor.render(report))


def test_the_configured_cli_missing_is_a_problem_naming_the_setting(tmp_path, home):
    env = environ(home, CLAUDE_PATH=str(tmp_path / "nowhere" / "claude"), ANTHROPIC_API_KEY="k")

    report = doctor.diagnose(env)

    assert report.code is ExitCode.USAGE
    (problem,) = report.problems
    assert "CLAUDE_PATH=" in problem and "no executable file there" in problem


def test_a_codex_path_set_but_missing_is_a_problem_even_with_claude_in_use(tmp_path, home):
    env = environ(
        home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k", CODEX_PATH=str(tmp_path / "no-codex")
    )

    report = doctor.diagnose(env)

    assert [p.split(":")[0] for p in report.problems] == ["codex"]


def test_codex_provider_reads_the_fake_codex_version_and_its_api_key(tmp_path, home):
    env = environ(home, SAMOCODE_PROVIDER="codex", CODEX_PATH=str(FAKE_CODEX), OPENAI_API_KEY=SECRET)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the fake's python3

    report = doctor.diagnose(env)

    codex = report.clis[1]
    assert (codex.version, codex.in_range, codex.in_use) == ("0.169.0", True, True)
    assert codex.auth == doctor.Auth("api_key", "OPENAI_API_KEY")
    assert report.code is ExitCode.DONE  # claude is not on this PATH, and not in use


def test_a_cli_that_does_not_answer_is_cut_off_at_the_timeout(tmp_path, home):
    hung = fake_cli(tmp_path / "bin", "claude", "sleep 30")
    env = environ(home, CLAUDE_PATH=str(hung), ANTHROPIC_API_KEY="k")
    started = time.monotonic()

    report = doctor.diagnose(env, timeout=0.5)

    assert time.monotonic() - started < 10
    assert report.problems == ["claude: `" + str(hung) + " --version` failed: did not answer within 0.5 s"]


def test_a_cli_that_fails_or_prints_no_version_is_a_problem(tmp_path, home):
    broken = fake_cli(tmp_path / "a", "claude", "echo 'boom: cannot start' >&2; exit 3")
    odd = fake_cli(tmp_path / "b", "claude", "echo 'Claude Code'")
    for path, words in ((broken, "failed: boom: cannot start"), (odd, "no version in 'Claude Code'")):
        report = doctor.diagnose(environ(home, CLAUDE_PATH=str(path), ANTHROPIC_API_KEY="k"))
        assert report.code is ExitCode.USAGE
        assert words in report.problems[0], report.problems


# -- logins: which variable or file, never its value ----------------------------------------------------
def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_claude_logins_in_the_clis_order(tmp_path, home):
    assert doctor.claude_auth({}, home) == doctor.Auth("none", "")
    _write(home / ".claude" / ".credentials.json", {"claudeAiOauth": {"accessToken": SECRET}})
    found = doctor.claude_auth({}, home)
    assert found.kind == "subscription" and ".credentials.json" in found.source
    other = tmp_path / "cfg"
    assert doctor.claude_auth({"CLAUDE_CONFIG_DIR": str(other)}, home).kind == "none"
    _write(other / ".credentials.json", {"claudeAiOauth": {"accessToken": SECRET}})
    assert str(other) in doctor.claude_auth({"CLAUDE_CONFIG_DIR": str(other)}, home).source
    token = {"CLAUDE_CODE_OAUTH_TOKEN": SECRET}
    assert doctor.claude_auth(token, home) == doctor.Auth("subscription", "CLAUDE_CODE_OAUTH_TOKEN")
    both = {**token, "ANTHROPIC_API_KEY": SECRET}
    assert doctor.claude_auth(both, home) == doctor.Auth("api_key", "ANTHROPIC_API_KEY")


def test_unreadable_or_odd_credential_files_count_as_no_login(home):
    (home / ".claude").mkdir()
    (home / ".claude" / ".credentials.json").write_text("{not json")
    assert doctor.claude_auth({}, home).kind == "none"
    _write(home / ".codex" / "auth.json", ["a", "list"])
    assert doctor.codex_auth({}, home).kind == "none"


def test_codex_logins(tmp_path, home):
    assert doctor.codex_auth({}, home).kind == "none"
    _write(home / ".codex" / "auth.json", {"OPENAI_API_KEY": None, "tokens": {"id_token": SECRET}})
    assert doctor.codex_auth({}, home).kind == "subscription"
    codex_home = tmp_path / "ch"
    _write(codex_home / "auth.json", {"OPENAI_API_KEY": SECRET})
    found = doctor.codex_auth({"CODEX_HOME": str(codex_home)}, home)
    assert found.kind == "api_key" and str(codex_home) in found.source
    assert doctor.codex_auth({"OPENAI_API_KEY": SECRET}, home) == doctor.Auth("api_key", "OPENAI_API_KEY")


def test_no_login_for_the_cli_in_use_is_a_problem_naming_the_fix(tmp_path, home):
    report = doctor.diagnose(environ(home, CLAUDE_PATH=claude_at(tmp_path)))
    assert report.problems == [
        "claude: no credentials found; run `claude` and /login (subscription) or set ANTHROPIC_API_KEY"
    ]


# -- a session's last stream ------------------------------------------------------------------------
def _session(tmp_path: Path, records: list[dict]) -> Path:
    config = tmp_path / ".samocode"
    sessions = tmp_path / "sessions"
    folder = sessions / "26-11-29-demo"
    folder.mkdir(parents=True)
    (folder / "_signal_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config.write_text(f"MAIN_REPO={tmp_path}\nWORKTREES={tmp_path / 'wt'}\nSESSIONS={sessions}\n")
    return config


PROBLEM = "the CLI's result event was not understood — CLI version 2.1.332"


def test_the_newest_attempts_stream_problem_is_reported(tmp_path, home):
    config = _session(
        tmp_path,
        [
            {"id": "a", "decision": "continue", "cli": "claude 2.1.197"},
            {
                "id": "b",
                "event": "attempt_failed",
                "failure": "no_result",
                "cli": "claude 2.1.332",
                "stream_problem": PROBLEM,
            },
            {"event": "usage_wait"},
        ],
    )
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k")

    report = doctor.diagnose(env, config, "demo")

    assert report.session == doctor.SessionCheck("26-11-29-demo", "claude 2.1.332", PROBLEM, 2)
    assert report.problems == [f"session 26-11-29-demo: {PROBLEM}"]
    assert f"session 26-11-29-demo (claude 2.1.332): last stream: {PROBLEM}" in doctor.render(report)


def test_an_older_stream_problem_is_history_not_a_problem(tmp_path, home):
    config = _session(
        tmp_path,
        [
            {"id": "a", "event": "attempt_failed", "stream_problem": PROBLEM},
            {"id": "b", "decision": "continue"},
        ],
    )
    report = doctor.diagnose(
        environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k"), config, "demo"
    )
    assert report.problems == [] and report.session.stream_problem is None
    assert "session 26-11-29-demo: last stream: understood" in doctor.render(report)


def test_session_needs_config_and_must_exist(tmp_path, home):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k")
    with pytest.raises(ConfigError, match="--session needs --config"):
        doctor.diagnose(env, None, "demo")
    config = _session(tmp_path, [])
    with pytest.raises(NoSession):
        doctor.diagnose(env, config, "other")
    assert doctor.diagnose(env, config, "demo").session.attempts == 0


# -- the tested range ------------------------------------------------------------------------------
def test_tested_range_compares_numbers_not_text():
    r = tested.TestedRange("x", "2.1.9", "2.1.10")
    assert r.contains("2.1.9") and r.contains("2.1.10") and not r.contains("2.1.11")
    assert not r.contains("2.1.x") and not r.contains("")
    assert tested.version_key("0.171.0") == (0, 171, 0)


# -- the command line ------------------------------------------------------------------------------
def _cli(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(("doctor", *args), env, REPO, timeout=60)


def test_doctor_command_prints_the_report_and_exits_by_it(tmp_path, home):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY=SECRET)
    ok = _cli(env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "provider: claude"
    assert ok.stdout.splitlines()[-1] == "all well"
    bad = _cli({**env, "CLAUDE_PATH": claude_at(tmp_path, "3.0.0")})
    assert bad.returncode == 2
    assert "problem: claude 3.0.0 is outside the tested range" in bad.stdout
    assert SECRET not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_doctor_command_errors_are_one_line_with_their_code(tmp_path, home):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k")
    config = _session(tmp_path, [])
    cases = [
        (("--session", "demo"), 2, "samocode: --session needs --config (the project's .samocode file)"),
        (("--config", str(config), "--session", "nope"), 9, "samocode: no session named 'nope'"),
        (("--config", str(tmp_path / "missing")), 2, "samocode: "),
    ]
    for args, code, start in cases:
        done = _cli(env, *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert done.stderr.startswith(start) and "Traceback" not in done.stderr, done.stderr
        assert done.stdout == ""
    bad_setting = _cli({**env, "SAMOCODE_PROVIDER": "gpt"})
    assert bad_setting.returncode == 2 and "SAMOCODE_PROVIDER" in bad_setting.stderr


def test_doctor_writes_nothing(tmp_path, home):
    env = environ(home, CLAUDE_PATH=claude_at(tmp_path), ANTHROPIC_API_KEY="k")
    before = sorted(os.walk(tmp_path))
    assert _cli(env).returncode == 0
    assert sorted(os.walk(tmp_path)) == before
