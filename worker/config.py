"""Settings: the project's `.samocode` file and the runtime settings, validated once.

Precedence: command line > environment > the user's settings file (`$XDG_CONFIG_HOME/samocode/env`,
default `~/.config/samocode/env`: outside any install folder, so plugin updates keep it) > `.env`
beside main.py > defaults. Every problem is collected and reported at once, as plain lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from worker import envfile
from worker.errors import ConfigError

INSTALL_ROOT = Path(__file__).resolve().parent.parent
REQUIRED_KEYS = ("MAIN_REPO", "WORKTREES", "SESSIONS")


@dataclass(frozen=True)
class Project:
    """What `.samocode` says: where the code, the worktrees and the sessions live."""

    config_file: Path
    main_repo: Path
    worktrees: Path
    sessions: Path


def _expanded(path: Path, what: str) -> Path:
    """`~` and `~user` expanded, or ConfigError naming the user that has no home here."""
    try:
        return path.expanduser()
    except RuntimeError:  # Python's way of saying that ~user names no user
        raise ConfigError(f"{what}: cannot expand '{str(path).split('/')[0]}': no such user") from None


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise ConfigError(f"{what} {path}: too many levels of symbolic links") from None


def load_project(path: Path) -> Project:
    """Read and check `.samocode`; create WORKTREES and SESSIONS when all is well."""
    path = _expanded(path, "--config")
    if path.is_dir() and (path / ".samocode").is_file():
        path = path / ".samocode"
    if not path.exists():
        raise ConfigError(f"{path}: .samocode file not found (create it with MAIN_REPO, WORKTREES, SESSIONS)")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    problems: list[str] = []
    values = envfile.read(path, problems)
    resolved: dict[str, Path] = {}
    for key in REQUIRED_KEYS:
        value = (values.get(key) or "").strip()
        if not value:
            problems.append(f"{path}: {key} is missing")
            continue
        try:
            where = _expanded(Path(os.path.expandvars(value)), f"{path}: {key}")
            resolved[key] = _resolved(where if where.is_absolute() else path.parent / where, f"{path}: {key}")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if "MAIN_REPO" in resolved and not resolved["MAIN_REPO"].is_dir():
        state = "is not a directory" if resolved["MAIN_REPO"].exists() else "does not exist"
        problems.append(f"{path}: MAIN_REPO {resolved['MAIN_REPO']} {state}")
    for key in ("WORKTREES", "SESSIONS"):
        made = resolved.get(key)
        if made is not None and made.exists() and not made.is_dir():
            problems.append(f"{path}: {key} {made} exists but is not a directory")
    if problems:
        raise ConfigError(problems)
    for key in ("WORKTREES", "SESSIONS"):
        try:
            resolved[key].mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problems.append(f"{path}: cannot create {key} {resolved[key]} ({exc.strerror})")
    if problems:
        raise ConfigError(problems)
    return Project(path, resolved["MAIN_REPO"], resolved["WORKTREES"], resolved["SESSIONS"])


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Field metadata: the variable that sets it."""

    provider: str = "claude"
    claude_path: str = "claude"
    claude_model: str = "opus"
    claude_max_turns: int = 300
    claude_timeout: float = 1800.0
    codex_path: str = "codex"
    codex_model: str = ""
    codex_timeout: float = 1800.0
    max_retries: int = 3
    retry_delay: float = 5.0
    branch_prefix: str = ""
    telegram_token: str = ""
    telegram_chat_id: str = ""
    telegram_api_base: str = "https://api.telegram.org"
    gate_wait: float = 0.0  # seconds a worker with Telegram waits at a gate for a reply; 0 = exit at once
    idle_timeout: float = 600.0
    kill_grace: float = 5.0
    max_wait: float = 6 * 3600.0
    usage_wait: float = 1800.0  # when a usage limit names no reset time
    max_cost_usd: float = 0.0  # 0 = no cap
    max_phase_cost_usd: float = 0.0
    stall_iterations: int = 3  # 0 = off
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    price_cached_per_mtok: float = 0.0
    signal_copy: int = 1  # 0 = no second copy of the signal from the CLI's final answer
    pause_at: float = 95.0  # percent of a rate-limit window; 0 = never pause before it closes
    fallback_provider: str = ""  # claude | codex: runs the iterations while the other is limited
    fallback_after: float = 900.0  # a usage reset further away than this switches to the fallback
    timeout_override: float = 0.0  # --timeout

    def masked(self) -> dict[str, object]:
        """For display: every value, the token hidden."""
        shown: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "telegram_token" and value:
                value = f"*** ({len(value)} chars)"
            shown[ENV_NAMES.get(f.name, f.name)] = value
        return shown


ENV_NAMES = {
    "provider": "SAMOCODE_PROVIDER",
    "claude_path": "CLAUDE_PATH",
    "claude_model": "CLAUDE_MODEL",
    "claude_max_turns": "CLAUDE_MAX_TURNS",
    "claude_timeout": "CLAUDE_TIMEOUT",
    "codex_path": "CODEX_PATH",
    "codex_model": "CODEX_MODEL",
    "codex_timeout": "CODEX_TIMEOUT",
    "max_retries": "SAMOCODE_MAX_RETRIES",
    "retry_delay": "SAMOCODE_RETRY_DELAY",
    "branch_prefix": "GIT_BRANCH_PREFIX",
    "telegram_token": "TELEGRAM_BOT_TOKEN",
    "telegram_chat_id": "TELEGRAM_CHAT_ID",
    "telegram_api_base": "TELEGRAM_API_BASE",
    "gate_wait": "SAMOCODE_GATE_WAIT",
    "idle_timeout": "SAMOCODE_IDLE_TIMEOUT",
    "kill_grace": "SAMOCODE_KILL_GRACE",
    "max_wait": "SAMOCODE_MAX_WAIT",
    "usage_wait": "SAMOCODE_USAGE_WAIT",
    "max_cost_usd": "SAMOCODE_MAX_COST_USD",
    "max_phase_cost_usd": "SAMOCODE_MAX_PHASE_COST_USD",
    "stall_iterations": "SAMOCODE_STALL_ITERATIONS",
    "price_input_per_mtok": "SAMOCODE_PRICE_INPUT_PER_MTOK",
    "price_output_per_mtok": "SAMOCODE_PRICE_OUTPUT_PER_MTOK",
    "price_cached_per_mtok": "SAMOCODE_PRICE_CACHED_PER_MTOK",
    "signal_copy": "SAMOCODE_SIGNAL_COPY",
    "pause_at": "SAMOCODE_PAUSE_AT",
    "fallback_provider": "SAMOCODE_FALLBACK_PROVIDER",
    "fallback_after": "SAMOCODE_FALLBACK_AFTER",
}
# Settings that must be above zero (the others may be zero, which means "off" where it applies).
_POSITIVE = {"claude_max_turns", "claude_timeout", "codex_timeout", "idle_timeout", "timeout_override"}


def gather(*loaders: Callable[[], object]) -> list:
    """Run every loader and return their results; one ConfigError lists every problem at once."""
    results: list = []
    problems: list[str] = []
    for load in loaders:
        try:
            results.append(load())
        except ConfigError as exc:
            problems += exc.problems
            results.append(None)
    if problems:
        raise ConfigError(problems)
    return results


SECRETS = frozenset({"TELEGRAM_BOT_TOKEN"})
ENVIRONMENT = "environment"
DEFAULT = "default"


def env_file_path(environ: Mapping[str, str]) -> Path:
    """The checkout's `.env` (SAMOCODE_ENV_FILE names another file, for tests and odd set-ups)."""
    return Path(environ.get("SAMOCODE_ENV_FILE") or INSTALL_ROOT / ".env")


def user_env_path(environ: Mapping[str, str]) -> Path:
    """The user's settings file, per the XDG base directory rules (a relative XDG_CONFIG_HOME is ignored)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "samocode" / "env"


def settings_files(environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The settings files in order of precedence, the strongest first."""
    return (user_env_path(environ), env_file_path(environ))


def raw_values(environ: Mapping[str, str], problems: list[str]) -> dict[str, tuple[str, str]]:
    """Each variable's text and where it came from ("environment" or a file's path), by precedence."""
    found: dict[str, tuple[str, str]] = {}
    for path in reversed(settings_files(environ)):  # weakest first: stronger ones overwrite
        if path.is_file():
            found.update({k: (v, str(path)) for k, v in envfile.read(path, problems).items()})
    found.update({k: (v, ENVIRONMENT) for k, v in environ.items() if v != ""})
    return found


def sources(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """For `samocode config`: every setting's shown value (secrets masked) and where it came from."""
    found = raw_values(environ, [])
    defaults = Settings()
    shown: dict[str, tuple[str, str]] = {}
    for f in fields(Settings):
        name = ENV_NAMES.get(f.name)
        if name is None:
            continue
        value, origin = found.get(name, (str(getattr(defaults, f.name)), DEFAULT))
        if name in SECRETS and value and origin != DEFAULT:
            value = f"*** ({len(value)} chars)"
        shown[name] = (value, origin)
    return shown


def load_settings(environ: Mapping[str, str], overrides: Mapping[str, object] | None = None) -> Settings:
    """Settings from defaults < `.env` < user file < environment < command line; ConfigError lists all
    problems."""
    problems: list[str] = []
    merged = raw_values(environ, problems)
    values: dict[str, Any] = {}  # field name -> value already converted to the field's type
    defaults = Settings()
    for f in fields(Settings):
        name = ENV_NAMES.get(f.name)
        raw, source = merged.get(name, (None, "")) if name else (None, "")
        if raw is None:
            continue
        default = getattr(defaults, f.name)
        origin = name if source == ENVIRONMENT else f"{name} (from {source})"
        if isinstance(default, str):
            values[f.name] = raw.strip()
            continue
        try:
            number: float = int(raw) if isinstance(default, int) else float(raw)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            problems.append(f"{origin} must be {kind}, got '{raw}'")
            continue
        if number < 0 or (number == 0 and f.name in _POSITIVE) or number != number:
            problems.append(
                f"{origin} must be {'above' if f.name in _POSITIVE else 'at least'} 0, got '{raw}'"
            )
            continue
        values[f.name] = number
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    provider = str(values.get("provider", defaults.provider))
    if provider not in ("claude", "codex"):
        problems.append(f"SAMOCODE_PROVIDER must be claude or codex, got '{provider}'")
    fallback = str(values.get("fallback_provider", ""))
    if fallback not in ("", "claude", "codex"):
        problems.append(f"SAMOCODE_FALLBACK_PROVIDER must be claude or codex, got '{fallback}'")
    if problems:
        raise ConfigError(problems)
    return Settings(**values)
