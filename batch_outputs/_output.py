"""The CLI's output formats, the ``az`` conventions: ``--output json|jsonc|table|tsv`` and
``--query`` (JMESPath, applied to the JSON before it is shown).

* ``json``: indented JSON, names exactly as stored (JSON escapes what it must);
* ``jsonc``: the same, coloured when the output is a terminal;
* ``table``: columns sized to the terminal; when piped, plain aligned text that never wraps;
* ``tsv``: tab-separated values, no header, one line a row (for ``cut``, ``while read``).

Names from storage are shown through ``display.safe`` in tables and TSV (control and bidi
characters escaped), never as markup.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

from ._cli_config import BAD_INPUT, CliError
from .display import plain, safe

FORMATS = ("json", "jsonc", "table", "tsv")


def output_format(output: Optional[str], as_json: bool) -> str:
    """The format asked (``--json`` is ``--output json``); ``table`` by default."""
    fmt = (output or ("json" if as_json else "table")).lower()
    if fmt not in FORMATS:
        raise CliError(f"invalid --output {output!r}: one of {', '.join(FORMATS)}", BAD_INPUT)
    return fmt


def apply_query(value: Any, query: Optional[str]) -> Any:
    """``value`` through the JMESPath ``query`` (unchanged without one)."""
    if not query:
        return value
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(query, value)
    except JMESPathError as exc:
        raise CliError(f"invalid --query {query!r}: {str(exc).splitlines()[0]}", BAD_INPUT) from exc


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _rows(value: Any) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of any JSON value: a list of objects is a row each."""
    items = value if isinstance(value, list) else [value]
    headers: list[str] = []
    for item in items:
        if isinstance(item, dict):
            headers.extend(k for k in item if k not in headers)
    if not headers:
        # A list of lists (``[].[a, b]``) is a row each; a list of scalars one cell a row.
        width = max((len(item) for item in items if isinstance(item, list)), default=1)
        return [f"column{n + 1}" for n in range(width)] if width > 1 else ["value"], \
            [([_cell(v) for v in item] if isinstance(item, list) else [_cell(item)]) + [""] * (width - (len(item) if isinstance(item, list) else 1))
             for item in items]
    return headers, [[_cell(item.get(h)) if isinstance(item, dict) else _cell(item) for h in headers] for item in items]


def print_table(out: Console, headers: list[str], rows: list[list[str]], title: Optional[str] = None) -> None:
    """A table sized to the terminal; plain aligned text when the output is not a terminal."""
    if out.is_terminal:
        table = Table(*headers, title=plain(title) if title else None)
        for row in rows:
            table.add_row(*(plain(cell) for cell in row))
        out.print(table)
        return
    cells = [[safe(h) for h in headers]] + [[safe(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    if title:
        lines.insert(0, safe(title))
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def emit(out: Console, value: Any, fmt: str, query: Optional[str], human: Optional[Callable[[], None]] = None) -> None:
    """Show ``value`` (the API's JSON) in the format asked. ``human`` is the command's own table
    view, used for ``table`` without a query."""
    if fmt == "table" and not query and human is not None:
        human()
        return
    value = apply_query(value, query)
    if fmt == "json":
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
        sys.stdout.flush()
    elif fmt == "jsonc":
        out.print_json(json.dumps(value), highlight=out.is_terminal)
    elif fmt == "tsv":
        _, rows = _rows(value)
        sys.stdout.write("".join("\t".join(safe(cell) for cell in row) + "\n" for row in rows))
        sys.stdout.flush()
    else:
        headers, rows = _rows(value)
        print_table(out, headers, rows)
