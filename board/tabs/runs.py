"""Runs tab: every run in the workdir with its status, config and final metrics; one run's curves
redrawn from its events.jsonl; several runs' losses compared on one chart.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import gradio as gr

from engine.evaluate import eval_metrics
from engine.events import read_events
from engine.runs import RUNNING, RunInfo, deletable, delete_run, folder_size, list_runs, run_info

from ..charts import Curves, compare_figure, figure
from ..i18n import SKIP, t, t_or, update
from ..jobs import Jobs, read_tail
from ..live import error_html, message_html, status_badge, view
from ..safety import run_path
from ..session import Session
from ..ui import UI
from ..watch import Watch
from .train import use_run_config

COLUMNS = [
    "ui.runs.col_run",
    "ui.runs.col_status",
    "ui.runs.col_stage",
    "ui.runs.col_model",
    "ui.runs.col_steps",
    "ui.runs.col_loss",
    "ui.runs.col_eval_loss",
    "ui.runs.col_started",
]


# ---- handlers (plain functions) -------------------------------------------------------------


LIVE_EVERY_S = 3.0  # how often the open Runs tab re-reads the workdir (only changed runs are read again)
_READ: dict = {}  # list_runs' cache: a run whose files did not change is not read again


def runs(jobs: Jobs) -> list[RunInfo]:
    """The workdir's runs, newest first; a run this board is training counts as running whatever its file says."""
    out = list_runs(jobs.workdir, cache=_READ)
    for info in out:
        if jobs.is_live(info.id):
            info.status = RUNNING
    return out


def _fmt(x: Any, digits: str = ".4f") -> str:
    return format(x, digits) if isinstance(x, (int, float)) else ""


def table_rows(infos: list[RunInfo], lang: str) -> list[list[Any]]:
    rows = []
    for r in infos:
        eval_loss = r.metrics.get("eval_loss")
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)) if r.created else ""
        rows.append(
            [
                r.id,
                t(f"ui.status.{r.status}", lang),
                r.stage,
                r.model,
                f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step),
                _fmt(r.last_loss),
                _fmt(eval_loss),
                started,
            ]
        )
    return rows


def headers(lang: str) -> list[str]:
    return [t(k, lang) for k in COLUMNS]


def listing(jobs: Jobs, lang: str, picked: str | None, compared: list[str] | None,
            infos: list[RunInfo] | None = None) -> tuple[dict, dict, dict]:
    """Table, the run picker and the compare picker, keeping what was picked where it still exists."""
    infos = runs(jobs) if infos is None else infos
    ids = [r.id for r in infos]
    pick = picked if picked in ids else (ids[0] if ids else None)
    keep = [x for x in (compared or []) if x in ids]
    return (
        update(value=table_rows(infos, lang), headers=headers(lang)),
        update(choices=ids, value=pick),
        update(choices=ids, value=keep),
    )


def live_listing(jobs: Jobs, lang: str, picked: str | None, compared: list[str] | None,
                 shown: dict | None) -> tuple:
    """The open tab's timer: (table, run picker, compare picker, what is shown now), each update sent only when
    it changed (a running run's steps and loss, a run added or gone), so an open dropdown is left alone."""
    infos = runs(jobs)
    now = {"rows": table_rows(infos, lang), "ids": [r.id for r in infos]}
    shown = shown or {}
    if now == shown:
        return SKIP, SKIP, SKIP, shown
    table = update(value=now["rows"], headers=headers(lang)) if now["rows"] != shown.get("rows") else SKIP
    if now["ids"] == shown.get("ids"):
        return table, SKIP, SKIP, now
    # the choices only: what the reader picks meanwhile stands, unless it is gone (a tick can start before a pick)
    ids = now["ids"]
    gone = picked is not None and picked not in ids
    pick = update(choices=ids, value=ids[0] if ids else None) if gone else update(choices=ids)
    kept = [x for x in (compared or []) if x in ids]
    compare = update(choices=ids) if kept == list(compared or []) else update(choices=ids, value=kept)
    return table, pick, compare, now


def curves_of(path: Path) -> Curves:
    curves = Curves()
    curves.add(read_events(str(path / "events.jsonl")))
    return curves


def detail_html(info: RunInfo, lang: str) -> str:
    rows = [
        (t("ui.runs.col_stage", lang), info.stage),
        (t("ui.runs.col_model", lang), info.model),
        (t("ui.runs.col_steps", lang), f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step)),
        (t("ui.runs.folder", lang), str(info.path)),
    ]
    if info.init_from:  # the adapter it went on training: by its run's id when it is a run of this workdir
        source = Path(info.init_from)
        shown = source.name if source.parent == info.path.parent else str(source)
        rows.insert(2, (t("ui.runs.init_from", lang), shown))
    output = "adapter/" if info.has_adapter else "model/" if info.has_model else ""
    if output:
        rows.append((t("ui.runs.output", lang), output))
    metrics = "".join(
        f"<tr><td>{html.escape(t_or(f'metric.{k}', lang, k))}</td>"
        f"<td>{html.escape(f'{v:.0%}' if k.endswith(('accuracies', 'pairs_ranked_right')) else _fmt(v, '.5g'))}</td></tr>"
        for k, v in sorted(info.metrics.items())
        if isinstance(v, (int, float))
    )
    error = (
        f'<div class="tb-alert tb-alert-error">{html.escape(_run_error(info, lang))}</div>'
        if info.status == "failed"
        else ""
    )
    if info.config_error:  # a config.yaml edited into something Resume and "Use this config" would refuse
        key, params = info.config_error
        said = t("ui.runs.config_unreadable", lang, error=t_or(key, lang, params.get("error", key), **params))
        error += f'<div class="tb-alert tb-alert-warning">{html.escape(said)}</div>'

    return (
        f'<div class="tb-card tb-run-detail" data-status="{info.status}">'
        f'<div class="tb-card-title">{status_badge(info.status, lang)} <span class="tb-run-id">'
        f'{html.escape(info.id)}</span></div>{error}<table class="tb-kv">'
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        + "</table>"
        + (
            f'<div class="tb-card-sub">{html.escape(t("ui.runs.metrics", lang))}</div>'
            f'<table class="tb-kv">{metrics}</table>'
            if metrics
            else ""
        )
        + "</div>"
    )


def _run_error(info: RunInfo, lang: str) -> str:
    """The run's last error, in the reader's language when it carries a key."""
    if not info.error_key:
        return t("ui.runs.failed_no_error", lang)
    return t_or(info.error_key, lang, info.error or info.error_key, **info.error_params)


def detail(jobs: Jobs, run_id: str | None, lang: str) -> tuple:
    """Outputs: summary card, loss chart, learning-rate chart, rewards chart (a DPO run's), config YAML, log."""
    if not run_id:
        empty = Curves()
        return ("", figure(empty, "loss", lang), figure(empty, "lr", lang), update(visible=False), "", "")
    try:
        path = run_path(run_id, jobs.workdir)
    except Exception as e:
        return error_html(e, lang), SKIP, SKIP, SKIP, "", ""
    events = read_events(str(path / "events.jsonl"))  # once, for the card and the charts
    info = run_info(path, events)
    info.metrics.update(eval_metrics(path))  # the Evaluate tab's scores, beside the trainer's own
    if jobs.is_live(info.id):
        info.status = RUNNING
    curves = Curves()
    curves.add(events)
    config = (path / "config.yaml").read_text(encoding="utf-8") if (path / "config.yaml").exists() else ""
    log = read_tail(path / "train.log")
    if info.status == "failed":
        worker = read_tail(path / "worker.log", 6_000)
        if worker.strip():
            log = (log + "\n" if log else "") + "── worker.log ──\n" + worker
    waiting = info.status == RUNNING
    return (
        detail_html(info, lang),
        figure(curves, "loss", lang, waiting),
        figure(curves, "lr", lang, waiting),
        update(value=figure(curves, "rewards", lang, waiting), visible=curves.preference),
        config,
        log,
    )


def compare(jobs: Jobs, run_ids: list[str] | None, lang: str):
    picked = {}
    for run_id in run_ids or []:
        try:
            picked[run_id] = curves_of(run_path(run_id, jobs.workdir))
        except Exception:  # a run deleted meanwhile: leave it out
            continue
    return compare_figure(picked, lang)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def ask_delete(jobs: Jobs, run_id: str | None, lang: str) -> tuple[dict, str]:
    """(the confirm buttons' update, the note): what deleting the run removes, or why it cannot be deleted."""
    if not run_id:
        return update(visible=False), ""
    try:
        path = run_path(run_id, jobs.workdir)
        deletable(path, live=jobs.is_live(path.name))
    except Exception as e:
        return update(visible=False), error_html(e, lang)
    note = t("ui.runs.delete_confirm", lang, run=path.name, size=_size(folder_size(path)))
    return update(visible=True), message_html("warning", note)


def do_delete(jobs: Jobs, run_id: str | None, lang: str) -> str:
    """Delete the run (never a live one) and say so."""
    try:
        path = run_path(run_id or "", jobs.workdir)
        freed = delete_run(path, live=jobs.is_live(path.name))
    except Exception as e:
        return error_html(e, lang)
    return message_html("success", t("ui.runs.deleted", lang, run=path.name, size=_size(freed)))


def open_in_train(s: Session, run_id: str | None, jobs: Jobs) -> None:
    """Watch a past run in the Train tab (to see it large, or resume it)."""
    if not run_id:
        return
    path = run_path(run_id, jobs.workdir)
    with s.lock:
        if not s.watch.active:
            s.watch = Watch.of(path.name, path)


# ---- layout ------------------------------------------------------------------------------------


def build(ui: UI) -> None:
    with gr.Row(elem_classes=["tb-actions"]):
        ui.add(gr.Markdown, "runs-title", text="ui.runs.title", elem_classes=["tb-section"])
        ui.add(gr.Button, "runs-refresh", text="ui.runs.refresh", size="sm", variant="secondary", scale=0)
    ui.add(
        gr.Dataframe,
        "runs-table",
        label="ui.runs.table",
        headers=headers(ui.lang),
        value=[],
        interactive=False,
        wrap=False,
        max_height=300,
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            ui.add(gr.Dropdown, "runs-pick", label="ui.runs.pick", info="ui.runs.pick_info", choices=[], value=None)
            ui.add(gr.HTML, "runs-detail", value="", container=False, padding=False)
            with gr.Row():
                ui.add(gr.Button, "runs-open", text="ui.runs.open", size="sm", variant="secondary")
                ui.add(gr.Button, "runs-use-config", text="ui.runs.use_config", size="sm", variant="secondary")
                ui.add(gr.Button, "runs-delete", text="ui.runs.delete", size="sm", variant="secondary")
            ui.add(gr.HTML, "runs-delete-note", value="", container=False, padding=False)
            with gr.Row(visible=False) as confirm:
                ui.add(gr.Button, "runs-delete-yes", text="ui.runs.delete_yes", size="sm", variant="stop")
                ui.add(gr.Button, "runs-delete-no", text="ui.runs.delete_no", size="sm", variant="secondary")
            ui.states["runs_confirm"] = confirm
            ui.states["runs_asked"] = gr.State(None)  # the run the confirmation names: Yes deletes that one
        with gr.Column(scale=3):
            ui.add(
                gr.Plot,
                "runs-loss-plot",
                label="ui.chart.loss",
                show_label=False,
                value=figure(Curves(), "loss", ui.lang),
            )
            ui.add(
                gr.Plot, "runs-lr-plot", label="ui.chart.lr", show_label=False, value=figure(Curves(), "lr", ui.lang)
            )
            ui.add(
                gr.Plot,
                "runs-rewards-plot",
                label="ui.chart.rewards",
                show_label=False,
                visible=False,  # a DPO run's
                value=figure(Curves(), "rewards", ui.lang),
            )
    with gr.Row():
        with ui.block(gr.Accordion, "ui.runs.config", "runs-config-box", open=False):
            ui.add(gr.Code, "runs-config", label="ui.runs.config", language="yaml", interactive=False, lines=12)
        with ui.block(gr.Accordion, "ui.runs.log", "runs-log-box", open=False):
            ui.add(
                gr.Textbox, "runs-log", label="ui.runs.log", lines=12, max_lines=24, interactive=False, buttons=["copy"]
            )
    ui.add(gr.Markdown, "runs-compare-title", text="ui.runs.compare_title", elem_classes=["tb-section"])
    ui.add(
        gr.Dropdown,
        "runs-compare",
        label="ui.runs.compare",
        info="ui.runs.compare_info",
        choices=[],
        value=[],
        multiselect=True,
    )
    ui.add(gr.Plot, "runs-compare-plot", label="ui.chart.compare", show_label=False, value=compare_figure({}, ui.lang))
    ui.states["runs_timer"] = gr.Timer(LIVE_EVERY_S, active=False)  # ticks only while this tab is open
    ui.states["runs_shown"] = gr.State(None)


def wire(ui: UI) -> None:
    c, jobs = ui.c, ui.jobs
    list_out = [c["runs-table"], c["runs-pick"], c["runs-compare"]]
    detail_out = [c["runs-detail"], c["runs-loss-plot"], c["runs-lr-plot"], c["runs-rewards-plot"], c["runs-config"],
                  c["runs-log"]]

    def refresh(s: Session, picked: str | None, compared: list[str] | None) -> tuple:
        # the run the reader picked, where they picked one; else the newest (a run trained since the page
        # opened was listed first and the picker, filled as the page opened, still showed an older one)
        return listing(jobs, s.lang, s.picked_runs.get("runs-pick"), compared)

    def show(s: Session, run_id: str | None) -> tuple:
        return detail(jobs, run_id, s.lang)

    def pick(s: Session, run_id: str | None) -> tuple:
        s.picked_runs["runs-pick"] = run_id
        return show(s, run_id)

    def show_compare(s: Session, run_ids: list[str] | None):
        return compare(jobs, run_ids, s.lang)

    list_in = [ui.session, c["runs-pick"], c["runs-compare"]]
    for trigger in (c["runs-refresh"].click, c["runs-tab"].select):
        trigger(refresh, list_in, list_out, show_progress="hidden").then(
            show, [ui.session, c["runs-pick"]], detail_out, show_progress="hidden"
        )
    timer, shown = ui.states["runs_timer"], ui.states["runs_shown"]

    def live(s: Session, picked: str | None, compared: list[str] | None, was: dict | None) -> tuple:
        return live_listing(jobs, s.lang, picked, compared, was)

    timer.tick(live, [*list_in, shown], [*list_out, shown], show_progress="hidden")
    c["runs-tab"].select(lambda: gr.Timer(active=True), None, timer, show_progress="hidden")
    for other in (x for x in c.values() if isinstance(x, gr.Tab) and x is not c["runs-tab"]):
        other.select(lambda: gr.Timer(active=False), None, timer, show_progress="hidden")
    c["runs-pick"].input(pick, [ui.session, c["runs-pick"]], detail_out, show_progress="hidden")
    confirm, asked = ui.states["runs_confirm"], ui.states["runs_asked"]

    def hide_confirm() -> tuple:
        return update(visible=False), "", None

    def ask(s: Session, run_id: str | None) -> tuple:
        buttons, note = ask_delete(jobs, run_id, s.lang)
        return buttons, note, run_id if buttons.get("visible") else None  # Yes deletes this run, and only it

    def pick_moved(run_id: str | None, was_asked: str | None) -> tuple:
        """Any change of the pick (the reader's, a refresh's, the timer's) withdraws a question about another run."""
        return hide_confirm() if was_asked is not None and run_id != was_asked else (SKIP, SKIP, SKIP)

    confirm_out = [confirm, c["runs-delete-note"], asked]
    c["runs-pick"].change(pick_moved, [c["runs-pick"], asked], confirm_out, show_progress="hidden")
    c["runs-delete"].click(ask, [ui.session, c["runs-pick"]], confirm_out, show_progress="hidden")
    c["runs-delete-no"].click(hide_confirm, None, confirm_out, show_progress="hidden")

    def delete(s: Session, run_id: str | None, compared: list[str] | None) -> tuple:
        note = do_delete(jobs, run_id, s.lang)
        return (update(visible=False), note, None, *listing(jobs, s.lang, None, compared))  # keeps what still exists

    c["runs-delete-yes"].click(
        delete, [ui.session, asked, c["runs-compare"]], [*confirm_out, *list_out], show_progress="hidden",
    ).then(show, [ui.session, c["runs-pick"]], detail_out, show_progress="hidden")
    c["runs-compare"].change(
        show_compare, [ui.session, c["runs-compare"]], c["runs-compare-plot"], show_progress="hidden"
    )

    def picked_row(infos_value: Any, evt: gr.SelectData) -> Any:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return infos_value.iloc[row, 0] if hasattr(infos_value, "iloc") else infos_value[row][0]
        except (IndexError, KeyError, TypeError):
            return SKIP

    c["runs-table"].select(picked_row, c["runs-table"], c["runs-pick"], show_progress="hidden").then(
        show, [ui.session, c["runs-pick"]], detail_out, show_progress="hidden"
    )

    def to_train(s: Session, run_id: str | None) -> tuple:
        open_in_train(s, run_id, jobs)
        return (update(selected="train"), *view(s, jobs, force=True))

    c["runs-open"].click(
        to_train, [ui.session, c["runs-pick"]], [c["top-tabs"], *ui.states["view_outputs"]], show_progress="hidden"
    )
    names = ui.field_names()

    def use(s: Session, run_id: str | None) -> list:
        updates, msg = use_run_config(s, run_id, ui.workdir, names)
        return [update(selected="train"), *updates, msg]

    c["runs-use-config"].click(
        use,
        [ui.session, c["runs-pick"]],
        [c["top-tabs"], *ui.field_components(), c["train-message"]],
        show_progress="hidden",
    )
    ui.on_load.append((refresh, list_in, list_out))
    ui.on_lang.append((refresh, list_in, list_out))
    ui.on_lang.append((show_compare, [ui.session, c["runs-compare"]], [c["runs-compare-plot"]]))
    ui.on_lang.append((show, [ui.session, c["runs-pick"]], detail_out))
