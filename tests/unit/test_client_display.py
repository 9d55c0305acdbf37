"""Terminal-safe output and nextLink handling of the CLI (issue 13, item 5; issue 14, CLI side)."""

from __future__ import annotations

import io

import pytest
from azure.core.exceptions import HttpResponseError
from rich.console import Console
from rich.table import Table

from batch_outputs._shared import resolve_next_link
from batch_outputs.display import plain, safe, say


@pytest.mark.parametrize(("name", "shown"), [
    ("plain/name.txt", "plain/name.txt"),
    ("\x1b]0;pwned\x07title", "\\x1b]0;pwned\\x07title"),  # escape sequences (C0)
    ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),  # DEL and C1 (CSI)
    ("line\nbreak\ttab\rret", "line\\nbreak\\ttab\\rret"),
    ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override: would show as exe.png
    ("a\u2066b\u2067c\u2068d\u2069e\u200ef\u200fg\u061ch\u202ai\u202bj\u202ck\u202dl",
     "a\\u2066b\\u2067c\\u2068d\\u2069e\\u200ef\\u200fg\\u061ch\\u202ai\\u202bj\\u202ck\\u202dl"),
    ("ünïcødé 名前 #%?", "ünïcødé 名前 #%?"),  # printable text is left alone
])
def test_control_and_bidi_characters_are_escaped(name: str, shown: str) -> None:
    assert safe(name) == shown


def render(renderable: object, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["[link=http://x]a[/link]", "[/x]", "[bold red]x", "[[escaped]]"])
def test_markup_in_names_is_shown_literally(name: str) -> None:
    table = Table("path", title=plain(f"1 outputs of {name}"))
    table.add_row(plain(name))
    shown = render(table)
    assert shown.count(name) == 2  # in the title and in the cell, exactly as stored
    console = Console(file=io.StringIO(), width=200, color_system="truecolor")
    say(console, f"saved t1/$TaskOutput/{name}")
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"saved t1/$TaskOutput/{name}" in output and "\x1b]8;" not in output  # no hyperlink escape


BASE = "https://outputs.example.net"


@pytest.mark.parametrize(("link", "resolved"), [
    ("/api/jobs/j1/outputs?maxpagesize=1&continuationToken=abc", f"{BASE}/api/jobs/j1/outputs?maxpagesize=1&continuationToken=abc"),
    (f"{BASE}/api/jobs/j1/outputs?x=1", f"{BASE}/api/jobs/j1/outputs?x=1"),
    ("https://OUTPUTS.example.net:443/api/jobs/j1/outputs", "https://OUTPUTS.example.net:443/api/jobs/j1/outputs"),
    ("api/jobs/j1/outputs?x=1", f"{BASE}/api/jobs/j1/outputs?x=1"),
])
def test_next_links_on_the_api_s_origin_are_followed(link: str, resolved: str) -> None:
    assert resolve_next_link(BASE, link) == resolved


@pytest.mark.parametrize("link", [
    "https://attacker.example.com/api/jobs/j1/outputs",
    "http://outputs.example.net/api/jobs/j1/outputs",  # another scheme
    "https://outputs.example.net:8443/api/jobs/j1/outputs",  # another port
    "//attacker.example.com/api/jobs/j1/outputs",  # scheme-relative
    "https://outputs.example.net@attacker.example.com/api",  # userinfo trick
])
def test_next_links_to_another_origin_are_refused(link: str) -> None:
    with pytest.raises(HttpResponseError, match="another origin"):
        resolve_next_link(BASE, link)
