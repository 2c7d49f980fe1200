"""The overview is parsed with mistune; the worker rewrites only its own fields."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import flowlog, overview, splice
from worker.errors import OverviewError
from worker.overview import parse, set_fields
from worker.phases import Phase

OWNED = ("Phase", "Iteration", "Total Iterations", "Blocked", "Waiting For", "Total Cost")


def append_flow(text: str, entry: str) -> str:
    """One Flow Log line appended as the journal appends it: the text's bytes, spliced."""
    data = text.encode()
    pieces = splice.edit(data, parse(data), {}, [entry], always=True)
    assert pieces is not None
    return b"".join(pieces).decode()


def test_template_parses_to_a_fresh_state():
    text = overview.render_new(
        "demo", "2026-11-24 16:30", "/w", "task", "", "[000 @ 11-24 16:30] Session created"
    )
    ov = parse(text)
    state = ov.state()
    assert (state.phase, state.iteration, state.total) == (Phase.INVESTIGATION, 1, 0)
    assert ov.get("blocked") == "no"


def test_phase_lines_in_code_blocks_and_other_sections_are_not_the_status():
    text = (
        "# S\n\n## Notes\nPhase: done\n\n```\n## Status\nPhase: quality\n```\n\n"
        "## Status\nPhase: planning\nBlocked: no\n\n## Later\nPhase: testing\n"
    )
    ov = parse(text)
    assert ov.get("phase") == "planning"
    new = set_fields(ov, {"Phase": "implementation"})
    assert new == text.replace("Phase: planning", "Phase: implementation")


def test_crlf_and_unicode_survive_a_rewrite():
    text = (
        "# Сессия ✓\r\n\r\n## Status\r\nPhase: testing\r\nIteration: 2\r\nBlocked: no\r\n\r\n"
        "## Flow Log\r\n- [001 @ x] é\r\n"
    )
    ov = parse(text)
    new = set_fields(ov, {"Iteration": "3", "Total Cost": "$1.00"})
    assert new == text.replace(
        "Iteration: 2\r\nBlocked: no\r\n", "Iteration: 3\r\nBlocked: no\r\nTotal Cost: $1.00\r\n"
    )
    flowed = append_flow(new, "[002 @ y] ü")
    assert flowed.endswith("- [001 @ x] é\r\n- [002 @ y] ü\r\n")


def test_setext_status_heading_and_bold_fields():
    text = (
        "Title\n=====\n\nStatus\n------\n**Phase:** requirements\n- Blocked: waiting_human\n\nFiles\n-----\n"
    )
    ov = parse(text)
    assert ov.get("phase") == "requirements" and ov.get("blocked") == "waiting_human"
    new = set_fields(ov, {"Blocked": "no"})
    assert new == text.replace("- Blocked: waiting_human", "- Blocked: no")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("# S\n\n## Notes\nPhase: done\n", "no '## Status' section"),
        ("# S\n\n## Status\nBlocked: no\n", "no 'Phase:' line"),
        ("# S\n\n## Status\nPhase: planning\nPhase: testing\n", "more than one 'Phase:' line"),
        ("# S\n\n```\n## Status\nPhase: planning\n```\n", "no '## Status' section"),
    ],
)
def test_unusable_overviews_give_a_reason(text, reason):
    with pytest.raises(OverviewError, match=reason):
        parse(text)


def test_unknown_phase_and_bad_counter_are_reasons_not_crashes():
    with pytest.raises(OverviewError, match="unknown phase 'shipping'"):
        parse("## Status\nPhase: shipping\n").state()
    with pytest.raises(OverviewError, match="not a number"):
        parse("## Status\nPhase: testing\nIteration: many\n").state()


def test_flow_log_append_goes_after_the_last_entry_not_at_the_end():
    text = "## Status\nPhase: testing\n\n## Flow Log\n- [001 @ a] one\n\n## Files\n- x.md\n"
    assert append_flow(text, "[002 @ b] two") == text.replace(
        "- [001 @ a] one\n", "- [001 @ a] one\n- [002 @ b] two\n"
    )
    assert flowlog.flow_entries(append_flow(text, "[002 @ b] two")) == ["- [001 @ a] one", "- [002 @ b] two"]


def test_flow_log_section_is_created_when_missing():
    text = "## Status\nPhase: testing\n"
    assert append_flow(text, "[001 @ a] x") == text + "\n## Flow Log\n\n- [001 @ a] x\n"


def test_big_flow_log_still_finds_the_status_fast_path():
    entries = "\n".join(f"- [{i:03d} @ 11-24 16:30] step {i}" for i in range(10_000))
    text = f"# S\n\n## Status\nPhase: implementation\nIteration: 4\n\n## Flow Log\n{entries}\n\n## Files\n"
    ov = parse(text)
    assert ov.state().iteration == 4
    assert set_fields(ov, {"Iteration": "5"}) == text.replace("Iteration: 4", "Iteration: 5")
    assert append_flow(text, "[x] y").endswith("step 9999\n- [x] y\n\n## Files\n")


# --- property: owned-field rewrites touch nothing else -------------------------------------------

_safe = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#`~=-*_>|<[]\\"),
    max_size=30,
).map(str.strip)
_value = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=25).map(
    lambda v: " ".join(v.split()).strip("*")
)


@st.composite
def documents(draw):
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [f"# Session: {draw(_safe)}", ""]
    for _ in range(draw(st.integers(0, 2))):
        lines += [f"## {draw(_safe) or 'Notes'}x", draw(_safe), ""]
        if draw(st.booleans()):
            lines += ["```", "Phase: done", "## Status", "```", ""]
    keys = draw(st.lists(st.sampled_from(OWNED[1:]), unique=True))
    fields = [("Phase", draw(st.sampled_from([p.value for p in Phase])))] + [(k, draw(_value)) for k in keys]
    fields = draw(st.permutations(fields))
    lines.append("## Status")
    for key, value in fields:
        lines.append(f"{key}: {value}".rstrip() if value else f"{key}:")
        if draw(st.booleans()):
            lines.append(f"Note {draw(_safe)}")
    lines += ["Last Action: " + draw(_safe), "", "## Flow Log", f"- [000 @ 11-24 16:30] {draw(_safe)}", ""]
    if draw(st.booleans()):
        lines += ["## Files", "```", "Phase: planning", "```", draw(_safe)]
    return nl.join(lines) + draw(st.sampled_from(["", nl]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), updates=st.dictionaries(st.sampled_from(OWNED), _value, min_size=1))
def test_rewriting_owned_fields_leaves_every_other_byte_unchanged(doc, updates):
    ov = parse(doc)
    new = set_fields(ov, updates)
    after = parse(new)
    for key, value in updates.items():
        assert after.get(key) == value
    # Outside the Status section nothing moved.
    assert new[: ov.status.body_start] == doc[: ov.status.body_start]
    tail = doc[ov.status.end :]
    assert new.endswith(tail)
    # Putting the old values back restores the original exactly (when no field had to be added).
    if all(k.lower() in ov.fields for k in updates):
        restore = {k: ov.fields[k.lower()].value for k in updates}
        assert set_fields(after, restore) == doc
    else:
        added = [k for k in updates if k.lower() not in ov.fields]
        status_new = new[after.status.body_start : after.status.end]
        kept = [ln for ln in status_new.splitlines(keepends=True) if ln.split(":")[0] not in added]
        original = doc[ov.status.body_start : ov.status.end]
        restore = {k: ov.fields[k.lower()].value for k in updates if k.lower() in ov.fields}
        rebuilt = (
            set_fields(parse(doc[: ov.status.body_start] + "".join(kept) + tail), restore)
            if restore
            else None
        )
        expected = doc[: ov.status.body_start] + original + tail
        assert (rebuilt or doc[: ov.status.body_start] + "".join(kept) + tail) == expected
