"""`_overview.md`: parsed with mistune into sections, edited field by field, written atomically.

The worker owns a few Status fields (Phase, Iteration, Total Iterations, Blocked, Waiting For,
Total Cost, and Last Action/Next when it decides something itself) and appends its own Flow Log
lines. Every other byte (headings, the agent's notes, CRLF endings, unicode, `Phase:` lines in
code blocks or other sections) is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mistune

from worker.phases import Phase, SessionState, parse_phase

STATUS = "status"
FLOW_LOG = "flow log"
# Worker-owned Status fields, in the order they are inserted when missing.
OWNED_ORDER = ("Phase", "Iteration", "Total Iterations", "Blocked", "Waiting For", "Total Cost")
MAX_OVERVIEW_BYTES = 16 * 1024 * 1024

# Lists and block quotes cannot hold a section heading, so the scan skips them: the parser then
# treats their lines as paragraph text, which is all the field scan needs, at a third of the cost.
_RULES = [
    "fenced_code",
    "indent_code",
    "atx_heading",
    "setex_heading",
    "thematic_break",
    "raw_html",
    "blank_line",
]
_FIELD = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(\*\*)?(?P<key>[A-Za-z][A-Za-z ]{0,40}?)(?:\*\*)?:(?:\*\*)?[ \t]*"
)
_FLOW_ENTRY = re.compile(r"^[ \t]*[-*+][ \t]+\[")


class OverviewError(Exception):
    """The overview cannot be used; `reason` is one line fit for a blocked status."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    start: int  # offset of the heading
    body_start: int  # offset just after the heading
    end: int  # offset of the next heading of the same or a higher level, or the end


@dataclass(frozen=True)
class Field:
    key: str
    value: str
    value_start: int
    value_end: int  # before the line ending
    line_end: int  # after the line ending


@dataclass(frozen=True)
class Overview:
    text: str
    status: Section
    fields: Mapping[str, Field]  # lower-case key -> first Field in the Status section

    def get(self, key: str, default: str = "") -> str:
        field = self.fields.get(key.lower())
        return field.value if field else default

    def state(self) -> SessionState:
        phase = parse_phase(self.get("phase"))
        if phase is None:
            raise OverviewError(f"unknown phase '{self.get('phase')}' in the Status section")
        return SessionState(phase, _count(self, "iteration", 1), _count(self, "total iterations", 0))


def _count(ov: Overview, key: str, default: int) -> int:
    text = ov.get(key)
    if not text:
        return default
    match = re.match(r"\d+", text)
    if not match:
        raise OverviewError(f"'{key.title()}: {text}' in the Status section is not a number")
    return int(match.group())


class _State(mistune.BlockState):
    """Records where each top-level token starts, which mistune itself does not keep."""

    def append_token(self, token: dict) -> None:
        token.setdefault("_start", self.cursor)
        super().append_token(token)

    def add_paragraph(self, text: str) -> None:
        last = self.last_token()
        if last and last["type"] == "paragraph":
            last["text"] += text
        else:
            self.tokens.append({"type": "paragraph", "text": text, "_start": self.cursor})


class _Parser(mistune.BlockParser):
    state_cls = _State

    def parse_method(self, m: re.Match, state: mistune.BlockState) -> int | None:
        first, start = len(state.tokens), state.cursor
        end = super().parse_method(m, state)
        for token in state.tokens[first:]:
            token["_start"] = start  # some rules append their token only after parsing the body
        return end


_PARSER = _Parser()


def _tokens(text: str) -> list[dict]:
    """Top-level block tokens with `_start`/`_end` offsets into `text`."""
    # Same length as `text`, so offsets carry over; mistune would otherwise fold CRLF itself.
    src = text.replace("\r", " ")
    state = _State()
    state.process(src if src.endswith("\n") else src + "\n")
    _PARSER.parse(state, _RULES)
    tokens = sorted(state.tokens, key=lambda t: t["_start"])
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        token["_end"] = min(following["_start"] if following else len(text), len(text))
    return tokens


def _heading_title(text: str, token: dict) -> str:
    line = text[token["_start"] : token["_end"]].splitlines()[0] if token["_end"] > token["_start"] else ""
    return line.strip().strip("#").strip().strip("*").strip().lower()


def sections(text: str, tokens: list[dict] | None = None) -> list[Section]:
    tokens = _tokens(text) if tokens is None else tokens
    heads = [t for t in tokens if t["type"] == "heading"]
    found = []
    for i, head in enumerate(heads):
        level = head["attrs"]["level"]
        end = next((h["_start"] for h in heads[i + 1 :] if h["attrs"]["level"] <= level), len(text))
        body = text.find("\n", head["_start"])
        body_start = len(text) if body < 0 else body + 1
        if head.get("style") == "setext":  # the underline belongs to the heading
            under = text.find("\n", body_start)
            body_start = len(text) if under < 0 else under + 1
        found.append(Section(_heading_title(text, head), level, head["_start"], body_start, end))
    return found


def _find(text: str, name: str) -> tuple[Section | None, list[dict]]:
    """The first section titled `name`, parsing only as much of the text as it takes."""
    size = 4096  # the Status section is near the top; the regex scan costs per byte parsed
    while True:
        cut = len(text) if size >= len(text) else text.rfind("\n", 0, size) + 1 or len(text)
        tokens = _tokens(text[:cut])
        for index, section in enumerate(found := sections(text[:cut], tokens)):
            if section.title != name:
                continue
            # A section is final once a later heading closes it well inside the parsed prefix.
            closed = section.end < cut and any(s.start == section.end for s in found[index + 1 :])
            if cut == len(text) or (closed and section.end < cut - 512):
                return section, tokens
        if cut == len(text):
            return None, tokens
        size *= 4


_parsed: tuple[str, Overview] | None = None


def parse(text: str) -> Overview:
    """The overview's Status section and fields; the last result is reused for the same text."""
    global _parsed
    if _parsed is not None and _parsed[0] is text:
        return _parsed[1]
    ov = _parse(text)
    _parsed = (text, ov)
    return ov


def _parse(text: str) -> Overview:
    status, tokens = _find(text, STATUS)
    if status is None:
        raise OverviewError("_overview.md has no '## Status' section")
    fields: dict[str, Field] = {}
    phase_lines = 0
    for token in tokens:
        if token["type"] != "paragraph" or not (status.body_start <= token["_start"] < status.end):
            continue
        pos = token["_start"]
        for line in text[pos : min(token["_end"], status.end)].splitlines(keepends=True):
            match = _FIELD.match(line)
            if match:
                key = match.group("key").strip()
                body = line.rstrip("\r\n")
                value_start = pos + match.end()
                field = Field(
                    key,
                    body[match.end() :].strip().strip("*").strip(),
                    value_start,
                    pos + len(body),
                    pos + len(line),
                )
                phase_lines += key.lower() == "phase"
                fields.setdefault(key.lower(), field)
            pos += len(line)
    if "phase" not in fields:
        raise OverviewError("the Status section of _overview.md has no 'Phase:' line")
    if phase_lines > 1:
        raise OverviewError("the Status section of _overview.md has more than one 'Phase:' line")
    return Overview(text, status, fields)


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text[:4096] else "\n"


def set_fields(ov: Overview, updates: Mapping[str, str | None]) -> str:
    """The overview text with Status fields set; untouched bytes stay identical.

    A value of None sets the field to '-' only when the field is already there."""
    text, nl = ov.text, newline_of(ov.text)
    edits: list[tuple[int, int, str]] = []
    missing = []
    for key, value in updates.items():
        field = ov.fields.get(key.lower())
        if value is None:  # "clear it if it is there"
            if field is None:
                continue
            value = "-"
        value = " ".join(value.split())  # a field is one line
        if field is None:
            missing.append(f"{key}: {value}")
        elif field.value != value:
            edits.append((field.value_start, field.value_end, value))
    if missing:
        last = max(ov.fields.values(), key=lambda f: f.line_end)
        at = last.line_end
        prefix = "" if text[:at].endswith(("\n", "\r")) else nl
        edits.append((at, at, prefix + nl.join(missing) + nl))
    pieces, pos = [], 0
    for start, end, value in sorted(edits):
        pieces += [text[pos:start], value]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def append_flow(text: str, entry: str) -> str:
    """The text with one Flow Log line appended after the section's last entry."""
    nl = newline_of(text)
    section, _ = _find(text, FLOW_LOG)
    line = f"- {entry}" if not entry.startswith("- ") else entry
    if section is None:
        sep = "" if text.endswith(("\n", "\r")) or not text else nl
        return f"{text}{sep}{nl}## Flow Log{nl}{nl}{line}{nl}"
    body = text[section.body_start : section.end]
    content_end = len(body.rstrip(" \t\r\n"))
    at = section.body_start + content_end
    if content_end == 0:  # empty section: keep one blank line under the heading
        return text[: section.body_start] + nl + line + nl + text[section.body_start :]
    return text[:at] + nl + line + text[at:]


def flow_entries(text: str, limit: int = 3) -> list[str]:
    section, _ = _find(text, FLOW_LOG)
    if section is None:
        return []
    lines = [ln.strip() for ln in text[section.body_start : section.end].splitlines()]
    return [ln for ln in lines if _FLOW_ENTRY.match(ln)][-limit:]


# The text this process last wrote, with the file's identity right after the write: reading the
# file back while nobody else has touched it (same inode, size and timestamps) needs no I/O.
_written: tuple[tuple[str, int, int, int, int], str] | None = None


def _identity(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_text(path: Path) -> str:
    """The overview's text; unreadable, oversized or non-UTF-8 content is an OverviewError."""
    try:
        if path.is_symlink():
            raise OverviewError("_overview.md is a symlink; refusing to follow it")
        st = path.stat()
        if _written is not None and _written[0] == _identity(path, st):
            return _written[1]
        size = st.st_size
        if size > MAX_OVERVIEW_BYTES:
            raise OverviewError(f"_overview.md is {size // (1024 * 1024)} MB; the limit is 16 MB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise OverviewError("_overview.md is missing") from None
    except IsADirectoryError:
        raise OverviewError("_overview.md is a directory") from None
    except OSError as exc:
        raise OverviewError(f"cannot read _overview.md: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OverviewError(f"_overview.md is not valid UTF-8 (byte {exc.start})") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace the file in one step: a crash leaves the old or the new text, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    global _written
    _written = (_identity(path, path.stat()), text)


@contextlib.contextmanager
def locked(session_dir: Path) -> Iterator[None]:
    """Serialises read-modify-write of session files between the worker and parent commands."""
    fd = os.open(session_dir / ".samocode.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(path: Path, fields: Mapping[str, str | None], flow: Sequence[str] = ()) -> str:
    """Locked read, edit, atomic write. Returns the text as written."""
    with locked(path.parent):
        text = read_text(path)
        ov = parse(text)
        new = set_fields(ov, fields) if fields else text
        for entry in flow:
            new = append_flow(new, entry)
        if new != text:
            write_atomic(path, new)
        return new


def render_new(
    name: str, started: str, working_dir: str, task: str, dive: str, first_entry: str, nl: str = "\n"
) -> str:
    none = "_(none given)_"
    lines = [
        f"# Session: {name}",
        "",
        f"Started: {started}",
        f"Working Dir: {working_dir}",
        "",
        "## Task",
        task.strip() or none,
        "",
        "## Dive",
        dive.strip() or none,
        "",
        "## Status",
        f"Phase: {Phase.INVESTIGATION.value}",
        "Iteration: 1",
        "Total Iterations: 0",
        "Blocked: no",
        "Last Action: Session created",
        "Next: Investigate the task",
        "",
        "## Flow Log",
        f"- {first_entry}",
        "",
        "## Files",
        "",
    ]
    return nl.join(lines)
