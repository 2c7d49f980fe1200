"""The real Claude Code and Codex CLIs, installed from npm into the repo's git-ignored `.tools/npm`.

Installed once and reused: a stamp file records the pinned versions that were installed and verified,
and an fcntl lock keeps parallel pytest processes from installing at the same time. A missing npm is
a skip (the machine cannot run these tests); a failed install is an error (the machine should).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".tools" / "npm"
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CODEX_PACKAGE = "@openai/codex"
PINS = {CLAUDE_PACKAGE: "2.1.197", CODEX_PACKAGE: "0.169.0"}
_STAMP = PREFIX / ".samocode-pins.json"
_LOCK = PREFIX / ".install.lock"
_INSTALL_TIMEOUT = 900  # the claude package carries a ~250 MB native binary


class InstallError(RuntimeError):
    """npm was there but the pinned CLIs could not be installed or do not run."""


def claude_path() -> Path:
    """The real `claude` executable, installing it first if needed (pytest skip if npm is missing)."""
    ensure_installed()
    return _bin("claude")


def codex_path() -> Path:
    """The real `codex` executable, installing it first if needed (pytest skip if npm is missing)."""
    ensure_installed()
    return _bin("codex")


def versions() -> dict[str, str]:
    """The versions the installed CLIs report about themselves, e.g. {"claude": "2.1.197 (Claude Code)"}."""
    ensure_installed()
    return {name: _version_output(_bin(name)) for name in ("claude", "codex")}


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


def ensure_installed() -> Path:
    """Install the pinned CLIs into PREFIX unless a verified install of exactly these pins is there."""
    missing = [tool for tool in ("npm", "node") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"real-CLI tests need {' and '.join(missing)} on PATH to install the CLIs from npm")
    if _installed_ok():
        return PREFIX
    PREFIX.mkdir(parents=True, exist_ok=True)
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not _installed_ok():  # another process may have finished while we waited
            _install()
    return PREFIX


def _bin(name: str) -> Path:
    return PREFIX / "node_modules" / ".bin" / name


def _installed_ok() -> bool:
    try:
        stamp = json.loads(_STAMP.read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp == PINS
        and all(_package_version(p) == v for p, v in PINS.items())
        and all(_bin(n).exists() for n in ("claude", "codex"))
    )


def _package_version(package: str) -> str | None:
    try:
        meta = json.loads((PREFIX / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("version")


def _install() -> None:
    _STAMP.unlink(missing_ok=True)
    specs = [f"{p}@{v}" for p, v in PINS.items()]
    cmd = ["npm", "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "--save-exact", *specs]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, cwd=PREFIX)
    if done.returncode != 0:
        raise InstallError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    if not _runs(_bin("claude"), PINS[CLAUDE_PACKAGE]):
        # npm may skip the postinstall that puts the native binary (an optionalDependency) in place of
        # the bin stub; run it ourselves: it only links or copies a file that npm already installed.
        script = PREFIX / "node_modules" / CLAUDE_PACKAGE / "install.cjs"
        subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120, cwd=script.parent)
    for name, package in (("claude", CLAUDE_PACKAGE), ("codex", CODEX_PACKAGE)):
        if not _runs(_bin(name), PINS[package]):
            raise InstallError(
                f"{_bin(name)} does not report version {PINS[package]}: {_version_output(_bin(name))!r}"
            )
    _STAMP.write_text(json.dumps(PINS))


def _runs(path: Path, version: str) -> bool:
    return version in _version_output(path)


def _version_output(path: Path) -> str:
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
