"""Regional compilation (`training.compile`): every decoder layer compiled in place by torch.compile.

Why: on a GPU a LoRA step of a 7B model launches thousands of small operations from Python (peft's layers,
transformers' decoder, each norm, rotary and activation), and the host, not the GPU, sets the pace. Profiled on
an H200 (2026-11-27, `bench/profiles/`), the default packed 4,096-token step kept the GPU's kernels busy
135 ms of its 287 ms. Compiled, a layer is one graph: its norms, activations and additions fused into a few
kernels, and its Python run once, when traced: the same step ran 1.13x faster there (44.4 % MFU against
39.2 %). `compile_choice` says where auto turns it on: LoRA on a 16-bit base on a GPU.

The layers share one graph: they are alike (`inline_inbuilt_nn_modules`: their weights are the
graph's inputs), so only the first one waits for the compiler. Shapes are dynamic from the start, since
packed steps hold different token counts. Graph variants come from train / eval, checkpointed or not,
adapters on / off (DPO's reference pass), and, with LoRA, the first layer, whose input (the frozen
embeddings') needs no gradient: a few, well under `RECOMPILE_LIMIT`. That layer was once left eager to save
its graph's compile (seconds); but it is the first thing each step runs, often right after the host waited
on the GPU (a loss read back to log it), and eager, without Liger's kernels (below), its Python takes about
twice its GPU time (profiled eager on an H200: 287 ms of host time a 7B step, 135 ms of kernels), which the
GPU spends idle.

Liger's kernels inside the layers (RMSNorm, SwiGLU, RoPE) are left out where the layers compile: the compiler
fuses those itself. (Its linear + cross-entropy is off anyway: trl's own chunked LM head computes the loss.)
"""

from __future__ import annotations

RECOMPILE_LIMIT = 16  # graph variants of the layer before the compiler gives up on it (torch's default: 8)
LIGER_IN_LAYERS_OFF = {"rope": False, "rms_norm": False, "swiglu": False, "geglu": False, "layer_norm": False}


def compile_layers(model) -> int:
    """Compile every decoder layer of `model` (a peft model or a transformers one) in place: the
    modules, their names and their weights stay as they are, so saving and reloading are unchanged. Returns how
    many were compiled."""
    import torch

    from .adapters import decoder_layers

    torch._dynamo.reset()  # this run's graphs and counts only (a process may have trained before: tests)
    torch._dynamo.utils.counters.clear()
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.suppress_errors = True  # a layer the compiler fails on runs uncompiled instead of ending the run
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def stats() -> dict:
    """What the compiler did since `compile_layers`: graphs traced, graph breaks, frames it failed on."""
    from torch._dynamo.utils import counters

    out = {"graphs": int(counters["stats"].get("unique_graphs", 0)),
           "graph_breaks": int(sum(counters["graph_break"].values())),
           "failed_frames": int(counters["frames"].get("total", 0) - counters["frames"].get("ok", 0))}
    if counters["graph_break"]:  # the first line of each reason: what to fix, in the run's own record
        out["break_reasons"] = [reason.strip().splitlines()[0][:200] for reason in list(counters["graph_break"])[:5]]
    return out
