"""The spliced write of the overview: a fresh file and one rename, the old file freed apart only when
it is big; the reads around an attempt that skip what they already know; the journal's refusals."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from worker import overview, splice
from worker.errors import OverviewError

BIG = "".join(
    f"- [{i:03d} @ 11-29 16:{i % 60:02d}] step {i}: did one thing, PR #{i} -> notes-{i}.md\n"
    for i in range(10_000)
)
HEAD = "# Session: big\n\nStarted: 2026-11-29 16:00\n\n## Status\nPhase: implementation\nIteration: 4\n\n"


# -- the spliced write: a fresh file, one rename, the old one freed off the critical path ------------


def _settled(folder):
    """The folder's names once the thread freeing the old overview is done."""
    for thread in threading.enumerate():
        if thread.name == "free-old-overview":
            thread.join(5)
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("size", [4, splice.FREE_APART])  # freed by the rename; freed apart
def test_a_write_is_a_fresh_file_and_the_old_one_is_unlinked_after_the_rename(tmp_path, size):
    path = tmp_path / "_overview.md"
    path.write_bytes(b"one\n" * (size // 4))
    for text in (b"two\n" * (size // 4), b"three\n"):
        before = os.stat(path).st_ino
        splice.save(path, [text[:2], memoryview(text[2:])])
        assert path.read_bytes() == text
        assert os.stat(path).st_ino != before  # a new file: nothing a reader holds is rewritten
    assert _settled(tmp_path) == ["_overview.md"]


def test_only_a_big_old_file_is_freed_apart_by_a_thread(tmp_path, monkeypatch):
    path = tmp_path / "_overview.md"
    started: list[str] = []
    real = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda t: started.append(t.name) or real(t))
    path.write_bytes(b"x" * (splice.FREE_APART - 1))
    splice.save(path, [b"small\n"])
    assert started == []  # the rename frees a small file at once, cheaper than link and thread
    path.write_bytes(b"x" * splice.FREE_APART)
    splice.save(path, [b"small\n"])
    assert started == ["free-old-overview"]
    assert _settled(tmp_path) == ["_overview.md"]


def test_a_load_of_bytes_already_known_does_not_parse_the_head_again(tmp_path, monkeypatch):
    path = tmp_path / "_overview.md"
    path.write_text(HEAD + "## Flow Log\n" + BIG)
    known = splice.load(path)
    parsed: list[int] = []
    reads: list[Path] = []
    real_parse, real_read = overview.parse, overview.read_bytes
    monkeypatch.setattr(overview, "parse", lambda data: parsed.append(len(data)) or real_parse(data))
    monkeypatch.setattr(overview, "read_bytes", lambda at: reads.append(at) or real_read(at))
    assert splice.load(path, known) is known and (reads, parsed) == ([], [])  # its status unchanged
    copy = tmp_path / "copy.md"
    copy.write_bytes(known.data)
    os.replace(copy, path)  # the same bytes in another file: read, not parsed
    again = splice.load(path, known)
    assert (again.data, again.ov, len(reads), parsed) == (known.data, known.ov, 1, [])
    path.write_text(HEAD.replace("Iteration: 4", "Iteration: 5") + "## Flow Log\n" + BIG)
    changed = splice.load(path, known)
    assert changed.ov.get("iteration") == "5" and len(parsed) == 1  # other bytes: parsed as ever


def test_after_the_child_the_workspace_knows_the_overview_unless_it_put_it_back(tmp_path, monkeypatch):
    ws, paths, _ = workspace(tmp_path, monkeypatch, HEAD + "## Flow Log\n" + BIG)
    assert ws.known is None
    ws.read()
    before = ws.known
    assert before is not None and ws.restore_if_broken("001-x") is None and ws.known is before
    paths.overview.write_text(HEAD.replace("Iteration: 4", "Iteration: 5") + "## Flow Log\n")
    assert ws.restore_if_broken("002-x") is None
    assert ws.known is not None and ws.known.ov.get("iteration") == "5"
    assert ws.known.data == paths.overview.read_bytes()
    paths.overview.write_text("no status here\n")
    assert ws.restore_if_broken("003-x") is not None and ws.known is None  # put back: read it anew


def test_the_stall_digest_of_known_overview_bytes_is_the_digest_of_the_file(tmp_path, monkeypatch):
    from worker import stall

    (tmp_path / "_overview.md").write_text(HEAD + "## Notes\nkept\n## Flow Log\n" + BIG)
    (tmp_path / "notes.md").write_text("n\n")
    read = stall.session_state(tmp_path)
    data = (tmp_path / "_overview.md").read_bytes()
    monkeypatch.setattr(stall, "_read", lambda at: pytest.fail(f"{at} read again"))
    assert stall.session_state(tmp_path, data) == read
    other = data.replace(b"kept", b"more")
    assert stall.session_state(tmp_path, other) != read


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
    reads: list[Path] = []  # the file's reads (a stat is not one)
    real = overview.read_bytes
    monkeypatch.setattr(overview, "read_bytes", lambda at: reads.append(at) or real(at))
    return Workspace(paths, project, "", lambda: None), paths, reads


def test_an_overview_left_alone_by_the_attempt_is_not_read_again(tmp_path, monkeypatch):
    ws, paths, reads = workspace(tmp_path, monkeypatch, HEAD + "## Flow Log\n" + BIG)
    assert ws.read().get("phase") == "implementation"
    assert ws.restore_if_broken("001-x") is None
    assert reads == [paths.overview]  # the read before the attempt only: a stat told it apart
    paths.overview.write_text(HEAD.replace("Iteration: 4", "Iteration: 5") + "## Flow Log\n")
    assert ws.restore_if_broken("001-x") is None
    assert reads == [paths.overview] * 2  # changed: read once to see that it is usable


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
    path.write_bytes(b"one\n" * splice.FREE_APART)  # big enough to be freed apart, by a link
    splice.save(path, [b"two\n" * splice.FREE_APART])
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
