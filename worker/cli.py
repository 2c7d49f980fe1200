"""The command line: parse, call the core, print the result, and map outcomes to exit codes.

The only layer that prints. Its parts: the grammar (`cliargs`), the worker's own commands
(`clirun`: run, start, stop) and, here, `main` with the parent's commands: status, watch,
approve, resume, answer, unblock, and config, sessions, doctor. Each command imports what it
needs when it runs: `status` is asked for every minute, and most of the worker is not needed for it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker.cliargs import parse_args
from worker.errors import ConfigError, ExitCode, SamocodeError

if TYPE_CHECKING:
    from worker.config import Project
    from worker.session import SessionPaths


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(args_list)
        if args.command in ("run", "start", "stop"):
            from worker import clirun

            return {"run": clirun.run, "start": clirun.start, "stop": clirun.stop}[args.command](args)
        return _COMMANDS[args.command](args)
    except SamocodeError as exc:
        print(error_lines(exc), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("samocode: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def error_lines(exc: SamocodeError) -> str:
    """What any command prints of an error that ends it (on stderr): `samocode: ` before each line."""
    return "\n".join(f"samocode: {line}" for line in str(exc).splitlines() or [type(exc).__name__])


# The commands that write nothing: what they made needs no collecting when the process ends.
_READ_ONLY = ("status", "watch", "sessions")


def entry() -> None:
    """The process's entry point (the console script, `python -m worker` and main.py)."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in _READ_ONLY:
        # Frozen objects are left out of the interpreter's last collection on the way out: 8 ms of the
        # ~70 a `status` takes, which a parent asks for every minute.
        gc.freeze()
    sys.exit(code)


# -- the parent's commands -----------------------------------------------------------------------------


def _session(args: argparse.Namespace) -> tuple[Project, SessionPaths]:
    """The project and the existing session the command names (config problems first, all at once)."""
    from worker import session
    from worker.config import gather, load_project

    project, _ = gather(lambda: load_project(args.config), lambda: session.check_name(args.session))
    return project, session.find_existing(project.sessions, args.session)


def _status(args: argparse.Namespace) -> int:
    from worker import status, statusbuild

    project, paths = _session(args)
    report = statusbuild.report(project, paths, os.environ)
    print(status.render_json(report) if args.json else status.render_text(report))
    return 0


def _watch(args: argparse.Namespace) -> int:
    import time

    from worker import session, status, statusbuild, watch
    from worker.config import gather, load_project

    project, _ = gather(lambda: load_project(args.config), lambda: session.check_name(args.session))
    started = time.monotonic()
    paths = watch.await_session(project.sessions, args.session, min(watch.START_GRACE, args.timeout))
    result = watch.watch(paths, max(0.0, args.timeout - (time.monotonic() - started)))
    head = {"reason": result.reason, "waited_s": round(time.monotonic() - started, 1)}
    report = statusbuild.report(project, paths, os.environ)
    if args.json:
        print(status.render_json(report, extra={"watch": head}))
    else:
        line = f"Watch: {head['reason']} after {head['waited_s']:g}s"
        print(line + "\n" + status.render_text(report, status.MAX_BYTES - len(line) - 1))
    return 0


def _changed(message: str) -> int:
    print(f"samocode: {message}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    import datetime as dt

    from worker import commands

    _, paths = _session(args)
    return _changed(commands.approve(paths, dt.datetime.now()))


def _resume(args: argparse.Namespace) -> int:
    import datetime as dt

    from worker import commands

    _, paths = _session(args)
    return _changed(commands.resume(paths, args.goal, dt.datetime.now()))


def _unblock(args: argparse.Namespace) -> int:
    import datetime as dt

    from worker import commands

    _, paths = _session(args)
    return _changed(commands.unblock(paths, args.note, dt.datetime.now()))


def _answer(args: argparse.Namespace) -> int:
    import datetime as dt

    from worker import commands

    _, paths = _session(args)
    now = dt.datetime.now()
    given = parse_sets(args.set or [])
    if not given and not args.accept_suggestions:
        raise ConfigError("answer needs --accept-suggestions or at least one --set N=TEXT")
    return _changed(commands.answer(paths, given, args.accept_suggestions, now))


def parse_sets(values: list[str]) -> dict[int, str]:
    """`--set N=TEXT` values; a malformed one is a usage error."""
    from worker.commands import one_line
    from worker.qa import WAITING

    given: dict[int, str] = {}
    for value in values:
        number, sep, answer = value.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise ConfigError(f"--set needs N=TEXT with N a question number from 1, got '{value}'")
        n = int(number)
        if n in given:
            raise ConfigError(f"--set gives question {n} twice")
        text = one_line(answer, f"--set {n}=")
        if WAITING in text:
            raise ConfigError(f"--set {n}: the answer may not contain '{WAITING}'")
        given[n] = text
    return given


# -- settings, sessions, doctor ------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> int:
    from worker.config import load_project, load_settings, settings_files, sources

    load_settings(os.environ)  # every problem first, as a run would report it
    for label, path in zip(("user settings", "checkout .env"), settings_files(os.environ), strict=True):
        print(f"{label}: {path}{'' if path.is_file() else ' (none)'}")
    for key, (value, origin) in sources(os.environ).items():
        print(f"{key}={value}  ({origin})")
    if args.config:
        project = load_project(args.config)
        print(f"MAIN_REPO={project.main_repo}\nWORKTREES={project.worktrees}\nSESSIONS={project.sessions}")
    return 0


def _sessions(args: argparse.Namespace) -> int:
    import json

    from worker import session_list
    from worker.config import load_project

    project = load_project(args.config)
    entries = session_list.list_sessions(project.sessions)
    if args.json:
        print(json.dumps(session_list.as_json(entries), ensure_ascii=False))
    else:
        print(session_list.render_text(project.sessions, entries))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from worker import doctor

    report = doctor.diagnose(os.environ, args.config, args.session)
    for line in doctor.render(report):
        print(line)
    return int(report.code)


_COMMANDS = {
    "status": _status,
    "watch": _watch,
    "approve": _approve,
    "resume": _resume,
    "unblock": _unblock,
    "answer": _answer,
    "config": _config,
    "sessions": _sessions,
    "doctor": _doctor,
}
