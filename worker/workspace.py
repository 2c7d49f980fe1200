"""Where a session's work happens: its folder, its git worktree and branch, its first overview."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable

from worker import gitops, overview, splice
from worker.config import Project
from worker.errors import GitError, OverviewError, SessionFileError
from worker.flowlog import flow_line
from worker.history import stamp
from worker.session import SessionPaths


class Workspace:
    """A session folder being worked on by this worker, and the tree the child works in."""

    def __init__(
        self, paths: SessionPaths, project: Project, branch_prefix: str, now: Callable[[], dt.datetime]
    ) -> None:
        self.paths = paths
        self.project = project
        self.branch_prefix = branch_prefix
        self.now = now
        self.working_dir = project.main_repo
        self.branch = ""
        self._before: splice.Doc | None = None  # the overview as the last `read` found it
        self._known: splice.Doc | None = None  # as the last `read` or `restore_if_broken` found it

    def open(self, task: str, dive: str) -> None:
        """Folder, worktree and (for a new or bare folder) the overview template. No model call.

        An existing overview is never rewritten: a second start of a new session that raced the
        first one, or a restart after a crash during creation, keeps what is there."""
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        self._attach_worktree()
        if not self.paths.overview.exists() and not self.paths.overview.is_symlink():
            self._write_template(task, dive)

    def _write_template(self, task: str, dive: str) -> None:
        where = f" in worktree {self.working_dir} on branch {self.branch}" if self.branch else ""
        text = overview.render_new(
            self.paths.name,
            stamp(self.now()),
            str(self.working_dir),
            task,
            dive,
            flow_line(0, self.now(), f"Session created{where} -> _overview.md"),
        )
        try:
            with overview.locked(self.paths.dir):
                overview.write_atomic(self.paths.overview, text)
        except OSError as exc:
            raise SessionFileError(f"cannot write {self.paths.overview.name}: {exc.strerror}") from None

    def ensure_present(self) -> None:
        """Before each attempt: a worktree removed since the last one (by the child or by hand) is
        recreated on its branch; a working directory that cannot come back is a GitError."""
        if self.working_dir.is_dir():
            return
        if self.branch:
            self._attach_worktree()
            return
        raise GitError(f"the working directory {self.working_dir} is gone")

    def _attach_worktree(self) -> None:
        """The session's worktree on its branch: created on first use, recreated when removed."""
        repo = self.project.main_repo
        if not gitops.available():
            if (repo / ".git").exists():  # silently working in MAIN_REPO instead would be worse
                raise GitError(f"git is not on PATH, and {repo} is a git repository: install git")
            return
        if not gitops.is_repo(repo):
            return
        branch = branch_name(self.branch_prefix, self.paths.name)
        tree = gitops.ensure_worktree(repo, self.project.worktrees / self.paths.dir.name, branch)
        self.working_dir, self.branch = tree.path, tree.branch

    def read(self) -> overview.Overview:
        """The overview's Status, parsed from its head; the file's bytes are kept as they were read,
        for `restore_if_broken`."""
        self._before = self._known = splice.load(self.paths.overview)
        return self._before.ov

    @property
    def known(self) -> splice.Doc | None:
        """The overview as this worker last found it, by `read` or after the child: its bytes, its
        parsed head and the file's status (None when it was put back or never read)."""
        return self._known

    def restore_if_broken(self, label: str) -> tuple[str, str] | None:
        """After an attempt: an overview the child left unusable (torn by a kill mid-write, its
        Status section gone) is put back as it was at the last `read`, and the child's copy kept
        beside it. Returns (why it was unusable, the copy's name), or None when it is usable.

        A file whose status is still the one `read` saw is not read again (`splice.load`)."""
        before = self._before
        self._known = None
        try:
            self._known = splice.load(self.paths.overview, before)
            return None
        except OverviewError as exc:
            reason = exc.reason
        if before is None:
            return None
        copy = self.paths.dir / f"_overview.unusable-{label}.md"
        try:
            with overview.locked(self.paths.dir):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.paths.overview, copy)
                splice.save(self.paths.overview, [before.data])
        except OSError as exc:
            raise SessionFileError(f"cannot restore {self.paths.overview.name}: {exc.strerror}") from None
        return reason, copy.name


def branch_name(prefix: str, session: str) -> str:
    """The git branch of a session's worktree: `[GIT_BRANCH_PREFIX/]<session name>`."""
    prefix = prefix.strip("/")
    return f"{prefix}/{session}" if prefix else session
