"""Model tab: which base model, how it is loaded, which adapter trains it, and the GPU memory that needs.

`build(ui)` lays the controls out; `wire(ui)` connects them; the handlers below are plain
functions of values, tested without Gradio.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import gradio as gr

from engine import estimate as est_mod
from engine.adapters import adapter_dir
from engine.config import ConfigError, RunConfig
from engine.demo import DEMO_NAME
from engine.estimate import DEFAULT_GPU_GB, Estimate, describe_changes
from engine.messages import TuneboardError
from engine.runs import RUNNING, list_runs

from ..i18n import t, t_or, update
from ..ui import UI
from ..widgets import Slider

# what people fine-tune most, small to large; any hub id or local folder can be typed instead
COMMON_MODELS = [
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "google/gemma-3-1b-it",
    "google/gemma-3-4b-it",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "microsoft/Phi-4-mini-instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
]
QUANT = [("ui.model.quant_none", "none"), ("ui.model.quant_8bit", "8bit"), ("ui.model.quant_4bit", "4bit")]
METHODS = [("ui.model.method_lora", "lora"), ("ui.model.method_freeze", "freeze"), ("ui.model.method_full", "full")]
PRECISIONS = [("ui.choice.auto", "auto"), (None, "bf16"), (None, "fp16"), (None, "fp32")]
ATTENTION = [
    ("ui.choice.auto", "auto"),
    ("ui.model.attn_flash", "flash_attention_2"),
    ("ui.model.attn_varlen", "varlen"),
    ("ui.model.attn_sdpa", "sdpa"),
    ("ui.model.attn_eager", "eager"),
]
TEMPLATES = [
    ("ui.model.template_auto", "auto"),
    (None, "chatml"),
    (None, "llama3"),
    (None, "llama2"),
    (None, "mistral"),
    (None, "alpaca"),
]
# the controls whose change can change the memory estimate (model tab and a few of the train tab)
ESTIMATE_INPUTS = [
    "model.name_or_path",
    "model.revision",
    "model.precision",
    "quantization.mode",
    "adapter.method",
    "adapter.rank",
    "adapter.target_modules",
    "adapter.freeze_trainable_layers",
    "adapter.use_dora",
    "data.max_length",
    "model.rope_scaling",
    "training.per_device_train_batch_size",
    "training.gradient_checkpointing",
    "training.checkpoint_layers",
    "training.optim",
    "training.use_liger_kernel",
    "training.padding_free",
    "adapter.dropout",
    "data.packing",
    "stage",
]


def detect_gpu_memory() -> float | None:
    """The first GPU's memory in GB from nvidia-smi (no torch in this process), or None."""
    found = _nvidia_smi("memory.total")
    try:
        return round(float(found) / 1024, 1) if found else None
    except ValueError:
        return None


def detect_gpu_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability from nvidia-smi (7.5 for a T4, 9.0 for an H100), or None."""
    found = _nvidia_smi("compute_cap")
    try:
        major, minor = (found or "").split(".")
        return int(major), int(minor)
    except ValueError:
        return None


@lru_cache(maxsize=4)
def _nvidia_smi(field: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=3, check=True).stdout
        return out.strip().splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def model_config_of(name_or_path: str, revision: str | None, workdir: Path) -> dict:
    """The model's config.json (engine.estimate.load_model_config), remembered: every estimate input
    asks again, and for a hub model each ask is a network round trip. A local config.json's mtime is
    part of the key, so an edited one is read again."""
    return _model_config(name_or_path, revision, str(workdir), _config_mtime(name_or_path, workdir))


@lru_cache(maxsize=32)  # a few models a session; a failed read raises and is not kept
def _model_config(name_or_path: str, revision: str | None, workdir: str, mtime: int | None) -> dict:
    return est_mod.load_model_config(name_or_path, Path(workdir), revision=revision, bundled=True)


def _config_mtime(name_or_path: str, workdir: Path) -> int | None:
    """When the local config.json load_model_config would read last changed; None for a hub id."""
    path = workdir / "models" / "demo" if name_or_path == "demo" else Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


# ---- handlers (plain functions) -------------------------------------------------------------


def on_method(method: str, quant: str) -> tuple[dict, dict, dict]:
    """LoRA settings only for LoRA, the layer count only for freeze; quantization needs LoRA (QLoRA)."""
    lora = method == "lora"
    quant_update = update(interactive=True) if lora else update(value="none", interactive=False)
    return update(visible=lora), update(visible=method == "freeze"), quant_update


# the LoRA controls an adapter to continue sets: its own shape, shown and not editable while it is picked
ADAPTER_SHAPE = ("model-rank", "model-alpha", "model-dropout", "model-targets", "model-dora", "model-rslora")


def _base(name: str | None) -> str:
    name = (name or "").strip().rstrip("/")
    return name or DEMO_NAME  # an empty box means the demo, as on Start


def init_choices(workdir: Path, model: str | None, lang: str) -> list[tuple[str, str]]:
    """A new adapter, then every run on this base that left a LoRA adapter (newest first): what a run
    can go on training, an SFT run's adapter with DPO most often."""
    out = [(t("ui.model.init_new", lang), "")]
    for r in list_runs(workdir):
        if r.has_adapter and r.status != RUNNING and _base(r.model) == _base(model):
            out.append((f"{r.id} · {r.stage.upper()} · {t(f'ui.status.{r.status}', lang)}", str(r.path)))
    return out


def init_update(workdir: Path, model: str | None, picked: str | None, lang: str) -> dict:
    """The choices for `model`; a pick that is no longer among them (another base) goes back to a new adapter,
    unless it is a folder a loaded config named."""
    choices = init_choices(workdir, model, lang)
    offered = {v for _, v in choices}
    keep = picked if picked in offered or (picked and not Path(picked).is_relative_to(workdir / "runs")) else ""
    return update(choices=choices, value=keep or "")


def adapter_shape(path: str | None) -> list[dict]:
    """Updates of ADAPTER_SHAPE for an adapter picked to continue (its adapter_config.json), or the controls
    made editable again for a new one."""
    import json

    if not path:
        return [update(interactive=True) for _ in ADAPTER_SHAPE]
    try:  # the folder the engine continues (engine.adapters.adapter_dir: a run's adapter/, or the folder itself)
        a = json.loads((adapter_dir(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (TuneboardError, OSError, ValueError):
        a = {}
    if not a:
        return [update() for _ in ADAPTER_SHAPE]  # the engine says what is wrong with it, at Start
    targets = a.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else str(targets or "all-linear")
    values = (a.get("r"), a.get("lora_alpha"), a.get("lora_dropout"), targets, a.get("use_dora"), a.get("use_rslora"))
    return [update(interactive=False) if v is None else update(value=v, interactive=False) for v in values]


def pick_adapter(path: str | None, before: list | None, values: list) -> tuple[list | None, list[dict]]:
    """An adapter picked to continue, or a new one: (what the LoRA controls held before any pick, their updates).
    A pick shows the adapter's own shape, locked; going back to a new adapter gives back what they held before,
    not the picked adapter's shape (a new SFT run then trained at its rank and modules without a word)."""
    if path:
        return (before if before is not None else list(values)), adapter_shape(path)
    if before is not None:
        return None, [update(value=v, interactive=True) for v in before]
    return None, adapter_shape("")


def on_trust(ticked: bool) -> dict:
    return update(visible=bool(ticked))


def _fmt_gb(x: float, lang: str) -> str:
    """A size in the reader's units (ГБ / МБ in Russian, as the card's sentences write them)."""
    return t("ui.unit.gb", lang, n=f"{x:.1f}") if x >= 1 else t("ui.unit.mb", lang, n=f"{x * 1024:.0f}")


# what reading the model's config.json says that Start would say too: the model can't be had (Start is off)
UNUSABLE_MODEL = ("error.offline_hub", "error.model_not_found", "error.model_folder_incomplete")


def estimate_html(
    cfg: RunConfig | None, gpu_gb: float | None, workdir: Path, lang: str, problem: str | None = None,
    unusable: list | None = None,
) -> str:
    """The memory card: the whole run's estimate against the GPU's memory, or why there is none. `unusable`: gets
    the error ({"key", "params"}) where the model can't be had at all (offline, not there), which Start refuses."""
    title = f'<div class="tb-card-title">{html.escape(t("ui.model.estimate_title", lang))}</div>'
    if cfg is None:
        return _note_card(title, problem or "")
    if gpu_gb is not None and not 0 < gpu_gb <= 2048:  # the box has no range: a value it can't be is said
        return _note_card(title, t("ui.model.gpu_memory_range", lang, value=f"{gpu_gb:g}"))
    found = detect_gpu_memory()
    gpu = gpu_gb or found or DEFAULT_GPU_GB
    if cfg.model.name_or_path == "demo" and not (workdir / "models" / "demo" / "config.json").exists():
        # reading the demo's config.json means building the demo (minutes of CPU); the first Start builds
        # it anyway, and two builds at once would halve the speed of both
        return _note_card(title, t("ui.model.estimate_demo_later", lang))
    try:
        model_config = model_config_of(cfg.model.name_or_path, cfg.model.revision, workdir)
        here = not gpu_gb or gpu_gb == found  # planning for this machine's GPU, not another
        est = est_mod.estimate(model_config, cfg, gpu, gpu_capability=detect_gpu_capability() if here else None)
    except (TuneboardError, ConfigError) as e:
        if unusable is not None and e.key in UNUSABLE_MODEL:
            unusable.append({"key": e.key, "params": e.params})
        return _note_card(title, t(e.key, lang, **e.params))
    except Exception as e:  # advice only: a failed estimate never blocks the page
        return _note_card(title, t("ui.model.estimate_failed", lang, error=f"{type(e).__name__}: {e}"))
    extra = [] if found else [t("ui.model.estimate_no_gpu", lang, gpu=f"{gpu:g}")]
    return _render_estimate(est, gpu, lang, title, extra)


def _note_card(title: str, text: str) -> str:
    return f'<div class="tb-card tb-estimate">{title}<p class="tb-muted">{html.escape(text)}</p></div>'


def _render_estimate(est: Estimate, gpu: float, lang: str, title: str, extra: list[str] | None = None) -> str:
    """The card; `extra`: lines said before the estimate's own notes (that there is no GPU here)."""
    data = est.to_dict()  # the sizes in GB, and the notes with the advice among them
    total, fits = data["total_gb"], bool(data["fits"])  # estimate_html always passes the GPU's size
    pct = min(100.0, 100.0 * total / gpu)
    verdict_key = "ui.model.estimate_fits" if fits else "ui.model.estimate_too_big"
    rows = "".join(
        f"<tr><td>{html.escape(_part_label(k, lang))}</td><td>{_fmt_gb(v, lang)}</td></tr>" for k, v in data["parts"].items()
    )
    notes = "".join(f"<li>{html.escape(x)}</li>" for x in extra or [])
    notes += "".join(f"<li>{html.escape(t(n['key'], lang, **n['params']))}</li>" for n in data["notes"])
    advice = getattr(est, "advice", None)
    if advice and advice.key in ("estimate.advice.combine", "estimate.advice.none"):  # which changes, in words
        notes += f"<li>{html.escape(describe_changes(advice.overrides, lang))}</li>"
    return (
        f'<div class="tb-card tb-estimate" data-fits="{str(fits).lower()}">{title}'
        f'<div class="tb-estimate-total">{_fmt_gb(total, lang)} <span class="tb-muted">/ '
        f'{t("ui.unit.gb", lang, n=f"{gpu:g}")}</span></div>'
        f'<div class="tb-bar"><div class="tb-bar-fill {"" if fits else "tb-bar-over"}" style="width:{pct:.0f}%"></div></div>'
        f'<p class="tb-verdict {"tb-ok" if fits else "tb-bad"}">{html.escape(t(verdict_key, lang, gpu=f"{gpu:g}"))}</p>'
        + (f'<table class="tb-estimate-parts">{rows}</table>' if rows else "")
        + (f'<ul class="tb-notes">{notes}</ul>' if notes else "")
        + "</div>"
    )


def _part_label(name: str, lang: str) -> str:
    part = name.removesuffix("_gb")  # to_dict's "weights_gb" -> "weights"
    return t_or(f"ui.estimate.{part}", lang, part.replace("_", " "))


# ---- layout ----------------------------------------------------------------------------------


def build(ui: UI) -> None:
    from ..form import start_config

    d = start_config()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ui.add(gr.Markdown, "model-base-title", text="ui.model.base_title", elem_classes=["tb-section"])
            ui.add(
                gr.Dropdown,
                "model-name",
                field="model.name_or_path",
                label="ui.model.name",
                info="ui.model.name_info",
                choice_keys=[("ui.model.demo_choice", "demo")] + [(None, m) for m in COMMON_MODELS],
                value=d.model.name_or_path,
                allow_custom_value=True,
                filterable=True,
            )
            with gr.Row():
                ui.add(
                    gr.Textbox,
                    "model-revision",
                    field="model.revision",
                    label="ui.model.revision",
                    info="ui.model.revision_info",
                    placeholder="ui.model.revision_placeholder",
                    value="",
                )
                ui.add(
                    gr.Textbox,
                    "model-token",
                    label="ui.model.token",
                    info="ui.model.token_info",
                    placeholder="ui.model.token_placeholder",
                    type="password",
                    value="",
                )
            ui.add(gr.Markdown, "model-adapter-title", text="ui.model.adapter_title", elem_classes=["tb-section"])
            with gr.Row():
                ui.add(
                    gr.Radio,
                    "model-method",
                    field="adapter.method",
                    label="ui.model.method",
                    info="ui.model.method_info",
                    choice_keys=METHODS,
                    value=d.adapter.method,
                )
                ui.add(
                    gr.Radio,
                    "model-quant",
                    field="quantization.mode",
                    label="ui.model.quant",
                    info="ui.model.quant_info",
                    choice_keys=QUANT,
                    value="none",
                )
            with gr.Group(visible=d.adapter.method == "lora") as lora_group:
                ui.add(
                    gr.Dropdown,
                    "model-init-from",
                    field="adapter.init_from",
                    label="ui.model.init_from",
                    info="ui.model.init_from_info",
                    choices=[(t("ui.model.init_new", ui.lang), "")],  # the runs: listed as the page opens (on_load)
                    value=d.adapter.init_from or "",
                    allow_custom_value=True,  # a loaded config may name an adapter folder of its own
                )
                with gr.Row():
                    ui.add(
                        Slider,
                        "model-rank",
                        field="adapter.rank",
                        label="ui.model.rank",
                        info="ui.model.rank_info",
                        minimum=1,
                        maximum=256,
                        step=1,
                        value=d.adapter.rank,
                    )
                    ui.add(
                        Slider,
                        "model-alpha",
                        field="adapter.alpha",
                        label="ui.model.alpha",
                        info="ui.model.alpha_info",
                        minimum=1,
                        maximum=512,
                        step=1,
                        value=d.adapter.alpha,
                    )
                    ui.add(
                        Slider,
                        "model-dropout",
                        field="adapter.dropout",
                        label="ui.model.dropout",
                        info="ui.model.dropout_info",
                        minimum=0,
                        maximum=0.5,
                        step=0.01,
                        value=d.adapter.dropout,
                    )
                with gr.Row():
                    ui.add(
                        gr.Textbox,
                        "model-targets",
                        field="adapter.target_modules",
                        label="ui.model.targets",
                        info="ui.model.targets_info",
                        value=", ".join(d.adapter.target_modules),
                        scale=2,
                    )
                    ui.add(
                        gr.Checkbox,
                        "model-dora",
                        field="adapter.use_dora",
                        label="ui.model.dora",
                        info="ui.model.dora_info",
                        value=d.adapter.use_dora,
                    )
                    ui.add(
                        gr.Checkbox,
                        "model-rslora",
                        field="adapter.use_rslora",
                        label="ui.model.rslora",
                        info="ui.model.rslora_info",
                        value=d.adapter.use_rslora,
                    )
                    ui.add(
                        gr.Number,
                        "model-loraplus",
                        field="adapter.loraplus_lr_ratio",
                        label="ui.model.loraplus",
                        info="ui.model.loraplus_info",
                        value=d.adapter.loraplus_lr_ratio,
                        step=1,
                    )
            ui.add(
                Slider,
                "model-freeze-layers",
                field="adapter.freeze_trainable_layers",
                label="ui.model.freeze_layers",
                info="ui.model.freeze_layers_info",
                minimum=1,
                maximum=128,
                step=1,
                value=d.adapter.freeze_trainable_layers,
                visible=d.adapter.method == "freeze",
            )
            ui.add(gr.Markdown, "model-loading-title", text="ui.model.loading_title", elem_classes=["tb-section"])
            with gr.Row():
                ui.add(
                    gr.Dropdown,
                    "model-precision",
                    field="model.precision",
                    label="ui.model.precision",
                    info="ui.model.precision_info",
                    choice_keys=PRECISIONS,
                    value=d.model.precision,
                )
                ui.add(
                    gr.Dropdown,
                    "model-attn",
                    field="model.attn_implementation",
                    label="ui.model.attn",
                    info="ui.model.attn_info",
                    choice_keys=ATTENTION,
                    value=d.model.attn_implementation,
                )
                ui.add(
                    gr.Dropdown,
                    "model-template",
                    field="model.chat_template",
                    label="ui.model.template",
                    info="ui.model.template_info",
                    choice_keys=TEMPLATES,
                    value=d.model.chat_template,
                )
                ui.add(
                    gr.Dropdown,
                    "model-rope",
                    field="model.rope_scaling",
                    label="ui.model.rope",
                    info="ui.model.rope_info",
                    choice_keys=[(None, "none"), (None, "linear"), (None, "dynamic"), (None, "yarn")],
                    value=d.model.rope_scaling,
                )
            ui.add(
                gr.Checkbox,
                "model-trust",
                field="model.trust_remote_code",
                label="ui.model.trust",
                info="ui.model.trust_info",
                value=d.model.trust_remote_code,
            )
            ui.add(
                gr.Markdown,
                "model-trust-warning",
                text="warning.trust_remote_code",
                visible=False,
                elem_classes=["tb-warning"],
            )
        with gr.Column(scale=2, elem_classes=["tb-side"]):
            ui.add(
                gr.HTML,
                "model-estimate",
                value=estimate_html(None, None, ui.workdir, ui.lang, t("ui.model.estimate_pending", ui.lang)),
            )
            ui.add(
                gr.Number,
                "model-gpu",
                label="ui.model.gpu",
                info="ui.model.gpu_info",
                value=detect_gpu_memory() or DEFAULT_GPU_GB,
                precision=1,
            )
    ui.states["lora_group"] = lora_group


def wire(ui: UI) -> None:
    c = ui.c
    c["model-method"].change(
        on_method,
        [c["model-method"], c["model-quant"]],
        [ui.states["lora_group"], c["model-freeze-layers"], c["model-quant"]],
        show_progress="hidden",
        trigger_mode="multiple",  # a field's second `always_last` listener: see UI.wire_form_changes
    )
    c["model-trust"].change(on_trust, c["model-trust"], c["model-trust-warning"], show_progress="hidden",
                            trigger_mode="multiple")

    def offer(s, model: str, picked: str | None) -> dict:
        return init_update(ui.workdir, model, picked, s.lang)

    init_in, init = [ui.session, c["model-name"], c["model-init-from"]], c["model-init-from"]
    for trigger in (c["model-name"].change, c["model-tab"].select):  # another base; runs finished meanwhile
        trigger(offer, init_in, init, show_progress="hidden", trigger_mode="multiple")
    shape, before = [c[k] for k in ADAPTER_SHAPE], gr.State(None)

    def on_pick(path: str | None, held: list | None, *values) -> list:
        held, updates = pick_adapter(path, held, list(values))
        return [held, *updates]

    init.change(on_pick, [init, before, *shape], [before, *shape], show_progress="hidden", trigger_mode="multiple")
    ui.on_load.append((offer, init_in, [init]))
    ui.on_lang.append((offer, init_in, [init]))

    def refresh(data: dict) -> tuple:
        from ..form import build_config
        from ..live import gate

        session = data[ui.session]
        lang = session.lang
        try:
            cfg = build_config(ui.form(data), session.base, ui.workdir)
        except (ConfigError, TuneboardError) as e:
            return (estimate_html(None, None, ui.workdir, lang, t(e.key, lang, **e.params)), *gate(session, lang))
        unusable: list = []
        card = estimate_html(cfg, data[c["model-gpu"]], ui.workdir, lang, unusable=unusable)
        with session.lock:  # Start is off while the model can't be had (it said so only once pressed)
            session.model_error = unusable[0] if unusable else None
            return (card, *gate(session, lang))

    inputs = {ui.session, c["model-gpu"], *ui.field_components()}
    gate_outputs = [c["train-start"], c["train-stop"], c["train-resume"], c["train-start-reason"]]
    ui.follow_form([n for n in ESTIMATE_INPUTS if n in ui.fields], refresh, [c["model-estimate"], *gate_outputs],
                   [c["model-gpu"]])
    c["model-gpu"].change(
        refresh,
        inputs=inputs,
        outputs=[c["model-estimate"], *gate_outputs],
        show_progress="hidden",
        trigger_mode="always_last",
    )
    ui.on_load.append((refresh, inputs, [c["model-estimate"], *gate_outputs]))
    ui.on_lang.append((refresh, inputs, [c["model-estimate"], *gate_outputs]))
