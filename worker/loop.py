"""The iteration loop: one child per iteration, a decision per signal, until a stop.

It wires the other modules together and applies what `phases.decide` returns: `gate` says whether
the session may start, `attempt` runs one child, `changes` builds what each ending writes,
`journal` writes it in crash-safe order (and repairs what a killed worker left), `rails` holds the
budget, the stall breaker, usage waits and backoff; the session lease is `session.Lease`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from dataclasses import dataclass

from worker import changes, gate, gatewait, journal, limitrun, limits, plans, process
from worker import history as hist
from worker.attempt import Attempt, Request, run_attempt
from worker.brief import Briefer
from worker.changes import Change, worker_stop
from worker.config import Project
from worker.crashpoint import crash_point
from worker.errors import AttemptBlocked, ExitCode, OverviewError, SamocodeError, SessionFileError
from worker.journal import stamp
from worker.limitrun import LimitRun
from worker.phases import Decision, Phase, SessionState, Verdict, blocked_for, cap_reached, decide
from worker.providers import FATAL, Failure, IterationRecord
from worker.runtime import IterationReport, Outcome, RunOptions, Runtime
from worker.session import Lease, SessionPaths
from worker.signals import Need, WaitFor
from worker.spend import Spend
from worker.stall import StallBreaker
from worker.workspace import Workspace


def run_session(
    paths: SessionPaths, exists: bool, project: Project, options: RunOptions, rt: Runtime
) -> Outcome:
    """Work on the session until done, waiting, blocked, failed, interrupted or the run's limit.

    The lease comes before anything is created or read, so two workers never both set up or touch
    one session (SessionLocked, exit 6). `exists` only says how the caller found the folder."""
    del exists  # a folder that exists without an overview gets the template as a new one does
    paths.dir.mkdir(parents=True, exist_ok=True)
    lease = Lease(paths)
    try:
        lease.acquire()
    except OSError as exc:
        unlockable = Outcome(ExitCode.BLOCKED, f"cannot lock {paths.lease.name}: {exc.strerror}", paths.dir)
        rt.ended(unlockable, None)  # nobody holds the lease: no other run's record to keep
        return unlockable
    outcome: Outcome | None = None
    failure: BaseException | None = None
    try:
        workspace = Workspace(paths, project, rt.settings.branch_prefix, rt.now)
        workspace.open(options.task, options.dive)
        outcome = _Loop(workspace, options, rt, lease).run()
    except SessionFileError as exc:
        # No child runs any more; a half-begun iteration needs no recovery, it simply runs again.
        journal.clear_marker(paths)
        outcome = Outcome(ExitCode.BLOCKED, exc.reason, paths.dir)
    except BaseException as exc:
        if isinstance(exc, SamocodeError):  # e.g. a missing agent file: no child runs any more
            journal.clear_marker(paths)
        failure = exc
        raise
    finally:
        try:
            rt.ended(outcome, failure)
        finally:
            lease.release()
    return outcome


@dataclass
class _Tries:
    """The attempts of one iteration so far."""

    failures: int = 0  # provider failures counted against SAMOCODE_MAX_RETRIES
    invalid: int = 0  # clean runs that left no usable signal
    usage_hits: int = 0
    waited: float = 0.0  # seconds spent waiting for usage resets
    cost: float = 0.0
    cost_known: bool = False
    previous: str = ""  # what the next attempt is told about the last one
    stream_problem: str = ""  # the last attempt's stream the worker did not understand

    def add(self, record: IterationRecord) -> None:
        if record.cost_usd is not None:
            self.cost += record.cost_usd
            self.cost_known = True
        if record.stream_problem:
            self.stream_problem = record.stream_problem


class _Loop:
    def __init__(
        self, workspace: Workspace, options: RunOptions, rt: Runtime, lease: Lease | None = None
    ) -> None:
        self.lease = lease  # let go and taken back while a human answers at a gate (gatewait)
        self.ws = workspace
        self.paths = workspace.paths
        self.options = options
        self.rt = rt
        self.settings = rt.settings
        self.iterations_run = 0
        self.spend = Spend()
        self.stall = StallBreaker(self.settings.stall_iterations, workspace.working_dir, workspace.paths.dir)
        self.brief = Briefer(self.paths, workspace.project.main_repo.name, rt.notifier, workspace.working_dir)

    def run(self) -> Outcome:
        """Runs until a stop; at a gate with SAMOCODE_GATE_WAIT, waits for the human and goes on."""
        while True:
            outcome = self._run()
            wait = gatewait.Wait(
                self.paths, self.lease, self.settings, self.rt.stop, self.brief, self.rt.ready
            )
            end = wait.at_gate(outcome.code)
            if end is gatewait.End.ANSWERED:
                continue
            if end is gatewait.End.STOPPED:
                return self._outcome(self.rt.stop_code[0], "interrupted while waiting at the gate")
            if end is gatewait.End.LOST:
                return self._outcome(ExitCode.LOCKED, gatewait.LOST_MESSAGE)
            return outcome

    def _run(self) -> Outcome:
        journal.recover(self.paths, self.rt.now(), self._sweep, self.rt.log)
        try:
            journal.check_lock(self.paths)
            ov = self.ws.read()
            state = ov.state()
        except OverviewError as exc:
            return self._stop_unreadable(exc.reason)
        history = journal.load_history(self.paths, limit=journal.RECENT)
        passed = gate.check(ov, state, history, self.paths.qa)
        if passed.stop is not None:
            return self._outcome(passed.stop, passed.message)
        if passed.ended_wait is not None:
            self._note(changes.wait_ended(state, passed.ended_wait, self.rt.now()))
        if (was := gate.phase_set_by_hand(state, history)) is not None:
            self._note(changes.phase_set_by_hand(state, was, self.rt.now()))
        self.spend = journal.load_spend(self.paths)
        self.stall.start(hist.last_decision(history), state.phase.value)
        self.lim = LimitRun(self.settings, self.rt.provider, history, self.rt.clock(), log=self.rt.log)
        while True:
            try:
                ov = self.ws.read()
                state = ov.state()
            except OverviewError as exc:
                return self._stop_unreadable(exc.reason)
            if self.rt.stop.is_set():
                return self._interrupted(state, "", None, "between iterations")
            if reason := cap_reached(state):
                return self._stop(state, worker_stop(state, Verdict.BLOCKED, reason))
            if reason := self.spend.over_budget(state.phase.value, self.settings):
                return self._stop(state, worker_stop(state, Verdict.BLOCKED, reason, Need.BUDGET))
            if self.options.max_iterations and self.iterations_run >= self.options.max_iterations:
                return Outcome(
                    ExitCode.LIMIT, f"stopped after {self.iterations_run} iterations (--max-iterations)"
                )
            self.rt.ready()
            paused = self._pause(state)  # a rate-limit window near its end: wait for its reset first
            if isinstance(paused, Outcome):
                return paused
            if paused:
                continue
            outcome = self._iteration(state, ov.text)
            if outcome is not None:
                return outcome

    # -- one iteration -----------------------------------------------------------------------

    def _iteration(self, state: SessionState, before: str) -> Outcome | None:
        iteration_id, tag = os.urandom(6).hex(), os.urandom(8).hex()  # not `secrets`: 5 ms of imports
        marker = {"id": iteration_id, "tag": tag, "phase": state.phase.value, "iteration": state.iteration}
        journal.write_marker(self.paths, {**marker, "total": state.total, "worker": os.getpid()})
        crash_point("marker")
        self.brief.iteration_started(self.ws.working_dir)
        tries = _Tries()
        started = self.rt.monotonic()
        plan_files = plans.snapshot(self.paths.dir) if state.phase is Phase.PLANNING else None
        while True:
            budget = self.spend.remaining(state.phase.value, self.settings)
            request = Request(
                state, self.options.task, self.options.dive, tries.previous, tag, self.rt.now(), budget
            )
            if (back := self.lim.back_if_due(self.rt.now(), state.total + 1)) is not None:
                self._switched(state, back)
            try:
                attempt = run_attempt(self.ws, self.lim.provider, self.rt, request)
            except AttemptBlocked as exc:
                stop = worker_stop(state, Verdict.BLOCKED, str(exc))
                return self._finish(state, stop, None, iteration_id, started, tries, {})
            self.rt.log(attempt.summary())
            if restored := self.ws.restore_if_broken(before, f"{state.total + 1:03d}-{iteration_id}"):
                self._note(changes.overview_restored(state, *restored, self.rt.now()))
            record = attempt.record
            tries.add(record)
            self.lim.seen(record)
            if record.failure is Failure.INTERRUPTED or self.rt.stop.is_set():
                return self._interrupted(state, iteration_id, record, "")
            if attempt.signal is not None:
                decided = decide(state, attempt.signal)
                extra = {"signal": attempt.raw, **attempt.signal_facts()}
                if plan_files is not None and decided.waiting_for is WaitFor.PLAN_APPROVAL:
                    extra["plan"] = plans.written(self.paths.dir, plan_files)  # what approve approves
                return self._finish(state, decided, record, iteration_id, started, tries, extra)
            facts = {
                "reason": attempt.invalid,
                "ending": attempt.run.ending.value,
                "exit_code": attempt.run.exit_code,
                "duration_s": round(attempt.run.duration, 3),
                "log": attempt.log_name,
                "provider": self.lim.provider.name,
            }
            self._note(changes.attempt_failed(iteration_id, state, record, facts, self.rt.now()))
            crash_point("attempt-failed")
            outcome = self._after_failure(state, iteration_id, attempt, tries, started)
            if outcome is not None:
                return outcome

    def _after_failure(
        self, state: SessionState, iteration_id: str, attempt: Attempt, tries: _Tries, started: float
    ) -> Outcome | None:
        """The policy per failure class; None means: run another attempt."""
        record = attempt.record
        failure = record.failure
        if failure in FATAL:
            return self._provider_failed(state, iteration_id, record, started, tries)
        if failure is Failure.BUDGET:  # the CLI stopped at the budget it was given: never retried
            reason = self.spend.over_budget(state.phase.value, self.settings) or (
                f"{self.lim.provider.name} stopped at the remaining budget: {record.message[:200]}"
            )
            return self._finish(
                state, blocked_for(state, reason, Need.BUDGET), None, iteration_id, started, tries, {}
            )
        if failure is Failure.USAGE_LIMIT:
            tries.usage_hits += 1
            tries.failures, tries.previous = 0, ""
            return self._usage_limit(state, iteration_id, record, tries, started)
        if failure is None:
            tries.invalid += 1
            if tries.invalid > 1:  # a clean run that twice left no usable signal
                stop = blocked_for(state, f"no valid signal after 2 attempts: {attempt.invalid}")
                return self._finish(state, stop, None, iteration_id, started, tries, {})
            tries.previous = f"the worker could not use its signal: {attempt.invalid}"
        else:
            tries.failures += 1
            if tries.failures > self.settings.max_retries:
                return self._provider_failed(state, iteration_id, record, started, tries)
            tries.previous = f"{failure.value}: {record.message[:200]}"
        delay = limits.retry_delay(failure, tries.failures, self.settings)
        self.rt.log(f"attempt failed ({tries.previous}); retrying in {delay:g} s")
        if self.rt.sleep(self.rt.stop, delay):
            return self._interrupted(state, iteration_id, None, "during the retry delay")
        return None

    def _usage_limit(
        self, state: SessionState, iteration_id: str, record: IterationRecord, tries: _Tries, started: float
    ) -> Outcome | None:
        """On the primary: the fallback provider when the reset is far enough (SAMOCODE_FALLBACK_*),
        else the wait. On the fallback: the earlier of the two resets is waited for."""
        now = self.rt.now()
        if self.lim.fallback is not None:
            back, until = self.lim.both_limited(record.resets_at, now, state.total + 1)
            if back is not None:
                self._switched(state, back)
            record = dataclasses.replace(record, resets_at=until)
        else:
            plan = limits.plan_usage_wait(
                record.resets_at, self.rt.clock(), self.settings, tries.usage_hits, tries.waited
            )
            if switched := self.lim.switch_for(plan.until, now, state.total + 1, "usage limit"):
                self._switched(state, switched)
                tries.usage_hits = 0
                return None  # the next attempt runs at once, on the fallback
        return self._wait_for_usage(state, iteration_id, record, tries, started)

    def _pause(self, state: SessionState) -> Outcome | bool:
        """Before an iteration: a window at or above SAMOCODE_PAUSE_AT is waited out as a usage wait
        (or run on the fallback provider). True when it paused or switched, an Outcome to stop."""
        pause = self.lim.pause(self.rt.clock())
        if pause is None:
            return False
        now, text = self.rt.now(), pause.text(self.rt.clock())
        plan = limits.plan_usage_wait(pause.until, self.rt.clock(), self.settings, 1, 0.0)
        if switched := self.lim.switch_for(plan.until, now, state.total + 1, text):
            self._switched(state, switched)
            return True
        if plan.beyond:
            reason = f"{text}, past SAMOCODE_MAX_WAIT ({self.settings.max_wait:g} s)"
            stop = worker_stop(state, Verdict.WAITING, reason, waiting_for=WaitFor.USAGE_LIMIT)
            until = dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds")
            return self._apply(state, stop, None, {"resets_at": until}) or True
        self._note(limitrun.paused(state, pause, plan, now))
        self._notify("paused", state.phase, text.removeprefix("paused "))
        self.rt.log(f"{text} ({plan.seconds:.0f} s)")
        if self._sleep_until(plan.until):
            return self._interrupted(state, "", None, "during the usage wait")
        self._note(changes.usage_resumed("", state, self.rt.now()))
        return True

    def _switched(self, state: SessionState, switched: limitrun.Switched) -> None:
        self._note(switched.change)
        self._notify("switched", state.phase, switched.text.removeprefix("switched "))
        self.rt.log(switched.text)

    def _wait_for_usage(
        self, state: SessionState, iteration_id: str, record: IterationRecord, tries: _Tries, started: float
    ) -> Outcome | None:
        """Wait for the reset, shown in the overview; past SAMOCODE_MAX_WAIT, stop as waiting."""
        plan = limits.plan_usage_wait(
            record.resets_at, self.rt.clock(), self.settings, tries.usage_hits, tries.waited
        )
        if plan.beyond:
            reason = (
                f"usage limit resets at {plan.clock} ({plan.source}), past SAMOCODE_MAX_WAIT "
                f"({self.settings.max_wait:g} s)"
            )
            stop = worker_stop(state, Verdict.WAITING, reason, waiting_for=WaitFor.USAGE_LIMIT)
            until = dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds")
            return self._finish(state, stop, None, iteration_id, started, tries, {"resets_at": until})
        self._note(changes.usage_wait(iteration_id, state, plan, self.rt.now()))
        crash_point("usage-wait")
        self._notify("usage_wait", state.phase, f"resuming at {plan.clock}")
        self.rt.log(f"usage limit: waiting until {plan.clock} ({plan.seconds:.0f} s, {plan.source})")
        if self._sleep_until(plan.until):
            return self._interrupted(state, iteration_id, None, "during the usage wait")
        tries.waited += plan.seconds
        self._note(changes.usage_resumed(iteration_id, state, self.rt.now()))
        return None

    # -- endings -------------------------------------------------------------------------------

    def _finish(
        self,
        state: SessionState,
        decided: Decision,
        record: IterationRecord | None,
        iteration_id: str,
        started: float,
        tries: _Tries,
        extra: dict,
    ) -> Outcome | None:
        """Apply the iteration's decision (after the stall check), then end the iteration."""
        self.iterations_run += 1
        if decided.verdict is Verdict.CONTINUE:
            stalled, progress = self.stall.after(decided.phase is state.phase, decided.total, decided.reason)
            if progress:
                extra = {**extra, "progress": progress}
            if stalled:
                decided = blocked_for(state, stalled.reason, Need.HUMAN_DECISION)
                extra = {**extra, "evidence": stalled.evidence}
        cost = tries.cost if tries.cost_known else None
        self.brief.iteration_ended(decided.total, self.rt.monotonic() - started, cost)
        outcome = self._apply(
            state,
            decided,
            record,
            {"id": iteration_id, "iteration_cost_usd": cost, "provider": self.lim.provider.name, **extra},
        )
        journal.clear_marker(self.paths)
        crash_point("marker-cleared")
        moved = f" -> {decided.phase.value}" if decided.phase is not state.phase else ""
        detail = decided.reason if decided.verdict in (Verdict.BLOCKED, Verdict.WAITING) else ""
        if tries.stream_problem:  # never silent: the console says what the worker could not read
            detail = "; ".join(filter(None, (f"stream: {tries.stream_problem}", detail)))
        duration = self.rt.monotonic() - started
        self.rt.report(
            IterationReport(decided.total, state.phase, decided.verdict.value + moved, duration, cost, detail)
        )
        return outcome

    def _apply(
        self, state: SessionState, decided: Decision, record: IterationRecord | None, extra: dict
    ) -> Outcome | None:
        """The decision's history line (with its overview change), then the overview; notify."""
        self.spend.add(changes.record_fields(record) | {"phase": state.phase.value})
        applied = changes.decision(state, decided, record, extra, self.spend, self.rt.now())
        try:
            journal.commit(self.paths, applied.change.record, applied.change.fields, applied.change.flow)
        except OverviewError as exc:
            return self._stop_unreadable(exc.reason)
        if decided.verdict is Verdict.CONTINUE and decided.phase is not state.phase:
            self._notify("phase_change", decided.phase, f"{state.phase.value} -> {decided.phase.value}")
        if applied.code is None:
            return None
        kind = "done" if applied.code is ExitCode.DONE else applied.code.name.lower()
        # With SAMOCODE_GATE_WAIT, the wait sends this one itself, with its buttons.
        if not gatewait.takes_over(self.settings, applied.code, self.paths):
            self._notify(kind, decided.phase, applied.message, decided.total)
        return self._outcome(applied.code, applied.message)

    def _stop(self, state: SessionState, decided: Decision) -> Outcome:
        """A stop the worker decided before an iteration (never CONTINUE, so the run ends)."""
        outcome = self._apply(state, decided, None, {})
        assert outcome is not None, decided.verdict
        return outcome

    def _stop_unreadable(self, reason: str) -> Outcome:
        """The overview is unusable: record the reason everywhere except the overview itself."""
        with contextlib.suppress(SessionFileError):
            journal.append(
                self.paths.history, {"time": stamp(self.rt.now()), "event": "blocked", "reason": reason}
            )
        journal.clear_marker(self.paths)
        self._notify("blocked", None, reason)
        return self._outcome(ExitCode.BLOCKED, reason)

    def _provider_failed(
        self, state: SessionState, iteration_id: str, record: IterationRecord, started: float, tries: _Tries
    ) -> Outcome:
        what = record.failure.value if record.failure else "failure"
        message = f"{self.lim.provider.name} failed ({what}): {record.message}".strip()
        attempts = f"{tries.failures} attempt" + ("s" if tries.failures != 1 else "")
        message += " (not retried)" if record.failure in FATAL else f" after {attempts}"
        self._note(changes.provider_failed(iteration_id, state, what, message, self.rt.now()))
        journal.clear_marker(self.paths)
        self._notify("failed", state.phase, message)
        cost = tries.cost if tries.cost_known else None
        duration = self.rt.monotonic() - started
        report = IterationReport(
            state.total + 1, state.phase, f"failed ({what})", duration, cost, record.message[:120]
        )
        self.rt.report(report)
        return self._outcome(ExitCode.PROVIDER_FAILED, message)

    def _interrupted(
        self, state: SessionState, iteration_id: str, record: IterationRecord | None, during: str
    ) -> Outcome:
        """Ctrl-C or SIGTERM: the child and its descendants are already gone; record and stop."""
        code = self.rt.stop_code[0]
        name = {ExitCode.TERMINATED: "SIGTERM", ExitCode.HANG_UP: "SIGHUP (hang-up)"}.get(code, "Ctrl-C")
        self._note(changes.interrupted(iteration_id, state, record, name, during, self.rt.now()))
        journal.clear_marker(self.paths)
        self._notify("interrupted", state.phase, name)
        return self._outcome(code, "interrupted; the session continues on the next start")

    # -- small helpers -------------------------------------------------------------------------

    def _note(self, change: Change) -> None:
        """A history line and its overview change, where an unusable overview is not fatal here
        (the next decision reports it)."""
        self.spend.add(change.record)
        with contextlib.suppress(OverviewError):
            journal.commit(self.paths, change.record, change.fields, change.flow)

    def _sleep_until(self, until: float) -> bool:
        """Until the wall clock reaches `until` (after a suspend: late, never early); True when stopped."""
        while (left := until - self.rt.clock()) > 0:
            if self.rt.sleep(self.rt.stop, min(left, 30.0)):
                return True
        return False

    def _sweep(self, tag: str) -> int:
        return process.terminate_tree(None, tag, self.settings.kill_grace)

    def _outcome(self, code: ExitCode, message: str) -> Outcome:
        return Outcome(code, message, self.paths.dir)

    def _notify(self, kind: str, phase: Phase | None, detail: str, iteration: int | None = None) -> None:
        del iteration  # the message names the last iteration itself
        cost = self.spend.total if self.spend.known else None
        self.brief.send(kind, phase.value if phase else "?", detail, cost)


__all__ = ["run_session"]
