"""Load a model and its tokenizer for a RunConfig: device, precision, attention, quantization, template.

The engine, not a library default, decides precision: bf16 on GPUs of compute capability 8.0+,
fp16 below, fp32 on CPU. What was decided is returned as `Resolved`, recorded in the run.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .config import (
    RunConfig,
    checkpointing_choice,
    compile_choice,
    fused_lora_choice,
    packing_choice,
    padding_free_choice,
    precision_choice,
    upcast_choice,
)
from .demo import demo_fingerprint, ensure_demo_model, is_demo
from .estimate import liger_installed, liger_usable
from .messages import TuneboardError
from .templates import TEMPLATES


@dataclass
class Resolved:
    path: str  # where the weights come from (the demo's cache folder, a local folder, or a hub id)
    device: str  # cuda | cpu
    precision: str  # bf16 | fp16 | fp32
    attn_implementation: str
    chat_template: str  # the template's name: tokenizer | chatml | llama2 | ...
    optim: str
    padding_free: bool = False  # each batch's rows flattened into one, no pad tokens (SFT / pt)
    packing: bool = False  # samples packed into full rows of the cutoff (SFT / pt)
    liger: bool = False  # Liger's fused kernels (RMSNorm, SwiGLU, RoPE; trl turns its linear + cross-entropy off)
    gradient_checkpointing: bool = False  # activations recomputed in backward (auto may turn it on to fit the GPU)
    checkpoint_layers: int | None = None  # with it, how many layers recompute (the first ones; None: all)
    upcast_norms: bool = False  # a quantized model's norms, embeddings and LM head held in fp32 (k-bit preparation)
    fused_lora: bool = False  # LoRA's branch as one autograd function (engine/lora_fused.py)
    compile: bool = False  # each decoder layer compiled by torch.compile (engine/compiled.py)


def resolve_path(name: str, workdir=None) -> str:
    if is_demo(name):
        return str(ensure_demo_model(workdir))
    local = local_model_dir(name)
    return str(local) if local else name  # a hub id: loading it raises the offline error if we can't reach the hub


def is_path(name: str) -> bool:
    """`name` can only be a local path, never a hub id (`owner/model`): it starts with / . ~ or has more parts."""
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1


def local_model_dir(name: str) -> Path | None:
    """The local model folder `name` names, or None for a hub id; a path that holds no model is refused."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():  # a folder, but not a model's
            raise TuneboardError("error.model_folder_incomplete", path=name, missing="config.json")
        return p.resolve()
    if is_path(name):
        raise TuneboardError("error.model_not_found", name=name)
    return None


def quiet_libraries() -> None:
    """Our events and progress bar say what happens; the libraries' own bars and hints would say it twice.
    Called first by each entry that loads a model (training, chat, export): bitsandbytes logs its CPU
    hints on import, which transformers' trainer and peft trigger."""
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "pip install kernels" hints for CPU 4-bit
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def resolve(cfg: RunConfig, workdir=None) -> Resolved:
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    precision = cfg.model.precision
    if precision == "auto":
        precision = precision_choice(cfg, torch.cuda.get_device_capability()) if cuda else "fp32"
    elif precision == "fp16" and not cuda:
        raise TuneboardError("error.precision_unsupported", precision="fp16", device="CPU")
    elif precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise TuneboardError("error.precision_unsupported", precision="bf16", device=torch.cuda.get_device_name())
    attn = attention_choice(cfg, cuda, softcapped(cfg, workdir))
    optim = cfg.training.optim
    if optim == "auto":
        optim = "adamw_torch_fused" if cuda else "adamw_torch"
    elif not cuda and optim in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch_fused"):
        optim = "adamw_torch"  # bitsandbytes' optimizers and fused AdamW need CUDA; a warning event says so
    checkpointing = checkpointing_choice(cfg)
    return Resolved(path=resolve_path(cfg.model.name_or_path, workdir), device=device, precision=precision,
                    attn_implementation=attn, chat_template="", optim=optim,
                    padding_free=padding_free_choice(cfg, attn), packing=packing_choice(cfg, attn),
                    liger=liger_choice(cfg, cuda), gradient_checkpointing=checkpointing,
                    checkpoint_layers=cfg.training.checkpoint_layers if checkpointing else None,
                    upcast_norms=upcast_choice(cfg, precision), fused_lora=fused_lora_choice(cfg, precision),
                    compile=compile_choice(cfg, cuda))


def resolve_for_run(cfg: RunConfig, run_dir: str | os.PathLike, workdir=None, adapter: bool = True) -> Resolved:
    """`resolve` for a trained run's base: looked up in the run's own workdir (a demo base wherever the
    command runs would be another build); an `adapter` about to go on it must fit it (`check_demo_build`)."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == "runs":
        workdir = run_dir.parent.parent
    if adapter:
        check_demo_build(cfg, run_dir)
    return resolve(cfg, workdir)


def check_demo_build(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a demo run trained on another build of the demo than this version builds: its adapter on this
    one answers plausibly and wrongly. Runs from before builds were recorded were trained on the first."""
    import json

    if not is_demo(cfg.model.name_or_path):
        return
    try:
        trained = json.loads((run_dir / "resolved.json").read_text()).get("demo_fingerprint", "first build")
    except (OSError, ValueError):
        return  # never started training: nothing was fitted to any build
    if trained != demo_fingerprint():
        raise TuneboardError("error.demo_rebuilt", run=run_dir.name)


def liger_choice(cfg: RunConfig, cuda: bool) -> bool:
    mode = cfg.training.use_liger_kernel
    if mode == "off" or not cuda:
        return False
    if mode == "on":
        if not liger_installed():
            raise TuneboardError("error.liger_unavailable")
        return True
    return liger_usable()


def attention_choice(cfg: RunConfig, cuda: bool, softcap: bool = False) -> str:
    """flash-attn where installed; else PyTorch's varlen kernel on GPUs that run it, so that batches can go
    padding-free (packed or not); sdpa otherwise.

    On CPU sdpa also keeps packed samples apart: transformers builds a block-diagonal mask from the
    restarting position ids (tests/test_packing.py checks the logits). A model that soft-caps its attention
    scores (`softcap`: Gemma 2) gets eager attention where flash-attn is not installed: neither sdpa nor the
    varlen kernel caps them, and transformers, which refuses sdpa for such a model, can't tell a registered
    kernel (varlen) apart."""
    from . import attention

    attn = cfg.model.attn_implementation
    flash = cuda and importlib.util.find_spec("flash_attn") is not None
    if attn == "auto":
        if flash:
            return "flash_attention_2"
        if softcap:
            return "eager"
        return "varlen" if cuda and attention.available_on_gpu() else "sdpa"
    if attn == "flash_attention_2" and not flash:
        raise TuneboardError("error.flash_unavailable")
    if softcap and attn in ("sdpa", "varlen"):
        raise TuneboardError("error.attn_softcap", model=cfg.model.name_or_path, attn=attn)
    return attn  # varlen on CPU runs its per-sample sdpa reference path


def softcapped(cfg: RunConfig, workdir=None) -> bool:
    """`estimate.caps_attention` of the model's config.json, where it can be read now (a folder, the demo, the
    hub or its cache); where it can't, loading the model says why."""
    from .estimate import caps_attention, load_model_config

    try:
        return caps_attention(load_model_config(cfg.model.name_or_path, workdir, cfg.model.revision))
    except (TuneboardError, OSError, ValueError):
        return False


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def quantization_config(cfg: RunConfig, res: Resolved):
    bits = cfg.quantization.bits
    if not bits:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TuneboardError("error.quant_unavailable", bits=bits, reason="bitsandbytes is not installed")
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quantization.quant_type,
                              bnb_4bit_use_double_quant=cfg.quantization.double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(res.precision))


def load_tokenizer(cfg: RunConfig, res: Resolved):
    from transformers import AutoTokenizer

    tok = _with_pad(hub_call(cfg.model.name_or_path, AutoTokenizer.from_pretrained, res.path,
                              revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code))
    name = cfg.model.chat_template
    if name == "auto":
        res.chat_template = "tokenizer" if tok.chat_template else "chatml"
        if not tok.chat_template:
            tok.chat_template = TEMPLATES["chatml"]
    else:
        res.chat_template = name
        tok.chat_template = TEMPLATES[name]
    return tok


def load_result_tokenizer(cfg: RunConfig, res: Resolved, source: Path):
    """The tokenizer saved with a run's result (it carries the run's chat template), else the base's."""
    from transformers import AutoTokenizer

    if (source / "tokenizer_config.json").exists():
        return _with_pad(AutoTokenizer.from_pretrained(str(source), trust_remote_code=cfg.model.trust_remote_code))
    return load_tokenizer(cfg, res)


def _with_pad(tok):
    if tok.pad_token is None:  # most base models ship without one; eos is the usual stand-in
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(cfg: RunConfig, res: Resolved, for_training: bool = True, dtype: str | None = None):
    """The base model on the resolved device. `dtype` overrides the precision (merge loads 16-bit)."""
    from transformers import AutoModelForCausalLM

    q = quantization_config(cfg, res) if dtype is None else None
    precision = dtype or res.precision
    # A frozen base is held in the compute dtype; fully trained weights stay fp32 masters under autocast.
    if for_training and cfg.adapter.method in ("full", "freeze") and res.device == "cuda":
        precision = "fp32"
    from .attention import hf_name

    kwargs = dict(dtype=torch_dtype(precision), attn_implementation=hf_name(res.attn_implementation),
                  trust_remote_code=cfg.model.trust_remote_code, revision=cfg.model.revision)
    if q is not None:
        kwargs["quantization_config"] = q
        kwargs["device_map"] = {"": 0} if res.device == "cuda" else "cpu"
    kwargs.update(rope_plan(cfg, res)[0] or {})
    try:
        model = hub_call(cfg.model.name_or_path, AutoModelForCausalLM.from_pretrained, res.path, **kwargs)
    except (ImportError, RuntimeError) as e:
        if q is not None and ("bitsandbytes" in str(e) or "quantiz" in str(e).lower()):
            raise TuneboardError("error.quant_unavailable", bits=cfg.quantization.bits, reason=str(e).splitlines()[0]) from e
        raise
    if q is None and res.device == "cuda":
        model.to("cuda")
    if q is not None and res.device == "cpu":
        keep_cpu_4bit_layout(model, for_training)
    model.config.use_cache = not for_training
    return model


def rope_plan(cfg: RunConfig, res: Resolved, workdir=None) -> tuple[dict | None, str, dict]:
    """`model.rope_scaling` for this model and cutoff (engine/rope.py): from_pretrained's overrides, or None."""
    if cfg.model.rope_scaling == "none":
        return None, "", {}
    from .estimate import load_model_config
    from .rope import rope_overrides

    return rope_overrides(load_model_config(res.path, workdir, cfg.model.revision), cfg.model.rope_scaling,
                          cfg.data.max_length)


def keep_cpu_4bit_layout(model, training: bool) -> None:
    """bitsandbytes (0.50) repacks a 4-bit layer for its bf16 CPU kernel the first time the layer runs without
    gradients (validation, chat) on an AVX512-BF16 CPU, and leaves it repacked. Layers that keep bitsandbytes'
    plain 4-bit path instead:
    - in a model that trains, every one: the repacked kernel has no backward, so the steps after a run's first
      validation went through it (torch warned of backprop through `gemv_4bit`), and compiled layers, traced
      with the plain weights' shapes, failed there;
    - elsewhere, those whose input width is not a multiple of the quantization block (64), which the repacking
      assumes: the demo's 96-wide layers failed with "shape '[96, 1]' is invalid" at the first chat."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if getattr(module, "support_avx512bf16_for_cpu", False) and state is not None \
                and (training or module.in_features % state.blocksize):
            module.support_avx512bf16_for_cpu = False


def hub_call(name: str, fn, *args, **kwargs):
    """Call a from_pretrained; turn 'cannot reach the hub' into one clear, translatable error. A hub id whose
    host does not answer is read from the cache alone: each request would otherwise be retried five times with
    back-off (~40 s a file) before the cached copy is used."""
    unreachable = False
    local = Path(str(args[0])).expanduser().exists()
    if not local:
        if is_path(str(args[0])):  # a folder that isn't there: not found, whether or not the Hub answers
            raise TuneboardError("error.model_not_found", name=name)
        from .estimate import hub_reachable

        unreachable = not hub_reachable()
        if unreachable:
            kwargs.setdefault("local_files_only", True)
            if getattr(getattr(fn, "__self__", None), "__name__", "").startswith("AutoModel"):
                # transformers asks the Hub for an adapter_config.json under the id without local_files_only
                kwargs.setdefault("adapter_kwargs", {"local_files_only": True})  # (~40 s of retries, printed)
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        text = str(e)
        offline = unreachable or os.environ.get("HF_HUB_OFFLINE") == "1" or any(
            s in text for s in ("offline", "couldn't connect", "Connection", "resolve", "Max retries"))
        if local:
            raise
        if offline:
            raise TuneboardError("error.offline_hub", name=name) from e
        raise TuneboardError("error.model_not_found", name=name) from e


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
