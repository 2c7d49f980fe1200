"""The worker's own commands: `run` (the loop, in the foreground), `start` (detached) and `stop`.

Part of the CLI layer: it sets up the run's logging and signal handlers, builds the `Runtime`,
prints the iteration lines and maps the run's outcome to an exit code.
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
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from worker.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from worker.runtime import Outcome

log = logging.getLogger("samocode")
# How a run ends that is what it is for, or what it expects: on stdout; every other ending on stderr.
_ON_STDOUT = (ExitCode.DONE, ExitCode.WAITING, ExitCode.LIMIT)


def last_line(outcome: Outcome) -> tuple[str, bool]:
    """What `samocode run` prints of how it ended, and whether that goes to stdout (else stderr)."""
    return f"samocode: {outcome.code.name.lower()}: {outcome.message}", outcome.code in _ON_STDOUT


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


def start(args: argparse.Namespace) -> int:
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


def stop(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
    from worker import runrecord

    started_at = runrecord.now_iso()
    settings, project, provider, paths, exists = _prepare(args)

    from worker.loop import run_session
    from worker.notify import make_notifier
    from worker.proctree import become_subreaper
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
        ready=_readiness(args.ready_fd),
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
    line, on_stdout = last_line(outcome)
    _say(line, sys.stdout if on_stdout else sys.stderr)
    return int(outcome.code)


def _readiness(fd: int | None) -> Callable[[], None]:
    """The callback that tells `start` the worker got going; without `start`'s pipe there is no one to
    tell, and launch is not imported (start-up time)."""
    if fd is None:
        return lambda: None
    from worker import launch

    return launch.readiness(fd)


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
