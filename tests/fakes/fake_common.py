"""What the fake CLIs share: the scenario file, the record file, and the scripted session action.

Both fakes (fake_claude.py, fake_codex.py) are run as scripts, so this module is imported from
their own folder. See fake_claude.py for the scenario format and the action keys.
"""

import json
import os
import re
import sys
import time

# subprocess and shutil are imported where a scenario asks for them: every fake child pays for what
# it imports at start, and most children need neither.


def context(prompt):
    found = {}
    for key in ("Session Dir", "Working Dir", "Phase", "Flow Log prefix", "Artifact prefix"):
        m = re.search(rf"^- {key}: (.*)$", prompt, re.MULTILINE)
        found[key] = m.group(1).strip() if m else ""
    return found


def set_field(text, key, value):
    return re.sub(rf"^{re.escape(key)}:.*$", f"{key}: {value}", text, count=1, flags=re.MULTILINE)


def next_action(phase):
    """Invocation k takes sequence[k] while it lasts, then by_phase[phase]."""
    with open(os.environ["FAKE_SCENARIO"]) as f:
        scenario = json.load(f)
    counter = os.environ["FAKE_SCENARIO"] + ".count"
    try:
        with open(counter) as f:
            n = int(f.read())
    except FileNotFoundError:
        n = 0
    with open(counter, "w") as f:
        f.write(str(n + 1))
    seq = scenario.get("sequence", [])
    return seq[n] if n < len(seq) else scenario.get("by_phase", {}).get(phase, {})


def record(entry, env_prefixes):
    if os.environ.get("FAKE_RECORD"):
        keep = {k: v for k, v in os.environ.items() if k.startswith(env_prefixes)}
        with open(os.environ["FAKE_RECORD"], "a") as f:
            f.write(json.dumps({**entry, "env": keep}) + "\n")


def in_own_cgroup(limit: float = 5.0) -> None:
    """Wait (bounded) until the worker has moved this child into its iteration's cgroup. A real CLI
    starts for 100s of ms before it can run a tool; this fake would fork its daemon within a few ms
    of its exec, while the worker's move can still be waiting on the kernel (about 12 ms on a cgroup
    v1 kernel, longer under load)."""

    def moved():
        with open("/proc/self/cgroup") as handle:
            return "/samocode-" in handle.read()

    wait_until(moved, limit, 0.005)


def wait_until(done, limit, step):
    """Poll `done` every `step` seconds until it is true or `limit` seconds have passed."""
    end = time.monotonic() + limit
    while not done() and time.monotonic() < end:
        time.sleep(step)


def side_effects(action):
    """stderr text, stray descendants: what happens before the child's work."""
    if action.get("stderr"):
        sys.stderr.write(action["stderr"] + "\n")
        sys.stderr.flush()
    if action.get("spawn"):
        import subprocess
    if action.get("spawn") == "holder":
        subprocess.Popen(["sleep", "300"])  # inherits stdout: holds the pipe open
    elif action.get("spawn") == "setsid":
        subprocess.Popen(["setsid", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif action.get("spawn") == "daemon":  # its own session and an empty environment: no tag left
        in_own_cgroup()
        subprocess.Popen(
            ["setsid", "env", "-i", "sleep", "301"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    elif action.get("spawn") == "both":
        subprocess.Popen(["sleep", "300"])
        subprocess.Popen(["setsid", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stall(action, partial_line):
    """half_line: print the start of a line and never end it; close_stdout: close stdout (later
    output goes nowhere) and work on; sleep: take that long; until: take until that file exists
    (60 s at most): the test makes it once it has seen what it needed the child running for."""
    if action.get("half_line"):
        sys.stdout.write(partial_line)
        sys.stdout.flush()
    if action.get("close_stdout"):
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    time.sleep(float(action.get("sleep", 0)))
    if action.get("until"):
        wait_until(lambda: os.path.exists(action["until"]), 60, 0.02)


def perform(action, ctx):
    """The scripted work: overview edits, flow entry, artifacts, _qa.md answers, code, _signal.json.
    Returns short descriptions of what was done (a fake CLI may show them as tool calls)."""
    done = []
    session = ctx["Session Dir"]
    if not (session and os.path.isdir(session)):
        return done
    ov_path = os.path.join(session, "_overview.md")
    if action.get("overview") or action.get("flow"):
        with open(ov_path, encoding="utf-8", newline="") as f:
            text = f.read()
        for key, value in (action.get("overview") or {}).items():
            text = set_field(text, key, value)
        if action.get("flow"):
            entry = f"- {ctx['Flow Log prefix']} {action['flow']}"
            text = re.sub(
                r"(## Flow Log\n(?:.*\n)*?)(\n## |\Z)",
                lambda m: m.group(1).rstrip("\n") + "\n" + entry + "\n" + m.group(2),
                text,
                count=1,
            )
        with open(ov_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        done.append("edit _overview.md")
    for name, content in (action.get("files") or {}).items():
        name = name.replace("{prefix}", ctx["Artifact prefix"])
        with open(os.path.join(session, name), "w") as f:
            f.write(content)
        done.append(f"write {name}")
    if action.get("answer_qa"):
        qa = os.path.join(session, "_qa.md")
        with open(qa) as f:
            answered = f.read().replace("_waiting_", "A (fake human)")
        with open(qa, "w") as f:
            f.write(answered)
        done.append("answer _qa.md")
    work = ctx["Working Dir"]
    if action.get("code") and work:
        for name, content in action["code"].items():
            with open(os.path.join(work, name), "w") as f:
                f.write(content)
        if os.path.isdir(os.path.join(work, ".git")) or os.path.isfile(os.path.join(work, ".git")):
            import subprocess

            subprocess.run(["git", "-C", work, "add", "-A"], check=True)
            subprocess.run(["git", "-C", work, "commit", "-qm", "fake change"], check=True)
        done.append("commit code")
    if action.get("tear_overview"):  # killed mid-write: only the start of the file is there
        with open(ov_path, "rb") as f:
            data = f.read()
        with open(ov_path, "wb") as f:
            f.write(data[: len(data) * 2 // 5])
        done.append("tear _overview.md")
    if action.get("remove_worktree") and work:  # the child (or its user) deletes the tree it works in
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        done.append("remove the working tree")
    sig = action.get("signal")
    if sig is not None:
        with open(os.path.join(session, "_signal.json"), "w") as f:
            f.write(sig if isinstance(sig, str) else json.dumps(sig))
        done.append("write _signal.json")
    return done
