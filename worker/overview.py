"""`_overview.md`: its Status section parsed with mistune and edited field by field; its one safe reader.

The worker owns a few Status fields (Phase, Iteration, Total Iterations, Blocked, Waiting For,
Total Cost, and Last Action/Next when it decides something itself) and appends its own Flow Log
lines. Every other byte (headings, the agent's notes, CRLF endings, unicode, `Phase:` lines in
code blocks or other sections) is left exactly as it was.

Only the head of the text is parsed (and, from bytes, decoded): the Status section and the Flow Log's
heading sit near the top, so mistune parses a prefix that grows until it holds them. No caches: every
call works from the text it is given. The Flow Log itself is `flowlog`'s; writing the file back, `splice`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import OverviewError
from worker.mdblocks import STATUS, Section, find

if TYPE_CHECKING:
    from worker.phases import SessionState

MAX_OVERVIEW_BYTES = 16 * 1024 * 1024
MAX_FIELD = 1000  # characters of one Status value: a child's 60 KB reason stays in the history

_FIELD = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(\*\*)?(?P<key>[A-Za-z][A-Za-z ]{0,40}?)(?:\*\*)?:(?:\*\*)?[ \t]*"
)


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
    flow: Section | None = None  # the Flow Log's heading, when the parsed prefix held it

    def get(self, key: str, default: str = "") -> str:
        field = self.fields.get(key.lower())
        return field.value if field else default

    def state(self) -> SessionState:
        from worker.phases import SessionState, parse_phase  # here: status, watch and sessions need no phases

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


def parse(src: str | bytes) -> Overview:
    """The overview's Status section and fields. From the whole text, `text` is that text; from the
    file's bytes (valid UTF-8), it is only the head that was decoded and parsed."""
    status, tokens, flow, text = find(src, STATUS)
    text = src if isinstance(src, str) else text
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
    return Overview(text, status, fields, flow)


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text[:4096] else "\n"


def set_fields(ov: Overview, updates: Mapping[str, str | None]) -> str:
    """The overview text with Status fields set; untouched bytes stay identical.

    A value of None sets the field to '-' only when the field is already there."""
    pieces, pos = [], 0
    for start, end, value in field_edits(ov, updates, newline_of(ov.text)):
        pieces += [ov.text[pos:start], value]
        pos = end
    pieces.append(ov.text[pos:])
    return "".join(pieces)


def field_edits(ov: Overview, updates: Mapping[str, str | None], nl: str) -> list[tuple[int, int, str]]:
    """`set_fields` as (start, end, new text) replacements in `ov.text`, in order; `nl`, the
    overview's line ending."""
    edits: list[tuple[int, int, str]] = []
    missing = []
    for key, value in updates.items():
        field = ov.fields.get(key.lower())
        if value is None:  # "clear it if it is there"
            if field is None:
                continue
            value = "-"
        value = " ".join(value.split())  # a field is one line
        if len(value) > MAX_FIELD:  # the history keeps the whole text
            value = value[: MAX_FIELD - 1] + "…"
        if field is None:
            missing.append(f"{key}: {value}")
        elif field.value != value:
            edits.append((field.value_start, field.value_end, value))
    if missing:
        at = max(ov.fields.values(), key=lambda f: f.line_end).line_end
        prefix = "" if ov.text[:at].endswith(("\n", "\r")) else nl
        edits.append((at, at, prefix + nl.join(missing) + nl))
    return sorted(edits)


def read_text(path: Path, head: int = 0) -> str:
    """The overview's text (see `read_bytes`). Every reader of the overview (the worker and every
    command) uses this one or `read_bytes`.

    With `head`, only the first `head` bytes (a character cut at the end is replaced), or all of
    them when the Status section runs past those: for a look at many sessions' Status."""
    data, st = read_bytes(path, head)
    if head and st.st_size > head:
        text = data.decode("utf-8", "replace")
        with contextlib.suppress(OverviewError):
            parse(text)
            return text
        data, _ = read_bytes(path)
    return data.decode("utf-8")


def read_bytes(path: Path, head: int = 0) -> tuple[bytes, os.stat_result]:
    """The overview's bytes, valid UTF-8, and the file's status, read without blocking or following
    links: a FIFO, a device, a directory or a symlink there, or unreadable, oversized or non-UTF-8
    content, is an OverviewError. With `head`, at most the first `head` bytes, not checked."""
    for _ in range(5):
        data, st = _read_once(path, head)
        # A child's editor may rewrite the file in place while `status` reads it: bytes read from an
        # inode that changed since, or is no longer the overview, may be half of that write.
        with contextlib.suppress(OSError):
            if not same_file(os.stat(path, follow_symlinks=False), st):
                continue
        if not (head and st.st_size > head) and not data.isascii():
            try:
                data.decode("utf-8")  # a check only: the text is dropped
            except UnicodeDecodeError as exc:
                raise OverviewError(f"_overview.md is not valid UTF-8 (byte {exc.start})") from None
        return data, st
    raise OverviewError("_overview.md kept changing while it was read")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """The same inode, unchanged: its size and its change and modification times are the same."""
    keys = ("st_ino", "st_dev", "st_size", "st_mtime_ns", "st_ctime_ns")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _read_once(path: Path, head: int) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OverviewError("_overview.md is missing") from None
    except OSError as exc:
        if path.is_symlink():
            raise OverviewError("_overview.md is a symlink; refusing to follow it") from None
        raise OverviewError(f"cannot read _overview.md: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OverviewError("_overview.md is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OverviewError("_overview.md is not a regular file")
        if st.st_size > MAX_OVERVIEW_BYTES:
            raise OverviewError(f"_overview.md is {st.st_size // (1024 * 1024)} MB; the limit is 16 MB")
        if head and st.st_size > head:
            return os.pread(fd, head, 0), st
        # One read, short of what it asked for: a file that grew since the fstat takes more. (Asking
        # a second time for as much only to learn it is the end costs a second buffer that size.)
        chunks, size, want = [], 0, st.st_size + 1
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_OVERVIEW_BYTES:
                raise OverviewError("_overview.md is over 16 MB; the limit is 16 MB")
            if len(chunk) < want:
                break
            want = 65536
    except OSError as exc:
        raise OverviewError(f"cannot read _overview.md: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


def write_atomic(path: Path, text: str, sync: bool = True) -> None:
    """Replace the file in one step: a dead process leaves the old or the new text, never half of
    one. With `sync` (not the journal's per-iteration writes) it survives a dead machine too."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def locked(session_dir: Path) -> Iterator[None]:
    """Serialises read-modify-write of session files between the worker and parent commands."""
    fd = os.open(session_dir / ".samocode.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def render_new(
    name: str, started: str, working_dir: str, task: str, dive: str, first_entry: str, nl: str = "\n"
) -> str:
    from worker.phases import Phase  # here: status, watch and sessions need no phases

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
