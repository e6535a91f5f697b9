"""Where the CLI writes: rich consoles for stdout and stderr, tables, and plain JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]], *,
          numeric: Sequence[str] = (), no_wrap: Sequence[str] = ()) -> Table:
    """A simple rich table: `numeric` columns right-aligned, `no_wrap` ones kept whole; cells are never markup."""
    result = Table(title=Text(title, style="bold") if title else None, title_justify="left")
    for column in columns:
        result.add_column(column, justify="right" if column in numeric else "left", overflow="fold",
                          no_wrap=column in no_wrap, min_width=len(column))
    for row in rows:
        result.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row))
    return result


def print_json(value: object) -> None:
    """JSON on stdout without rich's wrapping or colour, so pipes get exactly what they parse."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
