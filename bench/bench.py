#!/usr/bin/env python3
"""samocode performance benchmark (not a test): run with `.venv/bin/python bench/bench.py`.

Measures, with a fake provider that prints a chosen volume of stream-json and signals at once:
orchestration overhead per iteration (the gap between one child's end and the next child's start),
the same with a 10,000-line Flow Log, worker peak RSS at 0/50/200 MB of child output per iteration,
log throughput against the child printing alone, how late a printed line reaches the log, start-up to
first child spawn, and the size of `status` output and of the prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "bench" / "fake_fast.c"
FAKE = Path(tempfile.gettempdir()) / "samocode-bench-fake"
sys.path.insert(0, str(REPO))

from worker import overview  # noqa: E402


# Default settings throughout (the stall breaker on); MAIN_REPO is not a git repository, so no
# worktree and no `git status` per iteration: see the README for the git case.
class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "repo"  # not a git repository: no worktree work in the measurement
        self.repo.mkdir()
        self.sessions = root / "sessions"
        self.config = root / ".samocode"
        self.config.write_text(f"MAIN_REPO={self.repo}\nWORKTREES={root / 'wt'}\nSESSIONS={self.sessions}\n")
        self.stamps = root / "stamps.txt"
        home = root / "home"
        home.mkdir()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "SAMOCODE_ENV_FILE": str(root / "none.env"),
            "CLAUDE_PATH": str(FAKE),
            "BENCH_STAMPS": str(self.stamps),
        }

    def session(self, name: str, flow_lines: int = 0) -> Path:
        folder = self.sessions / name
        folder.mkdir(parents=True)
        text = overview.render_new(
            name, "2026-01-01 00:00", str(self.repo), "bench", "", "[000 @ 01-01 00:00] start"
        )
        ov = overview.parse(text)
        text = overview.set_fields(ov, {"Phase": "implementation"})
        if flow_lines:
            extra = "".join(f"- [{i:03d} @ 01-01 00:00] step {i} -> notes.md\n" for i in range(flow_lines))
            text = text.replace("- [000 @ 01-01 00:00] start\n", "- [000 @ 01-01 00:00] start\n" + extra)
        (folder / "_overview.md").write_text(text)
        return folder

    def run(self, name: str, iterations: int, env: dict | None = None, poll_rss: bool = False):
        self.stamps.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(REPO / "main.py"),
            "--config",
            str(self.config),
            "--session",
            name,
            "--max-iterations",
            str(iterations),
        ]
        started = time.time()
        proc = subprocess.Popen(
            cmd,
            env={**self.env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        peak = 0
        while poll_rss and proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 8:
            raise SystemExit(f"worker exited {proc.returncode}: {err.decode()[-2000:]}")
        runs = [tuple(map(float, ln.split())) for ln in self.stamps.read_text().splitlines()]
        return started, runs, peak / 1024


def overhead_git(root: Path, n: int = 50) -> float:
    """The same with MAIN_REPO a git repository of 200 files: a worktree, and one `git status` per
    iteration for the stall breaker."""
    b = Bench(root)
    env = {
        **b.env,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    for i in range(200):
        (b.repo / f"f{i}.txt").write_text(f"{i}\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(b.repo), *cmd], check=True, env=env, capture_output=True)
    b.env = env
    folder = b.session("git")
    subprocess.run(
        ["git", "-C", str(b.repo), "worktree", "add", "-q", "-b", "git", str(root / "wt" / "git")],
        check=True,
        env=env,
        capture_output=True,
    )
    assert folder.exists()
    _, runs, _ = b.run("git", n + 1)
    gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
    return statistics.median(gaps) * 1000


def overhead(b: Bench, name: str, flow_lines: int, n: int = 50) -> float:
    b.session(name, flow_lines)
    _, runs, _ = b.run(name, n + 1)
    gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
    return statistics.median(gaps) * 1000


def print_rate(stamps: Path) -> float:
    start, _end, size, printed = map(float, stamps.read_text().split())
    return size / (1024 * 1024) / (printed - start)


def throughput(b: Bench, mb: float) -> dict[str, float]:
    """A child that serialises each event (like the real CLIs), alone into /dev/null and under the worker."""
    launcher = b.root / "fake-print"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'bench' / 'fake_print.py'}\n")
    launcher.chmod(0o755)
    stamps = b.root / "alone.txt"
    env = {**os.environ, "BENCH_MB": str(mb), "BENCH_STAMPS": str(stamps)}
    subprocess.run([str(launcher)], input=b"", stdout=subprocess.DEVNULL, env=env, check=True)
    alone = print_rate(stamps)
    b.session("rate")
    b.env["CLAUDE_PATH"] = str(launcher)
    try:
        b.run("rate", 1, env={"BENCH_MB": str(mb)})
    finally:
        b.env["CLAUDE_PATH"] = str(FAKE)
    under = print_rate(b.stamps)
    # The C child shows the worker's own ceiling against `cat > file` on the same disk.
    cat_env = {**os.environ, "BENCH_MB": str(mb), "BENCH_STAMPS": os.devnull}
    t0 = time.perf_counter()
    with open(b.root / "cat.out", "wb") as sink:
        subprocess.run(
            f"{FAKE} | cat",
            shell=True,
            input=f"x\n- Session Dir: {b.root}\n".encode(),
            stdout=sink,
            env=cat_env,
            check=True,
        )
    cat_rate = mb / (time.perf_counter() - t0)
    b.session("raw")
    b.run("raw", 1, env={"BENCH_MB": str(mb)})
    raw = print_rate(b.stamps)
    return {
        "child_alone_mib_s": round(alone),
        "under_worker_mib_s": round(under),
        "ratio": round(under / alone, 2),
        "c_child_under_worker_mib_s": round(raw),
        "c_child_piped_to_cat_to_file_mib_s": round(cat_rate),
    }


def build_fake() -> None:
    """The child is a C program: a Python child's own start-up would drown the worker's overhead."""
    subprocess.run(["cc", "-O2", "-o", str(FAKE), str(SOURCE)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller volumes, for a smoke run")
    args = parser.parse_args()
    big = 20 if args.quick else 200
    build_fake()
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp))
        results["overhead_ms_median"] = round(overhead(b, "plain", 0), 2)
        results["overhead_ms_median_10k_flow_log"] = round(overhead(b, "flow10k", 10_000), 2)
        (Path(tmp) / "g").mkdir()
        results["overhead_ms_median_git_repo"] = round(overhead_git(Path(tmp) / "g"), 2)

        rss = {}
        for mb in (0, 50 if not args.quick else 5, big):
            name = f"rss{mb}"
            b.session(name)
            _, runs, peak = b.run(name, 2, env={"BENCH_MB": str(mb)}, poll_rss=True)
            rss[f"{mb}MB"] = round(peak, 1)
        results["peak_rss_mib"] = rss

        results["log_throughput"] = throughput(b, big)

        b.session("late")
        delays = []
        for _ in range(3):
            b.stamps.unlink(missing_ok=True)
            cmd = [
                sys.executable,
                str(REPO / "main.py"),
                "--config",
                str(b.config),
                "--session",
                "late",
                "--max-iterations",
                "1",
            ]
            proc = subprocess.Popen(
                cmd,
                env={**b.env, "BENCH_LATENCY": "1.0"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            seen = None
            deadline = time.time() + 10
            known = (
                set((b.sessions / "late" / "_logs").glob("*.jsonl"))
                if (b.sessions / "late" / "_logs").exists()
                else set()
            )
            while time.time() < deadline and seen is None:
                logs = (
                    set((b.sessions / "late" / "_logs").glob("*.jsonl")) - known
                    if (b.sessions / "late" / "_logs").exists()
                    else set()
                )
                for log in logs:
                    for line in log.read_bytes().splitlines():
                        if b'"probe"' in line:
                            seen = time.time() - json.loads(line)["t"]
                time.sleep(0.002)
            proc.wait(timeout=30)
            delays.append(seen if seen is not None else float("inf"))
        results["line_to_log_s_max"] = round(max(delays), 4)

        b.session("startup")
        starts = []
        for _ in range(7):
            started, runs, _ = b.run("startup", 1)
            starts.append(runs[0][0] - started)
        results["startup_to_first_spawn_ms_median"] = round(statistics.median(starts) * 1000, 1)

        status = subprocess.run(
            [
                sys.executable,
                str(REPO / "main.py"),
                "status",
                "--config",
                str(b.config),
                "--session",
                "plain",
            ],
            env=b.env,
            capture_output=True,
        )
        results["status_bytes"] = (
            len(status.stdout) if status.returncode == 0 else f"status failed: {status.returncode}"
        )
        prompts = sorted((b.sessions / "plain" / "_logs").glob("*.prompt.md"))
        results["prompt_bytes"] = prompts[-1].stat().st_size if prompts else None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
