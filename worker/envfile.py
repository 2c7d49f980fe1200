"""Reading `.samocode` and the settings files: python-dotenv's result, without its import cost when
the file is plain.

A file of only plain lines (`KEY=value` with a simple value, `#` comment lines, empty lines) is read
here; anything else (quotes, `export`, spaces, `$`, backslashes, inline comments, CR) goes to
dotenv, which imports logging and tempfile: 7 ms of every `status`. tests/test_settings.py checks
the two agree on every plain file.
"""

from __future__ import annotations

import re
from pathlib import Path

# One plain line: what dotenv reads as the same key and value, character for character.
_PLAIN = re.compile(r"(?:#.*|([A-Za-z_][A-Za-z0-9_]*)=([A-Za-z0-9_./:@%+,~=-]*))?", re.ASCII)


def plain(text: str) -> dict[str, str] | None:
    """The keys and values of a file of plain lines only, else None."""
    if "\r" in text:  # dotenv reads in universal-newline mode
        return None
    values: dict[str, str] = {}
    for line in text.split("\n"):
        match = _PLAIN.fullmatch(line)
        if match is None:
            return None
        if match[1] is not None:
            values[match[1]] = match[2]
    return values


def read(path: Path, problems: list[str]) -> dict[str, str]:
    """The file's keys and values (a key without a value is left out); a file that cannot be read
    or is not UTF-8 is a problem, and no values."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path}: not a UTF-8 text file")
        return {}
    except OSError as exc:
        problems.append(f"{path}: cannot read ({exc.strerror})")
        return {}
    found = plain(text)
    if found is not None:
        return found
    from dotenv import dotenv_values  # imported here: it costs 7 ms, and most files are plain

    values = dotenv_values(path, interpolate=False)
    return {k: v for k, v in values.items() if v is not None}
