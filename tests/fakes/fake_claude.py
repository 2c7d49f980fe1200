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
null to print none), rate_limit (resetsAt seconds from now: a rejected rate_limit_event), stderr.
"""

import json
import os
import re
import subprocess
import sys
import time


def context(prompt):
    found = {}
    for key in ("Session Dir", "Working Dir", "Phase", "Flow Log prefix", "Artifact prefix"):
        m = re.search(rf"^- {key}: (.*)$", prompt, re.MULTILINE)
        found[key] = m.group(1).strip() if m else ""
    return found


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def set_field(text, key, value):
    return re.sub(rf"^{re.escape(key)}:.*$", f"{key}: {value}", text, count=1, flags=re.MULTILINE)


def main():
    prompt = sys.stdin.read()
    ctx = context(prompt)
    session, phase = ctx["Session Dir"], ctx["Phase"]
    scenario = json.load(open(os.environ["FAKE_SCENARIO"]))
    counter = os.environ["FAKE_SCENARIO"] + ".count"
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(n + 1))
    seq = scenario.get("sequence", [])
    action = seq[n] if n < len(seq) else scenario.get("by_phase", {}).get(phase, {})
    if os.environ.get("FAKE_RECORD"):
        keep = {k: v for k, v in os.environ.items() if k.startswith(("CLAUDE", "SAMOCODE", "IS_SANDBOX"))}
        with open(os.environ["FAKE_RECORD"], "a") as f:
            f.write(json.dumps({"argv": sys.argv[1:], "env": keep, "phase": phase, "cwd": os.getcwd(),
                                "prompt_bytes": len(prompt)}) + "\n")
    emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": "fake", "tools": ["Bash"],
          "model": "claude-opus-4-8", "permissionMode": "bypassPermissions"})
    if action.get("stderr"):
        sys.stderr.write(action["stderr"] + "\n")
    if action.get("spawn") == "holder":
        subprocess.Popen(["sleep", "300"])  # inherits stdout: holds the pipe open
    elif action.get("spawn") == "setsid":
        subprocess.Popen(["setsid", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif action.get("spawn") == "both":
        subprocess.Popen(["sleep", "300"])
        subprocess.Popen(["setsid", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    block = "x" * 1000
    for _ in range(int(action.get("stdout_mb", 0) * 1000)):
        emit({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": block}]}})
    if action.get("half_line"):
        sys.stdout.write('{"type":"assistant","message":{"content":[{"type":"text","text":"partial')
        sys.stdout.flush()
    time.sleep(float(action.get("sleep", 0)))
    if action.get("rate_limit") is not None:
        emit({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "rateLimitType": "five_hour",
              "resetsAt": int(time.time() + float(action["rate_limit"]))}})

    if session and os.path.isdir(session):
        ov_path = os.path.join(session, "_overview.md")
        if action.get("overview") or action.get("flow"):
            text = open(ov_path, encoding="utf-8", newline="").read()
            for key, value in (action.get("overview") or {}).items():
                text = set_field(text, key, value)
            if action.get("flow"):
                entry = f"- {ctx['Flow Log prefix']} {action['flow']}"
                text = re.sub(r"(## Flow Log\n(?:.*\n)*?)(\n## |\Z)", lambda m: m.group(1).rstrip("\n") + "\n" + entry + "\n" + m.group(2), text, count=1)
            open(ov_path, "w", encoding="utf-8", newline="").write(text)
        for name, content in (action.get("files") or {}).items():
            name = name.replace("{prefix}", ctx["Artifact prefix"])
            with open(os.path.join(session, name), "w") as f:
                f.write(content)
        if action.get("answer_qa"):
            qa = os.path.join(session, "_qa.md")
            open(qa, "w").write(open(qa).read().replace("_waiting_", "A (fake human)"))
        work = ctx["Working Dir"]
        if action.get("code") and work:
            for name, content in action["code"].items():
                with open(os.path.join(work, name), "w") as f:
                    f.write(content)
            if os.path.isdir(os.path.join(work, ".git")) or os.path.isfile(os.path.join(work, ".git")):
                subprocess.run(["git", "-C", work, "add", "-A"], check=True)
                subprocess.run(["git", "-C", work, "commit", "-qm", "fake change"], check=True)
        sig = action.get("signal")
        if sig is not None:
            with open(os.path.join(session, "_signal.json"), "w") as f:
                f.write(sig if isinstance(sig, str) else json.dumps(sig))

    result = {"type": "result", "subtype": "success", "is_error": False, "api_error_status": None,
              "duration_ms": 10, "num_turns": 2, "result": "done", "stop_reason": "end_turn",
              "session_id": "fake", "total_cost_usd": 0.0125,
              "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 50,
                        "cache_creation_input_tokens": 0}}
    if "result" in action and action["result"] is None:
        result = None
    elif action.get("result"):
        result.update(action["result"])
    if result is not None:
        emit(result)
    sys.exit(int(action.get("exit", 0)))


if __name__ == "__main__":
    main()
