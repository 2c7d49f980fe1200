"""Claude Code's stream-json, read into the iteration record: lines shaped like Claude Code 2.1's."""

from __future__ import annotations

import json
import time

import pytest

from worker.process import Ending, RunResult
from worker.providers import Failure
from worker.providers.claude import ClaudeStream

EXITED_1 = RunResult(Ending.EXITED, 1, 1.0, 100, b"", 0)
EXITED_0 = RunResult(Ending.EXITED, 0, 1.0, 100, b"", 0)


def feed(*events: dict, run: RunResult = EXITED_1, stderr: str = ""):
    stream = ClaudeStream()
    for event in events:
        line = json.dumps(event, separators=(",", ":")).encode()
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
    assert record.failure is None
    assert (record.cost_usd, record.turns, record.tokens_in, record.tokens_out, record.tokens_cached) == (
        0.0159,
        2,
        3117,
        14,
        7,
    )


def test_subscription_limit_uses_the_rate_limit_event_reset():
    resets = int(time.time()) + 600
    record = feed(
        {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": resets}},
        result(api_error_status=429, result="You've hit your session limit · resets 5:24pm (UTC)"),
    )
    assert record.failure is Failure.USAGE_LIMIT and record.resets_at == resets


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


def test_max_turns():
    record = feed(result(subtype="error_max_turns", errors=["Reached maximum number of turns (3)"]))
    assert record.failure is Failure.MAX_TURNS and "maximum number of turns" in record.message


def test_no_result_event_is_a_failure_even_with_exit_0():
    assert feed(run=EXITED_0).failure is Failure.NO_RESULT


def test_root_refusal_on_stderr_is_not_retried():
    stderr = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
    assert feed(stderr=stderr).failure is Failure.REFUSED


def test_agent_text_mentioning_a_limit_is_not_a_failure():
    quoted = {
        "type": "assistant",
        "message": {"content": [{"type": "text", "text": "You've hit your usage limit"}]},
    }
    assert feed(quoted, result(is_error=False, result="ok"), run=EXITED_0).failure is None
