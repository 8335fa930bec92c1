"""Text from users, files and carriers inside the Markdown artifacts of the Prefect UI: shown as written, never as markup.

A task name or a rejection reason like `a | b`, `*bold*`, `[x](javascript:...)` or `<script>` must
neither break the table it sits in nor become a link, emphasis or HTML.
"""
from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped, and then shows it as itself: escaping all
# of it needs no list of which marks are syntax where (GFM tables add `|`, extensions add `~`, `$`…).
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# A line break would end a table row, a heading or a list item.
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


def escape(value: object) -> str:
    """`value` as inline Markdown text: the same characters on one line, line breaks shown as spaces."""
    return _PUNCTUATION.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def code_span(value: object) -> str:
    """`value` as an inline code span on one line, whatever backticks it holds."""
    one_line = _LINE_BREAKS.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one_line)), default=0) + 1)
    return f"{fence} {one_line} {fence}" if one_line.startswith("`") or one_line.endswith("`") else f"{fence}{one_line}{fence}"
