"""Child environments that point the real CLIs at a loopback model server and nowhere else.

Both builders start from a small allow-list of the parent's variables, so nothing of the developer's
own setup (API keys, CLAUDECODE, proxies, real config folders) reaches the CLI.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path

_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM", "SYSTEMROOT")
FAKE_OPENAI_KEY_VAR = "FAKE_OPENAI_API_KEY"
CODEX_MODEL = "gpt-5.5"


class Login(str, enum.Enum):
    """How `claude` authenticates: an API key, or a subscription (OAuth) login."""

    API_KEY = "api_key"  # ANTHROPIC_API_KEY: unified rate-limit headers are ignored
    OAUTH = "oauth"  # CLAUDE_CODE_OAUTH_TOKEN: rate_limit_event lines, no retry on a rejected 429


def base_env(home: Path, parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's locale and PATH, a scratch HOME, and nothing else."""
    parent = os.environ if parent is None else parent
    env = {k: parent[k] for k in _KEEP if k in parent}
    env["HOME"] = str(home)
    return env


def claude_env(
    home: Path,
    port: int,
    *,
    login: Login = Login.API_KEY,
    max_retries: int = 0,
    api_timeout_ms: int = 20_000,
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for `claude -p` talking to http://127.0.0.1:PORT with a scratch HOME.

    max_retries is CLAUDE_CODE_MAX_RETRIES (the CLI's default is 10 with backoff: minutes);
    api_timeout_ms bounds a request that never gets an answer (the CLI's default is 600 s).
    """
    home.mkdir(parents=True, exist_ok=True)
    env = base_env(home, parent)
    env.update(
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_MAX_RETRIES=str(max_retries),
        API_TIMEOUT_MS=str(api_timeout_ms),
    )
    if login is Login.OAUTH:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-test"
    else:
        env["ANTHROPIC_API_KEY"] = "sk-test"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root the CLI refuses --dangerously-skip-permissions unless told it is in a sandbox.
        env["IS_SANDBOX"] = "1"
    return env


def codex_config(
    port: int, *, model: str = CODEX_MODEL, max_retries: int = 0, stream_idle_timeout_ms: int | None = None
) -> str:
    """config.toml text that routes `codex exec` to the loopback server with no -c flags.

    stream_idle_timeout_ms bounds a stalled stream (codex's default is 300 s); None leaves the default.
    """
    idle = "" if stream_idle_timeout_ms is None else f"stream_idle_timeout_ms = {stream_idle_timeout_ms}\n"
    return (
        f'model = "{model}"\n'
        'model_provider = "fake"\n'
        "check_for_update_on_startup = false\n"
        "\n"
        "[model_providers.fake]\n"
        'name = "fake"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\n'
        f'env_key = "{FAKE_OPENAI_KEY_VAR}"\n'
        'wire_api = "responses"\n'
        f"request_max_retries = {max_retries}\n"
        f"stream_max_retries = {max_retries}\n"
        f"{idle}"
        "\n"
        "[analytics]\n"
        "enabled = false\n"
        "\n"
        "# The curated-plugins sync looks up api.github.com and chatgpt.com: nothing to reach from a test.\n"
        "[features]\n"
        "plugins = false\n"
    )


def codex_env(
    home: Path,
    port: int,
    *,
    model: str = CODEX_MODEL,
    max_retries: int = 0,
    stream_idle_timeout_ms: int | None = None,
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for `codex exec` with CODEX_HOME=HOME/.codex holding a config.toml for the server.

    Writes the config file (CODEX_HOME must exist or codex exits 1).
    """
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        codex_config(
            port, model=model, max_retries=max_retries, stream_idle_timeout_ms=stream_idle_timeout_ms
        )
    )
    env = base_env(home, parent)
    env.update({"CODEX_HOME": str(codex_home), FAKE_OPENAI_KEY_VAR: "sk-test"})
    return env
