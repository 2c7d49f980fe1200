"""Settings that belong to the user: environment > user settings file (XDG) > the checkout's .env > default,
and `samocode config` saying where each value came from, secrets masked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import cli
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st
from worker_helpers import put_into

from worker import envfile
from worker.config import ENVIRONMENT, load_settings, sources, user_env_path
from worker.errors import ConfigError

TOKEN = "123456:SECRET-token-value"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    (home / ".config" / "samocode").mkdir(parents=True)
    return {
        "home": home,
        "user": home / ".config" / "samocode" / "env",
        "checkout": tmp_path / "checkout.env",
    }


def env_of(files: dict[str, Path], **extra: str) -> dict[str, str]:
    return {"HOME": str(files["home"]), "SAMOCODE_ENV_FILE": str(files["checkout"]), **extra}


def test_user_file_is_under_xdg_config_home_else_dot_config(tmp_path: Path) -> None:
    assert user_env_path({"HOME": "/h"}) == Path("/h/.config/samocode/env")
    assert user_env_path({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path("/x/samocode/env")
    # The spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    assert user_env_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path("/h/.config/samocode/env")


@pytest.mark.parametrize(
    ("in_env", "in_user", "in_checkout", "want"),
    [
        ("41", "42", "43", "41"),
        (None, "42", "43", "42"),
        (None, None, "43", "43"),
        (None, None, None, ""),
        ("", "42", "43", "42"),  # an empty variable counts as unset
    ],
    ids=["environment", "user-file", "checkout-env", "default", "empty-env"],
)
def test_precedence_of_each_source(
    files: dict[str, Path], in_env: str | None, in_user: str | None, in_checkout: str | None, want: str
) -> None:
    if in_user is not None:
        files["user"].write_text(f"TELEGRAM_CHAT_ID={in_user}\n")
    if in_checkout is not None:
        files["checkout"].write_text(f"TELEGRAM_CHAT_ID={in_checkout}\n")
    extra = {} if in_env is None else {"TELEGRAM_CHAT_ID": in_env}
    assert load_settings(env_of(files, **extra)).telegram_chat_id == want


def test_files_mix_per_variable(files: dict[str, Path]) -> None:
    files["user"].write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nSAMOCODE_MAX_COST_USD=5\n")
    files["checkout"].write_text("SAMOCODE_MAX_COST_USD=9\nSAMOCODE_STALL_ITERATIONS=0\nTELEGRAM_CHAT_ID=7\n")
    settings = load_settings(env_of(files, SAMOCODE_IDLE_TIMEOUT="30"))
    assert settings.telegram_token == TOKEN
    assert settings.max_cost_usd == 5.0  # the user file beats the checkout's .env
    assert settings.stall_iterations == 0 and settings.telegram_chat_id == "7"
    assert settings.idle_timeout == 30.0


def test_xdg_config_home_moves_the_user_file(files: dict[str, Path], tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "samocode").mkdir(parents=True)
    (xdg / "samocode" / "env").write_text("TELEGRAM_CHAT_ID=99\n")
    files["user"].write_text("TELEGRAM_CHAT_ID=42\n")
    assert load_settings(env_of(files, XDG_CONFIG_HOME=str(xdg))).telegram_chat_id == "99"


def test_a_bad_value_names_the_file_it_came_from(files: dict[str, Path]) -> None:
    files["user"].write_text("SAMOCODE_MAX_COST_USD=lots\n")
    with pytest.raises(ConfigError) as failed:
        load_settings(env_of(files))
    assert str(failed.value) == f"SAMOCODE_MAX_COST_USD (from {files['user']}) must be a number, got 'lots'"


def test_an_unreadable_user_file_is_a_config_problem(files: dict[str, Path]) -> None:
    files["user"].write_bytes(b"TELEGRAM_CHAT_ID=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_settings(env_of(files))


def test_sources_say_where_each_value_came_from_and_mask_the_token(files: dict[str, Path]) -> None:
    files["user"].write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
    files["checkout"].write_text("TELEGRAM_CHAT_ID=7\n")
    shown = sources(env_of(files, SAMOCODE_MAX_COST_USD="3"))
    assert shown["TELEGRAM_BOT_TOKEN"] == (f"*** ({len(TOKEN)} chars)", str(files["user"]))
    assert shown["TELEGRAM_CHAT_ID"] == ("7", str(files["checkout"]))
    assert shown["SAMOCODE_MAX_COST_USD"] == ("3", ENVIRONMENT)
    assert shown["CLAUDE_MODEL"] == ("opus", "default")


def test_config_command_prints_sources_and_never_the_token(files: dict[str, Path]) -> None:
    files["user"].write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID=42\n")
    env = env_of(files, PATH="/usr/bin:/bin", TELEGRAM_API_BASE="http://127.0.0.1:9")
    done = cli(("config",), env, files["home"], timeout=60)  # worker.cli.main in this process
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"user settings: {files['user']}" in lines
    assert f"checkout .env: {files['checkout']} (none)" in lines
    assert f"TELEGRAM_BOT_TOKEN=*** ({len(TOKEN)} chars)  ({files['user']})" in lines
    assert f"TELEGRAM_CHAT_ID=42  ({files['user']})" in lines
    assert "TELEGRAM_API_BASE=http://127.0.0.1:9  (environment)" in lines
    assert TOKEN not in done.stdout + done.stderr and "SECRET" not in done.stdout


# -- the plain reader and dotenv ---------------------------------------------------------------------------

_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_PLAIN_VALUE = st.text("aZ09_./:@%+,~=-", max_size=12)
_PLAIN_LINE = st.one_of(
    st.tuples(_KEY, _PLAIN_VALUE).map("=".join),
    st.text(max_size=12).filter(lambda t: "\n" not in t and "\r" not in t).map(lambda t: "#" + t),
    st.just(""),
)
# A plain line with something put in that dotenv reads otherwise, or the plain reader must decline.
_ODD = st.sampled_from([*"'\" #$\\\r\t\x0b\u00e9\ufeff=", "export ", " #", "\r\n", "${A}"])


def _put(line: str, odd: str, where: str | int) -> str:
    return put_into(line, odd, where, "=")


# Put where a value or a line starts or ends, or anywhere.
_NEAR_PLAIN = st.builds(
    _put, _PLAIN_LINE, _ODD, st.one_of(st.sampled_from(["start", "value", "end"]), st.integers(0, 20))
)


@given(st.lists(_PLAIN_LINE, max_size=8), st.booleans())
def test_a_plain_file_reads_as_dotenv_reads_it(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_newline else "")
    assert envfile.plain(text) == dotenv_values(stream=io.StringIO(text), interpolate=False)


@settings(max_examples=500)
@given(st.lists(st.one_of(_PLAIN_LINE, _NEAR_PLAIN), max_size=4))
def test_the_plain_reader_declines_what_it_would_read_otherwise(lines: list[str]) -> None:
    text = "\n".join(lines)
    found = envfile.plain(text)
    assert found is None or found == dotenv_values(stream=io.StringIO(text), interpolate=False)


def test_a_file_that_is_not_plain_is_read_by_dotenv(tmp_path: Path) -> None:
    path = tmp_path / ".samocode"
    path.write_text("export A=1\nB='two words'\nC=x # note\nD=plain\nE\n")
    assert envfile.plain(path.read_text()) is None
    assert envfile.read(path, []) == {"A": "1", "B": "two words", "C": "x", "D": "plain"}
