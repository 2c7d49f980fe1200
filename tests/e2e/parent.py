"""A scripted parent: the model of a Claude Code chat that follows the samocode-run skill to the letter.

It runs inside the real `claude` CLI as the scripted model server's `converse` hook. Everything it
does comes from the conversation the CLI resends with every request, so its next action is a pure
function of that conversation:

- the user's request (the first user text that is not a system reminder): the session name, the task,
  whether the user said "auto-approve", whether they asked to leave the worker running, whether it is
  the /samocode-implement hand-off;
- the skill as the CLI delivered it (the text block that follows the Skill tool's result, or the one
  the slash command expanded into): its fenced `bash` command lines, with `<CONFIG>`, `<NAME>` and
  `<TASK>` filled in, the Bash time limit it asks for, and the Worker line it says to stop on;
- what its own Bash calls printed: exit code ("Exit code N" on a failed call), the Worker and
  Waiting-for lines of a report.

A skill that loses a command line, the stop rule or the time limit makes the parent give up with a
"skill unusable" reply, so a change that breaks the protocol breaks the test that drives this parent.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from .model_server import Conversation, Reply, Tool, ToolCall, parse_session_context

SKILL_MARK = "Base directory for this skill:"
GIVE_UP = "PARENT GAVE UP"
MAX_CALLS = 80  # a session through both gates takes about 20; more means the parent is looping
_EXIT = re.compile(r"\AExit code (\d+)")
_LAST_RUN = re.compile(r"last run exited (\d+)(?: \(([^)]*)\))?")
_WAITING_FOR = re.compile(r"Waiting for: ([a-z_]+)")


class SkillUnusable(ValueError):
    """The delivered skill lacks something the protocol needs."""


@dataclass(frozen=True)
class Request:
    """What the user asked for, read from their first message."""

    name: str
    task: str | None
    auto: bool  # the user allowed approving and accepting suggestions
    leave: bool  # the user asked to start the worker and leave it running
    implement: bool  # /samocode-implement: the request is the plan's approval


@dataclass(frozen=True)
class Protocol:
    """What the parent takes from the skill text: command templates and the rules it needs."""

    commands: dict[str, str]  # "status", "start_new", "start", "watch", "approve", "accept", "stop"
    bash_timeout_ms: int
    stop_marker: str  # the report line that ends the watch loop, e.g. "Worker: not running"
    no_session: int  # the exit code of `status` for a session that does not exist yet


def is_child(conv: Conversation) -> bool:
    """A request from a child the worker spawned: its prompt carries the worker's session context."""
    return any(parse_session_context(text).session_dir is not None for text in conv.user_texts())


# --- reading the conversation ----------------------------------------------------------------------


def request_of(conv: Conversation) -> Request:
    texts = [t for t in conv.user_texts() if not t.lstrip().startswith("<system-reminder>")]
    first = next((t for t in texts if not t.startswith(SKILL_MARK)), "")
    command = re.search(r"<command-name>/?([^<]+)</command-name>", first)
    args = re.search(r"<command-args>(.*?)</command-args>", first, re.S)
    words = args.group(1) if args else first
    if command:
        name = words.split()[0] if words.split() else ""
    else:
        found = re.search(r"\bon ([A-Za-z0-9._-]+)", words)
        name = found.group(1) if found else ""
    task = re.search(r'task "([^"]+)"', words)
    return Request(
        name=name,
        task=task.group(1) if task else None,
        auto="auto-approve" in words,
        leave="leave it running" in words,
        implement=bool(command and command.group(1).endswith("samocode-implement")),
    )


def skill_text(conv: Conversation) -> str | None:
    found = [t for t in conv.user_texts() if t.startswith(SKILL_MARK)]
    return found[-1] if found else None


def skill_name(conv: Conversation) -> str:
    """The name the CLI lists the skill under (`samocode:samocode-run` when installed as a plugin),
    from its listing "The following skills are available ...: - <name>: <description>"."""
    listing = "\n".join(conv.texts("system") + conv.user_texts())
    found = re.search(r"^- ((?:samocode:)?samocode-run): ", listing, re.M)
    return found.group(1) if found else "samocode-run"


def read_skill(text: str) -> Protocol:
    lines = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.strip()
    ]

    def one(what: str, sub: str, keep=lambda line: True) -> str:
        found = [x for x in lines if re.search(rf'/scripts/samocode"? {sub}\b', x) and keep(x)]
        if len(found) != 1:
            raise SkillUnusable(f"{len(found)} code-block lines for {what} (need exactly 1)")
        return found[0]

    commands = {
        "status": one("status", "status"),
        "start_new": one("starting a new session", "start", lambda x: "<TASK>" in x),
        "start": one("starting an existing session", "start", lambda x: "--task" not in x),
        "watch": one("watch", "watch"),
        "approve": one("approve", "approve"),
        "accept": one("accepting suggestions", "answer", lambda x: "--accept-suggestions" in x),
        "stop": one("stop", "stop"),
    }
    limits = re.findall(r"timeout: (\d+)", text)
    if not limits:
        raise SkillUnusable("no Bash time limit (`timeout: N`) for watch")
    stop = re.search(r"[Ss]top watching only when the report says `([^`]+)`", text)
    if not stop:
        raise SkillUnusable("no rule saying when to stop watching")
    missing = re.search(r"Exit (\d+) \(no session named", text)
    if not missing:
        raise SkillUnusable("no exit code for a session that does not exist yet")
    return Protocol(commands, int(limits[0]), stop.group(1), int(missing.group(1)))


def exit_code(call: ToolCall) -> int:
    """A failed Bash call's result starts with "Exit code N"; anything else exited 0."""
    match = _EXIT.match(call.result or "")
    return int(match.group(1)) if call.is_error and match else 0


# --- deciding ----------------------------------------------------------------------------------------


def _fill(template: str, config: str, req: Request) -> str:
    out = template.replace("<CONFIG>", shlex.quote(config)).replace("<NAME>", shlex.quote(req.name))
    return out.replace("<TASK>", req.task or "")


def _bash(command: str, proto: Protocol, description: str) -> Tool:
    return Tool("Bash", {"command": command, "description": description, "timeout": proto.bash_timeout_ms})


def _after_report(report: str, req: Request, run) -> Tool | Reply:
    """Act on a status report of a session whose worker is not running (skill steps 3 and 6)."""
    last = _LAST_RUN.search(report)
    if last is not None:
        code, reason = int(last.group(1)), last.group(2) or ""
    elif "Blocked: waiting_human" in report:  # no recorded run (e.g. a session worked by hand)
        code, reason = 3, ""
    elif "Blocked: yes" in report:
        code, reason = 4, ""
    else:
        return run("start", "start the worker")
    if code == 0:
        return Reply(f"samocode {req.name} is done. Summary: {reason}")
    if code == 3:
        wait = _WAITING_FOR.search(report)
        waiting = wait.group(1) if wait else reason.removeprefix("waiting for ").strip()
        if waiting == "plan_approval" and (req.auto or req.implement):
            return run("approve", "approve the plan")
        if waiting == "qa_answers" and req.auto:
            return run("accept", "accept the suggested answers")
        return Reply(f"samocode {req.name} waits for {waiting}: {reason}")
    return Reply(f"samocode {req.name} stopped: exit {code} ({reason})")


def next_action(conv: Conversation) -> Tool | Reply:
    """The parent's next move, from the conversation alone."""
    calls = conv.calls()
    if len(calls) > MAX_CALLS:
        return Reply(f"{GIVE_UP}: more than {MAX_CALLS} tool calls")
    req = request_of(conv)
    text = skill_text(conv)
    if text is None:
        if any(c.name == "Skill" for c in calls):
            return Reply(f"{GIVE_UP}: the Skill tool delivered no skill text")
        return Tool("Skill", {"skill": skill_name(conv), "args": req.name})
    try:
        proto = read_skill(text)
    except SkillUnusable as exc:
        return Reply(f"{GIVE_UP}: skill unusable: {exc}")
    bash = [c for c in calls if c.name == "Bash"]
    if not bash:  # step 1: the project's .samocode, as an absolute path
        return Tool("Bash", {"command": "realpath .samocode", "description": "find .samocode"})
    if exit_code(bash[0]) != 0:
        return Reply(f"{GIVE_UP}: no .samocode here")
    config = (bash[0].result or "").strip()

    last = bash[-1]

    def run(key: str, description: str) -> Tool | Reply:
        if key.startswith("start") and len(bash) >= 2 and _failed_start(bash[-2], proto, config, req):
            return Reply(f"{GIVE_UP}: the worker ended at once after a start; not starting it again")
        return _bash(_fill(proto.commands[key], config, req), proto, description)

    if len(bash) == 1:
        return run("status", "check the session")
    kind = next(
        (k for k in proto.commands if _fill(proto.commands[k], config, req) == last.input.get("command")),
        None,
    )
    code, out = exit_code(last), last.result or ""
    if kind == "status":
        if code == proto.no_session:
            if not req.task:
                return Reply("What should samocode do in the new session?")
            return run("start_new", "start the worker")
        if code != 0:
            return Reply(f"{GIVE_UP}: status exited {code}: {out}")
        if _worker_running(out, proto):
            return run("watch", "watch the worker")
        return _after_report(out, req, run)
    if kind in ("start", "start_new"):
        if code == 0 and "started worker pid" in out:
            if req.leave:
                return Reply(f"samocode {req.name} is running on its own; I leave it to it.")
            return run("watch", "watch the worker")
        return run("status", "why did the start end")
    if kind == "watch":
        if code != 0:
            return Reply(f"{GIVE_UP}: watch exited {code}: {out}")
        if proto.stop_marker in out:
            return run("status", "report by the recorded exit")
        return run("watch", "watch the worker")
    if kind in ("approve", "accept"):
        if code != 0:
            return Reply(f"{GIVE_UP}: {kind} exited {code}: {out}")
        return run("start", "start the worker again")
    return Reply(f"{GIVE_UP}: did not run {last.input.get('command')!r}")


def _failed_start(call: ToolCall, proto: Protocol, config: str, req: Request) -> bool:
    starts = {_fill(proto.commands[k], config, req) for k in ("start", "start_new")}
    return call.input.get("command") in starts and exit_code(call) != 0


def _worker_running(report: str, proto: Protocol) -> bool:
    worker = next((x for x in report.splitlines() if x.startswith("Worker:")), "")
    return bool(worker) and not worker.startswith(proto.stop_marker)


class ScriptedParent:
    """The converse hook: plays the parent, leaves children to the step script; keeps what it did."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, conv: Conversation) -> Tool | Reply | None:
        if is_child(conv):
            return None
        try:
            return next_action(conv)
        except Exception as exc:  # a bug here must fail the test with its message, not hang the CLI
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return Reply(f"{GIVE_UP}: {type(exc).__name__}: {exc}")
