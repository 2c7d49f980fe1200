"""The overview's block structure: mistune's top-level block tokens with offsets, the sections they
make (a heading and what follows it up to the next heading of its level or higher), and `find`, which
parses only the prefix that holds the section asked for.

Only the rules that can start, hide or end a section run: lists and block quotes cannot hold a
section heading, so the parser treats their lines as paragraph text, which is all `overview` and
`flowlog` need, at a third of the cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mistune

STATUS = "status"
FLOW_LOG = "flow log"
_RULES = [
    "fenced_code",
    "indent_code",
    "atx_heading",
    "setex_heading",
    "thematic_break",
    "raw_html",
    "blank_line",
]


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    start: int  # offset of the heading
    body_start: int  # offset just after the heading
    end: int  # offset of the next heading of the same or a higher level, or the end


class _State(mistune.BlockState):
    """Records where each top-level token starts, which mistune itself does not keep."""

    def append_token(self, token: dict) -> None:
        token.setdefault("_start", self.cursor)
        super().append_token(token)

    def add_paragraph(self, text: str) -> None:
        last = self.last_token()
        if last and last["type"] == "paragraph":
            last["text"] += text
        else:
            self.tokens.append({"type": "paragraph", "text": text, "_start": self.cursor})


class _Parser(mistune.BlockParser):
    state_cls = _State

    def parse_method(self, m: re.Match, state: mistune.BlockState) -> int | None:
        first, start = len(state.tokens), state.cursor
        end = super().parse_method(m, state)
        for token in state.tokens[first:]:
            token["_start"] = start  # some rules append their token only after parsing the body
        return end


_PARSER = _Parser()


def block_tokens(text: str) -> list[dict]:
    """Top-level block tokens with `_start`/`_end` offsets into `text`."""
    # Same length as `text`, so offsets carry over; mistune would otherwise fold CRLF itself.
    src = text.replace("\r", " ")
    state = _State()
    state.process(src if src.endswith("\n") else src + "\n")
    _PARSER.parse(state, _RULES)
    tokens = sorted(state.tokens, key=lambda t: t["_start"])
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        token["_end"] = min(following["_start"] if following else len(text), len(text))
    return tokens


def _heading_title(text: str, token: dict) -> str:
    line = text[token["_start"] : token["_end"]].splitlines()[0] if token["_end"] > token["_start"] else ""
    return line.strip().strip("#").strip().strip("*").strip().lower()


def sections(text: str, tokens: list[dict] | None = None) -> list[Section]:
    tokens = block_tokens(text) if tokens is None else tokens
    heads = [t for t in tokens if t["type"] == "heading"]
    found = []
    for i, head in enumerate(heads):
        level = head["attrs"]["level"]
        end = next((h["_start"] for h in heads[i + 1 :] if h["attrs"]["level"] <= level), len(text))
        body = text.find("\n", head["_start"])
        body_start = len(text) if body < 0 else body + 1
        if head.get("style") == "setext":  # the underline belongs to the heading
            under = text.find("\n", body_start)
            body_start = len(text) if under < 0 else under + 1
        found.append(Section(_heading_title(text, head), level, head["_start"], body_start, end))
    return found


def find(
    src: str | bytes, name: str, closed: bool = True
) -> tuple[Section | None, list[dict], Section | None, str]:
    """The first section titled `name`, parsing only as much of `src` as it takes; the tokens parsed;
    the Flow Log's heading when that prefix holds it too (its `end` not final); and the prefix, as
    text. `src` is the whole text, or the file's bytes (valid UTF-8), decoded only as far as parsed.

    With `closed` False only the heading is needed: the section's `end` is then not final."""
    # mistune costs per byte parsed. In the overviews the worker writes, the Flow Log's heading
    # follows the Status section: a prefix ending two lines past the first mention of it usually
    # holds both. When it does not, the prefix grows until it does; a guess never changes the result.
    mention = src.find("Flow Log", 0, 65536) if isinstance(src, str) else src.find(b"Flow Log", 0, 65536)
    size = mention + 256 if mention >= 0 else 4096
    while True:
        text, whole = _prefix(src, size)
        tokens = block_tokens(text)
        found = sections(text, tokens)
        # A heading the prefix holds whole is one in the whole text too (the one rule that looks past
        # a line, the setext underline, puts that line inside the heading); as a margin, one line of
        # the prefix must follow it.
        last = text.rfind("\n", 0, len(text) - 1) + 1
        heads = [s for s in found if whole or s.body_start <= last]
        flow = next((s for s in heads if s.title == FLOW_LOG), None)
        for section in found:
            if section.title != name:
                continue
            if whole or (not closed and section in heads):
                return section, tokens, flow, text
            # A section is final once a final heading closes it inside the parsed prefix.
            if closed and any(s.start == section.end for s in heads if s.start > section.start):
                return section, tokens, flow, text
        if whole:
            return None, tokens, flow, text
        size *= 4


def _prefix(src: str | bytes, size: int) -> tuple[str, bool]:
    """`src` up to the end of the line that holds offset `size` - 1, as text; and whether that is all
    of it. A cut after a line feed never splits a UTF-8 character."""
    if isinstance(src, str):
        cut = len(src) if size >= len(src) else src.rfind("\n", 0, size) + 1 or len(src)
        return src[:cut], cut == len(src)
    cut = len(src) if size >= len(src) else src.rfind(b"\n", 0, size) + 1 or len(src)
    return src[:cut].decode("utf-8"), cut == len(src)
