"""Command line: parse arguments, call the core, print, and map outcomes to exit codes.

`python main.py --config C --session S` runs the worker (the `run` subcommand is implied).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from worker.errors import ConfigError, ExitCode, SamocodeError

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
log = logging.getLogger("samocode")


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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(args_list)
        if args.command == "config":
            return _config(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "sessions":
            return _sessions(args)
        if args.command == "run":
            return _run(args)
        if args.command == "start":
            return _start(args)
        if args.command == "stop":
            return _stop(args)
        from worker import commands  # the parent-facing commands

        return commands.dispatch(args)
    except SamocodeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"samocode: {line}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("samocode: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


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


def _prepare(args: argparse.Namespace):
    """Settings, project, provider and session paths of a run: every config problem, before anything
    starts (for `start`, before the worker is detached)."""
    from worker import session
    from worker.config import gather, load_project, load_settings

    overrides = {"provider": args.provider, "timeout_override": args.timeout}
    settings, project, _ = gather(
        lambda: load_settings(os.environ, overrides),
        lambda: load_project(args.config),
        lambda: session.check_name(args.session),
    )
    from worker.providers.registry import get_provider

    provider = get_provider(settings.provider, settings)
    paths, exists = session.resolve(project.sessions, args.session, dt.date.today())
    if paths.dir.exists() and not paths.dir.is_dir():
        raise ConfigError(f"session path {paths.dir} is not a directory")
    if not exists and (project.main_repo / ".git").exists():  # before its folder is made
        from worker import gitops
        from worker.workspace import branch_name

        gitops.check_branch(branch_name(settings.branch_prefix, paths.name))
    return settings, project, provider, paths, exists


def _start(args: argparse.Namespace) -> int:
    from worker import launch

    _, _, _, paths, _ = _prepare(args)
    # The worker gets the folder's own name: it exists by then, so it resolves to exactly this one.
    flags = ["--config", os.path.abspath(args.config), "--session", paths.dir.name]
    for flag, value in (("--task", args.task), ("--dive", args.dive), ("--provider", args.provider)):
        if value:
            flags += [flag, value]
    if args.timeout is not None:
        flags += ["--timeout", repr(args.timeout)]
    if args.max_iterations:
        flags += ["--max-iterations", str(args.max_iterations)]
    result = launch.start([*launch.worker_command(), "run", *flags], paths)
    if isinstance(result, launch.Started):
        print(f"samocode: started worker pid {result.pid} on {result.session_dir} (output: {result.output})")
        return 0
    quiet = result.code in (ExitCode.DONE, ExitCode.WAITING, ExitCode.LIMIT)
    line = result.line if result.line.startswith("samocode: ") else f"samocode: {result.line}"
    print(line, file=sys.stdout if quiet else sys.stderr)
    return result.code


def _stop(args: argparse.Namespace) -> int:
    from worker import launch, session
    from worker.config import gather, load_project

    project, _ = gather(lambda: load_project(args.config), lambda: session.check_name(args.session))
    paths = session.find_existing(project.sessions, args.session)
    result = launch.stop(paths, args.timeout)
    if isinstance(result, launch.NotRunning):
        print(f"samocode: no worker running on {paths.dir}")
    else:
        code = "unknown" if result.code is None else result.code
        print(f"samocode: stopped worker pid {result.pid} (exit {code})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from worker import launch, runrecord

    started_at = runrecord.now_iso()
    settings, project, provider, paths, exists = _prepare(args)

    from worker.loop import run_session
    from worker.notify import make_notifier
    from worker.process import become_subreaper
    from worker.runtime import IterationReport, RunOptions, Runtime

    stop = threading.Event()
    stop_code = [ExitCode.INTERRUPTED]

    codes: dict[int, ExitCode] = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGHUP: ExitCode.HANG_UP}

    def on_signal(signum: int, _frame: object) -> None:
        # A hang-up stops a foreground run like SIGTERM does (its user is gone), told apart in the
        # history; a worker from `samocode start` has no terminal and never gets one.
        stop_code[0] = codes.get(signum, ExitCode.INTERRUPTED)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    become_subreaper()

    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the session folder {paths.dir}: {exc.strerror}") from None
    root = logging.getLogger("samocode")
    root.setLevel(logging.INFO)
    logging.raiseExceptions = False  # a full disk must not print logging's own tracebacks
    handler: logging.Handler = logging.NullHandler()  # not logging's last resort, which prints
    with contextlib.suppress(OSError):  # unwritable: the lease below stops the run with the reason
        handler = logging.FileHandler(paths.session_log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    start = "new" if not exists else "existing"
    log.info("run on %s session %s with %s (pid %d)", start, paths.dir, provider.name, os.getpid())
    _say(f"samocode: {start} session {paths.dir} · provider {provider.name}")

    def report(r: IterationReport) -> None:
        cost = f"${r.cost_usd:.4f}" if r.cost_usd is not None else "$-"
        line = f"[{r.total:03d}] {r.phase.value:<14} {r.verdict:<24} {r.duration:6.1f}s {cost}"
        if r.detail:
            line += f"  {r.detail[:160]}"
        _say(line)
        log.info("iteration %s", line)

    runtime = Runtime(
        settings=settings,
        provider=provider,
        notifier=make_notifier(
            settings.telegram_token, settings.telegram_chat_id, settings.telegram_api_base, cancel=stop
        ),
        stop=stop,
        report=report,
        log=log.info,
        stop_code=stop_code,
        ready=launch.readiness(args.ready_fd),
        ended=runrecord.recorder(paths, started_at, log.warning),
    )
    try:
        outcome = run_session(
            paths, exists, project, RunOptions(args.task, args.dive, args.max_iterations), runtime
        )
    finally:
        root.removeHandler(handler)
        with contextlib.suppress(OSError):
            handler.close()
    # The run has ended and its outcome is recorded: a stop request now has nothing left to stop.
    # Ignored rather than left to the interpreter, which restores the default action while it shuts
    # down, so that a late signal would replace the outcome's exit code with a death by signal.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    stream = sys.stdout if outcome.code in (ExitCode.DONE, ExitCode.WAITING, ExitCode.LIMIT) else sys.stderr
    _say(f"samocode: {outcome.code.name.lower()}: {outcome.message}", stream)
    return int(outcome.code)


def _say(line: str, stream: TextIO | None = None) -> None:
    """A console line. When the console has gone (a closed pipe or terminal), the worker works on:
    its console is a view, and session.log, the history and `status` hold everything."""
    stream = stream or sys.stdout
    try:
        print(line, file=stream, flush=True)
    except OSError:  # BrokenPipeError, or EIO from a terminal that went away
        log.warning("console output gone; working on (see session.log and `samocode status`)")
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):  # nothing left for the interpreter to flush at exit
            os.dup2(devnull, stream.fileno())
        os.close(devnull)
