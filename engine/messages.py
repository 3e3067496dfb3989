"""Message keys -> text in a language, from locales/<lang>.json (standard library only).

Engine errors carry a key and parameters; the CLI renders them in English, the board in the
user's language, from the same files.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .paths import LOCALES

DEFAULT_LANG = "en"


@cache
def table(lang: str = DEFAULT_LANG) -> dict[str, str]:
    try:
        with open(LOCALES / f"{lang}.json", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def languages() -> list[str]:
    return sorted(p.stem for p in LOCALES.glob("*.json"))


def message(key: str, params: dict[str, Any] | None = None, lang: str = DEFAULT_LANG) -> str:
    """The text for `key` in `lang` (falling back to English, then to the key itself)."""
    text = table(lang).get(key) or table(DEFAULT_LANG).get(key) or key
    try:
        return text.format(**(params or {}))
    except (KeyError, IndexError, ValueError):
        return text


class TuneboardError(Exception):
    """An error a person can act on: a message key, its parameters, and the English text."""

    def __init__(self, key: str, **params: Any):
        self.key, self.params = key, params
        super().__init__(message(key, params))
