"""The page's words: keys in locales/<lang>.json, and the registry that relabels every component on a language switch.

Components are built through `Texts.add`, which records which key feeds which property
(label, info, placeholder, value, choice labels); switching language re-renders them all.
Nothing here imports Gradio: an update is the plain dict Gradio reads (`{"__type__": "update"}`).
"""

from __future__ import annotations

from typing import Any

from engine.messages import DEFAULT_LANG, message, normalize_lang, table  # noqa: F401 (the board's too)

LANGS = ("en", "ko", "zh", "ja", "ru")
# each language named in itself, so a person who can't read the current page still finds theirs
LANG_NAMES = {"en": "English", "ko": "한국어", "zh": "简体中文", "ja": "日本語", "ru": "Русский"}
TEXT_PROPS = ("label", "info", "placeholder", "value")


FIELD_LABELS: dict[str, str] = {}  # a config field -> the label key of its control on the page (UI.add fills it)


def t(key: str, lang: str = DEFAULT_LANG, **params: Any) -> str:
    lang = lang if lang in LANGS else DEFAULT_LANG
    field = params.get("field")
    if key.startswith("error.config.") and field in FIELD_LABELS:  # the control's name, as the person sees it
        params = {**params, "field": f"{message(FIELD_LABELS[field], None, lang)} ({field})"}
    return message(key, params, lang)


def has_key(key: str) -> bool:
    return key in table(DEFAULT_LANG)


def t_or(key: str, lang: str, fallback: str, **params: Any) -> str:
    """`key`'s text, or `fallback` when there is no such key (an engine message newer than our
    locales, a name we have no translation for)."""
    return t(key, lang, **params) if has_key(key) else fallback


def choose_lang(*codes: str | None) -> str:
    """The first of `codes` (most wanted first) that is one of our languages, else English."""
    for code in codes:
        lang = normalize_lang(code)
        if lang:
            return lang
    return DEFAULT_LANG


def update(**props: Any) -> dict[str, Any]:
    """What `gr.update(**props)` returns, without importing Gradio."""
    return {"__type__": "update", **props}


SKIP = update()  # Gradio leaves an output alone when it gets an update with nothing in it


class Texts:
    """Which translation key feeds which property of which component."""

    def __init__(self, lang: str = DEFAULT_LANG):
        self.lang = lang
        self.entries: list[tuple[Any, dict[str, Any]]] = []

    def render(self, spec: dict[str, Any], lang: str) -> dict[str, Any]:
        """Keyword arguments for a component (or an update) in `lang` from its key spec."""
        out: dict[str, Any] = {}
        for prop in TEXT_PROPS:
            if spec.get(prop):
                out[prop] = t(spec[prop], lang)
        if spec.get("choices") is not None:
            out["choices"] = [(t(k, lang) if k else str(v), v) for k, v in spec["choices"]]
        return out

    def add(self, component: Any, spec: dict[str, Any]) -> Any:
        self.entries.append((component, {k: v for k, v in spec.items() if v is not None}))
        return component

    @property
    def components(self) -> list[Any]:
        return [c for c, _ in self.entries]

    def updates(self, lang: str) -> list[dict[str, Any]]:
        return [update(**self.render(spec, lang)) for _, spec in self.entries]

    def keys(self) -> set[str]:
        out = {spec[p] for _, spec in self.entries for p in TEXT_PROPS if spec.get(p)}
        out |= {k for _, spec in self.entries for k, _ in spec.get("choices") or [] if k}
        return out
