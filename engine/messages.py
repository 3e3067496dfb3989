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


def error_key(e: BaseException, fallback: str) -> tuple[str, dict[str, Any]]:
    """Any exception as a message key and parameters: ours (TuneboardError, ConfigError) carry their own;
    running out of memory is named as such; anything else is `fallback` with the exception's text."""
    if getattr(e, "key", None):
        return e.key, dict(getattr(e, "params", None) or {})
    if isinstance(e, KeyboardInterrupt):
        return "error.interrupted", {}
    if type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
        return "error.oom", {"device": "GPU"}
    return fallback, {"error": f"{type(e).__name__}: {e}"}
