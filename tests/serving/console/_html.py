"""Small readers of the console's HTML for the HTTP tests."""

from __future__ import annotations

import re
from html import unescape


def field(page: str, name: str) -> str | None:
    """The value of the first ``<input name=NAME value=...>`` in ``page``, or ``None``."""
    for tag in re.findall(r"<input\b[^>]*>", page):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            value = re.search(r'\bvalue="([^"]*)"', tag)
            return unescape(value.group(1)) if value else ""
    return None


def text(page: str) -> str:
    """The page's text with tags removed and whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())
