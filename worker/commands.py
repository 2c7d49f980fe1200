"""The parent's commands: status, watch, approve, resume, answer, unblock.

The functions above `dispatch` hold the logic: they return values or raise `Refused` (exit 7, the
command does not fit the session's state) or another `SamocodeError`, and never print. A write
command takes the session lease first, so it never races a running worker (which holds the lease
for its whole run), checks the state, and changes nothing when it refuses.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from worker import gatelease, overview, session, status
from worker import history as hist
from worker.config import Project, gather, load_project, load_settings
from worker.errors import (
    ConfigError,
    InvalidSignal,
    NoSession,
    OverviewError,
    Refused,
    SessionFileError,
    SessionLocked,
)
from worker.overview import Overview
from worker.phases import PHASES, Phase
from worker.session import Lease, SessionPaths
from worker.signals import Need, WaitFor, read_signal

_ANSWER = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}answer\*{0,2}[ \t]*:[ \t]*\*{0,2}[ \t]*(?P<value>.*?)[ \t]*$", re.I
)
_SUGGESTION = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}suggest(?:ion|ed)(?: option)?\*{0,2}[ \t]*:[ \t]*\*{0,2}[ \t]*"
    r"(?P<value>.*?)[ \t]*$",
    re.I,
)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]*(?P<title>.+?)[ \t#]*$")
_OPTION = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}(?P<letter>[A-Z])[).:]\*{0,2}[ \t]+(?P<text>\S.*?)[ \t]*$"
)
WAITING = "_waiting_"


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M")


def _flow(total: int, now: dt.datetime, event: str) -> str:
    return f"[{total:03d} @ {now:%m-%d %H:%M}] {event}"


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


def _read(paths: SessionPaths) -> Overview:
    try:
        return overview.parse(overview.read_text(paths.overview))
    except OverviewError as exc:
        raise Refused(f"{exc.reason}; fix {paths.overview} by hand first (nothing changed)") from None


def _state(paths: SessionPaths) -> tuple[Overview, Phase, int, int]:
    ov = _read(paths)
    try:
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
    from worker import journal  # imported here: `status` needs none of the journal's imports

    try:
        journal.commit(paths, {"time": _stamp(now), **record}, fields or {}, flow)
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
    return hist.waits_for_plan_approval(
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
        plan = status.newest_plan(paths.dir, _history(paths))
        if plan is None:
            raise Refused(f"no plan file in {paths.dir}: planning has not produced a plan yet")
        record = {
            "event": "approved",
            "phase": phase.value,
            "phase_after": Phase.IMPLEMENTATION.value,
            "iteration": iteration,
            "total": total,
            "plan": Path(plan).name,
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
            (_flow(total, now, f"Plan approved for implementation via {_by(via, 'approve')}"),),
        )
    return f"plan approved ({Path(plan).name}): phase implementation; start the worker again"


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
            (_flow(total, now, f"Plan changes requested via {_by(via, 'revise')}: {note}"),),
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
            (_flow(total, now, f"Resuming: {goal}"),),
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
        _commit(paths, now, record | ({"via": via} if via else {}), fields, (_flow(total, now, said),))
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


# -- answers in _qa.md -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    number: int  # 1-based, in file order
    value_start: int
    value_end: int
    answer: str
    suggestion: str
    title: str = ""  # the heading above it, e.g. "Q1. Where should tokens be stored?"
    options: tuple[tuple[str, str], ...] = ()  # ("A", "In memory"), ... as listed above it

    @property
    def waiting(self) -> bool:
        return self.answer == WAITING


def questions(text: str) -> list[Question]:
    """One question per `**Answer:**` line; its suggestion, heading and lettered options are the
    last ones above it (since the previous answer)."""
    found: list[Question] = []
    options: list[tuple[str, str]] = []
    suggestion, title = "", ""
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if match := _ANSWER.match(body):
            found.append(
                Question(
                    len(found) + 1,
                    pos + match.start("value"),
                    pos + match.end("value"),
                    match.group("value"),
                    suggestion,
                    title,
                    tuple(options),
                )
            )
            suggestion, title, options = "", "", []
        elif match := _SUGGESTION.match(body):
            suggestion = match.group("value").strip("* ")
        elif match := _HEADING.match(body):
            title, options = match.group("title"), []
        elif match := _OPTION.match(body):
            options.append((match.group("letter"), match.group("text")))
        pos += len(line)
    return found


def fill_answers(text: str, given: dict[int, str], accept: bool) -> tuple[str, list[int], list[int]]:
    """The text with answers filled in; returns it, the numbers answered and those still waiting."""
    found = questions(text)
    waiting = [q for q in found if q.waiting]
    if not waiting:
        raise Refused("no question in _qa.md waits for an answer (no `**Answer:** _waiting_` line)")
    numbers = [q.number for q in waiting]
    for n in sorted(given):
        if n > len(found):
            raise Refused(f"there is no question {n}: _qa.md has {len(found)} (waiting: {_list(numbers)})")
        if not found[n - 1].waiting:
            raise Refused(f"question {n} is already answered (waiting: {_list(numbers)})")
    answers = dict(given)
    if accept:
        missing = [q.number for q in waiting if q.number not in answers and not q.suggestion]
        if missing:
            raise Refused(
                f"question {_list(missing)} has no suggestion; answer it with --set N=TEXT (nothing changed)"
            )
        answers.update({q.number: q.suggestion for q in waiting if q.number not in answers})
    pieces, pos = [], 0
    for q in waiting:
        if q.number in answers:
            pieces += [text[pos : q.value_start], answers[q.number]]
            pos = q.value_end
    pieces.append(text[pos:])
    return "".join(pieces), sorted(answers), [n for n in numbers if n not in answers]


def _list(numbers: list[int]) -> str:
    return ", ".join(f"Q{n}" for n in numbers) or "none"


def parse_sets(values: list[str]) -> dict[int, str]:
    """`--set N=TEXT` values; a malformed one is a usage error."""
    given: dict[int, str] = {}
    for value in values:
        number, sep, answer = value.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise ConfigError(f"--set needs N=TEXT with N a question number from 1, got '{value}'")
        n = int(number)
        if n in given:
            raise ConfigError(f"--set gives question {n} twice")
        text = one_line(answer, f"--set {n}=")
        if WAITING in text:
            raise ConfigError(f"--set {n}: the answer may not contain '{WAITING}'")
        given[n] = text
    return given


def answer(paths: SessionPaths, given: dict[int, str], accept: bool, now: dt.datetime, via: str = "") -> str:
    with _leased(paths, "answer"):
        try:
            text = paths.qa.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise Refused(f"no {paths.qa}: there are no questions to answer") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise Refused(f"cannot read {paths.qa}: {exc}") from None
        new, answered, left = fill_answers(text, given, accept)
        record = {"event": "answered", "questions": answered, "accepted": accept or None}
        if via:  # the command line leaves no Flow Log line; another channel says it was there
            _, _, _, total = _state(paths)
            flow = (_flow(total, now, f"Answered {_list(answered)} via {via}"),)
            _commit(paths, now, record | {"via": via}, {}, flow)
        else:
            _commit(paths, now, record)
        with overview.locked(paths.dir):
            overview.write_atomic(paths.qa, new)
    message = f"answered {_list(answered)} in {paths.qa}"
    if left:
        return f"{message}; still waiting: {_list(left)}"
    if WAITING in new:
        return f"{message}; note: '{WAITING}' still appears elsewhere in _qa.md, so the session keeps waiting"
    return f"{message}; all answered: start the worker again"


def _await_session(project: Project, name: str, limit: float) -> SessionPaths:
    """A session started a moment ago may not have its folder yet: wait a little for it."""
    end = time.monotonic() + limit
    while True:
        try:
            paths = session.find_existing(project.sessions, name)
        except NoSession:
            if time.monotonic() >= end:
                raise
        else:
            # The folder comes first, the overview after the worktree: watch from the overview.
            if paths.overview.exists() or time.monotonic() >= end:
                return paths
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


# -- command line --------------------------------------------------------------------------------------


def _project(args: argparse.Namespace) -> Project:
    project, _ = gather(lambda: load_project(args.config), lambda: session.check_name(args.session))
    return project


def report(project: Project, paths: SessionPaths) -> status.Report:
    try:
        settings, problem = load_settings(os.environ), ""
    except ConfigError as exc:
        settings, problem = None, "; ".join(exc.problems)
    fallback = project.worktrees / paths.dir.name
    return status.build(
        paths, status.rails_of(settings, problem), fallback if fallback.is_dir() else project.main_repo
    )


def dispatch(args: argparse.Namespace) -> int:
    """Run one parent command; prints its result. Errors propagate to cli.main."""
    project = _project(args)
    if args.command == "watch":
        started = time.monotonic()
        paths = _await_session(project, args.session, min(status.START_GRACE, args.timeout))
        result = status.watch(paths, max(0.0, args.timeout - (time.monotonic() - started)))
        head = {"reason": result.reason, "waited_s": round(time.monotonic() - started, 1)}
        rep = report(project, paths)
        if args.json:
            print(status.render_json(rep, extra={"watch": head}))
        else:
            line = f"Watch: {head['reason']} after {head['waited_s']:g}s"
            print(line + "\n" + status.render_text(rep, status.MAX_BYTES - len(line) - 1))
        return 0
    paths = session.find_existing(project.sessions, args.session)
    now = dt.datetime.now()
    if args.command == "status":
        rep = report(project, paths)
        print(status.render_json(rep) if args.json else status.render_text(rep))
        return 0
    if args.command == "approve":
        message = approve(paths, now)
    elif args.command == "resume":
        message = resume(paths, args.goal, now)
    elif args.command == "unblock":
        message = unblock(paths, args.note, now)
    elif args.command == "answer":
        given = parse_sets(args.set or [])
        if not given and not args.accept_suggestions:
            raise ConfigError("answer needs --accept-suggestions or at least one --set N=TEXT")
        message = answer(paths, given, args.accept_suggestions, now)
    else:
        raise ConfigError(f"unknown command '{args.command}'")
    print(f"samocode: {message}")
    return 0
