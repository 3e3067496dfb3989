"""Strings are data: every key in every language, the same placeholders everywhere, and no component
on the page with a word that did not come from locales/."""

from __future__ import annotations

import json
import re
import string

import pytest
from world import ROOT

from engine.paths import LOCALES

LANGS = ["en", "ko", "zh", "ja", "ru"]
TABLES = {lang: json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8")) for lang in LANGS}


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_every_language_has_every_key():
    keys = set(TABLES["en"])
    for lang, table in TABLES.items():
        assert set(table) == keys, (
            f"{lang}: missing {sorted(keys - set(table))[:10]}, extra {sorted(set(table) - keys)[:10]}"
        )
        empty = [k for k, v in table.items() if not isinstance(v, str) or not v.strip()]
        assert not empty, f"{lang}: empty texts for {empty[:10]}"


def test_placeholders_match_across_languages():
    bad = []
    for key, en in TABLES["en"].items():
        for lang in LANGS[1:]:
            try:
                if fields(TABLES[lang][key]) != fields(en):
                    bad.append(f"{lang}:{key}")
            except ValueError:  # an unbalanced brace
                bad.append(f"{lang}:{key} (malformed)")
    assert not bad, bad[:20]


def test_ui_texts_are_translated():
    """A `ui.` text identical to English in another language is allowed only for names and examples."""
    same_ok = re.compile(r"^[\w .:/()+\-–—…#{}=,|*%$·]*$", re.ASCII)  # names, ids, code-like examples
    untranslated = [
        f"{lang}:{k}"
        for k, en in TABLES["en"].items()
        if k.startswith("ui.")
        for lang in LANGS[1:]
        if TABLES[lang][k] == en and not same_ok.match(en)
    ]
    assert not untranslated, untranslated[:20]


def test_every_key_the_code_names_exists():
    """Every quoted "section.name" in engine/ and board/ whose section is one of the locales' (ui, data, error,
    ...) is a key, besides config fields (data.max_length; the board's data.format for the first dataset's
    spec) and run files (eval.json); keys built at run time are listed here."""
    import dataclasses

    from engine.config import DatasetSpec, field_help
    from engine.data.formats import TRL_KIND
    from engine.estimate import PARTS

    sections = "|".join(sorted({k.split(".")[0] for k in TABLES["en"]}))
    quoted = re.compile(rf'"((?:{sections})\.[a-zA-Z0-9_.]*[a-zA-Z0-9])"')
    used = set()
    for path in [*(ROOT / "engine").rglob("*.py"), *(ROOT / "board").rglob("*.py")]:
        used |= set(quoted.findall(path.read_text(encoding="utf-8")))
    used -= {name for name, _, _ in field_help()} | {"data.datasets", "eval.json"}
    used -= {f"data.{f.name}" for f in dataclasses.fields(DatasetSpec)}
    used |= {f"ui.status.{s}" for s in ("starting", "running", "finished", "stopped", "failed")}
    used |= {f"ui.data.sev_{s}" for s in ("error", "warning")} | {"ui.data.view_chosen", "ui.data.view_rejected"}
    used |= {"ui.data.kind_" + k.replace(" ", "_").replace("-", "_") for k in TRL_KIND.values()}
    used |= {f"chat.finish_{x}" for x in ("stop", "length", "interrupted")}
    used |= {f"eval.phase_{x}" for x in ("perplexity", "perplexity_base", "generate")}
    used |= {f"export.kind_{x}" for x in ("merged", "adapter", "model")}
    used |= {f"eval.{m}" for m in ("perplexity", "perplexity_base", "bleu", "rouge1", "rouge2", "rougeL")}
    used |= {f"estimate.part.{p}" for p in (*PARTS, "total")}
    assert len(used) > 400  # the scan found the code's keys
    missing = sorted(k for k in used if k not in TABLES["en"])
    assert not missing, missing


# ---- no raw strings on the page -------------------------------------------------------------------

CANARY = re.compile(r"⟦[^⟧]+⟧")


@pytest.fixture
def canary_page(tmp_path, monkeypatch):
    """The whole page built in a language where every key renders as ⟦key⟧."""
    import board.app  # imported before the patch: the language menu keeps the real languages
    import board.i18n
    import engine.messages

    real = engine.messages.table
    fake = {k: f"⟦{k}⟧" + "".join(f"{{{f}}}" for f in sorted(fields(v))) for k, v in TABLES["en"].items()}
    monkeypatch.setattr(engine.messages, "table", lambda lang="en": fake if lang == "xx" else real(lang))
    monkeypatch.setattr(board.i18n, "LANGS", (*board.i18n.LANGS, "xx"))
    known = engine.messages._languages()
    monkeypatch.setattr(engine.messages, "_languages", lambda: (*known, "xx"))  # normalize_lang's list
    demo, ui = board.app.build_app(tmp_path, lang="xx")
    return demo, ui


def _visible_texts(block) -> list[tuple[str, str]]:
    """(what, text) a reader can see on this block at build time."""
    import gradio as gr

    out = []
    for prop in ("label", "info", "placeholder"):
        value = getattr(block, prop, None)
        if isinstance(value, str) and value:
            out.append((prop, value))
    if isinstance(block, (gr.Button, gr.Markdown)) and isinstance(block.value, str) and block.value:
        out.append(("value", block.value))
    if isinstance(block, gr.HTML) and isinstance(block.value, str):
        text = re.sub(r"<(svg|style)\b.*?</\1>", " ", block.value, flags=re.S)  # drawn or styled, not words
        text = re.sub(r"<[^>]+>", " ", text)
        out.append(("html", text))
    if isinstance(block, (gr.Dropdown, gr.Radio)):
        for label, value in block.choices or []:
            if str(label) != str(value):  # a value shown as itself (a model id, bf16) is data, not a word
                out.append(("choice", str(label)))
    if isinstance(block, gr.Dataframe):
        out += [("header", h) for h in (block.value or {}).get("headers", [])]
    if isinstance(block, gr.Plot) and block.value is not None:
        fig = json.loads(block.value.plot) if hasattr(block.value, "plot") else {}
        layout = fig.get("layout", {})
        out += [("plot", a.get("text", "")) for a in layout.get("annotations", [])]
        out.append(("plot", (layout.get("title") or {}).get("text", "")))
    return out


DATA_WORDS = {"Tuneboard", "English", "한국어", "简体中文", "日本語", "Русский", "·", "—", "/"}


def test_no_component_carries_a_raw_string(canary_page):
    demo, ui = canary_page
    raw = []
    for block in demo.blocks.values():
        for what, text in _visible_texts(block):
            rest = CANARY.sub(" ", text)
            rest = re.sub(r"[\d\s.,:;/()%·—–\-+|=…]+", " ", rest).strip()
            if rest and rest not in DATA_WORDS and not all(w in DATA_WORDS for w in rest.split()):
                raw.append(f"{getattr(block, 'elem_id', None) or type(block).__name__}.{what}: {text[:80]!r}")
    assert not raw, raw


def test_every_control_has_a_tab_prefixed_id(canary_page):
    import gradio as gr

    demo, ui = canary_page
    tabs = ("top", "model", "data", "train", "runs", "chat", "eval", "export")
    controls = (
        gr.Textbox,
        gr.Number,
        gr.Slider,
        gr.Dropdown,
        gr.Radio,
        gr.Checkbox,
        gr.Button,
        gr.UploadButton,
        gr.File,
        gr.Plot,
        gr.Dataframe,
        gr.Code,
        gr.Chatbot,
    )
    missing = [
        type(b).__name__ + ":" + str(getattr(b, "label", ""))
        for b in demo.blocks.values()
        if isinstance(b, controls)
        and getattr(b, "visible", True) is not False
        and not (getattr(b, "elem_id", None) or "").startswith(tuple(t + "-" for t in tabs))
    ]
    assert not missing, missing
    ids = [b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)]
    assert len(ids) == len(set(ids)), "duplicate elem_id"
    for needed in (
        "train-start",
        "train-stop",
        "train-resume",
        "top-lang",
        "data-findings",
        "train-loss-plot",
        "runs-table",
        "model-name",
        "data-upload",
        "train-progress",
    ):
        assert needed in ids


def test_switching_language_relabels_every_registered_component(canary_page):
    demo, ui = canary_page
    updates = ui.texts.updates("ko")
    assert len(updates) == len(ui.texts.entries)
    for (comp, spec), upd in zip(ui.texts.entries, updates, strict=True):
        for prop in ("label", "info", "placeholder", "value"):
            if spec.get(prop):
                assert upd[prop] == TABLES["ko"][spec[prop]], (getattr(comp, "elem_id", comp), prop)


def test_every_exception_becomes_a_message_key():
    """One mapping for the trainer's events, the chat worker's replies and the CLI's last line."""
    from engine.config import ConfigError
    from engine.messages import TuneboardError, error_key

    class OutOfMemoryError(RuntimeError):  # torch.cuda's, by name: the engine never imports torch for this
        pass

    assert error_key(TuneboardError("error.no_checkpoint", path="r"), "x") == ("error.no_checkpoint", {"path": "r"})
    assert error_key(ConfigError("a.b", "error.config.range", "m", value=1), "x")[0] == "error.config.range"
    assert error_key(OutOfMemoryError(), "x") == ("error.oom", {"device": "GPU"})
    assert error_key(RuntimeError("CUDA out of memory. Tried"), "x")[0] == "error.oom"
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough memory: you tried "
                       "to allocate 38400000000 bytes.")  # LoRA rank 1e8 on the CPU: said as that, not as torch's
    assert error_key(cpu, "x") == ("error.oom", {"device": "CPU"}) == error_key(MemoryError(), "x")
    assert error_key(ValueError("boom"), "chat.error_failed") == ("chat.error_failed", {"error": "ValueError: boom"})


def test_english_counts_agree_with_their_number():
    from engine.messages import message

    assert message("data.cli.file", {"path": "a.json", "format": "alpaca", "kind": "k", "rows": 1}, "en").endswith(
        ", 1 row")
    assert message("data.cli.file", {"path": "a.json", "format": "alpaca", "kind": "k", "rows": 2}, "en").endswith(
        ", 2 rows")
    assert message("data.cli.summary", {"errors": 1, "warnings": 3}, "en") == "1 error, 3 warnings"
    assert message("data.cli.summary", {"errors": "1", "warnings": 0}, "en") == "1 error, 0 warnings"
    assert "the 1 usable row trained" in message("ui.data.rows_left_out", {"valid": 1}, "en")
    # only the count's own noun changes: a file name that reads "1 rows" is left as it is
    assert message("data.cli.file", {"path": "1 rows.csv", "format": "f", "kind": "k", "rows": 1}, "en").startswith(
        "1 rows.csv")
    assert message("data.cli.file", {"path": "a.json", "format": "alpaca", "kind": "k", "rows": 1}, "ko").endswith(
        "1개 행")
