"""The real Claude Code and Codex CLIs, installed from npm into the repo's git-ignored `.tools/`.

Two version sets make the contract matrix: the pinned set (the low end of the tested range in
worker/tested.py) and the newest published set, resolved from the registry at test time. Each set is
installed as exactly those versions into its own prefix `.tools/npm-<claude>-<codex>` and reused: a
stamp file records a verified install, and an fcntl lock keeps parallel pytest processes from
installing at the same time. A missing npm is a skip (the machine cannot run these tests), an
unreachable registry skips the newest set only, and a failed install is an error (the machine should).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker import tested

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CODEX_PACKAGE = "@openai/codex"
_INSTALL_TIMEOUT = 900  # the claude package carries a ~250 MB native binary
_VIEW_TIMEOUT = 20  # `npm view` against an unreachable registry must not hold the suite up


class InstallError(RuntimeError):
    """npm was there but a version set could not be installed or does not run."""


@dataclass(frozen=True)
class VersionSet:
    """One claude + codex pair the real-CLI suite runs against, installed into its own prefix."""

    name: str  # "pinned" or "newest"
    claude: str
    codex: str

    @property
    def prefix(self) -> Path:
        return TOOLS / f"npm-{self.claude}-{self.codex}"

    @property
    def pins(self) -> dict[str, str]:
        return {CLAUDE_PACKAGE: self.claude, CODEX_PACKAGE: self.codex}

    @property
    def label(self) -> str:
        return f"{self.name}-claude{self.claude}-codex{self.codex}"

    def bin(self, name: str) -> Path:
        return self.prefix / "node_modules" / ".bin" / name


PINNED = VersionSet("pinned", tested.CLAUDE.low, tested.CODEX.low)
PINS = PINNED.pins


@dataclass(frozen=True)
class Skipped:
    """A version set that is not run on this machine, and why (printed in the test summary)."""

    name: str
    reason: str


@functools.cache
def newest() -> VersionSet | Skipped:
    """The newest published versions of both CLIs, asked of the registry once per test process."""
    if shutil.which("npm") is None:
        return Skipped("newest", "npm is not on PATH")
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(_registry_version, (CLAUDE_PACKAGE, CODEX_PACKAGE)))
    problems = [f for f in found if not _looks_like_version(f)]
    if problems:
        return Skipped("newest", f"registry unreachable ({problems[0]})")
    claude, codex = found
    if (claude, codex) == (PINNED.claude, PINNED.codex):
        return Skipped("newest", f"the newest published versions are the pinned ones ({claude}, {codex})")
    return VersionSet("newest", claude, codex)


def version_sets() -> list[VersionSet | Skipped]:
    """The sets the matrix runs, pinned first."""
    return [PINNED, newest()]


def _registry_version(package: str) -> str:
    cmd = ["npm", "view", "--fetch-retries=0", "--fetch-timeout=10000", package, "version"]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_VIEW_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm view {package}: {type(exc).__name__}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "complete log" not in line]
        return f"npm view {package} exited {done.returncode}: {(lines or ['no output'])[0][:200]}"
    return done.stdout.strip()


def _looks_like_version(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


def claude_path(version_set: VersionSet = PINNED) -> Path:
    """The real `claude` executable of a set, installing the set first if needed."""
    ensure_installed(version_set)
    return version_set.bin("claude")


def codex_path(version_set: VersionSet = PINNED) -> Path:
    """The real `codex` executable of a set, installing the set first if needed."""
    ensure_installed(version_set)
    return version_set.bin("codex")


def versions(version_set: VersionSet = PINNED) -> dict[str, str]:
    """What the installed CLIs report about themselves, e.g. {"claude": "2.1.197 (Claude Code)"}."""
    ensure_installed(version_set)
    return {name: version_output(version_set.bin(name)) for name in ("claude", "codex")}


@dataclass(frozen=True)
class CliRun:
    """One finished CLI run: exit code, its JSON-lines stdout parsed, stderr."""

    returncode: int
    events: list[dict]
    stdout: str
    stderr: str

    def of_type(self, kind: str, subtype: str | None = None) -> list[dict]:
        return [
            e
            for e in self.events
            if e.get("type") == kind and (subtype is None or e.get("subtype") == subtype)
        ]

    def last(self, kind: str) -> dict:
        found = self.of_type(kind)
        assert found, f"no {kind!r} event in:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-2000:]}"
        return found[-1]


def run_cli(
    argv: Sequence[str], prompt_file: Path, cwd: Path, env: Mapping[str, str], timeout: float = 60
) -> CliRun:
    """Run a CLI with the prompt file as stdin (what the worker does) and parse its JSON-lines stdout."""
    with prompt_file.open("rb") as stdin:
        done = subprocess.run(
            list(argv), stdin=stdin, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout
        )
    events = []
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a stray non-JSON line: keep it in stdout only
        if isinstance(event, dict):
            events.append(event)
    return CliRun(done.returncode, events, done.stdout, done.stderr)


def ensure_installed(version_set: VersionSet = PINNED) -> Path:
    """Install a set into its prefix unless a verified install of exactly these versions is there."""
    missing = [tool for tool in ("npm", "node") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"real-CLI tests need {' and '.join(missing)} on PATH to install the CLIs from npm")
    if _installed_ok(version_set):
        return version_set.prefix
    version_set.prefix.mkdir(parents=True, exist_ok=True)
    with (version_set.prefix / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not _installed_ok(version_set):  # another process may have finished while we waited
            _install(version_set)
    return version_set.prefix


def _stamp(version_set: VersionSet) -> Path:
    return version_set.prefix / ".samocode-pins.json"


def _installed_ok(version_set: VersionSet) -> bool:
    try:
        stamp = json.loads(_stamp(version_set).read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp == version_set.pins
        and all(_package_version(version_set, p) == v for p, v in version_set.pins.items())
        and all(version_set.bin(n).exists() for n in ("claude", "codex"))
    )


def _package_version(version_set: VersionSet, package: str) -> str | None:
    try:
        meta = json.loads((version_set.prefix / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("version")


def _install(version_set: VersionSet) -> None:
    prefix = version_set.prefix
    _stamp(version_set).unlink(missing_ok=True)
    specs = [f"{p}@{v}" for p, v in version_set.pins.items()]
    # Exact versions, and no engine check: claude after 2.1.197 declares node >= 22, but its native
    # binary does not use the node it is installed with.
    cmd = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--save-exact"]
    cmd += ["--engine-strict=false", *specs]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, cwd=prefix)
    if done.returncode != 0:
        raise InstallError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    if not _runs(version_set.bin("claude"), version_set.claude):
        # npm may skip the postinstall that puts the native binary (an optionalDependency) in place of
        # the bin stub; run it ourselves: it only links or copies a file that npm already installed.
        script = prefix / "node_modules" / CLAUDE_PACKAGE / "install.cjs"
        subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120, cwd=script.parent)
    for name, version in (("claude", version_set.claude), ("codex", version_set.codex)):
        if not _runs(version_set.bin(name), version):
            raise InstallError(
                f"{version_set.bin(name)} does not report version {version}: "
                f"{version_output(version_set.bin(name))!r}"
            )
    _stamp(version_set).write_text(json.dumps(version_set.pins))


def _runs(path: Path, version: str) -> bool:
    return version in version_output(path)


def version_output(path: Path) -> str:
    # A scratch HOME so that asking for a version reads and writes no real configuration.
    with tempfile.TemporaryDirectory() as home:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "CODEX_HOME": home,
            "DISABLE_AUTOUPDATER": "1",
        }
        try:
            done = subprocess.run(
                [str(path), "--version"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            return f"cannot run: {exc}"
    return (done.stdout.strip() or done.stderr.strip())[:500]
