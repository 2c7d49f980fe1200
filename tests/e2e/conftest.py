"""Fixtures for the real-CLI tests: the installed CLIs and a scripted model server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import realcli
from .model_server import ModelServer


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    return realcli.claude_path()


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    return realcli.codex_path()


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A started server with an empty script; a test sets `model_server.script` before running a CLI."""
    with ModelServer() as server:
        yield server
