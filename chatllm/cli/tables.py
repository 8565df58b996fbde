"""Tables on stdout, the one way every listing command prints them.

On a terminal, a table fits the window: the last column is cut with an
ellipsis rather than wrapped, one line per row. In a pipe every cell is
printed whole, columns aligned with spaces, so `grep` and `awk '{print $1}'`
see everything."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, fit_terminal: bool = True) -> None:
    """`headers` and `rows` as aligned columns. `fit_terminal=False` never cuts,
    on a terminal either."""
    if fit_terminal and sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for index, header in enumerate(headers):
            last = index == len(headers) - 1
            table.add_column(header, no_wrap=True, overflow="ellipsis", ratio=1 if last else None)
        for row in rows:
            table.add_row(*row)
        Console(soft_wrap=False).print(table)
        return
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for row in (headers, *rows):
        sys.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
    sys.stdout.flush()
