"""What the steps of a worker run share, and how an iteration or the run ends.

`RunState` is one worker run's state (spend, stall breaker, the provider in force, notifications);
`Iteration` is one iteration's (its ids, its attempts so far). The endings: the decision applied after
the stall check, the worker's own stops, an unusable overview, a provider that failed, an
interruption. Each writes through `journal` (history line first, then the overview), built by
`changes`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from worker import changes, journal, proctree
from worker import history as hist
from worker.brief import Briefer
from worker.changes import Change
from worker.crashpoint import crash_point
from worker.errors import ExitCode, OverviewError, SessionFileError
from worker.gatewait import takes_over
from worker.history import stamp
from worker.limitrun import LimitRun, Switched
from worker.phases import Decision, Phase, SessionState, Verdict, blocked_for
from worker.providers import FATAL, IterationRecord
from worker.runtime import IterationReport, Outcome, RunOptions, Runtime
from worker.signals import Need
from worker.spend import Spend
from worker.stall import StallBreaker
from worker.workspace import Workspace


@dataclass
class Iteration:
    """What the steps of one iteration share: its state at the start, its ids, and its attempts so far."""

    state: SessionState
    id: str  # in every history line of the iteration
    tag: str  # carried by every process of the iteration, for the sweep
    started: float  # monotonic
    failures: int = 0  # provider failures counted against SAMOCODE_MAX_RETRIES
    invalid: int = 0  # clean runs that left no usable signal
    usage_hits: int = 0
    waited: float = 0.0  # seconds spent waiting for usage resets
    cost: float = 0.0
    cost_known: bool = False
    previous: str = ""  # what the next attempt is told about the last one
    stream_problem: str = ""  # the last attempt's stream the worker did not understand

    @property
    def total(self) -> int:
        """This iteration's number over the whole session."""
        return self.state.total + 1

    @property
    def cost_usd(self) -> float | None:
        return self.cost if self.cost_known else None

    def add(self, record: IterationRecord) -> None:
        if record.cost_usd is not None:
            self.cost += record.cost_usd
            self.cost_known = True
        if record.stream_problem:
            self.stream_problem = record.stream_problem


class RunState:
    """What every step of one worker run uses, and the endings they share."""

    def __init__(self, ws: Workspace, options: RunOptions, rt: Runtime) -> None:
        self.ws = ws
        self.paths = ws.paths
        self.options = options
        self.rt = rt
        self.settings = rt.settings
        self.iterations_run = 0
        self.spend = Spend()
        self.stall = StallBreaker(self.settings.stall_iterations, ws.working_dir, ws.paths.dir)
        self.brief = Briefer(self.paths, ws.project.main_repo.name, rt.notifier, ws.working_dir)
        self.lim = LimitRun(self.settings, rt.provider, (), rt.clock(), log=rt.log)

    def begin(self, history: list[dict], phase: str) -> None:
        """The session as a run (or a run after a gate wait) finds it: spend so far, the stall
        breaker's baseline, and the provider in force."""
        self.spend = journal.load_spend(self.paths)
        self.stall.start(hist.last_decision(history), phase)
        self.lim = LimitRun(self.settings, self.rt.provider, history, self.rt.clock(), log=self.rt.log)

    # -- endings -------------------------------------------------------------------------------

    def finish(
        self, it: Iteration, decided: Decision, record: IterationRecord | None, extra: dict
    ) -> Outcome | None:
        """Apply the iteration's decision (after the stall check), then end the iteration."""
        self.iterations_run += 1
        state = it.state
        if decided.verdict is Verdict.CONTINUE:
            known = self.ws.known  # the overview as the child left it: not read once more to hash it
            same, data = decided.phase is state.phase, known.data if known else None
            stalled, progress = self.stall.after(same, decided.total, decided.reason, data)
            if progress:
                extra = {**extra, "progress": progress}
            if stalled:
                decided = blocked_for(state, stalled.reason, Need.HUMAN_DECISION)
                extra = {**extra, "evidence": stalled.evidence}
        self.brief.iteration_ended(decided.total, self.rt.monotonic() - it.started, it.cost_usd)
        facts = {"id": it.id, "iteration_cost_usd": it.cost_usd, "provider": self.lim.provider.name}
        outcome = self.apply(state, decided, record, {**facts, **extra})
        journal.clear_marker(self.paths)
        crash_point("marker-cleared")
        moved = f" -> {decided.phase.value}" if decided.phase is not state.phase else ""
        detail = decided.reason if decided.verdict in (Verdict.BLOCKED, Verdict.WAITING) else ""
        if it.stream_problem:  # never silent: the console says what the worker could not read
            detail = "; ".join(filter(None, (f"stream: {it.stream_problem}", detail)))
        duration = self.rt.monotonic() - it.started
        verdict = decided.verdict.value + moved
        self.rt.report(IterationReport(decided.total, state.phase, verdict, duration, it.cost_usd, detail))
        return outcome

    def apply(
        self, state: SessionState, decided: Decision, record: IterationRecord | None, extra: dict
    ) -> Outcome | None:
        """The decision's history line (with its overview change), then the overview; notify."""
        self.spend.add(changes.record_fields(record) | {"phase": state.phase.value})
        applied = changes.decision(state, decided, record, extra, self.spend, self.rt.now())
        try:
            change = applied.change
            journal.commit(self.paths, change.record, change.fields, change.flow, self.ws.known)
        except OverviewError as exc:
            return self.stop_unreadable(exc.reason)
        if decided.verdict is Verdict.CONTINUE and decided.phase is not state.phase:
            self.notify("phase_change", decided.phase, f"{state.phase.value} -> {decided.phase.value}")
        if applied.code is None:
            return None
        # With SAMOCODE_GATE_WAIT, the wait sends this one itself, with its buttons.
        if not takes_over(self.settings, applied.code, self.paths):
            self.notify(applied.code.name.lower(), decided.phase, applied.message)
        return self.outcome(applied.code, applied.message)

    def stop(self, state: SessionState, decided: Decision, extra: dict | None = None) -> Outcome:
        """A stop the worker decided instead of running an iteration (never CONTINUE: the run ends)."""
        outcome = self.apply(state, decided, None, extra or {})
        assert outcome is not None, decided.verdict
        return outcome

    def stop_unreadable(self, reason: str) -> Outcome:
        """The overview is unusable: record the reason everywhere except the overview itself."""
        with contextlib.suppress(SessionFileError):
            journal.append(
                self.paths.history, {"time": stamp(self.rt.now()), "event": "blocked", "reason": reason}
            )
        journal.clear_marker(self.paths)
        self.notify("blocked", None, reason)
        return self.outcome(ExitCode.BLOCKED, reason)

    def provider_failed(self, it: Iteration, record: IterationRecord) -> Outcome:
        what = record.failure.value if record.failure else "failure"
        message = f"{self.lim.provider.name} failed ({what}): {record.message}".strip()
        attempts = f"{it.failures} attempt" + ("s" if it.failures != 1 else "")
        message += " (not retried)" if record.failure in FATAL else f" after {attempts}"
        self.note(changes.provider_failed(it.id, it.state, what, message, self.rt.now()))
        journal.clear_marker(self.paths)
        self.notify("failed", it.state.phase, message)
        duration = self.rt.monotonic() - it.started
        verdict = f"failed ({what})"
        self.rt.report(
            IterationReport(it.total, it.state.phase, verdict, duration, it.cost_usd, record.message[:120])
        )
        return self.outcome(ExitCode.PROVIDER_FAILED, message)

    def interrupted(
        self, state: SessionState, iteration_id: str, record: IterationRecord | None, during: str
    ) -> Outcome:
        """Ctrl-C or SIGTERM: the child and its descendants are already gone; record and stop."""
        code = self.rt.stop_code[0]
        name = {ExitCode.TERMINATED: "SIGTERM", ExitCode.HANG_UP: "SIGHUP (hang-up)"}.get(code, "Ctrl-C")
        self.note(changes.interrupted(iteration_id, state, record, name, during, self.rt.now()))
        journal.clear_marker(self.paths)
        self.notify("interrupted", state.phase, name)
        return self.outcome(code, "interrupted; the session continues on the next start")

    # -- small helpers -------------------------------------------------------------------------

    def note(self, change: Change) -> None:
        """A history line and its overview change, where an unusable overview is not fatal here
        (the next decision reports it)."""
        self.spend.add(change.record)
        with contextlib.suppress(OverviewError):
            journal.commit(self.paths, change.record, change.fields, change.flow)

    def switched(self, state: SessionState, switched: Switched) -> None:
        self.note(switched.change)
        self.notify("switched", state.phase, switched.text.removeprefix("switched "))
        self.rt.log(switched.text)

    def sleep_until(self, until: float) -> bool:
        """Until the wall clock reaches `until` (after a suspend: late, never early); True when stopped."""
        while (left := until - self.rt.clock()) > 0:
            if self.rt.sleep(self.rt.stop, min(left, 30.0)):
                return True
        return False

    def sweep(self, tag: str) -> int:
        return proctree.terminate_tree(None, tag, self.settings.kill_grace)

    def outcome(self, code: ExitCode, message: str) -> Outcome:
        return Outcome(code, message, self.paths.dir)

    def notify(self, kind: str, phase: Phase | None, detail: str) -> None:
        """The message names the last iteration itself."""
        cost = self.spend.total if self.spend.known else None
        self.brief.send(kind, phase.value if phase else "?", detail, cost)
