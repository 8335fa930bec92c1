"""Short links: every http(s) URL of an SMS text becomes a tracked, unguessable short link (cheaper parts)."""
from __future__ import annotations

import re
import secrets

# A URL runs to the next space or quote; sentence punctuation right after it is not part of it.
_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,;:!?)]}"
CODE_BYTES = 6  # 8 URL-safe characters: 2**48 codes, not guessable by walking them


def shorten(text: str, base_url: str) -> tuple[str, list[tuple[str, str]]]:
    """The text with its URLs replaced by `<base_url>/s/<code>`, and the (code, original URL) pairs."""
    links: list[tuple[str, str]] = []

    def replace(match: re.Match[str]) -> str:
        url = match.group(0)
        kept = url.rstrip(_TRAILING)
        code = secrets.token_urlsafe(CODE_BYTES)
        links.append((code, kept))
        return f"{base_url.rstrip('/')}/s/{code}{url[len(kept):]}"

    return _URL.sub(replace, text), links
