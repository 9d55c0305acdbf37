"""Small PNG images of a rendered "shot", in pure Python (zlib + struct): demo data and test fixtures.

Frame ``i`` of ``n`` is a landscape at a time of day that moves from dawn to dusk over the shot:
a sky gradient, a sun crossing it, and two rows of hills, so a grid of previews reads like a film
strip.
"""

from __future__ import annotations

import math
import struct
import zlib

Color = tuple[float, float, float]


def encode_png(width: int, height: int, rgb_rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``3 * width`` bytes each."""
    if len(rgb_rows) != height or any(len(row) != 3 * width for row in rgb_rows):
        raise ValueError("rows do not match the image size")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row for row in rgb_rows)  # filter type 0 (None) on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def _mix(a: Color, b: Color, t: float) -> Color:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _byte(c: Color) -> bytes:
    return bytes(max(0, min(255, int(v))) for v in c)


# Sky colours (zenith, horizon) at dawn, noon and dusk.
_SKIES: list[tuple[Color, Color]] = [
    ((44, 62, 140), (250, 170, 120)),
    ((40, 120, 220), (170, 215, 250)),
    ((60, 40, 110), (255, 120, 80)),
]


def frame_png(index: int, count: int, width: int = 160, height: int = 90) -> bytes:
    """Frame ``index`` (0-based) of a ``count``-frame shot as a ``width`` x ``height`` PNG."""
    t = index / max(1, count - 1)
    phase = t * 2
    low = min(1, int(phase))
    zenith, horizon = (_mix(a, b, phase - low) for a, b in zip(_SKIES[low], _SKIES[low + 1], strict=False))
    sun_x = width * (0.1 + 0.8 * t)
    sun_y = height * (0.75 - 0.55 * math.sin(math.pi * t))
    sun_r = height * 0.09
    sun = _mix((255, 210, 120), (255, 250, 230), math.sin(math.pi * t))
    far = [height * (0.62 + 0.07 * math.sin(x / width * 6.3 + 1.1) + 0.03 * math.sin(x / width * 17 + t * 3))
           for x in range(width)]
    near = [height * (0.78 + 0.06 * math.sin(x / width * 4.1 + 2.0 + t * 0.8)) for x in range(width)]
    far_color = _mix((70, 90, 120), (40, 40, 70), abs(0.5 - t) * 2)
    near_color = _mix((40, 110, 60), (25, 45, 40), abs(0.5 - t) * 2)
    rows = []
    for y in range(height):
        sky = _byte(_mix(zenith, horizon, y / (height - 1)))
        row = bytearray(sky * width)
        if abs(y - sun_y) <= sun_r:
            half = math.sqrt(max(0.0, sun_r * sun_r - (y - sun_y) ** 2))
            for x in range(max(0, int(sun_x - half)), min(width, int(sun_x + half) + 1)):
                row[3 * x:3 * x + 3] = _byte(sun)
        shade_far = _byte(_mix(far_color, horizon, 0.25))
        shade_near = _byte(_mix(near_color, (0, 0, 0), (y / height) * 0.4))
        for x in range(width):
            if y >= near[x]:
                row[3 * x:3 * x + 3] = shade_near
            elif y >= far[x]:
                row[3 * x:3 * x + 3] = shade_far
        rows.append(bytes(row))
    return encode_png(width, height, rows)
