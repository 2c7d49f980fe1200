"""Record what the real CLIs print for success and each failure class, as replay fixtures.

Runs `claude -p --output-format stream-json --verbose` and `codex exec --json` of every version set
(realcli: pinned and newest) against the scripted loopback server and writes
`tests/fixtures/streams/<cli>-<version>/<class>.jsonl` (the CLI's stdout) and `<class>.meta.json`
(exit code, stderr tail, login, what the worker should conclude). Paths of the recording machine and
the server's port are replaced by fixed placeholders; a string longer than MAX_TEXT is shortened in
place, the line re-encoded with the same keys in the same order.

    .venv/bin/python -m tests.e2e.record_streams [--only claude|codex]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import realcli
from .env import Login, claude_env, codex_env
from .model_server import Action, Fail, FailKind, ModelServer, Reply, Shell

FIXTURES = realcli.REPO / "tests" / "fixtures" / "streams"
RECORDED_WITH = "tests/e2e/record_streams.py"
CLAUDE_ARGS = ("-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions")
CODEX_ARGS = ("exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox")
MAX_TEXT = 400  # characters kept of a long string field
PROMPT = "Run `true` with Bash, then say done."
SCRATCH = "/scratch"  # stands for the recording machine's temporary folder
PORT = 8765  # stands for the server's port


@dataclass(frozen=True)
class Case:
    """One failure class: what the server does, how the CLI is logged in, what the worker should say."""

    name: str
    script: Sequence[Action]
    failure: str | None  # the worker's Failure value
    cost: bool  # the stream reports a cost the worker must record
    resets: bool = False  # the stream says when a limit resets
    login: str = "api_key"  # api_key | oauth | none
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


WORK = [Shell("true"), Reply("done")]
CLAUDE_CASES = (
    Case("success", WORK, None, cost=True, extra_args=("--max-turns", "5")),
    Case(
        "subscription_limit",
        [Fail(FailKind.UNIFIED_REJECTED, reset_in=3600)],
        "usage_limit",
        cost=False,
        resets=True,
        login="oauth",
    ),
    Case("api_key_429", [Fail(FailKind.RATE_LIMIT, retry_after=0)], "usage_limit", cost=False),
    Case("overloaded_529", [Fail(FailKind.OVERLOADED)], "overloaded", cost=False),
    Case("server_error_500", [Fail(FailKind.SERVER_ERROR)], "overloaded", cost=False),
    Case("unauthorized_401", [Fail(FailKind.UNAUTHORIZED)], "auth", cost=False),
    Case(
        "max_turns",
        [Shell("true"), Shell("true"), Reply("done")],
        "max_turns",
        cost=True,
        extra_args=("--max-turns", "1"),
    ),
    Case("not_logged_in", WORK, "auth", cost=False, login="none"),
)
CODEX_CASES = (
    Case("success", WORK, None, cost=False),  # codex reports tokens, never a cost
    Case("usage_limit", [Fail(FailKind.USAGE_LIMIT, reset_in=3600)], "usage_limit", cost=False, resets=True),
    Case("overloaded_503", [Fail(FailKind.OVERLOADED)], "overloaded", cost=False),
    Case("server_error_500", [Fail(FailKind.SERVER_ERROR)], "overloaded", cost=False),
    Case("unauthorized_401", [Fail(FailKind.UNAUTHORIZED)], "auth", cost=False),
)


@dataclass(frozen=True)
class Recording:
    stdout: str
    stderr: str
    exit_code: int


def record_claude(binary: Path, case: Case, tmp: Path) -> Recording:
    with ModelServer(list(case.script)) as server:
        login = Login.OAUTH if case.login == "oauth" else Login.API_KEY
        env = claude_env(tmp / "home", server.port, login=login, max_retries=0, api_timeout_ms=5000)
        if case.login == "none":
            del env["ANTHROPIC_API_KEY"]
        env.update(case.env)
        run = realcli.run_cli([str(binary), *CLAUDE_ARGS, *case.extra_args], _prompt(tmp), tmp / "work", env)
        return _scrub(Recording(run.stdout, run.stderr, run.returncode), tmp, server.port)


def record_codex(binary: Path, case: Case, tmp: Path) -> Recording:
    with ModelServer(list(case.script)) as server:
        env = codex_env(tmp / "home", server.port, max_retries=0)
        argv = [str(binary), *CODEX_ARGS, "-C", str(tmp / "work"), "-"]
        run = realcli.run_cli(argv, _prompt(tmp), tmp / "work", env)
        return _scrub(Recording(run.stdout, run.stderr, run.returncode), tmp, server.port)


def _prompt(tmp: Path) -> Path:
    (tmp / "work").mkdir(exist_ok=True)
    prompt = tmp / "prompt.md"
    prompt.write_text(PROMPT)
    return prompt


def _scrub(rec: Recording, tmp: Path, port: int) -> Recording:
    def clean(text: str) -> str:
        for path in sorted({str(tmp), str(tmp.resolve())}, key=len, reverse=True):
            text = text.replace(path, SCRATCH)
            # claude's project folder names: the cwd with every other character than [A-Za-z0-9] as "-"
            text = text.replace(re.sub(r"[^A-Za-z0-9]", "-", path), SCRATCH.replace("/", "-"))
        text = text.replace(str(realcli.REPO), "/repo")
        for host in ("127.0.0.1", "localhost"):
            text = text.replace(f"{host}:{port}", f"{host}:{PORT}")
        # Anything else under the machine's own folders (the npm cache, a temp file of the CLI's).
        return re.sub(r"(?<![\w.-])/(?:tmp|work|root)\b[^\s\"'\\]*", SCRATCH + "/other", text)

    return Recording(clean(rec.stdout), clean(rec.stderr), rec.exit_code)


def shorten_line(line: str) -> str:
    """The line itself, or when a string in it is longer than MAX_TEXT, re-encoded with it shortened."""
    try:
        event = json.loads(line)
    except ValueError:
        return line
    short = _shorten(event)
    if short == event:
        return line
    return json.dumps(short, ensure_ascii=False, separators=(",", ":"))


def _shorten(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…[shortened]"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}  # dicts keep their key order
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value


def write_fixture(directory: Path, case: Case, rec: Recording) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [shorten_line(line) for line in rec.stdout.splitlines() if line.strip()]
    (directory / f"{case.name}.jsonl").write_text("".join(f"{line}\n" for line in lines))
    meta = {
        "exit_code": rec.exit_code,
        "stderr_tail": rec.stderr[-600:],
        "login": case.login,
        "recorded_with": RECORDED_WITH,
        "expect": {"failure": case.failure, "cost": case.cost, "resets": case.resets},
    }
    (directory / f"{case.name}.meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return directory / f"{case.name}.jsonl"


Recorder = Callable[[Path, Case, Path], Recording]


def record_set(version_set: realcli.VersionSet, clis: Sequence[str]) -> list[Path]:
    written = []
    plan: list[tuple[str, str, Path, Sequence[Case], Recorder]] = [
        ("claude", version_set.claude, realcli.claude_path(version_set), CLAUDE_CASES, record_claude),
        ("codex", version_set.codex, realcli.codex_path(version_set), CODEX_CASES, record_codex),
    ]
    for cli, version, binary, cases, record in plan:
        if cli not in clis:
            continue
        for case in cases:
            with tempfile.TemporaryDirectory(prefix="samocode-rec-") as tmp:
                rec = record(binary, case, Path(tmp))
            path = write_fixture(FIXTURES / f"{cli}-{version}", case, rec)
            size = path.stat().st_size
            print(f"{path.relative_to(realcli.REPO)}: exit {rec.exit_code}, {size} bytes")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="record_streams", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("claude", "codex"), help="record one CLI only")
    args = parser.parse_args(argv)
    clis = (args.only,) if args.only else ("claude", "codex")
    for version_set in realcli.version_sets():
        if isinstance(version_set, realcli.Skipped):
            print(f"{version_set.name}: skipped: {version_set.reason}")
            continue
        record_set(version_set, clis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
