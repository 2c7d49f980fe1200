"""`_qa.md`: the questions requirements asks, read without blocking, and answers filled in.

One parser for every reader: the `answer` command, the gate (does the session still wait?), and
the Telegram brief and bot. A question is a `**Answer:**` line; its heading, lettered options and
suggestion are the last ones above it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from worker.errors import Refused

WAITING = "_waiting_"
_ANSWER = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}answer\*{0,2}[ \t]*:[ \t]*\*{0,2}[ \t]*(?P<value>.*?)[ \t]*$", re.I
)
_SUGGESTION = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}suggest(?:ion|ed)(?: option)?\*{0,2}[ \t]*:[ \t]*\*{0,2}[ \t]*"
    r"(?P<value>.*?)[ \t]*$",
    re.I,
)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]*(?P<title>.+?)[ \t#]*$")
_OPTION = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?\*{0,2}(?P<letter>[A-Z])[).:]\*{0,2}[ \t]+(?P<text>\S.*?)[ \t]*$"
)


def read(path: Path, errors: str = "strict") -> str:
    """The file's text, never blocking: FileNotFoundError when it is missing, another OSError when
    it is not a regular file (a FIFO planted there, a directory) or unreadable; UnicodeDecodeError
    for bytes that are not UTF-8 (unless `errors` says otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    return data.decode("utf-8", errors)


def still_waiting(path: Path) -> bool:
    """Whether `_qa.md` still says `_waiting_` anywhere (not only on an answer line): the session
    waits until none is left. A file that is missing, unreadable or not a regular file: no."""
    try:
        return WAITING in read(path, errors="replace")
    except OSError:
        return False


@dataclass(frozen=True)
class Question:
    number: int  # 1-based, in file order
    value_start: int
    value_end: int
    answer: str
    suggestion: str
    title: str = ""  # the heading above it, e.g. "Q1. Where should tokens be stored?"
    options: tuple[tuple[str, str], ...] = ()  # ("A", "In memory"), ... as listed above it

    @property
    def waiting(self) -> bool:
        return self.answer == WAITING


def questions(text: str) -> list[Question]:
    """One question per `**Answer:**` line; its suggestion, heading and lettered options are the
    last ones above it (since the previous answer)."""
    found: list[Question] = []
    options: list[tuple[str, str]] = []
    suggestion, title = "", ""
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if match := _ANSWER.match(body):
            found.append(
                Question(
                    len(found) + 1,
                    pos + match.start("value"),
                    pos + match.end("value"),
                    match.group("value"),
                    suggestion,
                    title,
                    tuple(options),
                )
            )
            suggestion, title, options = "", "", []
        elif match := _SUGGESTION.match(body):
            suggestion = match.group("value").strip("* ")
        elif match := _HEADING.match(body):
            title, options = match.group("title"), []
        elif match := _OPTION.match(body):
            options.append((match.group("letter"), match.group("text")))
        pos += len(line)
    return found


def fill_answers(text: str, given: dict[int, str], accept: bool) -> tuple[str, list[int], list[int]]:
    """The text with answers filled in; returns it, the numbers answered and those still waiting.
    Refused when nothing waits, a number names no waiting question, or a suggestion is missing."""
    found = questions(text)
    waiting = [q for q in found if q.waiting]
    if not waiting:
        raise Refused("no question in _qa.md waits for an answer (no `**Answer:** _waiting_` line)")
    numbers = [q.number for q in waiting]
    for n in sorted(given):
        if n > len(found):
            raise Refused(f"there is no question {n}: _qa.md has {len(found)} (waiting: {listed(numbers)})")
        if not found[n - 1].waiting:
            raise Refused(f"question {n} is already answered (waiting: {listed(numbers)})")
    answers = dict(given)
    if accept:
        missing = [q.number for q in waiting if q.number not in answers and not q.suggestion]
        if missing:
            raise Refused(
                f"question {listed(missing)} has no suggestion; answer it with --set N=TEXT (nothing changed)"
            )
        answers.update({q.number: q.suggestion for q in waiting if q.number not in answers})
    pieces, pos = [], 0
    for q in waiting:
        if q.number in answers:
            pieces += [text[pos : q.value_start], answers[q.number]]
            pos = q.value_end
    pieces.append(text[pos:])
    return "".join(pieces), sorted(answers), [n for n in numbers if n not in answers]


def listed(numbers: list[int]) -> str:
    """Question numbers as a human reads them: "Q1, Q3" ("none" for none)."""
    return ", ".join(f"Q{n}" for n in numbers) or "none"
