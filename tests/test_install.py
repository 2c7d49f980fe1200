"""install.sh and the skill's launcher, run for real against a scratch HOME and a copy of the checkout.

Every test works in tmp_path: `home/` (the scratch HOME), `checkout/` (a copy of the bundle and the
worker, so links point into it and its `.venv` is its own), `outside/` (a sentinel that must never
change) and `tmp/` (TMPDIR). Snapshots list every path under tmp_path with its type, link target, size
and mtime, so "changes nothing" and "writes nothing elsewhere" are checked on the whole tree.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COPY = ("install.sh", "pyproject.toml", "README.md", "AGENTS.md", "workflow.md", "main.py")
COPY_DIRS = ("worker", "skills", "commands", "agents", ".claude-plugin")
LAUNCHER = Path("skills/samocode-run/scripts/samocode")


def _clean_path() -> str:
    """The test's PATH minus folders holding a real `codex` or `samocode` (install.sh and the launcher
    behave differently when those are on PATH; the tests put fakes in their own bin folder)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(
        p for p in parts if p and not any((Path(p) / tool).exists() for tool in ("codex", "samocode"))
    )


# pip's own settings (index, find-links, certificates, proxies) so the venv step works where tests run.
_PASS_THROUGH = re.compile(
    r"^(PIP_\w+|(HTTPS?|NO|ALL)_PROXY|SSL_CERT_\w+|REQUESTS_CA_BUNDLE)$", re.IGNORECASE
)


@dataclass
class Scratch:
    root: Path
    home: Path
    checkout: Path
    outside: Path
    tmp: Path
    bin: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if _PASS_THROUGH.match(k)}
        env |= {
            "PATH": f"{self.bin}{os.pathsep}{_clean_path()}",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env

    def install(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.checkout / "install.sh"), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.outside,
        )

    @property
    def claude(self) -> Path:
        return self.home / ".claude"

    def fake_tool(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPY:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, checkout / name)
    for name in COPY_DIRS:
        if (REPO / name).exists():
            shutil.copytree(REPO / name, checkout / name, symlinks=True, ignore=ignore)
    s = Scratch(
        tmp_path, tmp_path / "home", checkout, tmp_path / "outside", tmp_path / "tmp", tmp_path / "bin"
    )
    for folder in (s.home, s.outside, s.tmp, s.bin):
        folder.mkdir()
    (s.outside / "sentinel.txt").write_text("must not change\n")
    return s


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (links not followed): kind, link target, size, mtime."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path), st.st_mtime_ns)
            elif path.is_dir():
                entries[rel] = ("dir", st.st_mtime_ns)
            else:
                entries[rel] = ("file", st.st_size, st.st_mtime_ns, st.st_mode)
    return entries


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def expected_links(checkout: Path, config: Path) -> dict[Path, Path]:
    """Where install.sh must put a link for each shipped skill, command and agent."""
    links = {
        config / "skills" / d.name: d for d in (checkout / "skills").iterdir() if (d / "SKILL.md").is_file()
    }
    for kind in ("commands", "agents"):
        links.update({config / kind / f.name: f for f in (checkout / kind).glob("*.md")})
    return links


def links_under(folder: Path) -> dict[Path, str]:
    found = {}
    for sub in ("skills", "commands", "agents"):
        if (folder / sub).is_dir():
            found.update({p: os.readlink(p) for p in (folder / sub).iterdir() if p.is_symlink()})
    return found


# --- install twice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("via_config_dir", [False, True], ids=["home", "CLAUDE_CONFIG_DIR"])
def test_second_install_changes_nothing(scratch: Scratch, via_config_dir: bool) -> None:
    extra = {"CLAUDE_CONFIG_DIR": str(scratch.root / "cfg")} if via_config_dir else {}
    config = scratch.root / "cfg" if via_config_dir else scratch.claude

    first = scratch.install("--no-venv", **extra)
    assert first.returncode == 0, first.stderr
    after_first = snapshot(scratch.root)
    second = scratch.install("--no-venv", **extra)
    assert second.returncode == 0, second.stderr

    assert changed(after_first, snapshot(scratch.root)) == set()
    links = expected_links(scratch.checkout, config)
    assert second.stdout.count("  unchanged  ") == len(links)
    assert "  created  " not in second.stdout and "  replaced  " not in second.stdout
    if via_config_dir:
        assert not scratch.claude.exists(), "CLAUDE_CONFIG_DIR set, but ~/.claude was written"


def test_links_point_at_the_checkout(scratch: Scratch) -> None:
    done = scratch.install("--no-venv")
    assert done.returncode == 0, done.stderr

    want = expected_links(scratch.checkout, scratch.claude)
    assert scratch.claude / "skills" / "samocode-run" in want
    assert scratch.claude / "commands" / "samocode-implement.md" in want
    assert any(p.parent.name == "agents" for p in want)
    got = links_under(scratch.claude)
    assert set(got) == set(want)
    for link, source in want.items():
        assert Path(os.readlink(link)) == source.resolve()
        assert link.resolve() == source.resolve()
        assert f"  created    {link} -> {source.resolve()}" in done.stdout
    # The skill folder is linked whole, so its launcher is reachable through the link.
    assert os.access(scratch.claude / "skills" / "samocode-run" / "scripts" / "samocode", os.X_OK)
    assert "MAIN_REPO=" in done.stdout and "WORKTREES=" in done.stdout and "SESSIONS=" in done.stdout


def test_installs_nothing_outside_home_config_and_checkout(scratch: Scratch) -> None:
    before = snapshot(scratch.root)
    done = scratch.install("--no-venv")
    assert done.returncode == 0, done.stderr

    allowed = ("home/.claude/", "checkout/")
    stray = {p for p in changed(before, snapshot(scratch.root)) if not (p + "/").startswith(allowed)}
    # The scratch HOME itself changes only because .claude was created in it.
    assert stray <= {"home"}, stray
    assert sorted(os.listdir(scratch.home)) == [".claude"]
    assert os.listdir(scratch.tmp) == []


def test_started_with_sh_it_still_runs_under_bash(scratch: Scratch) -> None:
    done = subprocess.run(
        ["sh", str(scratch.checkout / "install.sh"), "--no-venv"],
        env=scratch.env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=scratch.outside,
    )
    assert done.returncode == 0, done.stderr
    assert (scratch.claude / "skills" / "samocode-run").is_symlink()


def test_unknown_option_is_a_usage_error(scratch: Scratch) -> None:
    before = snapshot(scratch.root)
    done = scratch.install("--frobnicate")
    assert done.returncode == 2
    assert "unknown option '--frobnicate'" in done.stderr
    assert changed(before, snapshot(scratch.root)) == set()


# --- refusals: nothing half done -------------------------------------------------------------------


def test_refuses_to_overwrite_a_users_real_file(scratch: Scratch) -> None:
    users = scratch.claude / "commands" / "samocode-implement.md"
    users.parent.mkdir(parents=True)
    users.write_text("my own command\n")
    before = snapshot(scratch.root)

    done = scratch.install("--no-venv")

    assert done.returncode != 0
    assert str(users) in done.stderr and "not a samocode link" in done.stderr
    assert "nothing was changed" in done.stderr
    assert changed(before, snapshot(scratch.root)) == set()
    assert not (scratch.claude / "skills").exists()
    assert users.read_text() == "my own command\n"


def test_refuses_a_foreign_link(scratch: Scratch) -> None:
    theirs = scratch.outside / "their-skill"
    theirs.mkdir()
    link = scratch.claude / "skills" / "samocode-run"
    link.parent.mkdir(parents=True)
    link.symlink_to(theirs)
    before = snapshot(scratch.root)

    done = scratch.install("--no-venv")

    assert done.returncode != 0
    assert f"{link} is a link to {theirs}" in done.stderr
    assert changed(before, snapshot(scratch.root)) == set()


def test_replaces_its_own_old_links(scratch: Scratch) -> None:
    skill = scratch.claude / "skills" / "samocode-run"
    command = scratch.claude / "commands" / "samocode-implement.md"
    skill.parent.mkdir(parents=True)
    command.parent.mkdir(parents=True)
    skill.symlink_to(scratch.checkout / "skills")  # into this checkout, but the wrong target
    gone = scratch.root / "old-checkout-deleted" / "commands" / "samocode-implement.md"
    command.symlink_to(gone)  # dangling, left by a samocode checkout that no longer exists

    done = scratch.install("--no-venv")

    assert done.returncode == 0, done.stderr
    assert skill.resolve() == (scratch.checkout / "skills" / "samocode-run").resolve()
    assert command.resolve() == (scratch.checkout / "commands" / "samocode-implement.md").resolve()
    assert f"  replaced   {skill} ->" in done.stdout
    assert f"(was -> {gone})" in done.stdout


@pytest.mark.parametrize("where", ["settings", "installed_plugins"])
def test_refuses_when_the_plugin_is_installed(scratch: Scratch, where: str) -> None:
    if where == "settings":
        (scratch.claude).mkdir()
        (scratch.claude / "settings.json").write_text('{"enabledPlugins": {"samocode@samocode": true}}')
    else:
        (scratch.claude / "plugins").mkdir(parents=True)
        (scratch.claude / "plugins" / "installed_plugins.json").write_text(
            '{"version": 2, "plugins": {"samocode@my-marketplace": [{"scope": "user"}]}}'
        )
    before = snapshot(scratch.root)

    done = scratch.install("--no-venv")

    assert done.returncode != 0
    assert "already installed as a Claude Code plugin" in done.stderr
    assert "Pick one route" in done.stderr
    assert changed(before, snapshot(scratch.root)) == set()


def test_another_plugin_or_a_disabled_samocode_is_no_double_install(scratch: Scratch) -> None:
    scratch.claude.mkdir()
    (scratch.claude / "settings.json").write_text(
        '{"enabledPlugins": {"other@samocode": true, "samocode@samocode": false}}'
    )
    done = scratch.install("--no-venv")
    assert done.returncode == 0, done.stderr


def test_refuses_when_the_checkout_is_a_skills_directory_plugin(scratch: Scratch) -> None:
    (scratch.claude / "skills").mkdir(parents=True)
    (scratch.claude / "skills" / "samocode").symlink_to(scratch.checkout)
    done = scratch.install("--no-venv")
    assert done.returncode != 0
    assert "skills-directory plugin" in done.stderr


# --- uninstall -------------------------------------------------------------------------------------


def test_uninstall_removes_only_links_into_this_checkout(scratch: Scratch) -> None:
    assert scratch.install("--no-venv").returncode == 0
    mine = scratch.claude / "commands" / "my-own.md"
    mine.write_text("mine\n")
    foreign = scratch.claude / "agents" / "someone-else.md"
    foreign.symlink_to(scratch.outside / "sentinel.txt")
    ours = set(links_under(scratch.claude)) - {foreign}

    done = scratch.install("--uninstall")

    assert done.returncode == 0, done.stderr
    assert set(links_under(scratch.claude)) == {foreign}
    assert mine.read_text() == "mine\n"
    for link in ours:
        assert f"  removed    {link}" in done.stdout
    assert (scratch.outside / "sentinel.txt").read_text() == "must not change\n"
    again = scratch.install("--uninstall")
    assert again.returncode == 0 and "removed 0 link(s)" in again.stdout


# --- Codex -----------------------------------------------------------------------------------------


def test_links_the_skill_for_codex_when_codex_is_on_path(scratch: Scratch) -> None:
    scratch.fake_tool("codex", "exit 0")
    done = scratch.install("--no-venv")
    assert done.returncode == 0, done.stderr

    link = scratch.home / ".codex" / "skills" / "samocode-run"
    assert link.is_symlink() and link.resolve() == (scratch.checkout / "skills" / "samocode-run").resolve()
    assert sorted(os.listdir(scratch.home / ".codex")) == ["skills"]
    assert scratch.install("--uninstall").returncode == 0
    assert not link.exists() and not link.is_symlink()


def test_links_the_skill_into_codex_home_when_it_exists(scratch: Scratch) -> None:
    codex_home = scratch.root / "codex-home"
    codex_home.mkdir()
    done = scratch.install("--no-venv", CODEX_HOME=str(codex_home))
    assert done.returncode == 0, done.stderr
    assert (codex_home / "skills" / "samocode-run").is_symlink()
    assert not (scratch.home / ".codex").exists()


def test_no_codex_no_codex_folder(scratch: Scratch) -> None:
    assert scratch.install("--no-venv").returncode == 0
    assert not (scratch.home / ".codex").exists()


# --- the launcher ----------------------------------------------------------------------------------


def _python3_with_deps(scratch: Scratch) -> None:
    # A wrapper, not a symlink: a venv's python finds its packages only when started by its own path.
    scratch.fake_tool("python3", f'exec "{sys.executable}" "$@"')


def _launcher_via_link(scratch: Scratch) -> Path:
    assert scratch.install("--no-venv").returncode == 0
    return scratch.claude / "skills" / "samocode-run" / "scripts" / "samocode"


def _launch(scratch: Scratch, launcher: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(launcher), *args],
        env=scratch.env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=scratch.outside,
    )


def test_launcher_uses_python3_with_the_deps_through_the_symlinked_skill(scratch: Scratch) -> None:
    # No .venv in the copy and no samocode on PATH: python3 with the worker's packages runs main.py.
    _python3_with_deps(scratch)
    launcher = _launcher_via_link(scratch)
    done = _launch(scratch, launcher, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: samocode" in done.stdout


def test_launcher_prefers_a_samocode_on_path_to_python3(scratch: Scratch) -> None:
    _python3_with_deps(scratch)
    scratch.fake_tool("samocode", 'echo "samocode from PATH: $*"')
    done = _launch(scratch, _launcher_via_link(scratch), "status", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "samocode from PATH: status --json"


def test_launcher_without_any_python_env_says_run_install(scratch: Scratch) -> None:
    scratch.fake_tool("python3", "exit 1")  # a python3 that cannot import the worker's packages
    done = _launch(scratch, _launcher_via_link(scratch), "--help")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"run {scratch.checkout.resolve()}/install.sh" in lines[0]


def test_launcher_import_check_matches_pyproject_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    match = re.search(r"python3 -c 'import ([^']+)'", (REPO / LAUNCHER).read_text())
    assert match, "the launcher's dependency check is gone"
    modules = [m.strip() for m in match.group(1).split(",")]
    owners = importlib.metadata.packages_distributions()
    provided = {dist.lower().replace("_", "-") for m in modules for dist in owners.get(m, [m])}
    assert provided == wanted


# --- the real venv step (once) ---------------------------------------------------------------------


def test_venv_step_installs_the_worker_and_is_skipped_the_second_time(scratch: Scratch) -> None:
    if shutil.which("python3") is None:
        pytest.skip("install.sh needs python3 on PATH")
    venv = scratch.checkout / ".venv"
    # With the plugin installed, links are refused, but --venv-only still makes the checkout's venv.
    scratch.claude.mkdir()
    settings = scratch.claude / "settings.json"
    settings.write_text('{"enabledPlugins": {"samocode@samocode": true}}')
    assert scratch.install(timeout=600).returncode != 0
    assert not venv.exists(), "a refused install created the venv"
    venv_only = scratch.install("--venv-only", timeout=600)
    assert venv_only.returncode == 0, venv_only.stdout + venv_only.stderr
    assert f"  installed  {venv.resolve()}" in venv_only.stdout
    assert (venv / "bin" / "samocode").exists()
    assert sorted(os.listdir(scratch.claude)) == ["settings.json"]

    # The symlink route after the plugin is gone: the venv is kept, the links are made.
    settings.unlink()
    first = scratch.install(timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"  unchanged  {venv.resolve()}" in first.stdout

    # The launcher, reached through the symlinked skill, runs the checkout's venv.
    launcher = scratch.claude / "skills" / "samocode-run" / "scripts" / "samocode"
    scratch.fake_tool("python3", "exit 1")  # proves the venv, not python3, runs the worker
    done = _launch(scratch, launcher, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: samocode" in done.stdout

    before = snapshot(scratch.root)
    second = scratch.install(timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"  unchanged  {venv.resolve()}" in second.stdout
    assert changed(before, snapshot(scratch.root)) == set()
    assert not (scratch.home / ".cache").exists(), "pip wrote a cache outside the checkout"


# --- the plugin route: the launcher of a plugin copy ------------------------------------------------


def test_launcher_of_a_plugin_copy_runs_the_venv_in_the_plugin_data_folder(scratch: Scratch) -> None:
    """The CLI's cache copy of the plugin, with a venv made earlier for the same dependencies: the
    launcher finds the data folder from where it lives (no CLAUDE_PLUGIN_DATA) and runs that venv."""
    from worker import bootstrap

    copy = scratch.claude / "plugins" / "cache" / "mkt" / "samocode" / "0.2.0"
    shutil.copytree(scratch.checkout, copy, symlinks=True)
    venv = scratch.claude / "plugins" / "data" / "samocode-mkt" / "venv"
    marker = scratch.root / "ran-with"
    venv_python = venv / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\necho "$0" > "{marker}"\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    found = subprocess.run(
        ["python3", "-I", "-c", "import sys; print(*sys.version_info[:2])"],
        env=scratch.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if found.returncode != 0:
        pytest.skip("no python3 on PATH for the launcher's bootstrap")
    version = tuple(int(x) for x in found.stdout.split())
    (venv / bootstrap.STAMP).write_text(bootstrap.stamp_of(bootstrap.requirements(copy), version))
    before = snapshot(scratch.checkout)

    done = _launch(scratch, copy / LAUNCHER, "--help")

    assert done.returncode == 0, done.stderr
    assert "usage: samocode" in done.stdout
    assert marker.read_text().strip() == str(venv_python)
    assert done.stderr == "", "a ready environment must not print a progress line"
    assert changed(before, snapshot(scratch.checkout)) == set()
