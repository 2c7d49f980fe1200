"""What a notification says: the few lines a human needs to decide from a phone.

Pure text from facts (`Where`, `LastIteration`, the gate's details), plus the small readers that
take those details from the session's files: the plan's title and first items, the waiting
questions of `_qa.md` (through `qa.py`, the parser the `answer` command uses). Plain text: no
parse_mode, so no markup can be rejected or misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from worker import gitops
from worker.notify import MAX_TEXT, Notifier, NullNotifier, format_event
from worker.session import SessionPaths

PLAN_ITEMS = 3  # first items of the plan shown
MAX_LINE = 160  # one line of a plan or a question, clipped
_PLAN_READ = 64 * 1024  # the head of a plan is enough for its title and first items
_TITLE = re.compile(r"^#[ \t]+(?P<text>.+?)[ \t#]*$")
_ITEM = re.compile(r"^[ \t]*(?:[-*+][ \t]+\[[ xX]\][ \t]+|\d+[.)][ \t]+)(?P<text>\S.*?)[ \t]*$")
_SECTION = re.compile(r"^##[ \t]+(?P<text>.+?)[ \t#]*$")


@dataclass(frozen=True)
class Where:
    project: str  # MAIN_REPO's folder name
    host: str
    session: str
    phase: str


@dataclass(frozen=True)
class LastIteration:
    total: int
    duration_s: float
    cost_usd: float | None
    files: int | None  # files changed in the working tree during it; None when git cannot tell
    commits: int | None


def host() -> str:
    import socket  # here: 2 ms of start-up, and only a message needs it

    return socket.gethostname().split(".")[0] or "?"


def clip(text: str, width: int = MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def iteration_line(last: LastIteration) -> str:
    """'Last iteration 012: 3 files changed, 1 commit, $0.42, 1m 05s'."""
    parts = []
    if last.files is not None:
        parts.append(f"{last.files} file{'s' if last.files != 1 else ''} changed")
    if last.commits is not None:
        parts.append(f"{last.commits} commit{'s' if last.commits != 1 else ''}")
    parts.append(f"${last.cost_usd:.2f}" if last.cost_usd is not None else "cost unknown")
    parts.append(duration(last.duration_s))
    return f"Last iteration {last.total:03d}: " + ", ".join(parts)


def plan_lines(plan: Path | None) -> list[str]:
    """The plan's title, its first items and its path; a line saying it is missing otherwise."""
    if plan is None:
        return ["Plan: no plan file found"]
    try:
        with open(plan, encoding="utf-8", errors="replace") as f:
            text = f.read(_PLAN_READ)
    except OSError as exc:
        return [f"Plan: {plan} (unreadable: {exc.strerror})"]
    title, items, sections = "", [], []
    for line in text.splitlines():
        if not title and (m := _TITLE.match(line)):
            title = m.group("text")
        elif m := _ITEM.match(line):
            items.append(m.group("text"))
        elif m := _SECTION.match(line):
            sections.append(m.group("text"))
    shown = items or sections
    lines = [f"Plan: {clip(title or plan.stem)}"]
    lines += [f"• {clip(item)}" for item in shown[:PLAN_ITEMS]]
    if len(shown) > PLAN_ITEMS:
        lines.append(f"… and {len(shown) - PLAN_ITEMS} more")
    lines.append(f"File: {plan}")
    return lines


def question_lines(
    number: int, title: str, options: tuple[tuple[str, str], ...], suggestion: str
) -> list[str]:
    """One question: its heading, its lettered options and the suggestion."""
    heading = title if title.lower().startswith(f"q{number}") else f"Q{number}. {title or '(no heading)'}"
    lines = [clip(heading)]
    lines += [f"  {letter}) {clip(text)}" for letter, text in options]
    if suggestion:
        lines.append(f"  Suggestion: {clip(suggestion)}")
    return lines


def qa_lines(qa: Path) -> list[str]:
    """Every waiting question of `_qa.md`, with options and suggestion."""
    from worker.qa import questions  # the parser the `answer` command uses

    try:
        text = qa.read_text(encoding="utf-8", errors="replace") if qa.is_file() else ""
    except OSError as exc:
        return [f"Questions: {qa} (unreadable: {exc.strerror})"]
    waiting = [q for q in questions(text) if q.waiting]
    if not waiting:
        return [f"Questions: none waiting in {qa}"]
    lines = [f"Questions ({len(waiting)} waiting, {qa}):"]
    for q in waiting:
        lines += question_lines(q.number, q.title, q.options, q.suggestion)
    return lines


def compose(
    kind: str,
    where: Where,
    detail: str = "",
    *,
    last: LastIteration | None = None,
    total_cost: float | None = None,
    body: list[str] | tuple[str, ...] = (),
) -> str:
    """The notification: who and where, what happened, the last iteration, then the gate's body."""
    first = format_event(kind, where.session, where.phase, detail).splitlines()[0]
    lines = [first, f"{where.project} on {where.host}"]
    if last is not None:
        lines.append(iteration_line(last))
    if total_cost is not None:
        lines.append(f"Session spend: ${total_cost:.2f}")
    lines += body
    text = "\n".join(lines)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# -- the gate a session stands at, read from its files ---------------------------------------------

PLAN_GATE = "plan_approval"
QA_GATE = "qa_answers"
BLOCKED = "blocked"
HUMAN_GATES = (PLAN_GATE, QA_GATE, BLOCKED)  # the gates a reply from the phone can open


@dataclass(frozen=True)
class Gate:
    kind: str  # one of HUMAN_GATES, another wait's name (human_action, usage_limit), or "" for none
    phase: str
    body: tuple[str, ...] = ()  # what the decision needs: the plan, the questions, the reason


def gate_of(paths: SessionPaths) -> Gate:
    """Which gate the session stands at now, and the lines a human needs to pass it."""
    from worker import history as hist
    from worker import overview, plans, statusbuild
    from worker.errors import OverviewError

    try:
        ov = overview.parse(overview.read_bytes(paths.overview)[0])
        phase = ov.state().phase.value
    except OverviewError as exc:
        return Gate("", "?", (f"_overview.md unusable: {exc.reason}",))
    try:
        history = hist.read(paths.history, limit=200)
    except OSError:
        history = []
    blocked = ov.get("blocked").lower()
    wait = hist.waits_for(ov.get("waiting for"), history)
    if blocked.startswith("yes"):
        pending = hist.pending_decision(history)
        reason = str(pending.get("reason") or ov.get("last action").removeprefix("Blocked: ") or "-")
        needs = str(pending.get("needs") or "human_decision").replace("_", " ")
        body = (f"Reason: {clip(reason, 600)}", f"Needed: {needs}")
        return Gate(BLOCKED, phase, body)
    if not blocked.startswith("waiting"):
        return Gate("", phase)
    if phase == "planning" and plans.waits_for_approval(
        blocked, ov.get("waiting for"), ov.get("next"), history
    ):
        plan = statusbuild.newest_plan(paths.dir, history)
        return Gate(PLAN_GATE, phase, tuple(plan_lines(Path(plan) if plan else None)))
    if wait == QA_GATE:
        return Gate(QA_GATE, phase, tuple(qa_lines(paths.qa)))
    reason = str(hist.pending_decision(history).get("reason") or ov.get("last action") or "")
    return Gate(wait or "human", phase, (f"Needed: {clip(reason, 600)}",) if reason else ())


def spent(paths: SessionPaths) -> float | None:
    """The session's spend so far from the history's running totals; None when unknown."""
    from worker import history as hist

    try:
        costs = hist.totals(paths.history).get("cost_usd") or {}
    except OSError:
        return None
    return sum(costs.values()) if costs else None


# -- the notifier's side: facts of the iteration, then the message ---------------------------------


class Briefer:
    """Sends the loop's notifications with what a decision needs. Does nothing (not even a git
    call) when Telegram is not configured."""

    def __init__(self, paths: SessionPaths, project: str, notifier: Notifier, working_dir: Path) -> None:
        self.paths = paths
        self.project = project
        self.notifier = notifier
        self.working_dir = working_dir
        self.on = not isinstance(notifier, NullNotifier)
        self._head: str | None = None
        self.last: LastIteration | None = None

    def iteration_started(self, working_dir: Path) -> None:
        self.working_dir, self.last = working_dir, None
        if self.on:
            self._head = gitops.head(working_dir)

    def iteration_ended(self, total: int, duration_s: float, cost_usd: float | None) -> None:
        if not self.on:
            return
        changes = gitops.changes_since(self.working_dir, self._head) if self._head else None
        files, commits = changes if changes else (None, None)
        self.last = LastIteration(total, duration_s, cost_usd, files, commits)

    def where(self, phase: str) -> Where:
        return Where(self.project, host(), self.paths.name, phase)

    def message(self, kind: str, phase: str, detail: str, total_cost: float | None) -> str:
        """The text of a notification; at a stop for a human, the gate's details from the files."""
        body: tuple[str, ...] = ()
        if kind in ("waiting", "blocked"):
            gate = gate_of(self.paths)
            body, phase = gate.body, gate.phase if gate.phase != "?" else phase
        if total_cost is None:
            total_cost = spent(self.paths)
        return compose(kind, self.where(phase), detail, last=self.last, total_cost=total_cost, body=body)

    def send(self, kind: str, phase: str, detail: str, total_cost: float | None) -> None:
        if self.on:
            self.notifier.send(self.message(kind, phase, detail, total_cost))
