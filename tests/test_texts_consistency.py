"""workflow.md, agents/<phase>-agent.md and AGENTS.md must agree with worker/phases.py.

The checks are functions returning a list of problems, so the negative tests at the end can feed
them mutated texts and prove each one bites.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from agent_texts import (
    AGENTS_DIR,
    GUIDE,
    WORKFLOW,
    AgentText,
    PhaseRow,
    TextError,
    WorkflowText,
    agent_path,
    code_spans,
    load_agent,
    load_workflow,
    parse_agent,
    parse_phase_table,
    parse_workflow,
    prose,
    signal_examples,
    split_frontmatter,
    tokens_of,
)

from worker.errors import ExitCode, InvalidSignal
from worker.phases import PHASES, Phase, SessionState, decide
from worker.signals import CHILD_NEEDS, CHILD_WAIT_FOR, Need, Status, WaitFor, parse_signal

ALL_PHASES = [p.value for p in Phase]

# What the contract requires of each status (common brief); the workflow table may ask for more.
CONTRACT_REQUIRED = {"continue": {"phase"}, "waiting": {"for"}, "blocked": {"reason"}, "done": {"summary"}}

# Claude Code agent frontmatter (reference: claude-plugin-format.md §4).
AGENT_KEYS = {
    "name", "description", "tools", "disallowedTools", "model", "effort", "color", "maxTurns", "skills",
    "memory", "background", "isolation", "initialPrompt", "permissionMode", "hooks", "mcpServers",
}  # fmt: skip
KNOWN_TOOLS = {
    "Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "Bash", "LS", "NotebookEdit", "NotebookRead",
    "WebFetch", "WebSearch", "TodoWrite", "Task", "Agent", "BashOutput", "KillShell", "Skill",
}  # fmt: skip
# Every phase reads and edits the overview and writes `_signal.json`; git needs a shell.
NEEDED_TOOLS = {"Read", "Write", "Edit", "Bash"}
MODELS = {"inherit", "sonnet", "opus", "haiku"}
PERMISSION_MODES = {"default", "acceptEdits", "auto", "bypassPermissions", "dontAsk", "plan"}

WORKER_ONLY = {WaitFor.USAGE_LIMIT.value, Need.BUDGET.value}
VOCABULARY = {w.value for w in WaitFor} | {n.value for n in Need} | {"waiting_for"}
SNAKE = re.compile(r"^[a-z]+(?:_[a-z]+)+$")
KEYED_VALUE = re.compile(r"\b(for|needs|waiting_for)\"?\s*:\s*\"?([A-Za-z_]+)")
ARROW = re.compile(r"→\s*`?([a-z]+)`?")
# Tool names only one CLI has; bodies must say "read the file", "run in a shell" instead.
ONE_CLI_TOOL = re.compile(
    r"\b(?:Glob|Grep|TodoWrite|MultiEdit|NotebookEdit|WebFetch|WebSearch|exec_command|apply_patch)\b"
    r"|\b(?:Read|Write|Edit|Bash|Task) tool\b"
)


# --- the checks ----------------------------------------------------------------------------------


def judge(phase: Phase, data: dict[str, Any]) -> str:
    """'' when the worker takes `data` as written in `phase` (first iteration), else why not."""
    try:
        signal = parse_signal(data)
    except InvalidSignal as exc:
        return exc.reason
    if signal.waiting_for and signal.waiting_for not in CHILD_WAIT_FOR:
        return f"'for: {signal.waiting_for.value}' is worker-only"
    if signal.needs and signal.needs not in CHILD_NEEDS:
        return f"'needs: {signal.needs.value}' is worker-only"
    decision = decide(SessionState(phase, 1, 0), signal)
    if not decision.accepted:
        return decision.converted
    if decision.verdict.value != signal.status.value:
        return f"status {signal.status.value} became {decision.verdict.value}"
    return ""


def accepted_somewhere(data: dict[str, Any]) -> str:
    """'' when some phase takes `data` as written, else the reason the first phase gave."""
    reasons = [judge(phase, data) for phase in Phase]
    return "" if "" in reasons else reasons[0]


def frontmatter_problems(phase: str, meta: dict[str, Any]) -> list[str]:
    problems = [f"unknown frontmatter key '{key}'" for key in meta if key not in AGENT_KEYS]
    if meta.get("name") != f"samocode-{phase}":
        problems.append(f"name must be 'samocode-{phase}', got {meta.get('name')!r}")
    description = meta.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("description must be a non-empty string")
    tools = meta.get("tools")
    if isinstance(tools, str):
        tools = [t.strip() for t in tools.split(",") if t.strip()]
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        problems.append(f"tools must be a comma-separated string or a list, got {tools!r}")
    else:
        problems += [f"unknown tool '{t}'" for t in tools if t not in KNOWN_TOOLS]
        if missing := NEEDED_TOOLS - set(tools):
            problems.append(f"tools lack {sorted(missing)}: the agent could not write its signal")
    if meta.get("model") not in MODELS:
        problems.append(f"model must be one of {sorted(MODELS)}, got {meta.get('model')!r}")
    if "permissionMode" in meta and meta["permissionMode"] not in PERMISSION_MODES:
        problems.append(f"invalid permissionMode {meta['permissionMode']!r}")
    return problems


def agent_problems(agent: AgentText, workflow: WorkflowText) -> list[str]:
    phase = Phase(agent.phase)
    rule = PHASES[phase]
    problems = frontmatter_problems(agent.phase, agent.frontmatter)
    if agent.cap != rule.cap:
        problems.append(f"{phase.value}: states cap {agent.cap}, PHASES says {rule.cap}")

    required = {row.status: row.required for row in workflow.statuses}
    for row in agent.signals:
        if why := judge(phase, row.signal):
            problems.append(f"{phase.value}: signal for '{row.outcome}' is refused: {why}")
        status = row.signal.get("status", "")
        if missing := required.get(status, frozenset()) - row.signal.keys():
            problems.append(f"{phase.value}: signal for '{row.outcome}' lacks {sorted(missing)}")
    for example in signal_examples(agent.tokens):
        if why := judge(phase, example):
            problems.append(f"{phase.value}: example {example} is refused: {why}")

    # The table must cover the rule, not just stay inside it.
    rows = [row.signal for row in agent.signals]
    statuses = {s.get("status") for s in rows}
    targets = {s.get("phase") for s in rows if s.get("status") == "continue"} - {phase.value}
    waits = {s.get("for") for s in rows if s.get("status") == "waiting"}
    if statuses != {s.value for s in rule.statuses}:
        problems.append(f"{phase.value}: Signals table statuses {sorted(statuses)} != PHASES")
    if targets != {p.value for p in rule.next_phases}:
        problems.append(f"{phase.value}: Signals table moves to {sorted(targets)} != PHASES")
    if waits != {w.value for w in rule.waits_for}:
        problems.append(f"{phase.value}: Signals table waits for {sorted(waits)} != PHASES")

    allowed = {p.value for p in rule.next_phases} | {phase.value}
    for line in prose(agent.tokens):
        for target in ARROW.findall(line):
            if target in ALL_PHASES and target not in allowed:
                problems.append(f"{phase.value}: text states a move to {target}: {line.strip()[:100]}")
    problems += [
        f"{phase.value}: mentions worker-only '{v}'" for v in code_spans(agent.tokens) if v in WORKER_ONLY
    ]
    problems += [f"{phase.value}: {p}" for p in vocabulary_problems(agent.tokens, snake=True)]
    problems += [f"{phase.value}: names a one-CLI tool: {m}" for m in one_cli_tools(agent.tokens)]
    return problems


def vocabulary_problems(tokens: list[dict], *, snake: bool) -> list[str]:
    """Backticked `for`/`needs` values must exist; with `snake`, so must any snake_case word."""
    problems = []
    for span in code_spans(tokens):
        for key, value in KEYED_VALUE.findall(span):
            if value not in VOCABULARY:
                problems.append(f"unknown '{key}' value '{value}' in `{span}`")
        if snake and SNAKE.match(span) and span not in VOCABULARY:
            problems.append(f"unknown vocabulary word `{span}`")
    return problems


def one_cli_tools(tokens: list[dict]) -> list[str]:
    return [m.group() for line in prose(tokens) for m in ONE_CLI_TOOL.finditer(line)]


def workflow_problems(workflow: WorkflowText) -> list[str]:
    problems = []
    listed = [row.status for row in workflow.statuses]
    if sorted(listed) != sorted(s.value for s in Status):
        problems.append(f"status table lists {listed}, the worker knows {[s.value for s in Status]}")
    for row in workflow.statuses:
        if missing := CONTRACT_REQUIRED.get(row.status, set()) - row.required:
            problems.append(f"status {row.status}: required fields lack {sorted(missing)}")
        if row.example.get("status") != row.status:
            problems.append(f"status {row.status}: example has status {row.example.get('status')!r}")
        if missing := row.required - row.example.keys():
            problems.append(f"status {row.status}: example lacks {sorted(missing)}")
    for example in signal_examples(workflow.tokens):
        if why := accepted_somewhere(example):
            problems.append(f"example {example} is refused in every phase: {why}")

    expected_waits = {
        w.value: frozenset(p.value for p, rule in PHASES.items() if w in rule.waits_for)
        for w in CHILD_WAIT_FOR
    }
    if workflow.wait_for != expected_waits:
        problems.append(f"`for` table {workflow.wait_for} != PHASES {expected_waits}")
    if workflow.needs != {n.value for n in CHILD_NEEDS}:
        problems.append(f"`needs` table {sorted(workflow.needs)} != {sorted(n.value for n in CHILD_NEEDS)}")
    problems += vocabulary_problems(workflow.tokens, snake=True)
    problems += [f"names a one-CLI tool: {m}" for m in one_cli_tools(workflow.tokens)]
    return problems


def phase_table_problems(rows: list[PhaseRow]) -> list[str]:
    problems = []
    if [row.phase for row in rows] != ALL_PHASES:
        problems.append(f"phase table rows {[row.phase for row in rows]} != {ALL_PHASES}")
    for row in rows:
        rule = PHASES.get(Phase(row.phase)) if row.phase in ALL_PHASES else None
        if rule is None:
            continue
        checks = {
            "cap": (row.cap, rule.cap),
            "may move to": (row.moves_to, {p.value for p in rule.next_phases}),
            "may wait for": (row.waits_for, {w.value for w in rule.waits_for}),
            "statuses": (row.statuses, {s.value for s in rule.statuses}),
        }
        for column, (stated, truth) in checks.items():
            if stated != truth:
                problems.append(f"{row.phase}: {column} says {stated}, PHASES says {truth}")
    return problems


# --- the texts as they are ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> WorkflowText:
    return load_workflow()


def test_every_phase_has_an_agent_file_and_no_other() -> None:
    stems = sorted(p.name for p in AGENTS_DIR.glob("*-agent.md"))
    assert stems == sorted(agent_path(phase).name for phase in ALL_PHASES)


@pytest.mark.parametrize("phase", ALL_PHASES)
def test_agent_agrees_with_phase_table(phase: str, workflow: WorkflowText) -> None:
    assert agent_problems(load_agent(phase), workflow) == []


@pytest.mark.parametrize("phase", ALL_PHASES)
def test_agent_signals_table_lists_outcomes_with_exact_json(phase: str) -> None:
    agent = load_agent(phase)
    assert len(agent.signals) >= 2
    for row in agent.signals:
        assert row.outcome
        assert parse_signal(row.signal).status.value == row.signal["status"]


@pytest.mark.parametrize("phase", ALL_PHASES)
def test_agent_body_stays_short(phase: str) -> None:
    lines = load_agent(phase).body.strip().splitlines()
    assert 30 <= len(lines) <= 100, f"{phase} body has {len(lines)} lines"


def test_workflow_agrees_with_worker(workflow: WorkflowText) -> None:
    assert workflow_problems(workflow) == []


def test_workflow_stays_short() -> None:
    assert len(WORKFLOW.read_text(encoding="utf-8").splitlines()) <= 260


def test_workflow_names_worker_owned_fields_and_context_lines() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    spans = set(code_spans(load_workflow().tokens))
    for owned in ("Phase", "Iteration", "Total Iterations", "Blocked", "Waiting For", "Total Cost"):
        assert owned in spans, owned
    for context in ("Session Dir", "Working Dir", "Flow Log prefix", "Artifact prefix", "Time limit"):
        assert context in text, context


def test_guide_phase_table_matches_phases() -> None:
    assert phase_table_problems(parse_phase_table(GUIDE.read_text(encoding="utf-8"))) == []


def test_guide_vocabulary_is_known() -> None:
    assert vocabulary_problems(tokens_of(GUIDE.read_text(encoding="utf-8")), snake=False) == []


# The phase reference the samocode-run skill sends the parent to (shipped with the skill, read on demand).
SKILL_REFERENCE = AGENTS_DIR.parent / "skills" / "samocode-run" / "reference.md"
_EXIT_ROW = re.compile(r"^\| (\d+(?: / \d+)*) \|", re.MULTILINE)


def exit_table_problems(text: str) -> list[str]:
    """Every ExitCode in the reference's exit table, and no code the worker does not have."""
    listed = [int(code) for row in _EXIT_ROW.findall(text) for code in row.split(" / ")]
    known = sorted(int(c) for c in ExitCode)
    problems = [f"exit code {c} is missing" for c in known if c not in listed]
    problems += [f"exit code {c} is not one of worker/errors.py's" for c in listed if c not in known]
    problems += [f"exit code {c} is listed twice" for c in set(listed) if listed.count(c) > 1]
    return problems


def test_skill_reference_phase_table_matches_phases() -> None:
    assert phase_table_problems(parse_phase_table(SKILL_REFERENCE.read_text(encoding="utf-8"))) == []


def test_skill_reference_vocabulary_is_known() -> None:
    assert vocabulary_problems(tokens_of(SKILL_REFERENCE.read_text(encoding="utf-8")), snake=True) == []


def test_skill_reference_exit_codes_match_the_worker() -> None:
    assert exit_table_problems(SKILL_REFERENCE.read_text(encoding="utf-8")) == []


def test_checker_catches_a_wrong_skill_reference() -> None:
    text = SKILL_REFERENCE.read_text(encoding="utf-8")
    row = "| `planning` | `MM-DD-HH:mm-plan-<slug>.md` | 10 | — | `plan_approval` |"
    assert row in text
    bad = text.replace(
        row, "| `planning` | `MM-DD-HH:mm-plan-<slug>.md` | 10 | `implementation` | `plan_approval` |"
    )
    assert any("planning: may move to" in p for p in phase_table_problems(parse_phase_table(bad)))
    assert any(
        "plan_aproval" in p for p in vocabulary_problems(tokens_of(text + "\n`plan_aproval`\n"), snake=True)
    )
    no_nine = re.sub(r"^\| 9 \|.*\n", "", text, flags=re.MULTILINE)
    assert exit_table_problems(no_nine) == ["exit code 9 is missing"]
    assert exit_table_problems(text + "| 11 | made up | - |\n") == [
        "exit code 11 is not one of worker/errors.py's"
    ]


# --- the checker bites (mutated texts) ----------------------------------------------------------


def _mutated(phase: str, old: str, new: str) -> str:
    text = agent_path(phase).read_text(encoding="utf-8")
    assert old in text, f"mutation target {old!r} not in {phase} agent"
    return text.replace(old, new, 1)


def _problems(phase: str, text: str, workflow: WorkflowText) -> list[str]:
    return agent_problems(parse_agent(phase, text), workflow)


def test_checker_catches_a_wrong_cap(workflow: WorkflowText) -> None:
    text = _mutated("investigation", "**Cap:** 20 iterations.", "**Cap:** 25 iterations.")
    assert any("states cap 25" in p for p in _problems("investigation", text, workflow))


def test_checker_catches_a_forbidden_transition(workflow: WorkflowText) -> None:
    text = _mutated("quality", '"phase": "done"', '"phase": "implementation"')
    problems = _problems("quality", text, workflow)
    assert any("cannot move to implementation" in p for p in problems)
    assert any("moves to" in p for p in problems)  # and done is no longer covered


def test_checker_catches_planning_moving_itself_to_implementation(workflow: WorkflowText) -> None:
    text = _mutated("planning", '"phase": "planning"', '"phase": "implementation"')
    assert any("waiting for plan_approval instead" in p for p in _problems("planning", text, workflow))


def test_checker_catches_a_wait_the_phase_may_not_do(workflow: WorkflowText) -> None:
    row = '| Ask the human | `{"status": "waiting", "for": "human_action", "reason": "r"}` |\n'
    text = _mutated("quality", "| Clean, no code changed |", row + "| Clean, no code changed |")
    problems = _problems("quality", text, workflow)
    assert any("status 'waiting' is not allowed in phase quality" in p for p in problems)


def test_checker_catches_a_missing_transition(workflow: WorkflowText) -> None:
    text = agent_path("testing").read_text(encoding="utf-8")
    kept = "\n".join(line for line in text.splitlines() if '"phase": "done"' not in line)
    assert any(
        "Signals table moves to ['implementation', 'quality']" in p
        for p in _problems("testing", kept, workflow)
    )


def test_checker_catches_worker_only_values(workflow: WorkflowText) -> None:
    text = _mutated("implementation", '"for": "human_action"', '"for": "usage_limit"')
    problems = _problems("implementation", text, workflow)
    assert any("worker-only" in p or "unknown 'for' value 'usage_limit'" in p for p in problems), problems


def test_checker_catches_a_missing_required_field(workflow: WorkflowText) -> None:
    text = _mutated("done", ', "needs": "human_decision"}', "}")
    assert any("lacks ['needs']" in p for p in _problems("done", text, workflow))


def test_checker_catches_a_prose_transition(workflow: WorkflowText) -> None:
    text = _mutated("quality", "→ done.", "→ implementation.")
    assert any("text states a move to implementation" in p for p in _problems("quality", text, workflow))


def test_checker_catches_a_misspelt_vocabulary_word(workflow: WorkflowText) -> None:
    text = _mutated("planning", "waiting for `plan_approval` again", "waiting for `plan_aproval` again")
    assert any("plan_aproval" in p for p in _problems("planning", text, workflow))


def test_checker_catches_a_tool_only_claude_has(workflow: WorkflowText) -> None:
    text = _mutated("testing", "Run the project's full check suite.", "Use the Bash tool to run the suite.")
    assert any("one-CLI tool" in p for p in _problems("testing", text, workflow))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("model: inherit", "model: gpt-5", "model must be"),
        ("tools: Read, Write, Edit, Glob, Grep, Bash", "tools: Read, Wirte, Grep", "unknown tool 'Wirte'"),
        ("tools: Read, Write, Edit, Glob, Grep, Bash", "tools: Read, Grep", "could not write its signal"),
        ("model: inherit", "model: inherit\npermissionMode: allowEdits", "invalid permissionMode"),
        ("name: samocode-done", "name: done", "name must be"),
        ("model: inherit", "model: inherit\ntool: Read", "unknown frontmatter key 'tool'"),
    ],
)
def test_checker_catches_bad_frontmatter(old: str, new: str, expected: str) -> None:
    meta, _ = split_frontmatter(_mutated("done", old, new))
    assert any(expected in p for p in frontmatter_problems("done", meta))


def test_unquoted_description_with_colon_space_is_rejected() -> None:
    # `claude plugin validate` fails on a bare ": " inside a value; so does YAML.
    text = _mutated("done", 'description: "Samocode done phase: ', "description: Samocode done phase: ")
    with pytest.raises(TextError, match="frontmatter does not parse"):
        split_frontmatter(text)


def test_parser_rejects_an_agent_without_a_signals_table() -> None:
    text = _mutated("done", "## Signals", "## Outcomes")
    with pytest.raises(TextError, match="no section titled 'Signals'"):
        parse_agent("done", text)


def test_checker_catches_a_wrong_guide_table() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    row = "| `implementation` | code and tests, ticked plan items | 100 | `testing`, `quality` |"
    assert row in text
    text = text.replace(
        row, "| `implementation` | code and tests, ticked plan items | 50 | `testing`, `done` |"
    )
    problems = phase_table_problems(parse_phase_table(text))
    assert any("implementation: cap says 50" in p for p in problems)
    assert any("implementation: may move to" in p for p in problems)


def test_checker_catches_a_worker_only_value_offered_in_workflow() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    extra = "| `usage_limit` | `implementation` | the provider's quota ran out |\n"
    anchor = "| `human_action` |"
    assert anchor in text
    problems = workflow_problems(parse_workflow(text.replace(anchor, extra + anchor, 1)))
    assert any("`for` table" in p for p in problems)


def test_checker_catches_a_wrong_workflow_example() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    old = '`{"status": "waiting", "for": "qa_answers", "reason": "5 questions in _qa.md"}`'
    assert old in text
    bad = '`{"status": "waiting", "for": "plan_approvals", "reason": "x"}`'
    problems = workflow_problems(parse_workflow(text.replace(old, bad)))
    assert any("plan_approvals" in p for p in problems)
