"""A TrainerCallback that turns the trainer's logs into typed events, and honours a stop request."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Optional

from transformers import TrainerCallback

from .events import CheckpointSaved, Evaluation, LogStep, Progress

_STANDARD = {"loss", "learning_rate", "grad_norm", "epoch", "total_flos", "num_tokens", "num_input_tokens_seen"}


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def memory_gb() -> Optional[float]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    try:  # CPU: the process's resident memory
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return None


class EventCallback(TrainerCallback):
    def __init__(self, emit: Callable, should_stop: Callable[[], bool] | None = None):
        self.emit, self.should_stop = emit, should_stop or (lambda: False)
        self.t0 = self.t_log = time.time()
        self.start_step = 0
        self.tokens_log = 0
        self.stopped = False

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.t_log = time.time()
        self.start_step = state.global_step
        self.tokens_log = state.num_input_tokens_seen or 0

    def on_step_end(self, args, state, control, **kw):
        elapsed = time.time() - self.t0
        done = state.global_step - self.start_step
        left = state.max_steps - state.global_step
        eta = elapsed / done * left if done > 0 else None
        self.emit(Progress(step=state.global_step, total_steps=state.max_steps, elapsed_seconds=elapsed, eta_seconds=eta))
        if not self.stopped and self.should_stop():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a stopped run keeps a checkpoint of where it got to
        return control

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        if any(k.startswith("eval_") for k in logs):
            return  # reported by on_evaluate
        if "loss" not in logs and not any("/" in k for k in logs):
            return  # the end-of-training summary: reported with Finished
        # throughput over the last logging interval: what the GPU does now, not a run-long average
        now, seen = time.time(), state.num_input_tokens_seen or 0
        elapsed, tokens = max(now - self.t_log, 1e-9), seen - self.tokens_log
        self.t_log, self.tokens_log = now, seen
        self.emit(LogStep(
            step=state.global_step, loss=_num(logs.get("loss")), learning_rate=_num(logs.get("learning_rate")),
            grad_norm=_num(logs.get("grad_norm")), epoch=_num(logs.get("epoch")),
            tokens_per_second=tokens / elapsed if tokens else None, memory_gb=memory_gb(),
            metrics={k: f for k, v in logs.items() if k not in _STANDARD and (f := _num(v)) is not None},
        ))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        clean = {k.removeprefix("eval_"): f for k, v in (metrics or {}).items() if (f := _num(v)) is not None}
        if "loss" in clean and not any(k.startswith("rewards/") for k in clean):  # DPO loss is no NLL
            clean["perplexity"] = math.exp(min(clean["loss"], 50))
        self.emit(Evaluation(step=state.global_step, metrics=clean))

    def on_save(self, args, state, control, **kw):
        from pathlib import Path

        self.emit(CheckpointSaved(step=state.global_step,
                                  path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}")))


def trim_checkpointing(model, n: int | None = None) -> tuple[int, int]:
    """After transformers has turned checkpointing on in every decoder layer (and made the embeddings' output
    require a gradient, which only reentrant checkpointing needs; ours is not): the embeddings' output goes back
    to needing none, as without checkpointing, so backward stops where training starts: at the first layer's
    own weights for LoRA (not its input), at the first trained layer for freeze tuning (not through every frozen
    one below it, whose checkpointing is turned off too). Of the layers from the first with a trainable parameter
    on, the first `n` (None: all) keep checkpointing and the rest keep their activations (a per-layer flag).
    Returns (recomputing, of the layers gradients flow through)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    embeddings = model.get_input_embeddings()
    if not any(p.requires_grad for p in embeddings.parameters()) \
            and _no_gradient not in embeddings._forward_hooks.values():
        embeddings.register_forward_hook(_no_gradient)  # after transformers' and peft's (each may add one)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    first = next((i for i, m in enumerate(layers) if any(p.requires_grad for p in m.parameters())), len(layers))
    for m in layers[:first]:
        m.gradient_checkpointing = False
    flowing = layers[first:]
    for m in flowing[n or len(flowing):]:
        m.gradient_checkpointing = False
    return sum(m.gradient_checkpointing for m in flowing), len(flowing)


def _no_gradient(module, inputs, output):
    return output.detach()  # embeddings with nothing to train (a LoRA on them trains): no gradient to carry


class TrimCheckpointing(TrainerCallback):
    """`trim_checkpointing` when training begins, after the trainer has turned checkpointing on in every layer
    (it does so at the start of `train()`, a resume included). `n`: `training.checkpoint_layers`."""

    def __init__(self, n: int | None):
        self.n = n

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            trim_checkpointing(model, self.n)
