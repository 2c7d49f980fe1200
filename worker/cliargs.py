"""The command line's grammar: the subcommands, their options, and a usage error as one line.

`python main.py --config C --session S` runs the worker (the `run` subcommand is implied).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from worker.errors import ConfigError

SUBCOMMANDS = (
    "run",
    "start",
    "stop",
    "status",
    "watch",
    "approve",
    "resume",
    "answer",
    "unblock",
    "config",
    "doctor",
    "sessions",
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got '{text}'")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got '{text}'")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _session_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="path to the project's .samocode file")
    parser.add_argument("--session", required=True, help="session name (exact folder, dated folder, or new)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument("--task", default="", help="the initial task (written to a new session's overview)")
    parser.add_argument("--dive", default="", help="what to investigate first")
    parser.add_argument("--timeout", type=_positive_float, help="per-iteration time limit in seconds")
    parser.add_argument(
        "--provider", choices=("claude", "codex"), help="AI CLI to run (default: SAMOCODE_PROVIDER or claude)"
    )
    parser.add_argument(
        "--max-iterations", type=_positive_int, default=0, help="stop after N iterations in this run"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="samocode", description="Autonomous session orchestrator for AI coding CLIs.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="run the worker loop on a session (the default)")
    _run_args(run)
    # Set by `start`: the worker says "ready" on this pipe once past the session's gate.
    run.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    start = sub.add_parser(
        "start", help="start the worker detached (output to SESSION_DIR/_worker.out) and return"
    )
    _run_args(start)

    stop = sub.add_parser("stop", help="stop the running worker as Ctrl-C does (resumable)")
    _session_args(stop)
    stop.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="longest wait for it to end (default 60)"
    )

    status = sub.add_parser("status", help="compact report of a session (under 1 KB)")
    _session_args(status)
    status.add_argument("--json", action="store_true", help="the same report as one JSON object")

    watch = sub.add_parser(
        "watch", help="wait until the Status section changes, the worker exits or the timeout passes"
    )
    _session_args(watch)
    watch.add_argument(
        "--timeout", type=_positive_float, default=540.0, help="longest wait in seconds (default 540)"
    )
    watch.add_argument("--json", action="store_true", help="print the report as one JSON object")

    approve = sub.add_parser("approve", help="approve a plan waiting for plan_approval (-> implementation)")
    _session_args(approve)

    resume = sub.add_parser("resume", help="reopen a done session for new work (-> investigation)")
    _session_args(resume)
    resume.add_argument("--goal", required=True, help="what the new work is")

    answer = sub.add_parser("answer", help="fill the waiting answers in _qa.md")
    _session_args(answer)
    answer.add_argument(
        "--accept-suggestions",
        action="store_true",
        help="answer every waiting question with its suggestion (after any --set)",
    )
    answer.add_argument(
        "--set",
        action="append",
        metavar="N=TEXT",
        help="answer question N (the Nth in _qa.md) with TEXT; repeatable",
    )

    unblock = sub.add_parser("unblock", help="clear 'Blocked: yes' with the human's direction")
    _session_args(unblock)
    unblock.add_argument("--note", required=True, help="the human's direction (becomes Next)")

    config = sub.add_parser("config", help="print the resolved settings (secrets masked)")
    config.add_argument("--config", type=Path, help="also check this .samocode file")

    doctor = sub.add_parser("doctor", help="the CLIs, their versions and logins; a session's last stream")
    doctor.add_argument("--config", type=Path, help="the project's .samocode file (needed with --session)")
    doctor.add_argument("--session", help="also report what this session's last attempt's stream lacked")

    sessions = sub.add_parser("sessions", help="one line per session, the most recently active first")
    sessions.add_argument("--config", required=True, type=Path, help="path to the project's .samocode file")
    sessions.add_argument("--json", action="store_true", help="the list as one JSON array")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    return build_parser().parse_args(argv)
