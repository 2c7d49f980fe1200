"""The iteration loop: one child per iteration, a decision per signal, until a stop.

It wires the other modules together and applies what `phases.decide` returns. Side effects
(files, processes, notifications) happen here and in the modules it calls; the policy does not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker import gitops, overview, process, prompt
from worker.config import Project, Settings
from worker.errors import ExitCode
from worker.notify import Notifier, format_event
from worker.overview import OverviewError
from worker.phases import PHASES, Decision, Phase, SessionState, Verdict, blocked_for, cap_reached, decide
from worker.providers import FATAL, Failure, IterationRecord, IterationRequest, Provider
from worker.session import Lease, SessionPaths
from worker.signals import (
    InvalidSignal,
    Need,
    WaitFor,
    append_history,
    clear_signal,
    read_history,
    read_signal,
)

# Files the worker itself rewrites every iteration; they do not count as the agent's progress.
_NOT_PROGRESS = {"_signal.json", "_signal_history.jsonl", "session.log", "_logs"}


@dataclass(frozen=True)
class RunOptions:
    task: str = ""
    dive: str = ""
    max_iterations: int = 0  # 0 = no limit for this run


@dataclass(frozen=True)
class Outcome:
    code: ExitCode
    message: str
    session_dir: Path | None = None


@dataclass(frozen=True)
class IterationReport:
    """One console line's worth of facts about a finished iteration."""

    total: int
    phase: Phase
    verdict: str
    duration: float
    cost_usd: float | None
    detail: str = ""


@dataclass
class Runtime:
    """Collaborators of the loop; tests and the CLI pass their own."""

    settings: Settings
    provider: Provider
    notifier: Notifier
    stop: threading.Event
    report: Callable[[IterationReport], None] = lambda _r: None
    log: Callable[[str], None] = lambda _m: None
    now: Callable[[], dt.datetime] = dt.datetime.now
    stop_code: list[ExitCode] = field(default_factory=lambda: [ExitCode.INTERRUPTED])


def _stamp(rt: Runtime) -> str:
    return rt.now().strftime("%Y-%m-%d %H:%M")


def _flow(rt: Runtime, total: int, event: str) -> str:
    return f"[{total:03d} @ {rt.now():%m-%d %H:%M}] {event}"


# ---------------------------------------------------------------------------------------------


class Session:
    """A session folder being worked on by this worker."""

    def __init__(self, paths: SessionPaths, project: Project, rt: Runtime) -> None:
        self.paths = paths
        self.project = project
        self.rt = rt
        self.working_dir = project.main_repo
        self.branch = ""

    # -- set-up ------------------------------------------------------------------------------

    def create(self, options: RunOptions) -> None:
        """A new session: folder, worktree, overview. No model call."""
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        self._attach_worktree(create=True)
        self._write_template(options)

    def _write_template(self, options: RunOptions) -> None:
        where = f" in worktree {self.working_dir} on branch {self.branch}" if self.branch else ""
        text = overview.render_new(
            self.paths.name,
            _stamp(self.rt),
            str(self.working_dir),
            options.task,
            options.dive,
            _flow(self.rt, 0, f"Session created{where} -> _overview.md"),
        )
        with overview.locked(self.paths.dir):
            overview.write_atomic(self.paths.overview, text)

    def attach(self, options: RunOptions) -> None:
        self._attach_worktree(create=False)
        if not self.paths.overview.exists() and not self.paths.overview.is_symlink():
            self._write_template(options)  # a bare folder: nothing to lose

    def _attach_worktree(self, create: bool) -> None:
        repo = self.project.main_repo
        if not gitops.is_repo(repo):
            return
        prefix = self.rt.settings.branch_prefix.strip("/")
        branch = f"{prefix}/{self.paths.name}" if prefix else self.paths.name
        path = self.project.worktrees / self.paths.dir.name
        if create or path.exists():
            tree = gitops.ensure_worktree(repo, path, branch)
            self.working_dir, self.branch = tree.path, tree.branch
        else:
            self.branch = branch
            # An existing session whose worktree was removed: recreate it on its branch.
            tree = gitops.ensure_worktree(repo, path, branch)
            self.working_dir = tree.path

    # -- state ---------------------------------------------------------------------------------

    def read(self) -> overview.Overview:
        return overview.parse(overview.read_text(self.paths.overview))

    def history(self) -> list[dict]:
        return read_history(self.paths.history, limit=200)


# ---------------------------------------------------------------------------------------------


def run_session(
    paths: SessionPaths, exists: bool, project: Project, options: RunOptions, rt: Runtime
) -> Outcome:
    """Work on the session until done, waiting, blocked, failed, interrupted or the run's limit."""
    session = Session(paths, project, rt)
    lease = Lease(paths)
    if exists:
        lease.acquire()
        session.attach(options)
    else:
        session.create(options)
        lease.acquire()
    try:
        return _Loop(session, options, rt).run()
    finally:
        lease.release()


class _Loop:
    def __init__(self, session: Session, options: RunOptions, rt: Runtime) -> None:
        self.s = session
        self.paths = session.paths
        self.options = options
        self.rt = rt
        self.settings = rt.settings
        self.iterations_run = 0
        self.last_print: str = ""
        self.unchanged = 0
        self.spend: dict[str, float] | None = None

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._recover()
        try:
            ov = self.s.read()
            state = ov.state()
        except OverviewError as exc:
            return self._stop_unreadable(exc.reason)
        gate = self._gate(ov, state)
        if gate is not None:
            return gate
        self.last_print = self._progress_print()
        while True:
            try:
                ov = self.s.read()
                state = ov.state()
            except OverviewError as exc:
                return self._stop_unreadable(exc.reason)
            if reason := cap_reached(state):
                return self._apply(state, blocked_for(state, reason), None, {})
            if budget := self._over_budget(state):
                return self._apply(state, blocked_for(state, budget, Need.BUDGET), None, {})
            if self.options.max_iterations and self.iterations_run >= self.options.max_iterations:
                return Outcome(
                    ExitCode.LIMIT, f"stopped after {self.iterations_run} iterations (--max-iterations)"
                )
            outcome = self._iteration(state)
            if outcome is not None:
                return outcome

    # -- before the first iteration ----------------------------------------------------------

    def _gate(self, ov: overview.Overview, state: SessionState) -> Outcome | None:
        """Stop before spending anything when the session waits for a human."""
        blocked = ov.get("blocked").lower()
        waiting_for = ov.get("waiting for").lower() or self._last_wait()
        if blocked.startswith("yes"):
            reason = ov.get("last action") or "blocked"
            return Outcome(
                ExitCode.BLOCKED,
                f"session is blocked ({reason}); resolve it, then run `unblock` or set 'Blocked: no'",
            )
        if blocked.startswith("waiting"):
            if state.phase is Phase.PLANNING and waiting_for in ("", WaitFor.PLAN_APPROVAL.value):
                return Outcome(ExitCode.WAITING, "the plan waits for approval: run `approve` first")
            if waiting_for == WaitFor.QA_ANSWERS.value and _qa_unanswered(self.paths.qa):
                return Outcome(ExitCode.WAITING, f"questions in {self.paths.qa} still wait for answers")
            self._write(
                {"Blocked": "no", **self._clear_wait(ov)},
                [f"Resumed after waiting for {waiting_for or 'human'}"],
            )
        return None

    def _last_wait(self) -> str:
        for record in reversed(self.s.history()):
            if record.get("decision"):
                return str(record.get("waiting_for") or "")
        return ""

    def _recover(self) -> None:
        """A marker left behind means the last worker died mid-iteration: sweep and record it."""
        marker = self.paths.in_flight
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            data = {}
        tag = str(data.get("tag") or "")
        if tag:
            process.terminate_tree(None, tag, self.settings.kill_grace)
        done = any(r.get("id") == data.get("id") and r.get("decision") for r in self.s.history())
        if not done:
            total = int(data.get("total", 0)) + 1
            append_history(
                self.paths.history,
                {
                    "id": data.get("id"),
                    "time": _stamp(self.rt),
                    "iteration": data.get("iteration"),
                    "total": total,
                    "phase": data.get("phase"),
                    "event": "interrupted",
                    "detail": "the worker stopped during this iteration; it is run again",
                },
            )
            with contextlib.suppress(OverviewError):
                self._write(
                    {}, [_flow(self.rt, total, f"Iteration {total} interrupted (worker stopped); re-running")]
                )
        marker.unlink(missing_ok=True)

    # -- one iteration -----------------------------------------------------------------------

    def _iteration(self, state: SessionState) -> Outcome | None:
        iteration_id = secrets.token_hex(6)
        failures = 0
        invalid = 0
        previous = ""
        started = time.monotonic()
        cost = 0.0
        costs_known = False
        while True:
            record, run, signal_or_error, raw = self._attempt(iteration_id, state, previous)
            if record.cost_usd is not None:
                cost += record.cost_usd
                costs_known = True
            if record.failure is Failure.INTERRUPTED or self.rt.stop.is_set():
                return self._interrupted(state, iteration_id, record)
            if not isinstance(signal_or_error, InvalidSignal):
                decision = decide(state, signal_or_error)
                extra = {"signal": raw, "failure": record.failure.value if record.failure else None}
                return self._finish(
                    state, decision, record, iteration_id, started, cost if costs_known else None, extra
                )
            reason = signal_or_error.reason
            self._history_attempt(iteration_id, state, record, run, reason)
            if record.failure in FATAL:
                return self._provider_failed(state, record, started, cost, costs_known)
            if record.failure is Failure.USAGE_LIMIT:
                waited = self._wait_for_usage(state, record)
                if waited is not None:
                    return waited
                previous = ""
                continue
            if record.failure is None:
                invalid += 1
                if invalid > 1:  # a valid-looking run that twice left no usable signal
                    decision = blocked_for(state, f"no valid signal after 2 attempts: {reason}")
                    return self._finish(
                        state, decision, record, iteration_id, started, cost if costs_known else None, {}
                    )
                previous = f"the worker could not use its signal: {reason}"
            else:
                failures += 1
                if failures > self.settings.max_retries:
                    return self._provider_failed(state, record, started, cost, costs_known)
                previous = f"{record.failure.value}: {record.message[:200]}"
            delay = self.settings.retry_delay
            if record.failure is Failure.OVERLOADED:
                delay *= 2 ** (failures - 1)
            self.rt.log(f"attempt failed ({previous}); retrying in {delay:g} s")
            if self.rt.stop.wait(delay):
                return self._interrupted(state, iteration_id, record)

    def _attempt(self, iteration_id: str, state: SessionState, previous: str):
        paths = self.paths
        clear_signal(paths.signal)
        agent = prompt.load_agent(state.phase)
        provider = self.rt.provider
        ctx = prompt.Context(
            session_dir=paths.dir,
            working_dir=self.s.working_dir,
            main_repo=self.s.project.main_repo,
            branch=self.s.branch,
            phase=state.phase,
            iteration=state.iteration,
            total=state.total,
            now=_stamp(self.rt),
            time_limit=provider.timeout,
            provider=provider.name,
            task=self.options.task,
            dive=self.options.dive,
            previous_attempt=previous,
        )
        paths.logs.mkdir(exist_ok=True)
        prepared = provider.prepare(
            IterationRequest(
                prompt.load_workflow(), prompt.session_context(ctx), agent, self.s.working_dir, paths.logs
            )
        )
        base = paths.logs / f"{self.rt.now():%m-%d-%H%M}-{state.total + 1:03d}-{state.phase.value}.jsonl"
        log_path, log_fd = process.open_exclusive(base)
        stderr_path = log_path.with_suffix(".stderr")
        prompt_path = log_path.with_suffix(".prompt.md")
        prompt_path.write_text(prepared.prompt, encoding="utf-8")
        stderr_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        parser = provider.parser()
        limits = process.Limits(
            timeout=provider.timeout,
            idle_timeout=self.settings.idle_timeout,
            kill_grace=self.settings.kill_grace,
        )

        def on_spawn(pid: int, tag: str) -> None:
            marker = {
                "id": iteration_id,
                "pid": pid,
                "tag": tag,
                "phase": state.phase.value,
                "iteration": state.iteration,
                "total": state.total,
                "worker": os.getpid(),
            }
            _write_json_atomic(paths.in_flight, marker)

        try:
            run = process.run(
                process.Invocation(prepared.argv, prepared.env, self.s.working_dir, prompt_path),
                log_fd,
                stderr_fd,
                limits,
                parser.feed,
                self.rt.stop,
                on_spawn,
                markers=parser.markers,
            )
        finally:
            os.close(log_fd)
            os.close(stderr_fd)
        record = parser.finish(run, _tail(stderr_path))
        try:
            sig, raw = read_signal(paths.signal)
            result: object = sig
        except InvalidSignal as exc:
            result, raw = exc, None
        self.rt.log(
            f"attempt {log_path.name}: {run.ending.value} exit={run.exit_code} "
            f"{run.stdout_bytes} bytes in {run.duration:.1f}s"
            + (f", {run.leftovers} leftover processes killed" if run.leftovers else "")
        )
        return record, run, result, raw

    # -- outcomes ------------------------------------------------------------------------------

    def _finish(
        self,
        state: SessionState,
        decision: Decision,
        record: IterationRecord | None,
        iteration_id: str,
        started: float,
        cost: float | None,
        extra: dict,
    ) -> Outcome | None:
        self.iterations_run += 1
        if decision.verdict is Verdict.CONTINUE and decision.phase is state.phase:
            stalled = self._stalled()
            if stalled:
                decision = blocked_for(state, stalled, Need.HUMAN_DECISION)
        outcome = self._apply(
            state, decision, record, {"id": iteration_id, "iteration_cost_usd": cost, **extra}
        )
        self.rt.report(
            IterationReport(
                decision.total,
                state.phase,
                decision.verdict.value
                + (f" -> {decision.phase.value}" if decision.phase is not state.phase else ""),
                time.monotonic() - started,
                cost,
                decision.reason if decision.verdict in (Verdict.BLOCKED, Verdict.WAITING) else "",
            )
        )
        self.paths.in_flight.unlink(missing_ok=True)
        return outcome

    def _apply(
        self, state: SessionState, decision: Decision, record: IterationRecord | None, extra: dict
    ) -> Outcome | None:
        """History first, then the overview: a crash in between is repaired on the next start."""
        this = record.cost_usd if record is not None and record.cost_usd is not None else 0.0
        total_cost = self._spend()[0] + this
        entry = {
            "time": _stamp(self.rt),
            "iteration": state.iteration,
            "total": decision.total,
            "phase": state.phase.value,
            "phase_after": decision.phase.value,
            "decision": decision.verdict.value,
            "accepted": decision.accepted,
            "converted": decision.converted or None,
            "reason": decision.reason or None,
            "waiting_for": decision.waiting_for.value if decision.waiting_for else None,
            "needs": decision.needs.value if decision.needs and decision.verdict is Verdict.BLOCKED else None,
            "total_cost_usd": round(total_cost, 6),
            **_record_fields(record),
            **extra,
        }
        self._log(entry)
        fields: dict[str, str | None] = {
            "Phase": decision.phase.value,
            "Iteration": str(decision.iteration),
            "Total Iterations": str(decision.total),
            "Blocked": "no",
        }
        if total_cost:
            fields["Total Cost"] = f"${total_cost:.2f}"
        flow: list[str] = []
        code: ExitCode | None = None
        message = ""
        if decision.verdict is Verdict.CONTINUE:
            if decision.phase is not state.phase:
                flow.append(
                    _flow(self.rt, decision.total, f"Phase {state.phase.value} -> {decision.phase.value}")
                )
                self._notify("phase_change", decision.phase, f"{state.phase.value} -> {decision.phase.value}")
        elif decision.verdict is Verdict.DONE:
            code, message = ExitCode.DONE, decision.reason or "session complete"
            flow.append(_flow(self.rt, decision.total, "Session done -> _overview.md"))
        elif decision.verdict is Verdict.WAITING:
            assert decision.waiting_for is not None
            fields["Blocked"] = "waiting_human"
            fields["Waiting For"] = decision.waiting_for.value
            if decision.converted:
                fields["Last Action"] = decision.converted
            fields["Next"] = _next_for(decision.waiting_for)
            code, message = (
                ExitCode.WAITING,
                f"waiting for {decision.waiting_for.value}: {decision.reason}".rstrip(": "),
            )
            flow.append(_flow(self.rt, decision.total, f"Waiting for {decision.waiting_for.value}"))
        else:
            fields["Blocked"] = "yes"
            fields["Last Action"] = f"Blocked: {decision.reason}"
            needs = decision.needs.value if decision.needs else Need.HUMAN_DECISION.value
            fields["Next"] = f"Human: {needs.replace('_', ' ')}, then unblock"
            code, message = ExitCode.BLOCKED, f"blocked ({needs}): {decision.reason}"
            flow.append(_flow(self.rt, decision.total, f"Blocked: {decision.reason}"))
        if decision.verdict is not Verdict.WAITING:
            fields["Waiting For"] = None  # cleared only where the field exists
        try:
            self._write(fields, flow)
        except OverviewError as exc:
            return self._stop_unreadable(exc.reason)
        if code is None:
            return None
        self._notify(code.name.lower() if code is not ExitCode.DONE else "done", decision.phase, message)
        return Outcome(code, message, self.paths.dir)

    def _stop_unreadable(self, reason: str) -> Outcome:
        """The overview is unusable: record the reason everywhere except the overview itself."""
        append_history(self.paths.history, {"time": _stamp(self.rt), "event": "blocked", "reason": reason})
        self._notify("blocked", None, reason)
        return Outcome(ExitCode.BLOCKED, f"blocked: {reason}", self.paths.dir)

    def _provider_failed(
        self, state: SessionState, record: IterationRecord, started: float, cost: float, known: bool
    ) -> Outcome:
        what = record.failure.value if record.failure else "failure"
        message = f"{self.rt.provider.name} failed ({what}): {record.message}".strip()
        if record.failure in FATAL:
            message += " (not retried)"
        else:
            message += f" after {self.settings.max_retries + 1} attempts"
        with contextlib.suppress(OverviewError):
            self._write(
                {
                    "Last Action": f"Provider failed: {what}",
                    "Next": "Fix the provider problem, then run samocode again",
                },
                [_flow(self.rt, state.total + 1, f"Provider failed ({what}); worker stopped")],
            )
        self.paths.in_flight.unlink(missing_ok=True)
        self._notify("failed", state.phase, message)
        self.rt.report(
            IterationReport(
                state.total + 1,
                state.phase,
                f"failed ({what})",
                time.monotonic() - started,
                cost if known else None,
                record.message[:120],
            )
        )
        return Outcome(ExitCode.PROVIDER_FAILED, message, self.paths.dir)

    def _interrupted(self, state: SessionState, iteration_id: str, record: IterationRecord) -> Outcome:
        code = self.rt.stop_code[0]
        self._log(
            {
                "id": iteration_id,
                "time": _stamp(self.rt),
                "iteration": state.iteration,
                "total": state.total + 1,
                "phase": state.phase.value,
                "event": "interrupted",
                "detail": "SIGTERM" if code is ExitCode.TERMINATED else "Ctrl-C",
                **_record_fields(record),
            },
        )
        with contextlib.suppress(OverviewError):
            self._write(
                {},
                [
                    _flow(
                        self.rt,
                        state.total + 1,
                        f"Worker interrupted ({_signame(code)}); child stopped",
                    )
                ],
            )
        self.paths.in_flight.unlink(missing_ok=True)
        self._notify("interrupted", state.phase, "worker stopped by signal")
        return Outcome(code, "interrupted; the session continues on the next start", self.paths.dir)

    def _wait_for_usage(self, state: SessionState, record: IterationRecord) -> Outcome | None:
        now = time.time()
        until = (
            record.resets_at
            if record.resets_at and record.resets_at > now
            else now + self.settings.usage_wait
        )
        wait = until - now
        clock = dt.datetime.fromtimestamp(until).strftime("%H:%M")
        if wait > self.settings.max_wait:
            decision = Decision(
                Verdict.WAITING,
                state.phase,
                state.iteration,
                state.total,
                reason=f"usage limit resets at {clock}, beyond SAMOCODE_MAX_WAIT",
                waiting_for=WaitFor.USAGE_LIMIT,
                converted="usage limit",
            )
            return self._apply(state, decision, record, {})
        with contextlib.suppress(OverviewError):
            self._write(
                {"Waiting For": WaitFor.USAGE_LIMIT.value, "Next": f"waiting for usage reset until {clock}"},
                [_flow(self.rt, state.total + 1, f"Usage limit hit; waiting until {clock}")],
            )
        self._notify("usage_wait", state.phase, f"resuming at {clock}")
        self.rt.log(f"usage limit: waiting until {clock} ({wait:.0f} s)")
        if self.rt.stop.wait(wait):
            return self._interrupted(state, "", record)
        with contextlib.suppress(OverviewError):
            self._write({"Waiting For": "-", "Next": "Resuming after the usage reset"}, [])
        return None

    # -- rails ---------------------------------------------------------------------------------

    def _over_budget(self, state: SessionState) -> str:
        total, by_phase = self._spend()
        cap = self.settings.max_cost_usd
        if cap and total >= cap:
            return f"session spend ${total:.2f} reached SAMOCODE_MAX_COST_USD ${cap:.2f}"
        phase_cap = self.settings.max_phase_cost_usd
        spent = by_phase.get(state.phase.value, 0.0)
        if phase_cap and spent >= phase_cap:
            limit = f"SAMOCODE_MAX_PHASE_COST_USD ${phase_cap:.2f}"
            return f"phase {state.phase.value} spend ${spent:.2f} reached {limit}"
        return ""

    def _spend(self) -> tuple[float, dict[str, float]]:
        """Spend per phase, read from the history once and then kept up to date by `_log`."""
        if self.spend is None:
            self.spend = {}
            for record in read_history(self.paths.history):
                self._count(record)
        return sum(self.spend.values()), self.spend

    def _count(self, record: dict) -> None:
        cost = record.get("cost_usd")
        if self.spend is not None and isinstance(cost, (int, float)):
            phase = str(record.get("phase"))
            self.spend[phase] = self.spend.get(phase, 0.0) + cost

    def _log(self, record: dict) -> None:
        """Every history line goes through here, so the spend totals never need a re-read."""
        append_history(self.paths.history, record)
        self._count(record)

    def _progress_print(self) -> str:
        parts = [gitops.fingerprint(self.s.working_dir) if self.settings.stall_iterations else ""]
        if not self.settings.stall_iterations:
            return ""
        digest = hashlib.sha256("".join(parts).encode())
        for path in sorted(self.paths.dir.rglob("*")):
            rel = path.relative_to(self.paths.dir)
            if rel.parts[0] in _NOT_PROGRESS or rel.name.startswith(".") or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if rel.name == "_overview.md":
                data = _without_owned_fields(data)
            digest.update(str(rel).encode() + b"\0" + data)
        return digest.hexdigest()

    def _stalled(self) -> str:
        limit = self.settings.stall_iterations
        if not limit:
            return ""
        current = self._progress_print()
        self.unchanged = self.unchanged + 1 if current == self.last_print else 0
        self.last_print = current
        if self.unchanged >= limit:
            return (
                f"stalled: {self.unchanged} iterations in a row with no change to the working tree, "
                "no commit and no change to session files"
            )
        return ""

    # -- small helpers -------------------------------------------------------------------------

    def _write(self, fields: dict[str, str | None], flow: list[str]) -> None:
        overview.update(self.paths.overview, fields, flow)

    def _clear_wait(self, ov: overview.Overview) -> dict[str, str]:
        return {"Waiting For": "-"} if ov.get("waiting for") not in ("", "-") else {}

    def _notify(self, kind: str, phase: Phase | None, detail: str) -> None:
        self.rt.notifier.send(format_event(kind, self.paths.name, phase.value if phase else "?", detail))

    def _history_attempt(
        self,
        iteration_id: str,
        state: SessionState,
        record: IterationRecord,
        run: process.RunResult,
        reason: str,
    ) -> None:
        self._log(
            {
                "id": iteration_id,
                "time": _stamp(self.rt),
                "iteration": state.iteration,
                "total": state.total + 1,
                "phase": state.phase.value,
                "event": "attempt_failed",
                "reason": reason,
                "ending": run.ending.value,
                "exit_code": run.exit_code,
                **_record_fields(record),
            },
        )


def _signame(code: ExitCode) -> str:
    return "SIGTERM" if code is ExitCode.TERMINATED else "Ctrl-C"


def _record_fields(record: IterationRecord | None) -> dict:
    if record is None:
        return {}
    return {
        "failure": record.failure.value if record.failure else None,
        "cost_usd": record.cost_usd,
        "cost_estimated": record.cost_estimated or None,
        "turns": record.turns,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "tokens_cached": record.tokens_cached,
        "message": record.message[:500] or None,
    }


def _next_for(wait: WaitFor) -> str:
    return {
        WaitFor.QA_ANSWERS: "Await answers in _qa.md, then run samocode again",
        WaitFor.PLAN_APPROVAL: "Await plan approval (samocode approve)",
        WaitFor.HUMAN_ACTION: "Await the human action described in Last Action, then run samocode again",
        WaitFor.USAGE_LIMIT: "Run samocode again after the usage limit resets",
    }[wait]


def _qa_unanswered(path: Path) -> bool:
    try:
        return "_waiting_" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _without_owned_fields(data: bytes) -> bytes:
    keep = []
    for line in data.splitlines():
        key = line.split(b":", 1)[0].strip(b" -*").lower()
        if key in {b"phase", b"iteration", b"total iterations", b"blocked", b"waiting for", b"total cost"}:
            continue
        keep.append(line)
    return b"\n".join(keep)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


__all__ = ["PHASES", "IterationReport", "Outcome", "RunOptions", "Runtime", "run_session"]
