"""The command line's grammar: the subcommands, their options, and a usage error as one line.

`python main.py --config C --session S` runs the worker (the `run` subcommand is implied).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from worker.errors import ConfigError


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


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` finds it: COLUMNS, stdout's terminal, 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's own, made at every add_argument: its width found without importing shutil (and with
    it bz2 and lzma), 2 ms of every `status`."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ):
        super().__init__(
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2, no usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

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


def _run(parser: argparse.ArgumentParser) -> None:
    _run_args(parser)
    # Set by `start`: the worker says "ready" on this pipe once past the session's gate.
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def _stop(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="longest wait for it to end (default 60)"
    )


def _status(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument("--json", action="store_true", help="the same report as one JSON object")


def _watch(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument(
        "--timeout", type=_positive_float, default=540.0, help="longest wait in seconds (default 540)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _resume(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument("--goal", required=True, help="what the new work is")


def _answer(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument(
        "--accept-suggestions",
        action="store_true",
        help="answer every waiting question with its suggestion (after any --set)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="N=TEXT",
        help="answer question N (the Nth in _qa.md) with TEXT; repeatable",
    )


def _unblock(parser: argparse.ArgumentParser) -> None:
    _session_args(parser)
    parser.add_argument("--note", required=True, help="the human's direction (becomes Next)")


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="also check this .samocode file")


def _doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the project's .samocode file (needed with --session)")
    parser.add_argument("--session", help="also report what this session's last attempt's stream lacked")


def _sessions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="path to the project's .samocode file")
    parser.add_argument("--json", action="store_true", help="the list as one JSON array")


# Each subcommand: its help line and what adds its options, in the order `--help` lists them.
_GRAMMAR: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the worker loop on a session (the default)", _run),
    "start": ("start the worker detached (output to SESSION_DIR/_worker.out) and return", _run_args),
    "stop": ("stop the running worker as Ctrl-C does (resumable)", _stop),
    "status": ("compact report of a session (under 1 KB)", _status),
    "watch": ("wait until the Status section changes, the worker exits or the timeout passes", _watch),
    "approve": ("approve a plan waiting for plan_approval (-> implementation)", _session_args),
    "resume": ("reopen a done session for new work (-> investigation)", _resume),
    "answer": ("fill the waiting answers in _qa.md", _answer),
    "unblock": ("clear 'Blocked: yes' with the human's direction", _unblock),
    "config": ("print the resolved settings (secrets masked)", _config),
    "doctor": ("the CLIs, their versions and logins; a session's last stream", _doctor),
    "sessions": ("one line per session, the most recently active first", _sessions),
}
SUBCOMMANDS = tuple(_GRAMMAR)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole grammar, or with `only` just that subcommand's part (what parsing its arguments
    needs: building all twelve costs `status`, which the parent runs every minute, milliseconds)."""
    parser = _Parser(prog="samocode", description="Autonomous session orchestrator for AI coding CLIs.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (help_text, add) in _GRAMMAR.items():
        if only is None or name == only:
            add(sub.add_parser(name, help=help_text))
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    return build_parser(None if argv[0] in ("-h", "--help") else argv[0]).parse_args(argv)
