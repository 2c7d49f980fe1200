#!/usr/bin/env python3
"""A stand-in for `claude -p --output-format stream-json` driven by a scenario file.

It reads the prompt from stdin like the real CLI, finds the session in the `## Session context`
section, performs one scripted action (edit the overview, write artifacts and `_signal.json`),
prints stream-json events shaped like Claude Code 2.1's, and exits.

Environment:
  FAKE_SCENARIO  JSON file: {"sequence": [action, ...], "by_phase": {phase: action}}
                 Invocation k takes sequence[k] while it lasts, then by_phase[phase].
  FAKE_RECORD    a JSONL file; each invocation appends {argv, env subset, phase, cwd}.
  FAKE_CLAUDE_VERSION  "2.1.197" (default) or "2.1.332": the events in that release's shape. 2.1.332
                 prints its result line with "type" more than 1,100 bytes in, adds api_error_type,
                 api_error and terminal_reason "api_error", richer synthetic error lines, and
                 unifiedWindows in rate_limit_info.
Action keys (all optional): signal (object, or a string written raw), overview {Field: value},
flow (event text), files {relative name: content} (session dir), code {relative name: content}
(working dir, committed when it is a git repo), answer_qa (bool), sleep (s), until (a path: run
until that file exists, 60 s at most; the test makes it when it is done looking), stdout_mb (MB of
assistant events), half_line (print a partial line then sleep), spawn ("holder": grandchild keeps
stdout; "setsid": sleeper in its own session; "daemon": one with an empty environment too, forked once
the worker has moved this child into its cgroup; "both": a holder and a setsid sleeper), exit (code),
result (merged into the result event; null to print none), rate_limit (resetsAt seconds from now: a
rejected rate_limit_event), limits
({window: utilization}: an allowed rate_limit_event reporting them; five_hour at 0.9 or more is the
server's early warning, with its utilization in rate_limit_info; limits_reset: seconds), stderr,
pause_after_signal (s to sleep after the signal is written, before the result), ignore_term (bool:
SIGTERM is ignored), signal_as ("fifo" | "dir" | "symlink:<target>" | "mb:<N>" | "hex:<bytes>":
`_signal.json` made into that instead of a small text file).
final_message (text of the result), structured_output (object: with `--json-schema`, the input of a
StructuredOutput call, put in the result as `structured_output`).
Like the CLI, `--max-budget-usd B` with a cost above B ends the run `error_max_budget_usd` (exit 1)
before the action's work is done.
"""

import json
import os
import signal
import sys
import time

from fake_common import context, next_action, perform, record, side_effects, stall


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def odd_signal(kind, session):
    """`_signal.json` as something other than a small file (bad-input tests)."""
    path = os.path.join(session, "_signal.json")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        os.mkdir(path)
    elif kind.startswith("symlink:"):
        os.symlink(kind.split(":", 1)[1], path)
    elif kind.startswith("hex:"):
        with open(path, "wb") as f:
            f.write(bytes.fromhex(kind[4:]))
    elif kind.startswith("mb:"):
        with open(path, "w") as f:
            f.write('{"status": "continue", "phase": "requirements", "pad": "')
            f.write("x" * int(float(kind[3:]) * 1024 * 1024))
            f.write('"}')


def main():
    prompt = sys.stdin.read()
    ctx = context(prompt)
    action = next_action(ctx["Phase"])
    record(
        {"argv": sys.argv[1:], "phase": ctx["Phase"], "cwd": os.getcwd(), "prompt_bytes": len(prompt)},
        ("CLAUDE", "SAMOCODE", "IS_SANDBOX", "TELEGRAM"),
    )
    emit(
        {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": "fake",
            "tools": ["Bash"],
            "model": "claude-opus-4-8",
            "permissionMode": "bypassPermissions",
            "claude_code_version": os.environ.get("FAKE_CLAUDE_VERSION", "2.1.197"),
        }
    )
    if action.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    side_effects(action)
    block = "x" * 1000
    for _ in range(int(action.get("stdout_mb", 0) * 1000)):
        emit(
            {
                "type": "assistant",
                "message": {"role": "assistant", "content": [{"type": "text", "text": block}]},
            }
        )
    stall(action, '{"type":"assistant","message":{"content":[{"type":"text","text":"partial')
    if action.get("limits"):
        emit(rate_limit_event("allowed", action["limits"], float(action.get("limits_reset", 3600))))
    if action.get("rate_limit") is not None:
        emit(rate_limit_event("rejected", {"five_hour": 1.0}, float(action["rate_limit"])))
    budget = flag_value("--max-budget-usd")
    cost = (action.get("result") or {}).get("total_cost_usd", 0.0125)
    over_budget = budget is not None and isinstance(cost, (int, float)) and cost > float(budget)
    if over_budget:
        # Like the CLI: the call that went past the budget ends the run before the work is done.
        action = {**action, "exit": 1, "result": {**(action.get("result") or {}), **budget_stop(budget)}}
    else:
        perform(action, ctx)
    if action.get("signal_as") and ctx["Session Dir"]:
        odd_signal(action["signal_as"], ctx["Session Dir"])
    time.sleep(float(action.get("pause_after_signal", 0)))

    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "duration_ms": 10,
        "num_turns": 2,
        "result": "done",
        "stop_reason": "end_turn",
        "session_id": "fake",
        "total_cost_usd": 0.0125,
        "usage": {
            "input_tokens": 1000,
            "output_tokens": 100,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 0,
        },
    }
    if action.get("final_message") is not None:
        result["result"] = action["final_message"]
    if action.get("structured_output") is not None and flag_value("--json-schema") is not None:
        # StructuredOutput called with this input: the CLI ends the run and puts it in the result.
        result.update(structured_output=action["structured_output"], stop_reason="tool_use")
        result["result"] = json.dumps(action["structured_output"])
    if "result" in action and action["result"] is None:
        result = None
    elif action.get("result"):
        result.update(action["result"])
    if result is not None and result.get("is_error") and result.get("subtype") == "success":
        emit(synthetic_error(result, action.get("rate_limit") is not None))
    if result is not None:
        emit(shaped_result(result, action.get("rate_limit") is not None))
    sys.exit(int(action.get("exit", 0)))


def flag_value(name):
    """The value after `name` in argv, or None."""
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def budget_stop(budget):
    """The result fields of a run the CLI stopped at --max-budget-usd (both versions; 2.1.332 adds
    terminal_reason budget_exhausted)."""
    fields = {
        "subtype": "error_max_budget_usd",
        "is_error": True,
        "errors": [f"Reached maximum budget (${budget})"],
    }
    if NEW:
        fields["terminal_reason"] = "budget_exhausted"
    return fields


NEW = os.environ.get("FAKE_CLAUDE_VERSION", "2.1.197") != "2.1.197"
ERROR_KINDS = {429: "rate_limit", 401: "authentication_failed", 529: "server_error", 500: "server_error"}
ERROR_TYPES = {
    429: "rate_limit_error",
    401: "authentication_error",
    529: "overloaded_error",
    500: "api_error",
}
# 2.1.332's result line: "type" comes after these (their order as the real CLI prints them).
ORDER_NEW = (
    "duration_api_ms",
    "stop_reason",
    "session_id",
    "total_cost_usd",
    "usage",
    "modelUsage",
    "permission_denials",
    "terminal_reason",
    "fast_mode_state",
    "fast_mode_disabled_reason",
    "subagent_stats",
    "safety_stops",
    "is_error",
    "num_turns",
    "subtype",
    "api_error_status",
    "api_error_type",
    "api_error",
    "errors",
    "result",
    "type",
)


def rate_limit_event(status, windows, reset_in):
    resets = int(time.time() + reset_in)
    info = {"status": status, "resetsAt": resets, "rateLimitType": "five_hour", "isUsingOverage": False}
    used = windows.get("five_hour", 0)
    if status == "allowed" and used >= 0.9:
        # The server's early warning: the only way 2.1.197 reports a utilization (both versions say it).
        info.update(status="allowed_warning", utilization=used, surpassedThreshold=0.9)
    if NEW:
        info["unifiedWindows"] = {
            name: {"utilization": used, "resetsAt": resets, "status": status if used >= 1 else "allowed"}
            for name, used in windows.items()
        }
    return {"type": "rate_limit_event", "rate_limit_info": info, "uuid": "fake", "session_id": "fake"}


def synthetic_error(result, limited):
    """The assistant line the CLI prints before an API failure's result."""
    status = result.get("api_error_status")
    event = {
        "type": "assistant",
        "message": {
            "model": "<synthetic>",
            "role": "assistant",
            "content": [{"type": "text", "text": str(result.get("result") or "API Error")}],
        },
        "session_id": "fake",
        "error": ERROR_KINDS.get(status, "unknown"),
    }
    if NEW:
        event.update(is_api_error_message=True, api_error_status=status)
        if status in ERROR_TYPES:
            event["api_error_type"] = ERROR_TYPES[status]
        if limited:
            event["api_error"] = "usage_limit_reached"
    return event


def shaped_result(result, limited):
    """2.1.197 prints "type" first; 2.1.332 moves it more than 1,100 bytes in and adds fields."""
    if not NEW:
        return result
    result = dict(result)
    status = result.get("api_error_status")
    if result.get("subtype") == "error_max_turns":
        result["terminal_reason"] = "max_turns"
    else:
        result["terminal_reason"] = "api_error" if result.get("is_error") else "completed"
    if status in ERROR_TYPES:
        result["api_error_type"] = ERROR_TYPES[status]
    if limited:
        result["api_error"] = "usage_limit_reached"
    result.update(
        duration_api_ms=8,
        modelUsage={"claude-opus-5-5": {"inputTokens": 1000, "outputTokens": 100, "costUSD": 0.0125}},
        permission_denials=[],
        fast_mode_state="off",
        fast_mode_disabled_reason="sdk_opt_in_required",
        subagent_stats={"spawned": 0, "by_type": {}, "pad": "x" * 900},
        safety_stops=0,
        queued_turn_count=0,
        result_index=0,
    )
    keys = [k for k in ORDER_NEW if k in result] + [k for k in result if k not in ORDER_NEW]
    return {k: result[k] for k in keys}


if __name__ == "__main__":
    main()
