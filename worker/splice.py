"""The overview file as the journal reads and writes it: only its head decoded and parsed, every other
byte copied back as it was read, the new text swapped in by one atomic rename.

Cost. Reading a 1 MB overview is one read(2) and a UTF-8 check (none when it is ASCII); the head (the
Status section and the Flow Log's heading, a few hundred bytes) is all that is decoded and parsed.
An edit is the old bytes around a few new ones, written piece by piece: no text the size of the file
is built. Appending Flow Log lines also finds where the log ends (`flowlog`), with fast byte searches,
only when there are lines to append.

The spare. Writing a fresh 1 MB file and freeing the old one cost the kernel 1 to 1.5 ms, most of it
in freeing the old file's pages. So the new text goes into a spare file whose pages already exist, the
spare becomes the overview in one rename, and the old overview becomes the next spare. A reader that
opened the old inode checks, after reading, that it is still the overview (`overview.read_bytes`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import flowlog, overview
from worker.errors import OverviewError
from worker.overview import Overview

Piece = bytes | memoryview


@dataclass(frozen=True)
class Doc:
    data: bytes  # every byte of the file, valid UTF-8
    ov: Overview  # its Status, parsed from the head (`ov.text`, the only part decoded)
    stat: os.stat_result  # of the file read


def load(path: Path) -> Doc:
    """The overview, read with `overview.read_bytes` (which refuses what it refuses)."""
    data, st = overview.read_bytes(path)
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
    one. Not fsynced (see `journal`). OSError when it cannot be written, OverviewError when the spare
    cannot be made."""
    spare = path.with_name(f".{path.name}.spare")
    try:
        fd = _open_spare(spare)
    except OSError as exc:  # something that is not ours sits there: say where
        raise OverviewError(
            f"cannot write {spare.name} (the overview's next version): {exc.strerror}"
        ) from None
    try:
        with contextlib.suppress(FileNotFoundError):  # the overview keeps its mode, whichever inode
            os.fchmod(fd, stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode))
        pos = 0
        for piece in pieces:
            view = memoryview(piece)
            while view:
                written = os.pwrite(fd, view, pos)
                pos += written
                view = view[written:]
        os.ftruncate(fd, pos)
    finally:
        os.close(fd)
    # The old overview stays linked under a temporary name (swept at start-up, should this process
    # die here) so that the rename does not free it, and becomes the next spare.
    keep = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(keep)
    try:
        os.link(path, keep, follow_symlinks=False)
    except OSError:  # no overview (a restore moved it aside), or no hard links on this file system
        os.replace(spare, path)
        return
    os.replace(spare, path)
    os.replace(keep, spare)


def _open_spare(spare: Path) -> int:
    """The spare, opened for writing over its old pages; a new one when it is missing or is anything
    but a file of ours alone (a link to it elsewhere would be written through)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(spare, flags)
    except FileNotFoundError:
        return os.open(spare, flags | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:  # a symlink, a directory, no permission
        fd = -1
    if fd >= 0:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
    os.unlink(spare)
    return os.open(spare, flags | os.O_CREAT | os.O_EXCL, 0o644)
