"""The git facts samocode needs: is a folder a repository, the session's worktree and branch, HEAD,
recent commits, what changed since a commit, and the working tree's state (the stall breaker's
evidence of progress)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker.errors import GitError


def _env(**extra: str) -> dict[str, str]:
    """git's environment: the process's as it is when git is called (not when this module was
    imported), never prompting, in the C locale."""
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **extra}


def _git(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        errors="replace",  # a commit message or path in another encoding must not break a report
        timeout=timeout,
        env=_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def available() -> bool:
    return shutil.which("git", path=os.environ.get("PATH")) is not None


def is_repo(path: Path) -> bool:
    try:
        result = _git(path, "rev-parse", "--is-inside-work-tree", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str


def _base_ref(repo: Path) -> str:
    """The remote's default branch when there is a remote, else the repository's current branch."""
    remotes = _git(repo, "remote").stdout.split()
    if remotes:
        remote = "origin" if "origin" in remotes else remotes[0]
        with contextlib.suppress(subprocess.TimeoutExpired):  # best effort: offline is fine
            _git(repo, "fetch", "--quiet", remote, timeout=30)
        head = _git(repo, "symbolic-ref", "--short", f"refs/remotes/{remote}/HEAD")
        if head.returncode == 0 and head.stdout.strip():
            return head.stdout.strip()
        for name in ("main", "master"):
            if (
                _git(repo, "rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{name}").returncode
                == 0
            ):
                return f"{remote}/{name}"
    current = _git(repo, "symbolic-ref", "--short", "HEAD")
    if current.returncode == 0 and current.stdout.strip():
        return current.stdout.strip()
    return "HEAD"


def ensure_worktree(repo: Path, path: Path, branch: str) -> Worktree:
    """Create `path` as a worktree on `branch` (new, from the default base), or reuse it."""
    if path.exists():
        if is_repo(path):
            current = _git(path, "symbolic-ref", "--short", "HEAD").stdout.strip()
            return Worktree(path, current or branch)
        raise GitError(f"{path} exists but is not a git worktree; move it away or pick another session name")
    # A worktree deleted by hand stays registered ("prunable") and would make `worktree add` fail.
    _git(repo, "worktree", "prune")
    if _git(repo, "check-ref-format", "--branch", branch).returncode != 0:
        raise GitError(f"'{branch}' is not a valid git branch name (check GIT_BRANCH_PREFIX)")
    exists = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").returncode == 0
    base = "" if exists else _base_ref(repo)
    args = (
        ["worktree", "add", str(path), branch]
        if exists
        else ["worktree", "add", "-b", branch, str(path), base]
    )
    result = _git(repo, *args, timeout=120)
    if result.returncode != 0:
        raise GitError(f"git worktree add failed: {result.stderr.strip().splitlines()[-1:]}")
    return Worktree(path, branch)


def check_branch(branch: str) -> None:
    """GitError when git would refuse `branch` as a branch name (checked before anything is made)."""
    if available() and _git(Path.cwd(), "check-ref-format", "--branch", branch, timeout=10).returncode != 0:
        raise GitError(
            f"'{branch}' is not a valid git branch name (rename the session or fix GIT_BRANCH_PREFIX)"
        )


def recent_commits(path: Path, count: int = 3) -> list[str]:
    try:
        result = _git(path, "log", "--oneline", "--no-decorate", f"-{count}", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.splitlines() if result.returncode == 0 else []


def head(path: Path) -> str | None:
    """The commit checked out in `path`, or None (no repository, no commit yet, no git)."""
    try:
        result = _git(path, "rev-parse", "--verify", "-q", "HEAD", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def changes_since(path: Path, rev: str) -> tuple[int, int] | None:
    """(files changed, commits) in `path` since commit `rev`: committed, staged, unstaged and new
    files alike; None when git cannot tell."""
    try:
        commits = _git(path, "rev-list", "--count", f"{rev}..HEAD", timeout=10)
        changed = _git(path, "diff", "--name-only", rev, timeout=10)
        new = _git(path, "ls-files", "--others", "--exclude-standard", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commits.returncode or changed.returncode or new.returncode:
        return None
    files = set(changed.stdout.splitlines()) | set(new.stdout.splitlines())
    return len(files), int(commits.stdout.strip() or 0)


@dataclass(frozen=True)
class TreeState:
    digest: str
    head: str  # abbreviated HEAD, '' outside git
    dirty: int  # changed or untracked files


def tree_state(work: Path) -> TreeState | None:
    """HEAD, the changed paths and their size/mtime, from one `git status`; None outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(work), "status", "--porcelain=v2", "--branch", "-z", "-uall"],
            capture_output=True,
            timeout=60,
            # A read that runs every iteration must not take the index lock from the child's own git.
            env=_env(GIT_OPTIONAL_LOCKS="0"),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    digest = hashlib.sha256(done.stdout)
    head, dirty = "", 0
    entries = done.stdout.split(b"\0")
    skip = False
    for entry in entries:
        if skip:  # the original path of a rename
            skip = False
            continue
        if entry.startswith(b"# branch.oid "):
            head = entry[13:20].decode("ascii", "replace")
            continue
        kind = entry[:2]
        fixed = {b"1 ": 8, b"2 ": 9, b"u ": 10, b"? ": 1}.get(kind)
        if fixed is None:
            continue
        dirty += 1
        skip = kind == b"2 "
        path = entry.split(b" ", fixed)[-1]
        try:
            st = os.lstat(os.path.join(work, os.fsdecode(path)))
            digest.update(b"%d:%d" % (st.st_size, st.st_mtime_ns))
        except OSError:
            digest.update(b"gone")
    return TreeState(digest.hexdigest(), head, dirty)
