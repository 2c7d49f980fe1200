"""Which provider a name means. Apart from the contract in `__init__`, which the providers import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.providers import Provider

if TYPE_CHECKING:
    from worker.config import Settings


def names() -> tuple[str, ...]:
    return ("claude", "codex")


def get_provider(name: str, settings: Settings) -> Provider:
    """The provider named `name`, its executable already found."""
    # Each imported only when named: start-up time matters, and a run uses one provider or two.
    if name == "claude":
        from worker.providers.claude import ClaudeProvider

        return ClaudeProvider.from_settings(settings)
    if name == "codex":
        from worker.providers.codex import CodexProvider

        return CodexProvider.from_settings(settings)
    raise ConfigError(f"unknown provider '{name}' (choose from: {', '.join(names())})")
