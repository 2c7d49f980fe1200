"""Bad input never loses data: a table of malformed inputs, each run through the real worker.

Every row sets up one malformed input, runs the worker and checks the exit code, a one-line
`samocode: ...` message naming the problem (no traceback), and that the session's files survived.
Most rows run in this process: a usage or config error, which stops the worker before anything runs,
through `worker.cli.main` (`Project.cli`); any other row through the loop with the fake child
(tests/inproc.py), its message the line the CLI prints of the loop's outcome (`inproc.run_as_cli`).
A few rows run the real worker as a subprocess with the fake CLI, one for each way the CLI layer
ends a run: a name that reaches the process as bytes, a bad signal from a real child, a survivable
input (`process=True`), and, both ways with their lines compared (`TWINS`), an unusable session file
(blocked before any child) and a session waiting for a human (its line on stdout). What the worker
may legitimately change, by row kind:

- `NOTHING` (usage and config errors): every file byte-identical; no new session folder.
- `JOURNAL` (a session file is unusable, or the session waits for a human): the overview
  byte-identical; the worker only appends to `_signal_history.jsonl` (its old bytes stay a
  prefix) and `session.log`, and adds files under `_logs/` and its own dot files (lease, lock).
- `DECIDED` (the worker read the session and recorded a decision): as JOURNAL, plus the overview's
  Status fields and new Flow Log lines; every other line of the overview stays, in order, with its
  own line ending; `_signal.json` is the child's (cleared before each attempt).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from inproc import InProc, run_as_cli, signal_as
from worker_helpers import history

from worker import overview

NOTHING, JOURNAL, DECIDED = "nothing", "journal", "decided"
BLOCK = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}
NAME = "bad"


def template(**fields: str) -> str:
    text = overview.render_new(
        NAME, "2026-01-01 00:00", "/nonexistent", "the task", "", "[000 @ 01-01 00:00] Session created"
    )
    return overview.set_fields(overview.parse(text), fields) if fields else text


@dataclass(frozen=True)
class Row:
    """One malformed input. `setup(project, folder)` prepares it and may return extra env."""

    id: str
    setup: object
    code: int
    message: str
    kind: str
    scenario: dict = field(default_factory=lambda: {"by_phase": {"investigation": BLOCK}})
    args: tuple[str, ...] = ()
    calls: int | None = None  # provider invocations expected (None: not checked)
    process: bool = False  # the real worker as a subprocess (the others run in-process)


def with_overview(data: bytes | str):
    def setup(project, folder: Path) -> None:
        folder.mkdir(parents=True)
        raw = data.encode() if isinstance(data, str) else data
        (folder / "_overview.md").write_bytes(raw)

    return setup


def session_with(**files: bytes | str):
    """A valid session plus the given files (None-like markers handled by the callers)."""

    def setup(project, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "_overview.md").write_text(template())
        for name, content in files.items():
            path = folder / name.replace("__", ".")
            path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def signal_row(id_: str, action: dict, message: str, calls: int = 2, process: bool = False) -> Row:
    """The child leaves a bad signal (twice): retried once, then blocked with the reason."""
    scenario = {"sequence": [action, action]}
    return Row(id_, session_with(), 4, message, DECIDED, scenario, calls=calls, process=process)


def _dir_overview(project, folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "_overview.md").mkdir()
    (folder / "_overview.md" / "keep.txt").write_text("x")


def _symlinked_overview(project, folder: Path) -> None:
    folder.mkdir(parents=True)
    outside = project.root / "outside.md"
    outside.write_text(template())
    (folder / "_overview.md").symlink_to(outside)


def _fifo_overview(project, folder: Path) -> None:
    folder.mkdir(parents=True)
    os.mkfifo(folder / "_overview.md")


def _unreadable_overview(project, folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "_overview.md").write_text(template())
    (folder / "_overview.md").chmod(0)


def _folder_is_a_file(project, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder\n")


def _config_text(text: bytes):
    def setup(project, folder: Path) -> None:
        project.config.write_bytes(text)

    return setup


def _env_file(text: bytes):
    def setup(project, folder: Path) -> dict:
        env_file = project.root / "bad.env"
        env_file.write_bytes(text)
        return {"SAMOCODE_ENV_FILE": str(env_file)}

    return setup


def _env(**values: str):
    def setup(project, folder: Path) -> dict:
        return values

    return setup


def _history_is_a_dir(project, folder: Path) -> None:
    session_with()(project, folder)
    (folder / "_signal_history.jsonl").mkdir()


def _lock_is_a_dir(project, folder: Path) -> None:
    session_with()(project, folder)
    (folder / ".samocode.lock").mkdir()


def _logs_is_a_file(project, folder: Path) -> None:
    session_with(_logs="not a folder\n")(project, folder)


def waiting_for_answers(qa: bytes | None):
    """Requirements waits for answers in `_qa.md`: given bytes, or a FIFO when None."""

    def setup(project, folder: Path) -> None:
        folder.mkdir(parents=True)
        text = template(Phase="requirements", Blocked="waiting_human", **{"Waiting For": "qa_answers"})
        (folder / "_overview.md").write_text(text)
        if qa is None:
            os.mkfifo(folder / "_qa.md")
        else:
            (folder / "_qa.md").write_bytes(qa)

    return setup


def _nothing(project, folder: Path) -> None:
    pass


def _sessions_loop(project, folder: Path) -> None:
    loop_a, loop_b = project.root / "loop-a", project.root / "loop-b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    text = project.config.read_text().replace(f"SESSIONS={project.sessions}", f"SESSIONS={loop_a}")
    project.config.write_text(text)


def _config_dir(project, folder: Path) -> dict:
    (project.root / "cfgdir").mkdir()
    return {"_config": str(project.root / "cfgdir")}


ROOT = os.geteuid() == 0
GOOD_SIGNAL = json.dumps({"status": "continue", "phase": "requirements"})
CRLF = template().replace("\n", "\r\n")
REQ_BLOCK = {"by_phase": {"requirements": BLOCK}}


def unusable(id_: str, setup, message: str, code: int = 4, process: bool = False) -> Row:
    """The worker stops before any child runs; only its journal and log grow."""
    return Row(id_, setup, code, message, JOURNAL, calls=0, process=process)


def config_error(id_: str, setup, message: str, args: tuple[str, ...] = (), process: bool = False) -> Row:
    """A usage or config error: exit 2, nothing touched."""
    return Row(id_, setup, 2, message, NOTHING, args=args, calls=0, process=process)


def proceeds(id_: str, setup, scenario: dict | None = None, process: bool = False) -> Row:
    """The odd input is survivable: one child runs and its blocked signal is recorded."""
    scenario = scenario or {"by_phase": {"investigation": BLOCK}}
    return Row(
        id_, setup, 4, "blocked (human_decision): stop here", DECIDED, scenario, calls=1, process=process
    )


WITHOUT_PHASE = template().replace("Phase: investigation\n", "")
TWO_PHASES = template().replace("Phase: investigation", "Phase: investigation\nPhase: planning")
BAD_ENV = b"SAMOCODE_IDLE_TIMEOUT=abc\nSAMOCODE_MAX_RETRIES=-1\nSAMOCODE_MAX_COST_USD=nan\n"
FOR_DISAGREES = json.dumps({"status": "waiting", "for": "qa_answers", "waiting_for": "human_action"})

ROWS = [
    # -- the overview --------------------------------------------------------------------------
    unusable(
        "overview-without-status",
        with_overview("# Session: bad\n\n## Notes\nPhase: investigation\n"),
        "blocked: _overview.md has no '## Status' section",
    ),
    unusable("duplicate-phase-lines", with_overview(TWO_PHASES), "more than one 'Phase:' line"),
    unusable(
        "binary-junk-overview", with_overview(bytes(range(256)) * 64), "_overview.md is not valid UTF-8"
    ),
    unusable(
        "invalid-utf8-in-task",
        with_overview(template().encode().replace(b"the task", b"the \xff task")),
        "_overview.md is not valid UTF-8 (byte",
    ),
    unusable("unknown-phase", with_overview(template(Phase="deployment")), "unknown phase 'deployment'"),
    unusable("iteration-not-a-number", with_overview(template(Iteration="many")), "'Iteration: many'"),
    unusable("status-without-phase", with_overview(WITHOUT_PHASE), "has no 'Phase:' line"),
    unusable("empty-overview", with_overview(b""), "has no '## Status' section"),
    unusable("overview-is-a-directory", _dir_overview, "_overview.md is a directory"),
    unusable("overview-symlink-outside", _symlinked_overview, "_overview.md is a symlink; refusing"),
    unusable("overview-is-a-fifo", _fifo_overview, "_overview.md is not a regular file"),
    unusable("overview-17mb", with_overview(template() + "x" * (17 << 20)), "the limit is 16 MB"),
    pytest.param(
        unusable("overview-unreadable", _unreadable_overview, "cannot read _overview.md: Permission denied"),
        marks=pytest.mark.skipif(ROOT, reason="root reads a chmod 000 file; the directory row covers it"),
    ),
    proceeds("crlf-overview-kept", with_overview(CRLF), process=True),
    proceeds("nul-bytes-in-task", with_overview(template().replace("the task", "the \x00 task"))),
    # -- the signal ----------------------------------------------------------------------------
    signal_row("signal-is-a-list", {"signal": "[1, 2]"}, "signal must be a JSON object, got list"),
    signal_row("signal-50mb", {"signal_as": "mb:50"}, "_signal.json is larger than 64 KiB"),
    signal_row(
        "signal-symlink-outside",
        {"signal_as": "symlink:../../outside-signal.json"},
        "_signal.json is a symlink; refusing to follow it",
    ),
    signal_row("signal-is-a-fifo", {"signal_as": "fifo"}, "_signal.json is not a regular file", process=True),
    signal_row("signal-is-a-directory", {"signal_as": "dir"}, "_signal.json is a directory; remove it", 1),
    signal_row("signal-invalid-utf8", {"signal_as": "hex:7b22737461747573223a2022ff227d"}, "not valid UTF-8"),
    signal_row("signal-nested-deeply", {"signal": "[" * 30000 + "]" * 30000}, "nested too deeply"),
    signal_row("signal-with-bom", {"signal": "\ufeff" + GOOD_SIGNAL}, "_signal.json is not valid JSON"),
    signal_row("signal-status-not-a-string", {"signal": '{"status": 3}'}, "field 'status' must be a string"),
    signal_row("signal-for-disagrees", {"signal": FOR_DISAGREES}, "'for' (qa_answers) and 'waiting_for'"),
    signal_row(
        "signal-unknown-phase",
        {"signal": {"status": "continue", "phase": "deploy"}},
        "unknown phase 'deploy' in signal",
        1,
    ),
    # -- the session folder and its other files ---------------------------------------------------
    config_error("session-folder-is-a-file", _folder_is_a_file, "is not a directory"),
    proceeds("history-junk-and-torn-line", session_with(_signal_history__jsonl=b'garbage\n{"torn": ')),
    unusable(
        "history-is-a-directory", _history_is_a_dir, "cannot read _signal_history.jsonl: Is a directory"
    ),
    unusable("logs-is-a-file", _logs_is_a_file, "cannot write the iteration's files in"),
    unusable("lock-file-is-a-directory", _lock_is_a_dir, "cannot lock _overview.md (.samocode.lock: Is a"),
    proceeds("junk-in-flight-marker", session_with(__samocode__iteration__json=b"\x00{junk")),
    proceeds("stale-signal-left-behind", session_with(_signal__json=GOOD_SIGNAL)),
    proceeds("qa-binary-junk-while-waiting", waiting_for_answers(bytes(range(256))), REQ_BLOCK),
    proceeds("qa-is-a-fifo-while-waiting", waiting_for_answers(None), REQ_BLOCK),
    unusable("blocked-session", with_overview(template(Blocked="yes")), "session is blocked"),
    unusable("unanswered-questions", waiting_for_answers(b"**Answer:** _waiting_\n"), "still wait", code=3),
    # -- `.samocode`, `.env`, environment and command line ---------------------------------------
    config_error("samocode-missing-keys", _config_text(b"WORKTREES=wt\n"), "MAIN_REPO is missing"),
    config_error("samocode-binary-junk", _config_text(b"\xff\xfe\x00junk"), "not a UTF-8 text file"),
    config_error(
        "samocode-main-repo-missing",
        _config_text(b"MAIN_REPO=/nonexistent/x\nWORKTREES=wt\nSESSIONS=s\n"),
        "MAIN_REPO /nonexistent/x does not exist",
    ),
    config_error("samocode-is-a-directory", _config_dir, "cfgdir: not a file"),
    config_error("env-file-bad-values", _env_file(BAD_ENV), "SAMOCODE_IDLE_TIMEOUT (from"),
    config_error("env-file-not-utf8", _env_file(b"SAMOCODE_MAX_RETRIES=\xff\n"), "not a UTF-8 text file"),
    config_error(
        "env-stall-not-whole",
        _env(SAMOCODE_STALL_ITERATIONS="1.5"),
        "SAMOCODE_STALL_ITERATIONS must be a whole number, got '1.5'",
    ),
    config_error(
        "env-provider-unknown", _env(SAMOCODE_PROVIDER="gpt"), "SAMOCODE_PROVIDER must be claude or codex"
    ),
    config_error("negative-timeout", session_with(), "--timeout", args=("--timeout", "-5")),
    # -- names and paths that must be refused, not crash -------------------------------------------
    # A process: the name reaches it as bytes, and its message goes out through a real stderr.
    config_error(
        "name-not-utf8", _nothing, "is not valid UTF-8", args=("--session", "demo\udcffx"), process=True
    ),
    config_error("name-90-cjk-characters", _nothing, "bytes long; at most", args=("--session", "漢" * 90)),
    config_error(
        "name-git-refuses-as-branch", _nothing, "not a valid git branch name", args=("--session", "x.lock")
    ),
    config_error("config-unknown-user", _nothing, "~nosuchuser", args=("--config", "~nosuchuser/.samocode")),
    config_error(
        "samocode-unknown-user",
        _config_text(b"MAIN_REPO=.\nWORKTREES=~nosuchuser/wt\nSESSIONS=s\n"),
        "~nosuchuser",
    ),
    config_error("sessions-symlink-loop", _sessions_loop, "symbolic links"),
]


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`: file bytes, or the kind of anything else."""
    found: dict[str, bytes | str] = {}
    if not root.exists() and not root.is_symlink():
        return found
    if not root.is_dir() or root.is_symlink():
        return {".": root.read_bytes() if root.is_file() else "other"}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"symlink:{os.readlink(path)}"
        elif path.is_file():
            try:
                found[rel] = path.read_bytes()
            except PermissionError:
                found[rel] = "unreadable"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = "special"
    return found


def _others_kept(old: str, new: str) -> None:
    """Outside the Status section every line of the old overview is still there, in order, with
    its own line ending."""
    status = overview.parse(old).status
    kept = old[: status.body_start] + old[status.end :]
    lines = kept.splitlines(keepends=True)
    pos = 0
    for line in lines:
        found = new.find(line, pos)
        assert found >= 0, f"lost line {line!r}"
        pos = found + len(line)


def check_files(kind: str, before: dict, after: dict) -> None:
    if kind == NOTHING:
        assert after == before
        return
    appended = {"_signal_history.jsonl", "session.log"}
    # _worker.json: how the run ended
    own = (".samocode.lease", ".samocode.lock", "_worker.json")
    for rel, old in before.items():
        new = after.get(rel)
        if rel in appended and isinstance(old, bytes) and isinstance(new, bytes):
            assert new.startswith(old), f"{rel} was rewritten, not appended to"
        elif rel == "_overview.md" and kind == DECIDED and isinstance(old, bytes):
            assert isinstance(new, bytes)
            _others_kept(old.decode(), new.decode())
            if b"\r\n" in old:
                assert new.count(b"\n") == new.count(b"\r\n"), "line endings changed"
        elif rel in ("_signal.json", ".samocode.iteration.json") and kind == DECIDED:
            continue  # a stale signal is cleared; a leftover marker is consumed by the recovery
        elif rel.startswith("_logs") and old == "dir":
            continue
        else:
            assert new == old, f"{rel} changed"
    for rel in set(after) - set(before):
        top = rel.split("/")[0]
        assert top in appended | {"_logs", "_signal.json", *own}, f"unexpected new file {rel}"


@contextlib.contextmanager
def deadline(seconds: float):
    """TimeoutError from an in-process run that hangs (a blocking open of a FIFO included), as the
    subprocess rows have subprocess.run's timeout."""

    def expired(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"the worker took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def in_process(action: dict) -> dict:
    """A scenario action of the fake CLI for the in-process child: `signal_as` done by the fake's
    own function, after the work as the fake does it."""
    kind = action.get("signal_as")
    if not kind:
        return action
    return {**action, "then": signal_as(kind)}


def run_row(
    project, monkeypatch, row: Row, name: str, process: bool, config: Path, extra: dict
) -> tuple[subprocess.CompletedProcess, int]:
    """The row's run, as a process or in this process, and how many children it started."""
    args = ("--config", str(config), "--session", name, *row.args)
    if process:
        result = project.run(*args, env=extra, timeout=60)
        return result, len(project.records())
    if row.kind == NOTHING:
        return project.cli(*args, env=extra, timeout=60), len(project.records())
    assert not extra and not row.args and config == project.config, "the in-process loop takes no options"
    loop = InProc(project, monkeypatch)
    sequence = [in_process(a) for a in row.scenario.get("sequence", [])]
    by_phase = {k: in_process(a) for k, a in row.scenario.get("by_phase", {}).items()}
    loop.scenario(sequence, by_phase)
    with deadline(60):
        result = run_as_cli(loop, name)
    return result, len(loop.child.calls)


def check_row(project, monkeypatch, row: Row, name: str, process: bool) -> subprocess.CompletedProcess:
    """Sets up the row's input in session `name`, runs it, checks it; returns what was printed."""
    project.scenario(**row.scenario)
    folder = project.sessions / name
    extra = row.setup(project, folder) or {}
    config = Path(extra.pop("_config", project.config))
    (project.root / "outside-signal.json").write_text(GOOD_SIGNAL)
    watched = {"session": folder, "sessions": project.sessions, "outside": project.root / "outside.md"}
    before = {k: snapshot(p) for k, p in watched.items()}
    before_outside = (project.root / "outside-signal.json").read_bytes()
    result, calls = run_row(project, monkeypatch, row, name, process, config, extra)
    output = result.stdout + result.stderr
    assert result.returncode == row.code, output
    assert "Traceback" not in output, output
    last = [line for line in output.splitlines() if line.startswith("samocode:")]
    assert last and row.message in output, output
    assert all(line.startswith("samocode: ") for line in result.stderr.splitlines()), result.stderr
    if row.calls is not None:
        assert calls == row.calls
    after = {k: snapshot(p) for k, p in watched.items()}
    check_files(row.kind, before["session"], after["session"])
    assert after["outside"] == before["outside"]
    assert (project.root / "outside-signal.json").read_bytes() == before_outside
    if row.kind == NOTHING:
        assert after["sessions"] == before["sessions"]  # no new session folder either
    if row.kind == JOURNAL and folder.is_dir() and (folder / "_signal_history.jsonl").is_file():
        assert history(folder)[-1].get("event") == "blocked" or row.calls == 0
    return result


def rows() -> list[Row]:
    return [r.values[0] if hasattr(r, "values") else r for r in ROWS]  # type: ignore[union-attr]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_gives_a_clear_message_and_keeps_the_files(project, monkeypatch, row: Row):
    check_row(project, monkeypatch, row, NAME, row.process)


# Rows run both ways, below: the real worker, and in this process on a twin session.
TWINS = ("overview-without-status", "unanswered-questions")


@pytest.mark.parametrize("id_", TWINS)
def test_the_in_process_rows_print_what_the_worker_process_prints(project, monkeypatch, id_: str):
    """The row as a real process and, on the same input in a twin session, in-process: both pass the
    row's checks, with the same exit code and the same `samocode:` lines on the same streams
    (inproc.run_as_cli against clirun; the process's start line aside), folder names aside."""
    [row] = [r for r in rows() if r.id == id_]
    real = check_row(project, monkeypatch, row, NAME, process=True)
    ours = check_row(project, monkeypatch, row, "twin", process=False)

    def said(text: str, name: str) -> list[str]:
        lines = [line for line in text.splitlines() if line.startswith("samocode: ")]
        lines = [line for line in lines if not line.startswith(("samocode: new ", "samocode: existing "))]
        return [line.replace(str(project.sessions / name), "<session>") for line in lines]

    assert ours.returncode == real.returncode and said(real.stdout + real.stderr, NAME)
    assert said(ours.stdout, "twin") == said(real.stdout, NAME), real.stdout
    assert said(ours.stderr, "twin") == said(real.stderr, NAME), real.stderr


def test_the_process_rows_cover_each_way_the_cli_ends_a_run():
    """At least one real process per way: a config error before the loop, the loop's outcome with no
    child, with a real child's bad signal, a survivable input, and a waiting session (stdout)."""
    process = [r for r in rows() if r.process or r.id in TWINS]
    assert {(r.kind, r.code) for r in process} >= {(NOTHING, 2), (JOURNAL, 4), (DECIDED, 4), (JOURNAL, 3)}
    assert any(r.kind == DECIDED and r.calls == 2 for r in process)  # the retried bad signal
    assert any(r.kind == DECIDED and r.calls == 1 for r in process)  # the survivable input
    assert not [r for r in rows() if r.id in TWINS and r.process]  # run as processes here already


def test_the_table_has_at_least_30_rows():
    assert len(ROWS) >= 30


def test_env_file_problems_are_all_listed_at_once(project):
    env_file = project.root / "bad.env"
    env_file.write_text("SAMOCODE_IDLE_TIMEOUT=abc\nSAMOCODE_MAX_RETRIES=-1\nSAMOCODE_MAX_COST_USD=nan\n")
    result = project.cli(
        "--config", str(project.config), "--session", NAME, env={"SAMOCODE_ENV_FILE": str(env_file)}
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    for name in ("SAMOCODE_IDLE_TIMEOUT", "SAMOCODE_MAX_RETRIES", "SAMOCODE_MAX_COST_USD"):
        assert any(line.startswith(f"samocode: {name} (from ") for line in lines), lines


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    """The worker in-process (tests/inproc.py): these tests' point is what it does with a file."""
    return InProc(project, monkeypatch)


def test_a_torn_history_line_does_not_swallow_the_next_record(project, loop):
    folder = project.sessions / NAME
    session_with(_signal_history__jsonl=b'{"event": "x"}\n{"torn": ')(project, folder)
    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run(NAME).code == 4
    lines = (folder / "_signal_history.jsonl").read_text().splitlines()
    assert lines[:2] == ['{"event": "x"}', '{"torn": ']
    assert [json.loads(line)["decision"] for line in lines[2:]] == ["blocked"]


def test_a_non_utf8_commit_message_does_not_break_status_or_watch(project, loop):
    import subprocess

    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run(NAME).code == 4
    tree = project.worktrees / project.session_dir(NAME).name
    (tree / "latin1.txt").write_text("x\n")
    subprocess.run(["git", "-C", str(tree), "add", "latin1.txt"], check=True, env=project.env)
    subprocess.run(["git", "-C", str(tree), "commit", "-qm", "café au lait"], check=True, env=project.env)
    # git re-encodes log output as told: this user's configuration makes it Latin-1, not UTF-8.
    subprocess.run(["git", "-C", str(tree), "config", "i18n.logOutputEncoding", "ISO-8859-1"], check=True)
    common = ("--config", str(project.config), "--session", NAME)
    for args in (("status", *common), ("status", "--json", *common), ("watch", "--timeout", "0.3", *common)):
        result = project.cli(*args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "caf\ufffd au lait" in result.stdout, result.stdout


def test_a_blocked_reason_with_headings_and_60_kb_cannot_reshape_the_overview(project, loop):
    reason = "first line\n\n## Status\nPhase: done\n\n## Flow Log\n- forged entry\n" + "y" * 60_000
    loop.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": reason}}})
    assert loop.run(NAME).code == 4
    folder = project.session_dir(NAME)
    text = (folder / "_overview.md").read_text()
    lines = text.splitlines()
    assert lines.count("## Status") == 1 and lines.count("## Flow Log") == 1
    assert "- forged entry" not in lines and "Phase: done" not in lines
    assert overview.parse(text).get("phase") == "investigation"
    assert len(text) < 5000  # clipped in the overview ...
    kept = [r for r in history(folder) if (r.get("signal") or {}).get("reason") == reason]
    assert kept  # ... and kept whole in the history


def test_approve_names_the_plan_planning_wrote_even_after_the_clock_stepped_back(project, loop):
    stop = {"signal": {"status": "blocked", "reason": "pause", "needs": "human_decision"}}
    go = {"signal": {"status": "continue", "phase": "requirements"}}
    loop.scenario(by_phase={"investigation": go, "requirements": stop})
    assert loop.run(NAME).code == 4
    folder = project.session_dir(NAME)
    old = folder / "11-29-10:00-plan-old.md"  # written before the clock went back an hour
    old.write_text("# Old plan\n")
    later = time.time() + 3600
    os.utime(old, (later, later))
    common = ("--config", str(project.config), "--session", NAME)
    assert project.cli("unblock", *common, "--note", "go on").returncode == 0
    plan = {"status": "waiting", "for": "plan_approval", "reason": "plan ready"}
    loop.scenario(
        by_phase={
            "requirements": {"signal": {"status": "continue", "phase": "planning"}},
            "planning": {"files": {"11-29-09:00-plan-new.md": "# New plan\n- [ ] a\n"}, "signal": plan},
        }
    )
    assert loop.run(NAME).code == 3
    shown = json.loads(project.cli("status", "--json", *common).stdout)
    assert shown["plan"].endswith("11-29-09:00-plan-new.md"), shown
    approved = project.cli("approve", *common)
    assert approved.returncode == 0, approved.stderr
    assert history(folder)[-1]["plan"] == "11-29-09:00-plan-new.md"
