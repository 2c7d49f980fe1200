"""Hostile file systems, with the real worker as a subprocess (the parent's commands in this process,
`Project.cli`): a full disk (a small tmpfs) and a read-only session folder. Each must end in one line,
a documented exit code, no traceback, no process left behind and no in-flight marker (mounting needs
root; skipped otherwise)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from inproc import InProc
from worker_helpers import history

BLOCK = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def sleepers(marker: str) -> list[int]:
    """Processes whose command line carries `marker` (the fake's own grandchildren)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def assert_clean_end(result: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode in codes, output
    assert "Traceback" not in output, output
    assert all(line.startswith("samocode: ") for line in result.stderr.splitlines()), result.stderr


def test_a_disk_that_fills_up_during_an_iteration_stops_cleanly(project, tmp_path):
    with tmpfs(tmp_path / "small", "1m") as small:
        sessions = small / "sessions"
        project.config.write_text(
            project.config.read_text().replace(f"SESSIONS={project.sessions}", f"SESSIONS={sessions}")
        )
        project.scenario(sequence=[{"stdout_mb": 3, **BLOCK}])
        result = project.worker("full", timeout=60)
        assert_clean_end(result, (4,))
        assert "No space left on device" in result.stderr
        folder = next(sessions.iterdir())
        assert not (folder / ".samocode.iteration.json").exists()
        assert (folder / "_overview.md").read_text().count("## Status") == 1


def _on(project, small: Path) -> Path:
    sessions = small / "sessions"
    project.config.write_text(
        project.config.read_text().replace(f"SESSIONS={project.sessions}", f"SESSIONS={sessions}")
    )
    return sessions


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def blocked_in_process(project, monkeypatch, name: str) -> None:
    """The session blocked by a worker run in this process (tests/inproc.py): only the state counts."""
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run(name).code == 4


def test_a_read_only_session_folder_stops_the_worker_and_every_command_cleanly(
    project, tmp_path, monkeypatch
):
    with tmpfs(tmp_path / "ro", "4m") as small:
        sessions = _on(project, small)
        blocked_in_process(project, monkeypatch, "ro")
        folder = next(sessions.iterdir())
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        calls = len(project.records())
        _remount(small, "ro")
        try:
            common = ("--config", str(project.config), "--session", "ro")
            for args in (
                ("unblock", *common, "--note", "go on"),
                ("answer", *common, "--accept-suggestions"),
                ("approve", *common),
                ("resume", *common, "--goal", "more"),
                ("status", *common),
            ):
                result = project.cli(*args)
                assert "Traceback" not in result.stdout + result.stderr, (args, result.stderr)
                if args[0] != "status":
                    assert result.returncode != 0 and result.stderr.startswith("samocode: "), (args, result)
            result = project.worker("ro")
            assert_clean_end(result, (4,))  # still blocked: the worker must not even try
            assert len(project.records()) == calls
        finally:
            _remount(small, "rw")
        after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        assert after == before  # nothing half-written


def test_a_session_folder_that_turns_read_only_before_an_iteration_stops_with_a_reason(
    project, tmp_path, monkeypatch
):
    with tmpfs(tmp_path / "ro2", "4m") as small:
        sessions = _on(project, small)
        blocked_in_process(project, monkeypatch, "ro2")
        project.scenario(by_phase={"investigation": BLOCK})
        unblocked = project.cli(
            "unblock", "--config", str(project.config), "--session", "ro2", "--note", "go"
        )
        assert unblocked.returncode == 0, unblocked.stderr
        calls = len(project.records())
        _remount(small, "ro")
        try:
            result = project.worker("ro2")
        finally:
            _remount(small, "rw")
        assert_clean_end(result, (2, 4))
        assert "Read-only file system" in result.stderr
        assert len(project.records()) == calls  # no child ran
        folder = next(sessions.iterdir())
        assert not (folder / ".samocode.iteration.json").exists()
        assert history(folder)[-1].get("event") != "interrupted"
