"""The plugin icon meets the plugin directory's rule (a square PNG, 512-2048 px per side, under 2 MB,
at .claude-plugin/icon.png) and is exactly what .claude-plugin/make_icon.py draws."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

ICON = Path(__file__).resolve().parents[1] / ".claude-plugin" / "icon.png"


def test_icon_is_a_square_png_of_an_accepted_size() -> None:
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and 512 <= width <= 2048
    assert len(data) < 2 * 1024 * 1024


def test_icon_is_what_the_script_draws() -> None:
    spec = importlib.util.spec_from_file_location("make_icon", ICON.with_name("make_icon.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.png_bytes() == ICON.read_bytes()
