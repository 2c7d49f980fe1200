#!/usr/bin/env python3
"""A stand-in for `codex exec --json` (codex-cli 0.169.0) driven by the same scenario files as
fake_claude.py.

Like the real CLI it parses its argv strictly (an unknown flag is clap's "unexpected argument"
error, exit 2), works in the `-C` directory, and reads the prompt from stdin up to EOF: a parent
that leaves stdin open makes it hang, as the real one does. It then performs the scenario action
(see fake_claude.py for the keys) and prints `--json` events shaped like the real CLI's:
thread.started, turn.started, item.started/item.completed (command_execution, agent_message),
then turn.completed with usage, or error + turn.failed and exit 1.

Action keys mapped to Codex: result null -> no turn.completed; result with is_error and
api_error_status -> the real error text for that status (429 retry exhaustion, 401, 5xx);
rate_limit (seconds from now) -> the usage-limit error naming the reset in local time, as the real
CLI prints it; usage_limit (true) -> the usage-limit error without a reset time; codex_error (text) ->
that message in turn.failed; usage {..} -> merged into turn.completed's usage; final_message (text)
-> the last agent message, also written to `-o FILE` as the real CLI does.
FAKE_RECORD entries carry argv, cwd, the prompt text and the CLAUDE*/CODEX*/SAMOCODE* environment.
"""

import datetime as dt
import json
import os
import sys
import time
import uuid

from fake_common import context, next_action, perform, record, side_effects, stall

VERSION = "codex-cli 0.169.0"
# `codex exec` options (0.169.0 --help): those taking a value, and plain flags.
VALUED = {
    "-c": "--config",
    "--config": "--config",
    "--enable": "--enable",
    "--disable": "--disable",
    "-i": "--image",
    "--image": "--image",
    "-m": "--model",
    "--model": "--model",
    "--local-provider": "--local-provider",
    "-p": "--profile",
    "--profile": "--profile",
    "-s": "--sandbox",
    "--sandbox": "--sandbox",
    "-C": "--cd",
    "--cd": "--cd",
    "--add-dir": "--add-dir",
    "--thread-source": "--thread-source",
    "--cyber-access-program": "--cyber-access-program",
    "--output-schema": "--output-schema",
    "--color": "--color",
    "-o": "--output-last-message",
    "--output-last-message": "--output-last-message",
}
FLAGS = {
    "--strict-config",
    "--oss",
    "--approve-for-me",
    "--dangerously-bypass-approvals-and-sandbox",
    "--dangerously-bypass-hook-trust",
    "--worktree",
    "--skip-git-repo-check",
    "--trust",
    "--ephemeral",
    "--ignore-user-config",
    "--ignore-rules",
    "--json",
}
USAGE = "Usage: codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]\n"
USAGE_LIMIT = (
    "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
    "https://chatgpt.com/settings/usage to purchase more credits"
)
URL = "http://127.0.0.1:1455/v1/responses"


def clap_error(message):
    sys.stderr.write(f"error: {message}\n\n{USAGE}\nFor more information, try '--help'.\n")
    sys.exit(2)


def parse_argv(argv):
    if argv[:1] in (["--version"], ["-V"]):
        print(VERSION)
        sys.exit(0)
    if argv[:1] not in (["exec"], ["e"]):
        clap_error(f"the fake only implements `codex exec`, got {argv[:1]}")
    options, positional = {}, []
    args = iter(argv[1:])
    for arg in args:
        name, eq, value = arg.partition("=")
        if arg in FLAGS:
            options[arg] = True
        elif name in VALUED and name.startswith("--") and eq:
            options.setdefault(VALUED[name], []).append(value)
        elif arg in VALUED:
            value = next(args, None)
            if value is None:
                clap_error(f"a value is required for '{VALUED[arg]} <VALUE>' but none was supplied")
            options.setdefault(VALUED[arg], []).append(value)
        elif arg.startswith("-") and arg != "-":
            clap_error(
                f"unexpected argument '{arg}' found\n\n  tip: to pass '{arg}' as a value, use '-- {arg}'"
            )
        else:
            positional.append(arg)
    if len(positional) > 1:
        clap_error(f"unexpected argument '{positional[1]}' found")
    return options, positional


def emit(event):
    # The real CLI prints compact JSON, one event per line.
    sys.stdout.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Items:
    def __init__(self):
        self.n = 0

    def command(self, command, output, exit_code=0):
        item = {"id": f"item_{self.n}", "type": "command_execution", "command": f"/bin/bash -lc '{command}'"}
        self.n += 1
        emit(
            {
                "type": "item.started",
                "item": {**item, "aggregated_output": "", "exit_code": None, "status": "in_progress"},
            }
        )
        status = "completed" if exit_code == 0 else "failed"
        emit(
            {
                "type": "item.completed",
                "item": {**item, "aggregated_output": output, "exit_code": exit_code, "status": status},
            }
        )

    def message(self, text):
        emit(
            {
                "type": "item.completed",
                "item": {"id": f"item_{self.n}", "type": "agent_message", "text": text},
            }
        )
        self.n += 1


def reset_clock(seconds):
    """How codex 0.169.0 names a reset: local time, minute resolution, the date when not today."""
    moment = dt.datetime.fromtimestamp(time.time() + seconds)
    clock = moment.strftime("%I:%M %p").lstrip("0")
    if moment.date() == dt.date.today():
        return clock
    day = moment.day
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{moment:%b} {day}{suffix}, {moment.year} {clock}"


def failure(action):
    """The final error message for this action, or None when the turn completes."""
    if action.get("codex_error"):
        return action["codex_error"], []
    if action.get("rate_limit") is not None:
        return f"{USAGE_LIMIT} or try again at {reset_clock(float(action['rate_limit']))}.", []
    if action.get("usage_limit"):
        return "You\u2019ve hit your usage limit. Try again later.", []
    result = action.get("result") or {}
    if not result.get("is_error"):
        return None, []
    status = result.get("api_error_status")
    if status == 429:
        final = "exceeded retry limit, last status: 429 Too Many Requests"
    elif status == 401:
        final = f"unexpected status 401 Unauthorized: Incorrect API key provided: sk-fake., url: {URL}"
    elif status == 500:
        final = "We\u2019re currently experiencing high demand, which may cause temporary errors."
    elif isinstance(status, int):
        final = f"unexpected status {status} Service Unavailable: Service Unavailable, url: {URL}"
    else:
        final = str(result.get("result") or "stream disconnected before completion: error sending request")
    notices = [f"Reconnecting... {k}/5 ({final})" for k in range(1, 6)] if status else []
    return final, notices


def main():
    sys.stdout.reconfigure(encoding="utf-8")  # the real CLI prints UTF-8 whatever the locale
    options, positional = parse_argv(sys.argv[1:])
    if not options.get("--json"):
        clap_error("this fake prints only the --json event stream; pass --json")
    if positional != ["-"]:
        # The real CLI would take an argv prompt and still read a piped stdin to EOF (blocking forever
        # on an open pipe); samocode must always send the prompt on stdin.
        clap_error(f"the fake requires '-' as the prompt (prompt on stdin), got {positional}")
    workdir = (options.get("--cd") or [os.getcwd()])[-1]
    if not os.path.isdir(workdir):
        sys.stderr.write("Error: No such file or directory (os error 2)\n")
        sys.exit(1)
    os.chdir(workdir)
    prompt = sys.stdin.read()  # blocks until EOF, like the real CLI: an open pipe hangs here
    ctx = context(prompt)
    action = next_action(ctx["Phase"])
    record(
        {
            "argv": sys.argv[1:],
            "phase": ctx["Phase"],
            "cwd": os.getcwd(),
            "prompt": prompt,
            "prompt_bytes": len(prompt),
        },
        ("CLAUDE", "CODEX", "SAMOCODE", "IS_SANDBOX"),
    )
    emit({"type": "thread.started", "thread_id": str(uuid.uuid4())})
    emit({"type": "turn.started"})
    side_effects(action)
    items = Items()
    block = "x" * 1000
    for _ in range(int(action.get("stdout_mb", 0) * 1000)):
        items.message(block)
    stall(action, '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"partial')
    final, notices = failure(action)
    if final is None:
        for done in perform(action, ctx):
            items.command(done, "")
        if "result" in action and action["result"] is None:
            sys.exit(int(action.get("exit", 0)))  # the stream ends without turn.completed
        final = action.get("final_message") or (action.get("result") or {}).get("result") or "done"
        items.message(final)
        for path in options.get("--output-last-message", [])[-1:]:
            with open(path, "w", encoding="utf-8") as answer:  # -o: the last agent message as it is
                answer.write(final)
        usage = {
            "input_tokens": 12000,
            "cached_input_tokens": 2000,
            "cache_write_input_tokens": 0,
            "output_tokens": 300,
            "reasoning_output_tokens": 100,
        }
        usage.update(action.get("usage") or {})
        emit({"type": "turn.completed", "usage": usage})
        sys.exit(int(action.get("exit", 0)))
    for notice in notices:
        emit({"type": "error", "message": notice})
    emit({"type": "error", "message": final})
    emit({"type": "turn.failed", "error": {"message": final}})
    sys.exit(int(action.get("exit", 1)) or 1)


if __name__ == "__main__":
    main()
