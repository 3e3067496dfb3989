"""Data tab: pick bundled sets, upload files or name a path / hub dataset; see the format, the findings
with their row numbers, the rendered preview with the trained part marked, and the token lengths.

The check is engine.data's `check_file`, the same one `tuneboard check --json` runs; its errors
turn Start off (with the reason) until the data is fixed.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from engine.config import ConfigError, RunConfig
from engine.data.light_tokenizer import light_tokenizer
from engine.data.load import for_stage, skippable
from engine.data.sources import SPREADSHEETS
from engine.messages import TuneboardError

from ..charts import COLORS, _empty, _layout
from ..i18n import SKIP, t, t_or, update
from ..safety import DATA_SUFFIXES, store_upload, upload_name
from ..session import DataReport, Session
from ..ui import SWITCHES, UI

NO_DATA = "ui.data.none"  # no dataset picked: said as what to do, not as an error of a field
DEMOS = [("ui.data.demo_sft", "demo:sft"), ("ui.data.demo_dpo", "demo:dpo"), ("ui.data.demo_pt", "demo:pt")]
FORMATS = [
    ("ui.data.format_auto", "auto"),
    (None, "alpaca"),
    (None, "sharegpt"),
    (None, "messages"),
    (None, "prompt_completion"),
    (None, "preference"),
    (None, "unpaired"),
    (None, "text"),
]
FINDING_COLUMNS = [
    "ui.data.col_file",
    "ui.data.col_row",
    "ui.data.col_line",
    "ui.data.col_field",
    "ui.data.col_severity",
    "ui.data.col_message",
]
PREVIEW_ROWS = 3
PREVIEW_VIEWS = 4
FINDINGS_PER_KIND = 20


# ---- handlers (plain functions) -------------------------------------------------------------


def dataset_choices(workdir: Path, lang: str) -> list[tuple[str, str]]:
    """The bundled sets, then every file uploaded to this workdir (newest first)."""
    out = [(t(k, lang), v) for k, v in DEMOS]
    up = workdir / "uploads"
    if up.is_dir():
        files = sorted((p for p in up.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
        out += [(p.name, str(p)) for p in files]
    return out


def add_uploads(files: list[Any] | None, current: list[str] | None, workdir: Path, lang: str) -> tuple[dict, str]:
    """Copy uploads into the workdir and select them; a refused file is named with the reason."""
    selected = list(current or [])
    problems, added = [], False
    for f in files or []:
        src = getattr(f, "name", f)
        if Path(src).suffix.lower() in SPREADSHEETS:  # offered in the picker so the page can say what to do
            problems.append(t("data.spreadsheet_file", lang, path=Path(src).name, ext=Path(src).suffix))
            continue
        try:
            dest = store_upload(src, workdir, DATA_SUFFIXES)
        except TuneboardError as e:
            problems.append(t(e.key, lang, **e.params))
            continue
        # a file uploaded again under its name (fixed, most likely) takes the place of the copy selected before
        selected = [s for s in selected if not s.startswith("demo:")
                    and not (Path(s).parent == dest.parent and upload_name(s) == upload_name(dest))] + [str(dest)]
        added = True
    msg = "".join(f'<div class="tb-msg tb-msg-error">{html.escape(p)}</div>' for p in problems)
    if added and any(d.startswith("demo:") for d in current or []):  # the reader's file in the demo's place
        msg += f'<div class="tb-msg tb-msg-info">{html.escape(t("ui.data.demo_replaced", lang))}</div>'  # (said:
        # the list's help says several are merged)
    return update(choices=dataset_choices(workdir, lang), value=selected), msg


def run_check(cfg: RunConfig, workdir: Path) -> list[Any]:
    """check_file for each dataset, with the run's own tokenizer when its files are on this machine."""
    from engine.data import check_file

    tokenizer = light_tokenizer(cfg.model.name_or_path, workdir, cfg.model.chat_template)
    reports = []
    for spec in cfg.data.datasets:
        report = check_file(
            spec.path,
            spec.format,
            columns=spec.columns or None,
            split=spec.split,
            tokenizer=tokenizer,
            max_length=cfg.data.max_length,
            limit=FINDINGS_PER_KIND,
            preview_rows=PREVIEW_ROWS,
            assistant_only=cfg.data.assistant_only_loss and cfg.stage == "sft",
            stage=cfg.stage,
        )
        name = Path(report.path).name
        # what the stage refuses or takes in another form (said by training too), the preview as it trains
        report.stage_findings = for_stage(report, cfg.stage, tokenizer, cfg.data.max_length, cfg.data.system_prompt,
                                          cfg.data.assistant_only_loss, path=name,
                                          method=cfg.dpo.method, mask_history=cfg.data.mask_history)
        for f in report.findings:  # an upload's path is the server's temporary folder: its name is what the user knows
            if f.params.get("path") == report.path and name:
                f.params = {**f.params, "path": name}
        reports.append(report)
    return reports


def summarize_reports(reports: list[Any], signature: str = "", skip_bad_rows: bool = False) -> DataReport:
    """`errors`: those that keep Start off; with `skip_bad_rows`, a row's errors don't where the file has
    good rows to train on (the run leaves those rows out, as the engine's `skippable` says)."""
    out = DataReport(checked=True, signature=signature)
    rows_only = [not r.stage_errors and skippable([f for f in r.findings if f.severity == "error"], r.valid)
                 for r in reports]
    out.skippable = bool(reports) and all(rows_only)
    for r, only_rows in zip(reports, rows_only, strict=True):
        out.warnings += r.all_warnings
        if skip_bad_rows and only_rows:
            out.warnings += r.errors  # rows to leave out: said, not in the way
            out.skipped.append(r.path)
            continue
        out.errors += r.all_errors
        if not out.first_error:
            first = next((f for f in r.findings if f.severity == "error"), None)
            if first is not None:
                out.first_error = {
                    "key": first.key,
                    "row": first.row,
                    "path": r.path,
                    "params": {"row": first.row, "line": first.line, "field": first.field, **first.params},
                }
            elif r.stage_errors:
                out.first_error = {"key": r.stage_errors[0]["key"], "row": None, "path": r.path,
                                   "params": r.stage_errors[0]["params"]}
    return out


def findings_rows(reports: list[Any], lang: str) -> list[list[Any]]:
    """The findings table: file, row, line (a JSONL row's own: its number is its line), field, severity, message;
    every file's errors before any file's warnings (a second file's error sat below the first one's warnings,
    past the table's scroll)."""
    rows = []
    for r in reports:
        name = Path(r.path).name or r.path
        for f in r.stage_findings:
            rows.append((f["severity"] != "error", [name, "", "", "", t(f"ui.data.sev_{f['severity']}", lang),
                                                    t(f["key"], lang, **f["params"])]))
        for f in r.findings:
            rows.append((f.severity != "error", [
                name,
                "" if f.row is None else f.row,
                f.line if f.line is not None else f.row if r.source == "jsonl" and f.row is not None else "",
                f.field or "",
                t(f"ui.data.sev_{f.severity}", lang),
                f.message(lang),
            ]))
    return [row for _, row in sorted(rows, key=lambda x: x[0])]  # stable: each kind in file order


def summary_html(reports: list[Any], lang: str, skipped: list[str] | tuple = ()) -> str:
    if not reports:
        return f'<div class="tb-card tb-muted">{html.escape(t("ui.data.none", lang))}</div>'
    cards = []
    for r in reports:
        errors, ok = r.all_errors, r.trainable
        fmt = r.format or t("ui.data.format_unknown", lang)
        kind = f' <span class="tb-muted">({html.escape(kind_text(r.kind, lang))})</span>' if r.kind else ""
        counts = t("ui.data.counts", lang, rows=r.rows_in_file, valid=r.usable, errors=errors, warnings=r.all_warnings)
        s = r.stats or {}
        tokens = ""
        if s.get("rows"):
            approx = {"calibrated": t("ui.data.calibrated", lang), "estimate": t("ui.data.estimated", lang)}.get(
                s.get("counting"), "")  # sampled in a large file, or no tokenizer here at all
            tokens = t(
                "ui.data.tokens",
                lang,
                mean=s["mean"],
                p50=s["p50"],
                p90=s["p90"],
                max=s["max"],
                over=s.get("over_cutoff", 0),
                cutoff=s.get("max_length", "-"),
            ) + (f" {approx}" if approx else "")
        cards.append(
            f'<div class="tb-card tb-data-file" data-ok="{str(ok).lower()}" data-errors="{errors}">'
            f'<div class="tb-card-title">{status_icon(ok)} {html.escape(Path(r.path).name or r.path)}</div>'
            f'<div class="tb-data-format">{html.escape(t("ui.data.detected", lang))} '
            f'<code class="tb-format">{html.escape(fmt)}</code>{kind}</div>'
            f"<div>{html.escape(counts)}</div>"
            + (f'<div class="tb-muted">{html.escape(tokens)}</div>' if tokens else "")
            + (f'<div class="tb-warning tb-left-out">{html.escape(t("ui.data.rows_left_out", lang, valid=r.valid))}'
               "</div>" if r.path in skipped else "")  # "Skip rows with errors": what the run will train on
            + "</div>"
        )
    return "".join(cards)


def kind_text(kind: str, lang: str) -> str:
    """trl's name for the normalised form ("conversational preference"), in the reader's language."""
    return t_or("ui.data.kind_" + kind.replace(" ", "_").replace("-", "_"), lang, kind)


def status_icon(ok: bool) -> str:
    return '<span class="tb-ok">●</span>' if ok else '<span class="tb-bad">●</span>'


def preview_html(reports: list[Any], lang: str) -> str:
    """The first rows as the model sees them, the part that carries the loss highlighted."""
    items = [(r, item) for r in reports for item in r.preview][:PREVIEW_ROWS]
    title = f'<div class="tb-card-sub">{html.escape(t("ui.data.preview", lang))}</div>'
    if not items:
        return f'{title}<div class="tb-muted">{html.escape(t("ui.data.no_preview", lang))}</div>'
    legend = (
        f'<div class="tb-legend"><mark class="tb-loss">{html.escape(t("ui.data.legend_loss", lang))}</mark>'
        f'<span class="tb-noloss">{html.escape(t("ui.data.legend_context", lang))}</span></div>'
    )
    parts, shown = [title, legend], 0
    for r, item in items:
        for view in item["views"]:
            if shown == PREVIEW_VIEWS:  # preference rows show two views each: keep the page short
                break
            shown += 1
            label = t(f"ui.data.view_{view['label']}", lang) if view.get("label") else ""
            approx = "≈" if view.get("estimated") else ""
            head = t(
                "ui.data.preview_head",
                lang,
                file=Path(r.path).name,
                row=item["row"],
                tokens=f"{approx}{view['tokens']:,}",
                loss=f"{approx}{view['loss_tokens']:,}",
            )
            segments, hidden = _shown(view["segments"])
            body = "".join(
                _cut_html(s["text"], view.get("cut_at"), lang) if s.get("cut")
                else f'<mark class="tb-loss">{html.escape(s["text"])}</mark>' if s["loss"] else html.escape(s["text"])
                for s in segments
            )
            if hidden:
                more = t("ui.data.more_chars", lang, count=f"{hidden:,}")
                body += f'<span class="tb-more"> … {html.escape(more)}</span>'
            parts.append(
                f'<div class="tb-sample"><div class="tb-sample-head">{html.escape(head)}'
                f'{" · " + html.escape(label) if label else ""}</div><pre class="tb-render">{body}</pre></div>'
            )
    return "".join(parts)


CUT_SHOWN = 400  # characters of what training cuts away, shown after the mark (the rest of a long row is elided)
PREVIEW_CHARS = 4000  # characters of a row's rendering shown: a book on one line must not become a 6 MB page


def _shown(segments: list[dict]) -> tuple[list[dict], int]:
    """The segments within PREVIEW_CHARS (what training cuts away counts its CUT_SHOWN), and how many
    characters of the rest are not shown."""
    out, room, hidden = [], PREVIEW_CHARS, 0
    for seg in segments:
        size = min(len(seg["text"]), CUT_SHOWN) if seg.get("cut") else len(seg["text"])
        if room <= 0:
            hidden += len(seg["text"])
        elif size <= room or seg.get("cut"):
            out.append(seg)
            room -= size
        else:
            out.append({**seg, "text": seg["text"][:room]})
            hidden += len(seg["text"]) - room
            room = 0
    return out, hidden


def _cut_html(text: str, max_length: int | None, lang: str) -> str:
    shown = text if len(text) <= CUT_SHOWN else text[:CUT_SHOWN] + " …"
    return (f'<span class="tb-cut-mark">{html.escape(t("ui.data.cut_here", lang, max_length=max_length))}</span>'
            f'<span class="tb-cut">{html.escape(shown)}</span>')


def lengths_figure(reports: list[Any], cutoff: int, lang: str):
    """Token lengths per file (check_file's histogram), with the cutoff drawn in."""
    import plotly.graph_objects as go

    traces = []
    for i, r in enumerate(reports):
        hist = (r.stats or {}).get("histogram")
        if not hist:
            continue
        edges, counts = hist["edges"], hist["counts"]
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
        widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        traces.append(
            dict(
                type="bar",
                x=centers,
                y=counts,
                width=widths,
                name=Path(r.path).name,
                marker=dict(color=COLORS[i % len(COLORS)], opacity=0.8 if len(reports) > 1 else 1),
            )
        )
    layout = _layout(t("ui.chart.lengths", lang), t("ui.chart.rows", lang), lang)
    fig = go.Figure(data=traces, layout=layout)
    longest = max((max((r.stats or {}).get("histogram", {}).get("edges") or [0]) for r in reports), default=0)
    fig.update_layout(
        xaxis=dict(title=dict(text=t("ui.chart.tokens", lang)), rangemode="tozero"),
        barmode="overlay",
        showlegend=len(traces) > 1,
        bargap=0.02,
    )
    if len(traces) > 1:  # under the chart: the cutoff's note has the top right
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0),
                          margin=dict(b=90))
    if traces and cutoff <= longest * 1.5:  # the cutoff cuts into the data: draw it where it cuts
        fig.add_vline(x=cutoff, line=dict(color="#dc2626", dash="dash", width=2))
        fig.add_annotation(
            x=cutoff,
            y=1,
            yref="paper",
            text=t("ui.chart.cutoff", lang, n=cutoff),
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=dict(color="#dc2626", size=11),
        )
    elif traces:  # far beyond the longest row: say so instead of squashing the bars into a corner
        fig.add_annotation(
            x=1,
            xref="paper",
            y=1,
            yref="paper",
            text=t("ui.chart.cutoff_all_fit", lang, n=cutoff),
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=dict(color="#059669", size=11),
        )
    else:
        _empty(fig, t("ui.data.no_lengths", lang))
    return fig


# what the data check depends on, and follows: a change of any of them checks the data again
DATA_FIELDS = ("data.datasets", "data.format", "data.max_length", "data.assistant_only_loss", "data.mask_history",
               "data.skip_bad_rows", "data.max_samples", "data.system_prompt", "stage", "dpo.method",
               "model.name_or_path", "model.chat_template")


def data_config(values: dict, build) -> tuple[RunConfig | None, ConfigError | TuneboardError | None]:
    """The config the data check reads, or the problem with a field it depends on. A bad value in another
    field (a negative learning rate, a validation split of -0.1) is left to Start to name: the data is still
    checked, with its default. (A field the check does not follow said as the data's problem stayed said once
    it was put right: nothing checked the data again.)"""
    while True:  # ends: each retry drops the field that failed
        try:
            return build(values), None
        except (ConfigError, TuneboardError) as e:
            name = getattr(e, "field", None)
            if not isinstance(e, ConfigError) or name not in values or name.startswith(DATA_FIELDS):
                return None, e
            values = {k: v for k, v in values.items() if k != name}


def check_view(
    s: Session, cfg: RunConfig | None, problem: ConfigError | TuneboardError | None, workdir: Path
) -> tuple:
    """Check the data the form names and say what was found. Outputs: summary, findings, preview, lengths.
    `cfg` is None when the form itself is wrong; `problem` then says why."""
    if cfg is None:
        # kept as key + params so a language switch says it again in the new language; the last
        # check's reports go, or the switch would redraw their cards as if the data were fine
        key, params = problem.key, problem.params
        if getattr(problem, "field", None) == "data.datasets" and key == "error.config.required":
            key, params = NO_DATA, {}  # the last dataset taken off: nothing is wrong, there is nothing yet
        s.data = DataReport(checked=True, errors=1, first_error={"key": key, "params": params, "row": None, "form": True})
        s.data_reports = []
        return render_reports(s)
    reports = run_check(cfg, workdir)
    s.data = summarize_reports(reports, skip_bad_rows=cfg.data.skip_bad_rows)
    s.data_reports = reports
    s.data_cutoff = cfg.data.max_length
    return render_reports(s)


def render_reports(s: Session) -> tuple:
    reports, lang = getattr(s, "data_reports", []), s.lang
    if not s.data.checked:
        return SKIP, SKIP, SKIP, SKIP
    if not reports and s.data.first_error.get("key") == NO_DATA:
        return (
            f'<div class="tb-card tb-muted">{html.escape(t(NO_DATA, lang))}</div>',
            update(value=[], headers=headers(lang)),
            "",
            lengths_figure([], 0, lang),
        )
    if not reports and s.data.errors:  # the form itself was wrong: say it again in this language
        problem = t(s.data.first_error["key"], lang, **s.data.first_error.get("params", {}))
        problem = t("ui.data.form_problem", lang, problem=problem)  # not the data's: the data is checked after
        return (
            f'<div class="tb-msg tb-msg-error">{html.escape(problem)}</div>',
            update(value=[], headers=headers(lang)),
            "",
            lengths_figure([], 0, lang),
        )
    return (
        summary_html(reports, lang, s.data.skipped),
        update(value=findings_rows(reports, lang), headers=headers(lang)),
        preview_html(reports, lang),
        lengths_figure(reports, getattr(s, "data_cutoff", 1024), lang),
    )


def headers(lang: str) -> list[str]:
    return [t(k, lang) for k in FINDING_COLUMNS]


# ---- layout ------------------------------------------------------------------------------------


def build(ui: UI) -> None:
    from ..form import start_config

    d = start_config().data
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340, elem_classes=["tb-settings"]):
            ui.add(
                gr.Dropdown,
                "data-datasets",
                field="data.datasets",
                label="ui.data.datasets",
                info="ui.data.datasets_info",
                choices=dataset_choices(ui.workdir, ui.lang),
                value=[s.path for s in d.datasets],
                multiselect=True,
                allow_custom_value=True,
                filterable=True,
            )
            ui.add(
                gr.File, "data-upload", label="ui.data.upload", file_count="multiple", file_types=sorted(DATA_SUFFIXES | SPREADSHEETS)
            )
            ui.add(gr.HTML, "data-upload-message", value="", container=False, padding=False)
            with gr.Row():
                ui.add(
                    gr.Dropdown,
                    "data-format",
                    field="data.format",
                    label="ui.data.format",
                    info="ui.data.format_info",
                    choice_keys=FORMATS,
                    value="auto",
                )
                ui.add(
                    gr.Textbox,
                    "data-columns",
                    field="data.columns",
                    label="ui.data.columns",
                    info="ui.data.columns_info",
                    placeholder="ui.data.columns_placeholder",
                    value="",
                )
            with gr.Row():
                ui.add(
                    gr.Number,
                    "data-max-length",
                    field="data.max_length",
                    label="ui.data.max_length",
                    info="ui.data.max_length_info",
                    value=d.max_length,
                    precision=0,
                )
                ui.add(
                    gr.Number,
                    "data-val-size",
                    field="data.val_size",
                    label="ui.data.val_size",
                    info="ui.data.val_size_info",
                    value=d.val_size,
                    step=0.05,
                )
                ui.add(
                    gr.Number,
                    "data-max-samples",
                    field="data.max_samples",
                    label="ui.data.max_samples",
                    info="ui.data.max_samples_info",
                    value=0,
                    precision=0,
                )
            with gr.Row():
                ui.add(
                    gr.Dropdown,
                    "data-packing",
                    field="data.packing",
                    label="ui.data.packing",
                    info="ui.data.packing_info",
                    choice_keys=SWITCHES,
                    value=d.packing,
                )
                ui.add(
                    gr.Checkbox,
                    "data-assistant-only",
                    field="data.assistant_only_loss",
                    label="ui.data.assistant_only",
                    info="ui.data.assistant_only_info",
                    value=d.assistant_only_loss,
                )
            with gr.Row():  # two a row: four in one squeezed each label into a column of three or four lines
                ui.add(
                    gr.Checkbox,
                    "data-mask-history",
                    field="data.mask_history",
                    label="ui.data.mask_history",
                    info="ui.data.mask_history_info",
                    value=d.mask_history,
                )
                ui.add(
                    gr.Checkbox,
                    "data-skip-bad-rows",
                    field="data.skip_bad_rows",
                    label="ui.data.skip_bad_rows",
                    info="ui.data.skip_bad_rows_info",
                    value=d.skip_bad_rows,
                )
            ui.add(
                gr.Textbox,
                "data-system-prompt",
                field="data.system_prompt",
                label="ui.data.system_prompt",
                info="ui.data.system_prompt_info",
                placeholder="ui.data.system_prompt_placeholder",
                value="",
                lines=2,
                max_lines=6,
            )
        with gr.Column(scale=3, elem_classes=["tb-live"]):
            ui.add(gr.HTML, "data-summary", value="", container=False, padding=False)
            ui.add(
                gr.Dataframe,
                "data-findings",
                label="ui.data.findings",
                headers=headers(ui.lang),
                value=[],
                interactive=False,
                wrap=True,
                max_height=480,  # 320 showed four wrapped findings of seven
                column_widths=["18%", "7%", "7%", "11%", "12%", "45%"],
            )
            ui.add(gr.HTML, "data-preview", value="", container=False, padding=False)
            ui.add(
                gr.Plot,
                "data-lengths",
                label="ui.chart.lengths",
                show_label=False,
                value=lengths_figure([], d.max_length, ui.lang),
            )


def wire(ui: UI) -> None:
    from ..form import build_config

    c, workdir = ui.c, ui.workdir
    outputs = [c["data-summary"], c["data-findings"], c["data-preview"], c["data-lengths"]]
    gate_outputs = [c["train-start"], c["train-stop"], c["train-resume"], c["train-start-reason"]]
    inputs = {ui.session, *ui.field_components()}

    def check(data: dict) -> tuple:
        from ..live import gate

        s = data[ui.session]
        with s.lock:
            cfg, problem = data_config(ui.form(data), lambda values: build_config(values, s.base, workdir))
            out = check_view(s, cfg, problem, workdir)
            return (*out, *gate(s, s.lang))

    # typed text checks when it is done (not at each key): the columns, and the system prompt the preview shows;
    # dpo.method is followed as KTO takes unpaired answers, DPO refuses them
    typed = [c["data-columns"], ui.fields["data.system_prompt"]]
    ui.follow_form([n for n in DATA_FIELDS if n in ui.fields and n != "data.system_prompt"], check,
                   outputs + gate_outputs)
    gr.on(
        [e for box in typed for e in (box.blur, box.submit)],
        check,
        inputs=inputs,
        outputs=outputs + gate_outputs,
        trigger_mode="always_last",
        show_progress="minimal",
        show_progress_on=[c["data-summary"]],
    )

    def uploaded(s: Session, files: list | None, current: list[str] | None) -> tuple:
        choices, msg = add_uploads(files, current, workdir, s.lang)
        return choices, msg, None

    c["data-upload"].upload(
        uploaded,
        [ui.session, c["data-upload"], c["data-datasets"]],
        [c["data-datasets"], c["data-upload-message"], c["data-upload"]],
        show_progress="minimal",
    )

    def relabel(s: Session, current: list[str] | None) -> tuple:
        with s.lock:
            return (update(choices=dataset_choices(workdir, s.lang), value=current), *render_reports(s))

    ui.on_lang.append((relabel, [ui.session, c["data-datasets"]], [c["data-datasets"], *outputs]))
    # the files uploaded since the board started, first (before the page's kept settings select them): the list
    # was the one the board was built with, and a reload showed a kept upload as its bare path
    ui.on_load.insert(0, (lambda s: update(choices=dataset_choices(workdir, s.lang)), [ui.session],
                          [c["data-datasets"]]))
    ui.on_load.append((check, inputs, outputs + gate_outputs))
