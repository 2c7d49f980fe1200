"""The overview's Flow Log: where it ends, a line appended after its last entry, its last entries.

Its cost does not grow with the log. The Flow Log's heading comes from the overview's head, which
`overview` parses anyway; its end (the next heading of its level or higher) is found without parsing
its lines: one-byte `find`s for the characters that start the few lines that can begin a block there
(a heading, a fence, raw HTML, an underline of '=') and literal searches for the line ends of a '-'
underline. A heading line found that way is confirmed by mistune on that line alone. Only when such a
line is something other than a heading does mistune parse the rest of the text from the Flow Log's
heading on, which the worker's own lines never cause. The last entries are read from the section's
tail. The results are those of a full parse, byte for byte (tests/test_state_layer.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from worker.overview import (
    FLOW_LOG,
    Overview,
    Section,
    block_tokens,
    find,
    newline_of,
    sections,
    set_fields,
)

_FLOW_ENTRY = re.compile(r"^[ \t]*[-*+][ \t]+\[")
# The lines the Flow Log's end depends on: an ATX heading, a fence, raw HTML, a setext underline. Every
# other line is paragraph text, a blank line, indented code or a thematic break, none of which can
# hide a heading after it. The first four start with a rare character, found by a fast `find` each;
# an underline holds '=' (found by `find`) or ends in '-' or blanks: those line ends are found by a
# literal search each (the fastest scan for two characters), the last line apart. `\r` counts as a
# space, as the parser sees it.
_STARTS = "#`~<"
_ENDS = {end: re.compile(re.escape(end)) for end in ("-\n", "-\r", " \n", " \r", "\t\n", "\t\r")}
_LAST_LINE = ""
_UNDERLINE = re.compile(r"[ \r]{0,3}[=-]+[ \t\r]*\n?")


def flow_section(text: str, head: Section | None = None) -> Section | None:
    """The Flow Log section, found without parsing its lines (see the module's docstring);
    `head`, its heading when the caller already parsed it."""
    if head is None:
        head, _, _ = find(text, FLOW_LOG, closed=False)
    if head is None:
        return None
    ends = [e for e in _ENDS if ("\r" not in e or "\r" in text) and ("\t" not in e or "\t" in text)]
    found = {mark: -1 for mark in (*_STARTS, "=", *ends, _LAST_LINE)}  # each kind's next candidate
    pos = head.body_start
    while True:
        for mark, at in found.items():
            if at < pos:
                found[mark] = _next_line_with(text, mark, pos)
        start = min((at for at in found.values() if at >= 0), default=-1)
        if start < 0:
            return replace(head, end=len(text))
        newline = text.find("\n", start)
        line_end = len(text) if newline < 0 else newline + 1
        level = _atx_level(text[start:line_end])
        if level is None:  # not a heading: let the parser decide from the heading on
            return _parsed_section(text, head)
        if level <= head.level:
            return replace(head, end=start)
        pos = line_end


def _next_line_with(text: str, mark: str, pos: int) -> int:
    """The start of the first line at or after `pos` (a line start) that may be a block of the
    `mark` kind (a character of _STARTS, '=', a line end of _ENDS, or the last line), or -1."""
    if mark == _LAST_LINE:
        start = text.rfind("\n") + 1
        unended = start >= pos and not text.endswith("\n")
        return start if unended and _UNDERLINE.fullmatch(text, start) else -1
    while True:
        if mark in _ENDS:
            match = _ENDS[mark].search(text, pos)
            at = match.start() if match else -1
        else:
            at = text.find(mark, pos)
        if at < 0:
            return -1
        start = text.rfind("\n", 0, at) + 1
        newline = text.find("\n", at)
        line_end = len(text) if newline < 0 else newline + 1
        if mark == "=" or mark in _ENDS:
            if _UNDERLINE.fullmatch(text, start, line_end):
                return start
        elif (
            len(lead := text[start:at]) <= 3
            and not lead.strip(" \r")
            and (mark in "#<" or text.startswith(mark * 3, at))
        ):
            return start
        if newline < 0:
            return -1
        pos = line_end


def _atx_level(line: str) -> int | None:
    """The level of the ATX heading that `line` is on its own, or None when it is none."""
    if "#" not in line[:4]:
        return None
    tokens = block_tokens(line)
    if tokens and tokens[0]["type"] == "heading" and tokens[0].get("style") != "setext":
        return int(tokens[0]["attrs"]["level"])
    return None


def _parsed_section(text: str, head: Section) -> Section:
    """The section as the parser sees it from its heading on: the state there is a fresh one."""
    rest = text[head.start :]
    first = sections(rest)[0]
    return replace(head, end=head.start + first.end)


def append_flow(text: str, entry: str) -> str:
    """The text with one Flow Log line appended after the section's last entry."""
    return append_missing(text, [entry], always=True)


def edit(ov: Overview, fields: Mapping[str, str | None], flow: Sequence[str]) -> str:
    """The overview's text with Status fields set and the Flow Log lines it lacks appended, from
    the one parse that `ov` is: the Flow Log's heading found there moves by what the Status edits
    added before it."""
    new = set_fields(ov, fields) if fields else ov.text
    head = ov.flow
    if head is not None and head.start >= ov.status.end:
        delta = len(new) - len(ov.text)
        head = replace(head, start=head.start + delta, body_start=head.body_start + delta)
    else:
        head = None
    return append_missing(new, flow, head=head)


def append_missing(
    text: str, entries: Sequence[str], always: bool = False, head: Section | None = None
) -> str:
    """The text with the Flow Log lines the section does not hold yet appended after its last
    entry (all of them with `always`), in one edit: a replayed change appends nothing twice."""
    if not entries:
        return text
    nl = newline_of(text)
    section = flow_section(text, head)
    if section is not None and not always:
        entries = [e for e in entries if text.find(e, section.body_start, section.end) < 0]
    if not entries:
        return text
    lines = nl.join(f"- {e}" if not e.startswith("- ") else e for e in entries)
    if section is None:
        sep = "" if text.endswith(("\n", "\r")) or not text else nl
        return f"{text}{sep}{nl}## Flow Log{nl}{nl}{lines}{nl}"
    at = section.end
    while at > section.body_start and text[at - 1] in " \t\r\n":
        at -= 1
    if at == section.body_start:  # empty section: keep one blank line under the heading
        return text[: section.body_start] + nl + lines + nl + text[section.body_start :]
    return text[:at] + nl + lines + text[at:]


def flow_entries(text: str, limit: int = 3, head: Section | None = None) -> list[str]:
    """The section's last `limit` entries, read from its tail (a few KB), not from its start;
    `head` as for `flow_section`."""
    section = flow_section(text, head)
    if section is None:
        return []
    size = 2048
    while True:
        # From a line start, so splitting the tail splits it as splitting the whole section would.
        bound = max(section.body_start, section.end - size)
        start = max(section.body_start, text.rfind("\n", section.body_start, bound) + 1)
        lines = [ln.strip() for ln in text[start : section.end].splitlines()]
        found = [ln for ln in lines if _FLOW_ENTRY.match(ln)]
        if len(found) >= limit or start == section.body_start:
            return found[-limit:]
        size *= 4
