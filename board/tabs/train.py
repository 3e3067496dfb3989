"""Train tab: the stage and hyper-parameters, Start / Stop / Resume, and the run streaming in.

A one-second timer calls live.view, which reads only what the run appended to its events.jsonl
since the last tick (watch.py) and redraws only what changed; nothing else polls. The handlers
are plain functions of the page's session and values; `wire` connects them.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
import time
from pathlib import Path
from typing import Any

import gradio as gr

from engine.config import REFERENCE_FREE, ConfigError, RunConfig
from engine.messages import TuneboardError

from ..charts import METRICS, PREFERENCE, Curves, figure
from ..form import build_config, config_to_form
from ..i18n import SKIP, t, update
from ..jobs import Jobs
from ..live import LOG_LINES, PLOTS, attach, error_html, gate, message_html, progress_html, view
from ..safety import run_path
from ..session import Session
from ..ui import SWITCHES, UI
from ..watch import STARTING, Watch
from ..widgets import Slider

STAGES = [("ui.train.stage_sft", "sft"), ("ui.train.stage_dpo", "dpo"), ("ui.train.stage_pt", "pt")]
SCHEDULERS = [
    (f"ui.train.sched_{s}", s)
    for s in ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
]
OPTIMIZERS = [("ui.choice.auto", "auto")] + [
    (None, o)
    for o in (
        "adamw_torch",
        "adamw_torch_fused",
        "adamw_8bit",
        "paged_adamw_8bit",
        "paged_adamw_32bit",
        "sgd",
        "adafactor",
    )
]
DPO_LOSSES = [(None, x) for x in ("sigmoid", "ipo", "hinge", "robust", "sigmoid_norm", "bco_pair", "apo_zero")]
DPO_METHODS = [("ui.train.dpo_method_dpo", "dpo"), ("ui.train.dpo_method_kto", "kto"),
               ("ui.train.dpo_method_orpo", "orpo"), ("ui.train.dpo_method_simpo", "simpo")]
DPO_METHOD_FIELDS = ["dpo.loss_type", "dpo.label_smoothing", "dpo.sft_weight", "dpo.simpo_gamma", "dpo.beta"]
METHOD_BETA = {"dpo": 0.1, "kto": 0.1, "orpo": 0.1, "simpo": 2.0}  # their papers' (SimPO's reward is no log ratio)


def method_fields(method: str, beta: Any = None) -> tuple:
    """The preference settings a method uses, the others greyed at the value that leaves them out (a greyed DPO loss
    of ipo under ORPO would be refused at Start, and could not be set back): ORPO and SimPO have their own loss,
    ORPO (and KTO) no SFT mixing of ours, and only SimPO a margin. Beta follows to the method's usual value where
    it holds another method's (SimPO at DPO's 0.1 barely moves), not where the reader set their own."""
    own = method in REFERENCE_FREE
    mixing = method in ("dpo", "simpo")
    usual = METHOD_BETA.get(method, 0.1)
    follows = beta in METHOD_BETA.values() and beta != usual
    return (update(interactive=True) if not own else update(interactive=False, value="sigmoid"),
            update(interactive=True) if not own else update(interactive=False, value=0.0),
            update(interactive=True) if mixing else update(interactive=False, value=0.0),
            update(interactive=method == "simpo"),
            update(value=usual) if follows else SKIP)


DEMO_FOR_STAGE = {"sft": "demo:sft", "dpo": "demo:dpo", "pt": "demo:pt"}
MAX_CONFIG_BYTES = 1_000_000


# ---- actions ----------------------------------------------------------------------------------


def start(s: Session, values: dict[str, Any], token: str | None, jobs: Jobs) -> str:
    with s.lock:
        lang = s.lang
        if s.data.errors:
            return gate(s, lang)[3].replace("tb-msg-warning", "tb-msg-error")
        try:
            from engine.train import check_before_start

            cfg = build_config(values, s.base, jobs.workdir)
            # a folder that holds no whole model, or a hub id this machine cannot download: said now, not by a run
            check_before_start(cfg, jobs.workdir)
            run_id = jobs.start(cfg, token=(token or "").strip() or None, lang=lang)
        except Exception as e:
            return error_html(e, lang)
        s.watch = Watch.of(run_id, jobs.workdir / "runs" / run_id, began=time.time())
        return message_html("info", t("ui.train.started", lang, run=run_id))


def stop(s: Session, jobs: Jobs) -> str:
    with s.lock:
        lang, w = s.lang, s.watch
        if not w.run_id or not w.active:
            return message_html("warning", t("ui.train.nothing_to_stop", lang))
        try:
            jobs.stop(w.run_id)
        except Exception as e:
            return error_html(e, lang)
        return message_html("info", t("ui.train.stopping", lang, run=w.run_id))


def resume(s: Session, token: str | None, jobs: Jobs) -> str:
    with s.lock:
        lang, w = s.lang, s.watch
        if not w.run_id:
            return message_html("warning", t("ui.train.nothing_to_resume", lang))
        try:
            jobs.resume(w.run_id, token=(token or "").strip() or None, lang=lang)
        except Exception as e:
            return error_html(e, lang)
        w.status = w.shown_status = STARTING
        w.began = time.time()  # the clock says how long this attempt has been starting, not the first's
        return message_html("info", t("ui.train.resumed", lang, run=w.run_id))


def write_config(cfg: RunConfig, workdir: Path) -> Path:
    """Save the config under <workdir>/configs, named by its content: the same config, the same file."""
    text = cfg.to_yaml()
    name = f"{cfg.run_name or cfg.stage}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    path = workdir / "configs" / "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    return path


def command_for(cfg: RunConfig, workdir: Path) -> str:
    """The exact terminal command (and the YAML it reads) that reproduce this run."""
    path = write_config(cfg, workdir)
    line = f"tuneboard train {shlex.quote(str(path))} --workdir {shlex.quote(str(workdir))}"
    return f"# {path.name}\n{line}\n\n" + cfg.to_yaml()


def show_command(s: Session, values: dict[str, Any], workdir: Path) -> tuple[dict, str]:
    try:
        cfg = build_config(values, s.base, workdir)
    except Exception as e:
        return update(visible=False), error_html(e, s.lang)
    return update(value=command_for(cfg, workdir), visible=True), ""


def save_config(s: Session, values: dict[str, Any], workdir: Path) -> tuple[dict, str]:
    try:
        cfg = build_config(values, s.base, workdir)
    except Exception as e:
        return update(visible=False), error_html(e, s.lang)
    path = write_config(cfg, workdir)
    return update(value=str(path), visible=True), message_html("success", t("ui.train.saved", s.lang, path=str(path)))


def load_config(s: Session, file: str | None, names: list[str]) -> tuple[list, str]:
    """Read an uploaded YAML into the form; the fields the page has no control for are kept too."""
    if not file:
        return [SKIP] * len(names), ""
    try:
        if Path(file).stat().st_size > MAX_CONFIG_BYTES:
            raise TuneboardError("ui.error.upload_size", name=Path(file).name, size="> 1", limit="1")
        cfg = RunConfig.load(file)
    except Exception as e:
        return [SKIP] * len(names), error_html(e, s.lang)
    return _fill_form(s, cfg, names, Path(file).name)


def use_run_config(s: Session, run_id: str | None, workdir: Path, names: list[str]) -> tuple[list, str]:
    """Put a past run's config in the form (to change it and start again)."""
    if not run_id:
        return [SKIP] * len(names), ""
    try:
        path = run_path(run_id, workdir)
        cfg = RunConfig.load(str(path / "config.yaml")).with_overrides({"training.resume_from": None})
    except Exception as e:
        return [SKIP] * len(names), error_html(e, s.lang)
    return _fill_form(s, cfg, names, run_id)


def restore_form(saved: Any, names: list[str]) -> list:
    """The page's settings as this browser kept them ({field: value}); a field it has no value for, or one a
    newer page no longer has, is left as it is."""
    if not isinstance(saved, dict):
        return [SKIP] * len(names)
    return [update(value=saved[n]) if n in saved and saved[n] is not None else SKIP for n in names]


def _fill_form(s: Session, cfg: RunConfig, names: list[str], name: str) -> tuple[list, str]:
    """`cfg` in the form; the fields the page has no control for are kept in the session's base."""
    s.base = cfg.to_dict()
    values = config_to_form(cfg, names)
    return [update(value=values[n]) for n in names], message_html("success", t("ui.train.loaded", s.lang, name=name))


# the hyper-parameters each stage's demo preset tunes for the demo model (assets/configs/<stage>_demo.yaml)
STAGE_TUNED = ["training.learning_rate", "training.num_train_epochs", "training.warmup_ratio", "training.eval_steps",
               "training.save_steps", "data.val_size"]


@functools.cache
def _stage_presets() -> dict[str, dict[str, Any]]:
    from engine.config import RunConfig
    from engine.paths import ASSETS

    out = {}
    for stage, name in (("sft", "sft_demo"), ("dpo", "dpo_demo"), ("pt", "pt_demo")):
        data = RunConfig.load(str(ASSETS / "configs" / f"{name}.yaml")).to_dict()
        out[stage] = {k: data[k.split(".")[0]][k.split(".")[1]] for k in STAGE_TUNED}
    return out


def on_stage(stage: str, datasets: list[str] | str | None, *tuned: Any) -> tuple:
    """DPO settings for DPO; the bundled demo data follows the stage; SFT's answer-only loss only for SFT. The
    stage's preset hyper-parameters come with it (DPO at SFT's learning rate collapses the demo in three steps),
    each only where it still holds another stage's preset value, not the reader's own; on the reader's own data
    too (a switch to pretraining on the demo, an upload, and a switch back to SFT trained SFT at pretraining's
    learning rate, epochs and no validation split)."""
    current = [datasets] if isinstance(datasets, str) else list(datasets or [])
    data_update = SKIP
    if all(d.startswith("demo:") for d in current):
        data_update = update(value=[DEMO_FOR_STAGE[stage]])
    presets = _stage_presets()
    tuned_updates = [update(value=presets[stage][k])
                     if any(v == p[k] for p in presets.values()) and v != presets[stage][k] else SKIP
                     for k, v in zip(STAGE_TUNED, tuned, strict=False)]  # none given: the stage alone
    return (update(visible=stage == "dpo"), data_update, update(visible=stage == "sft"), *tuned_updates)


# ---- layout ------------------------------------------------------------------------------------


def build(ui: UI) -> None:
    from ..form import start_config

    d = start_config()
    tr = d.training
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340, elem_classes=["tb-settings"]):
            ui.add(
                gr.Radio,
                "train-stage",
                field="stage",
                label="ui.train.stage",
                info="ui.train.stage_info",
                choice_keys=STAGES,
                value=d.stage,
            )
            ui.add(
                gr.Textbox,
                "train-run-name",
                field="run_name",
                label="ui.train.run_name",
                info="ui.train.run_name_info",
                placeholder="ui.train.run_name_placeholder",
                value="",
            )
            with gr.Row():
                ui.add(
                    gr.Number,
                    "train-epochs",
                    field="training.num_train_epochs",
                    label="ui.train.epochs",
                    info="ui.train.epochs_info",
                    value=tr.num_train_epochs,
                    step=1,
                )
                ui.add(
                    gr.Number,
                    "train-max-steps",
                    field="training.max_steps",
                    label="ui.train.max_steps",
                    info="ui.train.max_steps_info",
                    value=tr.max_steps,
                    precision=0,
                    step=1,
                )
            with gr.Row():
                ui.add(
                    gr.Number,
                    "train-lr",
                    field="training.learning_rate",
                    label="ui.train.lr",
                    info="ui.train.lr_info",
                    value=tr.learning_rate,
                    step=1e-5,
                )
                ui.add(
                    gr.Dropdown,
                    "train-scheduler",
                    field="training.lr_scheduler_type",
                    label="ui.train.scheduler",
                    info="ui.train.scheduler_info",
                    choice_keys=SCHEDULERS,
                    value=tr.lr_scheduler_type,
                )
            with gr.Row():
                ui.add(
                    gr.Number,
                    "train-batch",
                    field="training.per_device_train_batch_size",
                    label="ui.train.batch",
                    info="ui.train.batch_info",
                    value=tr.per_device_train_batch_size,
                    precision=0,
                )
                ui.add(
                    gr.Number,
                    "train-accum",
                    field="training.gradient_accumulation_steps",
                    label="ui.train.accum",
                    info="ui.train.accum_info",
                    value=tr.gradient_accumulation_steps,
                    precision=0,
                )
            method_now = dict(zip(DPO_METHOD_FIELDS, method_fields(d.dpo.method), strict=True))  # what it greys
            with gr.Group(visible=d.stage == "dpo", elem_id="train-dpo-group") as dpo_group:
                with gr.Row():
                    ui.add(
                        gr.Radio,
                        "train-dpo-method",
                        field="dpo.method",
                        label="ui.train.dpo_method",
                        info="ui.train.dpo_method_info",
                        choice_keys=DPO_METHODS,
                        value=d.dpo.method,
                    )
                    ui.add(
                        gr.Number,
                        "train-dpo-beta",
                        field="dpo.beta",
                        label="ui.train.dpo_beta",
                        info="ui.train.dpo_beta_info",
                        value=d.dpo.beta,
                        step=0.05,
                    )
                    ui.add(
                        gr.Dropdown,
                        "train-dpo-loss",
                        field="dpo.loss_type",
                        label="ui.train.dpo_loss",
                        info="ui.train.dpo_loss_info",
                        choice_keys=DPO_LOSSES,
                        value=d.dpo.loss_type,
                        interactive=method_now["dpo.loss_type"]["interactive"],
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-dpo-smoothing",
                        field="dpo.label_smoothing",
                        label="ui.train.dpo_smoothing",
                        info="ui.train.dpo_smoothing_info",
                        value=d.dpo.label_smoothing,
                        step=0.05,
                        interactive=method_now["dpo.label_smoothing"]["interactive"],
                    )
                    ui.add(
                        gr.Number,
                        "train-dpo-sft-weight",
                        field="dpo.sft_weight",
                        label="ui.train.dpo_sft_weight",
                        info="ui.train.dpo_sft_weight_info",
                        value=d.dpo.sft_weight,
                        step=0.1,
                        interactive=method_now["dpo.sft_weight"]["interactive"],
                    )
                    ui.add(
                        gr.Number,
                        "train-dpo-simpo-gamma",
                        field="dpo.simpo_gamma",
                        label="ui.train.dpo_simpo_gamma",
                        info="ui.train.dpo_simpo_gamma_info",
                        value=d.dpo.simpo_gamma,
                        step=0.1,
                        interactive=method_now["dpo.simpo_gamma"]["interactive"],
                    )
            with ui.block(gr.Accordion, "ui.train.more", "train-more", open=False):
                with gr.Row():
                    ui.add(
                        Slider,
                        "train-warmup",
                        field="training.warmup_ratio",
                        label="ui.train.warmup",
                        info="ui.train.warmup_info",
                        minimum=0,
                        maximum=0.5,
                        step=0.01,
                        value=tr.warmup_ratio,
                    )
                    ui.add(
                        gr.Number,
                        "train-weight-decay",
                        field="training.weight_decay",
                        label="ui.train.weight_decay",
                        info="ui.train.weight_decay_info",
                        value=tr.weight_decay,
                        step=0.01,
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-grad-clip",
                        field="training.max_grad_norm",
                        label="ui.train.grad_clip",
                        info="ui.train.grad_clip_info",
                        value=tr.max_grad_norm,
                        step=0.1,
                    )
                    ui.add(
                        gr.Dropdown,
                        "train-optim",
                        field="training.optim",
                        label="ui.train.optim",
                        info="ui.train.optim_info",
                        choice_keys=OPTIMIZERS,
                        value=tr.optim,
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-seed",
                        field="training.seed",
                        label="ui.train.seed",
                        info="ui.train.seed_info",
                        value=tr.seed,
                        precision=0,
                    )
                    ui.add(
                        gr.Dropdown,
                        "train-grad-ckpt",
                        field="training.gradient_checkpointing",
                        label="ui.train.grad_ckpt",
                        info="ui.train.grad_ckpt_info",
                        choice_keys=SWITCHES,
                        value=tr.gradient_checkpointing,
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-ckpt-layers",
                        field="training.checkpoint_layers",
                        label="ui.train.ckpt_layers",
                        info="ui.train.ckpt_layers_info",
                        value=tr.checkpoint_layers,
                        precision=0,
                    )
                    ui.add(
                        gr.Dropdown,
                        "train-padding-free",
                        field="training.padding_free",
                        label="ui.train.padding_free",
                        info="ui.train.padding_free_info",
                        choice_keys=SWITCHES,
                        value=tr.padding_free,
                    )
                with gr.Row():
                    ui.add(
                        gr.Dropdown,
                        "train-liger",
                        field="training.use_liger_kernel",
                        label="ui.train.liger",
                        info="ui.train.liger_info",
                        choice_keys=SWITCHES,
                        value=tr.use_liger_kernel,
                    )
                    ui.add(
                        gr.Dropdown,
                        "train-fused-lora",
                        field="training.fused_lora",
                        label="ui.train.fused_lora",
                        info="ui.train.fused_lora_info",
                        choice_keys=SWITCHES,
                        value=tr.fused_lora,
                    )
                with gr.Row():
                    ui.add(
                        gr.Dropdown,
                        "train-compile",
                        field="training.compile",
                        label="ui.train.compile",
                        info="ui.train.compile_info",
                        choice_keys=SWITCHES,
                        value=tr.compile,
                    )
                    ui.add(
                        gr.Number,
                        "train-neftune",
                        field="training.neftune_noise_alpha",
                        label="ui.train.neftune",
                        info="ui.train.neftune_info",
                        value=tr.neftune_noise_alpha,
                        step=1,
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-logging-steps",
                        field="training.logging_steps",
                        label="ui.train.logging_steps",
                        info="ui.train.logging_steps_info",
                        value=tr.logging_steps,
                        precision=0,
                    )
                    ui.add(
                        gr.Number,
                        "train-eval-steps",
                        field="training.eval_steps",
                        label="ui.train.eval_steps",
                        info="ui.train.eval_steps_info",
                        value=tr.eval_steps,
                        precision=0,
                    )
                with gr.Row():
                    ui.add(
                        gr.Number,
                        "train-save-steps",
                        field="training.save_steps",
                        label="ui.train.save_steps",
                        info="ui.train.save_steps_info",
                        value=tr.save_steps,
                        precision=0,
                    )
                    ui.add(
                        gr.Number,
                        "train-save-limit",
                        field="training.save_total_limit",
                        label="ui.train.save_limit",
                        info="ui.train.save_limit_info",
                        value=tr.save_total_limit,
                        precision=0,
                    )
            with gr.Row(elem_classes=["tb-actions"]):
                ui.add(gr.Button, "train-start", text="ui.train.start", variant="primary", scale=2, min_width=120)
                ui.add(gr.Button, "train-stop", text="ui.train.stop", variant="stop", interactive=False, min_width=80)
                ui.add(gr.Button, "train-resume", text="ui.train.resume", interactive=False, min_width=80)
            ui.add(gr.HTML, "train-start-reason", value="", container=False, padding=False)
            ui.add(gr.HTML, "train-message", value="", container=False, padding=False)
            with gr.Row(elem_classes=["tb-actions", "tb-secondary"]):
                ui.add(
                    gr.Button,
                    "train-show-command",
                    text="ui.train.show_command",
                    size="sm",
                    variant="secondary",
                    min_width=80,
                )
                ui.add(
                    gr.Button,
                    "train-save-config",
                    text="ui.train.save_config",
                    size="sm",
                    variant="secondary",
                    min_width=80,
                )
                ui.add(
                    gr.UploadButton,
                    "train-load-config",
                    label="ui.train.load_config",
                    size="sm",
                    variant="secondary",
                    file_types=[".yaml", ".yml"],
                    file_count="single",
                    min_width=80,
                )
            ui.add(
                gr.Code,
                "train-command",
                label="ui.train.command",
                language="shell",
                visible=False,
                interactive=False,
                lines=6,
                max_lines=30,
            )
            ui.add(gr.File, "train-config-file", label="ui.train.config_file", visible=False, interactive=False)
        with gr.Column(scale=3, elem_classes=["tb-live"]):
            ui.add(gr.HTML, "train-progress", value=progress_html(Watch(), ui.lang), container=False, padding=False)
            ui.add(gr.HTML, "train-alerts", value="", container=False, padding=False)
            ui.add(
                gr.Plot, PLOTS["loss"], label="ui.chart.loss", show_label=False, value=figure(Curves(), "loss", ui.lang)
            )
            with gr.Row():  # a DPO run's own charts, shown for such a run only
                for name in PREFERENCE:
                    ui.add(
                        gr.Plot,
                        PLOTS[name],
                        label=METRICS[name][0],
                        show_label=False,
                        visible=False,
                        min_width=320,  # a phone stacks them: side by side their legends covered the titles
                        value=figure(Curves(), name, ui.lang),
                    )
            with gr.Row():
                for name in ("lr", "grad_norm"):
                    ui.add(
                        gr.Plot,
                        PLOTS[name],
                        label=METRICS[name][0],
                        show_label=False,
                        value=figure(Curves(), name, ui.lang),
                    )
            with gr.Row():
                for name in ("speed", "memory"):
                    ui.add(
                        gr.Plot,
                        PLOTS[name],
                        label=METRICS[name][0],
                        show_label=False,
                        value=figure(Curves(), name, ui.lang),
                    )
            ui.add(
                gr.Textbox,
                "train-log",
                label="ui.train.log",
                value="",
                lines=8,
                max_lines=LOG_LINES,
                autoscroll=True,
                interactive=False,
                buttons=["copy"],
            )
            with ui.block(gr.Accordion, "ui.train.details", "train-details", open=False, visible=False):
                ui.add(
                    gr.Code,
                    "train-traceback",
                    label="ui.train.traceback",
                    language="python",
                    interactive=False,
                    lines=8,
                    max_lines=30,
                )
    ui.states["dpo_group"] = dpo_group


def wire(ui: UI) -> None:
    c, jobs, workdir = ui.c, ui.jobs, ui.workdir
    names = ui.field_names()
    form_inputs = {ui.session, c["model-token"], *ui.field_components()}
    view_outputs = (
        [c["train-progress"]]
        + [c[PLOTS[n]] for n in PLOTS]
        + [
            c["train-log"],
            c["train-alerts"],
            c["train-details"],
            c["train-traceback"],
            c["train-start"],
            c["train-stop"],
            c["train-resume"],
            c["train-start-reason"],
            c["top-status"],
            c["train-message"],
        ]
    )

    def tick(s: Session) -> tuple:
        return view(s, jobs)

    def redraw(s: Session) -> tuple:
        return view(s, jobs, force=True)

    timer = gr.Timer(1.0)
    timer.tick(tick, ui.session, view_outputs, show_progress="hidden", queue=True)

    def on_start(data: dict) -> str:
        return start(data[ui.session], ui.form(data), data[c["model-token"]], jobs)

    c["train-start"].click(on_start, form_inputs, c["train-message"], show_progress="hidden").then(
        redraw, ui.session, view_outputs, show_progress="hidden"
    )
    c["train-stop"].click(lambda s: stop(s, jobs), ui.session, c["train-message"], show_progress="hidden")
    c["train-resume"].click(
        lambda s, tok: resume(s, tok, jobs), [ui.session, c["model-token"]], c["train-message"], show_progress="hidden"
    ).then(redraw, ui.session, view_outputs, show_progress="hidden")
    c["train-show-command"].click(
        lambda data: show_command(data[ui.session], ui.form(data), workdir),
        form_inputs - {c["model-token"]},
        [c["train-command"], c["train-message"]],
        show_progress="hidden",
    )
    c["train-save-config"].click(
        lambda data: save_config(data[ui.session], ui.form(data), workdir),
        form_inputs - {c["model-token"]},
        [c["train-config-file"], c["train-message"]],
        show_progress="hidden",
    )

    def on_load_config(s: Session, file: Any) -> list:
        updates, msg = load_config(s, getattr(file, "name", file), names)
        return [*updates, msg]

    c["train-load-config"].upload(
        on_load_config,
        [ui.session, c["train-load-config"]],
        [*ui.field_components(), c["train-message"]],
        show_progress="hidden",
    )
    tuned = [ui.fields[k] for k in STAGE_TUNED]
    c["train-stage"].change(
        on_stage,
        [c["train-stage"], c["data-datasets"], *tuned],
        [ui.states["dpo_group"], c["data-datasets"], c["data-assistant-only"], *tuned],
        show_progress="hidden",
        trigger_mode="multiple",  # a field's second `always_last` listener: see UI.wire_form_changes
    )
    ui.on_load.append((lambda s: (attach(s, jobs), view(s, jobs, force=True))[1], [ui.session], view_outputs))

    # every setting on the page, kept in this browser as it changes: a reload, a closed tab or a restarted board
    # used to put the demo data and the defaults back, and Start then trained on those
    saved_form = gr.BrowserState(None, storage_key="tuneboard-form")

    def on_change(data: dict) -> tuple:
        """Start's reason as soon as a value on the page is one Start would refuse (the data check names only the
        data's; the rest used to be said only once Start was pressed), and the page's values to keep."""
        s, values = data[ui.session], ui.form(data)
        with s.lock:
            try:
                build_config(values, s.base, workdir)
                s.form_error = None
            except (ConfigError, TuneboardError) as e:
                s.form_error = {"key": e.key, "params": e.params}
            return (*gate(s, s.lang), values)

    ui.follow_form(["dpo.method"], lambda data: method_fields(data[ui.fields["dpo.method"]], data[ui.fields["dpo.beta"]]),
                   [ui.fields[k] for k in DPO_METHOD_FIELDS])
    ui.follow_form(None, on_change, [c["train-start"], c["train-stop"], c["train-resume"], c["train-start-reason"],
                                     saved_form])

    def fill_on_open(s: Session, saved: Any) -> list:
        """A page opened on a live run shows that run's settings (Show command then reproduces it); else the
        settings this browser last had, where it has any (a finished run's are one click away: Runs > Use this
        config)."""
        if s.watch.run_id and s.watch.active:
            return use_run_config(s, s.watch.run_id, workdir, names)[0]
        return restore_form(saved, names)

    ui.on_load.append((fill_on_open, [ui.session, saved_form], ui.field_components()))
    ui.on_lang.append((redraw, [ui.session], view_outputs))
    ui.states["view_outputs"] = view_outputs
