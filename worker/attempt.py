"""One attempt of an iteration: the child's prompt and log files, the child's run, its record and
its signal."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from worker import process, prompt, signalcopy
from worker.crashpoint import crash_point
from worker.errors import AttemptBlocked, GitError, InvalidSignal, SessionFileError
from worker.history import stamp
from worker.phases import SessionState
from worker.providers import IterationRecord, IterationRequest, Provider
from worker.runtime import Runtime
from worker.signals import Signal, clear_signal, read_signal
from worker.workspace import Workspace


@dataclass(frozen=True)
class Attempt:
    record: IterationRecord
    run: process.RunResult
    signal: Signal | None
    raw: dict | None
    invalid: str  # why the signal cannot be used; '' when it can
    log_name: str
    source: str = ""  # where the signal came from: file | structured_output | final_message
    source_facts: dict | None = None  # the file's problem when a copy was used; a disagreement

    def signal_facts(self) -> dict:
        """What the decision's history line says about where its signal came from."""
        return {"signal_source": self.source, **(self.source_facts or {})}

    def summary(self) -> str:
        run = self.run
        line = (
            f"attempt {self.log_name}: {run.ending.value} exit={run.exit_code} "
            f"{run.stdout_bytes} bytes in {run.duration:.1f}s"
        )
        return line + (f", {run.leftovers} leftover processes killed" if run.leftovers else "")


@dataclass(frozen=True)
class Request:
    state: SessionState
    task: str
    dive: str
    previous: str  # what this attempt is told about the one before
    tag: str  # carried by every process of the attempt, for the sweep
    now: dt.datetime
    budget_usd: float | None = None  # left of the spend caps, for a CLI that can stop on it


def run_attempt(ws: Workspace, provider: Provider, rt: Runtime, req: Request) -> Attempt:
    """Clear the old signal, write the prompt and log files, run the child (`rt.spawn`), read what
    it left.

    SessionFileError when the iteration's files cannot be written; AttemptBlocked as above."""
    paths, state = ws.paths, req.state
    try:
        ws.ensure_present()
    except GitError as exc:
        raise AttemptBlocked(str(exc)) from None
    try:
        clear_signal(paths.signal)  # only this attempt's verdict counts, never a stale one
    except InvalidSignal as exc:
        raise AttemptBlocked(exc.reason) from None
    ctx = prompt.Context(
        session_dir=paths.dir,
        working_dir=ws.working_dir,
        main_repo=ws.project.main_repo,
        branch=ws.branch,
        phase=state.phase,
        iteration=state.iteration,
        total=state.total,
        now=stamp(req.now),
        time_limit=provider.timeout,
        provider=provider.name,
        task=req.task,
        dive=req.dive,
        previous_attempt=req.previous,
    )
    agent = prompt.load_agent(state.phase)
    base = paths.logs / f"{req.now:%m-%d-%H%M}-{state.total + 1:03d}-{state.phase.value}.jsonl"
    log_fd = stderr_fd = -1
    try:
        paths.logs.mkdir(exist_ok=True)
        prepared = provider.prepare(
            IterationRequest(
                prompt.load_workflow(),
                prompt.session_context(ctx),
                agent,
                ws.working_dir,
                paths.logs,
                req.budget_usd,
            )
        )
        log_path, log_fd = process.open_exclusive(base)
        stderr_path = log_path.with_suffix(".stderr")
        prompt_path = log_path.with_suffix(".prompt.md")
        prompt_path.write_text(prepared.prompt, encoding="utf-8")
        stderr_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if prepared.answer_file is not None:
            prepared.answer_file.unlink(missing_ok=True)  # only this attempt's answer counts
    except OSError as exc:
        for fd in (log_fd, stderr_fd):
            if fd >= 0:
                os.close(fd)
        raise SessionFileError(
            f"cannot write the iteration's files in {paths.logs}: {exc.strerror}"
        ) from None
    parser = provider.parser()
    settings = rt.settings
    limits = process.Limits(
        timeout=provider.timeout, idle_timeout=settings.idle_timeout, kill_grace=settings.kill_grace
    )
    try:
        run = rt.spawn(
            process.Invocation(prepared.argv, prepared.env, ws.working_dir, prompt_path),
            log_fd,
            stderr_fd,
            limits,
            parser.feed,
            rt.stop,
            markers=parser.markers,
            tag=req.tag,
        )
    finally:
        os.close(log_fd)
        os.close(stderr_fd)
    crash_point("child-exited")
    if run.log_error:  # the child ran to its end (or was stopped): nothing of it is left running
        raise SessionFileError(f"cannot write the iteration's log {log_path.name}: {run.log_error}")
    record = parser.finish(run, _tail(stderr_path))
    signal, raw, invalid = _read_signal(paths.signal)
    chosen = _with_copy(signal, raw, invalid, record, prepared.answer_file)
    crash_point("signal-read")
    return Attempt(
        record, run, chosen.signal, chosen.raw, chosen.invalid, log_path.name, chosen.source, chosen.facts
    )


def _with_copy(
    signal: Signal | None, raw: dict | None, invalid: str, record: IterationRecord, answer: Path | None
) -> signalcopy.Chosen:
    """The file's signal, or the CLI's copy of it when the file is unusable (worker/signalcopy.py).
    A failed run has no final answer: only a clean one's copy counts."""
    copy, source = record.signal_copy, record.signal_copy_source
    if answer is not None:
        copy, source = signalcopy.read_answer(answer), signalcopy.FINAL
    if record.failure is not None:
        copy = None
    return signalcopy.choose(signal, raw, invalid, copy, source)


def _read_signal(path: Path) -> tuple[Signal | None, dict | None, str]:
    try:
        signal, raw = read_signal(path)
    except InvalidSignal as exc:
        return None, None, exc.reason
    except RecursionError:  # json.loads on '[[[[…' within the size limit
        return None, None, "_signal.json is nested too deeply"
    except IsADirectoryError:
        return None, None, "_signal.json is a directory, not a file"
    except OSError as exc:
        return None, None, f"cannot read _signal.json: {exc.strerror}"
    return signal, raw, ""


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
