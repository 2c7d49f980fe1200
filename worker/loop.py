"""The iteration loop: one child per iteration, a decision per signal, until a stop.

It wires the other modules together and applies what `phases.decide` returns: `gate` says whether
the session may start, `iteration` runs one iteration (its attempts, retries and usage waits),
`endings` holds the run's state and applies each ending, which `changes` builds and `journal`
writes in crash-safe order (and repairs what a killed worker left); `gatewait` holds a gate open
for a human's reply. The session lease is `session.Lease`.
"""

from __future__ import annotations

import datetime as dt

from worker import cgroup, changes, gate, gatewait, journal, limitrun, limits
from worker.changes import worker_stop
from worker.config import Project
from worker.endings import RunState
from worker.errors import ExitCode, OverviewError, SamocodeError, SessionFileError
from worker.iteration import run_iteration
from worker.phases import SessionState, Verdict, cap_reached
from worker.runtime import Outcome, RunOptions, Runtime
from worker.session import Lease, SessionPaths
from worker.signals import Need, WaitFor
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
    if stale := cgroup.remove_stale():
        rt.log(f"removed {len(stale)} empty cgroup(s) that killed runs left: {', '.join(stale)}")
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


class _Loop:
    def __init__(
        self, workspace: Workspace, options: RunOptions, rt: Runtime, lease: Lease | None = None
    ) -> None:
        self.lease = lease  # let go and taken back while a human answers at a gate (gatewait)
        self.rs = RunState(workspace, options, rt)

    def run(self) -> Outcome:
        """Runs until a stop; at a gate with SAMOCODE_GATE_WAIT, waits for the human and goes on."""
        run, rt = self.rs, self.rs.rt
        while True:
            outcome = self._session()
            wait = gatewait.Wait(run.paths, self.lease, run.settings, rt.stop, run.brief, rt.ready)
            end = wait.at_gate(outcome.code)
            if end is gatewait.End.ANSWERED:
                continue
            if end is gatewait.End.STOPPED:
                return run.outcome(rt.stop_code[0], "interrupted while waiting at the gate")
            if end is gatewait.End.LOST:
                return run.outcome(ExitCode.LOCKED, gatewait.LOST_MESSAGE)
            return outcome

    def _session(self) -> Outcome:
        """From the session's gate to the run's stop: one iteration after another."""
        run = self.rs
        journal.recover(run.paths, run.rt.now(), run.sweep, run.rt.log)
        try:
            journal.check_lock(run.paths)
            ov = run.ws.read()
            state = ov.state()
        except OverviewError as exc:
            return run.stop_unreadable(exc.reason)
        history = journal.load_history(run.paths, limit=journal.RECENT)
        passed = gate.check(ov, state, history, run.paths.qa)
        if passed.stop is not None:
            return run.outcome(passed.stop, passed.message)
        if passed.ended_wait is not None:
            run.note(changes.wait_ended(state, passed.ended_wait, run.rt.now()))
        if (was := gate.phase_set_by_hand(state, history)) is not None:
            run.note(changes.phase_set_by_hand(state, was, run.rt.now()))
        run.begin(history, state.phase.value)
        while True:
            try:
                ov = run.ws.read()
                state = ov.state()
            except OverviewError as exc:
                return run.stop_unreadable(exc.reason)
            if (stop := _stop_before(run, state)) is not None:
                return stop
            run.rt.ready()
            paused = _pause(run, state)  # a rate-limit window near its end: wait for its reset first
            if isinstance(paused, Outcome):
                return paused
            if paused:
                continue
            outcome = run_iteration(run, state)
            if outcome is not None:
                return outcome


def _stop_before(run: RunState, state: SessionState) -> Outcome | None:
    """Why no further iteration may start: a stop request, a phase cap, the budget, --max-iterations."""
    if run.rt.stop.is_set():
        return run.interrupted(state, "", None, "between iterations")
    if reason := cap_reached(state):
        return run.stop(state, worker_stop(state, Verdict.BLOCKED, reason))
    if reason := run.spend.over_budget(state.phase.value, run.settings):
        return run.stop(state, worker_stop(state, Verdict.BLOCKED, reason, Need.BUDGET))
    limit = run.options.max_iterations
    if limit and run.iterations_run >= limit:
        return Outcome(ExitCode.LIMIT, f"stopped after {run.iterations_run} iterations (--max-iterations)")
    return None


def _pause(run: RunState, state: SessionState) -> Outcome | bool:
    """Before an iteration: a window at or above SAMOCODE_PAUSE_AT is waited out as a usage wait
    (or run on the fallback provider). True when it paused or switched, an Outcome to stop."""
    pause = run.lim.pause(run.rt.clock())
    if pause is None:
        return False
    now, text = run.rt.now(), pause.text(run.rt.clock())
    plan = limits.plan_usage_wait(pause.until, run.rt.clock(), run.settings, 1, 0.0)
    if switched := run.lim.switch_for(plan.until, now, state.total + 1, text):
        run.switched(state, switched)
        return True
    if plan.beyond:
        reason = f"{text}, past SAMOCODE_MAX_WAIT ({run.settings.max_wait:g} s)"
        stop = worker_stop(state, Verdict.WAITING, reason, waiting_for=WaitFor.USAGE_LIMIT)
        until = dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds")
        return run.stop(state, stop, {"resets_at": until})
    run.note(limitrun.paused(state, pause, plan, now))
    run.notify("paused", state.phase, text.removeprefix("paused "))
    run.rt.log(f"{text} ({plan.seconds:.0f} s)")
    if run.sleep_until(plan.until):
        return run.interrupted(state, "", None, "during the usage wait")
    run.note(changes.usage_resumed("", state, run.rt.now()))
    return True


__all__ = ["run_session"]
