"""Read samocode's prompt texts (workflow.md, agents/<phase>-agent.md, AGENTS.md) as data.

The texts follow machine-readable conventions so tests can hold them to worker/phases.py:

- An agent file is YAML frontmatter plus a markdown body. The body has exactly one paragraph
  `**Cap:** N iterations.` and a `## Signals` section holding a table `| Outcome | Signal |`; each
  Signal cell is one inline-code JSON object, the exact `_signal.json` for that outcome. The
  rehearsal test drives the worker by following these rows.
- workflow.md has a table `| Status | Meaning | Required fields | Example |` and the vocabulary
  tables `| `for` | Phases | Meaning |` and `| `needs` | Meaning |`.
- AGENTS.md has the phase table `| Phase | Produces | Cap | May move to | May wait for | Statuses |`,
  one backticked value per item, `—` for none.

Everything is located through mistune's AST (headings, tables, code spans, fences), never by
regular expressions over the raw text.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import mistune
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The tests run from a checkout that need not be pip-installed; make `worker` importable.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AGENTS_DIR = ROOT / "agents"
WORKFLOW = ROOT / "workflow.md"
GUIDE = ROOT / "AGENTS.md"

_markdown = mistune.create_markdown(renderer=None, plugins=["table"])
_CAP = re.compile(r"^Cap:\s*(\d+)\s+iterations?\b")


class TextError(Exception):
    """A text breaks one of the conventions above; the message says where."""


@dataclass(frozen=True)
class Cell:
    text: str  # plain text, code spans included verbatim (without backticks)
    code: tuple[str, ...]  # the cell's code spans, in order


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def column(self, name: str) -> int:
        wanted = name.strip().lower()
        for i, title in enumerate(self.header):
            if title.strip().lower() == wanted:
                return i
        raise TextError(f"table {list(self.header)} has no column {name!r}")


@dataclass(frozen=True)
class SignalRow:
    outcome: str
    signal: dict[str, Any]


@dataclass(frozen=True)
class AgentText:
    phase: str
    path: Path | None
    frontmatter: dict[str, Any]
    body: str
    tokens: list[dict] = field(repr=False)
    signals: tuple[SignalRow, ...]
    cap: int


@dataclass(frozen=True)
class StatusRow:
    status: str
    required: frozenset[str]
    example: dict[str, Any]


@dataclass(frozen=True)
class WorkflowText:
    tokens: list[dict] = field(repr=False)
    statuses: tuple[StatusRow, ...]
    wait_for: dict[str, frozenset[str]]  # `for` value -> phases that may wait for it
    needs: frozenset[str]


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    cap: int
    moves_to: frozenset[str]
    waits_for: frozenset[str]
    statuses: frozenset[str]


# --- generic markdown helpers -------------------------------------------------------------------


def tokens_of(text: str) -> list[dict]:
    return _markdown(text)


def walk(tokens: list[dict]) -> Iterator[dict]:
    """Every token, depth first, in document order."""
    for token in tokens:
        yield token
        yield from walk(token.get("children") or [])


def plain(tokens: list[dict] | dict) -> str:
    """The visible text of tokens: code spans verbatim, emphasis markers dropped."""
    if isinstance(tokens, dict):
        tokens = [tokens]
    parts = []
    for token in tokens:
        kind = token["type"]
        if kind in ("text", "codespan"):
            parts.append(token["raw"])
        elif kind in ("softbreak", "linebreak"):
            parts.append(" ")
        elif "children" in token:
            parts.append(plain(token["children"]))
    return "".join(parts)


def section(tokens: list[dict], title: str) -> list[dict]:
    """The top-level tokens under the heading whose text is `title`, up to the next heading of the
    same or a higher level. Raises TextError when there is no such heading."""
    wanted = title.strip().lower()
    for i, token in enumerate(tokens):
        if token["type"] == "heading" and plain(token).strip().lower() == wanted:
            level = token["attrs"]["level"]
            end = next(
                (
                    j
                    for j in range(i + 1, len(tokens))
                    if tokens[j]["type"] == "heading" and tokens[j]["attrs"]["level"] <= level
                ),
                len(tokens),
            )
            return tokens[i + 1 : end]
    raise TextError(f"no section titled {title!r}")


def tables(tokens: list[dict]) -> list[Table]:
    found = []
    for token in walk(tokens):
        if token["type"] != "table":
            continue
        head = next(t for t in token["children"] if t["type"] == "table_head")
        body = next((t for t in token["children"] if t["type"] == "table_body"), {"children": []})
        header = tuple(plain(cell).strip() for cell in head["children"])
        rows = tuple(tuple(_cell(cell) for cell in row["children"]) for row in body["children"])
        found.append(Table(header, rows))
    return found


def _cell(token: dict) -> Cell:
    code = tuple(t["raw"] for t in walk(token["children"]) if t["type"] == "codespan")
    return Cell(plain(token).strip(), code)


def find_table(tokens: list[dict], *columns: str) -> Table:
    """The first table whose header has all `columns` (case-insensitive)."""
    wanted = {c.lower() for c in columns}
    for table in tables(tokens):
        if wanted <= {h.lower() for h in table.header}:
            return table
    raise TextError(f"no table with columns {list(columns)}")


def code_spans(tokens: list[dict]) -> list[str]:
    return [t["raw"] for t in walk(tokens) if t["type"] == "codespan"]


def fences(tokens: list[dict], info: str) -> list[str]:
    """Contents of fenced code blocks whose info string starts with `info`."""
    return [
        t["raw"]
        for t in walk(tokens)
        if t["type"] == "block_code" and (t.get("attrs") or {}).get("info", "").split(" ")[0] == info
    ]


def prose(tokens: list[dict]) -> list[str]:
    """The text of every paragraph, list item line and table cell (code blocks left out)."""
    out = []
    for token in walk(tokens):
        if token["type"] in ("paragraph", "block_text", "table_cell", "heading"):
            out.append(plain(token))
    return out


def signal_examples(tokens: list[dict]) -> list[dict[str, Any]]:
    """Every JSON signal shown in the text: ```json fences, and code spans that are JSON objects
    with a `status`."""
    found = []
    for raw in fences(tokens, "json"):
        found.append(_json_object(raw))
    for raw in code_spans(tokens):
        if raw.lstrip().startswith("{"):
            data = _json_object(raw)
            if "status" in data:
                found.append(data)
    return found


def _json_object(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TextError(f"not valid JSON ({exc.msg}): {raw.strip()[:120]}") from None
    if not isinstance(data, dict):
        raise TextError(f"not a JSON object: {raw.strip()[:120]}")
    return data


def _values(cell: Cell) -> frozenset[str]:
    """Backticked items of a list cell; a cell with none (e.g. `—`) is the empty set."""
    return frozenset(code.strip() for code in cell.code)


# --- agent files -------------------------------------------------------------------------------


def agent_path(phase: str) -> Path:
    return AGENTS_DIR / f"{phase}-agent.md"


def split_frontmatter(text: str) -> tuple[dict[str, Any], str]:
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        raise TextError(f"frontmatter does not parse: {exc}") from None
    return dict(post.metadata), post.content


def parse_agent(phase: str, text: str, path: Path | None = None) -> AgentText:
    meta, body = split_frontmatter(text)
    tokens = tokens_of(body)
    caps = [int(m.group(1)) for p in prose(tokens) if (m := _CAP.match(p.strip()))]
    if len(caps) != 1:
        raise TextError(f"{phase}: expected one '**Cap:** N iterations.' paragraph, found {len(caps)}")
    table = find_table(section(tokens, "Signals"), "Outcome", "Signal")
    outcome_col, signal_col = table.column("Outcome"), table.column("Signal")
    rows = []
    for row in table.rows:
        codes = row[signal_col].code
        if len(codes) != 1:
            raise TextError(f"{phase}: Signal cell must be one code span: {row[signal_col].text!r}")
        rows.append(SignalRow(row[outcome_col].text, _json_object(codes[0])))
    if not rows:
        raise TextError(f"{phase}: the Signals table has no rows")
    return AgentText(phase, path, meta, body, tokens, tuple(rows), caps[0])


def load_agent(phase: str) -> AgentText:
    path = agent_path(phase)
    return parse_agent(phase, path.read_text(encoding="utf-8"), path)


# --- workflow.md -------------------------------------------------------------------------------


def parse_workflow(text: str) -> WorkflowText:
    tokens = tokens_of(text)
    table = find_table(tokens, "Status", "Required fields", "Example")
    status_col, req_col, ex_col = (table.column(c) for c in ("Status", "Required fields", "Example"))
    statuses = []
    for row in table.rows:
        if len(row[status_col].code) != 1 or len(row[ex_col].code) != 1:
            raise TextError(f"workflow status row needs one status and one example: {row[status_col].text}")
        example = _json_object(row[ex_col].code[0])
        statuses.append(StatusRow(row[status_col].code[0], _values(row[req_col]), example))

    wait_table = find_table(tokens, "for", "Phases")
    wait_for = {
        row[wait_table.column("for")].code[0]: _values(row[wait_table.column("Phases")])
        for row in wait_table.rows
    }
    needs_table = find_table(tokens, "needs", "Meaning")
    needs = frozenset(row[needs_table.column("needs")].code[0] for row in needs_table.rows)
    return WorkflowText(tokens, tuple(statuses), wait_for, needs)


def load_workflow() -> WorkflowText:
    return parse_workflow(WORKFLOW.read_text(encoding="utf-8"))


# --- AGENTS.md ---------------------------------------------------------------------------------

PHASE_TABLE_COLUMNS = ("Phase", "Cap", "May move to", "May wait for", "Statuses")


def parse_phase_table(text: str) -> list[PhaseRow]:
    table = find_table(tokens_of(text), *PHASE_TABLE_COLUMNS)
    col = {name: table.column(name) for name in PHASE_TABLE_COLUMNS}
    rows = []
    for row in table.rows:
        phase_cell, cap_cell = row[col["Phase"]], row[col["Cap"]]
        if len(phase_cell.code) != 1 or not cap_cell.text.isdigit():
            raise TextError(f"phase table row is malformed: {phase_cell.text!r} | {cap_cell.text!r}")
        rows.append(
            PhaseRow(
                phase=phase_cell.code[0],
                cap=int(cap_cell.text),
                moves_to=_values(row[col["May move to"]]),
                waits_for=_values(row[col["May wait for"]]),
                statuses=_values(row[col["Statuses"]]),
            )
        )
    return rows
