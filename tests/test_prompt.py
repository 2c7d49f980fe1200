"""The agent files' frontmatter: read without PyYAML when its lines are plain, with python-frontmatter's
result every time."""

from __future__ import annotations

import frontmatter
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from worker_helpers import put_into

from worker.phases import Phase
from worker.prompt import agent_path, load_agent, plain_frontmatter


def _theirs(text: str) -> tuple[dict[str, object], str]:
    post = frontmatter.loads(text)
    return post.metadata, post.content


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_every_shipped_agent_file_is_read_without_yaml_as_yaml_reads_it(phase):
    text = agent_path(phase).read_text(encoding="utf-8")
    assert plain_frontmatter(text) == _theirs(text)
    assert load_agent(phase).tools == ("Read", "Write", "Edit", "Glob", "Grep", "Bash")


_KEY = st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True)
_WORDS = st.from_regex(r"[A-Za-z]([A-Za-z0-9 _,./()-]{0,10}[A-Za-z0-9_,./()-])?", fullmatch=True)
_QUOTED = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), max_size=12)
_PLAIN_LINE = st.one_of(
    st.tuples(_KEY, _WORDS).map(": ".join),
    st.tuples(_KEY, _QUOTED).map(lambda kv: f'{kv[0]}: "{kv[1]}"'),
    st.sampled_from(["model: inherit", "on: x", "x: yes", "x: No", "x: null", "x: OFF", "tools: Read, Bash"]),
)
# Something YAML or python-frontmatter reads otherwise, put where a value starts or ends, or anywhere.
_ODD = st.sampled_from(
    [*"'\"#:\\ -[{&*!|>%@`\t\r~", "\u00e9", ": ", " #", "\n", "\r\n", "1", "0x", ".inf", "---"]
)


def _put(line: str, odd: str, where: str | int) -> str:
    return put_into(line, odd, where, ": ")


_NEAR_PLAIN = st.builds(
    _put, _PLAIN_LINE, _ODD, st.one_of(st.sampled_from(["start", "value", "end"]), st.integers(0, 12))
)
# Values of plain words and odd pieces: where YAML reads a piece otherwise, the plain reader must decline.
_RAW = st.lists(st.one_of(st.sampled_from(["a", "Zb", "9", "x y"]), _ODD), min_size=1, max_size=4).flatmap(
    lambda pieces: st.sampled_from([f"k: {''.join(pieces)}", f'k: "{"".join(pieces)}"'])
)
_BODY = st.sampled_from(["", "# Phase\n\nText.\n", "\n---\nmore: x\n", "  body  \n\n", "---\n"])
_AROUND = st.sampled_from(["", "\n", "  \n", "\r\n", "\ufeff"])


def _pair(line: str) -> tuple[str, str]:
    key, value = line.split(": ", 1)
    return key, value


def _document(lines: list[str], body: str, before: str, close: str) -> str:
    return before + "---\n" + "\n".join(lines) + "\n" + close + body


@given(st.lists(_PLAIN_LINE, min_size=1, max_size=5), _BODY, _AROUND, st.sampled_from(["---\n", "---"]))
def test_plain_frontmatter_reads_as_python_frontmatter_reads_it(lines, body, before, close):
    text = _document(lines, body if close.endswith("\n") else "", before.replace("\ufeff", ""), close)
    found = plain_frontmatter(text)
    assert found is None or found == _theirs(text)
    read_otherwise = {"yes", "no", "true", "false", "on", "off", "null"}  # bool or None in YAML
    if not any(key in read_otherwise or value.lower() in read_otherwise for key, value in map(_pair, lines)):
        assert found is not None, text


@settings(max_examples=500)
@given(
    st.lists(st.one_of(_NEAR_PLAIN, _RAW, _PLAIN_LINE), min_size=1, max_size=3),
    _BODY,
    _AROUND,
    st.sampled_from(["---\n", "---\n", "---", "--- \n", "----\n", "...\n", ""]),
)
def test_plain_frontmatter_declines_what_yaml_would_read_otherwise(lines, body, before, close):
    text = _document(lines, body, before, close)
    found = plain_frontmatter(text)
    if found is not None:
        assert found == _theirs(text)


@pytest.mark.parametrize(
    "line",
    [
        "k: a: b",  # a mapping in a value: YAML refuses it
        "k: a #note",
        "k: a ",
        "k: a\tb",
        'k: "a\\"b"',
        'k: "a\\tb"',
        "k: 'a'",
        "k: [a, b]",
        "k: &a b",
        "k: yes",
        "k: Off",
        "on: a",
        "k: 12",
        "k: -a",
        "k:a",
        "K: a",
        " k: a",
    ],
)
def test_frontmatter_that_yaml_reads_otherwise_is_left_to_yaml(line):
    assert plain_frontmatter(f"---\nname: x\n{line}\n---\nbody\n") is None
