"""The memory estimate: exact parameter counts, the activation formula against what autograd keeps, advice, CLI."""

import json
import subprocess
import sys

import pytest
from world import ROOT

from engine import estimate as E
from engine.config import RunConfig, fused_lora_choice, parse_overrides

CONFIGS = ROOT / "bench" / "configs"


def mc(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def run_config(**sections) -> RunConfig:
    data = {"model": {"name_or_path": "x"}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v) if isinstance(v, dict) else data.__setitem__(k, v)
    return RunConfig.from_dict(data)


# ---- exact counts ------------------------------------------------------------------------------


def test_llama2_7b_counts_are_exact():
    c = E.count_params(mc("llama-2-7b"))
    assert c["total"] == 6_738_415_616
    assert c["lm_head"] == c["embedding"] == 32000 * 4096
    assert E.lora_params(mc("llama-2-7b"), 128, ["all-linear"]) == 319_815_680
    named = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert E.lora_params(mc("llama-2-7b"), 128, named) == 319_815_680
    assert E.lora_params(mc("llama-2-7b"), 64, ["q_proj", "v_proj"]) == 32 * 2 * 64 * (4096 + 4096)
    # DoRA adds one magnitude per output feature of each adapted module
    dora = E.lora_params(mc("llama-2-7b"), 128, ["all-linear"], use_dora=True)
    assert dora - 319_815_680 == 32 * (4 * 4096 + 2 * 11008 + 4096)


def test_qwen25_05b_tied_gqa_and_qkv_biases():
    c = E.count_params(mc("qwen2.5-0.5b"))
    assert c["total"] == 494_032_768  # the published count
    assert c["lm_head"] == 0  # tied to the embedding


FAMILIES = {
    "llama-bias": {"model_type": "llama", "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False},
    "mistral": {"model_type": "mistral", "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "head_dim": 48, "tie_word_embeddings": True},
    "gemma": {"model_type": "gemma", "head_dim": 32, "hidden_activation": "gelu_pytorch_tanh"},
    "gemma2": {"model_type": "gemma2", "head_dim": 32},
    "gemma3_text": {"model_type": "gemma3_text", "head_dim": 32},
    "phi3": {"model_type": "phi3", "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1},
    # mixtures of experts: fused expert weights and a router, and Qwen1.5-MoE's shared expert with its gate
    "mixtral": {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2, "tie_word_embeddings": False},
    "qwen2_moe": {"model_type": "qwen2_moe", "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 96,
                  "shared_expert_intermediate_size": 200, "tie_word_embeddings": False},
    "qwen3_moe": {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                  "head_dim": 48, "tie_word_embeddings": False},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_counts_match_transformers(family):
    """The config-only count equals the parameters transformers builds (on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **FAMILIES[family]}
    cfg = AutoConfig.for_model(**d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert E.count_params(d)["total"] == sum(p.numel() for p in model.parameters())
    assert E.arch(d).exact


def test_lora_counts_match_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    d = mc("tiny")
    for targets, dora in ((["all-linear"], False), (["q_proj", "v_proj"], False), (["all-linear"], True)):
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**d))
        model = get_peft_model(model, LoraConfig(r=8, target_modules=targets[0] if targets == ["all-linear"] else targets,
                                                 use_dora=dora))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert E.lora_params(d, 8, targets, use_dora=dora) == trainable


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_a_mixture_of_experts_counts_every_expert_and_lora_finds_its_linear_layers(family):
    """Mixtral-8x7B was read as a dense 7.2 B model and said to fit a 24 GB GPU: it has 46.7 B parameters, ~87 GB of
    bf16 weights. LoRA's all-linear reaches attention (and a shared expert), not the fused experts."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    d = {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **FAMILIES[family]}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**d))
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert E.lora_params(d, 8, ["all-linear"]) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    mixtral = {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
               "num_experts_per_tok": 2, "tie_word_embeddings": False}
    assert E.count_params(mixtral)["total"] == 46_702_792_704  # Mixtral-8x7B's published count
    est = E.estimate(mixtral, run_config(adapter={"method": "lora"}), 24)
    assert est.weights > 80 * E.GB and not est.fits
    assert {"key": "estimate.note.moe", "params": {"experts": 8, "active": 2}} in est.notes


# ---- the activation formula against what autograd saves ---------------------------------------

TINY = {"vocab_size": 512, "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": False, "model_type": "llama"}


def _saved_bytes_per_layer(tmp_path, mode: str, attn: str, rows: int = 2, seq: int = 64, fused: bool = True) -> int:
    """Bytes autograd keeps for one decoder layer (2 layers minus 1), bf16 autocast as on a GPU.

    The model is prepared the way engine/model.py + adapters.py + trl do it: a bf16 base with fp32 LoRA whose
    inputs are not cast to fp32 under autocast, trained through the fused branch (engine/lora_fused.py); a 4-bit base with bf16 LoRA, through prepare_model_for_kbit_training
    (qlora: fp32 norms, embeddings and head) or as loaded (qlora-bf16, bf16's default); fp32 masters for full.
    """
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    from engine.adapters import cast_inputs_only_without_autocast
    from engine.lora_fused import fuse_lora_layers

    def saved(layers: int) -> int:
        torch.manual_seed(0)
        path = tmp_path / f"{mode}{layers}"
        LlamaForCausalLM(LlamaConfig(**{**TINY, "num_hidden_layers": layers})).save_pretrained(path)
        kw = {"attn_implementation": attn}
        if mode in ("qlora", "qlora-bf16"):
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
            m = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=q, device_map="cpu", **kw)
            if mode == "qlora":  # peft's k-bit recipe: norms, embeddings and head in fp32
                m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=False)
            m = cast_inputs_only_without_autocast(get_peft_model(m, LoraConfig(r=8, lora_dropout=0.0,
                                                                                target_modules="all-linear")))
            for p in m.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        elif mode in ("lora", "lora-dropout", "lora-peft"):
            m = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, **kw)
            lora = LoraConfig(r=8, lora_dropout=0.1 if mode == "lora-dropout" else 0.0, target_modules="all-linear")
            m = cast_inputs_only_without_autocast(get_peft_model(m, lora))
        else:
            m = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)
        if fused:
            fuse_lora_layers(m)
        m.train()
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        ids = torch.randint(0, 512, (rows, seq))
        mask = torch.ones(rows, seq, dtype=torch.long)
        mask[0, :5] = 0  # a padded row, as a padded batch has
        core = m.get_base_model().model if hasattr(m, "get_base_model") else m.model
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            core(input_ids=ids, attention_mask=mask)
        return sum(seen.values())

    return saved(2) - saved(1)


@pytest.mark.parametrize("mode,attn", [("lora", "sdpa"), ("lora", "eager"), ("qlora", "sdpa"), ("qlora", "eager"),
                                       ("qlora-bf16", "sdpa"), ("qlora-bf16", "eager"), ("full", "sdpa"),
                                       ("lora-dropout", "sdpa"), ("lora-peft", "sdpa")])
def test_layer_activations_match_autograd(tmp_path, mode, attn):
    rows, seq = 2, 64
    dropout = 0.1 if mode == "lora-dropout" else 0.0
    cfg = run_config(model={"attn_implementation": attn, "precision": "bf16"},
                     adapter={"method": "full" if mode == "full" else "lora", "rank": 8, "dropout": dropout},
                     training={"per_device_train_batch_size": rows,
                               "fused_lora": "off" if mode == "lora-peft" else "auto"},
                     quantization={"bits": 4, "upcast_norms": "on" if mode == "qlora" else "off"}
                     if mode.startswith("qlora") else {},
                     data={"max_length": seq})
    a, p = E.arch(TINY), E._plan(cfg)
    lora = E.lora_targets(a, ["all-linear"]) if mode != "full" else []
    expected = (E._layer_bytes_per_token(a, p, mode == "full", lora, 8, dropout, False) * rows * seq
                + E._weight_copies_per_layer(a, p, cfg, lora))
    if dropout:  # a CPU's dropout keeps its mask in the input's dtype (bf16) where CUDA's fused one keeps a bool
        expected += sum(i for _, i, _ in lora) * (2 - 1) * rows * seq
    fused = fused_lora_choice(cfg, "bf16")  # as the engine decides (not for qlora's fp32 norms, nor asked off)
    assert fused == (mode in ("lora", "lora-dropout", "qlora-bf16"))
    assert _saved_bytes_per_layer(tmp_path, mode, attn, rows, seq, fused) == expected


# ---- the parts and the advice --------------------------------------------------------------------


def test_weights_per_quantization_and_precision():
    d = mc("llama-2-7b")
    n = 6_738_415_616
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    bf16 = E.estimate(d, run_config())
    assert bf16.weights == 2 * n
    q4 = E.estimate(d, run_config(quantization={"bits": 4, "double_quant": True}))
    rest = 2 * (n - linear)  # embeddings, norms and LM head as loaded, in bf16
    assert q4.weights == pytest.approx(rest + linear * (0.5 + 0.127 / 8), rel=1e-3) and q4.storage == "nf4 + bf16"
    upcast = E.estimate(d, run_config(quantization={"bits": 4, "upcast_norms": "on"}))  # prepare_model_for_kbit_training
    assert upcast.weights - q4.weights == 2 * (n - linear) and upcast.storage == "nf4 + fp32"
    t4 = E.estimate(d, run_config(quantization={"bits": 4}), 16, gpu_capability=(7, 5))  # fp16 there: auto upcasts
    assert t4.precision == "fp16" and t4.weights == upcast.weights
    q4_single = E.estimate(d, run_config(quantization={"bits": 4, "double_quant": False}))
    assert q4_single.weights - q4.weights == pytest.approx(linear * (0.5 - 0.127) / 8, rel=0.01)
    q8 = E.estimate(d, run_config(quantization={"bits": 8}))
    assert rest + linear < q8.weights < rest + 1.01 * linear
    full = E.estimate(d, run_config(adapter={"method": "full"}))
    assert full.weights == 4 * n and full.gradients == 4 * n and full.optimizer == 8 * n  # fp32 masters + AdamW


def test_optimizer_states_per_optimizer():
    d = mc("llama-2-7b")
    lora = 319_815_680

    def opt(name, **q):
        return E.estimate(d, run_config(adapter={"rank": 128}, training={"optim": name}, quantization=q)).optimizer

    assert opt("adamw_torch_fused") == 8 * lora  # fp32 adapters: fp32 m and v
    assert opt("adamw_torch_fused", bits=4) == 4 * lora  # trl keeps QLoRA adapters in bf16, and so their states
    assert opt("paged_adamw_32bit", bits=4) == 8 * lora  # bitsandbytes' 32-bit states are fp32 whatever the param
    assert opt("adamw_8bit") == pytest.approx(2 * lora, rel=0.04)  # one byte per moment + block absmax
    assert opt("sgd") == 0
    assert opt("adafactor") < lora
    est = E.estimate(d, run_config(training={"optim": "paged_adamw_8bit"}))
    assert {"key": "estimate.note.paged", "params": {}} in est.notes


def test_activations_react_to_every_knob():
    d = mc("qwen2.5-0.5b")
    base = E.estimate(d, run_config())
    assert E.estimate(d, run_config(training={"gradient_checkpointing": True})).activations < base.activations / 3
    assert E.estimate(d, run_config(model={"attn_implementation": "eager"})).activations > base.activations
    double = E.estimate(d, run_config(data={"max_length": 2048}))
    assert 1.9 < double.activations / base.activations < 2.3
    assert E.estimate(d, run_config(training={"per_device_train_batch_size": 4})).activations > 1.9 * base.activations
    dpo = E.estimate(d, run_config(stage="dpo"))
    assert dpo.tokens == 2 * base.tokens  # chosen and rejected in one forward
    plain = E.estimate(d, run_config(), fused_lm_head=False)
    assert plain.logits == base.tokens * 151936 * 12 > 10 * base.logits


def test_estimate_follows_the_engines_padding_free_rule():
    """Padded rows under sdpa carry a (rows x s x s) mask; padding-free rows through varlen carry none."""
    d = mc("qwen2.5-0.5b")
    batch = {"per_device_train_batch_size": 4}
    free = E.estimate(d, run_config(training=batch))  # auto: varlen on a GPU, so padding-free
    padded = E.estimate(d, run_config(training={**batch, "padding_free": "off"}))
    assert padded.activations > free.activations
    assert E.estimate(d, run_config(training={**batch, "padding_free": "on"})).activations == free.activations
    dpo = {"datasets": [{"path": "demo:dpo"}]}  # trl's DPO pads: a mask whatever the switch says
    assert (E.estimate(d, run_config(stage="dpo", data=dpo, training=batch)).activations
            == E.estimate(d, run_config(stage="dpo", data=dpo, training={**batch, "padding_free": "off"})).activations)


def test_a_pre_ampere_gpu_is_estimated_with_the_attention_the_engine_picks_there():
    """auto attention is varlen on compute capability 8.0+ (padding-free, no mask), sdpa with padded rows below."""
    d = mc("qwen2.5-0.5b")
    cfg = run_config(training={"per_device_train_batch_size": 4, "gradient_checkpointing": "off"})
    t4 = E.estimate(d, cfg, 16, gpu_capability=(7, 5))
    sdpa = E.estimate(d, run_config(model={"attn_implementation": "sdpa"}, training={"per_device_train_batch_size": 4}))
    assert t4.activations == sdpa.activations > E.estimate(d, cfg, gpu_capability=(8, 0)).activations
    assert E.estimate(d, cfg, gpu_capability=(9, 0)).activations == E.estimate(d, cfg).activations
    tight = E.estimate(d, cfg, t4.total / E.GB * 0.9, gpu_capability=(7, 5))  # the advice plans on sdpa as well
    changed = cfg.with_overrides(tight.advice.overrides)
    assert tight.advice.total == E.estimate(d, changed, 16, gpu_capability=(7, 5)).total
    assert tight.advice.total != E.estimate(d, changed, 16).total


def test_parts_add_up_and_fit():
    est = E.estimate(mc("qwen2.5-0.5b"), run_config(), 24)
    assert sum(est.parts().values()) == est.total
    assert est.fits and est.advice is None
    d = est.to_dict()
    assert d["parts"]["weights_gb"] == pytest.approx(est.weights / E.GB, abs=1e-4)
    json.dumps(d)


def test_advice_is_the_first_single_change_that_fits():
    d, gpu = mc("llama-2-7b"), 24
    cfg = run_config(adapter={"rank": 128}, training={"per_device_train_batch_size": 4, "gradient_checkpointing": "off"},
                     data={"max_length": 1024})
    est = E.estimate(d, cfg, gpu)
    assert not est.fits
    assert est.advice.key == "estimate.advice.checkpointing"
    after = E.estimate(d, cfg.with_overrides(est.advice.overrides), gpu)
    assert after.fits and after.total == est.advice.total
    # with checkpointing already on, a smaller micro-batch keeps the effective batch
    small = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": True}), 21)
    assert small.advice.key == "estimate.advice.batch"
    o = small.advice.overrides
    assert o["training.per_device_train_batch_size"] * o["training.gradient_accumulation_steps"] == 4 * 4
    # nothing saves a full fine-tune of 7B on 24 GB but LoRA
    full = E.estimate(d, cfg.with_overrides({"adapter.method": "full"}), gpu)
    assert full.advice.key in ("estimate.advice.lora", "estimate.advice.combine")
    tiny_gpu = E.estimate(d, cfg, 2)
    assert tiny_gpu.advice.key == "estimate.advice.none"


def on_cfg(cfg: RunConfig, layers: int | None) -> RunConfig:
    return cfg.with_overrides({"training.gradient_checkpointing": "on", "training.checkpoint_layers": layers})


def test_checkpointing_some_layers_costs_between_none_and_all():
    """Each layer that keeps its activations instead of recomputing adds what it keeps less its input; all of
    them recomputing is plain checkpointing (a count past the layers too). The last layer costs the same either
    way, give or take its input: its recompute would come first in backward, when nothing else has been freed."""
    d = mc("llama-2-7b")
    cfg = run_config(training={"per_device_train_batch_size": 4}, data={"max_length": 1024})
    off = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": "off"}), 80)
    totals = [E.estimate(d, on_cfg(cfg, n), 80).total for n in range(1, 33)]
    assert totals[-1] == E.estimate(d, on_cfg(cfg, None), 80).total == E.estimate(d, on_cfg(cfg, 99), 80).total
    assert all(a > b for a, b in zip(totals[:-2], totals[1:-1], strict=True)) and totals[0] < off.total
    layer_input = 4 * 1024 * 4096 * 2  # 4 x 1,024 tokens of 4,096 in bf16
    assert abs(totals[-1] - totals[-2]) <= layer_input * (1 + E.ALLOCATOR_SLACK) + 1
    steps = {a - b for a, b in zip(totals[:-2], totals[1:-1], strict=True)}  # one layer kept more, less its input
    assert len({round(x / 2**20) for x in steps}) == 1  # the same step each (slack rounding aside)
    assert E.estimate(d, on_cfg(cfg, 31), 80).checkpoint_layers == 31
    assert E.estimate(d, on_cfg(cfg, 32), 80).checkpoint_layers is None


def test_auto_checkpointing_is_on_for_quantized_lora_and_where_the_run_would_not_fit_without_it():
    d = mc("llama-2-7b")
    cfg = run_config(adapter={"rank": 128}, training={"per_device_train_batch_size": 4}, data={"max_length": 1024})
    off = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": "off"}), 80)
    on = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": "on"}), 80)
    assert off.fits and not off.checkpointing and on.checkpointing and on.total < off.total
    roomy = E.estimate(d, cfg, 80)  # fits without: auto stays off, and says nothing
    assert roomy.total == off.total and not roomy.checkpointing
    assert "estimate.note.checkpointing_auto" not in [n["key"] for n in roomy.notes]
    assert not E.estimate(d, cfg).checkpointing  # no GPU to fit: the config's own rule
    gpu = (on.total + off.total) / 2 / E.GB  # fits only with it: the fewest layers that recompute and fit
    tight = E.estimate(d, cfg, gpu)
    budget = (1 - E.PARTIAL_HEADROOM) * gpu * E.GB  # kept activations leave the estimate's error room
    assert tight.checkpointing and tight.fits and on.total < tight.total <= budget and tight.advice is None
    n = tight.checkpoint_layers
    assert 1 < n < 32 and E.estimate(d, on_cfg(cfg, n - 1), gpu).total > budget
    assert tight.total == E.estimate(d, on_cfg(cfg, n), gpu).total
    assert tight.notes[:2] == [{"key": "estimate.note.checkpointing_auto",
                                "params": {"without": f"{off.total / E.GB:.1f}", "gpu": f"{gpu:g}"}},
                               {"key": "estimate.note.checkpointing_partial", "params": {"layers": n, "of": 32}}]
    assert E.estimate(d, cfg, on.total / E.GB + 0.01).checkpoint_layers is None  # no room to spare: all of them
    mine = E.estimate(d, cfg.with_overrides({"training.checkpoint_layers": 30}), gpu)  # the reader's own count
    assert mine.checkpoint_layers == 30 and "estimate.note.checkpointing_partial" not in str(mine.notes)
    # too small even with it: the advice goes on from checkpointing (never suggests what auto already did)
    small = E.estimate(d, cfg, on.total / E.GB * 0.9)
    assert small.checkpointing and small.checkpoint_layers is None and small.total == on.total
    assert not small.fits and "training.gradient_checkpointing" not in small.advice.overrides
    assert small.advice.total == E.estimate(d, cfg.with_overrides(small.advice.overrides), 80).total
    # 4-bit LoRA: on by the config alone (QLoRA), whatever the GPU; off still means off
    qlora = cfg.with_overrides({"quantization.bits": 4})
    assert E.estimate(d, qlora, 80).checkpointing and E.estimate(d, qlora).checkpointing
    assert "estimate.note.checkpointing_auto" not in [n["key"] for n in E.estimate(d, qlora, 80).notes]
    assert not E.estimate(d, qlora.with_overrides({"training.gradient_checkpointing": "off"}), 80).checkpointing


def test_auto_checkpointing_stays_off_where_it_would_not_lower_the_peak_and_advice_totals_are_what_auto_gives():
    """A full or freeze fine-tune too big for the GPU peaks in its weights, gradients and optimizer step, not in
    the activations: recomputing them would cost a third more compute for nothing. The advice's total is what
    the reader then sees, auto deciding again."""
    d = E.bundled_shape("Qwen/Qwen2.5-7B-Instruct")
    preset = RunConfig.load(str(ROOT / "assets" / "configs" / "sft_demo.yaml"))
    for method in ("full", "freeze"):
        cfg = preset.with_overrides({"adapter.method": method})
        off = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": "off"}), 24)
        on = E.estimate(d, cfg.with_overrides({"training.gradient_checkpointing": "on"}), 24)
        assert on.total >= off.total and not off.fits  # the premise: checkpointing doesn't lower this peak
        auto = E.estimate(d, cfg, 24)
        assert not auto.checkpointing and auto.total == off.total
        assert "estimate.note.checkpointing_auto" not in [n["key"] for n in auto.notes]
        assert auto.advice.total == E.estimate(d, cfg.with_overrides(auto.advice.overrides), 24).total


def test_render_names_every_part(capsys):
    text = E.render(E.estimate(mc("llama-2-7b"), run_config(training={"gradient_checkpointing": "off"}), 20), "llama-2-7b")
    assert "6,738,415,616" in text and "GB" in text
    for part in E.PARTS:
        assert E.message(f"estimate.part.{part}") in text
    assert "--set training.gradient_checkpointing=on" in text
    pasted = parse_overrides(["training.gradient_checkpointing=on"])  # YAML reads `on` as true: still the switch
    assert RunConfig().with_overrides(pasted).training.gradient_checkpointing == "on"


@pytest.mark.parametrize("lang", ["en", "ko", "ja", "zh", "ru"])
def test_render_lines_up_the_sizes_in_every_language(lang):
    """Korean, Chinese and Japanese letters take two terminal columns; long Russian labels push the column out."""
    import unicodedata

    est = E.estimate(mc("llama-2-7b"), run_config(), 20)
    lines = E.render(est, "llama-2-7b", lang).splitlines()[1:len(E.PARTS) + 2]  # the parts and the total
    starts = set()
    for line in lines:
        unit = line.index(" GB") if " GB" in line else line.index(" MB")
        before = line[:unit - 6]  # the size is right-aligned in 6 columns
        starts.add(sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before))
    assert len(starts) == 1, lines


# ---- reading config.json and the CLI ------------------------------------------------------------


def test_module_never_imports_torch():
    code = "import sys, engine.estimate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_a_partial_or_broken_config_json_is_refused_with_its_file_and_field(tmp_path, capsys):
    """They ended in `KeyError: 'num_attention_heads'` / a JSONDecodeError, exit code 1, no file named."""
    from engine.cli import main

    partial, broken = tmp_path / "partial", tmp_path / "broken"
    partial.mkdir(), broken.mkdir()
    (partial / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (broken / "config.json").write_text('{"model_type":\n')
    preset = str(ROOT / "assets" / "configs" / "sft_demo.yaml")
    for folder, said in ((partial, "has no num_attention_heads"), (broken, "can't be read as a model's config.json")):
        assert main(["estimate", preset, "--set", f"model.name_or_path={folder}", "--gpu-memory", "24"]) == 2
        err = capsys.readouterr().err
        assert said in err and str(folder / "config.json") in err and "Traceback" not in err


def test_load_model_config_sources(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(mc("tiny")))
    assert E.load_model_config(str(tmp_path))["hidden_size"] == 256
    assert E.load_model_config(str(CONFIGS / "qwen2.5-0.5b.json"))["model_type"] == "qwen2"
    demo = tmp_path / "work" / "models" / "demo"  # the demo's cached folder is read as it is, never rebuilt
    demo.mkdir(parents=True)
    (demo / "config.json").write_text(json.dumps({**mc("tiny"), "hidden_size": 96}))
    assert E.load_model_config("demo", tmp_path / "work")["hidden_size"] == 96
    with pytest.raises(E.TuneboardError) as err:
        E.load_model_config(str(tmp_path / "missing"))
    assert err.value.key == "error.model_not_found"
    with pytest.raises(E.TuneboardError) as err:
        E.load_model_config("nobody-here/no-such-model")  # HF_HUB_OFFLINE=1 and an empty cache
    assert err.value.key == "error.offline_hub"


def test_every_bundled_shape_gives_its_models_published_parameter_count():
    """assets/model_shapes.json holds what the estimate reads of well-known models' config.json; a shape typed
    wrong shows in its count. Every model the board offers and every preset's has one."""
    from board.tabs.model import COMMON_MODELS
    from engine.paths import CONFIGS as PRESETS

    ids = set()
    for shape in E._model_shapes():
        assert E.count_params(shape["config"])["total"] == shape["params"], shape["name"]
        assert E.arch(shape["config"]).exact, shape["name"]
        ids.update(m.lower() for m in shape["models"])
    assert E.count_params(E.bundled_shape("meta-llama/Llama-2-7b-hf")) == E.count_params(mc("llama-2-7b"))
    assert E.count_params(E.bundled_shape("Qwen/Qwen2.5-0.5B")) == E.count_params(mc("qwen2.5-0.5b"))
    presets = {RunConfig.load(str(p)).model.name_or_path for p in PRESETS.glob("*.yaml")} - {"demo"}
    assert presets and {m.lower() for m in [*COMMON_MODELS, *presets]} <= ids


def test_offline_a_well_known_model_is_estimated_from_its_bundled_shape(tmp_path, capsys):
    """HF_HUB_OFFLINE=1 and an empty cache: `bundled=True` (the estimate's callers) falls back to the shape, in
    any case of the id, and says so; plain reads (the start check, training) still refuse; an unknown id too."""
    from engine.cli import main

    with pytest.raises(E.TuneboardError) as err:
        E.load_model_config("meta-llama/Llama-2-7b-hf")
    assert err.value.key == "error.offline_hub"
    shape = E.load_model_config("QWEN/qwen2.5-7B-instruct", bundled=True)
    assert E.count_params(shape)["total"] == 7_615_616_512
    with pytest.raises(E.TuneboardError) as err:
        E.load_model_config("nobody-here/no-such-model", bundled=True)
    assert err.value.key == "error.offline_hub"

    assert main(["estimate", str(ROOT / "assets" / "configs" / "qlora_llama2_ko.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "meta-llama/Llama-2-7b-hf" and out["params_total"] == 6_738_415_616
    assert {"key": "estimate.note.bundled_shape", "params": {"name": "meta-llama/Llama-2-7b-hf"}} in out["notes"]
    assert main(["estimate", str(ROOT / "assets" / "configs" / "qlora_llama2_ko.yaml"), "--lang", "ko"]) == 0
    assert "Tuneboard에 내장된 모델 구조" in capsys.readouterr().out


def test_cli_estimate(tmp_path, capsys):
    from engine.cli import main

    cfg = tmp_path / "run.yaml"
    run_config(model={"name_or_path": str(CONFIGS / "llama-2-7b.json")}).save(str(cfg))
    assert main(["estimate", str(cfg), "--gpu-memory", "80", "--set", "adapter.rank=128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params_trainable"] == 319_815_680 and out["fits"] is True
    assert main(["estimate", str(cfg), "--gpu-memory", "12"]) == 0
    out = capsys.readouterr().out
    assert "does not fit in 12 GB" in out and "No GPU on this machine" not in out  # the GPU was named
    if E.local_gpu() is None:  # "fits" must not read as "fits this machine"
        assert main(["estimate", str(cfg)]) == 0 and "No GPU on this machine" in capsys.readouterr().out
    assert main(["estimate", str(cfg), "--gpu-memory", "80", "--set", "data.max_length=8192"]) == 0
    assert "longer than the model's context (4096)" in capsys.readouterr().out  # Llama-2's context
    assert main(["estimate", str(cfg), "--set", "adapter.rnk=4"]) == 2
    for bad in ("0", "-4", "nan"):  # no GPU to fit, not "the default GPU"
        with pytest.raises(SystemExit) as e:
            main(["estimate", str(cfg), "--gpu-memory", bad])
        assert e.value.code == 2 and "must be a number above 0" in capsys.readouterr().err


# ---- on a GPU: the estimate against the measured peak ----------------------------------------------

# Peaks measured on a lent NVIDIA H200 on 2026-11-26 (torch 2.11, transformers 5.24, trl 1.16, peft 0.21,
# liger-kernel 0.8.5; bench/results.jsonl and the GPU test below), with the tokens each step really held:
# (shape, overrides, micro-batch, cutoff, measured GiB). The 7B rows are the bench's c and d with packing (four
# full rows of 1,024); the 0.5B rows are the GPU test's, whose data then split into pieces and never held more
# than 2,982 tokens in a step: one packed row of 2,982 holds the same.
MEASURED_PEAKS = [
    ("llama-2-7b", {"data": {"packing": True}}, 4, 1024, 37.73),
    ("llama-2-7b", {"data": {"packing": True}, "quantization": {"bits": 4}}, 4, 1024, 36.68),
    ("qwen2.5-0.5b", {"data": {"packing": True}}, 1, 2982, 5.18),
    ("qwen2.5-0.5b", {"data": {"packing": True}, "training": {"gradient_checkpointing": True}}, 1, 2982, 1.48),
    ("qwen2.5-0.5b", {"data": {"packing": True}, "quantization": {"bits": 4}}, 1, 2982, 6.52),
    ("qwen2.5-0.5b", {"data": {"packing": True}, "adapter": {"method": "full"}}, 1, 2982, 10.44),
]


@pytest.mark.parametrize("shape,overrides,batch,cutoff,measured", MEASURED_PEAKS)
def test_estimate_within_15_percent_of_peaks_measured_on_a_gpu(shape, overrides, batch, cutoff, measured):
    data = {"stage": "pt", "model": {"name_or_path": "x"},
            "data": {"datasets": [{"path": "x.jsonl"}], "max_length": cutoff},
            "training": {"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1}}
    day = {"adapter": {"dropout": 0.05}, "training": {"gradient_checkpointing": "off"},  # the defaults of the day
           "quantization": {"upcast_norms": "on"}}
    for given in (day, overrides):
        for section, values in given.items():
            data.setdefault(section, {}).update(values)
    est = E.estimate(mc(shape), RunConfig.from_dict(data), liger=True)  # Liger ran there
    # the issue asks for 15 %; these are within 8.0 % (the checkpointed 0.5B row, -8.0 %, since the LM head's tile
    # and a recomputed layer no longer count as held at once; the 7B rows within 0.5 %), and without Liger's terms
    # the 7B rows are off by 13-16 %
    assert abs(est.allocated / E.GB / measured - 1) <= 0.10


def test_gradients_add_to_the_peak_only_when_they_outlive_a_step():
    """Full tuning, one micro-batch a step: the trainer drops the gradients after each step and backward makes
    them as it frees the activations; with accumulation they are held through the next micro-batch's forward."""
    base = {"model": {"name_or_path": "x"}, "adapter": {"method": "full"},
            "data": {"datasets": [{"path": "x.jsonl"}], "max_length": 1024}}
    one = E.estimate(mc("qwen2.5-0.5b"), RunConfig.from_dict({**base, "training": {"gradient_accumulation_steps": 1}}))
    two = E.estimate(mc("qwen2.5-0.5b"), RunConfig.from_dict({**base, "training": {"gradient_accumulation_steps": 2}}))
    assert two.gradients == 4 * two.params_trainable  # fp32 masters' gradients, all of them
    assert one.gradients == max(0, two.gradients - one.activations - one.logits)
    assert one.allocated == two.allocated - (two.gradients - one.gradients)
    assert "estimate.note.gradients_freed" in [n["key"] for n in one.notes]
    assert "estimate.note.gradients_freed" not in [n["key"] for n in two.notes]


def test_liger_keeps_less_per_layer():
    """Liger's RMSNorm keeps its 16-bit input (not an fp32 copy), its SwiGLU two tensors (not three)."""
    cfg = RunConfig.from_dict({"model": {"name_or_path": "x"}, "data": {"datasets": [{"path": "x.jsonl"}],
                               "max_length": 1024}, "training": {"per_device_train_batch_size": 4}})
    d = mc("llama-2-7b")
    plain, fused = E.estimate(d, cfg, liger=False), E.estimate(d, cfg, liger=True)
    h, inter, layers, tokens = 4096, 11008, 32, 4096
    per_layer = 2 * (4 * h - 2 * h) + 2 * inter  # two norms, one MLP tensor, in bf16 bytes per token
    assert plain.activations - fused.activations == tokens * (layers * per_layer + (4 * h - 2 * h))  # + final norm
    off = cfg.with_overrides({"training.use_liger_kernel": "off"})
    assert E.estimate(d, off).activations == plain.activations
    unknown = {**d, "model_type": "some_new_llama"}  # Liger patches only the families it knows
    assert E.estimate(unknown, cfg, liger=True).activations == E.estimate(unknown, cfg, liger=False).activations


GPU_CASES = {
    "lora": {},
    "lora-ckpt": {"training": {"gradient_checkpointing": True}},
    "qlora": {"quantization": {"bits": 4}},  # checkpointing: auto turns it on for 4-bit
    "qlora-no-ckpt": {"quantization": {"bits": 4}, "training": {"gradient_checkpointing": "off"}},
    "dora-eager": {"adapter": {"use_dora": True}, "model": {"attn_implementation": "eager"}},
    "full": {"adapter": {"method": "full"}},
}


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_estimate_within_15_percent_of_measured_peak(tmp_path, case):
    """A random-init Qwen2.5-0.5B trained by the engine for 3 steps on full-length rows (the worst case)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_train

    from engine.train import run_training

    d = mc("qwen2.5-0.5b")
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**d, "pad_token_id": 0, "eos_token_id": 1}),
                                                 dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "model")
    bench_train.word_tokenizer(d["vocab_size"]).save_pretrained(tmp_path / "model")
    del model
    seq, rows = 1024, 4
    with open(tmp_path / "rows.jsonl", "w") as f:
        for i in range(rows * 4):  # every row exactly the cutoff (its words + eos), the worst case the estimate takes
            ids = [bench_train.FIRST_WORD + (i * 7 + j) % 5000 for j in range(seq - 1)]
            f.write(json.dumps({"text": bench_train.text_of(ids, d["vocab_size"])}) + "\n")
    data = {"stage": "pt", "model": {"name_or_path": str(tmp_path / "model")},
            "data": {"datasets": [{"path": str(tmp_path / "rows.jsonl")}], "max_length": seq},
            "training": {"max_steps": 3, "per_device_train_batch_size": rows,
                         "gradient_accumulation_steps": 2}}  # a step's gradients live through the next forward
    for section, values in GPU_CASES[case].items():
        data.setdefault(section, {}).update(values)
    cfg = RunConfig.from_dict(data)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run_training(cfg, tmp_path / "run", workdir=tmp_path)
    measured = torch.cuda.max_memory_allocated()
    est = E.estimate(d, cfg).allocated
    print(f"{case}: measured {measured / E.GB:.2f} GB, estimated {est / E.GB:.2f} GB ({est / measured - 1:+.1%})")
    assert abs(est / measured - 1) <= 0.15


def test_an_unreachable_hub_is_told_at_once_from_the_cache(monkeypatch):
    """huggingface_hub retries an unreachable host for ~20 s: the estimate asks only the cache then."""
    import socket

    import huggingface_hub

    from engine.messages import TuneboardError

    asked = {}

    def download(repo, name, revision=None, local_files_only=False):
        asked["local_files_only"] = local_files_only
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("unreachable")))
    assert E.hub_reachable() is False
    with pytest.raises(TuneboardError) as e:
        E.load_model_config("some-org/some-model")
    assert e.value.key == "error.offline_hub" and asked["local_files_only"] is True

    class Socket:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Socket())
    assert E.hub_reachable() is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert E.hub_reachable() is False
