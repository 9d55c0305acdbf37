"""Terminal-safe text: names and paths come from whoever wrote the blobs.

A blob name may hold ``[link=...]`` (Rich markup), escape sequences that move the cursor or
retitle the window, or bidi controls that make ``\\u202egnp.exe`` display as ``exe.png``.
Everything the CLI prints goes through ``safe`` and is rendered as plain ``rich.text.Text``,
never as markup. ``--json`` prints the names exactly (JSON escapes what it must).
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

#: C0 controls, DEL and C1 controls; the bidi embeddings, overrides and isolates
#: (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``value`` as text a terminal shows as it is: control and bidi characters escaped."""
    return _UNSAFE.sub(_escape, str(value))


def plain(value: object, style: str = "") -> Text:
    """A Rich renderable of ``safe(value)`` that is never read as markup."""
    return Text(safe(value), style=style)


def say(console: Console, message: object) -> None:
    """Print one line (or a few) as plain text."""
    console.print(plain(message), markup=False, highlight=False)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
