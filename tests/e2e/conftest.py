"""Fixtures for the real-CLI tests: the installed CLIs of each version set and a scripted model server.

Every test that uses `claude_bin` or `codex_bin` runs once per version set (pinned, then newest);
the session-scoped `cli_set` fixture makes pytest run all tests of one set before the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import realcli
from .model_server import ModelServer

_RAN: dict[str, str] = {}  # set name -> what happened, for the summary line


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cli_set" in metafunc.fixturenames:
        sets = realcli.version_sets()
        ids = [s.label if isinstance(s, realcli.VersionSet) else f"{s.name}-skipped" for s in sets]
        metafunc.parametrize("cli_set", sets, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def cli_set(request: pytest.FixtureRequest) -> realcli.VersionSet:
    chosen = request.param
    if isinstance(chosen, realcli.Skipped):
        _RAN[chosen.name] = f"skipped: {chosen.reason}"
        pytest.skip(f"{chosen.name} CLIs skipped: {chosen.reason}")
    realcli.ensure_installed(chosen)
    _RAN[chosen.name] = f"claude {chosen.claude}, codex {chosen.codex}"
    return chosen


@pytest.fixture(scope="session")
def claude_bin(cli_set: realcli.VersionSet) -> Path:
    return realcli.claude_path(cli_set)


@pytest.fixture(scope="session")
def codex_bin(cli_set: realcli.VersionSet) -> Path:
    return realcli.codex_path(cli_set)


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A started server with an empty script; a test sets `model_server.script` before running a CLI."""
    with ModelServer() as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RAN:
        lines = [f"{name}: {what}" for name, what in sorted(_RAN.items(), key=lambda kv: kv[0] != "pinned")]
        terminalreporter.write_line("real-CLI matrix: " + "; ".join(lines))
