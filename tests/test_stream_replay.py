"""Every recorded stream under tests/fixtures/streams, replayed through the worker's parsers.

Layout: `<cli>-<version>/<class>.jsonl` is the CLI's stdout (claude 2.1.197 / 2.1.332, codex 0.169.0 /
0.171.0, recorded from the real CLIs by tests/e2e/record_streams.py), and `<class>.meta.json` says how
the run ended ("exit_code", "stderr_tail") and what the worker must conclude ("expect": "failure" (a
Failure value or null), "cost" (a positive cost recorded, or none), "resets" (a reset time found),
optionally "limits" ({window: utilization}) and "stream_problem"). Hand-written streams say so in
their meta ("source"). The stdout goes through the process layer's line splitter and marker
prefilter, as in the worker, in one piece and in small chunks.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from worker.process import Ending, RunResult, _Lines
from worker.providers import Failure, IterationRecord
from worker.providers.claude import ClaudeStream
from worker.providers.codex import CodexStream

STREAMS = Path(__file__).resolve().parent / "fixtures" / "streams"
_DIR = re.compile(r"^(?P<cli>claude|codex)-(?P<version>\d+\.\d+\.\d+)$")
FIXTURES = sorted(STREAMS.glob("*/*.jsonl"))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def replay(path: Path, chunk: int = 0) -> tuple[IterationRecord, dict]:
    meta_path = path.with_name(path.stem + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cli = _DIR.match(path.parent.name)
    assert cli, f"{path.parent.name}: not <claude|codex>-<version>"
    parser = ClaudeStream() if cli["cli"] == "claude" else CodexStream()
    data = path.read_bytes()
    lines = _Lines(parser.feed, parser.markers)
    for start in range(0, len(data), chunk or len(data) or 1):
        lines.feed(data[start : start + (chunk or len(data))])
    lines.close()
    ending = Ending(meta.get("ending", "exited"))
    run = RunResult(ending, meta.get("exit_code", 0), 1.0, len(data), 0)
    return parser.finish(run, meta.get("stderr_tail", meta.get("stderr", ""))), meta


def test_the_recordings_cover_both_versions_of_both_clis():
    versions: dict[str, set[str]] = {}
    classes: dict[str, set[str]] = {}
    for path in FIXTURES:
        found = _DIR.match(path.parent.name)
        assert found, path
        versions.setdefault(found["cli"], set()).add(found["version"])
        classes.setdefault(path.parent.name, set()).add(path.stem)
    assert len(versions.get("claude", ())) >= 2 and len(versions.get("codex", ())) >= 2, versions
    for cli, seen in versions.items():
        names = [f"{cli}-{v}" for v in seen]
        union = set().union(*(classes[n] for n in names))
        for name in names:  # every class is replayed on every version of its CLI
            assert classes[name] == union, f"{name} lacks {sorted(union - classes[name])}"
        assert "success" in union


@pytest.mark.parametrize("path", FIXTURES, ids=_id)
def test_replay_gives_the_expected_failure_cost_and_reset(path):
    record, meta = replay(path)
    expect = meta.get("expect")
    assert isinstance(expect, dict), f"{_id(path)}: its meta.json has no 'expect'"
    want = Failure(expect["failure"]) if expect.get("failure") else None
    assert record.failure is want, (record.failure, record.message)
    cost = record.cost_usd or 0
    assert (cost > 0) is bool(expect.get("cost")), record.cost_usd
    assert (record.resets_at is not None) is bool(expect.get("resets")), record.resets_at
    assert bool(record.stream_problem) is bool(expect.get("stream_problem")), record.stream_problem
    if "limits" in expect:
        assert {w.name: w.utilization for w in record.limits} == expect["limits"]
    if path.parent.name.startswith("claude-"):  # the init line names the version
        assert record.cli == "claude " + path.parent.name.split("-", 1)[1]


@pytest.mark.parametrize("path", FIXTURES, ids=_id)
def test_replay_in_small_chunks_reads_the_same(path):
    whole, _ = replay(path)
    assert replay(path, chunk=97)[0] == whole


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.parent.name.startswith("claude-")], ids=_id)
def test_a_claude_reset_is_the_one_the_cli_reported(path):
    """A rejected window's resetsAt is the reset; without one, the printed wording's (not checked)."""
    record, _ = replay(path)
    rejected = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        info = event.get("rate_limit_info") or {}
        if event.get("type") == "rate_limit_event" and info.get("status") == "rejected":
            rejected.append(info["resetsAt"])
    if rejected and record.failure is Failure.USAGE_LIMIT:
        assert record.resets_at == max(rejected)


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.parent.name.startswith("codex-")], ids=_id)
def test_a_codex_reset_is_the_next_time_its_text_names(path):
    record, _ = replay(path)
    if record.resets_at is not None:
        assert 0 < record.resets_at - time.time() <= 24 * 3600 + 60


def test_not_logged_in_says_which_command_fixes_it():
    for path in STREAMS.glob("claude-*/not_logged_in.jsonl"):
        record, _ = replay(path)
        assert record.failure is Failure.AUTH
        assert "Not logged in" in record.message and "/login" in record.message
        assert "ANTHROPIC_API_KEY" in record.message, record.message
