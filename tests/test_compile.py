"""training.compile: every decoder layer compiled by torch.compile (engine/compiled.py), as one graph that the
layers share (and one for the first, whose input needs no gradient), through the path a GPU run takes: packed
rows, the `varlen` kernel, the fused LoRA branch.

PyTorch's varlen kernel runs on CUDA only, so these tests give its op a CPU kernel of their own (per-sample
attention, forward and backward) and let `engine.attention` call it on CPU: the compiler then traces exactly
what it traces on a GPU, the op included. A graph break (a call the compiler can't trace) shows in the run's
`compile_stats`; on an H200 one such call (`importlib.util.find_spec`, per layer) split each layer into 8 graphs.
"""

import importlib.util
import json

import pytest
from world import logged_losses, tiny_sft_config, train_run

from engine import attention
from engine.config import RunConfig, compile_choice


def _cpu_varlen_kernels():
    """CPU kernels for `torch_attn::_varlen_attn` (the engine's per-sample reference) and its backward (causal
    attention's gradients within each sample, written out: autograd does not run below the op)."""
    import torch

    def blocks(q, k, v, cu):
        bounds = cu.tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rep = q.shape[1] // k.shape[1]
            yield a, b, q[a:b].transpose(0, 1).float(), *(t[a:b].transpose(0, 1).float().repeat_interleave(rep, 0)
                                                           for t in (k, v))

    def probs(qs, ks, scale):
        n = qs.shape[1]
        s = (qs @ ks.transpose(1, 2)) * (scale if scale is not None else qs.shape[-1] ** -0.5)
        return s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)

    def forward(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, *rest):
        out = attention._per_sample(query, key, value, cu_seq_q, scale, 0.0, None)  # the engine's own reference
        lse = torch.zeros(query.shape[1], query.shape[0], dtype=torch.float32)
        return out, lse, torch.zeros(2, dtype=torch.uint64)

    def backward(grad_out, query, key, value, out, lse, cu_seq_q, cu_seq_k, max_q, max_k, is_causal, rng_state,
                 scale=None, *rest):
        grads = [torch.zeros_like(t, dtype=torch.float32) for t in (query, key, value)]
        heads, kv_heads = query.shape[1], key.shape[1]
        sc = scale if scale is not None else query.shape[-1] ** -0.5
        for a, b, qs, ks, vs in blocks(query, key, value, cu_seq_q):
            p = probs(qs, ks, scale)
            go = grad_out[a:b].transpose(0, 1).float()
            dp = go @ vs.transpose(1, 2)
            ds = p * (dp - (dp * p).sum(-1, keepdim=True))
            n = b - a
            grads[0][a:b] = (ds @ ks * sc).transpose(0, 1)
            for g, part in ((grads[1], ds.transpose(1, 2) @ qs * sc), (grads[2], p.transpose(1, 2) @ go)):
                g[a:b] = part.view(kv_heads, heads // kv_heads, n, -1).sum(1).transpose(0, 1)
        return tuple(g.to(t.dtype) for g, t in zip(grads, (query, key, value), strict=True))

    return forward, backward


@pytest.fixture
def varlen_on_cpu(monkeypatch):
    """`engine.attention` runs PyTorch's varlen op on CPU, through the kernels above; a look-up count of its
    module (`find_spec`), which must happen once, at load, and never inside a compiled layer."""
    import torch

    if not attention._has_kernel():
        pytest.skip("this torch has no torch.nn.attention.varlen")
    lib = torch.library.Library("torch_attn", "IMPL")
    forward, backward = _cpu_varlen_kernels()
    lib.impl("_varlen_attn", forward, "CPU")
    lib.impl("_varlen_attn_backward", backward, "CPU")
    monkeypatch.setattr(attention, "KERNEL_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(attention, "_FOUND", {})
    lookups = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: lookups.append(name) or real(name, *a))
    yield lookups
    lib._destroy()


def _packed(**training) -> dict:
    cfg = tiny_sft_config(**{"max_steps": 6, **training})
    cfg["data"]["packing"] = True
    cfg["model"] = {"attn_implementation": "varlen", "precision": "bf16"}  # a bf16 model: the kernel's dtype
    return cfg


@pytest.mark.parametrize("checkpointing", ["off", "on"])
def test_compiled_layers_share_one_graph_and_train_like_the_eager_ones(workdir, demo_model, varlen_on_cpu, checkpointing):
    eager = train_run(workdir, _packed(compile="off", gradient_checkpointing=checkpointing))
    varlen_on_cpu.clear()
    compiled = train_run(workdir, _packed(compile="on", gradient_checkpointing=checkpointing))
    resolved = json.loads((compiled / "resolved.json").read_text())
    assert resolved["compile"] and resolved["attn_implementation"] == "varlen" and resolved["packing"]
    assert resolved["fused_lora"]
    # one graph for every layer but the first (whose input, the frozen embeddings', needs no gradient: a graph of
    # its own), nothing left out of them, on steps of different token counts
    assert resolved["compile_stats"] == {"graphs": 2, "graph_breaks": 0, "failed_frames": 0}
    assert varlen_on_cpu.count("torch.nn.attention.varlen") <= 1  # looked up at load, not per layer
    # bf16: the compiler fuses and rounds differently (measured: 0.1 % apart at most), the loss falls alike
    assert logged_losses(compiled) == pytest.approx(logged_losses(eager), rel=5e-3)
    assert logged_losses(compiled)[-1] < logged_losses(compiled)[0]
    assert not json.loads((eager / "resolved.json").read_text())["compile"]


def test_compiled_qlora_layers_share_one_graph_too(workdir, demo_model, varlen_on_cpu):
    """QLoRA (bitsandbytes' 4-bit layers, checkpointed) through the same packed varlen path: one graph the layers
    share (and the first's), no break, and it learns. auto leaves 4-bit eager: on an H200 its compiled 7B run had not finished in 150 s (2026-11-27,
    bench/README.md), while here, and in torch 2.11, the same path compiles as one graph."""
    pytest.importorskip("bitsandbytes")
    cfg = _packed(compile="on", gradient_checkpointing="on")
    cfg["quantization"] = {"bits": 4}
    run = train_run(workdir, cfg)
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["compile"] and resolved["compile_stats"] == {"graphs": 2, "graph_breaks": 0, "failed_frames": 0}
    losses = logged_losses(run)
    assert losses[-1] < 0.7 * losses[0]


def test_compiled_run_saves_an_adapter_plain_peft_reloads(workdir, demo_model, varlen_on_cpu):
    """The compiled modules stay the model's own: the adapter's keys are peft's, and it changes the output."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = train_run(workdir, _packed(compile="on", max_steps=3))
    base = AutoModelForCausalLM.from_pretrained(str(demo_model))
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, str(run / "adapter"))
    assert not any("_orig_mod" in k for k in tuned.state_dict())
    assert not torch.allclose(tuned(ids).logits, before)


def test_auto_compiles_16_bit_lora_on_a_gpu_only(monkeypatch):
    """auto is on where a GPU run measured the compiled layers faster (LoRA on a 16-bit base, bench/README.md);
    not on a CPU, a quantized base, DoRA, full fine-tuning, the demo model (a second of training) or where Triton
    can't build kernels (nothing would compile), unless asked for."""
    import shutil

    real, triton, cc = importlib.util.find_spec, [True], ["/usr/bin/gcc"]  # a GPU build of torch ships Triton
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (triton[0] or None) if name == "triton" else real(name, *a))
    monkeypatch.setattr(shutil, "which", lambda name, *a: cc[0] if name == "gcc" else None)
    monkeypatch.delenv("CC", raising=False)
    cfg = RunConfig().with_overrides({"model.name_or_path": "meta-llama/Llama-2-7b-hf"})
    assert cfg.training.compile == "auto" and cfg.adapter.method == "lora" and not cfg.quantization.bits
    assert compile_choice(cfg, cuda=True) and not compile_choice(cfg, cuda=False)
    for other in ({"quantization.bits": 4}, {"quantization.bits": 8}, {"adapter.method": "full"}, {"adapter.use_dora": True},
                  {"training.compile": "off"}, {"model.name_or_path": "demo"}):
        assert not compile_choice(cfg.with_overrides(other), cuda=True), other
    on = cfg.with_overrides({"training.compile": "on", "quantization.bits": 4})
    assert compile_choice(on, cuda=True) and compile_choice(on, cuda=False)
    cc[0] = None  # Triton builds each kernel's launcher with a C compiler: a slim image may have none
    assert not compile_choice(cfg, cuda=True) and compile_choice(on, cuda=True)
    monkeypatch.setenv("CC", "/opt/cc")
    assert compile_choice(cfg, cuda=True)
    triton[0] = False  # a Windows torch, say
    assert not compile_choice(cfg, cuda=True) and compile_choice(on, cuda=True)


def test_the_log_names_compiled_layers_not_liger_which_then_patches_nothing():
    from engine.model import Resolved
    from engine.train import run_choices

    res = Resolved(path="x", device="cuda", precision="bf16", attn_implementation="varlen", chat_template="",
                   optim="adamw_torch_fused", liger=True, fused_lora=True, compile=True)
    assert "compiled layers" in run_choices(res) and "Liger kernels" not in run_choices(res)
    res.compile = False
    assert "Liger kernels" in run_choices(res) and "compiled layers" not in run_choices(res)
    # a QLoRA run says it is one: the start line told precision and attention, never the 4-bit base
    assert run_choices(res, 4)[0] == "QLoRA on a 4-bit NF4 base" and run_choices(res, 8)[0] == "an 8-bit base"
    assert not any("bit" in c for c in run_choices(res, 0))
