#!/usr/bin/env python3
"""samocode performance benchmark (not a test): run with `.venv/bin/python bench/bench.py`.

Measures, with a fake provider that prints a chosen volume of stream-json and signals at once:

- side by side with the upstream worker (`--upstream`, by default its MIT-licensed snapshot in
  ../shared/anchors/ beside the repository, extracted into a temporary folder and run only to be
  measured), on an empty session and on one with a 10,000-line Flow Log: the overhead per iteration
  amortized over a whole run (start-up and shut-down included), p50 and p90 of the gap between one
  child's end and the next one's start, start-up to the first child, shut-down after the last;
- `samocode status` latency on both sessions;
- worker peak RSS at 0/50/200 MB of child output per iteration, log throughput against the child
  printing alone, how late a printed line reaches the log, start-up to the first child spawn, and
  the size of `status` output and of the prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "bench" / "fake_fast.c"
FAKE = Path(tempfile.gettempdir()) / "samocode-bench-fake"
# The upstream worker (MIT), for measuring side by side only; found beside the repository by default.
ANCHOR = REPO.parent / "shared" / "anchors" / "samocode-db1f044.tar.gz"
sys.path.insert(0, str(REPO))

from worker import overview  # noqa: E402

ITERATIONS = 30  # children per run
REPEATS = 5  # runs per worker and session size, alternating
FLOW_LINES = 10_000
# About 140 bytes, as the Flow Log lines of a real session: 10,000 of them make a 1.4 MB overview.
FLOW_LINE = (
    "- [{i:03d} @ 01-01 00:00] step {i}: implemented the next plan item, tests pass, committed "
    "-> notes-{i}.md\n"
)


# Default settings throughout (the stall breaker on); MAIN_REPO is not a git repository, so no
# worktree and no `git status` per iteration: see the README for the git case.
class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "repo"  # not a git repository: no worktree work in the measurement
        self.repo.mkdir()
        (root / "wt").mkdir()
        self.sessions = root / "sessions"
        self.sessions.mkdir()
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
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        text = overview.render_new(
            name, "2026-01-01 00:00", str(self.repo), "bench", "", "[000 @ 01-01 00:00] start"
        )
        ov = overview.parse(text)
        text = overview.set_fields(ov, {"Phase": "implementation"})
        if flow_lines:
            extra = "".join(FLOW_LINE.format(i=i) for i in range(1, flow_lines))
            text = text.replace("- [000 @ 01-01 00:00] start\n", "- [000 @ 01-01 00:00] start\n" + extra)
        (folder / "_overview.md").write_text(text)
        return folder

    def run(
        self,
        name: str,
        iterations: int,
        env: dict | None = None,
        poll_rss: bool = False,
        main: Path = REPO / "main.py",
        expect: int = 8,
    ):
        """One worker run; `expect` 8 stops samocode with --max-iterations, anything else makes the
        last child signal blocked (BENCH_STOP), which ends both workers."""
        self.stamps.unlink(missing_ok=True)
        cmd = [sys.executable, str(main), "--config", str(self.config), "--session", name]
        extra = {"BENCH_SESSION": str(self.sessions / name)}
        if expect == 8:
            cmd += ["--max-iterations", str(iterations)]
        else:
            extra["BENCH_STOP"] = str(iterations)
        started = time.time()
        proc = subprocess.Popen(
            cmd,
            env={**self.env, **extra, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=main.parent,
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
        ended = time.time()
        if proc.returncode != expect:
            raise SystemExit(f"{main} exited {proc.returncode}, not {expect}: {err.decode()[-2000:]}")
        runs = [tuple(map(float, ln.split())) for ln in self.stamps.read_text().splitlines()]
        if len(runs) != iterations:
            raise SystemExit(f"{main}: {len(runs)} children, not {iterations}")
        return started, runs, peak / 1024, ended


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def one_run(b: Bench, main: Path, expect: int, flow_lines: int) -> dict[str, list[float]]:
    """One run of ITERATIONS children on a fresh copy of the session. Amortized overhead: the run's
    wall time minus its children's, per child."""
    b.session("cmp", flow_lines)
    started, runs, _, ended = b.run("cmp", ITERATIONS, main=main, expect=expect)
    children = sum(end - start for start, end, *_ in runs)
    return {
        "amortized": [(ended - started - children) / ITERATIONS],
        "startup": [runs[0][0] - started],
        "shutdown": [ended - runs[-1][1]],
        "gaps": [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)],
    }


def figures(samples: dict[str, list[float]]) -> dict[str, float]:
    ms = 1000
    gaps = samples["gaps"]
    return {
        "amortized_ms": round(statistics.median(samples["amortized"]) * ms, 2),
        "gap_p50_ms": round(percentile(gaps, 0.5) * ms, 2),
        "gap_p90_ms": round(percentile(gaps, 0.9) * ms, 2),
        "startup_ms": round(statistics.median(samples["startup"]) * ms, 1),
        "shutdown_ms": round(statistics.median(samples["shutdown"]) * ms, 1),
    }


def wall_ms(cmd: list[str], env: dict, runs: int = 9) -> float:
    """Median wall time of a short command."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[:3]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return round(statistics.median(times) * 1000, 1)


def status_latency(b: Bench, name: str) -> dict[str, float]:
    """`samocode status`: the whole process, and the report itself (reading and rendering, in
    process, imports done), each a median."""
    cmd = [sys.executable, str(REPO / "main.py"), "status", "--config", str(b.config), "--session", name]
    from worker import session, status, statusbuild
    from worker.config import load_project

    project = load_project(b.config)
    paths = session.find_existing(project.sessions, name)
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        status.render_text(statusbuild.report(project, paths, os.environ))
        times.append(time.perf_counter() - t0)
    return {"process_ms": wall_ms(cmd, b.env), "report_ms": round(statistics.median(times) * 1000, 2)}


def upstream_copy(source: Path, into: Path) -> Path:
    """The upstream worker extracted into a temporary folder (it writes logs/ beside its main.py)."""
    if source.is_dir():
        shutil.copytree(source, into / "upstream")
        return into / "upstream" / "main.py"
    with tarfile.open(source) as tar:
        tar.extractall(into / "upstream", filter="data")
    found = sorted((into / "upstream").glob("*/main.py")) or sorted((into / "upstream").glob("main.py"))
    if not found:
        raise SystemExit(f"{source}: no main.py inside")
    return found[0]


def compare(b: Bench, upstream: Path | None) -> dict[str, object]:
    """samocode and the upstream worker side by side, in the same run, on the same sessions; their
    runs alternate, so that the machine's load drifts over both alike."""
    workers = {"samocode": (REPO / "main.py", 4)} | ({"upstream": (upstream, 0)} if upstream else {})
    sizes = {"empty": 0, "flow_10k": FLOW_LINES}
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    for _ in range(REPEATS):
        for label, lines in sizes.items():
            for who, (main, expect) in workers.items():
                run = one_run(b, main, expect, lines)
                into = samples.setdefault((who, label), {})
                for key, values in run.items():
                    into.setdefault(key, []).extend(values)
    table: dict[str, object] = {}
    for label in sizes:
        ours = figures(samples[("samocode", label)])
        theirs = figures(samples[("upstream", label)]) if upstream else None
        table[label] = {
            key: {
                "samocode": value,
                "upstream": theirs[key] if theirs else None,
                "ratio": round(value / theirs[key], 2) if theirs and theirs[key] else None,
            }
            for key, value in ours.items()
        }
    for key in table["empty"]:
        for who in workers:
            base, big = table["empty"][key][who], table["flow_10k"][key][who]
            table["flow_10k"][key][f"{who}_vs_empty"] = round(big / base, 2) if base else None
    b.session("status-empty")
    b.session("status-10k", FLOW_LINES)
    table["status"] = {
        "empty": status_latency(b, "status-empty"),
        "flow_10k": status_latency(b, "status-10k"),
        "python_itself_ms": wall_ms([sys.executable, "-c", "pass"], b.env),
    }
    table["overview_bytes_10k"] = (b.sessions / "status-10k" / "_overview.md").stat().st_size
    return table


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
    _, runs, _, _ = b.run("git", n + 1)
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
    parser.add_argument(
        "--upstream",
        type=Path,
        default=ANCHOR,
        help="the upstream worker to compare with: its tarball or an extracted folder "
        "(default: ../shared/anchors/ beside the repository)",
    )
    parser.add_argument("--only-compare", action="store_true", help="the side-by-side figures only")
    args = parser.parse_args()
    big = 20 if args.quick else 200
    build_fake()
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
        "runs": f"{REPEATS} runs x {ITERATIONS} children per worker and session size",
    }
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp))
        upstream = upstream_copy(args.upstream, Path(tmp)) if args.upstream.exists() else None
        if upstream is None:
            print(f"no upstream worker at {args.upstream}: samocode figures only", file=sys.stderr)
        results["compare"] = compare(b, upstream)
        if args.only_compare:
            print(json.dumps(results, indent=2))
            return
        (Path(tmp) / "g").mkdir()
        results["overhead_ms_median_git_repo"] = round(overhead_git(Path(tmp) / "g"), 2)

        rss = {}
        for mb in (0, 50 if not args.quick else 5, big):
            name = f"rss{mb}"
            b.session(name)
            _, runs, peak, _ = b.run(name, 2, env={"BENCH_MB": str(mb)}, poll_rss=True)
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
            started, runs, _, _ = b.run("startup", 1)
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
                "status-empty",
            ],
            env=b.env,
            capture_output=True,
        )
        results["status_bytes"] = (
            len(status.stdout) if status.returncode == 0 else f"status failed: {status.returncode}"
        )
        prompts = sorted((b.sessions / "startup" / "_logs").glob("*.prompt.md"))
        results["prompt_bytes"] = prompts[-1].stat().st_size if prompts else None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
