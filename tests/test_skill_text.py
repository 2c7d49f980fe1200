"""The parent-facing texts (the samocode-run skill, /samocode-implement) checked against the worker.

Every subcommand and `--flag` they show, every exit code they name, and every phase, signal status,
`for` value, `needs` value and Blocked value they quote must exist in the code, so the instructions
cannot drift from the worker. The facts come from the code itself: the argparse parser
(worker.cliargs.build_parser), ExitCode, Phase/PHASES, Status, WaitFor and Need. The checker is also fed
mutated texts to prove it notices an unknown flag, a wrong exit code and the like. The parent
protocol is checked too: every command runs through the launcher in a foreground call (`start` detaches
the worker; no background task, TaskStop or `&`), and the Worker line the stop rule quotes is the one
`status` prints.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import frontmatter
import mistune
import pytest

from worker.cliargs import build_parser
from worker.errors import ExitCode
from worker.phases import PHASES, Phase
from worker.signals import Need, Status, WaitFor

REPO = Path(__file__).resolve().parents[1]
SKILL = REPO / "skills" / "samocode-run" / "SKILL.md"
COMMAND = REPO / "commands" / "samocode-implement.md"

# Single words the texts may put in backticks that are not worker vocabulary (tools, a `status --json` key).
OTHER_WORDS = frozenset({"samocode", "timeout", "nohup", "sleep", "cat", "grep", "realpath", "plan"})
_WORD = re.compile(r"^[a-z][a-z_]*$")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}


@dataclass(frozen=True)
class WorkerFacts:
    subcommands: dict[str, frozenset[str]]  # subcommand -> its option strings
    default: str  # the subcommand used when none is given
    exit_codes: dict[int, str]  # value -> enum name
    phases: frozenset[str]
    statuses: frozenset[str]
    wait_for: frozenset[str]
    needs: frozenset[str]
    blocked: frozenset[str]

    @property
    def all_flags(self) -> frozenset[str]:
        return frozenset().union(*self.subcommands.values())

    def vocabulary(self) -> frozenset[str]:
        return (
            frozenset(self.subcommands)
            | self.phases
            | self.statuses
            | self.wait_for
            | self.needs
            | self.blocked
            | OTHER_WORDS
        )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = frozenset(
                    o for a in sub._actions for o in a.option_strings if o.startswith("--")
                )
    return found


def _blocked_values() -> frozenset[str]:
    """The values the worker writes into the overview's `Blocked:` line (read from its source)."""
    values: set[str] = set()
    for source in (REPO / "worker").rglob("*.py"):
        values |= set(re.findall(r"""["']Blocked["']\]?\s*[:=]\s*["']([a-z_]+)["']""", source.read_text()))
    return frozenset(values)


def worker_facts() -> WorkerFacts:
    return WorkerFacts(
        subcommands=_subcommands(build_parser()),
        default="run",
        exit_codes={int(code): code.name for code in ExitCode},
        phases=frozenset(p.value for p in Phase),
        statuses=frozenset(s.value for s in Status),
        wait_for=frozenset(w.value for w in WaitFor),
        needs=frozenset(n.value for n in Need),
        blocked=_blocked_values(),
    )


# --- reading the markdown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    meta: dict[str, Any]
    body: str
    code_blocks: list[str]
    code_spans: list[str]
    tables: list[list[list[str]]]  # table -> rows (header first) -> cell texts


def _inline_text(children: list[dict[str, Any]]) -> str:
    parts = []
    for child in children:
        if "raw" in child:
            parts.append(child["raw"])
        parts.append(_inline_text(child.get("children") or []))
    return "".join(parts)


def _walk(tokens: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for token in tokens:
        yield token
        yield from _walk(token.get("children") or [])


def parse(text: str) -> Parsed:
    post = frontmatter.loads(text)
    tokens = mistune.create_markdown(renderer=None, plugins=["table"])(post.content)
    blocks, spans, tables = [], [], []
    for token in _walk(tokens):
        if token["type"] == "block_code":
            blocks.append(token["raw"])
        elif token["type"] == "codespan":
            spans.append(token["raw"])
        elif token["type"] == "table":
            rows = []
            for part in token["children"]:
                if part["type"] == "table_head":
                    rows.append([_inline_text(c["children"]) for c in part["children"]])
                else:
                    rows += [
                        [_inline_text(c["children"]) for c in row["children"]] for row in part["children"]
                    ]
            tables.append(rows)
    return Parsed(dict(post.metadata), post.content, blocks, spans, tables)


# --- the checks -------------------------------------------------------------------------------------


def _words(snippet: str) -> list[str]:
    try:
        return shlex.split(snippet, comments=False)
    except ValueError:  # an unbalanced quote in an example: fall back to plain words
        return snippet.split()


def _is_program(word: str) -> bool:
    return word.rsplit("/", 1)[-1] in ("samocode", "main.py")


def check_invocation(snippet: str, facts: WorkerFacts) -> list[str]:
    """Subcommands and flags of one command line (a code-block line or an inline code span)."""
    words = _words(snippet)
    starts = [i for i, w in enumerate(words) if _is_program(w)]
    if starts:
        rest = words[starts[0] + 1 :]
    elif words and words[0] in facts.subcommands:
        rest = words
    else:
        return []  # not a command line; its flags are checked with the whole text
    args = []
    for word in rest:
        if word in _SHELL_STOP:
            break
        word = word.strip("[]()|")
        if word:
            args.append(word)
    if not args:
        return []
    if args[0].startswith("--"):
        sub = facts.default
    elif args[0] in facts.subcommands:
        sub, args = args[0], args[1:]
    elif _WORD.match(args[0]):
        return [f"unknown subcommand '{args[0]}' in `{snippet.strip()}`"]
    else:
        return []
    options = facts.subcommands.get(sub, frozenset())
    return [
        f"`{sub}` has no option {flag} (in `{snippet.strip()}`)"
        for flag in (a.split("=", 1)[0] for a in args if a.startswith("--"))
        if flag not in options
    ]


_EXIT_RUN = re.compile(r"\bexit(?:s|ed)?(?: codes?)?\s+(?=\d)", re.IGNORECASE)
_CODE_ITEM = re.compile(r"\s*(\d+)(?:\s*\(([^)]*)\))?")
_CODE_SEP = re.compile(r"\s*(?:,|/|\bor\b|\band\b)\s*")


def _spoken(name: str) -> str:
    return name.lower().replace("_", " ")


def _says(text: str, name: str) -> bool:
    """Whether text names the exit code `name` as a whole word ('blocked' does not say 'locked')."""
    return re.search(rf"\b{re.escape(_spoken(name))}\b", text.lower()) is not None


def check_exit_mentions(text: str, facts: WorkerFacts) -> list[str]:
    """'exit 5 (provider failed), 130 or 143': each code exists and a (label) matches its name."""
    problems = []
    for match in _EXIT_RUN.finditer(text):
        pos = match.end()
        while item := _CODE_ITEM.match(text, pos):
            code, label = int(item.group(1)), item.group(2)
            if code not in facts.exit_codes:
                problems.append(
                    f"exit code {code} does not exist (near '{text[match.start() : item.end()]}')"
                )
            elif label is not None and not _says(label, facts.exit_codes[code]):
                problems.append(f"exit {code} is {facts.exit_codes[code]}, not '{label}'")
            sep = _CODE_SEP.match(text, item.end())
            if not sep:
                break
            pos = sep.end()
    return problems


def exit_table(parsed: Parsed) -> list[list[str]] | None:
    for table in parsed.tables:
        head = " ".join(table[0]).lower()
        if "code" in head and "meaning" in head:
            return table
    return None


def check_exit_table(table: list[list[str]], facts: WorkerFacts) -> list[str]:
    """Each row's codes exist and the row names each code's meaning; every code has a row."""
    problems, seen = [], set()
    for row in table[1:]:
        codes = [int(c) for c in re.findall(r"\d+", row[0])]
        if not codes:
            problems.append(f"exit-code row without a code: {row}")
        text = " ".join(row).lower()
        for code in codes:
            seen.add(code)
            if code not in facts.exit_codes:
                problems.append(f"exit-code table names {code}, which is not an ExitCode")
            elif not _says(text, facts.exit_codes[code]):
                problems.append(f"exit-code row for {code} does not say '{_spoken(facts.exit_codes[code])}'")
    missing = sorted(set(facts.exit_codes) - seen)
    if missing:
        problems.append(f"exit-code table misses {missing}")
    return problems


_QUOTED_VALUES = (
    # (pattern, which facts it must belong to, what it is)
    (re.compile(r"\bPhase:\s*([a-z_]+)"), "phases", "phase"),
    (re.compile(r"\bBlocked:\s*([a-z_]+)"), "blocked", "Blocked value"),
    (re.compile(r"""["']status["']\s*:\s*["']([a-z_]+)"""), "statuses", "signal status"),
    (re.compile(r"""["']?\b(?:for|waiting_for)["']?\s*:\s*["']?([a-z_]+)"""), "wait_for", "'for' value"),
    (re.compile(r"""["']needs["']\s*:\s*["']([a-z_]+)"""), "needs", "'needs' value"),
)


def check_text(text: str, facts: WorkerFacts, *, needs_exit_table: bool) -> list[str]:
    parsed = parse(text)
    problems: list[str] = []
    lines = [line for block in parsed.code_blocks for line in block.splitlines()]
    for snippet in lines + parsed.code_spans:
        problems += check_invocation(snippet, facts)
    for flag in sorted(set(_FLAG.findall(parsed.body))):
        if flag not in facts.all_flags:
            problems.append(f"no worker command has the option {flag}")
    vocabulary = facts.vocabulary()
    for span in parsed.code_spans:
        if _WORD.match(span) and span not in vocabulary:
            problems.append(
                f"`{span}` is not a phase, status, 'for'/'needs' value or subcommand of the worker"
            )
    for pattern, kind, what in _QUOTED_VALUES:
        for value in pattern.findall(parsed.body):
            if value not in getattr(facts, kind):
                problems.append(f"unknown {what} '{value}'")
    problems += check_exit_mentions(parsed.body, facts)
    table = exit_table(parsed)
    if table is not None:
        problems += check_exit_table(table, facts)
    elif needs_exit_table:
        problems.append("no exit-code table (a table with 'Code' and 'Meaning' columns)")
    return problems


# --- the real texts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facts() -> WorkerFacts:
    return worker_facts()


def test_worker_facts_come_from_the_code(facts: WorkerFacts) -> None:
    assert facts.default in facts.subcommands
    assert "--config" in facts.subcommands["run"] and "--session" in facts.subcommands["run"]
    assert set(PHASES) == {Phase(p) for p in facts.phases}
    assert {"no", "yes", "waiting_human"} <= facts.blocked


def test_skill_matches_the_worker(facts: WorkerFacts) -> None:
    assert check_text(SKILL.read_text(), facts, needs_exit_table=True) == []


def test_command_matches_the_worker(facts: WorkerFacts) -> None:
    assert check_text(COMMAND.read_text(), facts, needs_exit_table=False) == []


def test_skill_names_every_subcommand_wait_and_phase(facts: WorkerFacts) -> None:
    """The other direction: a new subcommand, `for` value or phase must reach the skill too."""
    parsed = parse(SKILL.read_text())
    spans = set(parsed.code_spans)
    invoked = {w for s in parsed.code_spans + parsed.code_blocks for w in _words(s)}
    missing_subs = sorted(s for s in facts.subcommands if s != facts.default and s not in spans | invoked)
    assert missing_subs == []
    assert sorted(w for w in facts.wait_for if w not in spans) == []
    assert sorted(p for p in facts.phases if not re.search(rf"\b{p}\b", parsed.body)) == []


def test_frontmatter(facts: WorkerFacts) -> None:
    skill = parse(SKILL.read_text()).meta
    assert skill["name"] == SKILL.parent.name == "samocode-run"
    description = skill["description"]
    assert isinstance(description, str) and len(description) <= 300
    for phrase in ("run", "samocode", "implement the plan", "/samocode-implement"):
        assert phrase in description
    command = parse(COMMAND.read_text()).meta
    assert command["description"] and command["argument-hint"]
    # `: ` inside an unquoted description fails `claude plugin validate`: keep them quoted.
    for path in (SKILL, COMMAND):
        line = next(x for x in path.read_text().splitlines() if x.startswith("description:"))
        assert line.split(":", 1)[1].strip().startswith('"'), path


def _block_lines(parsed: Parsed) -> list[str]:
    return [line.strip() for block in parsed.code_blocks for line in block.splitlines()]


def _launcher_lines(parsed: Parsed, sub: str) -> list[str]:
    """The code-block lines that run `sub` through the launcher (what a parent copies and runs)."""
    return [
        x for x in _block_lines(parsed) if x.startswith(f'"${{CLAUDE_SKILL_DIR}}/scripts/samocode" {sub} ')
    ]


def test_skill_runs_every_command_through_its_launcher() -> None:
    parsed = parse(SKILL.read_text())
    assert (SKILL.parent / "scripts" / "samocode").stat().st_mode & 0o111
    for sub in ("status", "start", "watch", "approve", "answer", "stop"):
        lines = _launcher_lines(parsed, sub)
        assert lines, f"no code block runs `{sub}` through the launcher"
        assert all("--config <CONFIG> --session <NAME>" in line for line in lines), lines
    starts = _launcher_lines(parsed, "start")
    assert any('--task "<TASK>"' in line for line in starts) and any("--task" not in x for x in starts)
    (watch,) = _launcher_lines(parsed, "watch")
    assert watch.endswith("--timeout 540")


def test_skill_starts_the_worker_detached_and_watches_in_the_foreground() -> None:
    """No background task of the parent CLI holds the worker (the CLI stops those after at most
    its Bash time limit), and nothing tells the parent to stop the worker on its own account."""
    text = SKILL.read_text()
    both = text + COMMAND.read_text()
    for phrase in ("run_in_background", "TaskStop", "TaskOutput", "BashOutput", "KillShell"):
        assert phrase not in both, phrase
    for line in _block_lines(parse(text)) + _block_lines(parse(COMMAND.read_text())):
        words = _words(line)
        assert "&" not in words and not line.endswith("&"), line
        assert not {"nohup", "setsid", "timeout", "sleep"} & set(words), line
    # `watch` waits at most 540 s; the Bash call must be allowed longer than that.
    limits = [int(n) for n in re.findall(r"timeout: (\d+)", text)]
    assert limits and all(n >= 540_000 + 30_000 for n in limits), limits
    assert "`Worker: not running`" in text and "`Worker: running`" in text
    assert "Never stop the worker unless the user asks" in text
    assert "Never stop the worker unless the user asks" in COMMAND.read_text()


def test_skill_quotes_the_worker_line_that_status_prints() -> None:
    """The stop rule hinges on the Worker line: its words must be the ones `status` renders."""
    source = (REPO / "worker" / "status.py").read_text()
    spans = [s for s in parse(SKILL.read_text()).code_spans if s.startswith("Worker: ")]
    assert spans
    for span in spans:
        fixed = re.split(r"\d|\(|<", span.removeprefix("Worker: "))[0].strip(" ·")
        assert fixed and fixed in source, f"`{span}`: '{fixed}' is not in worker/status.py"


def test_no_session_and_config_errors_have_their_own_codes(facts: WorkerFacts) -> None:
    """`status` on a missing session is NO_SESSION, not the usage/config code, in the code and the skill."""
    assert facts.exit_codes.get(9) == "NO_SESSION" and facts.exit_codes[2] == "USAGE"
    table = exit_table(parse(SKILL.read_text()))
    assert table is not None
    rows = {int(c): " ".join(row).lower() for row in table[1:] for c in re.findall(r"\d+", row[0])}
    assert "no session" in rows[9] and "session" not in rows[2]
    assert f"Exit {int(ExitCode.NO_SESSION)} (no session named" in SKILL.read_text()


# --- the checker notices drift (mutated texts) ------------------------------------------------------


def _mutated(old: str, new: str, path: Path = SKILL) -> str:
    text = path.read_text()
    assert old in text, f"the mutation target {old!r} is gone from {path.name}"
    return text.replace(old, new, 1)


def _problems(text: str, facts: WorkerFacts) -> str:
    return "\n".join(check_text(text, facts, needs_exit_table=False))


def test_checker_catches_an_unknown_flag(facts: WorkerFacts) -> None:
    text = _mutated(
        "watch --config <CONFIG> --session <NAME> --timeout 540", "watch --config <CONFIG> --every 540"
    )
    assert "--every" in _problems(text, facts)


def test_checker_catches_a_flag_of_another_subcommand(facts: WorkerFacts) -> None:
    text = _mutated('`resume --goal "<their goal>"`', '`unblock --goal "<their goal>"`')
    assert "`unblock` has no option --goal" in _problems(text, facts)


def test_checker_catches_an_unknown_subcommand(facts: WorkerFacts) -> None:
    text = _mutated('scripts/samocode" status --config', 'scripts/samocode" pause --config')
    assert "unknown subcommand 'pause'" in _problems(text, facts)
    text = _mutated('scripts/samocode" stop --config', 'scripts/samocode" kill --config')
    assert "unknown subcommand 'kill'" in _problems(text, facts)


def test_checker_catches_an_option_start_does_not_have(facts: WorkerFacts) -> None:
    text = _mutated(
        'start --config <CONFIG> --session <NAME> --task "<TASK>"', "start --session <NAME> --detach"
    )
    assert "`start` has no option --detach" in _problems(text, facts)


def test_checker_catches_a_missing_code_in_the_exit_table(facts: WorkerFacts) -> None:
    text = _mutated("| 9 | no session of that name", "| 10 | no session of that name")
    problems = check_text(text, facts, needs_exit_table=True)
    assert "exit-code table misses [9]" in problems


def test_checker_catches_a_wrong_code_in_the_exit_table(facts: WorkerFacts) -> None:
    text = _mutated("| 3 | waiting for a human |", "| 11 | waiting for a human |")
    problems = check_text(text, facts, needs_exit_table=True)
    assert "exit-code table names 11, which is not an ExitCode" in problems
    assert "exit-code table misses [3]" in problems


def test_checker_catches_swapped_codes_in_the_exit_table(facts: WorkerFacts) -> None:
    text = _mutated("| 4 | blocked |", "| 6 | blocked |")
    assert "exit-code row for 6 does not say 'locked'" in _problems(text, facts)


def test_checker_catches_a_wrong_exit_code_in_prose(facts: WorkerFacts) -> None:
    text = _mutated("exit 3 (waiting)", "exit 4 (waiting)", COMMAND)
    assert "exit 4 is BLOCKED, not 'waiting'" in _problems(text, facts)
    text = _mutated("with exit 5 (provider failed)", "with exit 11 (provider failed)", COMMAND)
    assert "exit code 11 does not exist" in _problems(text, facts)


def test_checker_catches_unknown_phase_status_and_for_values(facts: WorkerFacts) -> None:
    problems = _problems(_mutated("phase `planning` waiting", "phase `review` waiting"), facts)
    assert "`review` is not a phase" in problems
    problems = _problems(_mutated("- `plan_approval`: say", "- `plan_review`: say"), facts)
    assert "`plan_review` is not a phase" in problems
    extra = '\n```json\n{"status": "paused", "for": "approval"}\n```\n\nPhase: review\n'
    problems = _problems(SKILL.read_text() + extra, facts)
    assert "unknown signal status 'paused'" in problems
    assert "unknown 'for' value 'approval'" in problems
    assert "unknown phase 'review'" in problems
