"""Fixtures for the real-CLI tests: the installed CLIs of each version set and a scripted model server.

Every test that uses `claude_bin` or `codex_bin` runs once per version set (pinned, then newest);
the session-scoped `cli_set` fixture makes each test process run all tests of one set before the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import realcli
from .model_server import ModelServer

MATRIX = "real_cli_matrix"  # the test reports' property that names a test's version set


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cli_set" in metafunc.fixturenames:
        sets = realcli.version_sets()
        ids = [s.label if isinstance(s, realcli.VersionSet) else f"{s.name}-skipped" for s in sets]
        metafunc.parametrize("cli_set", sets, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def cli_set(request: pytest.FixtureRequest) -> realcli.VersionSet:
    chosen = request.param
    if isinstance(chosen, realcli.Skipped):
        pytest.skip(f"{chosen.name} CLIs skipped: {chosen.reason}")
    realcli.ensure_installed(chosen)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each real-CLI test carries its version set for the summary line, which tests/conftest.py
    prints from the test reports: under pytest-xdist only those reach the process that prints."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        chosen = callspec.params.get("cli_set") if callspec is not None else None
        if isinstance(chosen, realcli.VersionSet):
            item.user_properties.append(
                (MATRIX, (chosen.name, f"claude {chosen.claude}, codex {chosen.codex}"))
            )
        elif isinstance(chosen, realcli.Skipped):
            item.user_properties.append((MATRIX, (chosen.name, f"skipped: {chosen.reason}")))
