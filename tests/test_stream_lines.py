"""The stream splitter hands the parser exactly the marked lines, however the stream is chunked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.process import MAX_LINE, _Lines

MARK = b'"result"'
_line = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.integers(0, 99).map(lambda n: b'{"type":"result","n":%d}' % n),
)


@given(lines=st.lists(_line, max_size=30), cuts=st.lists(st.integers(1, 25), max_size=60), end=st.booleans())
def test_marked_lines_survive_any_chunking(lines, cuts, end):
    data = b"\n".join(lines) + (b"\n" if end else b"")
    got: list[bytes] = []
    splitter = _Lines(got.append, (MARK,))
    pos = 0
    for size in [*cuts, len(data)]:
        splitter.feed(data[pos : pos + size])
        pos += size
    splitter.close()
    assert got == [line for line in data.split(b"\n") if MARK in line]


def test_an_over_long_line_is_dropped_and_the_next_line_still_parsed():
    got: list[bytes] = []
    splitter = _Lines(got.append, (MARK,))
    splitter.feed(b'{"result"' + b"x" * (MAX_LINE + 10))
    splitter.feed(b"tail\n" + b'{"type":"result"}\n')
    splitter.close()
    assert got == [b'{"type":"result"}']


def test_without_markers_every_line_is_handed_on():
    got: list[bytes] = []
    splitter = _Lines(got.append, ())
    splitter.feed(b"a\nb")
    splitter.feed(b"c\n\nd")
    splitter.close()
    assert got == [b"a", b"bc", b"", b"d"]
