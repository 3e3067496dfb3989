"""Chat, Evaluate and Export tab: talk to a run's result, score it, take it home.

The model lives in the engine's chat process (engine/chat_worker.py); this module only sends it
requests and draws what comes back, so the board never imports torch. Handlers are plain
functions of values and a worker (tests pass a fake one); `build` lays out, `wire` connects.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from engine.chat_worker import ChatWorker
from engine.config import ConfigError, GenerationConfig, RunConfig
from engine.evaluate import read_eval, summary_rows
from engine.export import INFO_FILE
from engine.messages import TuneboardError, error_key
from engine.runs import list_runs, resolve_run

from ..i18n import SKIP, t, t_or, update
from ..live import error_html, message_html
from ..safety import check_data_path
from ..session import Session
from ..ui import UI
from ..widgets import Slider

TAB_LABEL = "chat.tab"
MODES = [("chat.mode_greedy", "greedy"), ("chat.mode_sample", "sample"), ("chat.mode_beam", "beam")]
SETTINGS = ["chat-system", "chat-mode", "chat-temperature", "chat-top-k", "chat-top-p", "chat-min-p",
            "chat-repetition-penalty", "chat-max-new-tokens", "chat-num-beams", "chat-num-return",
            "chat-stop-strings", "chat-seed"]
SWEEP_COLUMNS = ["chat.col_seed", "chat.col_answer"]
SAMPLE_COLUMNS = ["eval.col_prompt", "eval.col_reference", "eval.col_prediction", "eval.col_rouge"]
EXPORT_COLUMNS = ["export.col_folder", "export.col_kind", "export.col_run", "export.col_size", "export.col_time"]
# Number boxes carry no Gradio range (Gradio refuses every event that reads a number out of its range, with an
# English toast naming no field): GenerationConfig checks the chat's knobs; these bounds are kept here
SWEEP_MAX = 32
# a streamed answer is redrawn at most this often (s): redrawn at each token, a 488-token answer written in 6 s
# took the page 30 s to show, and Stop could not be pressed meanwhile
STREAM_EVERY = 0.2
_NAME_OK = re.compile(r"^\w[\w.-]{0,99}$")  # letters and digits of any script


# ---- handlers (plain functions) -------------------------------------------------------------


def settings(system: str, mode: str, temperature: float, top_k: int, top_p: float, min_p: float, repetition: float,
             max_new_tokens: int, num_beams: int, num_return: int, stops: str, seed: int) -> dict[str, Any]:
    """The controls -> a checked GenerationConfig dict (ConfigError names a bad field)."""
    beam = mode == "beam"
    beams = 2 if num_beams is None else int(num_beams)  # beam search with 1 beam would be greedy: 2 at least
    data = {"system_prompt": (system or "").strip() or None, "max_new_tokens": int(max_new_tokens or 1),
            "temperature": 0.0 if mode == "greedy" else float(temperature or 0), "top_k": int(top_k or 0),
            "top_p": float(top_p), "min_p": float(min_p or 0), "repetition_penalty": float(repetition),
            # as typed: an impossible value is refused by the config, with the field's name, not quietly replaced
            "num_beams": (max(2, beams) if beams >= 1 else beams) if beam else 1,
            # greedy decoding has one answer: the box is greyed out there, and its number not sent
            "num_return_sequences": 1 if num_return is None or mode == "greedy" else int(num_return),
            "stop": [s for s in (stops or "").splitlines() if s], "seed": int(seed if seed is not None else -1)}
    return RunConfig.from_dict({"generation": data}).generation.__dict__.copy()


def controls(gen: dict[str, Any]) -> list[Any]:
    """A GenerationConfig dict -> the controls' values, in SETTINGS order (re-run, pin)."""
    g = GenerationConfig(**gen)
    mode = "beam" if g.num_beams > 1 else "greedy" if g.temperature == 0 else "sample"
    return [g.system_prompt or "", mode, g.temperature, g.top_k, g.top_p, g.min_p, g.repetition_penalty,
            g.max_new_tokens, max(g.num_beams, 2), g.num_return_sequences, "\n".join(g.stop), g.seed]


def messages_of(history: list[dict] | None) -> list[dict[str, str]]:
    """The Chatbot's messages -> plain {role, content} turns."""
    out = []
    for m in history or []:
        content = m.get("content")
        if isinstance(content, list):  # Gradio may hand back [{"type": "text", "text": ...}]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if m.get("role") in ("user", "assistant") and isinstance(content, str):
            out.append({"role": m["role"], "content": content})
    return out


def prompt_of(history: list[dict] | None, text: str) -> list[dict[str, str]]:
    """The prompt a sweep or a comparison answers: the conversation plus the typed message,
    or (box empty) the conversation up to its last question."""
    msgs = messages_of(history)
    if (text or "").strip():
        return msgs + [{"role": "user", "content": text.strip()}]
    while msgs and msgs[-1]["role"] != "user":
        msgs.pop()
    return msgs


def result_runs(workdir: Path) -> list[str]:
    """Runs with something to talk to: a saved adapter or model."""
    return [r.id for r in list_runs(workdir) if r.has_adapter or r.has_model]


def shown_rows(table: Any) -> list[list]:
    """A Dataframe's rows as the page holds them (pandas, or a dict of headers and data), without the empty row
    Gradio shows in an empty table."""
    if table is None:
        return []
    rows = list(table.get("data") or []) if isinstance(table, dict) else table.values.tolist()
    return [list(r) for r in rows if any(str(v).strip() for v in r)]


def run_choices(ids: list[str], picked: Optional[str], by_reader: bool = True) -> dict:
    """A run picker's update: `ids` (result_runs, newest first), keeping the picked run while it is there if the
    reader picked it; one the page picked by itself moves on to the newest (a run finished since)."""
    keep = picked in ids and by_reader
    return update(choices=ids, value=picked if keep else (ids[0] if ids else None))


def status_html(info: dict | None, lang: str) -> str:
    if not info or not info.get("loaded"):
        return message_html("info", t("chat.status_none", lang))
    quant = f" · {info['quantization']}-bit" if info.get("quantization") else ""
    return message_html("success", t("chat.status_loaded", lang, run=info["run"], method=info["method"], base=info["base"],
                                device=info["device"], precision=info["precision"] + quant))


MODE_CONTROLS = ["chat-temperature", "chat-top-k", "chat-top-p", "chat-min-p", "chat-num-beams", "chat-num-return"]


def mode_controls(mode: str) -> tuple:
    """Greyed out where a decoding mode ignores them: sampling's knobs for greedy and beams, beams for the others,
    answers per prompt for greedy (which has one: 3 was refused with advice to raise the greyed-out beams)."""
    sampling = mode == "sample"
    return (*(update(interactive=sampling) for _ in MODE_CONTROLS[:4]), update(interactive=mode == "beam"),
            update(interactive=mode != "greedy"))


def ensure_loaded(worker: ChatWorker, run_id: Optional[str]) -> dict:
    """The worker's model, loading `run_id` first when another (or none) is loaded."""
    if not run_id:
        raise TuneboardError("chat.error_no_run")
    info = worker.call("info") or {}
    if not info.get("loaded") or info.get("run") != run_id:
        info = worker.call("load", run=run_id)
    return info


# the answer's recorded settings, named as the controls that set them
SETTING_LABELS = {"system_prompt": "chat.system", "max_new_tokens": "chat.max_new_tokens", "temperature": "chat.temperature",
                  "top_k": "chat.top_k", "top_p": "chat.top_p", "min_p": "chat.min_p",
                  "repetition_penalty": "chat.repetition_penalty", "num_beams": "chat.num_beams",
                  "num_return_sequences": "chat.num_return", "stop": "chat.stop_strings", "seed": "chat.seed"}


def meta_html(record: Optional[dict], lang: str, note: str = "") -> str:
    """The last answer's seed and settings (what re-runs it), and the other returned answers."""
    if not record:
        return ""
    a = record["answer"]
    s = a["settings"]
    mode = t({v: k for k, v in MODES}["beam" if s["num_beams"] > 1 else "greedy" if s["temperature"] == 0 else "sample"], lang)
    head = t("chat.meta_line", lang, seed=a["seed"], mode=mode, tokens=a["new_tokens"],
             finish=t(f"chat.finish_{a['finish']}", lang), seconds=f"{a['seconds']:.2f}")
    shown = {k: v for k, v in s.items() if v not in (None, [], "")}
    rows = "".join(f"<tr><td>{html.escape(t_or(SETTING_LABELS.get(k, ''), lang, k))}</td>"
                   f"<td>{html.escape(json.dumps(v, ensure_ascii=False))}</td></tr>" for k, v in shown.items())
    others = "".join(f'<div class="tb-chat-other"><b>#{o["index"] + 1}</b> {html.escape(o["text"])}</div>'
                     for o in record.get("others", []))
    return (f'<div class="tb-card tb-chat-meta" data-seed="{a["seed"]}"><div class="tb-card-title">'
            f'{html.escape(head)}</div>{note}<table class="tb-kv">{rows}</table>'
            + (f'<div class="tb-card-sub">{html.escape(t("chat.other_answers", lang))}</div>{others}' if others else "")
            + "</div>")


def send(worker: ChatWorker, run_id: Optional[str], history: list[dict] | None, records: list[dict] | None,
         text: str, gen: dict, use_adapter: bool, lang: str) -> Iterator[tuple]:
    """Stream one answer into the chat. Yields (history, records, meta, status, input box)."""
    history, records = list(history or []), list(records or [])
    if not (text or "").strip():
        yield history, records, SKIP, message_html("error", t("chat.error_empty", lang)), SKIP
        return
    if not run_id:
        yield history, records, SKIP, message_html("error", t("chat.error_no_run", lang)), SKIP
        return
    prompt = messages_of(history) + [{"role": "user", "content": text.strip()}]
    history = history + [{"role": "user", "content": text.strip()}]
    try:
        yield history, records, SKIP, message_html("info", t("chat.status_loading", lang, run=run_id)), ""
        info = ensure_loaded(worker, run_id)
        status = status_html(info, lang)
        reply, shown = "", 0.0
        for kind, data in worker.request("chat", messages=prompt, settings=gen, use_adapter=use_adapter):
            if kind == "chunk":
                reply += data["text"]
                if time.monotonic() - shown >= STREAM_EVERY:
                    shown = time.monotonic()
                    yield history + [{"role": "assistant", "content": reply}], records, SKIP, status, SKIP
            else:
                answers = data
        record = {"messages": prompt, "answer": answers[0], "others": answers[1:], "run": run_id}
        history = history + [{"role": "assistant", "content": answers[0]["text"]}]
        records.append(record)
        yield history, records, meta_html(record, lang), status, SKIP
    except Exception as e:
        key, params = error_key(e, "chat.error_failed")
        if key == "chat.prompt_too_long":  # the message is taken back into the box, so the next send can succeed
            yield history[:-1], records, SKIP, message_html("error", t("chat.prompt_too_long_board", lang, **params)), \
                text
            return
        yield history, records, SKIP, error_html(e, lang, "chat.error_failed"), SKIP


def rerun(worker: ChatWorker, records: list[dict] | None, lang: str) -> tuple[str, str]:
    """Answer the last prompt again with its recorded seed and settings; say whether the text is the same."""
    if not records:
        return SKIP, message_html("error", t("chat.rerun_nothing", lang))
    record = records[-1]
    try:
        ensure_loaded(worker, record["run"])
        answers = worker.call("chat", messages=record["messages"], settings=record["answer"]["settings"],
                              use_adapter=record["answer"]["adapter"])
    except Exception as e:
        return SKIP, error_html(e, lang, "chat.error_failed")
    same = answers[0]["text"] == record["answer"]["text"]
    # the answer's own run, which may not be the one the picker shows now: named
    note = message_html("success", t("chat.rerun_same", lang, run=record["run"])) if same else message_html(
        "warning", t("chat.rerun_different", lang, run=record["run"], text=answers[0]["text"]))
    return meta_html(record, lang, note), note


def compare(worker: ChatWorker, run_id: Optional[str], history: list[dict] | None, text: str, gen: dict,
            lang: str) -> Iterator[tuple[Any, Any, str]]:
    """The same prompt, base then tuned, streamed side by side. Yields (base, tuned, status)."""
    prompt = prompt_of(history, text)
    if not prompt:
        yield SKIP, SKIP, message_html("error", t("chat.error_empty", lang))
        return
    texts = {"base": "", "tuned": ""}
    try:
        yield "", "", message_html("info", t("chat.status_loading", lang, run=run_id or ""))
        status = status_html(ensure_loaded(worker, run_id), lang)
        shown = 0.0
        for kind, data in worker.request("compare", messages=prompt, settings=gen):
            if kind == "chunk":
                texts[data["side"]] += data["text"]
                if time.monotonic() - shown >= STREAM_EVERY:
                    shown = time.monotonic()
                    yield texts["base"], texts["tuned"], status
            else:
                yield data["base"][0]["text"], data["tuned"][0]["text"], status
    except Exception as e:
        yield SKIP, SKIP, error_html(e, lang, "chat.error_failed")


def sweep(worker: ChatWorker, run_id: Optional[str], history: list[dict] | None, text: str, gen: dict, n: int,
          use_adapter: bool, lang: str) -> Iterator[tuple[Any, Any, str]]:
    """The same prompt under n seeds; each row appears as it is done. Yields (table, seed picker, status)."""
    prompt = prompt_of(history, text)
    if not prompt:
        yield SKIP, SKIP, message_html("error", t("chat.error_empty", lang))
        return
    rows: list[list[Any]] = []
    try:
        yield update(value=[], headers=[t(k, lang) for k in SWEEP_COLUMNS]), SKIP, message_html(
            "info", t("chat.status_loading", lang, run=run_id or ""))
        status = status_html(ensure_loaded(worker, run_id), lang)
        asked, n = n, min(SWEEP_MAX, max(1, int(n or 1)))
        if asked is not None and asked != n:  # 1000 or -4 seeds: said, not silently 32 or 1
            status += message_html("info", t("chat.sweep_clamped", lang, asked=asked, n=n, max=SWEEP_MAX))
        for kind, data in worker.request("sweep", messages=prompt, settings=gen, n=n, use_adapter=use_adapter):
            if kind == "chunk":
                rows.append([data["seed"], data["text"]])
                yield rows, SKIP, status
        seeds = [r[0] for r in rows]
        yield rows, update(choices=seeds, value=seeds[0] if seeds else None), status
    except Exception as e:
        yield SKIP, SKIP, error_html(e, lang, "chat.error_failed")


def pin(seed: Any, lang: str) -> tuple[Any, str]:
    if seed is None or seed == "":
        return SKIP, ""
    return int(seed), message_html("success", t("chat.pinned", lang, seed=int(seed)))


def load(worker: ChatWorker, workdir: Path, run_id: Optional[str], lang: str) -> list:
    """Load the run in the chat process: its status, then the controls set to the run's own generation
    settings (the demo presets sample cooler than a real model's default: its end of turn is less sure)."""
    keep = [SKIP] * len(SETTINGS)
    if not run_id:
        return [message_html("error", t("chat.error_no_run", lang)), *keep]
    try:
        status = status_html(worker.call("load", run=run_id), lang)
    except Exception as e:
        return [error_html(e, lang, "chat.error_failed"), *keep]
    return [status, *run_settings(workdir, run_id)]


def run_settings(workdir: Path, run_id: Optional[str]) -> list:
    """The controls set to the run's own generation settings, when a run is picked or loaded (a message sent
    without Load would otherwise sample at the generic defaults); unchanged where the run has none to read."""
    try:
        gen = RunConfig.load(str(resolve_run(run_id, workdir) / "config.yaml")).chat_generation()
    except Exception:  # noqa: BLE001 - no run, or one without a readable config: the controls stay as they are
        return [SKIP] * len(SETTINGS)
    return controls(gen.__dict__)


def unload(worker: ChatWorker, lang: str) -> str:
    if worker.alive:
        try:
            worker.call("unload")
        except Exception as e:
            return error_html(e, lang, "chat.error_failed")
    return message_html("success", t("chat.status_unloaded", lang))


# ---- evaluation ----------------------------------------------------------------------------------


def metrics_html(result: Optional[dict], lang: str) -> str:
    if not result:
        return message_html("info", t("eval.none", lang))
    rows = [*summary_rows(result, lang), (t("eval.time", lang), result.get("time", ""))]
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<div class="tb-card tb-eval-result" data-run="{html.escape(result.get("run", ""))}"><table class="tb-kv">{body}</table></div>'


def sample_rows(result: Optional[dict]) -> list[list[Any]]:
    return [[s["prompt"], s["reference"], s["prediction"], s["rougeL"]] for s in (result or {}).get("samples", [])]


def eval_view(workdir: Path, run_id: Optional[str], lang: str) -> tuple[str, dict]:
    """What a run's eval.json holds: the metrics card and the samples table."""
    result = None
    if run_id:
        try:
            result = read_eval(resolve_run(run_id, workdir))
        except Exception:
            result = None
    return metrics_html(result, lang), update(value=sample_rows(result), headers=[t(k, lang) for k in SAMPLE_COLUMNS])


def evaluate(worker: ChatWorker, workdir: Path, run_id: Optional[str], data: str, max_samples: int,
             max_new_tokens: int, lang: str) -> Iterator[tuple[str, Any, Any]]:
    """Run the evaluation in the chat process. Yields (status, metrics card, samples table)."""
    if not run_id:
        yield message_html("error", t("chat.error_no_run", lang)), SKIP, SKIP
        return
    try:
        path = check_data_path(data, workdir) if (data or "").strip() else None
        result = None
        for kind, msg in worker.request("eval", run=run_id, data=path, max_samples=max(1, int(max_samples or 50)),
                                        max_new_tokens=int(max_new_tokens or 64)):
            if kind == "chunk":
                yield message_html("info", t("eval.progress", lang, phase=t(f"eval.phase_{msg['phase']}", lang),
                                             done=msg["done"], total=msg["total"])), SKIP, SKIP
            else:
                result = msg
        card, table = eval_view(workdir, run_id, lang)
        said = [t(w["key"], lang, **w["params"]) for w in (result or {}).get("warnings") or []]  # the file's own
        status = message_html("warning", " · ".join([t("eval.done", lang, run=run_id), *said])) if said else \
            message_html("success", t("eval.done", lang, run=run_id))
        yield status, metrics_html(result, lang), table
    except Exception as e:
        yield error_html(e, lang, "chat.error_failed"), SKIP, SKIP


# ---- export ---------------------------------------------------------------------------------------


def exports_dir(workdir: Path) -> Path:
    return Path(workdir) / "exports"


def export_rows(workdir: Path, lang: str) -> list[list[Any]]:
    """Every exported folder under <workdir>/exports, newest first."""
    out = []
    base = exports_dir(workdir)
    folders = [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            info = json.loads((p / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        size = sum(f.stat().st_size for f in p.iterdir() if f.is_file()) / 2**20
        kind = info.get("kind", "")
        out.append([str(p), t(f"export.kind_{kind}", lang) if kind else "", info.get("run", ""), f"{size:.1f} MB",
                    info.get("time", "")])
    return out


def export_table(workdir: Path, lang: str) -> dict:
    return update(value=export_rows(workdir, lang), headers=[t(k, lang) for k in EXPORT_COLUMNS])


def export(worker: ChatWorker, workdir: Path, run_id: Optional[str], name: str, merge: bool, repo: str,
           token: str, lang: str, overwrite: bool = False) -> tuple[str, Any, str]:
    """Export into <workdir>/exports/<name> (`overwrite`: replacing an earlier export there once the new one is
    complete). Returns (status, exports table, token box: emptied)."""
    if not run_id:
        return message_html("error", t("chat.error_no_run", lang)), SKIP, ""
    name = re.sub(r"\s+", "-", (name or "").strip()) or f"{run_id}-{'merged' if merge else 'adapter'}"  # "내 모델 1"
    if not _NAME_OK.match(name) or name in (".", ".."):
        return message_html("error", t("export.error_name", lang)), SKIP, ""
    try:
        result = worker.call("export", run=run_id, out=str(exports_dir(workdir) / name), merge=bool(merge),
                             push_to_hub=(repo or "").strip() or None, token=(token or "").strip() or None,
                             overwrite=bool(overwrite))
    except Exception as e:  # a failed upload keeps the export it made: the table lists it
        return error_html(e, lang, "chat.error_failed"), export_table(workdir, lang), ""
    text = t("export.done", lang, path=result["path"])
    if result.get("url"):
        text += " · " + t("export.uploaded", lang, url=result["url"])
    for note in result.get("notes") or []:  # a QLoRA merge answers a little otherwise; a full run had none to merge
        text += " · " + t(note["key"], lang, **note["params"])
    return message_html("success", text), export_table(workdir, lang), ""


# ---- layout ------------------------------------------------------------------------------------


def build(ui: UI) -> None:
    d = GenerationConfig()
    ui.chat_worker = ChatWorker(ui.workdir)
    with ui.block(gr.Tab, "chat.section_chat", "chat-chat-tab"):
        with gr.Row(equal_height=True):
            ui.add(gr.Dropdown, "chat-run", label="chat.run", info="chat.run_info", choices=[], value=None, scale=3)
            ui.add(gr.Button, "chat-load", text="chat.load", variant="secondary", scale=0, min_width=110)
            ui.add(gr.Button, "chat-unload", text="chat.unload", variant="secondary", scale=0, min_width=110)
        ui.add(gr.HTML, "chat-status", value=status_html(None, ui.lang))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                ui.add(gr.Chatbot, "chat-output", label="chat.output", value=[], height=420, buttons=["copy"])
                # one line that grows: Gradio sends on Enter only from a one-line box (from a taller one, on
                # Shift+Enter), and the placeholder says Enter sends, Shift+Enter breaks the line
                ui.add(gr.Textbox, "chat-input", label="chat.input", placeholder="chat.input_placeholder", lines=1,
                       max_lines=8)
                with gr.Row(elem_classes=["tb-actions"]):
                    ui.add(gr.Button, "chat-send", text="chat.send", variant="primary", scale=2)
                    ui.add(gr.Button, "chat-stop", text="chat.stop", variant="stop")
                    ui.add(gr.Button, "chat-clear", text="chat.clear", variant="secondary")
                    ui.add(gr.Button, "chat-rerun", text="chat.rerun", variant="secondary")
                ui.add(gr.Checkbox, "chat-base", label="chat.base", value=False)
                ui.add(gr.HTML, "chat-meta", value="")
                ui.add(gr.Markdown, "chat-compare-title", text="chat.compare_title", elem_classes=["tb-section"])
                ui.add(gr.Button, "chat-compare", text="chat.compare", variant="secondary")
                with gr.Row(equal_height=True):
                    ui.add(gr.Textbox, "chat-base-output", label="chat.base_output", lines=4, interactive=False)
                    ui.add(gr.Textbox, "chat-tuned-output", label="chat.tuned_output", lines=4, interactive=False)
                ui.add(gr.Markdown, "chat-sweep-title", text="chat.sweep_title", elem_classes=["tb-section"])
                with gr.Row(equal_height=True):
                    ui.add(gr.Number, "chat-sweep-n", label="chat.sweep_n", value=3, precision=0, scale=1)
                    ui.add(gr.Button, "chat-sweep", text="chat.sweep", variant="secondary", scale=1)
                ui.add(gr.Dataframe, "chat-sweep-table", label="chat.sweep_table",
                       headers=[t(k, ui.lang) for k in SWEEP_COLUMNS], value=[], interactive=False, wrap=True)
                with gr.Row(equal_height=True):
                    ui.add(gr.Dropdown, "chat-sweep-pick", label="chat.sweep_pick", choices=[], value=None, scale=2)
                    ui.add(gr.Button, "chat-pin", text="chat.pin", variant="secondary", scale=1)
            with gr.Column(scale=2, min_width=300, elem_classes=["tb-settings"]):
                ui.add(gr.Markdown, "chat-settings-title", text="chat.settings", elem_classes=["tb-section"])
                ui.add(gr.Textbox, "chat-system", label="chat.system", lines=2, value=d.system_prompt or "")
                ui.add(gr.Radio, "chat-mode", label="chat.mode", choice_keys=MODES, value="sample")
                ui.add(Slider, "chat-temperature", label="chat.temperature", minimum=0, maximum=2, step=0.05,
                       value=d.temperature)
                with gr.Row():
                    ui.add(gr.Number, "chat-top-k", label="chat.top_k", info="chat.top_k_info", value=d.top_k,
                           precision=0)
                    ui.add(Slider, "chat-top-p", label="chat.top_p", minimum=0.01, maximum=1, step=0.01,
                           value=d.top_p)
                with gr.Row():
                    ui.add(Slider, "chat-min-p", label="chat.min_p", minimum=0, maximum=1, step=0.01, value=d.min_p)
                    ui.add(Slider, "chat-repetition-penalty", label="chat.repetition_penalty", minimum=0.5,
                           maximum=2, step=0.05, value=d.repetition_penalty)
                ui.add(Slider, "chat-max-new-tokens", label="chat.max_new_tokens", minimum=1, maximum=4096, step=1,
                       value=d.max_new_tokens)
                with gr.Row():
                    ui.add(gr.Number, "chat-num-beams", label="chat.num_beams", value=4, precision=0,
                           interactive=False)  # the default mode samples
                    ui.add(gr.Number, "chat-num-return", label="chat.num_return", value=1, precision=0)
                ui.add(gr.Textbox, "chat-stop-strings", label="chat.stop_strings", info="chat.stop_strings_info",
                       lines=2, value="")
                ui.add(gr.Number, "chat-seed", label="chat.seed", info="chat.seed_info", value=d.seed, precision=0)
    ui.states["chat-records"] = gr.State([])
    with ui.block(gr.Tab, "eval.tab", "eval-tab"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300, elem_classes=["tb-settings"]):
                ui.add(gr.Dropdown, "eval-run", label="eval.run", choices=[], value=None)
                ui.add(gr.Textbox, "eval-data", label="eval.data", info="eval.data_info",
                       placeholder="eval.data_placeholder", value="")
                with gr.Row():
                    ui.add(gr.Number, "eval-max-samples", label="eval.max_samples", value=50, precision=0)
                    ui.add(gr.Number, "eval-max-new-tokens", label="eval.max_new_tokens", value=64, precision=0)
                ui.add(gr.Button, "eval-start", text="eval.start", variant="primary")
                ui.add(gr.HTML, "eval-status", value="")
            with gr.Column(scale=3):
                ui.add(gr.HTML, "eval-metrics", value=metrics_html(None, ui.lang))
        ui.add(gr.Dataframe, "eval-samples", label="eval.samples", headers=[t(k, ui.lang) for k in SAMPLE_COLUMNS],
               value=[], interactive=False, wrap=True, max_height=420,
               column_widths=["30%", "28%", "30%", "12%"])  # the score stays on screen
    with ui.block(gr.Tab, "export.tab", "export-tab"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300, elem_classes=["tb-settings"]):
                ui.add(gr.Dropdown, "export-run", label="export.run", choices=[], value=None)
                ui.add(gr.Textbox, "export-name", label="export.name", info="export.name_info",
                       placeholder="export.name_placeholder", value="")
                ui.add(gr.Checkbox, "export-merge", label="export.merge", info="export.merge_info", value=True)
                ui.add(gr.Checkbox, "export-overwrite", label="export.overwrite", info="export.overwrite_info",
                       value=False)
                ui.add(gr.Textbox, "export-hub-repo", label="export.hub_repo", placeholder="export.hub_repo_placeholder",
                       value="")
                ui.add(gr.Textbox, "export-token", label="export.token", info="export.token_info", type="password",
                       value="")
                ui.add(gr.Button, "export-start", text="export.start", variant="primary")
                ui.add(gr.HTML, "export-status", value="")
            with gr.Column(scale=3):
                ui.add(gr.Dataframe, "export-list", label="export.list", headers=[t(k, ui.lang) for k in EXPORT_COLUMNS],
                       value=[], interactive=False, wrap=True,
                       column_widths=["38%", "14%", "24%", "10%", "14%"])  # a long folder wraps (see style.css)
                ui.add(gr.Button, "export-refresh", text="export.refresh", size="sm", variant="secondary")


def wire(ui: UI) -> None:
    c, workdir, worker = ui.c, ui.workdir, ui.chat_worker
    records = ui.states["chat-records"]
    knobs = [c[k] for k in SETTINGS]

    def gen_or_error(lang: str, values: list) -> tuple[Optional[dict], str]:
        try:
            return settings(*values), ""
        except ConfigError as e:
            return None, error_html(e, lang)

    def on_send(s: Session, run_id, history, recs, text, use_base, *values):
        gen, err = gen_or_error(s.lang, list(values))
        if gen is None:
            yield history, recs, SKIP, err, SKIP
            return
        yield from send(worker, run_id, history, recs, text, gen, not use_base, s.lang)

    send_in = [ui.session, c["chat-run"], c["chat-output"], records, c["chat-input"], c["chat-base"], *knobs]
    send_out = [c["chat-output"], records, c["chat-meta"], c["chat-status"], c["chat-input"]]
    for trigger in (c["chat-send"].click, c["chat-input"].submit):
        trigger(on_send, send_in, send_out, show_progress="hidden")
    c["chat-stop"].click(lambda: worker.interrupt(), None, None, show_progress="hidden", queue=False)
    c["chat-clear"].click(lambda: ([], [], "", ""), None, [c["chat-output"], records, c["chat-meta"], c["chat-input"]],
                          show_progress="hidden")
    c["chat-rerun"].click(lambda s, recs: rerun(worker, recs, s.lang), [ui.session, records],
                          [c["chat-meta"], c["chat-status"]], show_progress="hidden")
    c["chat-mode"].change(mode_controls, c["chat-mode"], [c[k] for k in MODE_CONTROLS], show_progress="hidden")
    c["chat-load"].click(lambda s, run_id: load(worker, workdir, run_id, s.lang), [ui.session, c["chat-run"]],
                         [c["chat-status"], *knobs], show_progress="hidden")
    c["chat-unload"].click(lambda s: unload(worker, s.lang), ui.session, c["chat-status"], show_progress="hidden")
    c["chat-run"].input(lambda run_id: run_settings(workdir, run_id), c["chat-run"], knobs, show_progress="hidden")

    def on_compare(s: Session, run_id, history, text, *values):
        gen, err = gen_or_error(s.lang, list(values))
        if gen is None:
            yield SKIP, SKIP, err
            return
        yield from compare(worker, run_id, history, text, gen, s.lang)

    c["chat-compare"].click(on_compare, [ui.session, c["chat-run"], c["chat-output"], c["chat-input"], *knobs],
                            [c["chat-base-output"], c["chat-tuned-output"], c["chat-status"]], show_progress="hidden")

    def on_sweep(s: Session, run_id, history, text, n, use_base, *values):
        gen, err = gen_or_error(s.lang, list(values))
        if gen is None:
            yield SKIP, SKIP, err
            return
        yield from sweep(worker, run_id, history, text, gen, n, not use_base, s.lang)

    c["chat-sweep"].click(on_sweep, [ui.session, c["chat-run"], c["chat-output"], c["chat-input"], c["chat-sweep-n"],
                                     c["chat-base"], *knobs],
                          [c["chat-sweep-table"], c["chat-sweep-pick"], c["chat-status"]], show_progress="hidden")
    c["chat-pin"].click(lambda s, seed: pin(seed, s.lang), [ui.session, c["chat-sweep-pick"]],
                        [c["chat-seed"], c["chat-status"]], show_progress="hidden")

    def on_eval(s: Session, run_id, data, max_samples, max_new_tokens):
        yield from evaluate(worker, workdir, run_id, data, max_samples, max_new_tokens, s.lang)

    c["eval-start"].click(on_eval, [ui.session, c["eval-run"], c["eval-data"], c["eval-max-samples"],
                                    c["eval-max-new-tokens"]], [c["eval-status"], c["eval-metrics"], c["eval-samples"]],
                          show_progress="hidden")
    def show_eval(s: Session, run_id):
        return eval_view(workdir, run_id, s.lang)

    c["eval-run"].change(show_eval, [ui.session, c["eval-run"]], [c["eval-metrics"], c["eval-samples"]],
                         show_progress="hidden")
    c["export-start"].click(
        lambda s, run_id, name, merge, repo, token, overwrite: export(worker, workdir, run_id, name, merge, repo,
                                                                      token, s.lang, overwrite),
        [ui.session, c["export-run"], c["export-name"], c["export-merge"], c["export-hub-repo"], c["export-token"],
         c["export-overwrite"]],
        [c["export-status"], c["export-list"], c["export-token"]], show_progress="hidden")
    def show_exports(s: Session):
        return export_table(workdir, s.lang)

    c["export-refresh"].click(show_exports, ui.session, c["export-list"], show_progress="hidden")

    pickers = [c["chat-run"], c["eval-run"], c["export-run"]]

    def refresh(s: Session, *picked) -> tuple:
        ids = result_runs(workdir)  # one scan of the runs for all three pickers
        choices = [run_choices(ids, p, s.picked_runs.get(box.elem_id) == p) for box, p in zip(pickers, picked, strict=True)]
        chat_run = choices[0]["value"]  # a run picked here, not by the reader: its own settings, as a pick gives
        settings = run_settings(workdir, chat_run) if chat_run != picked[0] else [SKIP] * len(SETTINGS)
        return (*choices, export_table(workdir, s.lang), *settings)

    refresh_in, refresh_out = [ui.session, *pickers], [*pickers, c["export-list"], *knobs]
    for box in pickers:  # the reader's own pick stays when the tab is opened again; the page's follows the newest
        box.input(lambda s, run, _id=box.elem_id: s.picked_runs.__setitem__(_id, run), [ui.session, box], None,
                  show_progress="hidden", queue=False)
    c["chat-tab"].select(refresh, refresh_in, refresh_out, show_progress="hidden").then(
        show_eval, [ui.session, c["eval-run"]], [c["eval-metrics"], c["eval-samples"]], show_progress="hidden")
    ui.on_load.append((refresh, refresh_in, refresh_out))

    def relabel(s: Session, run_id, recs, sweep) -> tuple:
        metrics, samples = eval_view(workdir, run_id, s.lang)
        info = getattr(worker, "last_info", None) if worker.alive else None  # never waits on a generation
        # a table's new headers show only with a value: the sweep's rows are sent back as they are
        sweep = update(value=shown_rows(sweep), headers=[t(k, s.lang) for k in SWEEP_COLUMNS])
        # the evaluation's and the export's last message are cleared, not left in the language before
        return (metrics, samples, export_table(workdir, s.lang), sweep,
                meta_html(recs[-1] if recs else None, s.lang), status_html(info, s.lang), "", "")

    ui.on_lang.append((relabel, [ui.session, c["eval-run"], records, c["chat-sweep-table"]],
                       [c["eval-metrics"], c["eval-samples"], c["export-list"], c["chat-sweep-table"], c["chat-meta"],
                        c["chat-status"], c["eval-status"], c["export-status"]]))
