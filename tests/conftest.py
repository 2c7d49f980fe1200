"""Shared fixtures: a scratch project (real git), an isolated environment, the worker as a subprocess,
and the parent's commands in this process (`Project.cli`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.cliargs import SUBCOMMANDS

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "fakes"
MAIN = REPO / "main.py"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


@dataclass
class Project:
    root: Path
    main_repo: Path
    worktrees: Path
    sessions: Path
    config: Path
    env: dict[str, str]
    scenario_file: Path
    record_file: Path

    def scenario(self, sequence: list | None = None, by_phase: dict | None = None) -> None:
        self.scenario_file.write_text(json.dumps({"sequence": sequence or [], "by_phase": by_phase or {}}))
        Path(str(self.scenario_file) + ".count").unlink(missing_ok=True)

    def records(self) -> list[dict]:
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines()]

    def session_dir(self, name: str) -> Path:
        matches = sorted(p for p in self.sessions.iterdir() if p.name == name or p.name.endswith(f"-{name}"))
        assert matches, f"no session folder for {name} in {list(self.sessions.iterdir())}"
        return matches[-1]

    def run(
        self, *args: str, timeout: float = 60, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MAIN), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
        )

    def cli(
        self, *args: str, env: dict | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`run`'s twin in this process (see `cli`): the project's environment merged with `env`, in
        the project's root."""
        return cli(args, {**self.env, **(env or {})}, self.root, timeout)

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(MAIN), *args],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
        )

    def worker(self, session: str, *extra: str, timeout: float = 60, env: dict | None = None):
        return self.run("--config", str(self.config), "--session", session, *extra, timeout=timeout, env=env)


# The commands `Project.cli` runs in this process: the parent's, never the worker's `run` or `start`.
PARENT_COMMANDS = tuple(c for c in SUBCOMMANDS if c not in ("run", "start"))


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:  # contextlib.chdir from Python 3.11 on
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _stdin(stream: io.StringIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


class _Hung(Exception):
    pass


@contextlib.contextmanager
def _deadline(argv: list[str], timeout: float | None) -> Iterator[None]:
    """subprocess.TimeoutExpired when the block takes longer than `timeout` (a blocking open of a
    FIFO included: the alarm interrupts the system call)."""
    if timeout is None:
        yield
        return

    def expired(_signum: int, _frame: object) -> None:
        raise _Hung

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    except _Hung:
        raise subprocess.TimeoutExpired(argv, timeout) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cli(
    args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """A parent's command in this process, as `Project.run` runs it in a child: `worker.cli.main(args)`
    with `env` as os.environ, `cwd` as the working directory, stdin empty, and stdout and stderr
    captured; a SystemExit (-h) is its exit code. All of it is put back afterwards, also when the
    command raises (the exception propagates: in a process it would have been a traceback).
    `timeout` (main thread only) raises subprocess.TimeoutExpired from a command that hangs, a
    blocking open of a FIFO included. The parent's commands only, and the worker's `run` or `start`
    only where it stops at a usage or config error: past its preparation `run` installs signal
    handlers and makes its process a subreaper, which must not happen to the test process."""
    from worker import cli as worker_cli

    argv = [sys.executable, str(MAIN), *args]
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), _cwd(cwd), _stdin(io.StringIO()), _deadline(argv, timeout):
        if not args or args[0] not in PARENT_COMMANDS:
            assert _stops_before_it_runs(args), f"the worker would run in this process: {list(args)}"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = worker_cli.main(list(args))
            except SystemExit as exc:
                if isinstance(exc.code, str):  # as the interpreter does: the text on stderr, exit 1
                    print(exc.code, file=sys.stderr)
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _stops_before_it_runs(args: Sequence[str]) -> bool:
    """Whether the worker's command line ends in a usage or config error (or help) before anything
    runs: the grammar and the worker's own preparation, tried with their output thrown away."""
    from worker import clirun
    from worker.cliargs import parse_args
    from worker.errors import SamocodeError

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            parsed = parse_args(list(args))
            if parsed.command in ("run", "start"):
                clirun._prepare(parsed)
        except (SamocodeError, SystemExit):
            return True
    return False


def base_env(home: Path, python_bin: Path | None = None) -> dict[str, str]:
    """The real environment minus anything that could reach a real account or config.

    `python_bin`, a folder holding only `python3`, goes first on PATH: the fake CLIs start with
    `#!/usr/bin/env python3`, and a version manager's shim there costs ~100 ms per child."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    if python_bin is not None:
        env["PATH"] = os.pathsep.join(p for p in (str(python_bin), env.get("PATH")) if p)
    env.update(
        HOME=str(home),
        SAMOCODE_ENV_FILE=str(home / "no-such.env"),
        GIT_AUTHOR_NAME="samocode-test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="samocode-test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


@pytest.fixture(scope="session")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `python3` -> this interpreter (the fakes need only the standard library)."""
    folder = tmp_path_factory.mktemp("python-bin")
    (folder / "python3").symlink_to(sys.executable)
    return folder


@pytest.fixture(scope="session")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with one commit, made once and copied into each project."""
    repo = tmp_path_factory.mktemp("repo-template") / "repo"
    repo.mkdir()
    env = base_env(tmp_path_factory.mktemp("template-home"))
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    return repo


@pytest.fixture
def project(tmp_path: Path, python_bin: Path, repo_template: Path) -> Project:
    home = tmp_path / "home"
    home.mkdir()
    main_repo = tmp_path / "repo"
    shutil.copytree(repo_template, main_repo, symlinks=True)
    env = base_env(home, python_bin)
    config = tmp_path / "repo" / ".samocode"
    config.write_text(
        f"MAIN_REPO={main_repo}\nWORKTREES={tmp_path / 'wt'}\nSESSIONS={tmp_path / 'sessions'}\n"
    )
    scenario = tmp_path / "scenario.json"
    record = tmp_path / "record.jsonl"
    env.update(
        CLAUDE_PATH=str(FAKES / "fake_claude.py"),
        FAKE_SCENARIO=str(scenario),
        FAKE_RECORD=str(record),
        SAMOCODE_RETRY_DELAY="0.05",
        SAMOCODE_KILL_GRACE="1",
        SAMOCODE_STALL_ITERATIONS="0",
        SAMOCODE_TEST_WATCH_POLL="0.1",  # `watch` looks 10 times a second, not once
    )
    p = Project(tmp_path, main_repo, tmp_path / "wt", tmp_path / "sessions", config, env, scenario, record)
    p.scenario()
    return p


# -- how many test processes -------------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one process more than the cores this process may use. Most tests spend their time
    waiting on a child process, a real CLI or a timeout; measured on 2 cores, the whole suite took
    241 s with 2 processes, 212 s with 3 and 212 s with 4."""
    return len(os.sched_getaffinity(0)) + 1


# -- the summary line of the real-CLI matrix (tests/e2e/conftest.py marks each test with its set) --------

_MATRIX: dict[str, str] = {}  # version set name -> its versions, or why it was skipped


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == "real_cli_matrix":
            name, what = value
            _MATRIX[name] = what


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MATRIX:
        lines = [
            f"{name}: {what}" for name, what in sorted(_MATRIX.items(), key=lambda kv: kv[0] != "pinned")
        ]
        terminalreporter.write_line("real-CLI matrix: " + "; ".join(lines))
