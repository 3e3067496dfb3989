"""Whole-run GPU memory from a model's config.json and a RunConfig, without weights or torch.

It knows the shapes of Llama-style decoders (Llama, Mistral, Qwen2/3, Gemma 1-3, Phi-3) and how the
engine trains them (engine/model.py, adapters.py, sft.py): a 16-bit frozen base, fp32 LoRA under
autocast; QLoRA with the base's other weights upcast to fp32 and bf16 adapters; fp32 master weights
for full and freeze tuning; trl's tiled LM head, which never builds the whole logits. It knows
nothing of torch: the board imports it, and so it must stay standard-library only.

Activations per decoder layer and token follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", sbh(34 + 5as/h)), redone for what HF's Llama code
actually saves: RMSNorm keeps an fp32 copy of its input, SwiGLU keeps three (tokens x intermediate)
tensors, sdpa/flash keep q, k, v, the output and a log-sum-exp (no s^2 matrix), eager keeps the
fp32 softmax and its 16-bit copy (heads x s^2), LoRA keeps its own input copy and dropout mask; with
Liger's kernels (on a GPU where liger-kernel is installed) RMSNorm keeps its input as it came and SwiGLU two
tensors. tests/test_estimate.py checks the formula against the bytes autograd saves on a tiny model, and
against peaks measured on a GPU (within 2 % for Llama-2-7B LoRA and QLoRA on an H200).
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import (
    REFERENCE_FREE,
    RunConfig,
    checkpointing_choice,
    config_from_args,
    fused_lora_choice,
    padding_free_choice,
    precision_choice,
    upcast_choice,
)
from .messages import TuneboardError, message
from .rope import rope_overrides

GB = 1024**3  # "GB" here is GiB, the unit nvidia-smi and torch report a card's memory in
DEFAULT_GPU_GB = 24.0
CUDA_CONTEXT = int(0.75 * GB)  # CUDA context + cuBLAS workspace: outside torch's allocator
ALLOCATOR_SLACK = 0.05  # the caching allocator reserves a little more than it hands out
PARTIAL_HEADROOM = 0.10  # auto keeps layers' activations only while the estimate stays this far under the GPU
LM_HEAD_TILE = (4096, 32768)  # trl's chunked log-prob kernel: tokens x vocab per tile
BNB_MIN_8BIT = 4096  # bitsandbytes keeps tensors smaller than this in fp32 state
BNB_BLOCK = 256  # ...and one fp32 absmax per 256 values of each 8-bit state
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PARTS = ("weights", "adapter", "gradients", "optimizer", "activations", "logits", "overhead")
# families whose shapes are exactly known; others are read as Llama-style and marked approximate
KNOWN = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"}
# mixtures of experts whose router and experts peft's all-linear adapts (as parameters: they are no Linear layers)
MOE_LORA_EXPERTS = {"mixtral", "qwen3_moe"}
# families whose RMSNorm and gated MLP Liger's kernels replace (liger_kernel.transformers.monkey_patch)
LIGER_TYPES = {"llama", "mistral", "mixtral", "ministral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2",
               "gemma3_text", "gemma3", "phi3", "granite", "olmo2", "olmo3", "glm4", "smollm3", "nemotron", "exaone4"}


# ---- shapes and parameter counts -----------------------------------------------------------


@dataclass
class Arch:
    model_type: str
    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    linears: list[tuple[str, int, int]]  # (name, in, out) of one decoder layer
    layer_extra: int  # per-layer norms and biases (and a mixture of experts' expert and router weights)
    exact: bool
    experts: int = 0  # a mixture of experts: experts per layer (0: a dense MLP)
    active_experts: int = 0  # ... and how many each token goes through
    lora_only: list[tuple[str, int, int]] = field(default_factory=list)  # modules LoRA adapts that are no Linear
    expert_lora: list[tuple[int, int, int]] = field(default_factory=list)  # (in, out, rank x) of each expert's

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def text_config(model_config: dict) -> dict:
    """Multimodal configs nest the language model's shapes under `text_config`."""
    if "hidden_size" not in model_config and isinstance(model_config.get("text_config"), dict):
        inner = dict(model_config["text_config"])
        inner.setdefault("tie_word_embeddings", model_config.get("tie_word_embeddings"))
        return inner
    return model_config


def caps_attention(model_config: dict) -> bool:
    """Whether the model soft-caps its attention scores (Gemma 2's `attn_logit_softcapping`): sdpa and PyTorch's
    varlen kernel can't, so the engine runs eager attention there unless flash-attn is installed."""
    return bool(text_config(model_config).get("attn_logit_softcapping"))


CONFIG_PATH = "_tuneboard_path"  # in a config read from a file: where it was, for its errors


def arch(model_config: dict) -> Arch:
    c = text_config(model_config)
    missing = [k for k in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers",
                           "vocab_size") if not isinstance(c.get(k), int) or isinstance(c.get(k), bool)]
    if missing:  # a partial config, or one of a model that is no decoder (an encoder, a diffusion model...)
        raise TuneboardError("error.model_config_field", path=model_config.get(CONFIG_PATH, "config.json"),
                             field=missing[0])
    mt = str(c.get("model_type", "llama"))
    h, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    kv = int(c.get("num_key_value_heads") or heads)
    hd = int(c.get("head_dim") or h // heads)
    inter = int(c["intermediate_size"])
    tied = c.get("tie_word_embeddings")
    if tied is None:  # transformers' per-family default when config.json leaves it out
        tied = mt.startswith("gemma")
    q, kvd = heads * hd, kv * hd
    if mt == "phi3":  # fused projections
        linears = [("qkv_proj", h, q + 2 * kvd), ("o_proj", q, h), ("gate_up_proj", h, 2 * inter), ("down_proj", inter, h)]
    else:
        linears = [("q_proj", h, q), ("k_proj", h, kvd), ("v_proj", h, kvd), ("o_proj", q, h),
                   ("gate_proj", h, inter), ("up_proj", h, inter), ("down_proj", inter, h)]
    norms = 4 if mt in ("gemma2", "gemma3_text", "gemma3") else 2
    extra = norms * h
    if mt in ("qwen3", "qwen3_moe", "gemma3_text", "gemma3"):
        extra += 2 * hd  # q_norm, k_norm
    if mt == "qwen2" or (mt == "qwen2_moe" and c.get("qkv_bias", True)) or c.get("attention_bias"):
        extra += q + 2 * kvd + (h if c.get("attention_bias") else 0)  # qwen2: q/k/v biases only
    if c.get("mlp_bias"):
        extra += 2 * inter + h
    exact = mt in KNOWN or mt == "gemma3"
    experts = int(c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 0)
    if experts > 1:  # a mixture of experts (Mixtral, Qwen-MoE, ...): transformers holds the experts as fused
        # weights, not Linear layers (LoRA's all-linear and bitsandbytes leave them as they are), with a router;
        # a token's activations go through `active` of them, and through a shared expert where there is one
        active = int(c.get("num_experts_per_tok") or c.get("moe_topk") or 2)
        per_expert = int(c.get("moe_intermediate_size") or inter)
        shared = int(c.get("shared_expert_intermediate_size") or 0)
        shared += int(c.get("n_shared_experts") or 0) * per_expert
        linears = linears[:4] if mt != "phi3" else linears[:2]  # attention: the dense MLP is gone
        if shared:
            linears += [("gate_proj", h, shared), ("up_proj", h, shared), ("down_proj", shared, h)]
            if mt == "qwen2_moe":
                linears.append(("shared_expert_gate", h, 1))
        extra += experts * 3 * h * per_expert + experts * h  # gate/up and down of every expert, the router
        inter = active * per_expert + shared
        dense_layers = c.get("mlp_only_layers") or c.get("first_k_dense_replace") or 0
        exact = mt in ("mixtral", "qwen2_moe", "qwen3_moe") and not dense_layers and c.get("decoder_sparse_step", 1) == 1
        adapted = mt in MOE_LORA_EXPERTS  # peft's all-linear adapts the router and each expert too (gate_up at 2 x r)
        return Arch(mt, int(c["vocab_size"]), h, inter, int(c["num_hidden_layers"]), heads, kv, hd, bool(tied),
                    linears, extra, exact, experts, active, [("gate", h, experts)] if adapted else [],
                    [(h, 2 * per_expert, 2), (per_expert, h, 1)] if adapted else [])
    return Arch(mt, int(c["vocab_size"]), h, inter, int(c["num_hidden_layers"]), heads, kv, hd, bool(tied),
                linears, extra, exact)


def count_params(model_config: dict) -> dict:
    """Exact parameter counts: {total, embedding, lm_head (0 when tied), per_layer, layers, final_norm}."""
    a = arch(model_config)
    per_layer = sum(i * o for _, i, o in a.linears) + a.layer_extra
    embed = a.vocab * a.hidden
    head = 0 if a.tied else embed
    total = embed + head + a.layers * per_layer + a.hidden
    return {"total": total, "embedding": embed, "lm_head": head, "per_layer": per_layer,
            "layers": a.layers, "final_norm": a.hidden, "exact": a.exact}


def lora_targets(a: Arch, target_modules: list[str]) -> list[tuple[str, int, int]]:
    """The (name, in, out) of each adapted module in one layer; `all-linear` is every projection."""
    wanted = set(target_modules)
    if "all-linear" in wanted:
        return list(a.linears) + a.lora_only
    return [m for m in a.linears if any(w == m[0] or w.endswith("." + m[0]) for w in wanted)]  # q_proj, self_attn.q_proj


def lora_params(model_config: dict, rank: int, target_modules: list[str], use_dora: bool = False) -> int:
    """Trainable parameters LoRA adds: r*(in+out) per adapted module (+ out for DoRA's magnitude)."""
    a = arch(model_config)
    per_layer = sum(rank * (i + o) + (o if use_dora else 0) for _, i, o in lora_targets(a, target_modules))
    if "all-linear" in target_modules:  # each expert of a mixture, as peft adapts its fused weights
        per_layer += a.experts * sum(k * rank * (i + o) for i, o, k in a.expert_lora)
    outside = 0
    if "lm_head" in target_modules:
        outside += rank * (a.hidden + a.vocab) + (a.vocab if use_dora else 0)
    if "embed_tokens" in target_modules:
        outside += rank * (a.vocab + a.hidden)
    return a.layers * per_layer + outside


# ---- the estimate --------------------------------------------------------------------------


@dataclass
class Advice:
    key: str  # estimate.advice.*
    params: dict[str, Any]
    overrides: dict[str, Any]  # the RunConfig change, as `with_overrides` takes it
    total: int  # bytes the run needs with the change


@dataclass
class Estimate:
    weights: int
    adapter: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    total: int
    gpu_memory: Optional[int]
    fits: Optional[bool]
    params_total: int
    params_trainable: int
    tokens: int  # tokens in one micro-batch (worst case: every row at the cutoff)
    precision: str
    attention: str
    optim: str
    storage: str = ""  # how the weights are held: bf16, fp32 masters, nf4 + fp32, ...
    exact_shapes: bool = True
    checkpointing: bool = False  # activations recomputed in backward (auto's choice included)
    checkpoint_layers: Optional[int] = None  # with checkpointing, the layers that recompute (None: all of them)
    advice: Optional[Advice] = None
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated() should read at the peak (no context, no slack)."""
        return self.total - self.overhead

    def parts(self) -> dict[str, int]:
        return {p: getattr(self, p) for p in PARTS}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_gb"] = self.total / GB
        d["allocated"] = self.allocated
        d["gpu_memory_gb"] = self.gpu_memory / GB if self.gpu_memory else None
        d["parts"] = {f"{p}_gb": round(v / GB, 4) for p, v in self.parts().items()}
        d["notes"] = list(self.notes) + ([{"key": self.advice.key, "params": self.advice.params}] if self.advice else [])
        return d


@dataclass
class _Plan:
    """How the engine will hold each kind of tensor, decided from the RunConfig alone."""
    e: int  # bytes of a compute-dtype activation
    autocast: bool
    residual: int  # bytes of the residual stream / norm outputs
    mlp: int  # bytes of the MLP's intermediate tensors
    frozen: int  # bytes per frozen, unquantized parameter
    trainable: int  # bytes per trainable parameter (and its gradient)
    attn: str
    optim: str
    tokens: int
    rows: int  # rows in one forward (DPO: chosen + rejected)
    seq: int  # length attention runs over (packed rows: the whole micro-batch)
    mask: bool  # a 4-D attention mask exists (padding or packing without flash-attn)
    liger: bool  # Liger's RMSNorm and SwiGLU kernels replace the model's own
    precision: str = "bf16"  # the compute precision: bf16 | fp16 | fp32


def liger_installed() -> bool:
    """Whether `liger-kernel` can be imported here (found, not imported: the board stays light)."""
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def triton_builds() -> bool:
    """Whether Triton can build GPU kernels here, as compiled layers and Liger's kernels need: installed, with the
    C compiler it builds each kernel's launcher with (CC, else gcc, else clang, where Triton looks; a slim
    container image may have none, and the first kernel would fail mid-run)."""
    import importlib.util
    import shutil

    return importlib.util.find_spec("triton") is not None and bool(
        os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang"))


def liger_usable() -> bool:
    """What `training.use_liger_kernel: auto` turns on for, on a GPU: Liger installed, and its Triton kernels
    buildable here. The engine's rule (`engine.model.liger_choice`), which the estimate follows."""
    return liger_installed() and triton_builds()


def _plan(cfg: RunConfig, capability: tuple[int, int] | None = None, liger: bool = False,
          softcap: bool = False) -> _Plan:
    q, ad, tr = cfg.quantization, cfg.adapter, cfg.training
    precision = precision_choice(cfg, capability)
    e = 4 if precision == "fp32" else 2
    autocast = e == 2
    masters = ad.method in ("full", "freeze")  # engine/model.py: fp32 masters under autocast
    kbit = bool(q.bits) and ad.method == "lora"
    upcast = upcast_choice(cfg, precision)  # prepare_model_for_kbit_training: norms / embeddings / head in fp32
    residual = 4 if (masters or upcast or e == 4) else 2
    mlp = 4 if (upcast or e == 4) else e  # bnb's Linear4bit/8bitLt return the input's dtype (fp32 once upcast)
    frozen = 4 if (masters or upcast or e == 4) else 2
    if masters:
        trainable = 4
    elif kbit:
        trainable = 2  # trl casts a quantized model's adapters to bf16
    else:
        trainable = 4  # peft's autocast_adapter_dtype keeps LoRA in fp32
    attn = cfg.model.attn_implementation
    if attn == "auto":  # flash-attn or PyTorch's varlen kernel on an Ampere+ GPU (or one not named), else sdpa
        attn = "varlen" if capability is None or tuple(capability) >= (8, 0) else "sdpa"
        attn = "eager" if softcap else attn  # soft-capped scores (Gemma 2): eager, as engine.model plans without flash-attn
    varlen = attn in ("flash_attention_2", "varlen")  # boundaries, not a mask: each sample attends to itself
    free = padding_free_choice(cfg, attn)  # a batch's rows flattened into one row of rows*s tokens
    optim = "adamw_torch_fused" if tr.optim == "auto" else tr.optim
    rows = tr.per_device_train_batch_size * (2 if cfg.stage == "dpo" else 1)
    s = cfg.data.max_length
    seq = rows * s if free and not varlen else s
    mask = not (free and varlen) and (free or rows > 1)  # padded rows, or a flattened row under sdpa
    return _Plan(e, autocast, residual, mlp, frozen, trainable, attn, optim, rows * s, rows, seq, mask, liger, precision)


LORA_INPUTS = {  # the tensor each projection reads: adapters on the same one keep it once
    "q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in", "o_proj": "attn_out",
    "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in", "down_proj": "mlp_act",
}


def _layer_bytes_per_token(a: Arch, p: _Plan, trainable: bool, lora: list[tuple[str, int, int]],
                           rank: int, dropout: float, dora: bool) -> int:
    """Bytes one decoder layer keeps for backward, per token of the micro-batch."""
    e, h = p.e, a.hidden
    if p.liger:  # Liger's RMSNorm keeps its input as it came and the fp32 inverse RMS (its weight's gradient
        norm = p.residual * h + 4  # comes from those); its SwiGLU keeps gate and up and recomputes the product
        n = 2 * norm + 2 * p.mlp * a.inter
    else:
        norm = 4 * h + 4  # fp32 copy of the input + rsqrt
        if trainable:
            norm += p.residual * h  # the normalised value, for the norm weight's gradient
        n = 2 * norm + 3 * p.mlp * a.inter  # gate output, silu output, up output
    if p.attn == "eager":
        kv = a.q_dim  # repeat_kv always expands
        n += e * 3 * a.q_dim + (4 + (e if e != 4 else 0)) * a.heads * p.seq  # q, k, v + probabilities
    else:
        kv = a.q_dim if (p.attn == "sdpa" and p.mask) else a.kv_dim  # a mask means repeat_kv, no enable_gqa
        n += e * (2 * a.q_dim + 2 * kv) + 4 * a.heads  # q, k, v, output, log-sum-exp
        if p.mask and p.attn == "sdpa":
            n += e * p.seq  # sdpa turns the bool mask into a float bias per layer and keeps it
    if trainable:  # inputs of trained projections, in the compute dtype
        n += (5 if p.residual != e else 2) * e * h  # autocast copies for q, k, v, gate, up (or one shared)
        n += e * a.inter + (e * a.q_dim if p.attn == "eager" else 0)  # down's input; eager's o input
    kept: set[str] = set()  # the inputs lora_A keeps as they are, each once however many adapters read it
    for name, i, o in lora:
        source = LORA_INPUTS.get(name, name)
        as_is = {"attn_in": p.residual == e, "mlp_in": p.residual == e, "mlp_act": p.mlp == e}.get(source, True)
        if dropout:
            n += i * (1 + e)  # bool dropout mask + the dropped input, per adapter
        elif dora:  # peft casts DoRA's input to its fp32 weights; autocast casts that back: a copy per adapter,
            if not (source == "attn_out" and p.attn != "eager" and p.trainable == e):  # unless nothing was cast
                n += i * e
        elif not as_is:
            n += i * e  # an fp32 input (a k-bit model's norms) cast for the matmul by autocast, per adapter
        elif source not in kept and not (source == "attn_out" and p.attn != "eager"):  # attention keeps its output
            kept.add(source)
            n += i * e  # the input itself (adapters.cast_inputs_only_without_autocast: no fp32 round trip)
        n += 2 * rank  # lora_A's output, kept by lora_B
        if dora:
            n += (e + 4) * o  # base and LoRA outputs, for the magnitude's gradient
    return n


def estimate(model_config: dict, cfg: RunConfig, gpu_memory_gb: float | None = None, *,
             fused_lm_head: bool = True, gpu_capability: tuple[int, int] | None = None,
             liger: bool | None = None, _advise: bool = True) -> Estimate:
    """The peak GPU memory of training `cfg` on the model `model_config` describes.

    Parts are as the peak holds them; `total` adds the CUDA context and allocator slack.
    `fused_lm_head=False` models a plain transformers Trainer (whole fp32 logits), for the bench.
    `liger`: whether Liger's kernels will run; None follows `training.use_liger_kernel` as the engine does
    on a GPU (auto: when liger-kernel is installed here).
    `training.gradient_checkpointing: auto` is decided here, and the engine trains as this says
    (`Estimate.checkpointing`): on where `checkpointing_choice` says so, or where the run would not fit
    `gpu_memory_gb` without it, and then with only the fewest layers recomputing that leave PARTIAL_HEADROOM
    (`Estimate.checkpoint_layers`, unless `training.checkpoint_layers` names a count).
    """
    kw = dict(fused_lm_head=fused_lm_head, gpu_capability=gpu_capability, liger=liger)
    if cfg.training.gradient_checkpointing == "auto":
        by_config = checkpointing_choice(cfg)
        if by_config or not gpu_memory_gb:
            chosen = "on" if by_config else "off"
            return estimate(model_config, cfg.with_overrides({"training.gradient_checkpointing": chosen}),
                            gpu_memory_gb, **kw, _advise=_advise)
        without = estimate(model_config, cfg.with_overrides({"training.gradient_checkpointing": "off"}),
                           gpu_memory_gb, **kw, _advise=False)
        if without.fits:
            return without
        on = cfg.with_overrides({"training.gradient_checkpointing": "on"})
        chosen = cfg.training.checkpoint_layers is None  # else the reader's own count
        if chosen:  # the fewest layers that recompute and still fit
            on = on.with_overrides({"training.checkpoint_layers": fewest_checkpoint_layers(model_config, on,
                                                                                           gpu_memory_gb, **kw)})
        est = estimate(model_config, on, gpu_memory_gb, **kw, _advise=False)
        if est.total >= without.total:  # recomputing saves nothing here (the peak is elsewhere): not worth its time
            est = without
        else:
            if chosen and est.checkpoint_layers is not None:
                est.notes.insert(0, {"key": "estimate.note.checkpointing_partial",
                                     "params": {"layers": est.checkpoint_layers, "of": arch(model_config).layers}})
            est.notes.insert(0, {"key": "estimate.note.checkpointing_auto",
                                 "params": {"without": f"{without.total / GB:.1f}", "gpu": f"{gpu_memory_gb:g}"}})
        if est.fits is False and _advise:  # each change tried under auto, as the reader would then see it
            est.advice = advise(model_config, cfg, gpu_memory_gb, **kw)
        return est
    checkpointing = cfg.training.gradient_checkpointing == "on"
    a = arch(model_config)
    if liger is None:
        mode = cfg.training.use_liger_kernel
        liger = mode == "on" or (mode == "auto" and liger_usable())
    p = _plan(cfg, gpu_capability, liger and a.model_type in LIGER_TYPES, caps_attention(model_config))
    ad, q, tr = cfg.adapter, cfg.quantization, cfg.training
    counts = count_params(model_config)
    n_total = counts["total"]
    linear_params = sum(i * o for _, i, o in a.linears)
    notes: list[dict[str, Any]] = []

    # weights: quantized projections, everything else at `frozen` bytes (or fp32 masters)
    quantized = a.layers * linear_params if (q.bits and ad.method == "lora") else 0
    if q.bits == 4:
        absmax = 1 / 64 + 4 / (64 * 256) if q.double_quant else 4 / 64  # ~0.127 vs 0.5 bits/param
        weights = quantized * (0.5 + absmax)
    elif q.bits == 8:
        weights = quantized + 4 * a.layers * sum(o for _, _, o in a.linears)  # int8 + a row scale
    else:
        weights = 0
    weights += (n_total - quantized) * p.frozen

    # trainable tensors as (numel, rows, cols) for the optimizer; layers that need activations
    tensors: list[tuple[int, int, int]] = []
    lora = lora_targets(a, ad.target_modules) if ad.method == "lora" else []
    if ad.method == "lora":
        for _, i, o in lora:
            tensors += [(ad.rank * i, ad.rank, i), (o * ad.rank, o, ad.rank)] * a.layers
            if ad.use_dora:
                tensors += [(o, o, 1)] * a.layers
        if "all-linear" in ad.target_modules:
            for i, o, k in a.expert_lora:
                r = k * ad.rank * a.experts
                tensors += [(r * i, r, i), (o * r, o, r)] * a.layers
        if "lm_head" in ad.target_modules:
            tensors += [(ad.rank * a.hidden, ad.rank, a.hidden), (a.vocab * ad.rank, a.vocab, ad.rank)]
        if "embed_tokens" in ad.target_modules:
            tensors += [(ad.rank * a.vocab, ad.rank, a.vocab), (a.hidden * ad.rank, a.hidden, ad.rank)]
        grad_layers, trained_layers = a.layers, 0
        n_trainable = sum(t[0] for t in tensors)
        dora_mags = a.layers * sum(o for _, _, o in lora) if ad.use_dora else 0
        adapter = (n_trainable - dora_mags) * p.trainable + dora_mags * 4
        gradients = adapter
    else:
        trained_layers = a.layers if ad.method == "full" else min(ad.freeze_trainable_layers, a.layers)
        per_layer = [(i * o, o, i) for _, i, o in a.linears] + [(a.layer_extra, a.layer_extra, 1)]
        tensors = per_layer * trained_layers
        if ad.method == "full":
            tensors += [(counts["embedding"], a.vocab, a.hidden), (a.hidden, a.hidden, 1)]
            if counts["lm_head"]:
                tensors.append((counts["lm_head"], a.vocab, a.hidden))
        grad_layers = trained_layers
        n_trainable = sum(t[0] for t in tensors)
        adapter, gradients = 0, n_trainable * p.trainable

    optimizer, step_workspace = _optimizer_bytes(p.optim, tensors, p.trainable)
    if p.optim.startswith("paged"):
        notes.append({"key": "estimate.note.paged", "params": {}})

    # activations: what the layers keep; with checkpointing, the recomputing layers keep their inputs, and the
    # first to recompute in backward needs one layer's worth again, once the layers after it (which keep
    # everything: `training.checkpoint_layers`) have given theirs back
    T = p.tokens
    one_layer = _layer_bytes_per_token(a, p, trained_layers > 0, lora, ad.rank, ad.dropout, ad.use_dora) * T
    recomputed = min(tr.checkpoint_layers or grad_layers, grad_layers) if checkpointing else 0
    kept = grad_layers - recomputed
    if checkpointing:
        acts = recomputed * p.residual * a.hidden * T + kept * one_layer
    else:
        acts = grad_layers * one_layer
    final_norm = p.residual * a.hidden + 4 if p.liger else 4 * a.hidden + 4
    acts += T * (final_norm + p.residual * a.hidden + 16)  # final norm, LM head input, log-probs
    if p.mask:
        acts += (p.rows if p.seq == cfg.data.max_length else 1) * p.seq**2 * (1 if p.attn == "sdpa" else p.e)
    acts += _weight_copies_per_layer(a, p, cfg, lora) * (max(kept, 1) if checkpointing else grad_layers)
    transient = 0
    if q.bits and ad.method == "lora":
        transient = max(i * o for _, i, o in a.linears) * 2  # a dequantized weight in backward
    if ad.use_dora and ad.method == "lora" and lora:
        transient = max(transient, max(i * o for _, i, o in lora) * 4)  # the fp32 weight norm
    in_flight = T * (3 * p.mlp * a.inter + 8 * a.hidden) + transient  # one layer's backward, in flight

    # logits: trl's tiled LM head, or the whole (tokens x vocab) logits in fp32 and their gradient
    head_trainable = ad.method == "full"
    if fused_lm_head:
        logits = min(T, LM_HEAD_TILE[0]) * min(a.vocab, LM_HEAD_TILE[1]) * p.e + 4 * T * a.hidden
        if head_trainable:
            logits += 4 * a.vocab * a.hidden  # fp32 gradient accumulator of the head
    else:
        logits = T * a.vocab * 12  # saved log-softmax + loss gradient + logits gradient, fp32

    if cfg.stage == "dpo" and ad.method != "lora" and cfg.dpo.method not in REFERENCE_FREE:
        weights += n_total * p.e  # a frozen reference copy in the compute dtype (engine/dpo.py)
        notes.append({"key": "estimate.note.reference", "params": {}})
    context = text_config(model_config).get("max_position_embeddings")
    stretched, _, said = rope_overrides(model_config, cfg.model.rope_scaling, cfg.data.max_length)
    if stretched:  # model.rope_scaling reaches the cutoff
        notes.append({"key": "estimate.note.rope_scaled", "params": {k: said[k] for k in ("kind", "context", "factor",
                                                                                         "cutoff")}})
    elif isinstance(context, int) and 0 < context < cfg.data.max_length:  # rows past it: positions it never learnt
        notes.append({"key": "estimate.note.beyond_context", "params": {"cutoff": cfg.data.max_length,
                                                                         "context": context}})
    if a.experts:
        key = "estimate.note.moe_quantized" if q.bits and ad.method == "lora" else "estimate.note.moe"
        notes.append({"key": key, "params": {"experts": a.experts, "active": a.active_experts}})

    # backward holds the LM head's tile first, then (the tile freed) each layer's gradients in turn, and with
    # checkpointing the first recomputing layer's activations again: the peak is the larger of the two moments
    layer_phase = in_flight + (one_layer if checkpointing and not kept else 0)
    if layer_phase > logits:
        acts, logits = acts + layer_phase, 0
    busy = acts + logits
    all_gradients = gradients
    if tr.gradient_accumulation_steps > 1:  # a micro-batch's gradients wait through the next one's forward
        if step_workspace > busy:  # the optimizer step's temporaries outgrow the freed activations
            optimizer += step_workspace - busy
    else:  # the trainer drops the gradients after each step (None, not zeros): backward makes them as it
        # frees the activations, so the peak is the larger of the forward's end and the optimizer step
        gradients = max(0, gradients + step_workspace - busy)
        if all_gradients - gradients >= GB / 2:  # worth a word: full tuning, not a LoRA adapter
            notes.append({"key": "estimate.note.gradients_freed",
                          "params": {"all": f"{all_gradients / GB:.1f}", "added": f"{gradients / GB:.1f}"}})
    allocated = int(weights + adapter + gradients + optimizer + busy)
    overhead = CUDA_CONTEXT + int(ALLOCATOR_SLACK * allocated)
    total = allocated + overhead
    gpu = int(gpu_memory_gb * GB) if gpu_memory_gb else None
    est = Estimate(
        weights=int(weights), adapter=int(adapter), gradients=int(gradients), optimizer=int(optimizer),
        activations=int(acts), logits=int(logits), overhead=overhead, total=total, gpu_memory=gpu,
        fits=None if gpu is None else total <= gpu, params_total=n_total, params_trainable=n_trainable,
        tokens=T, precision=p.precision,
        attention=p.attn, optim=p.optim, storage=_storage(cfg, p), exact_shapes=a.exact, checkpointing=checkpointing,
        checkpoint_layers=recomputed if checkpointing and kept else None,
        notes=notes)
    if model_config.get(BUNDLED_MARK):
        est.notes.insert(0, {"key": "estimate.note.bundled_shape", "params": {"name": model_config[BUNDLED_MARK]}})
    if est.fits is False and _advise:
        est.advice = advise(model_config, cfg, gpu_memory_gb, fused_lm_head=fused_lm_head,
                            gpu_capability=gpu_capability, liger=liger)
    return est


def fewest_checkpoint_layers(model_config: dict, cfg: RunConfig, gpu_memory_gb: float, **kw) -> Optional[int]:
    """The fewest decoder layers that must recompute their activations for `cfg` (checkpointing on) to fit
    `gpu_memory_gb` with PARTIAL_HEADROOM to spare; None where only all of them do, or none would fit at all
    (the advice goes on from there)."""
    layers, budget = arch(model_config).layers, (1 - PARTIAL_HEADROOM) * gpu_memory_gb * GB
    for n in range(1, layers):  # the estimate is arithmetic: a 7B's 32 tries take milliseconds
        est = estimate(model_config, cfg.with_overrides({"training.checkpoint_layers": n}), gpu_memory_gb, **kw,
                       _advise=False)
        if est.total <= budget:
            return est.checkpoint_layers
    return None


def _weight_copies_per_layer(a: Arch, p: _Plan, cfg: RunConfig, lora: list[tuple[str, int, int]]) -> int:
    """16-bit copies autocast makes of one layer's fp32 trainable weights, kept for backward (the fused LoRA
    branch keeps the fp32 adapters themselves and casts them again in backward)."""
    if not p.autocast:
        return 0
    if cfg.adapter.method == "lora":
        if fused_lora_choice(cfg, p.precision):
            return 0
        return 2 * sum(cfg.adapter.rank * (i + o) for _, i, o in lora) if p.trainable == 4 else 0
    return 2 * sum(i * o for _, i, o in a.linears)


def _storage(cfg: RunConfig, p: _Plan) -> str:
    rest = {4: "fp32", 2: p.precision}[p.frozen]
    if cfg.quantization.bits and cfg.adapter.method == "lora":
        kind = cfg.quantization.quant_type if cfg.quantization.bits == 4 else "int8"
        return f"{kind} + {rest}"
    return f"{rest} masters" if cfg.adapter.method in ("full", "freeze") and rest == "fp32" else rest


def _optimizer_bytes(optim: str, tensors: list[tuple[int, int, int]], trainable: int) -> tuple[int, int]:
    """(state bytes, temporary bytes during the step) for the trainable tensors."""
    n = sum(t[0] for t in tensors)
    if optim in ("adamw_torch", "adamw_torch_fused"):
        # torch keeps exp_avg / exp_avg_sq in the parameter's dtype; foreach (non-fused) makes one copy
        return 2 * n * trainable, (0 if optim.endswith("fused") else n * trainable)
    if optim == "paged_adamw_32bit":
        return 8 * n, 0
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        big = [t[0] for t in tensors if t[0] >= BNB_MIN_8BIT]
        small = n - sum(big)
        return sum(2 * k + 2 * 4 * math.ceil(k / BNB_BLOCK) for k in big) + 8 * small, 0
    if optim == "adafactor":  # factored second moment, no first moment
        return sum(4 * (r + c) if c > 1 and r > 1 else 4 * k for k, r, c in tensors), 0
    return 0, 0  # sgd without momentum


def advise(model_config: dict, cfg: RunConfig, gpu_memory_gb: float, *, fused_lm_head: bool = True,
           gpu_capability: tuple[int, int] | None = None, liger: bool | None = None) -> Advice:
    """The single change that makes the run fit, tried in order of least harm, with its total."""
    gpu = gpu_memory_gb * GB
    tr = cfg.training

    def total(overrides: dict[str, Any]) -> int:
        return estimate(model_config, cfg.with_overrides(overrides), gpu_memory_gb, fused_lm_head=fused_lm_head,
                        gpu_capability=gpu_capability, liger=liger, _advise=False).total

    def gb(x: int) -> str:
        return f"{x / GB:.1f}"

    tried: dict[str, Any] = {}
    if tr.gradient_checkpointing == "off":  # auto turns it on by itself where that makes the run fit
        o = {"training.gradient_checkpointing": "on"}
        tried.update(o)
        t = total(o)
        if t <= gpu:
            return Advice("estimate.advice.checkpointing", {"total": gb(t)}, o, t)
    b = tr.per_device_train_batch_size
    if b > 1:
        tokens = b * tr.gradient_accumulation_steps
        nb = b // 2
        while nb >= 1:
            o = {"training.per_device_train_batch_size": nb,
                 "training.gradient_accumulation_steps": max(1, tokens // nb)}
            t = total(o)
            if t <= gpu:
                return Advice("estimate.advice.batch", {"batch": nb, "accum": max(1, tokens // nb), "total": gb(t)}, o, t)
            nb //= 2
        tried.update(o)
    if cfg.adapter.method == "lora" and cfg.quantization.bits != 4:
        o = {"quantization.bits": 4}
        tried.update(o)
        t = total(o)
        if t <= gpu:
            return Advice("estimate.advice.quantize", {"total": gb(t)}, o, t)
    length = cfg.data.max_length // 2
    while length >= 128:
        o = {"data.max_length": length}
        t = total(o)
        if t <= gpu:
            return Advice("estimate.advice.cutoff", {"length": length, "total": gb(t)}, o, t)
        length //= 2
    if cfg.adapter.method != "lora":
        o = {"adapter.method": "lora"}
        t = total(o)
        if t <= gpu:
            return Advice("estimate.advice.lora", {"total": gb(t)}, o, t)
        tried.update(o, **{"quantization.bits": 4})
    # no single change: everything but the cutoff, then the longest cutoff that fits with it
    t, length = total(tried), cfg.data.max_length
    while t > gpu and length > 128:
        length //= 2
        tried["data.max_length"] = length
        t = total(tried)
    key = "estimate.advice.combine" if t <= gpu else "estimate.advice.none"
    return Advice(key, {"total": gb(t), "gpu": f"{gpu_memory_gb:g}"}, tried, t)


# ---- reading config.json -------------------------------------------------------------------


def load_model_config(name_or_path: str, workdir=None, revision: str | None = None, *, bundled: bool = False) -> dict:
    """A model's config.json as a dict: the demo's, a local folder's, or one file from the hub. `bundled`: where
    the hub can't answer (offline, a gated repo without a token), a well-known model's shape from
    assets/model_shapes.json (`bundled_shape`), enough for an estimate; without it, that is an error."""
    from .demo import DEMO_NAME, is_demo
    from .paths import models_dir

    if is_demo(name_or_path):
        path = models_dir(workdir) / DEMO_NAME / "config.json"
        if not path.exists():
            _build_demo(workdir)
        return json.loads(path.read_text(encoding="utf-8"))
    from .model import local_model_dir  # the engine's own rules for folder vs hub id

    p = Path(name_or_path).expanduser()
    if p.is_file() and p.suffix == ".json":
        return _read_config(p)
    local = local_model_dir(name_or_path)
    if local is None:
        try:
            return _hub_config(name_or_path, revision)
        except TuneboardError:
            shape = bundled_shape(name_or_path) if bundled else None
            if shape is None:
                raise
            return shape
    return _read_config(local / "config.json")


def _read_config(path: Path) -> dict:
    """A config.json that is not a JSON object (cut short, hand-edited) is said with its file and place."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TuneboardError("error.model_config_unreadable", path=str(path), error=str(e)[:200]) from None
    if not isinstance(data, dict):
        raise TuneboardError("error.model_config_unreadable", path=str(path), error="not a JSON object")
    data.setdefault(CONFIG_PATH, str(path))
    return data


BUNDLED_MARK = "_tuneboard_bundled"  # in a config from assets/model_shapes.json: the model id it was asked for


def bundled_shape(repo_id: str) -> dict | None:
    """The shape of a well-known model from assets/model_shapes.json (its config.json's fields the estimate
    reads), marked with BUNDLED_MARK; None for a model not there. Ids match as the Hub's do, in any case."""
    wanted = repo_id.strip().lower()
    for shape in _model_shapes():
        if any(m.lower() == wanted for m in shape["models"]):
            return {**shape["config"], BUNDLED_MARK: repo_id}
    return None


@functools.lru_cache(maxsize=1)
def _model_shapes() -> list[dict]:
    from .paths import ASSETS

    return json.loads((ASSETS / "model_shapes.json").read_text(encoding="utf-8"))["shapes"]


def _build_demo(workdir) -> None:
    """Build the demo model; in a child process unless torch is already here (the board has none)."""
    if "torch" in sys.modules:
        from .demo import ensure_demo_model

        ensure_demo_model(workdir)
        return
    code = "import sys; from engine.demo import ensure_demo_model; ensure_demo_model(sys.argv[1] or None)"
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code, str(workdir or "")], check=True, env=env, capture_output=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host answers a TCP connection (a failed name lookup answers at once).
    Without it, huggingface_hub retries a download five times with back-off, about 20 s, before failing."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import constants

        url = urlparse(constants.ENDPOINT)
    except ImportError:
        return False
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _hub_config(repo_id: str, revision: str | None) -> dict:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise TuneboardError("error.model_not_found", name=repo_id) from None
    try:  # the cache answers first when offline; unreachable, only the cache is asked (no 20 s of retries)
        path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=not hub_reachable())
    except LocalEntryNotFoundError as e:  # offline, and not in the cache
        raise TuneboardError("error.offline_hub", name=repo_id) from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise TuneboardError("error.model_not_found", name=repo_id) from e
    except Exception as e:  # connection errors, offline mode, a cache miss while offline
        raise TuneboardError("error.offline_hub", name=repo_id) from e
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---- text and the CLI verb -----------------------------------------------------------------


def render(est: Estimate, name: str = "", lang: str | None = None) -> str:
    """A few aligned lines for a terminal: each part, the total against the GPU, the advice."""
    def gb(x: int) -> str:
        return f"{x / GB:6.2f} GB" if x >= GB / 10 else f"{x / 2**20:6.1f} MB"

    head = message("estimate.title", {"model": name or "?", "params": f"{est.params_total:,}",
                                      "trainable": f"{est.params_trainable:,}"}, lang)
    lines = [head]
    detail = {"weights": est.storage, "optimizer": est.optim,
              "activations": message("estimate.detail.tokens", {"tokens": f"{est.tokens:,}", "attention": est.attention}, lang)}
    labels = {part: message(f"estimate.part.{part}", None, lang) for part in (*PARTS, "total")}
    width = max(18, *(_columns(label) + 2 for label in labels.values()))
    for part in PARTS:
        lines.append(f"  {_pad(labels[part], width)}{gb(getattr(est, part))}  {detail.get(part, '')}".rstrip())
    total = f"  {_pad(labels['total'], width)}{gb(est.total)}"
    if est.gpu_memory:
        verdict = "estimate.fits" if est.fits else "estimate.too_big"
        total += "  " + message(verdict, {"gpu": f"{est.gpu_memory / GB:g}"}, lang)
    lines.append(total)
    for note in est.notes + ([{"key": est.advice.key, "params": est.advice.params}] if est.advice else []):
        lines.append("  " + message(note["key"], note["params"], lang))
    if est.advice and est.advice.overrides:  # the same change, ready to paste
        sets = " ".join(f"--set {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in est.advice.overrides.items())
        lines.append(f"    {sets}")
    if not est.exact_shapes:
        lines.append("  " + message("estimate.note.approximate", None, lang))
    return "\n".join(lines)


def _columns(text: str) -> int:
    """How many terminal columns `text` takes: Korean, Chinese and Japanese characters take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(1, width - _columns(text))


def describe_changes(overrides: dict[str, Any], lang: str | None = None) -> str:
    """An advice's config changes in words: "gradient checkpointing · micro-batch 1 × 8 · 4-bit · cutoff 512"."""
    words = []
    for k, v in overrides.items():
        if k == "training.gradient_checkpointing" and v == "on":
            words.append(message("estimate.change.checkpointing", None, lang))
        elif k == "training.per_device_train_batch_size":
            accum = overrides.get("training.gradient_accumulation_steps", 1)
            words.append(message("estimate.change.batch", {"batch": v, "accum": accum}, lang))
        elif k == "quantization.bits" and v == 4:
            words.append(message("estimate.change.quantize", None, lang))
        elif k == "data.max_length":
            words.append(message("estimate.change.cutoff", {"length": v}, lang))
        elif k == "adapter.method" and v == "lora":
            words.append(message("estimate.change.lora", None, lang))
    return " · ".join(words)


def local_gpu() -> tuple[float, tuple[int, int]] | None:
    """The first CUDA device's memory (GB) and compute capability, only if torch is installed; None without one."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.total_memory / GB, (props.major, props.minor)


def estimate_for(cfg: RunConfig, workdir=None, gpu_memory_gb: float | None = None,
                 no_gpu_note: str = "estimate.note.no_gpu_here") -> Estimate:
    """The command line's estimate: against `gpu_memory_gb`, else this machine's GPU, else DEFAULT_GPU_GB.
    The GPU is asked first: that imports torch, so a demo model still to be built is built in this
    process rather than in a child (the board, which has no torch, never calls this)."""
    local = local_gpu()
    gpu = gpu_memory_gb or (local and local[0]) or DEFAULT_GPU_GB
    model_config = load_model_config(cfg.model.name_or_path, workdir, cfg.model.revision, bundled=True)
    est = estimate(model_config, cfg, gpu, gpu_capability=local and local[1])
    if not local and not gpu_memory_gb:  # said, so that "fits" is not read as "fits this machine"
        est.notes.insert(0, {"key": no_gpu_note, "params": {"gpu": f"{gpu:g}"}})
    return est


def estimate_text(cfg: RunConfig, workdir=None, gpu_memory_gb: float | None = None,
                  no_gpu_note: str = "estimate.note.no_gpu_here") -> str:
    """The estimate as printed; `no_gpu_note` says a machine without a GPU (`tuneboard train`: that it trains on
    the CPU)."""
    return render(estimate_for(cfg, workdir, gpu_memory_gb, no_gpu_note), cfg.model.name_or_path)


def cmd_estimate(args) -> int:
    from .paths import default_workdir

    cfg = config_from_args(args)
    workdir = Path(args.workdir).resolve() if args.workdir else default_workdir()
    est = estimate_for(cfg, workdir, args.gpu_memory)
    if args.json:
        print(json.dumps({"model": cfg.model.name_or_path, **est.to_dict()}, indent=1, default=str))
    else:
        print(render(est, cfg.model.name_or_path))
    return 0
