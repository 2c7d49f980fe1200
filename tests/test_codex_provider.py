"""Codex as a provider: the `--json` stream parser, reset times, argv/prompt, and the worker run as
a subprocess against the fake `codex exec` (tests/fakes/fake_codex.py); the whole session with codex
runs in-process (tests/inproc.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inproc import InProc

from worker import clock
from worker.config import Settings
from worker.errors import ConfigError
from worker.overview import parse
from worker.process import Ending, RunResult
from worker.prompt import AgentSpec, load_agent, load_workflow
from worker.providers import STOPPED, Failure, IterationRequest, ending_failure
from worker.providers.codex import CodexProvider, CodexStream, Prices, classify
from worker.providers.registry import get_provider

REPO = Path(__file__).resolve().parents[1]
FAKE_CODEX = REPO / "tests" / "fakes" / "fake_codex.py"

# Captured from codex-cli 0.169.0 (`codex exec --json`) against a loopback Responses API server:
# one shell command that failed with exit 3, then the final message. The server reported
# 2000+3000 input tokens (1200 cached) and 20+50 output tokens (10 of them reasoning).
SUCCESS = [
    '{"type":"thread.started","thread_id":"01a20e66-5ca9-73f0-9c8a-7984310b69fa"}',
    '{"type":"turn.started"}',
    '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"/bin/bash -lc '
    '\'echo hello; ls /nonexistent; exit 3\'","aggregated_output":"","exit_code":null,'
    '"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_0","type":"command_execution","command":"/bin/bash -lc '
    '\'echo hello; ls /nonexistent; exit 3\'","aggregated_output":"hello\\nls: cannot access '
    '\'/nonexistent\': No such file or directory\\n","exit_code":3,"status":"failed"}}',
    '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"All done."}}',
    '{"type":"turn.completed","usage":{"input_tokens":5000,"cached_input_tokens":1200,'
    '"cache_write_input_tokens":0,"output_tokens":70,"reasoning_output_tokens":10}}',
]
START = SUCCESS[:2]
USAGE_LIMIT_TEXT = (
    "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
    "https://chatgpt.com/settings/usage to purchase more credits or try again at {clock}."
)
URL = "http://127.0.0.1:18772/v1/responses"
FAILURES = {  # the final messages codex 0.169.0 printed for each server behaviour
    "429": "exceeded retry limit, last status: 429 Too Many Requests",
    "401": f"unexpected status 401 Unauthorized: Incorrect API key provided: x., url: {URL}",
    "503": f"unexpected status 503 Service Unavailable: Service Unavailable, url: {URL}",
    "500": "We’re currently experiencing high demand, which may cause temporary errors.",
    "context": "Codex ran out of room in the model's context window. Start a new thread or clear earlier "
    "history before retrying.",
    "no_key": "Missing environment variable: `FAKE_OPENAI_API_KEY`.",
    "usage_no_reset": "You’ve hit your usage limit. Try again later.",
}


def failed_turn(message: str, retries: int = 0) -> list[str]:
    lines = [*START]
    lines += [
        json.dumps({"type": "error", "message": f"Reconnecting... {k}/5 ({message})"}) for k in range(retries)
    ]
    lines.append(json.dumps({"type": "error", "message": message}, ensure_ascii=False))
    lines.append(json.dumps({"type": "turn.failed", "error": {"message": message}}, ensure_ascii=False))
    return lines


def exited(code: int | None = 0, ending: Ending = Ending.EXITED) -> RunResult:
    return RunResult(ending=ending, exit_code=code, duration=1.0, stdout_bytes=0, leftovers=0)


def parse_lines(lines: list[str], run: RunResult, stderr: str = "", prices: Prices | None = None):
    stream = CodexStream(prices)
    for line in lines:
        stream.feed(line.encode())
    return stream.finish(run, stderr)


# -- the stream parser ------------------------------------------------------------------------------


def test_success_reports_tokens_turns_message_and_an_estimated_cost():
    prices = Prices(input=1.25, output=10.0, cached=0.125)
    record = parse_lines(SUCCESS, exited(0), prices=prices)
    assert record.failure is None
    assert record.message == "All done."
    assert record.turns == 2  # one command, one message
    # OpenAI counts cached tokens inside input_tokens: the record keeps them apart, as Claude's does.
    assert (record.tokens_in, record.tokens_cached, record.tokens_out) == (3800, 1200, 70)
    assert record.cost_usd == pytest.approx((3800 * 1.25 + 1200 * 0.125 + 70 * 10.0) / 1e6)
    assert record.cost_estimated is True


def test_without_prices_the_cost_is_unknown_not_zero():
    record = parse_lines(SUCCESS, exited(0))
    assert record.failure is None
    assert record.cost_usd is None and record.cost_estimated is False
    assert record.tokens_in == 3800


def test_a_cached_price_left_at_zero_bills_cached_tokens_as_input():
    record = parse_lines(SUCCESS, exited(0), prices=Prices(input=2.0, output=8.0))
    assert record.cost_usd == pytest.approx((5000 * 2.0 + 70 * 8.0) / 1e6)


def test_usage_limit_with_a_reset_time_is_waited_for_until_the_end_of_that_local_minute():
    reset = dt.datetime.now() + dt.timedelta(hours=2)
    text = USAGE_LIMIT_TEXT.format(clock=reset.strftime("%I:%M %p").lstrip("0"))
    record = parse_lines(failed_turn(text), exited(1))
    assert record.failure is Failure.USAGE_LIMIT
    assert record.api_status == 429
    assert record.message.startswith("You’ve hit your usage limit")
    minute_end = reset.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    assert record.resets_at == minute_end.timestamp()


def test_usage_limit_without_a_reset_time_leaves_the_wait_to_the_worker():
    record = parse_lines(failed_turn(FAILURES["usage_no_reset"]), exited(1))
    assert (record.failure, record.resets_at) == (Failure.USAGE_LIMIT, None)


@pytest.mark.parametrize(
    ("case", "failure", "status"),
    [
        ("429", Failure.OVERLOADED, 429),
        ("503", Failure.OVERLOADED, 503),
        ("500", Failure.OVERLOADED, None),
        ("401", Failure.AUTH, 401),
        ("no_key", Failure.AUTH, None),
        ("context", Failure.API_ERROR, None),
    ],
)
def test_turn_failed_is_classified_like_claudes_failures(case, failure, status):
    record = parse_lines(failed_turn(FAILURES[case], retries=2), exited(1))
    assert (record.failure, record.api_status) == (failure, status)
    assert record.message == FAILURES[case]
    assert record.resets_at is None


def test_429_exhaustion_is_overloaded_not_a_usage_limit():
    assert classify(FAILURES["429"]) == (Failure.OVERLOADED, 429)


def test_a_stream_without_turn_completed_is_no_result():
    record = parse_lines(START, exited(0))
    assert record.failure is Failure.NO_RESULT


def test_a_crash_is_exit_with_the_last_stderr_line():
    stderr = "WARNING: proceeding, even though we could not create PATH aliases\nthread panicked: boom\n"
    record = parse_lines(START, exited(101), stderr)
    assert record.failure is Failure.EXIT
    assert "exit 101" in record.message and "thread panicked: boom" in record.message


@pytest.mark.parametrize(
    "stderr",
    [
        "error: unexpected argument '--bogus' found\n\nUsage: codex exec [OPTIONS] [PROMPT]\n",
        'Error finding codex home: CODEX_HOME points to "x", but that path does not exist\n',
    ],
)
def test_a_cli_that_refuses_to_start_is_refused_and_not_retried(stderr):
    record = parse_lines([], exited(2 if "argument" in stderr else 1), stderr)
    assert record.failure is Failure.REFUSED
    assert record.message.startswith(("error: unexpected argument", "Error finding codex home"))


@pytest.mark.parametrize(
    ("ending", "failure"),
    [
        (Ending.TIMEOUT, Failure.TIMEOUT),
        (Ending.IDLE, Failure.IDLE),
        (Ending.INTERRUPTED, Failure.INTERRUPTED),
    ],
)
def test_a_killed_child_reports_its_ending_and_the_tokens_seen_so_far(ending, failure):
    record = parse_lines(SUCCESS, exited(-15, ending), prices=Prices(1.0, 1.0, 1.0))
    assert record.failure is failure
    assert record.tokens_out == 70 and record.cost_usd is not None


def test_every_way_the_worker_stops_a_child_maps_to_one_failure():
    assert set(STOPPED) == set(Ending) - {Ending.EXITED}
    assert ending_failure(exited(0)) is None


def test_turn_completed_with_a_nonzero_exit_is_a_failure():
    assert parse_lines(SUCCESS, exited(1)).failure is Failure.EXIT


def test_big_command_output_is_counted_in_any_key_order_and_parsed_fast_enough():
    stream = CodexStream()
    item = {
        "id": "item_9",
        "type": "command_execution",
        "command": "x",
        "exit_code": 0,
        "status": "completed",
    }
    big = {"item": {**item, "aggregated_output": "y" * (1 << 20)}, "type": "item.completed"}  # type last
    stream.feed(json.dumps(big).encode())
    assert stream.actions == 1
    started = time.perf_counter()
    line = json.dumps({"type": "item.completed", "item": {**item, "aggregated_output": "z" * 1000}}).encode()
    for _ in range(50_000):  # 50 MB of command output
        stream.feed(line)
    assert time.perf_counter() - started < 1.25  # 40,000 lines a second at the least
    assert stream.actions == 50_001


def test_a_broken_line_is_no_event():
    stream = CodexStream()
    stream.feed(b'{"type":"item.completed","item":{"type":"command_execution","aggregated_output":"y')
    stream.feed(b'{"type":"turn.completed","usage":')
    assert (stream.actions, stream.usage) == (0, None)


def test_a_quoted_event_inside_a_message_never_counts():
    said = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": SUCCESS[-1]}})
    record = parse_lines([*START, said], exited(0))
    assert record.failure is Failure.NO_RESULT and record.tokens_out is None


def shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


CODEX_STREAMS = {
    "success": (SUCCESS, exited(0)),
    "usage_limit": (failed_turn(USAGE_LIMIT_TEXT.format(clock="4:56 PM")), exited(1)),
    "401": (failed_turn(FAILURES["401"]), exited(1)),
    "503": (failed_turn(FAILURES["503"], retries=2), exited(1)),
    "no_result": (START, exited(0)),
}


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(sorted(CODEX_STREAMS)),
    seed=st.integers(0, 2**32 - 1),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]),
)
def test_key_order_and_spacing_never_change_what_codex_reports(name, seed, separators):
    lines, run = CODEX_STREAMS[name]
    rng = random.Random(seed)
    again = [
        json.dumps(shuffled(json.loads(ln), rng), separators=separators, ensure_ascii=False) for ln in lines
    ]

    def facts(record):
        return (
            record.failure,
            record.message,
            record.turns,
            record.tokens_out,
            record.resets_at,
            record.api_status,
        )

    stream = CodexStream()
    for line in again:  # through the process layer's marker prefilter, as in the worker
        if any(m in line.encode() for m in stream.markers):
            stream.feed(line.encode())
    assert facts(stream.finish(run, "")) == facts(parse_lines(lines, run))


def test_the_version_is_asked_only_for_a_stream_problem_and_named_in_it():
    calls = []

    def probe():
        calls.append(1)
        return "0.171.0"

    stream = CodexStream(version_probe=probe)
    for line in START:
        stream.feed(line.encode())
    record = stream.finish(exited(0), "")
    assert record.cli == "codex 0.171.0" and calls == [1]
    assert record.failure is Failure.NO_RESULT
    problem = "the CLI's result event (turn.completed) was not understood — CLI version 0.171.0"
    assert record.stream_problem == problem
    fine = CodexStream(version_probe=probe)
    for line in SUCCESS:
        fine.feed(line.encode())
    assert fine.finish(exited(0), "").stream_problem == "" and calls == [1]  # not asked: nothing to say


def test_spaced_json_is_understood_too():
    lines = [json.dumps(json.loads(line)) for line in SUCCESS]  # ", " and ": " separators
    record = parse_lines(lines, exited(0))
    assert (record.failure, record.message, record.turns, record.tokens_out) == (None, "All done.", 2, 70)


# -- reset times (worker/clock.py) ------------------------------------------------------------------


@pytest.fixture
def local_tz(monkeypatch):
    """Run with the process's local time zone set to Asia/Kolkata (UTC+5:30, no DST)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield ZoneInfo("Asia/Kolkata")
    monkeypatch.undo()
    time.tzset()


def at(tz: dt.tzinfo, *args: int) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def test_codex_times_are_local_time(local_tz):
    now = at(local_tz, 2026, 11, 24, 14, 0, 5)
    assert clock.reset_time("try again at 4:56 PM.", now) == at(local_tz, 2026, 11, 24, 16, 57)
    assert clock.reset_time("try again at 9:05 AM.", now) == at(local_tz, 2026, 11, 25, 9, 6)


def test_a_reset_in_the_current_minute_is_seconds_away_not_tomorrow(local_tz):
    now = at(local_tz, 2026, 11, 24, 16, 32, 41)
    assert clock.reset_time("or try again at 4:32 PM.", now) == at(local_tz, 2026, 11, 24, 16, 33)
    assert clock.reset_time("or try again at 4:31 PM.", now) == at(local_tz, 2026, 11, 25, 16, 32)


def test_codex_dates_for_resets_beyond_today(local_tz):
    now = at(local_tz, 2026, 11, 24, 16, 0)
    text = "purchase more credits or try again at Nov 27th, 2026 12:05 AM."
    assert clock.reset_time(text, now) == at(local_tz, 2026, 11, 27, 0, 6)
    assert clock.reset_time("try again at Jan 2nd, 2027 1:00 PM.", now) == at(local_tz, 2027, 1, 2, 13, 1)


def test_claude_times_carry_their_zone(local_tz):
    now = at(dt.timezone.utc, 2026, 11, 24, 16, 0)
    utc, berlin = dt.timezone.utc, ZoneInfo("Europe/Berlin")
    assert clock.reset_time("You've hit your session limit · resets 5:24pm (UTC)", now) == at(
        utc, 2026, 11, 24, 17, 25
    )
    assert clock.reset_time("resets 5pm (Europe/Berlin)", now) == at(berlin, 2026, 11, 24, 17, 1)
    assert clock.reset_time("resets 3pm (Europe/Berlin)", now) == at(berlin, 2026, 11, 25, 15, 1)
    assert clock.reset_time("weekly limit · resets Nov 27, 5pm (UTC)", now) == at(utc, 2026, 11, 27, 17, 1)
    # No zone named (or an unknown one): local time.
    assert clock.reset_time("resets 11:30pm", now) == at(local_tz, 2026, 11, 24, 23, 31)


@pytest.mark.parametrize(
    "text", ["You’ve hit your usage limit. Try again later.", "try again at 5.", "resets 13pm (UTC)", ""]
)
def test_texts_without_a_usable_time_give_none(text):
    assert clock.reset_time(text) is None


# -- argv, environment, prompt ----------------------------------------------------------------------


AGENT = AgentSpec(
    name="samocode-x", description="d", body="AGENT-BODY-MARKER\n", tools=("Read",), model="opus"
)


def test_argv_is_exactly_codex_exec_json_with_the_prompt_on_stdin(tmp_path):
    provider = CodexProvider(path="/opt/codex", model="", timeout=60)
    prepared = provider.prepare(
        IterationRequest("WORKFLOW-MARKER\n", "## Session context\n", AGENT, tmp_path, tmp_path)
    )
    assert prepared.argv == (
        "/opt/codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-C",
        str(tmp_path),
        "--output-schema",  # the signal's second copy (worker/signalcopy.py)
        str(tmp_path / "signal-schema.json"),
        "-o",
        str(tmp_path / "last-answer.txt"),
        "-",
    )
    assert prepared.answer_file == tmp_path / "last-answer.txt"
    assert json.loads((tmp_path / "signal-schema.json").read_text())["additionalProperties"] is False
    with_model = CodexProvider(path="/opt/codex", model="gpt-5.5", timeout=60).argv(tmp_path)
    assert with_model[-3:] == ("-m", "gpt-5.5", "-")
    # Codex has no subagents: workflow, the agent body and the session context make up the prompt.
    text = prepared.prompt
    assert text.index("WORKFLOW-MARKER") < text.index("AGENT-BODY-MARKER") < text.index("## Session context")


def test_child_environment_drops_claude_nesting_markers(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CODEX_HOME", str(tmp_path))
    prepared = CodexProvider("codex", "", 60).prepare(IterationRequest("w", "c", AGENT, tmp_path, tmp_path))
    assert "CLAUDECODE" not in prepared.env
    assert prepared.env["CODEX_HOME"] == str(tmp_path)


def test_settings_pick_path_model_timeout_and_prices():
    settings = Settings(
        provider="codex",
        codex_path=str(FAKE_CODEX),
        codex_model="gpt-5.5",
        codex_timeout=99,
        price_input_per_mtok=1.0,
        price_output_per_mtok=2.0,
    )
    provider = get_provider("codex", settings)
    assert isinstance(provider, CodexProvider)
    assert (provider.path, provider.model, provider.timeout, provider.name) == (
        str(FAKE_CODEX),
        "gpt-5.5",
        99,
        "codex",
    )
    assert get_provider("codex", Settings(codex_path=str(FAKE_CODEX), timeout_override=7)).timeout == 7
    assert provider.parser().prices == Prices(1.0, 2.0, 0.0)


def test_a_missing_codex_is_a_config_error_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="CODEX_PATH"):
        get_provider("codex", Settings(codex_path=str(tmp_path / "no-codex")))
    with pytest.raises(ConfigError, match="CODEX_PATH"):
        get_provider("codex", Settings(codex_path="no-such-codex-cli"))


# -- the fake itself: as strict as the real CLI -----------------------------------------------------


def test_fake_refuses_unknown_flags_like_clap(tmp_path):
    done = subprocess.run(
        [str(FAKE_CODEX), "exec", "--json", "--no-such-flag", "-"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unexpected argument '--no-such-flag'" in done.stderr


def test_fake_hangs_while_stdin_stays_open(tmp_path):
    proc = subprocess.Popen(
        [str(FAKE_CODEX), "exec", "--json", "-C", str(tmp_path), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"- Phase: investigation\n")
        proc.stdin.flush()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        proc.stdin.close()  # EOF: now it goes on (and, with no scenario file, ends)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# -- the worker with --provider codex -------------------------------------------------------------


@pytest.fixture
def codex(project):
    """The project fixture with the fake codex as CODEX_PATH and no claude at all."""
    project.env.update(CODEX_PATH=str(FAKE_CODEX), CLAUDE_PATH=str(project.root / "no-claude"))
    return project


BLOCK = {
    "signal": {"status": "blocked", "reason": "needs a human", "needs": "human_decision"},
    "flow": "Looked",
}


def history(session: Path) -> list[dict]:
    return [json.loads(line) for line in (session / "_signal_history.jsonl").read_text().splitlines()]


def test_one_iteration_records_tokens_estimated_cost_and_the_raw_stream(codex):
    codex.scenario(by_phase={"investigation": BLOCK})
    prices = {"SAMOCODE_PRICE_INPUT_PER_MTOK": "1.25", "SAMOCODE_PRICE_OUTPUT_PER_MTOK": "10"}
    result = codex.worker(
        "c1", "--provider", "codex", env={**prices, "SAMOCODE_PRICE_CACHED_PER_MTOK": "0.125"}
    )
    assert result.returncode == 4, result.stderr
    assert "provider codex" in result.stdout
    session = codex.session_dir("c1")
    entry = next(h for h in history(session) if h.get("decision"))
    assert (entry["tokens_in"], entry["tokens_cached"], entry["tokens_out"]) == (10000, 2000, 300)
    assert entry["cost_usd"] == pytest.approx((10000 * 1.25 + 2000 * 0.125 + 300 * 10) / 1e6)
    assert entry["cost_estimated"] is True
    logs = sorted((session / "_logs").glob("*.jsonl"))
    events = [json.loads(line)["type"] for line in logs[0].read_text().splitlines()]
    assert events[0] == "thread.started" and events[-1] == "turn.completed"
    assert "item.completed" in events


def test_a_codex_stream_without_turn_completed_names_the_version_in_history(codex):
    codex.scenario(by_phase={"investigation": {**BLOCK, "result": None}})
    result = codex.worker("c0", "--provider", "codex")
    assert result.returncode == 4, result.stderr
    (entry,) = [h for h in history(codex.session_dir("c0")) if h.get("decision")]
    problem = "the CLI's result event (turn.completed) was not understood — CLI version 0.169.0"
    assert entry["stream_problem"] == problem and entry["cli"] == "codex 0.169.0"
    assert f"stream: {problem}" in result.stdout


def test_prompt_goes_on_stdin_with_the_agent_inlined_and_argv_as_specified(codex):
    codex.scenario(by_phase={"investigation": BLOCK})
    result = codex.worker("c2", "--provider", "codex", env={"CODEX_MODEL": "gpt-5.5", "CLAUDECODE": "1"})
    assert result.returncode == 4, result.stderr
    (call,) = codex.records()
    worktree = codex.worktrees / codex.session_dir("c2").name
    assert call["argv"] == [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-C",
        str(worktree),
        "-m",
        "gpt-5.5",
        "--output-schema",
        str(codex.session_dir("c2") / "_logs" / "signal-schema.json"),
        "-o",
        str(codex.session_dir("c2") / "_logs" / "last-answer.txt"),
        "-",
    ]
    assert call["cwd"] == str(worktree)
    prompt = call["prompt"]
    agent = load_agent(parse_phase("investigation"))
    assert agent.body.strip() in prompt
    assert load_workflow().strip()[:200] in prompt
    assert "- Phase: investigation" in prompt and "- Provider: codex" in prompt
    assert "CLAUDECODE" not in call["env"]


def parse_phase(name: str):
    from worker.phases import Phase

    return Phase(name)


def test_samocode_provider_env_selects_codex_without_the_flag(codex):
    codex.scenario(by_phase={"investigation": BLOCK})
    result = codex.worker("c3", env={"SAMOCODE_PROVIDER": "codex"})
    assert result.returncode == 4, result.stderr
    assert [c["argv"][0] for c in codex.records()] == ["exec"]


# Overload retried, retries exhausted, bad credentials not retried: test_loop_failures_inproc.py
# (test_codex_overload_is_retried_then_succeeds_and_bad_credentials_stop_at_once and
# test_codex_failures_exhaust_the_retries_then_exit_5), the same scenarios in-process.


def test_a_hanging_codex_is_killed_at_the_timeout(codex):
    codex.scenario(by_phase={"investigation": {"sleep": 60}})
    started = time.monotonic()
    result = codex.worker("c7", "--provider", "codex", "--timeout", "0.5", env={"SAMOCODE_MAX_RETRIES": "0"})
    assert result.returncode == 5, result.stderr
    assert "(timeout)" in result.stderr
    assert time.monotonic() - started < 30


def test_a_usage_limit_is_waited_out_then_the_iteration_resumes(codex):
    codex.scenario(sequence=[{"usage_limit": True}], by_phase={"investigation": BLOCK})
    started = time.monotonic()
    result = codex.worker("c8", "--provider", "codex", env={"SAMOCODE_USAGE_WAIT": "0.3"})
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started >= 0.3
    assert len(codex.records()) == 2
    session = codex.session_dir("c8")
    attempts = [h for h in history(session) if h.get("event") == "attempt_failed"]
    assert [a["failure"] for a in attempts] == ["usage_limit"]
    assert "Usage limit hit; waiting until" in (session / "_overview.md").read_text()


def test_a_usage_limit_reset_beyond_max_wait_stops_waiting_at_the_printed_local_time(codex):
    """The fake prints the reset in local time (TZ=Asia/Kolkata) as codex does; the worker reads it back."""
    codex.scenario(by_phase={"investigation": {"rate_limit": 3 * 3600}})
    zone = ZoneInfo("Asia/Kolkata")
    before = time.time()
    result = codex.worker("c9", "--provider", "codex", env={"TZ": "Asia/Kolkata", "SAMOCODE_MAX_WAIT": "60"})
    after = time.time()
    assert result.returncode == 3, result.stderr
    expected = {
        (dt.datetime.fromtimestamp(t + 3 * 3600, zone).replace(second=0) + dt.timedelta(minutes=1)).strftime(
            "%H:%M"
        )
        for t in (before, after)
    }
    assert any(f"usage limit resets at {hhmm}" in result.stdout for hhmm in expected), result.stdout
    ov = parse((codex.session_dir("c9") / "_overview.md").read_text())
    assert ov.get("waiting for") == "usage_limit"


def test_the_full_session_runs_with_provider_codex(project, monkeypatch):
    """test_loop_inproc.py's whole session (both gates, then done) in-process, every run given
    provider codex: codex's --json events, read by the real parser, at every phase. The codex
    command line and stdin against the fake CLI are the subprocess tests' part, here and above."""
    from tests import test_loop_inproc as flow

    loop = InProc(project, monkeypatch)
    plain = loop.run
    loop.run = lambda name, *extra, **kw: plain(name, *extra, provider="codex", **kw)  # type: ignore[method-assign]
    flow.test_a_new_session_stops_at_the_qa_gate_then_the_plan_gate_then_runs_to_done(loop, project)
    calls = loop.child.calls
    assert len(calls) >= 8
    assert all(c["argv"][1:3] == ["exec", "--json"] and c["argv"][-1] == "-" for c in calls)
    costs = [d.get("cost_usd") for d in loop.decisions("feat")]
    assert costs and all(c is None for c in costs)  # no prices configured: unknown, not $0


def test_stdin_is_closed_after_the_prompt(codex):
    """The fake blocks on an open stdin exactly like the real CLI: a run that finishes proves EOF came."""
    codex.scenario(by_phase={"investigation": BLOCK})
    started = time.monotonic()
    result = codex.worker("c10", "--provider", "codex", "--timeout", "20", env={"SAMOCODE_MAX_RETRIES": "0"})
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 15
    (call,) = codex.records()
    session = codex.session_dir("c10")
    (saved,) = (session / "_logs").glob("*.prompt.md")
    assert call["prompt"] == saved.read_text(encoding="utf-8")
    assert os.path.getsize(saved) == len(call["prompt"].encode())


def test_megabytes_of_output_are_logged_and_the_final_events_still_parsed(codex):
    codex.scenario(by_phase={"investigation": {**BLOCK, "stdout_mb": 30}})
    result = codex.worker("c11", "--provider", "codex", env={"SAMOCODE_PRICE_INPUT_PER_MTOK": "1"})
    assert result.returncode == 4, result.stderr
    session = codex.session_dir("c11")
    entry = next(h for h in history(session) if h.get("decision"))
    assert entry["tokens_out"] == 300 and entry["cost_estimated"] is True
    assert entry["turns"] == 30_000 + 3  # 30 MB of messages, two tool calls, the final message
    (log,) = (session / "_logs").glob("*.jsonl")
    assert log.stat().st_size > 30_000_000
