"""Draws .claude-plugin/icon.png (512x512, the plugin directory's smallest accepted size) with zlib and
struct only, so the icon is reproducible without network or image libraries: `python3 make_icon.py`.

The picture: a loop (the worker's iterations) around a play triangle, on a rounded dark square.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

SIZE = 512
BACKGROUND = (24, 28, 38)
RING = (255, 153, 51)
ARROW = (240, 240, 240)


def _inside_rounded_square(x: float, y: float, radius: float = 96) -> bool:
    dx = max(radius - x, 0, x - (SIZE - radius))
    dy = max(radius - y, 0, y - (SIZE - radius))
    return dx * dx + dy * dy <= radius * radius


def _pixel(x: int, y: int) -> tuple[int, int, int, int]:
    cx, cy = x + 0.5, y + 0.5
    if not _inside_rounded_square(cx, cy):
        return (0, 0, 0, 0)
    dx, dy = cx - SIZE / 2, cy - SIZE / 2
    r = math.hypot(dx, dy)
    angle = math.degrees(math.atan2(dy, dx)) % 360
    # The ring, with a gap at the top right where the arrow head sits.
    if 150 <= r <= 190 and not (285 <= angle <= 330):
        return (*RING, 255)
    # The arrow head closing the loop: a triangle pointing clockwise at the gap.
    hx, hy = SIZE / 2 + 170 * math.cos(math.radians(285)), SIZE / 2 + 170 * math.sin(math.radians(285))
    if _in_triangle(cx, cy, (hx - 45, hy - 55), (hx - 45, hy + 55), (hx + 50, hy)):
        return (*RING, 255)
    # The play triangle in the middle: one iteration running.
    if _in_triangle(cx, cy, (206, 176), (206, 336), (336, 256)):
        return (*ARROW, 255)
    return (*BACKGROUND, 255)


def _in_triangle(x: float, y: float, a, b, c) -> bool:
    def side(p, q) -> float:
        return (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return not ((s1 < 0 or s2 < 0 or s3 < 0) and (s1 > 0 or s2 > 0 or s3 > 0))


def png_bytes() -> bytes:
    rows = b"".join(b"\x00" + b"".join(bytes(_pixel(x, y)) for x in range(SIZE)) for y in range(SIZE))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


if __name__ == "__main__":
    Path(__file__).with_name("icon.png").write_bytes(png_bytes())
