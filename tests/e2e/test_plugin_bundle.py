"""The plugin bundle against the real Claude Code CLI, in a scratch HOME, without network.

Proves: `claude plugin validate` accepts the repository (marketplace and plugin manifests); after
install.sh the CLI's `system/init` event lists the samocode-run skill, the /samocode-implement command
and the phase agents; the marketplace route (`plugin marketplace add` + `plugin install`) lists them
with the `samocode:` prefix, and install.sh then refuses a second install; and `${CLAUDE_SKILL_DIR}` in
the skill is replaced by a folder whose launcher really runs the worker, in both routes.

The marketplace route installs a copy of the checkout: the CLI copies the whole source folder into
its plugin cache, and the real checkout holds `.tools/npm` (the CLIs, hundreds of MB) and `.venv`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import frontmatter
import pytest

from .env import claude_env
from .model_server import ModelServer, Reply

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUNDLE_FILES = ("install.sh", "pyproject.toml", "README.md", "AGENTS.md", "workflow.md", "main.py")
BUNDLE_DIRS = ("worker", "skills", "commands", "agents", ".claude-plugin")


def closed_port() -> int:
    """A loopback port nothing listens on: the CLI's API call fails at once, after the init event."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the bundle and the worker (what a clone of the repository holds)."""
    copy = tmp_path / "samocode"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUNDLE_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, copy / name)
    for name in BUNDLE_DIRS:
        shutil.copytree(REPO / name, copy / name, symlinks=True, ignore=ignore)
    return copy


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"  # the CLI's working directory: no project settings of the real repo
    path.mkdir()
    return path


def cli_env(home: Path, port: int | None = None, **extra: str) -> dict[str, str]:
    env = claude_env(home, port or closed_port())
    env.update(extra)
    return env


def install_sh(checkout: Path, home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8", **extra}
    return run([str(checkout / "install.sh"), *args], env, cwd=home, timeout=60)


def init_event(claude: Path, env: dict[str, str], cwd: Path) -> dict:
    done = run([str(claude), "-p", "--output-format", "stream-json", "--verbose", "hi"], env, cwd)
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "system" and event.get("subtype") == "init":
            return event
    raise AssertionError(
        f"no system/init event (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )


def agent_names(checkout: Path) -> set[str]:
    return {frontmatter.load(str(p))["name"] for p in (checkout / "agents").glob("*.md")}


def validate(claude: Path, target: Path, cwd: Path, env: dict[str, str], *flags: str) -> tuple[int, str]:
    done = run([str(claude), "plugin", "validate", *flags, str(target)], env, cwd, timeout=60)
    return done.returncode, done.stdout + done.stderr


def marketplace_install(claude: Path, checkout: Path, env: dict[str, str], cwd: Path) -> None:
    added = run([str(claude), "plugin", "marketplace", "add", str(checkout)], env, cwd)
    assert added.returncode == 0, added.stdout + added.stderr
    installed = run([str(claude), "plugin", "install", "samocode@samocode"], env, cwd)
    assert installed.returncode == 0, installed.stdout + installed.stderr


# --- validate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["repository", "plugin.json"])
def test_validate_strict_passes_with_no_warning(
    claude_bin: Path, home: Path, work: Path, target: str
) -> None:
    """Both targets (the marketplace, and the plugin with its components), icon and directory checks
    included. The developers' guide is AGENTS.md: a CLAUDE.md at the plugin root makes the CLI warn
    that it is not loaded as project context, which fails --strict."""
    path = REPO if target == "repository" else REPO / ".claude-plugin" / "plugin.json"
    code, out = validate(claude_bin, path, work, cli_env(home), "--strict")
    warnings = [line.strip() for line in out.splitlines() if "⚠" in line]
    assert "✘ Found" not in out and "ICON_MISSING" not in out, out
    assert not (REPO / "CLAUDE.md").exists()
    assert code == 0 and warnings == [], out
    assert "Validation passed" in out


# --- the symlink route (install.sh) -------------------------------------------------------------------


@pytest.mark.parametrize("via_config_dir", [False, True], ids=["home", "CLAUDE_CONFIG_DIR"])
def test_install_sh_makes_the_cli_list_skill_command_and_agents(
    claude_bin: Path, checkout: Path, home: Path, work: Path, tmp_path: Path, via_config_dir: bool
) -> None:
    extra = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config")} if via_config_dir else {}
    done = install_sh(checkout, home, "--no-venv", **extra)
    assert done.returncode == 0, done.stderr

    event = init_event(claude_bin, cli_env(home, **extra), work)

    assert "samocode-run" in event["skills"]
    assert {"samocode-run", "samocode-implement"} <= set(event["slash_commands"])
    assert agent_names(checkout) <= set(event["agents"])
    assert not [p for p in event.get("plugins", []) if p.get("name") == "samocode"]


# --- the plugin route (marketplace) -------------------------------------------------------------------


def test_marketplace_install_lists_prefixed_names_and_install_sh_refuses(
    claude_bin: Path, checkout: Path, home: Path, work: Path
) -> None:
    env = cli_env(home)
    marketplace_install(claude_bin, checkout, env, work)

    event = init_event(claude_bin, env, work)
    assert "samocode:samocode-run" in event["skills"]
    assert {"samocode:samocode-run", "samocode:samocode-implement"} <= set(event["slash_commands"])
    assert {f"samocode:{name}" for name in agent_names(checkout)} <= set(event["agents"])
    assert {"name": "samocode", "source": "samocode@samocode"}.items() <= next(
        p for p in event["plugins"] if p["name"] == "samocode"
    ).items()

    refused = install_sh(checkout, home, "--no-venv")
    assert refused.returncode != 0
    assert "already installed as a Claude Code plugin" in refused.stderr
    assert "Pick one route" in refused.stderr
    assert not (home / ".claude" / "skills").exists() and not (home / ".claude" / "commands").exists()


# --- ${CLAUDE_SKILL_DIR} is expanded, and the launcher there runs the worker -------------------------------


def _expanded_prompt(claude: Path, home: Path, work: Path, prompt: str) -> str:
    """The first model request's user text after the CLI expanded a slash command or skill."""
    with ModelServer([Reply("ok")]) as server:
        done = run([str(claude), "-p", prompt, "--output-format", "json"], cli_env(home, server.port), work)
        assert done.returncode == 0, done.stdout + done.stderr
        requests = server.main_requests()
        assert requests, server.describe()
        return requests[0].user_text()


def _launcher_in(text: str) -> Path:
    match = re.search(r'"([^"\n]+/scripts/samocode)" watch --config', text)
    assert match, text[:3000]
    assert "${CLAUDE_SKILL_DIR}" not in text
    return Path(match.group(1))


def _launcher_runs_the_worker(launcher: Path, tmp_path: Path) -> None:
    # The copy has no .venv: give the launcher a python3 that has the worker's packages.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    env["SAMOCODE_LAUNCHER"] = "1"  # skip any `samocode` on PATH: this checkout's worker must run
    done = run([str(launcher), "--help"], env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: samocode" in done.stdout


def test_skill_dir_is_expanded_in_the_symlinked_skill(
    claude_bin: Path, checkout: Path, home: Path, work: Path, tmp_path: Path
) -> None:
    assert install_sh(checkout, home, "--no-venv").returncode == 0
    text = _expanded_prompt(claude_bin, home, work, "/samocode-run demo-session")

    launcher = _launcher_in(text)
    # The CLI gives the path through the link; the launcher resolves it to the checkout.
    assert launcher == home / ".claude" / "skills" / "samocode-run" / "scripts" / "samocode"
    assert launcher.resolve() == (checkout / "skills" / "samocode-run" / "scripts" / "samocode").resolve()
    assert "Arguments: demo-session" in text
    _launcher_runs_the_worker(launcher, tmp_path)

    command = _expanded_prompt(claude_bin, home, work, "/samocode-implement demo-session")
    assert "implement the approved plan of this session: demo-session" in command


def test_skill_dir_is_expanded_in_the_plugin_skill(
    claude_bin: Path, checkout: Path, home: Path, work: Path, tmp_path: Path
) -> None:
    marketplace_install(claude_bin, checkout, cli_env(home), work)
    text = _expanded_prompt(claude_bin, home, work, "/samocode:samocode-run demo-session")

    launcher = _launcher_in(text)
    # A local directory marketplace is loaded in place: the launcher is the source folder's, not the cache's.
    assert launcher.resolve() == (checkout / "skills" / "samocode-run" / "scripts" / "samocode").resolve()
    _launcher_runs_the_worker(launcher, tmp_path)
