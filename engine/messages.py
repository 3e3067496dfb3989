"""Message keys -> text in a language, from locales/<lang>.json (standard library only).

Engine errors carry a key and parameters; the CLI renders them in English, the board in the
user's language, from the same files.
"""

from __future__ import annotations

import json
import numbers
import re
from functools import cache
from typing import Any

from .paths import LOCALES

DEFAULT_LANG = "en"
_language = DEFAULT_LANG  # what a `message` without a language says: the CLI's --lang / $TUNEBOARD_LANG


def set_language(lang: str | None) -> None:
    """The language of the command line's messages (a known one, `ko-KR` and `ko_KR.UTF-8` read as ko; else
    English)."""
    global _language
    _language = normalize_lang(lang) or DEFAULT_LANG


def normalize_lang(code: str | None) -> str | None:
    """`ko-KR` -> ko, `ko_KR.UTF-8` (a locale, as in $LANG) -> ko, `zh-Hans-CN` -> zh, `pt-BR` -> None (not ours)."""
    if not code:
        return None
    base = str(code).strip().replace("_", "-").split(".")[0].split("-")[0].lower()
    return base if base in _languages() else None


@cache
def table(lang: str = DEFAULT_LANG) -> dict[str, str]:
    try:
        with open(LOCALES / f"{lang}.json", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def languages() -> list[str]:
    return list(_languages())


@cache
def _languages() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in LOCALES.glob("*.json")))


def message(key: str, params: dict[str, Any] | None = None, lang: str | None = None) -> str:
    """The text for `key` in `lang` (default: `set_language`'s, else English; falling back to English, then
    to the key itself)."""
    lang = lang or _language
    text = table(lang).get(key) or table(DEFAULT_LANG).get(key) or key
    if text is table(DEFAULT_LANG).get(key) and params:
        text = _counted(text, params)
    params = {k: _term(v, lang) for k, v in (params or {}).items()}
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text


# English counts: "{rows} rows" with rows=1 says "1 row"; "{errors} error(s)" says "1 error" or "2 errors" (the other
# languages say a count without a plural, or as "label: N")
_COUNTED = re.compile(r"\{(\w+)\} ((?:usable |assistant |user |more )?)"
                      r"(row|error|warning|text|sequence|step|token|file|message|pair|sample|line|cell|column|layer"
                      r"|beam|parameter)(s|\(s\))(?![\w(])")


def _counted(text: str, params: dict[str, Any]) -> str:
    def say(m: re.Match) -> str:
        n = params.get(m[1])
        if isinstance(n, str) and n.isdigit():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            return m[0]  # not a count we can read: as written
        return f"{{{m[1]}}} {m[2]}{m[3]}{'' if n == 1 else 's'}"
    return _COUNTED.sub(say, text)


def _term(value: Any, lang: str) -> Any:
    """A parameter that names a kind of value (`type.text`), a JSON syntax problem (`json.extra_data`), why a
    file can't be read (`file.gzip_damaged`) or one of our roles (`role.user`) is said in the message's language."""
    if isinstance(value, str) and value.startswith(("type.", "json.", "file.", "role.", "yaml.")):
        return table(lang).get(value) or table(DEFAULT_LANG).get(value) or value
    return value


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
    if isinstance(e, (RuntimeError, MemoryError)) and ("DefaultCPUAllocator" in str(e) or "alloc_cpu" in str(e)
                                                       or isinstance(e, MemoryError)):
        return "error.oom", {"device": "CPU"}  # torch's "[enforce fail at alloc_cpu.cpp:127] ... 38400000000 bytes"
    return fallback, {"error": f"{type(e).__name__}: {e}"}
