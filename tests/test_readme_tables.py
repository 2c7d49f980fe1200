"""The README's exit-code table and its settings (sentence and rails table) must match the code.

The checks are functions returning a list of problems, so the negative tests at the end can feed
them mutated README texts and prove each one bites.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from worker.config import ENV_NAMES, Settings
from worker.errors import ExitCode

README = Path(__file__).resolve().parent.parent / "README.md"

# Settings whose name the README may use without being one of ENV_NAMES: read by the code, for tests.
_NOT_SETTINGS = {"SAMOCODE_ENV_FILE", "SAMOCODE_TEST_CLOCK_FILE", "SAMOCODE_TEST_CRASH_AT"}


def _section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    if not match:
        raise AssertionError(f"README has no section '{heading}'")
    return match.group(1)


def _rows(section: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `section`, cells stripped."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def _expand(name: str) -> list[str]:
    """SAMOCODE_PRICE_{INPUT,OUTPUT}_PER_MTOK -> both names."""
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return [name]
    return [n for part in match.group(1).split(",") for n in _expand(name.replace(match.group(0), part, 1))]


def exit_code_problems(text: str) -> list[str]:
    documented: list[int] = []
    for row in _rows(_section(text, "Exit codes")):
        for cell in row[0].split("/"):
            if not cell.strip().isdigit():
                return [f"exit-code row '{row[0]}' is not a number"]
            documented.append(int(cell))
    problems = [f"ExitCode.{c.name} ({c.value}) has no row" for c in ExitCode if c.value not in documented]
    known = {c.value for c in ExitCode}
    problems += [f"row for exit code {n}, which ExitCode does not have" for n in documented if n not in known]
    problems += [f"exit code {n} has two rows" for n in set(documented) if documented.count(n) > 1]
    return problems


def readme_settings(text: str) -> dict[str, list[str | None]]:
    """Every setting the README names in the settings sentence or the rails table, with the default it
    states there (None: it states none)."""
    found: dict[str, list[str | None]] = {}
    sentence = re.search(r"^Settings come from the environment.*?(?=\n\n)", text, re.M | re.S)
    if not sentence:
        raise AssertionError("README has no settings sentence ('Settings come from the environment …')")
    for name, default in re.findall(r"`([A-Z][A-Z0-9_]+)`(?: \(([^)]*)\))?", sentence.group(0)):
        found.setdefault(name, []).append(default.split(";")[0].strip() or None)
    for row in _rows(_section(text, "Reliability rails")):
        for name in _expand(row[0].strip("`")):
            found.setdefault(name, []).append(row[1])
    return found


def _states(stated: str | None, default: object) -> bool:
    """Whether the README's words for a default say the code's default."""
    if isinstance(default, str):
        if default:
            return stated == default
        # Unset: nothing said, "off", or the CLI's own choice ("your Codex default").
        return stated is None or stated == "off" or stated.startswith("your ")
    if stated is None or not isinstance(default, (int, float)):
        return False
    if default == 0:
        return stated in ("off", "0 (off)")
    return re.fullmatch(rf"{default:g}( s)?", stated) is not None


def settings_problems(text: str) -> list[str]:
    documented = readme_settings(text)
    defaults = Settings()
    problems: list[str] = []
    for f in fields(Settings):
        name = ENV_NAMES.get(f.name)
        if name is None:
            continue  # set on the command line only (--timeout)
        default = getattr(defaults, f.name)
        if name not in documented:
            problems.append(f"{name} (default {default!r}) is not in the README")
        for stated in documented.get(name, []):
            if not _states(stated, default):
                problems.append(f"{name}: README says default {stated!r}, the code has {default!r}")
    read = set(ENV_NAMES.values())
    problems += [f"README names {n}, which the worker does not read" for n in documented if n not in read]
    for name in sorted(set(re.findall(r"\bSAMOCODE_[A-Z0-9_]*[A-Z0-9]\b", text))):
        if name not in read and name not in _NOT_SETTINGS and name not in documented:
            problems.append(f"README names {name}, which the worker does not read")
    return problems


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_exit_code_has_a_readme_row_and_every_row_a_code():
    assert exit_code_problems(_readme()) == []


def test_every_setting_is_in_the_readme_with_its_default_and_no_other_is():
    assert settings_problems(_readme()) == []


# --- the checks bite --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("| 10 | `start`", "| 11 | `start`", "ExitCode.NOT_STARTED (10) has no row"),
        ("| 129 / 130 / 143 |", "| 129 / 130 |", "ExitCode.TERMINATED (143) has no row"),
        ("| 8 | `--max-iterations`", "| 8 | x |\n| 12 | `--max-iterations`", "row for exit code 12"),
    ],
)
def test_exit_code_check_bites(old, new, expect):
    text = _readme()
    assert old in text
    problems = exit_code_problems(text.replace(old, new, 1))
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        (
            "`CLAUDE_MAX_TURNS` (300)",
            "`CLAUDE_MAX_TURNS` (200)",
            "CLAUDE_MAX_TURNS: README says default '200'",
        ),
        ("`CLAUDE_MODEL` (opus)", "`CLAUDE_MODEL` (sonnet)", "CLAUDE_MODEL: README says default 'sonnet'"),
        ("`CLAUDE_TIMEOUT` (1800 s),", "", "CLAUDE_TIMEOUT (default 1800.0) is not in the README"),
        ("| `SAMOCODE_KILL_GRACE` | 5 s |", "| `SAMOCODE_KILL_GRACE` | 6 s |", "SAMOCODE_KILL_GRACE: README"),
        (
            "| `SAMOCODE_MAX_COST_USD` | off |",
            "| `SAMOCODE_MAX_COST_USD` | 10 |",
            "SAMOCODE_MAX_COST_USD: README",
        ),
        ("`GIT_BRANCH_PREFIX`,", "`GIT_BRANCH_PREFIX`, `SAMOCODE_COLOR` (1),", "README names SAMOCODE_COLOR"),
        (
            "`GIT_BRANCH_PREFIX`,",
            "`GIT_BRANCH_PREFIX`, `CLAUDE_EFFORT` (high),",
            "README names CLAUDE_EFFORT",
        ),
        ("| `SAMOCODE_PAUSE_AT` |", "| `SAMOCODE_PAUSE_AFTER` |", "SAMOCODE_PAUSE_AT (default 95.0) is not"),
        (
            "estimated from `SAMOCODE_PRICE_*`",
            "estimated from `SAMOCODE_PRICES`",
            "README names SAMOCODE_PRICES",
        ),
    ],
)
def test_settings_check_bites(old, new, expect):
    text = _readme()
    assert old in text
    problems = settings_problems(text.replace(old, new, 1))
    assert any(expect in p for p in problems), problems
