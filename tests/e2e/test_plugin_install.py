"""From the marketplace to a running worker in one step, with the real Claude Code CLI and a real pip.

A fresh HOME adds a copy of the checkout as a marketplace and installs the plugin; the launcher is the
path the CLI itself puts into the expanded samocode-run skill (`${CLAUDE_SKILL_DIR}`); it is then run
with the environment the Bash tool gives it (no CLAUDE_PLUGIN_DATA, measured). Nothing else is done
in between: the first command makes the worker's venv in the plugin's data folder from the package
index this machine reaches (PyPI, or what PIP_INDEX_URL names), a new plugin version reuses it, changed
dependencies rebuild it, and uninstalling leaves nothing of samocode's beyond the CLI's own cache.
The tests whose point is not the first build start from a venv made once per session by the same
bootstrap and copied into the data folder (`made_env`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .env import claude_env
from .model_server import ModelServer, Reply

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "fakes" / "fake_claude.py"
BUNDLE_FILES = (
    "install.sh",
    "pyproject.toml",
    "README.md",
    "AGENTS.md",
    "workflow.md",
    "main.py",
)
BUNDLE_DIRS = ("worker", "skills", "commands", "agents", "hooks", ".claude-plugin")
PROGRESS = "samocode: setting up the worker's Python environment in "
# pip's own settings (index, certificates, proxies): the venv is built from the registry this machine reaches.
_PIP = re.compile(r"^(PIP_\w+|(HTTPS?|NO|ALL)_PROXY|SSL_CERT_\w+|REQUESTS_CA_BUNDLE)$", re.IGNORECASE)


def run(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Installed:
    claude: Path
    checkout: Path
    home: Path
    work: Path
    launcher: Path

    @property
    def data(self) -> Path:
        return self.home / ".claude" / "plugins" / "data" / "samocode-samocode"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = run([self.claude, *args], claude_env(self.home, 9), self.work)
        assert done.returncode == 0, f"claude {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def bash_tool_env(self, **extra: str) -> dict[str, str]:
        """What a skill's Bash command gets: the user's PATH and HOME, no CLAUDE_PLUGIN_* (measured)."""
        path = os.pathsep.join(
            p
            for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not (Path(p) / "samocode").exists()
        )
        env = {k: v for k, v in os.environ.items() if _PIP.match(k)}
        env.update(PATH=path, HOME=str(self.home), LANG="C.UTF-8", **extra)
        return env

    def launch(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return run([self.launcher, *args], self.bash_tool_env(**extra), self.work, timeout=600)


def copy_checkout(target: Path) -> Path:
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUNDLE_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target / name)
    for name in BUNDLE_DIRS:
        if (REPO / name).exists():
            shutil.copytree(REPO / name, target / name, symlinks=True, ignore=ignore)
    return target


def expanded_launcher(claude: Path, home: Path, work: Path) -> Path:
    """The launcher's path as the CLI writes it into the skill it hands the model."""
    with ModelServer([Reply("ok")]) as server:
        done = run(
            [claude, "-p", "/samocode:samocode-run demo", "--output-format", "json"],
            claude_env(home, server.port),
            work,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        text = server.main_requests()[0].user_text()
    assert "${CLAUDE_SKILL_DIR}" not in text
    found = set(re.findall(r"(/[^\s\"'`]+/scripts/samocode)\b", text))
    assert len(found) == 1, text[:3000]
    return Path(found.pop())


@pytest.fixture
def installed(claude_bin: Path, tmp_path: Path) -> Installed:
    checkout = copy_checkout(tmp_path / "samocode")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    inst = Installed(claude_bin, checkout, home, work, Path())
    inst.cli("plugin", "marketplace", "add", str(checkout))
    inst.cli("plugin", "install", "samocode@samocode")
    inst.launcher = expanded_launcher(claude_bin, home, work)
    return inst


@pytest.fixture(scope="session")
def made_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made once per session by the product's bootstrap, run as the launcher runs it, for the
    tests whose point is not the build (each first build costs ~8 s of ensurepip and pip). The first-use
    test and the rebuild on new dependencies still build from scratch."""
    root = tmp_path_factory.mktemp("made-env")
    checkout = copy_checkout(root / "samocode")
    data = root / "data"
    env = Installed(Path(), checkout, root, root, Path()).bash_tool_env(CLAUDE_PLUGIN_DATA=str(data))
    bootstrap = ["python3", "-I", checkout / "worker" / "bootstrap.py", "--root", checkout, "--launcher", "x"]
    done = run(bootstrap, env, root, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return data / "venv"


def seed(installed: Installed, venv: Path) -> None:
    """The data folder as a first use leaves it (a venv run by its bin/python works from any path)."""
    shutil.copytree(venv, installed.data / "venv", symlinks=True)


def project(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "README.md").write_text("demo\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    config = repo / ".samocode"
    config.write_text(f"MAIN_REPO={repo}\nWORKTREES={tmp_path / 'wt'}\nSESSIONS={tmp_path / 'sessions'}\n")
    return config


def progress_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith(PROGRESS)]


def test_first_use_makes_the_env_then_status_and_a_worker_run(installed: Installed, tmp_path: Path) -> None:
    config = project(tmp_path)
    assert not installed.data.exists(), "the CLI made the data folder at install: nothing to prove"

    first = installed.launch("sessions", "--config", str(config))

    assert first.returncode == 0, first.stderr
    assert progress_lines(first) == [f"{PROGRESS}{installed.data / 'venv'} (first use or new dependencies)"]
    assert first.stdout.strip() == f"no sessions in {tmp_path / 'sessions'}"
    assert (installed.data / "venv" / ".samocode-deps").is_file()
    assert not (installed.home / ".cache").exists(), "pip left a cache in HOME"

    # The worker, with a fake claude that takes its time: start returns while it runs; status sees it.
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"sequence": [], "by_phase": {"investigation": {"sleep": 60}}}))
    fake = {
        "CLAUDE_PATH": str(FAKE_CLAUDE),
        "FAKE_SCENARIO": str(scenario),
        "SAMOCODE_ENV_FILE": str(tmp_path / "none.env"),
    }
    started = installed.launch(
        "start", "--config", str(config), "--session", "demo", "--task", "say hi", **fake
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.startswith("samocode: started worker pid "), started.stdout
        assert progress_lines(started) == [], "the second use rebuilt the environment"
        status = installed.launch("status", "--config", str(config), "--session", "demo", **fake)
        assert status.returncode == 0, status.stderr
        assert "Worker: running (pid " in status.stdout
        listed = installed.launch("sessions", "--config", str(config))
        assert " · investigation · active · worker running (pid " in listed.stdout
    finally:
        stopped = installed.launch("stop", "--config", str(config), "--session", "demo", **fake)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_a_new_version_reuses_the_env_and_new_dependencies_rebuild_it(
    installed: Installed, made_env: Path
) -> None:
    seed(installed, made_env)
    assert progress_lines(installed.launch("config")) == [], "the made env was not taken as ready"
    venv = installed.data / "venv"
    built = (venv / "pyvenv.cfg").stat().st_ino, (venv / ".samocode-deps").read_text()

    # Version 0.1.1 of the plugin: same dependencies.
    for manifest in ("plugin.json", "marketplace.json"):
        path = installed.checkout / ".claude-plugin" / manifest
        path.write_text(path.read_text().replace('"version": "0.1.0"', '"version": "0.1.1"'))
    installed.cli("plugin", "marketplace", "update", "samocode")
    installed.cli("plugin", "update", "samocode@samocode")
    listed = json.loads((installed.home / ".claude" / "plugins" / "installed_plugins.json").read_text())
    assert listed["plugins"]["samocode@samocode"][0]["version"] == "0.1.1"
    launcher = expanded_launcher(installed.claude, installed.home, installed.work)
    again = run([launcher, "config"], installed.bash_tool_env(), installed.work)
    assert again.returncode == 0, again.stderr
    assert progress_lines(again) == []
    assert ((venv / "pyvenv.cfg").stat().st_ino, (venv / ".samocode-deps").read_text()) == built

    # Changed dependencies: the next use rebuilds.
    pyproject = installed.checkout / "pyproject.toml"
    text = pyproject.read_text()
    assert '"requests>=2.31",' in text
    pyproject.write_text(text.replace('"requests>=2.31",', '"requests>=2.30",'))
    rebuilt = run([launcher, "config"], installed.bash_tool_env(), installed.work, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len(progress_lines(rebuilt)) == 1
    assert (venv / ".samocode-deps").read_text() != built[1]


def test_offline_first_use_says_the_one_command_that_fixes_it(installed: Installed) -> None:
    done = installed.launch(
        "config", PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_INDEX="", PIP_FIND_LINKS=""
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith(PROGRESS), done.stderr
    assert lines[1].startswith(
        f"samocode: could not set up the worker's Python environment in {installed.data / 'venv'}: "
    )
    assert lines[1].endswith(f'run: "{installed.launcher}" setup')
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_uninstall_leaves_nothing_of_samocode_beyond_the_clis_cache(
    installed: Installed, made_env: Path
) -> None:
    seed(installed, made_env)
    assert installed.launch("config").returncode == 0
    assert (installed.data / "venv").is_dir()

    installed.cli("plugin", "uninstall", "samocode@samocode")
    installed.cli("plugin", "marketplace", "remove", "samocode")

    home = installed.home
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*") if "samocode" in p.name)
    cache = Path(".claude", "plugins", "cache", "samocode")
    # The CLI keeps its copy of an uninstalled plugin (marked .orphaned_at) and cleans it up itself later.
    assert all(Path(p) == cache or Path(p).is_relative_to(cache) for p in left), left
    assert not (home / ".claude" / "plugins" / "data").exists() or not any(
        (home / ".claude" / "plugins" / "data").iterdir()
    )
    assert not (home / ".cache").exists(), "pip left a cache in HOME"
    assert not (home / ".config").exists()
