"""One iteration: its attempts (one child each) until a signal decides, and the policy per failure
class in between: retry with backoff, block, give up, or wait for a usage limit to reset (or run on
the fallback provider meanwhile)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

from worker import changes, journal, limits, plans
from worker.attempt import Attempt, Request, run_attempt
from worker.changes import worker_stop
from worker.crashpoint import crash_point
from worker.endings import Iteration, RunState
from worker.errors import AttemptBlocked
from worker.phases import Phase, SessionState, Verdict, blocked_for, decide
from worker.providers import FATAL, Failure, IterationRecord
from worker.runtime import Outcome
from worker.signals import Need, WaitFor


def run_iteration(run: RunState, state: SessionState) -> Outcome | None:
    """Attempts until one leaves a usable signal or the iteration ends otherwise; None: go on."""
    it = Iteration(state, os.urandom(6).hex(), os.urandom(8).hex(), run.rt.monotonic())
    marker = {"id": it.id, "tag": it.tag, "phase": state.phase.value, "iteration": state.iteration}
    journal.write_marker(run.paths, {**marker, "total": state.total, "worker": os.getpid()})
    crash_point("marker")
    run.brief.iteration_started(run.ws.working_dir)
    plan_files = plans.snapshot(run.paths.dir) if state.phase is Phase.PLANNING else None
    while True:
        attempt = _attempt(run, it)
        if not isinstance(attempt, Attempt):
            return attempt  # the iteration ended without a signal to read
        if attempt.signal is not None:
            decided = decide(state, attempt.signal)
            extra = {"signal": attempt.raw, **attempt.signal_facts()}
            if plan_files is not None and decided.waiting_for is WaitFor.PLAN_APPROVAL:
                extra["plan"] = plans.written(run.paths.dir, plan_files)  # what approve approves
            return run.finish(it, decided, attempt.record, extra)
        facts = {
            "reason": attempt.invalid,
            "ending": attempt.run.ending.value,
            "exit_code": attempt.run.exit_code,
            "duration_s": round(attempt.run.duration, 3),
            "log": attempt.log_name,
            "provider": run.lim.provider.name,
        }
        run.note(changes.attempt_failed(it.id, state, attempt.record, facts, run.rt.now()))
        crash_point("attempt-failed")
        outcome = _after_failure(run, it, attempt)
        if outcome is not None:
            return outcome


def _attempt(run: RunState, it: Iteration) -> Attempt | Outcome | None:
    """One child, on the provider in force; an Outcome (or None, to go on) when the iteration ends
    without a signal to read: no attempt could run, or the run was stopped."""
    budget = run.spend.remaining(it.state.phase.value, run.settings)
    options = run.options
    request = Request(it.state, options.task, options.dive, it.previous, it.tag, run.rt.now(), budget)
    if (back := run.lim.back_if_due(run.rt.now(), it.total)) is not None:
        run.switched(it.state, back)
    try:
        attempt = run_attempt(run.ws, run.lim.provider, run.rt, request)
    except AttemptBlocked as exc:
        return run.finish(it, worker_stop(it.state, Verdict.BLOCKED, str(exc)), None, {})
    run.rt.log(attempt.summary())
    if restored := run.ws.restore_if_broken(f"{it.total:03d}-{it.id}"):
        run.note(changes.overview_restored(it.state, *restored, run.rt.now()))
    it.add(attempt.record)
    run.lim.seen(attempt.record)
    if attempt.record.failure is Failure.INTERRUPTED or run.rt.stop.is_set():
        return run.interrupted(it.state, it.id, attempt.record, "")
    return attempt


def _after_failure(run: RunState, it: Iteration, attempt: Attempt) -> Outcome | None:
    """The policy per failure class; None means: run another attempt."""
    record, state = attempt.record, it.state
    failure = record.failure
    if failure in FATAL:
        return run.provider_failed(it, record)
    if failure is Failure.BUDGET:  # the CLI stopped at the budget it was given: never retried
        reason = run.spend.over_budget(state.phase.value, run.settings) or (
            f"{run.lim.provider.name} stopped at the remaining budget: {record.message[:200]}"
        )
        return run.finish(it, blocked_for(state, reason, Need.BUDGET), None, {})
    if failure is Failure.USAGE_LIMIT:
        it.usage_hits += 1
        it.failures, it.previous = 0, ""
        return _usage_limit(run, it, record)
    if failure is None:
        it.invalid += 1
        if it.invalid > 1:  # a clean run that twice left no usable signal
            stop = blocked_for(state, f"no valid signal after 2 attempts: {attempt.invalid}")
            return run.finish(it, stop, None, {})
        it.previous = f"the worker could not use its signal: {attempt.invalid}"
    else:
        it.failures += 1
        if it.failures > run.settings.max_retries:
            return run.provider_failed(it, record)
        it.previous = f"{failure.value}: {record.message[:200]}"
    delay = limits.retry_delay(failure, it.failures, run.settings)
    run.rt.log(f"attempt failed ({it.previous}); retrying in {delay:g} s")
    if run.rt.sleep(run.rt.stop, delay):
        return run.interrupted(state, it.id, None, "during the retry delay")
    return None


def _usage_limit(run: RunState, it: Iteration, record: IterationRecord) -> Outcome | None:
    """On the primary: the fallback provider when the reset is far enough (SAMOCODE_FALLBACK_*),
    else the wait. On the fallback: the earlier of the two resets is waited for."""
    now = run.rt.now()
    if run.lim.fallback is not None:
        back, until = run.lim.both_limited(record.resets_at, now, it.total)
        if back is not None:
            run.switched(it.state, back)
        record = dataclasses.replace(record, resets_at=until)
    else:
        plan = limits.plan_usage_wait(
            record.resets_at, run.rt.clock(), run.settings, it.usage_hits, it.waited
        )
        if switched := run.lim.switch_for(plan.until, now, it.total, "usage limit"):
            run.switched(it.state, switched)
            it.usage_hits = 0
            return None  # the next attempt runs at once, on the fallback
    return _wait_for_usage(run, it, record)


def _wait_for_usage(run: RunState, it: Iteration, record: IterationRecord) -> Outcome | None:
    """Wait for the reset, shown in the overview; past SAMOCODE_MAX_WAIT, stop as waiting."""
    plan = limits.plan_usage_wait(record.resets_at, run.rt.clock(), run.settings, it.usage_hits, it.waited)
    if plan.beyond:
        reason = (
            f"usage limit resets at {plan.clock} ({plan.source}), past SAMOCODE_MAX_WAIT "
            f"({run.settings.max_wait:g} s)"
        )
        stop = worker_stop(it.state, Verdict.WAITING, reason, waiting_for=WaitFor.USAGE_LIMIT)
        until = dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds")
        return run.finish(it, stop, None, {"resets_at": until})
    run.note(changes.usage_wait(it.id, it.state, plan, run.rt.now()))
    crash_point("usage-wait")
    run.notify("usage_wait", it.state.phase, f"resuming at {plan.clock}")
    run.rt.log(f"usage limit: waiting until {plan.clock} ({plan.seconds:.0f} s, {plan.source})")
    if run.sleep_until(plan.until):
        return run.interrupted(it.state, it.id, None, "during the usage wait")
    it.waited += plan.seconds
    run.note(changes.usage_resumed(it.id, it.state, run.rt.now()))
    return None
