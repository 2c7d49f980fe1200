"""CodexProvider's argv against the real Codex CLI (npm @openai/codex, pinned in tests/e2e/realcli.py).

A flag renamed or removed in a Codex release fails here, not in a user's session: every flag the
provider passes must be in `codex exec --help`, the real CLI must accept the exact argv (it gets as
far as looking for its home folder), and the fake CLI must know the same options as the real one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.realcli import codex_path
from worker.process import Invocation, Limits, run
from worker.prompt import AgentSpec
from worker.providers import Failure, IterationRequest
from worker.providers.codex import CodexProvider

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fakes"))
import fake_codex  # noqa: E402  (the fake's option table)


@pytest.fixture(scope="module")
def codex() -> Path:
    return codex_path()


def scratch_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CODEX_HOME": str(home), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def exec_help(codex: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    home = tmp_path_factory.mktemp("codex-home")
    done = subprocess.run(
        [str(codex), "exec", "--help"],
        env=scratch_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def provider_argv(codex: Path, cwd: Path, model: str = "gpt-5.5") -> tuple[str, ...]:
    return CodexProvider(path=str(codex), model=model, timeout=60).argv(cwd)


def help_options(text: str) -> dict[str, bool]:
    """Every option in clap's help: {'--cd': True (takes a value), '-C': True, '--json': False, ...}."""
    found: dict[str, bool] = {}
    for m in re.finditer(r"^\s+(?:(-\w), )?(--[\w-]+)(?: <[^>]+>)?", text, re.MULTILINE):
        takes_value = "<" in m.group(0)
        found[m.group(2)] = takes_value
        if m.group(1):
            found[m.group(1)] = takes_value
    return found


def test_every_flag_the_provider_passes_is_in_codex_exec_help(codex, exec_help, tmp_path):
    options = help_options(exec_help)
    argv = provider_argv(codex, tmp_path)
    assert argv[1] == "exec"
    flags = [a for a in argv[2:] if a.startswith("-") and a != "-"]
    assert flags == [
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-C",
        "-m",
    ]
    for flag in flags:
        assert flag in options, f"codex exec --help no longer lists {flag}"
    # -C and -m take a value, the others are switches.
    assert {f: options[f] for f in flags} == {
        "--json": False,
        "--skip-git-repo-check": False,
        "--dangerously-bypass-approvals-and-sandbox": False,
        "-C": True,
        "-m": True,
    }
    # `-` as the prompt means "read the instructions from stdin".
    assert re.search(r"if `-` is used\), instructions are read from stdin", " ".join(exec_help.split()))


def test_the_real_cli_accepts_the_exact_argv_with_the_prompt_on_stdin(codex, tmp_path):
    """No network needed: a missing CODEX_HOME stops codex right after it parsed its arguments."""
    home = tmp_path / "no-codex-home"  # deliberately missing
    provider = CodexProvider(path=str(codex), model="gpt-5.5", timeout=60)
    agent = AgentSpec(name="samocode-x", description="d", body="Do one thing.\n")
    prepared = provider.prepare(
        IterationRequest("workflow\n", "## Session context\n", agent, tmp_path, tmp_path)
    )
    prompt = tmp_path / "prompt.md"
    prompt.write_text(prepared.prompt)
    env = {**scratch_env(tmp_path), "CODEX_HOME": str(home)}
    parser = provider.parser()
    out, err = os.open(tmp_path / "out.jsonl", os.O_WRONLY | os.O_CREAT), tmp_path / "err.txt"
    err_fd = os.open(err, os.O_WRONLY | os.O_CREAT)
    try:
        result = run(
            Invocation(prepared.argv, env, tmp_path, prompt),
            out,
            err_fd,
            Limits(timeout=60, idle_timeout=60, kill_grace=2),
            parser.feed,
            threading.Event(),
            markers=parser.markers,
        )
    finally:
        os.close(out)
        os.close(err_fd)
    stderr = err.read_text()
    assert result.exit_code == 1, stderr  # 2 would be clap rejecting the argv
    assert "unexpected argument" not in stderr
    assert "Error finding codex home" in stderr
    record = parser.finish(result, stderr)
    assert record.failure is Failure.REFUSED  # a broken install is not retried


def test_a_renamed_flag_is_refused_by_the_real_cli_as_by_the_fake(codex, tmp_path):
    argv = ["exec", "--json", "--skip-git-repo-check", "--no-such-flag", "-"]
    real = subprocess.run(
        [str(codex), *argv], env=scratch_env(tmp_path), input="", capture_output=True, text=True
    )
    fake = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fakes" / "fake_codex.py"), *argv],
        input="",
        capture_output=True,
        text=True,
    )
    assert real.returncode == fake.returncode == 2
    for done in (real, fake):
        assert "error: unexpected argument '--no-such-flag' found" in done.stderr


def test_the_fake_knows_exactly_the_real_options(exec_help):
    real = help_options(exec_help)
    real.pop("--help", None), real.pop("-h", None), real.pop("--version", None), real.pop("-V", None)
    fake = {**{name: True for name in fake_codex.VALUED}, **{name: False for name in fake_codex.FLAGS}}
    assert fake == real
