"""The overview file as the journal reads and writes it: only its head decoded and parsed, every other
byte copied back as it was read, the new text swapped in by one atomic rename.

Cost. Reading a 1 MB overview is one read(2) and a UTF-8 check (none when it is ASCII); the head (the
Status section and the Flow Log's heading, a few hundred bytes) is all that is decoded and parsed.
An edit is the old bytes around a few new ones, written piece by piece: no text the size of the file
is built. Appending Flow Log lines also finds where the log ends (`flowlog`), with fast byte searches,
only when there are lines to append.

Freeing the old file. Renaming a fresh 1 MB file over the old one makes the rename free the old
file's pages, 0.5 to 1 ms of kernel time between two children. So an old file of `FREE_APART` bytes or
more is first linked under a temporary name, and that link is removed by a short thread while the
worker goes on to the next child; a smaller one is freed by the rename (cheaper than link and thread).
The new text is always a fresh file: no byte of a file a reader may hold is ever rewritten, and ext4
writes a file renamed over another out before the rename, so a power cut leaves the old or the new text.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import flowlog, overview
from worker.overview import Overview

Piece = bytes | memoryview
# From this size of the old file on, freeing it apart (link, rename, thread) beats the rename's own
# freeing; measured here: 0.21 vs 0.09 ms at 3 KB, even at ~300 KB, 0.65 vs 0.85 ms at 1 MB.
FREE_APART = 256 * 1024


@dataclass(frozen=True)
class Doc:
    data: bytes  # every byte of the file, valid UTF-8
    ov: Overview  # its Status, parsed from the head (`ov.text`, the only part decoded)
    stat: os.stat_result  # of the file read


def load(path: Path, known: Doc | None = None) -> Doc:
    """The overview, read with `overview.read_bytes` (which refuses what it refuses). With `known`
    (this worker's last look at it), a file whose status is still `known`'s is not read again; and when
    its bytes are `known`'s, the head is not parsed again."""
    if known is not None:
        with contextlib.suppress(OSError):  # unreadable: the read below says why
            if overview.same_file(os.stat(path, follow_symlinks=False), known.stat):
                return known
    data, st = overview.read_bytes(path)
    if known is not None and data == known.data:
        return Doc(known.data, known.ov, st)
    return Doc(data, overview.parse(data), st)


def edit(
    data: bytes, ov: Overview, fields: Mapping[str, str | None], flow: Sequence[str], always: bool = False
) -> list[Piece] | None:
    """The new bytes of the file `data` (whose head `ov` is), in pieces: Status fields set (as
    `overview.set_fields` does) and the Flow Log lines the section lacks appended (all of them with
    `always`); None when it holds all of it."""
    nl = overview.newline_of(data[:16384].decode("utf-8", "replace"))  # of the first 4096 characters
    ascii_head = ov.text.isascii()

    def at(offset: int) -> int:  # a head offset in bytes
        return offset if ascii_head else len(ov.text[:offset].encode("utf-8"))

    edits = [(at(s), at(e), new.encode("utf-8")) for s, e, new in overview.field_edits(ov, fields, nl)]
    added = flowlog.addition(data, flow, nl, flowlog.heading(ov), always)
    if added is not None:
        edits.append((added[0], added[0], added[1]))
    if not edits:
        return None
    view, pos = memoryview(data), 0
    pieces: list[Piece] = []
    for start, end, new in sorted(edits):
        pieces += [view[pos:start], new]
        pos = end
    pieces.append(view[pos:])
    return pieces


def save(path: Path, pieces: Sequence[Piece]) -> None:
    """Replace the file in one rename: a dead process leaves the old or the new text, never half of
    one. Not fsynced (see `journal`). OSError when it cannot be written."""
    try:
        old_st: os.stat_result | None = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:  # no overview yet: a restore moved it aside
        old_st = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        if old_st is not None:  # the overview keeps its mode
            os.fchmod(fd, stat.S_IMODE(old_st.st_mode))
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    if old_st is None or old_st.st_size < FREE_APART:  # the rename frees a small one at once
        os.replace(tmp, path)
        return
    # Swept at start-up should this process die before the thread removes it (`journal`).
    old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
    _remove(old)
    try:
        os.link(path, old, follow_symlinks=False)
    except OSError:  # gone meanwhile, or no hard links here
        os.replace(tmp, path)
        return
    os.replace(tmp, path)
    threading.Thread(target=_remove, args=(old,), name="free-old-overview").start()


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
