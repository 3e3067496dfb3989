"""Build the board's page (one module per tab) and serve it safely: localhost unless a password is set.

`tuneboard` (engine/cli.py) calls `main(args)`. The board process imports Gradio, plotly and the
engine's torch-free modules only; training runs in a spawned worker (jobs.py).
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gradio as gr

from engine.messages import TuneboardError, message
from engine.paths import ASSETS, default_workdir

from . import live
from .i18n import LANG_NAMES, LANGS, choose_lang, normalize_lang, t
from .jobs import Jobs
from .safety import MAX_UPLOAD_MB, launch_auth
from .session import Session
from .tabs import data, model, runs, train
from .ui import UI

TABS = [
    ("model", "ui.tab.model", model),
    ("data", "ui.tab.data", data),
    ("train", "ui.tab.train", train),
    ("runs", "ui.tab.runs", runs),
]


def extra_tab() -> Any:
    """`board/tabs/chat.py` (Chat / Eval / Export), when it exists: a module with `build(ui)` and
    optionally `wire(ui)` and `TAB_LABEL` (a locale key)."""
    if importlib.util.find_spec("board.tabs.chat") is None:
        return None
    module = importlib.import_module("board.tabs.chat")
    return module if callable(getattr(module, "build", None)) else None


def accept_language(header: str | None) -> str | None:
    """The first of our languages in an Accept-Language header, by the browser's preference."""
    best: list[tuple[float, int, str]] = []
    for i, part in enumerate((header or "").split(",")):
        code, _, q = part.strip().partition(";q=")
        lang = normalize_lang(code)
        if lang:
            try:
                weight = float(q) if q else 1.0
            except ValueError:
                weight = 0.0
            best.append((-weight, i, lang))
    return min(best)[2] if best else None


def brand_html(lang: str) -> str:
    logo = (ASSETS / "logo.svg").read_text(encoding="utf-8") if (ASSETS / "logo.svg").exists() else ""
    return (
        f'<div class="tb-brand">{logo}<div><div class="tb-brand-name">{html.escape(t("ui.brand", lang))}</div>'
        f'<div class="tb-brand-tag">{html.escape(t("ui.tagline", lang))}</div></div></div>'
        # Gradio words its own upload box in the browser's language, fixed when the page is built: the box shows
        # ours instead (assets/style.css), in the page's language, redrawn with the brand at each switch
        f'<style>:root {{ --tb-drop-hint: {css_string(t("ui.data.drop_hint", lang))}; }}</style>'
    )


def css_string(text: str) -> str:
    """`text` as a quoted CSS string that cannot end its string or its <style> element."""
    escaped = "".join(c if c.isalnum() or c in " .,!?-" or ord(c) > 127 else f"\\{ord(c):x} " for c in text)
    return f'"{escaped}"'


def theme() -> gr.themes.Base:
    # system fonts only: the page makes no request outside this machine (no web fonts)
    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="slate",
        neutral_hue="slate",
        radius_size="md",
        spacing_size="md",
        font=(
            "ui-sans-serif",
            "system-ui",
            "-apple-system",
            "Segoe UI",
            "Noto Sans",
            "Apple SD Gothic Neo",
            "Noto Sans CJK KR",
            "Microsoft YaHei",
            "sans-serif",
        ),
        font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"),
    ).set(
        body_background_fill="#f6f7fb",
        block_shadow="0 1px 2px rgba(16,24,40,.06)",
        block_title_background_fill="none",
        block_title_padding="0",
        block_title_text_color="#1f2937",
        block_title_text_size="*text_sm",
        block_label_background_fill="none",
        block_label_text_color="#374151",
        block_label_text_size="*text_sm",
        block_label_border_width="0px",
        block_label_shadow="none",
        block_info_text_size="*text_xs",
        layout_gap="*spacing_lg",
        button_primary_background_fill="#4f46e5",
        button_primary_background_fill_hover="#4338ca",
    )


def build_app(workdir: str | os.PathLike, lang: str | None = None, jobs: Jobs | None = None) -> tuple[gr.Blocks, UI]:
    """The whole page. `lang` is what the page is built in (--lang); each page then switches to
    its reader's saved choice or browser language."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    forced = normalize_lang(lang)
    ui = UI(workdir=workdir, jobs=jobs or Jobs(workdir), lang=forced or "en")
    chat = extra_tab()
    with gr.Blocks(title=t("ui.brand", ui.lang), analytics_enabled=False, fill_width=False) as demo:
        ui.session = gr.State(Session(lang=ui.lang))
        saved_lang = gr.BrowserState(None, storage_key="tuneboard-lang")
        with gr.Row(elem_id="top-bar", equal_height=True):
            brand = gr.HTML(brand_html(ui.lang), elem_id="top-brand", container=False, padding=False)
            ui.add(
                gr.HTML,
                "top-status",
                value=live.top_status_html(Session().watch, ui.lang),
                container=False,
                padding=False,
            )
            ui.add(
                gr.Dropdown,
                "top-lang",
                label="ui.top.lang",
                choices=[(LANG_NAMES[x], x) for x in LANGS],
                value=ui.lang,
                scale=0,
                min_width=150,
                container=False,
                show_label=False,
            )
        with gr.Tabs(elem_id="top-tabs") as tabs:
            ui.c["top-tabs"] = tabs
            for tab_id, label, module in TABS:
                with ui.block(gr.Tab, label, f"{tab_id}-tab", id=tab_id):
                    module.build(ui)
            if chat is not None:
                with ui.block(gr.Tab, getattr(chat, "TAB_LABEL", "ui.tab.chat"), "chat-tab", id="chat"):
                    chat.build(ui)
        for _, _, module in TABS:
            module.wire(ui)
        if chat is not None and callable(getattr(chat, "wire", None)):
            chat.wire(ui)
        # the data check says it is at work on the Data tab's summary (a change elsewhere may check the data too)
        ui.wire_form_changes(show_progress="minimal", show_progress_on=[ui.c["data-summary"]])
        _wire_page(ui, demo, saved_lang, brand, forced)
    return demo, ui


# <html lang> follows the page's language, not the browser's (Gradio sets it from the browser's): screen readers
# read with it, and browsers pick Han characters' glyphs by it (the same code point is drawn differently in
# Japanese, Korean and Chinese fonts). Gradio's own words (a toast's "Error", an upload box's "Drop File Here", a
# table's "Search") follow it too: its front end picks them from the browser's language, and `changeLocale`
# (what its own Settings panel calls) is exported by its core module, which the page has already loaded, so
# importing that same address again gives the same module. Components drawn after the switch take its words
# (the page's language is chosen as it opens, before most tabs are drawn); a few drawn before keep theirs.
HTML_LANG_JS = """async (lang) => {
  const locale = lang === "zh" ? "zh-CN" : lang;  // Gradio's name for the Chinese we write
  document.documentElement.lang = locale;
  const core = performance.getEntriesByType('resource').map(e => e.name)
    .find(n => /\\/assets\\/core-[\\w-]+\\.js$/.test(n));
  try {
    if (core) await (await import(core)).changeLocale(locale);
  } catch (e) {
    console.warn('tuneboard: Gradio kept the browser language for its own words', e);
  }
  document.documentElement.lang = locale;
}"""


# A Gradio textbox with a copy button draws the button inside its <label>, before the textarea: a label names
# its first control, so the button took the name and the textarea had none for a screen reader (the Train log,
# the Runs log). Such fields are named after their block's label, again after each language switch.
NAME_FIELDS_JS = """() => {
  for (const field of document.querySelectorAll('.block textarea, .block input[type=text]')) {
    if (field.labels?.length && !field.dataset.tbNamed) continue;
    if (field.getAttribute('aria-label') && !field.dataset.tbNamed) continue;
    const info = field.closest('.block')?.querySelector('[data-testid="block-info"]');
    if (info?.textContent.trim()) {
      field.setAttribute('aria-label', info.textContent.trim());
      field.dataset.tbNamed = '1';
    }
  }
}"""

# Enter in the model box took the first listed match: `Qwen/Qwen2.5-0.5B` became `...-0.5B-Instruct`, another
# model, without a word. Enter now keeps what was typed (leaving the box commits it, as a custom value); a listed
# model is still picked with the arrow keys and Enter, or a click.
KEEP_TYPED_JS = """(event) => {
  const box = event.target;
  if (!box.matches?.('#model-name input')) return;
  if (event.key === 'ArrowDown' || event.key === 'ArrowUp') { box.dataset.tbArrowed = '1'; return; }
  if (event.key !== 'Enter') { delete box.dataset.tbArrowed; return; }
  if (box.dataset.tbArrowed) { delete box.dataset.tbArrowed; return; }
  event.preventDefault();
  event.stopImmediatePropagation();
  box.blur();
}"""

# Tabs are drawn when first opened and labels change with the language: fields are named as they appear
READY_JS = f"""() => {{
  document.addEventListener('keydown', {KEEP_TYPED_JS}, true);
  const name = {NAME_FIELDS_JS};
  name();
  new MutationObserver(() => {{ clearTimeout(window.tbNaming); window.tbNaming = setTimeout(name, 150); }})
    .observe(document.body, {{childList: true, subtree: true, characterData: true}});
  // a starting run's clock (live.progress_html): the page counts the seconds the server does not redraw
  setInterval(() => {{
    for (const el of document.querySelectorAll('.tb-since')) {{
      const s = Math.max(0, Math.floor(Date.now() / 1000 - Number(el.dataset.since)));
      el.textContent = Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
    }}
  }}, 1000);
  document.body.dataset.tbReady = '1';
}}"""


def _wire_page(ui: UI, demo: gr.Blocks, saved_lang: Any, brand: Any, forced: str | None) -> None:
    """Open: pick the page's language, attach to the live run, check the data. Switch: relabel all."""
    lang_box = ui.c["top-lang"]
    relabelled = ui.texts.components

    def open_page(s: Session, saved: str | None, request: gr.Request) -> str:
        browser = accept_language(request.headers.get("accept-language")) if request else None
        with s.lock:  # the reader's own choice, then --lang, then the browser's language
            s.lang = choose_lang(saved, forced, browser)
        return s.lang

    def switch(s: Session, lang: str) -> list:
        lang = normalize_lang(lang) or "en"
        with s.lock:
            s.lang = lang
        return [brand_html(lang), *ui.texts.updates(lang)]

    # the reader's own pick is what the browser remembers (`input`: theirs alone). Saved on every change, the
    # language open_page chose was saved too, and a pick made as the page opened raced it: whichever save
    # finished last won, and a new window could open in the language before (a helper's probe, 2026-11-27)
    lang_box.input(lambda lang: normalize_lang(lang) or "en", [lang_box], saved_lang, show_progress="hidden")
    # a language switch (by the reader, or by open_page choosing one) relabels every component, then
    # redraws what handlers wrote (charts, tables, messages) in the new language
    lang_box.change(None, [lang_box], None, js=HTML_LANG_JS)
    switched = lang_box.change(switch, [ui.session, lang_box], [brand, *relabelled], show_progress="hidden")
    for fn, inputs, outputs in ui.on_lang:  # side by side once the language is set: chained one after another,
        switched.then(fn, inputs, outputs, show_progress="hidden")  # the chat's status redrew after the rest, and
        # a loaded machine showed it a switch behind
    event = demo.load(open_page, [ui.session, saved_lang], lang_box, show_progress="hidden")
    # a page opened in the language it was built in (`--lang ko`) has no change to fire: <html lang> and Gradio's
    # own words are set here too, or they stay the browser's
    event = event.then(None, [lang_box], None, js=HTML_LANG_JS)
    for fn, inputs, outputs in ui.on_load:
        event = event.then(fn, inputs, outputs, show_progress="hidden")
    # the page has filled itself in: <body data-tb-ready="1"> tells scripts and browser tests
    event.then(None, None, None, js=READY_JS)


def serve(demo: gr.Blocks, host: str, port: int, auth: tuple[str, str] | None, share: bool = False) -> None:
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        prevent_thread_lock=True,
        inbrowser=False,
        show_error=False,
        quiet=True,
        footer_links=[],
        theme=theme(),
        css_paths=[ASSETS / "style.css"],
        favicon_path=str(ASSETS / "logo.svg"),
        max_file_size=f"{int(MAX_UPLOAD_MB)}mb",
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        pwa=False,
        auth_message=message("ui.auth_message", {}, "en") if auth else None,
    )


def main(args: Any) -> int:
    """`tuneboard [--host H] [--port P] [--workdir W] [--auth U:P] [--lang L] [--share]`."""
    host = getattr(args, "host", "127.0.0.1") or "127.0.0.1"
    share = bool(getattr(args, "share", False))
    auth = launch_auth(host, share, getattr(args, "auth", None))  # refuses a public address without one
    lang = getattr(args, "lang", None)
    if lang and normalize_lang(lang) is None:
        raise TuneboardError("ui.error.unknown_lang", lang=lang, langs=", ".join(LANGS))
    workdir = Path(getattr(args, "workdir", None) or default_workdir()).resolve()
    t0 = time.time()
    demo, ui = build_app(workdir, lang)
    marked = ui.jobs.recover()
    port = int(getattr(args, "port", 7860) or 7860)
    terminated = []

    def on_term(signum, frame):  # docker stop, systemd, kill: as Ctrl+C, the run stops with a checkpoint
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        serve(demo, host, port, auth, share)
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        print(
            message(
                "ui.cli.serving",
                {"url": f"http://{shown}:{port}", "workdir": str(workdir), "seconds": f"{time.time() - t0:.1f}"},
            ),
            flush=True,
        )
        if share and getattr(demo, "share_url", None):
            print(demo.share_url, flush=True)
        for run_id in marked:
            print(message("ui.cli.marked_failed", {"run": run_id}), file=sys.stderr)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        if ui.jobs.own():
            print(message("ui.cli.stopping", {"run": ui.jobs.own()}), file=sys.stderr, flush=True)
            try:
                ui.jobs.shutdown(timeout=120)
            except KeyboardInterrupt:  # a second Ctrl+C: leave the run going; a restarted board reattaches
                pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        demo.close()
    return 128 + signal.SIGTERM if terminated else 0
