"""Session names and folders: exact -> newest dated -> new; unsafe names refused; worktrees made with git.

The worker runs in-process (tests/inproc.py), a refused command line through `worker.cli.main`
(`Project.cli`); the config errors, all at once, as a process."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import git
from inproc import InProc

from worker.errors import ConfigError
from worker.session import check_name, resolve

TODAY = dt.date(2026, 11, 24)


def test_exact_folder_wins(tmp_path):
    (tmp_path / "task").mkdir()
    (tmp_path / "26-11-20-task").mkdir()
    paths, exists = resolve(tmp_path, "task", TODAY)
    assert exists and paths.dir == tmp_path / "task"


def test_newest_dated_folder_with_exactly_that_name(tmp_path):
    for name in ("26-01-01-task", "26-03-05-task", "26-04-01-my-task", "26-05-01-task-2"):
        (tmp_path / name).mkdir()
    paths, exists = resolve(tmp_path, "task", TODAY)
    assert exists and paths.dir.name == "26-03-05-task"
    assert paths.name == "task"


def test_a_name_only_matching_the_end_of_another_is_a_new_session(tmp_path):
    (tmp_path / "26-01-01-my-task").mkdir()
    paths, exists = resolve(tmp_path, "task", TODAY)
    assert not exists and paths.dir == tmp_path / "26-11-24-task"


def test_a_file_where_the_session_folder_should_be_is_refused(tmp_path):
    (tmp_path / "task").write_text("not a folder")
    with pytest.raises(ConfigError, match="not a directory"):
        resolve(tmp_path, "task", TODAY)


@pytest.mark.parametrize(
    "name", ["", " ", "a/b", "..", "a..b", "x*", "x?", "[x]", "has space", ".hidden", "-flag"]
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError):
        check_name(name)


@pytest.mark.parametrize("name", ["dark-mode", "fix_42", "v1.2", "Ünïcode"])
def test_plain_names_are_accepted(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["../escape", "a b", "*"])
def test_the_worker_refuses_unsafe_names_with_exit_2_and_creates_nothing(project, name):
    result = project.cli("--config", str(project.config), "--session", name)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not project.sessions.exists() or not any(project.sessions.iterdir())


def test_a_new_session_gets_a_worktree_on_its_own_branch(project, monkeypatch):
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "stop"}}})
    assert loop.run("wt-demo", branch_prefix="samo").code == 4
    session = project.session_dir("wt-demo")
    worktree = project.worktrees / session.name
    assert (worktree / "README.md").exists()
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "samo/wt-demo"
    # Started again, the same worktree and branch are reused.
    assert loop.run("wt-demo", branch_prefix="samo").code == 4
    assert len(git(project.main_repo, "worktree", "list").splitlines()) == 2  # main + this session


def test_a_non_git_main_repo_is_worked_on_in_place(project, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    project.config.write_text(
        f"MAIN_REPO={plain}\nWORKTREES={tmp_path / 'wt2'}\nSESSIONS={project.sessions}\n# comment\n"
    )
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "stop"}}})
    assert loop.run("inplace").code == 4
    assert loop.child.calls[0]["cwd"] == str(plain)


def test_config_problems_are_all_reported_at_once(project, tmp_path):
    project.config.write_text(
        f"MAIN_REPO={tmp_path / 'missing'}\n# no WORKTREES\nSESSIONS='{tmp_path / 's'}'\n"
    )
    result = project.worker("x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("MAIN_REPO" in ln and "does not exist" in ln for ln in lines)
    assert any("WORKTREES is missing" in ln for ln in lines)
    assert "Traceback" not in result.stderr
