"""Which provider a name means. Apart from the contract in `__init__`, which the providers import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.providers import Provider
from worker.providers.claude import ClaudeProvider
from worker.providers.codex import CodexProvider

if TYPE_CHECKING:
    from worker.config import Settings


def names() -> tuple[str, ...]:
    return ("claude", "codex")


def get_provider(name: str, settings: Settings) -> Provider:
    """The provider named `name`, its executable already found."""
    if name == "claude":
        return ClaudeProvider.from_settings(settings)
    if name == "codex":
        return CodexProvider.from_settings(settings)
    raise ConfigError(f"unknown provider '{name}' (choose from: {', '.join(names())})")
