"""The exception family and the exit codes: one place that says how samocode ends.

Two roots. `SamocodeError` is how a process ends: the CLI catches it once and exits with its code.
`SessionFault` is a session the worker cannot use as it is: its `reason` is one line that the worker
records as the session's blocked reason, and a command turns it into its own answer. A `SessionFault`
that escapes is a bug (a crash with exit 1), never a usage error, so it is not a `SamocodeError`.
(`bootstrap.SetupError` lives in bootstrap.py: that file runs under `python3 -I` from its own folder
before the worker's environment exists and imports nothing from the worker package.)"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every way the worker and its commands end. The parent skill branches on these."""

    DONE = 0  # session reached phase done (or a command succeeded)
    USAGE = 2  # bad command line, `.samocode`, `.env` or settings
    WAITING = 3  # session waits for a human (Q&A answers, plan approval, human action, usage reset)
    BLOCKED = 4  # session is blocked and needs a human decision
    PROVIDER_FAILED = 5  # the AI CLI kept failing after every retry
    LOCKED = 6  # another worker holds the session
    REFUSED = 7  # a parent command does not apply to the session's state; nothing changed
    LIMIT = 8  # --max-iterations reached; the session can simply be started again
    NO_SESSION = 9  # no session by that name (status, watch, stop and the write commands)
    NOT_STARTED = 10  # `start`: the worker neither took the session nor exited in time; it was stopped
    HANG_UP = 129  # SIGHUP: the terminal of a foreground run went away (`start` is immune to it)
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM


class SamocodeError(Exception):
    """A failure a user can read and act on. Caught once, in the CLI."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(SamocodeError):
    """Bad `.samocode`, `.env`, environment or command line. May carry several problems."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SessionLocked(SamocodeError):
    exit_code = ExitCode.LOCKED


class NoSession(SamocodeError):
    """A command that needs an existing session was given a name that matches none."""

    exit_code = ExitCode.NO_SESSION


class NotStarted(SamocodeError):
    """`start`: the detached worker did not get going; it has been stopped."""

    exit_code = ExitCode.NOT_STARTED


class Refused(SamocodeError):
    """A parent command that does not fit the session's state."""

    exit_code = ExitCode.REFUSED


class InstallError(SamocodeError):
    """samocode's own files (workflow.md, agents/) are missing or broken."""


class GitError(SamocodeError):
    """git refused the session's worktree or branch, or the working directory cannot come back."""


class SessionFault(Exception):
    """A session the worker cannot use as it is; `reason` is one line fit for a blocked status."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OverviewError(SessionFault):
    """`_overview.md` cannot be read, parsed, locked or written."""


class SessionFileError(SessionFault):
    """Another session file (history, in-flight marker, an iteration's prompt or log) cannot be
    read or written."""


class InvalidSignal(SessionFault):
    """`_signal.json` is missing or unusable."""


class AttemptBlocked(SessionFault):
    """No attempt can run: `_signal.json` cannot be cleared (it is a directory), or the working tree
    is gone and cannot be recreated. The session blocks with this reason."""
