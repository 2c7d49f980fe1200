"""`samocode doctor`: what would a run use, and is it fit? A report, built without a network call.

For each CLI: where it is (CLAUDE_PATH / CODEX_PATH), the version it reports (`--version`, bounded
by a timeout, stdin closed), whether that version is inside the range the real-CLI matrix tested
(worker/tested.py), and how it is authenticated as far as the environment and the credential files
show. Never a secret: only which variable or file holds one. With a session: what the newest
attempt's stream lacked (the history's `stream_problem`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from worker import tested
from worker.errors import ExitCode

VERSION_TIMEOUT = 15.0  # seconds for `CLI --version`; both answer in well under a second
_VERSION = re.compile(r"\b(\d+\.\d+\.\d+)\b")


@dataclass(frozen=True)
class Auth:
    """How a CLI will authenticate: `kind` is api_key, subscription or none; `source` names where."""

    kind: str
    source: str

    @property
    def text(self) -> str:
        if self.kind == "none":
            return "no credentials found"
        return f"{_AUTH_LABEL[self.kind]} ({self.source})"


_AUTH_LABEL = {"api_key": "API key", "subscription": "subscription"}


@dataclass(frozen=True)
class CliCheck:
    name: str  # claude | codex
    setting: str  # CLAUDE_PATH | CODEX_PATH
    value: str  # the setting's value
    in_use: bool  # the configured provider
    explicit: bool  # its path setting was set (a missing CLI there is a mistake even when not in use)
    path: str | None  # resolved executable, None when not found
    version: str | None  # e.g. 2.1.332, None when it did not say
    problem: str  # why there is no version ("" when there is one)
    auth: Auth

    @property
    def range(self) -> tested.TestedRange:
        return tested.RANGES[self.name]

    @property
    def in_range(self) -> bool | None:
        return None if self.version is None else self.range.contains(self.version)

    def problems(self) -> list[str]:
        """What must change before a run with this CLI goes well; nothing for a CLI not in use."""
        if self.path is None or self.version is None:
            return [f"{self.name}: {self.problem}"] if self.in_use or self.explicit else []
        if not self.in_use:
            return []
        found = []
        if not self.in_range:
            found.append(
                f"{self.name} {self.version} is outside the tested range {self.range.text}: "
                "its stream may not be understood"
            )
        if self.auth.kind == "none":
            found.append(f"{self.name}: no credentials found; {_LOGIN_FIX[self.name]}")
        return found


_LOGIN_FIX = {
    "claude": "run `claude` and /login (subscription) or set ANTHROPIC_API_KEY",
    "codex": "run `codex login` or set OPENAI_API_KEY",
}


@dataclass(frozen=True)
class SessionCheck:
    name: str
    cli: str | None  # "claude 2.1.332" when the history says
    stream_problem: str | None
    attempts: int  # attempt records in the history


@dataclass(frozen=True)
class Report:
    provider: str
    clis: tuple[CliCheck, ...]
    session: SessionCheck | None

    @property
    def problems(self) -> list[str]:
        found = [p for cli in self.clis for p in cli.problems()]
        if self.session and self.session.stream_problem:
            found.append(f"session {self.session.name}: {self.session.stream_problem}")
        return found

    @property
    def code(self) -> ExitCode:
        """0 when all is well; 2 (the code of a configuration problem) when anything needs fixing."""
        return ExitCode.USAGE if self.problems else ExitCode.DONE


Runner = Callable[[list[str], float], tuple[int, str]]


def run_version(argv: list[str], timeout: float) -> tuple[int, str]:
    """(exit code, output) of a short call with stdin closed; -1 and why when it did not finish."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return -1, f"did not answer within {timeout:g} s"
    except OSError as exc:
        return -1, f"cannot run: {exc.strerror}"
    return done.returncode, (done.stdout.strip() or done.stderr.strip())


def check_cli(
    name: str,
    setting: str,
    value: str,
    in_use: bool,
    explicit: bool,
    environ: Mapping[str, str],
    home: Path,
    runner: Runner = run_version,
    timeout: float = VERSION_TIMEOUT,
) -> CliCheck:
    auth = claude_auth(environ, home) if name == "claude" else codex_auth(environ, home)
    path = shutil.which(value, path=environ.get("PATH"))
    if path is None:
        where = "no executable file there" if os.sep in value else "not on PATH"
        problem = f"{setting}={value}: {where}; install the CLI or set {setting} to its path"
        return CliCheck(name, setting, value, in_use, explicit, None, None, problem, auth)
    code, output = runner([path, "--version"], timeout)
    found = _VERSION.search(output) if code == 0 else None
    if found is None:
        said = output.splitlines()[-1][:200] if output else "no output"
        problem = f"`{path} --version` failed: {said}" if code != 0 else f"no version in {said!r}"
        return CliCheck(name, setting, value, in_use, explicit, path, None, problem, auth)
    return CliCheck(name, setting, value, in_use, explicit, path, found.group(1), "", auth)


def claude_auth(environ: Mapping[str, str], home: Path) -> Auth:
    """The CLI's own order: an API key in the environment wins over a subscription login."""
    if environ.get("ANTHROPIC_API_KEY"):
        return Auth("api_key", "ANTHROPIC_API_KEY")
    if environ.get("ANTHROPIC_AUTH_TOKEN"):
        return Auth("api_key", "ANTHROPIC_AUTH_TOKEN")
    if environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return Auth("subscription", "CLAUDE_CODE_OAUTH_TOKEN")
    config_dir = Path(environ["CLAUDE_CONFIG_DIR"]) if environ.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    credentials = config_dir / ".credentials.json"
    data = _json_object(credentials)
    if data is not None and data.get("claudeAiOauth"):
        return Auth("subscription", f"login in {credentials}")
    return Auth("none", "")


def codex_auth(environ: Mapping[str, str], home: Path) -> Auth:
    for variable in ("OPENAI_API_KEY", "CODEX_API_KEY"):
        if environ.get(variable):
            return Auth("api_key", variable)
    codex_home = Path(environ["CODEX_HOME"]) if environ.get("CODEX_HOME") else home / ".codex"
    auth_file = codex_home / "auth.json"
    data = _json_object(auth_file)
    if data is None:
        return Auth("none", "")
    if data.get("tokens"):
        return Auth("subscription", f"ChatGPT login in {auth_file}")
    if data.get("OPENAI_API_KEY"):
        return Auth("api_key", f"key stored in {auth_file}")
    return Auth("none", "")


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_session(name: str, history: list[dict]) -> SessionCheck:
    """From the newest attempt record (a decision or a failed attempt): its CLI and stream problem."""
    attempts = [h for h in history if h.get("decision") or h.get("event") == "attempt_failed"]
    newest = attempts[-1] if attempts else {}
    problem = newest.get("stream_problem")
    cli = newest.get("cli")
    return SessionCheck(
        name,
        cli if isinstance(cli, str) else None,
        problem if isinstance(problem, str) and problem else None,
        len(attempts),
    )


def build(
    settings_provider: str,
    paths: Mapping[str, str],
    explicit: frozenset[str],
    environ: Mapping[str, str],
    home: Path,
    session: SessionCheck | None = None,
    runner: Runner = run_version,
    timeout: float = VERSION_TIMEOUT,
) -> Report:
    """`paths`: {"claude": CLAUDE_PATH value, "codex": CODEX_PATH value}; `explicit`: the settings
    that were set (a CLI the user pointed at must be there even when it is not the provider)."""
    clis = []
    for name, setting in (("claude", "CLAUDE_PATH"), ("codex", "CODEX_PATH")):
        in_use, named = name == settings_provider, setting in explicit
        clis.append(check_cli(name, setting, paths[name], in_use, named, environ, home, runner, timeout))
    return Report(settings_provider, tuple(clis), session)


def render(report: Report) -> list[str]:
    """The report as short lines for the console."""
    lines = [f"provider: {report.provider}"]
    for cli in report.clis:
        use = "" if cli.in_use else " (not in use)"
        if cli.version is None:
            lines.append(f"{cli.name}{use}: {cli.problem}")
            continue
        inside = "tested" if cli.in_range else "NOT tested"
        lines.append(
            f"{cli.name}{use}: {cli.version} at {cli.path} ({inside}: {cli.range.text}); "
            f"auth: {cli.auth.text}"
        )
    if report.session is not None:
        s = report.session
        if not s.attempts:
            lines.append(f"session {s.name}: no attempt recorded yet")
        else:
            used = f" ({s.cli})" if s.cli else ""
            lines.append(f"session {s.name}{used}: last stream: {s.stream_problem or 'understood'}")
    problems = report.problems
    lines += [f"problem: {p}" for p in problems]
    lines.append("all well" if not problems else f"{len(problems)} problem(s)")
    return lines


def diagnose(
    environ: Mapping[str, str],
    config: Path | None = None,
    session_name: str | None = None,
    runner: Runner = run_version,
    timeout: float = VERSION_TIMEOUT,
) -> Report:
    """The report for this environment (settings from it and the `.env` file); with a session, its
    history too. ConfigError for bad settings or `.samocode`, NoSession for an unknown session."""
    from worker import session as sessions
    from worker.config import Settings, gather, load_project, load_settings
    from worker.errors import ConfigError, SessionFileError
    from worker.journal import load_history

    if session_name is not None and config is None:
        raise ConfigError("--session needs --config (the project's .samocode file)")
    loaders: list[Callable[[], object]] = [lambda: load_settings(environ)]
    if config is not None:
        loaders.append(lambda: load_project(config))
    if session_name is not None:
        loaders.append(lambda: sessions.check_name(session_name))
    settings, *rest = gather(*loaders)
    checked = None
    if session_name is not None:
        paths = sessions.find_existing(rest[0].sessions, session_name)
        try:
            history = load_history(paths)
        except SessionFileError as exc:
            raise ConfigError(f"session {paths.dir.name}: {exc}") from None
        checked = check_session(paths.dir.name, history)
    defaults = Settings()
    explicit = frozenset(
        setting
        for setting, value, default in (
            ("CLAUDE_PATH", settings.claude_path, defaults.claude_path),
            ("CODEX_PATH", settings.codex_path, defaults.codex_path),
        )
        if value != default
    )
    home = Path(environ.get("HOME") or Path.home())
    cli_paths = {"claude": settings.claude_path, "codex": settings.codex_path}
    return build(settings.provider, cli_paths, explicit, environ, home, checked, runner, timeout)
