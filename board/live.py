"""What a page shows of the run it watches: progress, alerts, Start/Stop/Resume, the live charts.

`view` is what the Train tab's one-second timer calls: it reads the run's new events (watch.py)
and returns only the outputs that changed, so an idle page costs a file stat per second.
Plain functions of a Session and Jobs; no Gradio.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from engine.config import RunConfig
from engine.messages import error_key
from engine.paths import models_dir
from engine.runs import latest_checkpoint, list_runs

from .charts import METRICS, PREFERENCE, figure
from .i18n import SKIP, t, t_or, update
from .jobs import Jobs, read_tail
from .session import Session
from .watch import FAILED, FINISHED, RUNNING, STARTING, STOPPED, Watch

PLOTS = {name: f"train-{name.replace('_', '-')}-plot" for name in METRICS}  # loss -> train-loss-plot


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def status_badge(status: str, lang: str) -> str:
    return f'<span class="tb-badge tb-badge-{html.escape(status)}">{html.escape(t(f"ui.status.{status}", lang))}</span>'


def _planned(w: Watch) -> int | None:
    """The steps a starting run's config asks for (`max_steps`), before the run has said its total."""
    if w.status != STARTING or w.path is None:
        return None
    try:
        steps = RunConfig.load(str(w.path / "config.yaml")).training.max_steps
    except Exception:  # noqa: BLE001 - not written yet, or being written: "?" for a moment
        return None
    return steps if steps > 0 else None


def progress_html(w: Watch, lang: str) -> str:
    """The run's header: status, a progress bar, step / total, ETA, elapsed, last loss."""
    if w.path is None:
        return f'<div class="tb-progress tb-empty" data-status="none">{html.escape(t("ui.train.no_run", lang))}</div>'
    pct = 100.0 * w.step / w.total if w.total else (100.0 if w.status == FINISHED else 0.0)
    steps = t("ui.train.steps", lang, step=w.step, total=w.total or _planned(w) or "?")
    eta = t("ui.train.eta", lang, eta=_clock(w.eta)) if w.active and w.status == RUNNING else ""
    meta = [t("ui.train.elapsed", lang, time=_clock(w.elapsed))]
    if w.last_loss is not None:
        meta.append(t("ui.train.last_loss", lang, loss=f"{w.last_loss:.4f}"))
    if w.device:
        meta.append(w.device)
    meta_html = " · ".join(html.escape(m) for m in meta)
    if w.status == STARTING:  # minutes, the first time (the demo is built): a clock the page runs shows it moves
        # the worker's first run builds the demo model (engine.demo) in a `.demo-*` folder beside where it goes
        building = any(models_dir(w.path.parent.parent).glob(".demo-*"))
        meta_html = html.escape(t("ui.train.building_demo_hint" if building else "ui.train.starting_hint", lang))
        try:
            since = w.began or (w.path / "config.yaml").stat().st_mtime  # a run this page did not start: its folder's
        except OSError:
            since = None
        if since is not None:
            clock = f'<span class="tb-since" data-since="{since:.0f}">{_clock(max(0.0, time.time() - since))}</span>'
            # "starting for": the clock of the wait, not of training ("elapsed" went 1:20, then 0:01 once running)
            meta_html += " · " + html.escape(t("ui.train.starting_for", lang, time="\x00")).replace("\x00", clock)
    return (
        f'<div class="tb-progress" data-status="{w.status}" data-step="{w.step}" data-total="{w.total}">'
        f'<div class="tb-progress-head">{status_badge(w.status, lang)}'
        f'<span class="tb-run-id" title="{html.escape(str(w.path))}">{html.escape(w.run_id)}</span>'
        f'<span class="tb-spacer"></span><span class="tb-steps">{html.escape(steps)}</span>'
        f'<span class="tb-eta">{html.escape(eta)}</span></div>'
        f'<div class="tb-bar"><div class="tb-bar-fill tb-fill-{w.status}" style="width:{pct:.1f}%"></div></div>'
        f'<div class="tb-progress-meta">{meta_html}</div></div>'
    )


def error_text(w: Watch, lang: str) -> str:
    """The run's error in the reader's language: from its key when we have one, else the engine's text."""
    if not w.error:
        return ""
    key = w.error["key"]
    return t_or(key, lang, w.error.get("message") or key, **(w.error.get("params") or {}))


def alerts_html(w: Watch, lang: str) -> str:
    parts = []
    if w.error and w.status == FAILED:
        parts.append(
            f'<div class="tb-alert tb-alert-error"><strong>{html.escape(t("ui.train.failed_title", lang))}'
            f"</strong> {html.escape(error_text(w, lang))}</div>"
        )
    seen = set()
    for wn in w.warnings:
        text = t_or(wn["key"], lang, wn.get("message") or wn["key"], **(wn.get("params") or {}))
        if text not in seen:
            seen.add(text)
            parts.append(f'<div class="tb-alert tb-alert-warning">{html.escape(text)}</div>')
    if w.status == STOPPED and w.path is not None and latest_checkpoint(w.path) is not None:
        parts.append(f'<div class="tb-alert tb-alert-info">{html.escape(t("ui.train.stopped_hint", lang))}</div>')
    if w.status == FINISHED:
        text = t("ui.train.finished_hint", lang)
        if isinstance(w.final.get("train_loss"), (int, float)):
            text += " " + t("ui.train.mean_loss", lang, loss=f"{w.final['train_loss']:.4f}")
        if isinstance(w.final.get("train_runtime"), (int, float)):  # all attempts' (older runs: the last one's)
            text += " · " + t("ui.train.elapsed", lang, time=_clock(max(w.elapsed, w.final["train_runtime"])))
        parts.append(f'<div class="tb-alert tb-alert-success">{html.escape(text)}</div>')
    return "".join(parts)


def message_html(kind: str, text: str) -> str:
    return f'<div class="tb-msg tb-msg-{kind}">{html.escape(text)}</div>' if text else ""


def error_html(e: Exception, lang: str, fallback: str = "ui.error.unexpected") -> str:
    """An exception as an error message in the reader's language: its own key when it carries one
    (TuneboardError, ConfigError), else `fallback` with the exception's text."""
    key, params = error_key(e, fallback)
    return message_html("error", t(key, lang, **params))


def _clause(text: str) -> str:
    """A message as part of Start's reason, whose own sentence ends it: without its final full stop (an ellipsis,
    `prompt=...`, stays)."""
    text = text.strip()
    return text[:-1] if text.endswith((".", "。")) and not text.endswith("...") else text


def gate(s: Session, lang: str) -> tuple[dict, dict, dict, str]:
    """Start / Stop / Resume interactivity, and why Start is off when it is."""
    w = s.watch
    reason = ""
    if w.active:
        reason = t("ui.train.reason_running", lang, run=w.run_id)
    elif s.data.errors:
        first = s.data.first_error
        file = Path(str(first.get("path") or "")).name  # several files may be selected: say which one
        if first.get("row") is not None:
            where = t("ui.data.where_file_row", lang, file=file, row=first["row"]) if file else \
                t("ui.data.where_row", lang, row=first["row"])
        else:
            where = t("ui.data.where_file", lang, file=file) if file else ""
        said = _clause(where + " " + t(first["key"], lang, **first.get("params", {})))
        # a value on the page that can't be used (a model folder outside the workdir, ...) is not the data's
        reason = t("ui.train.reason_form", lang, first=said) if first.get("form") else t(
            "ui.train.reason_data", lang, count=s.data.errors, first=said)
        if s.data.skippable:  # only rows are wrong (a form's problem never is): the run could leave them out
            reason += " " + t("ui.train.reason_skip_rows", lang)
    elif s.form_error:  # a bad value elsewhere on the page (epochs -1, an empty learning rate): said now, not at Start
        reason = t("ui.train.reason_form", lang, first=_clause(t(s.form_error["key"], lang, **s.form_error["params"])))
    elif s.model_error:  # the Model tab's card found the model can't be had (a hub id, offline): not only at Start
        reason = t("ui.train.reason_form", lang, first=_clause(t(s.model_error["key"], lang, **s.model_error["params"])))
    reason = reason.replace("....", "...").replace("...。", "...")  # `prompt=...` ends the sentence itself
    can_resume = (
        not w.active and w.status in (STOPPED, FAILED) and w.path is not None and latest_checkpoint(w.path) is not None
    )
    return (
        update(interactive=not reason),
        update(interactive=w.active),
        update(interactive=can_resume),
        message_html("warning", reason),
    )


def top_status_html(w: Watch, lang: str) -> str:
    if w.path is None or not w.active:
        return f'<div class="tb-top-status" data-status="idle">{html.escape(t("ui.top.idle", lang))}</div>'
    pct = f" · {100 * w.step / w.total:.0f}%" if w.total else ""
    return (
        f'<div class="tb-top-status" data-status="{w.status}"><span class="tb-dot"></span>'
        f"{html.escape(t('ui.top.training', lang, run=w.run_id))}{pct}</div>"
    )


def attach(s: Session, jobs: Jobs) -> None:
    """A page that opens watches the live run (this board's, or one found running), else the newest run."""
    with s.lock:
        if s.watch.path is not None and s.watch.active:
            return
        run = jobs.own()
        runs = list_runs(jobs.workdir) if run is None else []
        run = run or next((r.id for r in runs if r.status == RUNNING), None) or (runs[0].id if runs else None)
        if run and run != s.watch.run_id:
            s.watch = Watch.of(run, jobs.workdir / "runs" / run)


N_OUTPUTS = 11 + len(PLOTS)


def plot(curves, name: str, lang: str, waiting: bool):
    """A live chart's new figure; a preference run's own charts show for such a run only."""
    fig = figure(curves, name, lang, waiting)
    return update(value=fig, visible=curves.preference) if name in PREFERENCE else fig


def view(s: Session, jobs: Jobs, force: bool = False) -> tuple:
    """Everything the tick may redraw, each output skipped when it did not change.
    Order: progress, *plots, log, alerts, details (the traceback's fold), traceback, start, stop, resume,
    reason, top status, message (cleared when the run's status changes: "Stopping..." has then happened)."""
    with s.lock:
        w, lang = s.watch, s.lang
        own = jobs.own()
        if own and own != w.run_id and not w.active:  # a run started from another page
            w = s.watch = Watch.of(own, jobs.workdir / "runs" / own)
            force = True
        was_active = w.active
        changed = w.advance(live=jobs.is_live(w.run_id)) or force
        # the charts draw "waiting" while the run is active: its end redraws them even with no new point
        curves_changed = force or w.curves_changed or w.active != was_active
        log_path = w.path / "train.log" if w.path is not None else None
        size = log_path.stat().st_size if log_path is not None and log_path.exists() else 0
        log_changed = force or size != w.log_size
        w.log_size = size
        if not changed and not log_changed:
            return (SKIP,) * N_OUTPUTS
        waiting = w.path is None or w.active
        plots = tuple(plot(w.curves, name, lang, waiting) if curves_changed else SKIP for name in PLOTS)
        log = (_last_lines(read_tail(log_path)) if log_path is not None else "") if log_changed else SKIP
        if not changed:
            return (SKIP, *plots, log) + (SKIP,) * 9
        tb = (w.error or {}).get("traceback") or ""
        start, stop, resume, reason = gate(s, lang)
        message = "" if w.shown_status and w.status != w.shown_status else SKIP
        w.shown_status = w.status
        return (
            progress_html(w, lang),
            *plots,
            log,
            alerts_html(w, lang),
            update(visible=bool(tb)),
            update(value=tb),
            start,
            stop,
            resume,
            reason,
            top_status_html(w, lang),
            message,
        )


LOG_LINES = 16  # the log box's height: the newest lines always in view, with no scrolling (the Runs tab has it all)


def _last_lines(text: str) -> str:
    return "\n".join(text.rstrip("\n").split("\n")[-LOG_LINES:])
