"""The overview's Flow Log: its lines, where it ends, the lines appended after its last entry, its last
entries.

It works on the file's bytes and never parses or decodes the log itself. The Flow Log's heading comes
from the overview's head, which `overview` parses anyway; its end (the next heading of its level or
higher) is found with one-byte `find`s for the characters that start the few lines that can begin a
block there (a heading, a fence, raw HTML, an underline of '=') and literal searches for the line ends
of a '-' underline. A heading line found that way is confirmed by mistune on that line alone. Only when
such a line is something other than a heading does mistune parse the rest of the text from the Flow
Log's heading on, which the worker's own lines never cause. The last entries are read from the
section's tail. The results are those of a full parse, byte for byte (tests/test_state_layer.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import replace

from worker.mdblocks import FLOW_LOG, Section, block_tokens, find, sections
from worker.overview import Overview

FLOW_EVENT_MAX = 300  # a Flow Log line points at what happened; the history keeps the whole text
_FLOW_ENTRY = re.compile(r"^[ \t]*[-*+][ \t]+\[")
# The lines the Flow Log's end depends on: an ATX heading, a fence, raw HTML, a setext underline. Every
# other line is paragraph text, a blank line, indented code or a thematic break, none of which can
# hide a heading after it. The first four start with a rare character, found by a fast `find` each;
# an underline holds '=' (found by `find`) or ends in '-' or blanks: those line ends are found by a
# literal search each (the fastest scan for two bytes), the last line apart. `\r` counts as a
# space, as the parser sees it.
_STARTS = (b"#", b"`", b"~", b"<")
_ENDS = {end: re.compile(re.escape(end)) for end in (b"-\n", b"-\r", b" \n", b" \r", b"\t\n", b"\t\r")}
_LAST_LINE = b""
_UNDERLINE = re.compile(rb"[ \r]{0,3}[=-]+[ \t\r]*\n?")


def flow_line(total: int, now: dt.datetime, event: str) -> str:
    """One Flow Log line: a child's text (a blocked reason) can hold newlines and headings, and
    must not add lines or sections to the overview."""
    event = " ".join(event.split())
    if len(event) > FLOW_EVENT_MAX:
        event = event[: FLOW_EVENT_MAX - 1] + "…"
    return f"[{total:03d} @ {now:%m-%d %H:%M}] {event}"


def heading(ov: Overview) -> Section | None:
    """The Flow Log's heading that `ov`'s parse found, in byte offsets of the text's UTF-8."""
    return _in_bytes(ov.text, ov.flow) if ov.flow else None


def _in_bytes(text: str, head: Section) -> Section:
    """A heading's offsets in `text`, as offsets in the text's UTF-8."""
    if text.isascii():
        return head
    start, body = (len(text[:at].encode("utf-8")) for at in (head.start, head.body_start))
    return replace(head, start=start, body_start=body)


def section(data: bytes, head: Section | None = None) -> Section | None:
    """The Flow Log section (byte offsets), found without parsing its lines (see the module's
    docstring); `head`, its heading when the caller already parsed it."""
    if head is None:
        found, _, _, text = find(data, FLOW_LOG, closed=False)
        head = _in_bytes(text, found) if found else None
    if head is None:
        return None
    ends = [e for e in _ENDS if (b"\r" not in e or b"\r" in data) and (b"\t" not in e or b"\t" in data)]
    found_at = {mark: -1 for mark in (*_STARTS, b"=", *ends, _LAST_LINE)}  # each kind's next candidate
    pos = head.body_start
    while True:
        for mark, at in found_at.items():
            if at < pos:
                found_at[mark] = _next_line_with(data, mark, pos)
        start = min((at for at in found_at.values() if at >= 0), default=-1)
        if start < 0:
            return replace(head, end=len(data))
        newline = data.find(b"\n", start)
        line_end = len(data) if newline < 0 else newline + 1
        level = _atx_level(data[start:line_end])
        if level is None:  # not a heading: let the parser decide from the heading on
            return _parsed_section(data, head)
        if level <= head.level:
            return replace(head, end=start)
        pos = line_end


def _next_line_with(data: bytes, mark: bytes, pos: int) -> int:
    """The start of the first line at or after `pos` (a line start) that may be a block of the
    `mark` kind (a byte of _STARTS, '=', a line end of _ENDS, or the last line), or -1."""
    if mark == _LAST_LINE:
        start = data.rfind(b"\n") + 1
        unended = start >= pos and not data.endswith(b"\n")
        return start if unended and _UNDERLINE.fullmatch(data, start) else -1
    while True:
        if mark in _ENDS:
            match = _ENDS[mark].search(data, pos)
            at = match.start() if match else -1
        else:
            at = data.find(mark, pos)
        if at < 0:
            return -1
        start = data.rfind(b"\n", 0, at) + 1
        newline = data.find(b"\n", at)
        line_end = len(data) if newline < 0 else newline + 1
        if mark == b"=" or mark in _ENDS:
            if _UNDERLINE.fullmatch(data, start, line_end):
                return start
        elif (
            len(lead := data[start:at]) <= 3
            and not lead.strip(b" \r")
            and (mark in b"#<" or data.startswith(mark * 3, at))
        ):
            return start
        if newline < 0:
            return -1
        pos = line_end


def _atx_level(line: bytes) -> int | None:
    """The level of the ATX heading that `line` is on its own, or None when it is none."""
    if b"#" not in line[:4]:
        return None
    tokens = block_tokens(line.decode("utf-8", "replace"))
    if tokens and tokens[0]["type"] == "heading" and tokens[0].get("style") != "setext":
        return int(tokens[0]["attrs"]["level"])
    return None


def _parsed_section(data: bytes, head: Section) -> Section:
    """The section as the parser sees it from its heading on: the state there is a fresh one."""
    rest = data[head.start :].decode("utf-8")
    end = sections(rest)[0].end
    return replace(head, end=head.start + len(rest[:end].encode("utf-8")))


def addition(
    data: bytes, entries: Sequence[str], nl: str, head: Section | None = None, always: bool = False
) -> tuple[int, bytes] | None:
    """Where to insert, and the bytes that append the Flow Log lines the section does not hold yet
    after its last entry (all of them with `always`), in one edit: a replayed change appends nothing
    twice. None when there is nothing to append. Without a Flow Log section, one is added at the end."""
    if not entries:
        return None
    found = section(data, head)
    if found is not None and not always:
        entries = [e for e in entries if data.find(e.encode("utf-8"), found.body_start, found.end) < 0]
    if not entries:
        return None
    lines = nl.join(f"- {e}" if not e.startswith("- ") else e for e in entries)
    if found is None:
        sep = "" if data.endswith((b"\n", b"\r")) or not data else nl
        return len(data), f"{sep}{nl}## Flow Log{nl}{nl}{lines}{nl}".encode()
    at = found.end
    while at > found.body_start and data[at - 1] in b" \t\r\n":
        at -= 1
    if at == found.body_start:  # empty section: keep one blank line under the heading
        return at, f"{nl}{lines}{nl}".encode()
    return at, f"{nl}{lines}".encode()


def last_entries(data: bytes, limit: int = 3, head: Section | None = None) -> list[str]:
    """The section's last `limit` entries, read from its tail (a few KB), not from its start;
    `head` as for `section`."""
    found = section(data, head)
    if found is None:
        return []
    size = 2048
    while True:
        # From a line start, so splitting the tail splits it as splitting the whole section would.
        bound = max(found.body_start, found.end - size)
        start = max(found.body_start, data.rfind(b"\n", found.body_start, bound) + 1)
        lines = [ln.strip() for ln in data[start : found.end].decode("utf-8").splitlines()]
        hits = [ln for ln in lines if _FLOW_ENTRY.match(ln)]
        if len(hits) >= limit or start == found.body_start:
            return hits[-limit:]
        size *= 4


def flow_entries(text: str, limit: int = 3, head: Section | None = None) -> list[str]:
    """`last_entries` of a text read whole; `head`, its heading in the text's offsets."""
    return last_entries(text.encode("utf-8"), limit, _in_bytes(text, head) if head else None)
