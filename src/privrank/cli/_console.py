"""The one way the CLI makes a Rich console: text is printed verbatim.

Rich reads ``[...]`` in a printed string as markup and drops what it takes for a tag, so
``pip install 'privrank[serve]'`` came out as ``pip install 'privrank'``, and a bracketed file
value, id or model label lost its brackets the same way. Every console of the CLI is made here
with markup, emoji codes and highlighting off; styles are given as ``style=`` or
:class:`rich.text.Text` spans, never spelled inside the printed text.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["make_console", "styled"]


def make_console(*, stderr: bool = False, **options: Any) -> Console:
    """A Rich console that prints strings as they are (no markup, emoji codes or highlighting).

    Args:
        stderr: Write to standard error instead of standard output.
        **options: Other :class:`rich.console.Console` options (``width``, ``soft_wrap``...).
    """
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, **options)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs; no part is read as markup.

    Example: ``styled(("error:", "bold red"), " ", message)``.
    """
    return Text.assemble(*parts)
