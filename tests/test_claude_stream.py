"""Claude Code's stream-json, read into the iteration record: lines shaped like 2.1.197's ("type"
first) and 2.1.332's ("type" 1,100+ bytes in, newer error fields), whatever the key order or spacing;
and the worker against the fake CLI printing 2.1.332's shapes: as a subprocess where the console is
the point, else in-process with the fake CLI as its real child."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inproc import FakeClock, InProc
from worker_helpers import CLOCK, decisions, history

from worker import process
from worker.process import Ending, RunResult
from worker.providers import Failure, IterationRecord
from worker.providers.claude import ClaudeStream
from worker.providers.claude_stream import AUTH_FIX

EXITED_1 = RunResult(Ending.EXITED, 1, 1.0, 100, 0)
EXITED_0 = RunResult(Ending.EXITED, 0, 1.0, 100, 0)
COMPACT = (",", ":")


def feed(*events: dict, run: RunResult = EXITED_1, stderr: str = "", separators=COMPACT):
    """Each event as one line, through the process layer's marker prefilter, then the parser."""
    stream = ClaudeStream()
    for event in events:
        line = json.dumps(event, separators=separators, ensure_ascii=False).encode()
        if any(m in line for m in stream.markers):
            stream.feed(line)
    return stream.finish(run, stderr)


def result(**fields) -> dict:
    base = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "num_turns": 1,
        "total_cost_usd": 0,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return {**base, **fields}


def late_type(event: dict, pad: int = 1200) -> dict:
    """2.1.332's order: "type" after 1,100+ bytes of other keys."""
    rest = {k: v for k, v in event.items() if k != "type"}
    return {"subagent_stats": {"by_type": {}, "pad": "x" * pad}, **rest, "type": event["type"]}


def init(version: str) -> dict:
    return {"type": "system", "subtype": "init", "session_id": "s", "claude_code_version": version}


def synthetic(text: str, error: str, **fields) -> dict:
    """The assistant line the CLI prints for an API error (2.1.332 adds `fields`)."""
    message = {"model": "<synthetic>", "role": "assistant", "content": [{"type": "text", "text": text}]}
    return {"type": "assistant", "message": message, "error": error, **fields}


def limit_event(status: str, resets: int, windows: dict | None = None, **info) -> dict:
    body = {"status": status, "resetsAt": resets, "rateLimitType": "five_hour", **info}
    if windows is not None:
        body["unifiedWindows"] = windows
    return {"type": "rate_limit_event", "rate_limit_info": body}


def test_success_carries_cost_tokens_and_turns():
    record = feed(
        result(
            is_error=False,
            total_cost_usd=0.0159,
            num_turns=2,
            result="Done.",
            usage={"input_tokens": 3117, "output_tokens": 14, "cache_read_input_tokens": 7},
        ),
        run=EXITED_0,
    )
    assert record.failure is None and record.stream_problem == ""
    assert (record.cost_usd, record.turns, record.tokens_in, record.tokens_out, record.tokens_cached) == (
        0.0159,
        2,
        3117,
        14,
        7,
    )


def test_a_result_line_with_type_1200_bytes_in_is_read_with_its_cost_and_version():
    event = late_type(result(is_error=False, total_cost_usd=0.05, num_turns=2, result="done"))
    line = json.dumps(event, separators=COMPACT)
    assert line.index('"type"') > 1100
    record = feed(init("2.1.332"), event, run=EXITED_0)
    assert (record.failure, record.cost_usd, record.turns, record.cli) == (None, 0.05, 2, "claude 2.1.332")


def test_subscription_limit_uses_the_rate_limit_event_reset():
    resets = int(time.time()) + 600
    record = feed(
        limit_event("rejected", resets),
        result(api_error_status=429, result="You've hit your session limit · resets 5:24pm (UTC)"),
    )
    assert record.failure is Failure.USAGE_LIMIT and record.resets_at == resets


def test_2_1_332_subscription_limit_is_read_from_its_new_fields_and_windows():
    resets = int(time.time()) + 3600
    info = {"status": "rejected", "resetsAt": resets, "rateLimitType": "five_hour"}
    windows = {"five_hour": {"utilization": 1, "resetsAt": resets, "status": "rejected"}}
    record = feed(
        init("2.1.332"),
        limit_event("rejected", resets, windows),
        synthetic(
            "You've hit your 5-hour limit · resets 5:31pm (UTC)",
            "rate_limit",
            is_api_error_message=True,
            api_error_status=429,
            api_error="usage_limit_reached",
            api_error_params={"rate_limit_info": info},
            api_error_type="rate_limit_error",
        ),
        late_type(
            result(
                api_error_status=429,
                api_error_type="rate_limit_error",
                api_error="usage_limit_reached",
                terminal_reason="api_error",
                result="You've hit your 5-hour limit · resets 5:31pm (UTC)",
            )
        ),
    )
    assert (record.failure, record.resets_at, record.api_status) == (Failure.USAGE_LIMIT, resets, 429)
    assert [(w.name, w.utilization, w.status) for w in record.limits] == [("five_hour", 1, "rejected")]


def test_api_error_usage_limit_reached_is_a_usage_limit_even_without_a_rate_limit_event():
    record = feed(late_type(result(api_error="usage_limit_reached", result="You've hit your weekly limit")))
    assert record.failure is Failure.USAGE_LIMIT


def test_the_synthetic_lines_rate_limit_info_gives_the_reset_when_no_event_did():
    resets = int(time.time()) + 7200
    info = {"status": "rejected", "resetsAt": resets, "rateLimitType": "seven_day"}
    record = feed(
        synthetic("You've hit your weekly limit", "rate_limit", api_error_params={"rate_limit_info": info}),
        late_type(result(api_error_status=429, result="You've hit your weekly limit")),
    )
    assert (record.failure, record.resets_at) == (Failure.USAGE_LIMIT, resets)


def test_the_later_of_two_rejected_windows_is_the_reset():
    soon, later = int(time.time()) + 600, int(time.time()) + 3 * 86400
    windows = {
        "five_hour": {"utilization": 1, "resetsAt": soon, "status": "rejected"},
        "seven_day": {"utilization": 1, "resetsAt": later, "status": "rejected"},
    }
    record = feed(limit_event("rejected", soon, windows), result(api_error_status=429, result="limit"))
    assert record.resets_at == later


def test_reported_utilization_of_each_window_is_kept_last_value_wins():
    now = int(time.time())
    first = {"five_hour": {"utilization": 0.5, "resetsAt": now + 60, "status": "allowed"}}
    second = {
        "five_hour": {"utilization": 0.96, "resetsAt": now + 60, "status": "allowed"},
        "seven_day": {"utilization": 0.42, "resetsAt": now + 86400, "status": "allowed"},
    }
    record = feed(
        limit_event("allowed", now + 60, first),
        limit_event("allowed", now + 60, second),
        limit_event("allowed", now + 60),  # 2.1.197's shape: no utilization, which unsays nothing
        result(is_error=False, total_cost_usd=0.01),
        run=EXITED_0,
    )
    assert {w.name: (w.utilization, w.status) for w in record.limits} == {
        "five_hour": (0.96, "allowed"),
        "seven_day": (0.42, "allowed"),
    }
    assert record.failure is None


def test_2_1_197_rate_limit_info_alone_names_its_window():
    now = int(time.time())
    record = feed(
        limit_event("allowed_warning", now + 60, utilization=0.91),
        result(is_error=False, total_cost_usd=0.01),
        run=EXITED_0,
    )
    (window,) = record.limits
    assert (window.name, window.utilization, window.resets_at, window.status) == (
        "five_hour",
        0.91,
        now + 60,
        "allowed_warning",
    )


def test_api_key_429_after_the_clis_own_retries_is_a_usage_limit_without_reset():
    record = feed(result(api_error_status=429, result="API Error: Request rejected (429) · slow down"))
    assert record.failure is Failure.USAGE_LIMIT and record.resets_at is None


def test_server_side_limiting_is_overload_not_usage():
    text = "Server is temporarily limiting requests (not your usage limit)"
    assert feed(result(api_error_status=429, result=text)).failure is Failure.OVERLOADED


@pytest.mark.parametrize(
    ("status", "failure"),
    [(529, Failure.OVERLOADED), (500, Failure.OVERLOADED), (401, Failure.AUTH), (None, Failure.API_ERROR)],
)
def test_api_failures_are_classified_on_status_not_subtype(status, failure):
    assert feed(result(api_error_status=status, result="API Error")).failure is failure


@pytest.mark.parametrize(
    ("error_type", "failure"),
    [
        ("overloaded_error", Failure.OVERLOADED),
        ("api_error", Failure.OVERLOADED),
        ("authentication_error", Failure.AUTH),
        ("rate_limit_error", Failure.USAGE_LIMIT),
    ],
)
def test_api_error_type_classifies_when_no_status_is_given(error_type, failure):
    assert feed(late_type(result(api_error_type=error_type, result="API Error"))).failure is failure


def test_max_turns_keeps_the_cost_on_both_shapes():
    for shape in (lambda e: e, late_type):
        record = feed(
            shape(
                result(
                    subtype="error_max_turns",
                    terminal_reason="max_turns",
                    total_cost_usd=0.05,
                    errors=["Reached maximum number of turns (3)"],
                )
            )
        )
        assert record.failure is Failure.MAX_TURNS and "maximum number of turns" in record.message
        assert record.cost_usd == 0.05


@pytest.mark.parametrize(
    ("subtype", "terminal", "failure"),
    [
        ("error_max_budget_usd", "budget_exhausted", Failure.BUDGET),
        ("error_max_budget_usd", None, Failure.BUDGET),  # 2.1.197 has no terminal_reason for it
        ("error_max_structured_output_retries", "structured_output_retry_exhausted", Failure.EXIT),
    ],
)
def test_the_clis_own_stops_keep_their_reason(subtype, terminal, failure):
    """--max-budget-usd's stop is a budget stop (blocked, never retried); giving up on --json-schema
    is retried like an unexplained exit. The CLI's words are kept."""
    record = feed(
        late_type(result(subtype=subtype, terminal_reason=terminal, errors=["Reached maximum budget ($0.5)"]))
    )
    assert record.failure is failure and record.message == "Reached maximum budget ($0.5)"


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_not_logged_in_is_auth_with_the_command_that_fixes_it(version):
    """Both versions print it as a synthetic assistant line and the result text, no HTTP status."""
    text = "Not logged in · Please run /login"
    extra = {"is_api_error_message": True} if version == "2.1.332" else {}
    shape = late_type if version == "2.1.332" else (lambda e: e)
    record = feed(
        init(version),
        synthetic(text, "authentication_failed", **extra),
        shape(result(api_error_status=None, result=text)),
    )
    assert record.failure is Failure.AUTH
    assert record.message.startswith(text) and AUTH_FIX in record.message
    assert "claude` and /login" in record.message and "ANTHROPIC_API_KEY" in record.message


def test_a_synthetic_error_line_alone_still_classifies_when_the_result_is_missing():
    record = feed(synthetic("Invalid API key · Fix external API key", "authentication_failed"))
    assert record.failure is Failure.AUTH


def test_no_result_event_is_a_failure_flagged_as_a_stream_problem_with_the_version():
    record = feed(init("2.1.400"), run=EXITED_0)
    assert record.failure is Failure.NO_RESULT
    assert record.stream_problem == "the CLI's result event was not understood — CLI version 2.1.400"
    assert record.message == record.stream_problem


def test_without_an_init_line_the_version_is_unknown_and_the_cli_never_asked():
    record = feed(run=EXITED_0)
    assert record.stream_problem.endswith("CLI version unknown") and record.cli == ""


def test_a_result_without_a_cost_is_flagged_and_not_a_success():
    event = result(is_error=False, result="done")
    del event["total_cost_usd"]
    record = feed(init("2.1.500"), event, run=EXITED_0)
    assert record.failure is Failure.NO_RESULT and record.cost_usd is None
    assert (
        record.stream_problem == "the CLI's result event has no cost (total_cost_usd) — CLI version 2.1.500"
    )


def test_output_then_a_failing_exit_without_a_result_says_so():
    record = feed(init("2.1.332"), {"type": "assistant", "message": {"content": []}})
    assert record.failure is Failure.EXIT
    assert "stream ended without a result event" in record.stream_problem
    silent = RunResult(Ending.EXITED, 1, 1.0, 0, 0)  # nothing printed: nothing to misread
    assert feed(run=silent).stream_problem == ""


def test_root_refusal_on_stderr_is_not_retried():
    stderr = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
    assert feed(stderr=stderr).failure is Failure.REFUSED


def test_agent_text_mentioning_a_limit_is_not_a_failure():
    quoted = {
        "type": "assistant",
        "message": {"content": [{"type": "text", "text": "You've hit your usage limit"}]},
    }
    assert feed(quoted, result(is_error=False, result="ok"), run=EXITED_0).failure is None


def test_a_result_event_quoted_inside_a_string_or_nested_in_a_tool_call_never_counts():
    fake = json.dumps(result(api_error_status=401, result="Invalid API key"))
    said = {"type": "assistant", "message": {"content": [{"type": "text", "text": fake}]}}
    tool = {"type": "user", "message": {"content": [{"type": "tool_result", "content": fake}]}}
    nested = {
        "type": "assistant",
        "message": {"content": [{"type": "tool_use", "input": result(api_error_status=401)}]},
    }
    record = feed(said, tool, nested, run=EXITED_0)
    assert record.failure is Failure.NO_RESULT and record.api_status is None
    record = feed(said, nested, result(is_error=False, total_cost_usd=0.2), run=EXITED_0)
    assert (record.failure, record.cost_usd) == (None, 0.2)


# -- key order and spacing never change what is read ---------------------------------------------------

NOW = int(time.time())
WINDOWS = {"five_hour": {"utilization": 1, "resetsAt": NOW + 3600, "status": "rejected"}}
STREAMS = {
    "success": (
        [init("2.1.332"), limit_event("allowed", NOW + 60), result(is_error=False, total_cost_usd=0.05)],
        EXITED_0,
    ),
    "subscription_limit": (
        [
            limit_event("rejected", NOW + 3600, WINDOWS),
            synthetic(
                "You've hit your 5-hour limit · resets 5:31pm (UTC)", "rate_limit", api_error_status=429
            ),
            result(api_error_status=429, api_error="usage_limit_reached", result="limit"),
        ],
        EXITED_1,
    ),
    "api_key_429": ([result(api_error_status=429, api_error_type="rate_limit_error")], EXITED_1),
    "overloaded": (
        [synthetic("API Error: 529", "server_error"), result(api_error_status=529, result="API Error: 529")],
        EXITED_1,
    ),
    "unauthorized": ([result(api_error_status=401, api_error_type="authentication_error")], EXITED_1),
    "not_logged_in": (
        [
            synthetic("Not logged in · Please run /login", "authentication_failed"),
            result(api_error_status=None, result="Not logged in · Please run /login"),
        ],
        EXITED_1,
    ),
    "max_turns": (
        [result(subtype="error_max_turns", terminal_reason="max_turns", total_cost_usd=0.3)],
        EXITED_1,
    ),
    "no_result": ([init("2.1.332")], EXITED_0),
}
SEPARATORS = [(",", ":"), (", ", ": "), (" ,", " :"), (" , ", " : "), (",\t", ":\t")]


def shuffled(value, rng: random.Random):
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def facts(record: IterationRecord) -> tuple:
    return (record.failure, record.cost_usd, record.resets_at, record.api_status, record.stream_problem)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(STREAMS)),
    seed=st.integers(0, 2**32 - 1),
    separators=st.sampled_from(SEPARATORS),
)
def test_key_order_and_spacing_never_change_the_classification(name, seed, separators):
    events, run = STREAMS[name]
    expected = feed(*events, run=run)
    again = feed(*[shuffled(e, random.Random(seed)) for e in events], run=run, separators=separators)
    assert facts(again) == facts(expected)
    assert expected.failure is not None or name == "success"


# -- reset wordings (worker/clock.py) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You've hit your session limit · resets 5:24pm (UTC)", (2026, 11, 29, 17, 25)),
        ("You've hit your 5-hour limit · resets 5:31pm (UTC)", (2026, 11, 29, 17, 32)),
        ("You've hit your 5-hour limit · resets 5pm (UTC)", (2026, 11, 29, 17, 1)),
        ("You've hit your weekly limit · resets Dec 2, 4:41pm (UTC)", (2026, 12, 2, 16, 42)),
        ("You've hit your Opus limit · resets Dec 2, 2027, 4pm (UTC)", (2027, 12, 2, 16, 1)),
        ("You've hit your weekly limit. It resets 5pm (UTC).", (2026, 11, 29, 17, 1)),
        ("You've hit your org's monthly usage limit · resets Dec 1 (UTC)", (2026, 12, 1, 0, 0)),
        ("You’ve hit your usage limit. Try again at Nov 30th, 2026 12:05 AM (UTC)", (2026, 11, 30, 0, 6)),
    ],
)
def test_every_reset_wording_the_clis_use_gives_its_time(text, expected):
    import datetime as dt

    from worker.clock import reset_time

    now = dt.datetime(2026, 11, 29, 16, 0, tzinfo=dt.timezone.utc).timestamp()
    assert reset_time(text, now) == dt.datetime(*expected, tzinfo=dt.timezone.utc).timestamp()


def test_a_limit_record_carries_the_wording_reset_when_no_event_gave_one():
    record = feed(
        result(api_error_status=429, result="You've hit your weekly limit · resets Dec 2, 4:41pm (UTC)")
    )
    assert record.failure is Failure.USAGE_LIMIT and record.resets_at is not None


# -- what status shows (worker/streamview.py) --------------------------------------------------------


def test_status_lines_come_from_the_newest_records_that_have_them():
    from worker import streamview

    now = time.time()
    old = {"limits": {"five_hour": {"utilization": 0.5, "resets_at": now - 60, "status": "allowed"}}}
    new = {
        "limits": {
            "five_hour": {"utilization": 1.0, "resets_at": now + 600, "status": "rejected"},
            "seven_day": {"utilization": None, "resets_at": None, "status": "allowed"},
        },
        "cost_usd": 0,
        "stream_problem": "the CLI's result event was not understood — CLI version 9",
    }
    later = {"event": "usage_wait"}  # not an attempt: neither limits nor a stream verdict
    history = [old, new, later]
    assert streamview.last_limits(history) == new["limits"]
    assert streamview.last_stream_problem(history) == new["stream_problem"]
    text = streamview.limits_text(new["limits"], now)
    assert re.fullmatch(r"five_hour 100% rejected until (\d\d-\d\d )?\d\d:\d\d · seven_day \?%", text), text
    assert re.fullmatch(
        r"five_hour 50% reset (\d\d-\d\d )?\d\d:\d\d", streamview.limits_text(old["limits"], now)
    )
    fine = {"cost_usd": 0.2}  # a newer attempt that was understood clears the Stream line
    assert streamview.last_stream_problem([*history, fine]) is None


# -- the worker against the fake CLI printing 2.1.332's shapes ------------------------------------------

NEW = {"FAKE_CLAUDE_VERSION": "2.1.332"}
BLOCK = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}
LIMITED = {
    "exit": 1,
    "rate_limit": 2,
    "result": {
        "is_error": True,
        "api_error_status": 429,
        "result": "You've hit your 5-hour limit",
        "total_cost_usd": 0,
    },
}


class _ShiftedClock(FakeClock):
    """The real clock (a real child names its reset from it), moved on by every sleep the loop asks
    for: a usage wait is waited out at once."""

    def __init__(self) -> None:
        super().__init__()
        self.start = self.t

    def time(self) -> float:
        return time.time() + (self.t - self.start)


def test_worker_on_2_1_332_records_cost_and_waits_out_a_usage_limit(project, monkeypatch):
    """The loop in-process (tests/inproc.py) with the real fake CLI as its child, printing 2.1.332's
    events into the real parser, and the usage wait on a clock that its sleep moves on."""
    project.scenario(sequence=[LIMITED, {**BLOCK, "limits": {"five_hour": 0.96, "seven_day": 0.42}}])
    for key, value in {**project.env, **NEW}.items():
        monkeypatch.setenv(key, value)
    loop = InProc(project, monkeypatch)
    loop.clock = _ShiftedClock()
    loop.child = process.run  # type: ignore[assignment]  (the real child, not the in-process player)
    done = loop.run("new")
    assert done.code == 4, done.message
    assert len(project.records()) == 2
    session = project.session_dir("new")
    events = [r.get("event") or r.get("decision") for r in history(session)]
    assert events == ["attempt_failed", "usage_wait", "usage_resumed", "blocked"]
    failed, wait = history(session)[:2]
    assert failed["failure"] == "usage_limit" and failed["api_status"] == 429
    assert wait["source"] == "reported reset"
    # The reset was 1-2 s ahead, plus the 1 s margin: waited out, not retried at once.
    assert len(loop.clock.slept) == 1 and 1.0 <= loop.clock.slept[0] <= 3.0, loop.clock.slept
    (decision,) = decisions(session)
    assert decision["cost_usd"] == 0.0125 and decision["tokens_in"] == 1000 and decision["turns"] == 2
    assert decision["cli"] == "claude 2.1.332" and "stream_problem" not in decision
    assert decision["limits"]["five_hour"]["utilization"] == 0.96
    assert decision["limits"]["seven_day"]["utilization"] == 0.42
    shown = project.cli("status", "--config", str(project.config), "--session", "new")
    assert re.search(r"^Spend: \$0\.01 ", shown.stdout, re.MULTILINE), shown.stdout
    assert re.search(
        rf"^Limits: five_hour 96% until {CLOCK} · seven_day 42% until ", shown.stdout, re.MULTILINE
    )
    assert "Stream:" not in shown.stdout


def test_a_stream_without_its_result_is_flagged_on_the_console_in_history_and_in_status(project):
    project.scenario(sequence=[{**BLOCK, "result": None}])
    done = project.worker("blind", env=NEW)
    assert done.returncode == 4, done.stderr
    problem = "the CLI's result event was not understood — CLI version 2.1.332"
    assert f"stream: {problem}" in done.stdout
    (decision,) = decisions(project.session_dir("blind"))
    assert decision["stream_problem"] == problem and decision["failure"] == "no_result"
    shown = project.cli("status", "--config", str(project.config), "--session", "blind")
    assert f"Stream: {problem}" in shown.stdout
    assert (
        json.loads(
            project.cli("status", "--config", str(project.config), "--session", "blind", "--json").stdout
        )["stream_problem"]
        == problem
    )


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_not_logged_in_stops_after_one_attempt_naming_the_fix(project, version):
    text = "Not logged in · Please run /login"
    project.scenario(
        by_phase={
            "investigation": {
                "exit": 1,
                "result": {"is_error": True, "api_error_status": None, "result": text, "total_cost_usd": 0},
            }
        }
    )
    done = project.worker("nologin", env={"FAKE_CLAUDE_VERSION": version})
    assert done.returncode == 5, done.stderr
    assert len(project.records()) == 1  # no retry
    last = done.stderr.strip().splitlines()[-1]
    assert "failed (auth)" in last and text in last and "not retried" in last, last
    assert "run `claude` and /login, or set ANTHROPIC_API_KEY" in last


def test_status_shows_a_few_windows_whatever_the_history_holds():
    from worker import streamview

    hostile = {f"w{i}_{'x' * 500}": {"utilization": 0.5, "status": "s" * 900} for i in range(50)}
    hostile["junk"] = "not a window"
    limits = streamview.last_limits([{"limits": hostile}])
    assert len(limits) == streamview.MAX_WINDOWS
    assert len(streamview.limits_text(limits)) < 300
