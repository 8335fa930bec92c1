"""Fills a text's {variable} placeholders from the message's variables: what the recipient reads."""
from __future__ import annotations

from string import Formatter
from typing import Any

from models.errors import CompositionError


def fill(text: str, variables: dict[str, Any] | None) -> str:
    """Replace each `{name}` by the variable's value as text (never evaluated); `{{` and `}}` are literal braces."""
    if "{" not in text and "}" not in text:
        return text
    variables = variables or {}
    pieces: list[str] = []
    try:
        parsed = list(Formatter().parse(text))
    except ValueError as exc:
        raise CompositionError(f"the text has a lone brace ({exc}); write {{{{ or }}}} for a literal brace") from exc
    for literal, name, spec, conversion in parsed:
        pieces.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise CompositionError(f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} is not a variable; write {{name}} with a plain name")
        if name not in variables:
            raise CompositionError(f'the text uses {{{name}}} but variables has no "{name}"', variable=name)
        pieces.append(str(variables[name]))
    return "".join(pieces)
