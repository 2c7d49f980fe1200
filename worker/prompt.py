"""What the child reads each iteration: workflow.md, the phase agent and the session context.

The providers depend on this module (they put the pieces together for their CLI), never the other
way round."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.config import INSTALL_ROOT
from worker.errors import InstallError
from worker.phases import PHASES, Phase


@dataclass(frozen=True)
class AgentSpec:
    """A phase agent file: frontmatter fields plus the body."""

    name: str
    description: str
    body: str
    tools: tuple[str, ...] = ()
    model: str = ""


def agent_path(phase: Phase, root: Path = INSTALL_ROOT) -> Path:
    return root / "agents" / f"{phase.value}-agent.md"


# Frontmatter as the shipped agent files write it: `key: value` lines, each value plain words or one
# double-quoted line without escapes, closed by `---`. YAML reads every such value as that text.
_PLAIN_FRONTMATTER = re.compile(
    r"---\n((?:[a-z][a-z_]*: "
    r'(?:[A-Za-z](?:[A-Za-z0-9 _,./()-]*[A-Za-z0-9_,./()-])?|"[ !#-\[\]-~]*")\n)+)---(?:\n|$)'
)
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})  # read as bool or None


def plain_frontmatter(text: str) -> tuple[dict[str, str], str] | None:
    """python-frontmatter's metadata and content for frontmatter of plain lines only, else None."""
    text = text.replace("\r\n", "\n").strip()  # as python-frontmatter prepares it
    match = _PLAIN_FRONTMATTER.match(text)
    if match is None:
        return None
    meta: dict[str, str] = {}
    for line in match[1].splitlines():
        key, value = line.split(": ", 1)
        if key in _YAML_WORDS or value.lower() in _YAML_WORDS:
            return None
        meta[key] = value[1:-1] if value.startswith('"') else value
    return meta, text[match.end() :].strip()


def load_agent(phase: Phase, root: Path = INSTALL_ROOT) -> AgentSpec:
    path = agent_path(phase, root)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"agent file {path} cannot be read ({exc.strerror}); reinstall samocode") from None
    except UnicodeDecodeError as exc:
        raise InstallError(f"agent file {path} has broken frontmatter: {exc}") from None
    meta: Mapping[str, object]
    found = plain_frontmatter(text)
    if found is not None:
        meta, content = found
    else:
        import frontmatter  # imported here: PyYAML costs start-up 13 ms, and the shipped files are plain
        import yaml

        try:
            post = frontmatter.loads(text)
        except (yaml.YAMLError, ValueError) as exc:
            raise InstallError(f"agent file {path} has broken frontmatter: {exc}") from None
        meta, content = post.metadata, post.content
    tools = meta.get("tools") or ()
    if isinstance(tools, str):
        tools = tuple(t.strip() for t in tools.split(",") if t.strip())
    if not isinstance(tools, Iterable):
        raise InstallError(f"agent file {path} has broken frontmatter: tools is neither a list nor a string")
    return AgentSpec(
        name=str(meta.get("name") or f"samocode-{phase.value}"),
        description=str(meta.get("description") or f"samocode {phase.value} phase"),
        body=content.strip() + "\n",
        tools=tuple(str(t) for t in tools),
        model=str(meta.get("model") or ""),
    )


def write_agent_file(path: Path, body: str) -> None:
    """The agent's text in a file for the CLI, written only when the file does not hold it already:
    rewriting a file in place waits for the writeback of its last write (1-2 ms between two
    children here). OSError when it cannot be written."""
    data = body.encode("utf-8")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never blocks on a FIFO
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size == len(data) and os.read(fd, len(data) + 1) == data:
                return
        finally:
            os.close(fd)
    path.write_bytes(data)


def load_workflow(root: Path = INSTALL_ROOT) -> str:
    path = root / "workflow.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"{path} cannot be read ({exc.strerror}); reinstall samocode") from None


@dataclass(frozen=True)
class Context:
    session_dir: Path
    working_dir: Path
    main_repo: Path
    branch: str  # '' when MAIN_REPO is not a git repository
    phase: Phase
    iteration: int
    total: int
    now: str  # 'YYYY-MM-DD HH:MM'
    time_limit: float
    provider: str
    task: str = ""
    dive: str = ""
    previous_attempt: str = ""  # why the last attempt of this iteration was not accepted


def session_context(ctx: Context) -> str:
    month_day, clock = ctx.now[5:10], ctx.now[11:16]
    worktree = (
        f"git worktree on branch `{ctx.branch}`: commit code there, never in Main Repo"
        if ctx.branch and ctx.working_dir != ctx.main_repo
        else ("the main repository itself" if ctx.branch else "not a git repository: work in place")
    )
    lines = [
        "## Session context",
        f"- Session Dir: {ctx.session_dir}",
        f"- Working Dir: {ctx.working_dir}",
        f"- Main Repo: {ctx.main_repo}",
        f"- Working Dir is: {worktree}",
        f"- Phase: {ctx.phase.value}",
        f"- Iteration: {ctx.iteration} (cap {PHASES[ctx.phase].cap})",
        f"- Total Iterations: {ctx.total}",
        f"- Flow Log prefix: [{ctx.total + 1:03d} @ {month_day} {clock}]",
        f"- Artifact prefix: {month_day}-{clock}",
        f"- Now: {ctx.now}",
        f"- Time limit: {int(ctx.time_limit)} s (the worker stops this iteration after that)",
        f"- Provider: {ctx.provider}",
    ]
    if ctx.previous_attempt:
        lines.append(f"- Previous attempt of this iteration failed: {ctx.previous_attempt}")
    if ctx.task:
        lines += ["", "### Task (from the command line)", ctx.task.strip()]
    if ctx.dive:
        lines += ["", "### Dive (from the command line)", ctx.dive.strip()]
    return "\n".join(lines) + "\n"


def compose(workflow: str, context: str, agent: AgentSpec | None = None) -> str:
    """The prompt text. `agent` is inlined for CLIs without a subagent mechanism."""
    parts = [workflow.rstrip() + "\n"]
    if agent is not None:
        parts.append(f"# Phase agent: {agent.name}\n\n{agent.body.rstrip()}\n")
    parts.append(context)
    return "\n".join(parts)
