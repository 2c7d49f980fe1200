"""The worker's own Python environment when samocode runs as a Claude Code plugin.

The skill's launcher runs this file with the system `python3 -I` before every worker command, so it
uses the standard library only, works on Python 3.10, and imports nothing from the worker. It finds the
plugin's persistent data folder (which survives plugin updates and is removed by `claude plugin
uninstall`), makes `<data>/venv` with the worker's dependencies on first need or when they changed
(a stamp in the venv records which), and prints the venv's python for the launcher to exec.

The data folder: `$CLAUDE_PLUGIN_DATA` when set (hooks get it); otherwise, since the Bash tool that
runs the skill's commands does not get it (measured on Claude Code 2.1.197 and 2.1.332), it is worked
out as the CLI names it, `<claude home>/plugins/data/<plugin>-<marketplace>/`, from where this plugin's
files are: the CLI's plugin cache names the marketplace in the path, and a local directory marketplace
(loaded in place) is found in `plugins/known_marketplaces.json`.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

EXIT_READY = 0
EXIT_FAILED = 2  # the launcher's (and the worker's) usage/config error code
EXIT_NOT_A_PLUGIN = 3  # no plugin data folder: the launcher tries its other routes
STAMP = ".samocode-deps"
MIN_PYTHON = (3, 10)
_PIP_TIMEOUT = 900  # seconds for the whole pip install; pip's own --timeout bounds each connection


class SetupError(Exception):
    """The environment could not be made; the message is one line for the user."""


def claude_home(environ: Mapping[str, str]) -> Path:
    configured = environ.get("CLAUDE_CONFIG_DIR")
    return (
        Path(configured).expanduser()
        if configured
        else Path(environ.get("HOME", "~")).expanduser() / ".claude"
    )


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def plugin_name(root: Path) -> str | None:
    name = _json(root / ".claude-plugin" / "plugin.json").get("name")
    return name if isinstance(name, str) and name else None


def _under(path: Path, folder: Path) -> tuple[str, ...] | None:
    """The parts of path below folder (both resolved), or None when it is not below it."""
    try:
        return path.resolve().relative_to(folder.resolve()).parts
    except (ValueError, OSError):
        return None


def plugin_data_dir(root: Path, environ: Mapping[str, str]) -> Path | None:
    """The plugin's persistent data folder, or None when these files are not an installed plugin."""
    if environ.get("CLAUDE_PLUGIN_DATA"):
        return Path(environ["CLAUDE_PLUGIN_DATA"])
    name = plugin_name(root)
    if name is None:
        return None
    plugins = claude_home(environ) / "plugins"
    for kept in ("cache", "marketplaces"):  # cache/<mkt>/<plugin>/<version>/, marketplaces/<mkt>/...
        parts = _under(root, plugins / kept)
        if parts:
            return plugins / "data" / f"{name}-{parts[0]}"
    installed = _json(plugins / "installed_plugins.json").get("plugins") or {}
    for marketplace, entry in sorted(_json(plugins / "known_marketplaces.json").items()):
        if f"{name}@{marketplace}" not in installed or not isinstance(entry, dict):
            continue
        source = raw if isinstance(raw := entry.get("source"), dict) else {}
        for where in (entry.get("installLocation"), source.get("path")):
            if isinstance(where, str) and where and _under(root, Path(where)) is not None:
                return plugins / "data" / f"{name}-{marketplace}"
    return None


def requirements(root: Path) -> list[str]:
    """pyproject.toml's [project] dependencies (a plain parse: tomllib is 3.11+)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", project.group(1) if project else "", re.M | re.S)
    if not block:
        raise SetupError(f"{root / 'pyproject.toml'}: no [project] dependencies list")
    return re.findall(r"""["']([^"']+)["']""", block.group(1))


def stamp_of(reqs: Sequence[str], python: tuple[int, ...] = tuple(sys.version_info[:2])) -> str:
    digest = hashlib.sha256("\n".join(sorted(reqs)).encode()).hexdigest()
    return f"python {python[0]}.{python[1]} deps {digest}\n"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_ready(venv: Path, stamp: str) -> bool:
    try:
        return (venv / STAMP).read_text() == stamp and venv_python(venv).exists()
    except OSError:
        return False


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=_PIP_TIMEOUT, stdin=subprocess.DEVNULL
    )


def _failure_line(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")] or lines
    return errors[-1][:300] if errors else f"exit {done.returncode}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build(venv: Path, reqs: Sequence[str], stamp: str, run: Runner = _run) -> None:
    """A fresh venv with reqs, made beside the old one and swapped in when complete (a worker running
    from the old one keeps finding packages at the same path), so a half-made venv is never used."""
    partial = venv.with_name(venv.name + ".partial")
    _remove(partial)  # left by a build that was killed
    made = run([sys.executable, "-m", "venv", str(partial)])
    if made.returncode != 0:
        _remove(partial)
        raise SetupError(f"python3 -m venv failed: {_failure_line(made)}")
    pip = [str(venv_python(partial)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    # No cache: nothing of samocode's outside its data folder; short network timeouts: offline fails fast.
    pip += ["--no-cache-dir", "--timeout", "15", "--retries", "1", *reqs]
    try:
        installed = run(pip)
    except subprocess.TimeoutExpired:
        installed = None
    if installed is None or installed.returncode != 0:
        _remove(partial)
        why = f"did not finish within {_PIP_TIMEOUT} s" if installed is None else _failure_line(installed)
        raise SetupError(f"pip could not install {', '.join(reqs)} ({why})")
    (partial / STAMP).write_text(stamp)
    old = venv.with_name(f"{venv.name}.old-{os.getpid()}")
    if venv.exists() or venv.is_symlink():
        venv.rename(old)
    partial.rename(venv)  # a venv run by its bin/python does not mind having moved
    _remove(old)


def ensure(
    data: Path,
    reqs: Sequence[str],
    progress: Callable[[str], None],
    *,
    run: Runner = _run,
    wait: float = 900.0,
    force: bool = False,
) -> Path:
    """`<data>/venv` ready for these requirements; builds it under a lock. Returns its python."""
    venv = data / "venv"
    stamp = stamp_of(reqs)
    if not force and is_ready(venv, stamp):
        return venv_python(venv)
    try:
        data.mkdir(parents=True, exist_ok=True)
        lock = (data / "venv.lock").open("w")
    except OSError as exc:
        raise SetupError(f"cannot write {data} ({exc.strerror})") from None
    with lock:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise SetupError(
                        f"another samocode has been setting up {venv} for {wait:.0f} s"
                    ) from None
                if not told:
                    progress(f"samocode: waiting for another samocode to finish setting up {venv}")
                    told = True
                time.sleep(0.2)
        if not force and is_ready(venv, stamp):  # the other one made it meanwhile
            return venv_python(venv)
        progress(
            f"samocode: setting up the worker's Python environment in {venv} (first use or new dependencies)"
        )
        try:
            build(venv, reqs, stamp, run)
        except OSError as exc:
            raise SetupError(f"cannot write {venv} ({exc.strerror or exc})") from None
    return venv_python(venv)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the plugin's folder (holds main.py)")
    parser.add_argument(
        "--launcher", default="samocode", help="how the user runs the launcher (for messages)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the environment is ready")
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    data = plugin_data_dir(args.root, environ)
    if data is None:
        return EXIT_NOT_A_PLUGIN
    fix = f'run: "{args.launcher}" setup'
    if sys.version_info[:2] < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        print(
            f"samocode: the worker needs Python 3.10 or newer, python3 is {found}; install one, then {fix}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        python = ensure(
            data,
            requirements(args.root),
            lambda line: print(line, file=sys.stderr, flush=True),
            force=args.force,
        )
    except (SetupError, OSError) as exc:
        print(
            f"samocode: could not set up the worker's Python environment in {data / 'venv'}: {exc}. "
            f"When the package index is reachable (check the network, or PIP_INDEX_URL for a mirror), {fix}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(python)
    return EXIT_READY


if __name__ == "__main__":
    sys.exit(main())
