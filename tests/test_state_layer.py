"""The Flow Log is found, read and appended to on the file's bytes, without parsing or decoding its
lines, with the very result a full parse of the whole text gives: a property over hostile Flow Log
contents, and a table over a 10,000-line log. Then the spliced write and its readers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

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


# -- the spliced write: a fresh file, one rename, the old one freed off the critical path ------------


def _settled(folder):
    """The folder's names once the thread freeing the old overview is done."""
    for thread in threading.enumerate():
        if thread.name == "free-old-overview":
            thread.join(5)
    return sorted(p.name for p in folder.iterdir())


def test_a_write_is_a_fresh_file_and_the_old_one_is_unlinked_after_the_rename(tmp_path):
    path = tmp_path / "_overview.md"
    path.write_bytes(b"one\n")
    for text in (b"two\n", b"three\n"):
        before = os.stat(path).st_ino
        splice.save(path, [text[:2], memoryview(text[2:])])
        assert path.read_bytes() == text
        assert os.stat(path).st_ino != before  # a new file: nothing a reader holds is rewritten
    assert _settled(tmp_path) == ["_overview.md"]


def test_a_reader_holding_the_old_file_keeps_reading_the_old_text(tmp_path):
    path = tmp_path / "_overview.md"
    path.write_bytes(b"one\n" * 1000)
    with open(path, "rb") as held:
        splice.save(path, [b"two\n"])
        splice.save(path, [b"three\n"])
        assert held.read() == b"one\n" * 1000
    assert path.read_bytes() == b"three\n"


def test_a_read_of_a_file_swapped_out_meanwhile_is_read_again(tmp_path, monkeypatch):
    """A reader that read the overview while writes replaced it checks, after reading, that the file
    it read is still the overview, and reads again when it is not."""
    path = tmp_path / "_overview.md"
    path.write_bytes(b"## Status\nPhase: testing\n")
    real = overview._read_once
    calls = []

    def racing(at, head):
        data, st = real(at, head)
        if not calls:  # two writes land between this reader's read and its check
            splice.save(path, [b"## Status\nPhase: quality\n"])
            splice.save(path, [b"## Status\nPhase: done\n"])
        calls.append(data)
        return data, st

    monkeypatch.setattr(overview, "_read_once", racing)
    assert overview.read_bytes(path)[0] == b"## Status\nPhase: done\n"
    assert calls == [b"## Status\nPhase: testing\n", b"## Status\nPhase: done\n"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"## Status\nPhase: testing\n\n## Flow Log\n" + b"- [1 @ x] ok\n" * 5000 + b"- \xff\n", "UTF-8"),
        (b"# no status\n" + b"x\n" * 10, "no '## Status'"),
    ],
    ids=["non-utf8-deep-in-the-log", "no-status"],
)
def test_the_journal_refuses_what_the_reader_refuses_and_writes_nothing(tmp_path, content, reason):
    from worker import journal

    path = tmp_path / "_overview.md"
    path.write_bytes(content)
    with pytest.raises(OverviewError, match=reason):
        journal.apply_change(path, {"Iteration": "2"}, ["[2 @ x] y"])
    assert path.read_bytes() == content


# -- the worker's reads around an attempt -------------------------------------------------------------


def workspace(tmp_path, monkeypatch, text: str):
    from worker.config import Project
    from worker.session import SessionPaths
    from worker.workspace import Workspace

    paths = SessionPaths(tmp_path / "s")
    paths.dir.mkdir()
    paths.overview.write_text(text)
    project = Project(tmp_path / ".samocode", tmp_path, tmp_path / "wt", tmp_path)
    loads: list[Path] = []
    real = splice.load
    monkeypatch.setattr(splice, "load", lambda at: loads.append(at) or real(at))
    return Workspace(paths, project, "", lambda: None), paths, loads


def test_an_overview_left_alone_by_the_attempt_is_not_read_again(tmp_path, monkeypatch):
    ws, paths, loads = workspace(tmp_path, monkeypatch, HEAD + "## Flow Log\n" + BIG)
    assert ws.read().get("phase") == "implementation"
    assert ws.restore_if_broken("001-x") is None
    assert loads == [paths.overview]  # the read before the attempt only: a stat told it apart
    paths.overview.write_text(HEAD.replace("Iteration: 4", "Iteration: 5") + "## Flow Log\n")
    assert ws.restore_if_broken("001-x") is None
    assert loads == [paths.overview] * 2  # changed: read once to see that it is usable


def test_a_torn_overview_is_put_back_byte_for_byte_and_the_torn_copy_kept(tmp_path, monkeypatch):
    text = "# Сессия ✓\r\n\r\n## Status\r\nPhase: testing\r\n\r\n## Flow Log\r\n" + BIG.replace("\n", "\r\n")
    ws, paths, _ = workspace(tmp_path, monkeypatch, text)
    before = paths.overview.read_bytes()
    ws.read()
    with open(paths.overview, "r+b") as f:  # a child killed mid-write, in place
        f.truncate(9)  # inside the Cyrillic title
    reason, copy = ws.restore_if_broken("002-y")
    assert "not valid UTF-8" in reason and copy == "_overview.unusable-002-y.md"  # torn mid-character
    assert paths.overview.read_bytes() == before
    assert (paths.dir / copy).read_bytes() == before[:9]


def test_the_overview_keeps_its_mode_across_writes(tmp_path):
    path = tmp_path / "_overview.md"
    path.write_bytes(b"one\n")
    path.chmod(0o600)
    for text in (b"two\n", b"three\n", b"four\n"):
        splice.save(path, [text])
        assert (path.read_bytes(), path.stat().st_mode & 0o777) == (text, 0o600)


def test_a_file_system_without_hard_links_still_gets_its_write(tmp_path, monkeypatch):
    path = tmp_path / "_overview.md"
    path.write_bytes(b"one\n")

    def no_links(*_args, **_kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    splice.save(path, [b"two\n"])
    splice.save(path, [b"three\n"])
    assert path.read_bytes() == b"three\n"


def test_a_directory_where_the_new_file_goes_is_a_reason_naming_it(tmp_path):
    from worker import journal

    path = tmp_path / "_overview.md"
    path.write_text("## Status\nPhase: testing\n")
    temp = tmp_path / f"._overview.md.{os.getpid()}.tmp"
    temp.mkdir()
    (temp / "x").write_text("x")
    with pytest.raises(OverviewError, match=rf"cannot write \._overview\.md\.{os.getpid()}\.tmp"):
        journal.apply_change(path, {"Iteration": "2"}, [])
    assert path.read_text() == "## Status\nPhase: testing\n"
