"""The parent's commands that change a session: approve, revise, resume, unblock, answer.

Each returns the line to show or raises `Refused` (exit 7, the command does not fit the session's
state) or another `SamocodeError`; none prints (the CLI layer does). A command takes the session
lease first, so it never races a running worker (which holds the lease for its whole run), checks
the state, and changes nothing when it refuses. It writes through the worker's journal and reads
the overview through its one safe reader.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping

from worker import gatelease, journal, overview, plans, qa
from worker import history as hist
from worker.errors import ConfigError, InvalidSignal, OverviewError, Refused, SessionFileError, SessionLocked
from worker.flowlog import flow_line
from worker.overview import Overview
from worker.phases import PHASES, Phase
from worker.session import Lease, SessionPaths
from worker.signals import Need, WaitFor, read_signal


def one_line(text: str, flag: str) -> str:
    """A free-text argument as one line; empty is a usage error."""
    value = " ".join(text.split())
    if not value:
        raise ConfigError(f"{flag} needs a non-empty text")
    return value


@contextlib.contextmanager
def _leased(paths: SessionPaths, what: str) -> Iterator[None]:
    lease = Lease(paths)
    try:
        lease.acquire(what)  # SessionLocked (exit 6) when a worker runs on the session
    except SessionLocked:
        if not gatelease.step_in(paths, lease, what):  # a worker waiting at a gate lets commands through
            raise
    except OSError as exc:  # a read-only or full session folder
        raise Refused(f"cannot lock {paths.lease.name}: {exc.strerror} (nothing changed)") from None
    try:
        yield
    finally:
        gatelease.withdraw(paths)  # before the release: the waiting worker takes the lease back after it
        lease.release()


def _state(paths: SessionPaths) -> tuple[Overview, Phase, int, int]:
    try:
        ov = overview.parse(overview.read_bytes(paths.overview)[0])
        state = ov.state()
    except OverviewError as exc:
        raise Refused(f"{exc.reason}; fix {paths.overview} by hand first (nothing changed)") from None
    return ov, state.phase, state.iteration, state.total


def _commit(
    paths: SessionPaths,
    now: dt.datetime,
    record: Mapping[str, object],
    fields: Mapping[str, str | None] | None = None,
    flow: tuple[str, ...] = (),
) -> None:
    """Through the worker's journal: history first (with the overview change it implies, so a
    torn line before it does not swallow it), then the overview (Flow Log lines only when missing)."""
    try:
        journal.commit(paths, {"time": hist.stamp(now), **record}, fields or {}, flow)
    except SessionFileError as exc:
        raise Refused(f"{exc.reason} (nothing changed)") from None
    except OverviewError as exc:
        raise Refused(f"recorded in the history, but {exc.reason}; fix {paths.overview} by hand") from None


def _history(paths: SessionPaths) -> list[dict]:
    try:
        return hist.read(paths.history, limit=200)
    except OSError as exc:
        raise Refused(f"cannot read {paths.history.name}: {exc.strerror} (nothing changed)") from None


def _signal_wait(paths: SessionPaths) -> str:
    try:
        signal, _ = read_signal(paths.signal)
    except InvalidSignal:
        return ""
    return signal.waiting_for.value if signal.waiting_for else ""


def waits_for_plan_approval(ov: Overview, paths: SessionPaths) -> bool:
    return plans.waits_for_approval(
        ov.get("blocked"), ov.get("waiting for"), ov.get("next"), _history(paths), _signal_wait(paths)
    )


def _hint_for_phase(phase: Phase) -> str:
    if phase is Phase.DONE:
        return "the session is done; use `resume --goal TEXT` for new work"
    if phase in (Phase.IMPLEMENTATION, Phase.TESTING, Phase.QUALITY):
        return "the plan is already approved; just start the worker"
    return "there is no plan yet; start the worker and let it reach planning"


# -- write commands ------------------------------------------------------------------------------


def _waiting_plan(ov: Overview, phase: Phase, paths: SessionPaths, what: str) -> None:
    """Refused unless the session is in planning and waits for plan approval."""
    if phase is not Phase.PLANNING:
        raise Refused(f"nothing to {what}: phase is {phase.value}, not planning; {_hint_for_phase(phase)}")
    if not waits_for_plan_approval(ov, paths):
        raise Refused(
            f"nothing to {what}: phase is planning but the session does not wait for plan approval "
            f"(Blocked: {ov.get('blocked') or '-'}, Next: {ov.get('next')[:80] or '-'}); "
            "start the worker and let planning finish"
        )


def _by(via: str, command: str) -> str:
    """Who acted, for the history and the Flow Log: the command, or the channel it came through."""
    return via or f"samocode {command}"


def approve(paths: SessionPaths, now: dt.datetime, via: str = "") -> str:
    """planning + waiting for plan approval + a plan file -> implementation, iteration 1.
    `via` names the channel when it is not the command line (e.g. "Telegram")."""
    with _leased(paths, "approve"):
        ov, phase, iteration, total = _state(paths)
        _waiting_plan(ov, phase, paths, "approve")
        plan = plans.current(paths.dir, _history(paths))
        if plan is None:
            raise Refused(f"no plan file in {paths.dir}: planning has not produced a plan yet")
        record = {
            "event": "approved",
            "phase": phase.value,
            "phase_after": Phase.IMPLEMENTATION.value,
            "iteration": iteration,
            "total": total,
            "plan": plan.name,
            "by": _by(via, "approve"),
        }
        _commit(
            paths,
            now,
            record,
            {
                "Phase": Phase.IMPLEMENTATION.value,
                "Iteration": "1",
                "Blocked": "no",
                "Waiting For": None,
                "Last Action": "Plan approved for implementation",
                "Next": "Execute first implementation phase",
            },
            (flow_line(total, now, f"Plan approved for implementation via {_by(via, 'approve')}"),),
        )
    return f"plan approved ({plan.name}): phase implementation; start the worker again"


def revise(paths: SessionPaths, note: str, now: dt.datetime, via: str = "") -> str:
    """The plan waiting for approval sent back to planning with the human's note (it becomes Next)."""
    note = one_line(note, "--note")
    with _leased(paths, "revise"):
        ov, phase, _, total = _state(paths)
        _waiting_plan(ov, phase, paths, "revise")
        record = {"event": "changes_requested", "phase": phase.value, "note": note, "by": _by(via, "revise")}
        _commit(
            paths,
            now,
            record,
            {
                "Blocked": "no",
                "Waiting For": None,
                "Last Action": f"Plan changes requested: {note}",
                "Next": f"Revise the plan: {note}",
            },
            (flow_line(total, now, f"Plan changes requested via {_by(via, 'revise')}: {note}"),),
        )
    return "changes requested: planning revises the plan; start the worker again"


def resume(paths: SessionPaths, goal: str, now: dt.datetime) -> str:
    """A done session reopened for new work: back to investigation."""
    goal = one_line(goal, "--goal")
    with _leased(paths, "resume"):
        ov, phase, _, total = _state(paths)
        if phase is not Phase.DONE:
            raise Refused(
                f"phase is {phase.value}, not done: resume only reopens a finished session; "
                + _next_step(ov, phase, paths)
            )
        record = {"event": "resumed", "phase": phase.value, "phase_after": Phase.INVESTIGATION.value}
        _commit(
            paths,
            now,
            {**record, "goal": goal},
            {
                "Phase": Phase.INVESTIGATION.value,
                "Iteration": "1",
                "Blocked": "no",
                "Waiting For": None,
                "Last Action": f"Resuming session for: {goal}",
                "Next": f"Investigate approach for {goal}",
            },
            (flow_line(total, now, f"Resuming: {goal}"),),
        )
    return "session reopened: phase investigation; start the worker again"


def unblock(paths: SessionPaths, note: str, now: dt.datetime, via: str = "") -> str:
    """`Blocked: yes` cleared with the human's direction, which becomes Next."""
    note = one_line(note, "--note")
    with _leased(paths, "unblock"):
        ov, phase, iteration, total = _state(paths)
        blocked = ov.get("blocked")
        if not blocked.lower().startswith("yes"):
            raise Refused(
                f"session is not blocked (Blocked: {blocked or '-'}, phase {phase.value}); "
                + _next_step(ov, phase, paths)
            )
        fields: dict[str, str | None] = {
            "Blocked": "no",
            "Last Action": f"Unblocked by human: {note}",
            "Next": note,
        }
        # A block for the phase's iteration cap would come straight back: the human's direction
        # starts the count again.
        capped = iteration > PHASES[phase].cap
        if capped:
            fields["Iteration"] = "1"
        budget = hist.pending_decision(_history(paths)).get("needs") == Need.BUDGET.value
        record = {"event": "unblocked", "phase": phase.value, "note": note, "iteration_reset": capped or None}
        said = f"Human direction via {via}: {note}" if via else f"Human direction: {note}"
        _commit(paths, now, record | ({"via": via} if via else {}), fields, (flow_line(total, now, said),))
    message = f"unblocked in phase {phase.value}; start the worker again"
    if budget:
        message += " (the spend cap still applies: raise SAMOCODE_MAX_COST_USD first or it blocks again)"
    return message


def _next_step(ov: Overview, phase: Phase, paths: SessionPaths) -> str:
    """What the parent should do instead, for a refusal message."""
    blocked = ov.get("blocked").lower()
    if blocked.startswith("yes"):
        return "it is blocked: use `unblock --note TEXT`"
    if blocked.startswith("waiting"):
        wait = ov.get("waiting for").lower()
        if phase is Phase.PLANNING and waits_for_plan_approval(ov, paths):
            return "it waits for plan approval: use `approve`"
        if wait == WaitFor.QA_ANSWERS.value:
            return f"it waits for answers in {paths.qa}: use `answer`"
        return f"it waits for {wait or 'a human'}: see Last Action, then start the worker"
    if phase is Phase.DONE:
        return "use `resume --goal TEXT` for new work"
    return "nothing to do but start the worker"


# -- answers in _qa.md --------------------------------------------------------------------------------


def answer(paths: SessionPaths, given: dict[int, str], accept: bool, now: dt.datetime, via: str = "") -> str:
    with _leased(paths, "answer"):
        try:
            text = qa.read(paths.qa)
        except FileNotFoundError:
            raise Refused(f"no {paths.qa}: there are no questions to answer") from None
        except OSError as exc:  # the reason only: str(exc) would name the file a second time
            raise Refused(f"cannot read {paths.qa}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise Refused(f"cannot read {paths.qa}: not UTF-8 text") from None
        new, answered, left = qa.fill_answers(text, given, accept)
        record = {"event": "answered", "questions": answered, "accepted": accept or None}
        if via:  # the command line leaves no Flow Log line; another channel says it was there
            _, _, _, total = _state(paths)
            flow = (flow_line(total, now, f"Answered {qa.listed(answered)} via {via}"),)
            _commit(paths, now, record | {"via": via}, {}, flow)
        else:
            _commit(paths, now, record)
        with overview.locked(paths.dir):
            overview.write_atomic(paths.qa, new)
    message = f"answered {qa.listed(answered)} in {paths.qa}"
    if left:
        return f"{message}; still waiting: {qa.listed(left)}"
    if qa.WAITING in new:
        return (
            f"{message}; note: '{qa.WAITING}' still appears elsewhere in _qa.md, so the session keeps waiting"
        )
    return f"{message}; all answered: start the worker again"
