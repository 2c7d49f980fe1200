#!/usr/bin/env python3
"""A stand-in for `claude -p --output-format stream-json` driven by a scenario file.

It reads the prompt from stdin like the real CLI, finds the session in the `## Session context`
section, performs one scripted action (edit the overview, write artifacts and `_signal.json`),
prints stream-json events shaped like Claude Code 2.1's, and exits.

Environment:
  FAKE_SCENARIO  JSON file: {"sequence": [action, ...], "by_phase": {phase: action}}
                 Invocation k takes sequence[k] while it lasts, then by_phase[phase].
  FAKE_RECORD    a JSONL file; each invocation appends {argv, env subset, phase, cwd}.
Action keys (all optional): signal (object, or a string written raw), overview {Field: value},
flow (event text), files {relative name: content} (session dir), code {relative name: content}
(working dir, committed when it is a git repo), answer_qa (bool), sleep (s), stdout_mb (MB of
assistant events), half_line (print a partial line then sleep), spawn ("holder": grandchild keeps
stdout; "setsid": sleeper in its own session), exit (code), result (merged into the result event;
null to print none), rate_limit (resetsAt seconds from now: a rejected rate_limit_event), stderr,
pause_after_signal (s to sleep after the signal is written, before the result), ignore_term (bool:
SIGTERM is ignored), signal_as ("fifo" | "dir" | "symlink:<target>" | "mb:<N>" | "hex:<bytes>":
`_signal.json` made into that instead of a small text file).
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
        ("CLAUDE", "SAMOCODE", "IS_SANDBOX"),
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
    if action.get("rate_limit") is not None:
        emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {
                    "status": "rejected",
                    "rateLimitType": "five_hour",
                    "resetsAt": int(time.time() + float(action["rate_limit"])),
                },
            }
        )
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
    if "result" in action and action["result"] is None:
        result = None
    elif action.get("result"):
        result.update(action["result"])
    if result is not None:
        emit(result)
    sys.exit(int(action.get("exit", 0)))


if __name__ == "__main__":
    main()
