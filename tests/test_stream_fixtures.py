"""The recorded CLI streams (tests/fixtures/streams, written by tests/e2e/record_streams.py) are whole,
small, free of this machine's paths, and cover both ends of the tested range for every class."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e import record_streams
from worker import tested

STREAMS = Path(__file__).resolve().parent / "fixtures" / "streams"
CASES = {"claude": record_streams.CLAUDE_CASES, "codex": record_streams.CODEX_CASES}
FAILURES = {
    "usage_limit",
    "overloaded",
    "auth",
    "refused",
    "api_error",
    "max_turns",
    "exit",
    "no_result",
    "timeout",
    "idle",
    "interrupted",
}


def _folders() -> list[Path]:
    return sorted(p for p in STREAMS.iterdir() if p.is_dir())


def test_both_ends_of_the_tested_range_are_recorded_for_every_class():
    for cli, cases in CASES.items():
        span = tested.RANGES[cli]
        for version in (span.low, span.high):
            folder = STREAMS / f"{cli}-{version}"
            assert folder.is_dir(), f"no recording of {cli} {version}: run python -m tests.e2e.record_streams"
            names = {p.name.removesuffix(".jsonl") for p in folder.glob("*.jsonl")}
            assert names >= {c.name for c in cases}, (folder.name, names)


@pytest.mark.parametrize("folder", _folders(), ids=lambda p: p.name)
def test_each_recording_is_valid_small_and_scrubbed(folder: Path):
    for stream in sorted(folder.glob("*.jsonl")):
        text = stream.read_text(encoding="utf-8")
        assert len(text.encode()) < 8_000, stream.name
        events = [json.loads(line) for line in text.splitlines()]
        assert events and all(isinstance(e, dict) for e in events), stream.name
        meta = json.loads(stream.with_suffix(".meta.json").read_text(encoding="utf-8"))
        assert {"exit_code", "stderr_tail", "login", "expect"} <= set(meta), stream.name
        # Recorded by the script, or (hand-made variants) saying where they come from.
        assert record_streams.RECORDED_WITH in meta.get("recorded_with", "") or meta.get("source"), (
            stream.name
        )
        assert meta["login"] in ("api_key", "oauth", "none")
        expect = meta["expect"]
        assert {"failure", "cost", "resets"} <= set(expect), stream.name
        assert expect["failure"] is None or expect["failure"] in FAILURES
        assert expect["failure"] is not None or meta["exit_code"] == 0, stream.name  # success exits 0
        both = text + json.dumps(meta)
        assert not re.search(r"(?<![\w.-])/(?:tmp|work)\b", both), stream.name
        assert "127.0.0.1:" not in both or f"127.0.0.1:{record_streams.PORT}" in both


def test_shortening_keeps_keys_order_and_valid_json():
    long = "x" * (record_streams.MAX_TEXT + 50)
    line = json.dumps({"z": 1, "type": "result", "result": long, "inner": {"b": [long], "a": 2}})
    short = record_streams.shorten_line(line)
    event = json.loads(short)
    assert list(event) == ["z", "type", "result", "inner"] and list(event["inner"]) == ["b", "a"]
    assert event["result"].startswith("x" * record_streams.MAX_TEXT) and len(event["result"]) < len(long)
    same = '{"type": "system",  "subtype":"init"}'
    assert record_streams.shorten_line(same) == same  # a line with nothing long is kept byte for byte


def test_scrub_replaces_the_machines_paths_and_the_port(tmp_path):
    slug = re.sub(r"[^A-Za-z0-9]", "-", str(tmp_path))
    rec = record_streams.Recording(
        f'{{"cwd":"{tmp_path}/work","memory":"/h/.claude/projects/{slug}-work/","url":"http://127.0.0.1:4321"}}',
        'warning under "/tmp" and /root/.npm/x',
        1,
    )
    clean = record_streams._scrub(rec, tmp_path, 4321)
    assert json.loads(clean.stdout) == {
        "cwd": "/scratch/work",
        "memory": "/h/.claude/projects/-scratch-work/",
        "url": f"http://127.0.0.1:{record_streams.PORT}",
    }
    assert "/tmp" not in clean.stderr and "/root" not in clean.stderr
