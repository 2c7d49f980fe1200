"""The Flow Log is found, read and appended to without parsing its lines, with the very result a
full parse gives: a property over hostile Flow Log contents, and a table over a 10,000-line log."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import flowlog, overview
from worker.errors import OverviewError
from worker.flowlog import _FLOW_ENTRY, append_flow, append_missing, flow_entries, flow_section
from worker.overview import sections

# -- the reference: the whole text parsed with mistune ---------------------------------------------


def full_section(text: str) -> overview.Section | None:
    return next((s for s in sections(text) if s.title == overview.FLOW_LOG), None)


def full_append(text: str, entry: str, section: overview.Section | None) -> str:
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


def full_entries(text: str, limit: int, section: overview.Section | None) -> list[str]:
    if section is None:
        return []
    lines = [ln.strip() for ln in text[section.body_start : section.end].splitlines()]
    return [ln for ln in lines if _FLOW_ENTRY.match(ln)][-limit:]


def assert_same(text: str) -> None:
    fast, full = flow_section(text), full_section(text)
    assert (fast is None) == (full is None)
    if full is not None:
        assert (fast.start, fast.body_start, fast.end, fast.level) == (
            full.start,
            full.body_start,
            full.end,
            full.level,
        )
    entry = "[777 @ 11-29 16:00] appended"
    assert append_flow(text, entry) == full_append(text, entry, full)
    # Two lines appended in one edit, as the journal does (one section made when there is none).
    two = f"{entry}{overview.newline_of(text)}- [778 @ x] two"
    assert append_missing(text, [entry, "[778 @ x] two"]) == full_append(text, two, full)
    assert flow_entries(text, 3) == full_entries(text, 3, full)
    assert flow_entries(text, 1) == full_entries(text, 1, full)
    # The journal's edit: fields and lines from one parse of the text's head.
    try:
        ov = overview.parse(text)
    except OverviewError:
        return
    fields = {"Iteration": "12", "Total Cost": "$1.25", "Waiting For": None}
    edited = overview.set_fields(ov, fields)
    assert flowlog.edit(ov, fields, [entry]) == full_append(edited, entry, full_section(edited))


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
]


@st.composite
def documents(draw):
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    lines = ["# Session: s", "", "## Status", "Phase: testing", ""]
    if draw(st.booleans()):
        lines += ["## Notes", draw(st.sampled_from(HOSTILE)), ""]
    if draw(st.booleans()):
        lines += ["Flow Log", draw(st.sampled_from(["--------", "========"]))]
    else:
        lines.append(draw(st.sampled_from(["## Flow Log", "### Flow Log", "# Flow Log", "## **Flow Log**"])))
    lines += draw(st.lists(st.sampled_from(HOSTILE), max_size=14))
    if draw(st.booleans()):
        lines += ["", "## Files", draw(st.sampled_from(HOSTILE))]
    return nl.join(lines) + draw(st.sampled_from(["", nl, nl + nl]))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_the_flow_log_found_without_parsing_it_is_the_one_a_full_parse_finds(doc):
    assert_same(doc)


# -- table: a 10,000-line Flow Log and what may follow it ----------------------------------------------

BIG = "".join(
    f"- [{i:03d} @ 11-29 16:{i % 60:02d}] step {i}: did one thing, PR #{i} -> notes-{i}.md\n"
    for i in range(10_000)
)
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
def test_edits_on_a_10000_line_flow_log_match_a_full_parse(tail, nl):
    text = (HEAD + "## Flow Log\n" + BIG + tail).replace("\n", nl)
    assert_same(text)


def test_a_plain_10000_line_flow_log_is_never_parsed(monkeypatch):
    """The design, not a timing: mistune only ever sees a few KB of the 0.7 MB text."""
    text = HEAD + "## Flow Log\n" + BIG + "\n## Files\n- notes.md\n"
    seen: list[int] = []
    real = overview.block_tokens
    spy = lambda t: seen.append(len(t)) or real(t)  # noqa: E731
    monkeypatch.setattr(overview, "block_tokens", spy)
    monkeypatch.setattr(flowlog, "block_tokens", spy)
    ov = overview.parse(text)
    new = append_missing(overview.set_fields(ov, {"Iteration": "5"}), ["[x @ y] new"])
    entries = flow_entries(new, 3)
    assert entries[-1] == "- [x @ y] new"
    assert seen and max(seen) < 64 * 1024, seen
    assert len(text) > 700_000


def test_a_replayed_line_is_not_appended_twice():
    text = HEAD + "## Flow Log\n" + BIG + "\n## Files\n"
    once = append_missing(text, ["[9999 @ 11-29 16:39] step 9999: did one thing, PR #9999 -> notes-9999.md"])
    assert once == text
    twice = append_missing(append_missing(text, ["[new @ x] y"]), ["[new @ x] y"])
    assert twice.count("[new @ x] y") == 1
