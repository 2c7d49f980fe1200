"""The Flow Log is found, read and appended to on the file's bytes, without parsing or decoding its
lines, with the very result a full parse of the whole text gives: a property over hostile Flow Log
contents, and a table over a 10,000-line log. The spliced write and its readers: test_splice_write.py."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import flowlog, mdblocks, overview, splice
from worker.errors import OverviewError
from worker.flowlog import _FLOW_ENTRY, flow_entries, last_entries
from worker.mdblocks import Section, sections

# -- the reference: the whole text parsed with mistune ---------------------------------------------


def full_section(text: str) -> Section | None:
    return next((s for s in sections(text) if s.title == mdblocks.FLOW_LOG), None)


def full_append(text: str, entry: str, section: Section | None) -> str:
    nl = overview.newline_of(text)
    line = f"- {entry}" if not entry.startswith("- ") else entry
    if section is None:
        sep = "" if text.endswith(("\n", "\r")) or not text else nl
        return f"{text}{sep}{nl}## Flow Log{nl}{nl}{line}{nl}"
    body = text[section.body_start : section.end]
    content_end = len(body.rstrip(" \t\r\n"))
    at = section.body_start + content_end
    if content_end == 0:
        return text[: section.body_start] + nl + line + nl + text[section.body_start :]
    return text[:at] + nl + line + text[at:]


def full_entries(text: str, limit: int, section: Section | None) -> list[str]:
    if section is None:
        return []
    lines = [ln.strip() for ln in text[section.body_start : section.end].splitlines()]
    return [ln for ln in lines if _FLOW_ENTRY.match(ln)][-limit:]


# -- the code under test, on the text's bytes ------------------------------------------------------


def appended(text: str, entries: list[str], always: bool = False) -> str:
    """`flowlog.addition` on the bytes, its heading found by `flowlog` itself."""
    data = text.encode()
    added = flowlog.addition(data, entries, overview.newline_of(text), None, always)
    if added is None:
        return text
    at, new = added
    return (data[:at] + new + data[at:]).decode()


def spliced(text: str, fields: dict, entries: list[str]) -> str:
    """The journal's edit: the bytes parsed for their head only, then spliced."""
    data = text.encode()
    pieces = splice.edit(data, overview.parse(data), fields, entries)
    return text if pieces is None else b"".join(pieces).decode()


def in_bytes(text: str, at: int) -> int:
    return len(text[:at].encode())


def assert_same(text: str) -> None:
    data = text.encode()
    fast, full = flowlog.section(data), full_section(text)
    assert (fast is None) == (full is None)
    if full is not None:
        assert fast is not None
        assert (fast.start, fast.body_start, fast.end, fast.level) == (
            in_bytes(text, full.start),
            in_bytes(text, full.body_start),
            in_bytes(text, full.end),
            full.level,
        )
    entry = "[777 @ 11-29 16:00] appended"
    assert appended(text, [entry], always=True) == full_append(text, entry, full)
    # Two lines appended in one edit, as the journal does (one section made when there is none).
    two = f"{entry}{overview.newline_of(text)}- [778 @ x] two"
    assert appended(text, [entry, "[778 @ x] two"]) == full_append(text, two, full)
    assert flow_entries(text, 3) == full_entries(text, 3, full)
    assert last_entries(data, 1) == full_entries(text, 1, full)
    # The journal's edit: fields and lines from one parse of the head.
    try:
        ov = overview.parse(text)
    except OverviewError:
        return
    assert flow_entries(text, 2, ov.flow) == full_entries(text, 2, full)
    status = next(s for s in sections(text) if s.title == mdblocks.STATUS)  # the head parse stopped early
    assert (ov.status.start, ov.status.body_start, ov.status.end) == (
        status.start,
        status.body_start,
        status.end,
    )
    fields = {"Iteration": "12", "Total Cost": "$1.25", "Waiting For": None}
    edited = overview.set_fields(ov, fields)
    assert spliced(text, fields, [entry]) == full_append(edited, entry, full_section(edited))


# -- property: any Flow Log content ------------------------------------------------------------------

HOSTILE = [
    "- [001 @ 01-01 00:00] step -> a.md",
    "- [002 @ 01-01 00:00] PR #12 merged, x = 3",
    "  - [003 @ x] nested entry",
    "",
    "   ",
    "\t",
    "### Sub heading",
    "## Next section",
    "# Top",
    "#### deep",
    "#nospace",
    "####### seven",
    "   ## indented three",
    "    ## indented four",
    "\t## after a tab",
    "## Flow Log",
    "Flow Log",
    "```",
    "```python",
    "   ~~~",
    "````",
    "<div>",
    "<!-- a note",
    "-->",
    "</div>",
    "< 5 items",
    "---",
    "-",
    "- ",
    "===",
    "=",
    "=-=",
    "-=",
    "--- ",
    "-- -",
    "***",
    "___",
    "    indented code",
    "\tcode after a tab",
    "plain text line",
    "Phase: done",
    "> quoted",
    "a\rb",
    "ends with a dash -",
    "--- \t",
    "---\r",
    "- \t ",
    "  -",
    "-\t-",
    "trailing blanks \t ",
    "= \r",
    "- [004 @ x] café ✓ → done",
    "## Ünïcode heading",
]


@st.composite
def documents(draw):
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    title = draw(st.sampled_from(["s", "сессия ✓"]))
    # Filler lines put the hostile ones at any distance from the Flow Log's first mention, so that the
    # prefix the head parse stops at falls before, on and after them.
    # An early mention of the Flow Log makes that prefix end inside a long Status section.
    filler = [f"- [{i:03d} @ 01-01 00:00] filler line number {i}" for i in range(draw(st.integers(0, 24)))]
    early = ["See the Flow Log below."] if draw(st.booleans()) else []
    lines = [f"# Session: {title}", *early, "", "## Status", "Phase: testing", *filler[:12], ""]
    if draw(st.booleans()):
        lines += ["## Notes", *filler[12:15], draw(st.sampled_from(HOSTILE)), ""]
    if draw(st.booleans()):
        lines += ["Flow Log", draw(st.sampled_from(["--------", "========"]))]
    else:
        lines.append(draw(st.sampled_from(["## Flow Log", "### Flow Log", "# Flow Log", "## **Flow Log**"])))
    lines += filler[15:] + draw(st.lists(st.sampled_from(HOSTILE), max_size=14))
    if draw(st.booleans()):
        lines += ["", "## Files", draw(st.sampled_from(HOSTILE))]
    return nl.join(lines) + draw(st.sampled_from(["", nl, nl + nl]))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_the_flow_log_found_without_parsing_it_is_the_one_a_full_parse_finds(doc):
    assert_same(doc)


# -- table: a long Flow Log and what may follow it ------------------------------------------------------


def flow_lines(count: int) -> str:
    return "".join(
        f"- [{i:03d} @ 11-29 16:{i % 60:02d}] step {i}: did one thing, PR #{i} -> notes-{i}.md\n"
        for i in range(count)
    )


BIG = flow_lines(10_000)
# 70 KB: past the 64 KB the head parse looks into for "Flow Log", and many of the 2 KB windows the last
# entries are read back in, as 10,000 lines are; the full parses it is checked against take a tenth
# of the time.
LONG = flow_lines(1_000)
HEAD = "# Session: big\n\nStarted: 2026-11-29 16:00\n\n## Status\nPhase: implementation\nIteration: 4\n\n"
TAILS = {
    "log-last": "",
    "files-after": "\n## Files\n- notes.md\n",
    "sub-heading-inside": "\n### Later\n- [x @ y] more\n\n## Files\n- a.md\n",
    "fenced-heading-inside": "\n```\n## not a heading\n```\n- [x @ y] after\n\n## Files\n",
    "html-block-inside": "\n<div>\n## inside html\n</div>\n\n## Files\n",
    "setext-underline-inside": "- one more\n---\n- [x @ y] after\n",
    "equals-underline-inside": "text\n===\n",
    "top-level-heading-after": "\n# Appendix\nx\n",
    "deeper-heading-only": "\n#### deep\n- [x @ y] e\n",
    "trailing-blank-lines": "\n\n\n   \n",
}


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
@pytest.mark.parametrize("nl", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_edits_on_a_long_flow_log_match_a_full_parse(tail, nl):
    text = (HEAD + "## Flow Log\n" + LONG + tail).replace("\n", nl)
    assert_same(text)


def test_a_plain_10000_line_flow_log_is_never_parsed(monkeypatch, tmp_path):
    """The design, not a timing: mistune only ever sees a few hundred bytes of the 0.7 MB file, from
    reading it to appending a line and reading its last entries."""
    path = tmp_path / "_overview.md"
    path.write_text(HEAD + "## Flow Log\n" + BIG + "\n## Files\n- notes.md\n")
    seen: list[int] = []
    real = mdblocks.block_tokens
    spy = lambda t: seen.append(len(t)) or real(t)  # noqa: E731
    monkeypatch.setattr(mdblocks, "block_tokens", spy)
    monkeypatch.setattr(flowlog, "block_tokens", spy)
    doc = splice.load(path)
    pieces = splice.edit(doc.data, doc.ov, {"Iteration": "5"}, ["[x @ y] new"])
    assert pieces is not None
    splice.save(path, pieces)
    new = splice.load(path)
    assert last_entries(new.data, 3, flowlog.heading(new.ov))[-1] == "- [x @ y] new"
    assert seen and max(seen) < 1024, seen
    assert len(doc.ov.text) < 1024 < 700_000 < len(doc.data)


def test_a_replayed_line_is_not_appended_twice():
    text = HEAD + "## Flow Log\n" + BIG + "\n## Files\n"
    once = spliced(text, {}, ["[9999 @ 11-29 16:39] step 9999: did one thing, PR #9999 -> notes-9999.md"])
    assert once == text
    twice = spliced(spliced(text, {}, ["[new @ x] y"]), {"Iteration": "4"}, ["[new @ x] y"])
    assert twice.count("[new @ x] y") == 1
