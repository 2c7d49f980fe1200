"""worker/bootstrap.py: where the plugin's data folder is, and the venv made there once per dependency set.

The venv builder runs through a seam (`run`): these tests record the commands and fake their results,
so they prove the decisions (build, reuse, rebuild, lock, failure) without network. The real pip build
runs in tests/e2e/test_plugin_install.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from worker import bootstrap

REPO = Path(__file__).resolve().parents[1]
REQS = ["mistune>=3.0,<4", "requests>=2.31"]


def _plugin(root: Path, name: str = "samocode") -> Path:
    (root / ".claude-plugin").mkdir(parents=True)
    (root / ".claude-plugin" / "plugin.json").write_text(json.dumps({"name": name}))
    return root


def _install_local_marketplace(home: Path, source: Path, marketplace: str = "samocode") -> None:
    plugins = home / ".claude" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    known = {
        marketplace: {"source": {"source": "directory", "path": str(source)}, "installLocation": str(source)}
    }
    (plugins / "known_marketplaces.json").write_text(json.dumps(known))
    installed = {"version": 2, "plugins": {f"samocode@{marketplace}": [{"scope": "user"}]}}
    (plugins / "installed_plugins.json").write_text(json.dumps(installed))


# --- the data folder ---------------------------------------------------------------------------------


def test_data_dir_from_the_hook_variable_wins(tmp_path: Path) -> None:
    root = _plugin(tmp_path / "anywhere")
    env = {"HOME": str(tmp_path), "CLAUDE_PLUGIN_DATA": str(tmp_path / "given")}
    assert bootstrap.plugin_data_dir(root, env) == tmp_path / "given"


@pytest.mark.parametrize("kept", ["cache", "marketplaces"])
def test_data_dir_of_a_copy_in_the_clis_plugin_folders(tmp_path: Path, kept: str) -> None:
    plugins = tmp_path / "home" / ".claude" / "plugins"
    sub = ("my-mkt", "samocode", "0.2.0") if kept == "cache" else ("my-mkt",)
    root = _plugin(plugins.joinpath(kept, *sub))
    found = bootstrap.plugin_data_dir(root, {"HOME": str(tmp_path / "home")})
    assert found == plugins / "data" / "samocode-my-mkt"


def test_data_dir_of_a_local_marketplace_loaded_in_place(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _plugin(tmp_path / "checkout")
    _install_local_marketplace(home, root, "dev")
    found = bootstrap.plugin_data_dir(root, {"HOME": str(home)})
    assert found == home / ".claude" / "plugins" / "data" / "samocode-dev"


def test_data_dir_under_claude_config_dir(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    root = _plugin(config / "plugins" / "cache" / "samocode" / "samocode" / "0.1.0")
    env = {"HOME": str(tmp_path / "home"), "CLAUDE_CONFIG_DIR": str(config)}
    assert bootstrap.plugin_data_dir(root, env) == config / "plugins" / "data" / "samocode-samocode"


def test_a_known_marketplace_without_samocode_installed_is_no_plugin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _plugin(tmp_path / "checkout")
    _install_local_marketplace(home, root)
    (home / ".claude" / "plugins" / "installed_plugins.json").write_text('{"version": 2, "plugins": {}}')
    assert bootstrap.plugin_data_dir(root, {"HOME": str(home)}) is None


def test_a_plain_checkout_is_no_plugin(tmp_path: Path) -> None:
    root = _plugin(tmp_path / "checkout")
    assert bootstrap.plugin_data_dir(root, {"HOME": str(tmp_path / "home")}) is None
    assert bootstrap.plugin_data_dir(tmp_path / "no-manifest", {"HOME": str(tmp_path)}) is None


# --- the dependency stamp ------------------------------------------------------------------------------


def test_requirements_are_pyprojects_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")
    want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert bootstrap.requirements(REPO) == want


def test_stamp_changes_with_the_dependencies_and_python_only() -> None:
    stamp = bootstrap.stamp_of(REQS, (3, 11))
    assert bootstrap.stamp_of(list(reversed(REQS)), (3, 11)) == stamp
    assert bootstrap.stamp_of([*REQS, "rich"], (3, 11)) != stamp
    assert bootstrap.stamp_of(REQS, (3, 12)) != stamp


# --- making the venv -------------------------------------------------------------------------------------


class FakeBuilder:
    """Stands in for `python -m venv` and pip: records the commands, makes bin/python, may fail or dawdle."""

    def __init__(self, pip_exit: int = 0, pip_stderr: str = "", delay: float = 0.0):
        self.commands: list[list[str]] = []
        self.pip_exit, self.pip_stderr, self.delay = pip_exit, pip_stderr, delay

    def __call__(self, cmd):
        cmd = list(cmd)
        self.commands.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            python = Path(cmd[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        time.sleep(self.delay)
        return subprocess.CompletedProcess(cmd, self.pip_exit, "", self.pip_stderr)

    @property
    def builds(self) -> int:
        return sum(1 for c in self.commands if c[1:3] == ["-m", "venv"])


def test_first_use_builds_once_with_one_progress_line_then_reuses(tmp_path: Path) -> None:
    run, lines = FakeBuilder(), []
    python = bootstrap.ensure(tmp_path / "data", REQS, lines.append, run=run)

    assert python == tmp_path / "data" / "venv" / "bin" / "python"
    assert run.builds == 1
    pip = run.commands[1]
    # Built beside the final place and swapped in once complete.
    assert pip[0] == str(tmp_path / "data" / "venv.partial" / "bin" / "python")
    assert pip[1:4] == ["-m", "pip", "install"] and pip[-2:] == REQS
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["venv", "venv.lock"]
    assert "--no-cache-dir" in pip, "pip must leave no cache outside the data folder"
    assert len(lines) == 1 and "setting up the worker's Python environment" in lines[0]
    assert (tmp_path / "data" / "venv" / bootstrap.STAMP).read_text() == bootstrap.stamp_of(REQS)

    again = []
    assert bootstrap.ensure(tmp_path / "data", REQS, again.append, run=run) == python
    assert run.builds == 1 and again == []


def test_changed_dependencies_rebuild_from_scratch(tmp_path: Path) -> None:
    run = FakeBuilder()
    bootstrap.ensure(tmp_path / "data", REQS, print, run=run)
    leftover = tmp_path / "data" / "venv" / "lib" / "old-package"
    leftover.mkdir(parents=True)

    bootstrap.ensure(tmp_path / "data", [*REQS, "rich>=13"], print, run=run)

    assert run.builds == 2
    assert not leftover.exists(), "the old venv was not replaced"
    assert bootstrap.is_ready(tmp_path / "data" / "venv", bootstrap.stamp_of([*REQS, "rich>=13"]))


def test_a_failed_pip_leaves_no_stamp_and_says_what_failed(tmp_path: Path) -> None:
    run = FakeBuilder(
        pip_exit=1, pip_stderr="WARNING: retrying\nERROR: No matching distribution found for mistune\n"
    )
    with pytest.raises(bootstrap.SetupError) as failed:
        bootstrap.ensure(tmp_path / "data", REQS, print, run=run)
    assert "ERROR: No matching distribution found for mistune" in str(failed.value)
    assert not (tmp_path / "data" / "venv" / bootstrap.STAMP).exists()
    assert not (tmp_path / "data" / "venv.partial").exists()
    # The next use tries again instead of running a half-made venv.
    ok = FakeBuilder()
    bootstrap.ensure(tmp_path / "data", REQS, print, run=ok)
    assert ok.builds == 1


def test_two_first_uses_at_once_build_once(tmp_path: Path) -> None:
    run = FakeBuilder(delay=0.5)
    results: list[Path] = []
    lines: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(bootstrap.ensure(tmp_path / "d", REQS, lines.append, run=run))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 2 and results[0] == results[1]
    assert run.builds == 1
    assert sum("waiting for another samocode" in line for line in lines) == 1


def test_a_lock_held_too_long_is_a_clear_failure(tmp_path: Path) -> None:
    import fcntl

    data = tmp_path / "d"
    data.mkdir()
    with (data / "venv.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(bootstrap.SetupError, match="another samocode has been setting up"):
            bootstrap.ensure(data, REQS, lambda _l: None, run=FakeBuilder(), wait=0.3)


# --- the script the launcher runs ------------------------------------------------------------------------


def test_main_says_not_a_plugin_for_a_plain_checkout(tmp_path: Path) -> None:
    root = _plugin(tmp_path / "checkout")
    assert bootstrap.main(["--root", str(root)], {"HOME": str(tmp_path)}) == bootstrap.EXIT_NOT_A_PLUGIN


def test_main_failure_is_one_line_with_the_fix(tmp_path: Path) -> None:
    root = _plugin(tmp_path / "checkout")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no dependency list
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            str(REPO / "worker" / "bootstrap.py"),
            "--root",
            str(root),
            "--launcher",
            "/x/samocode",
        ],
        env={"HOME": str(tmp_path), "CLAUDE_PLUGIN_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == bootstrap.EXIT_FAILED
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "no [project] dependencies list" in lines[0]
    assert lines[0].endswith('run: "/x/samocode" setup')
    assert done.stdout == ""
