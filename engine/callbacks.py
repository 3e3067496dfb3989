"""A TrainerCallback that turns the trainer's logs into typed events, and honours a stop request."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Optional

from transformers import TrainerCallback

from .events import CheckpointSaved, Evaluation, LogStep, Progress, Warning
from .messages import message

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


class TokenCount:
    """Tokens trained on, padding left out, counted from each micro-batch and read only where a step is logged (the
    log reads the loss from the GPU then anyway). transformers' own count (`include_num_input_tokens_seen`) reads
    each micro-batch's from the GPU right after its backward: a sync that left the GPU idle while the host then
    prepared the optimizer's step and the next batch."""

    def __init__(self):
        self.host, self.device = 0, None

    def add(self, inputs) -> None:
        mask = inputs.get("attention_mask")
        if mask is not None and hasattr(mask, "sum"):  # padded rows: summed where they are, read later
            self.device = mask.sum() if self.device is None else self.device + mask.sum()
        elif hasattr(ids := inputs.get("input_ids"), "numel"):  # padding-free (packed) rows: every token is real
            self.host += ids.numel()

    def total(self) -> int:
        if self.device is not None:
            self.host, self.device = self.host + int(self.device.item()), None
        return self.host


def count_tokens(trainer, tokens: TokenCount) -> None:
    """Feed `tokens` every micro-batch the trainer trains on: from `floating_point_ops`, which it calls with each."""
    flops = trainer.floating_point_ops

    def floating_point_ops(inputs):
        tokens.add(inputs)
        return flops(inputs)

    trainer.floating_point_ops = floating_point_ops


STUCK_LOGS = 3  # logged steps in a row whose gradient is exactly zero before the run says nothing is learning


class EventCallback(TrainerCallback):
    def __init__(self, emit: Callable, should_stop: Callable[[], bool] | None = None,
                 gone: Callable[[], bool] | None = None):
        self.emit, self.should_stop = emit, should_stop or (lambda: False)
        self.gone = gone or (lambda: False)  # the run's folder was deleted under it
        self.deleted = False
        self.t0 = self.t_log = time.time()
        self.start_step = 0
        self.tokens = TokenCount()  # fed by `count_tokens`
        self.tokens_log = 0
        self.stopped = False
        self.diverged: tuple[int, float] | None = None  # (step, loss) where the loss stopped being a number
        self.flat = 0  # logged steps in a row with no gradient at all; told once (`STUCK_LOGS`)

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.t_log = time.time()
        self.start_step = state.global_step
        self.tokens_log = self.tokens.total()

    def on_step_end(self, args, state, control, **kw):
        elapsed = time.time() - self.t0
        done = state.global_step - self.start_step
        left = state.max_steps - state.global_step
        eta = elapsed / done * left if done > 0 else None
        self.emit(Progress(step=state.global_step, total_steps=state.max_steps, elapsed_seconds=elapsed, eta_seconds=eta))
        if not self.deleted and self.gone():  # deleted from outside: end, and write nothing back into its place
            self.deleted = True
            control.should_training_stop, control.should_save, control.should_evaluate = True, False, False
            return control
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
        loss = logs.get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss) and self.diverged is None:
            # the trainer logs a step's loss as it is (`logging_nan_inf_filter` off): NaN or inf means the weights
            # are lost too, so the run stops here, and saves nothing of them (the engine then fails it, saying so)
            self.diverged = (state.global_step, float(loss))
            control.should_training_stop, control.should_save, control.should_evaluate = True, False, False
        grad = logs.get("grad_norm")
        self.flat = self.flat + 1 if isinstance(grad, (int, float)) and grad == 0 and state.global_step > 1 else 0
        if self.flat == STUCK_LOGS:  # nothing learns any more: a learning rate far too high collapses a model so
            params = {"step": state.global_step, "loss": f"{loss:.4g}" if isinstance(loss, (int, float)) else "-",
                      "lr": f"{_num(logs.get('learning_rate')) or 0:.3g}"}
            self.emit(Warning(key="warning.no_gradient", params=params, message=message("warning.no_gradient", params)))
        # throughput over the last logging interval: what the GPU does now, not a run-long average
        now, seen = time.time(), self.tokens.total()
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


class ResumedLearningRate(TrainerCallback):
    """A resumed run trains at the learning rate its config says now. The trainer restores the optimizer's and
    the schedule's state from the checkpoint, peak learning rate included, so a rate changed for the resume
    (the config then says one rate while the steps ran at another) would otherwise be ignored. The schedule's
    shape (kind, warmup, length) is the new config's, and the first resumed step trains at its rate too: the
    optimizer came back holding the old schedule's rate for that step (a run extended from 15 to 30 steps took
    its 11th step at the 15-step schedule's rate)."""

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kw):
        lr_scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper, where there is one
        if state.global_step == 0 or optimizer is None or lr_scheduler is None:
            return
        bases = getattr(lr_scheduler, "base_lrs", None)
        ratio = 1.0
        if bases and bases[0] and not math.isclose(bases[0], args.learning_rate, rel_tol=1e-9):
            ratio = args.learning_rate / bases[0]  # every group alike: their rates keep their proportions
            lr_scheduler.base_lrs = [b * ratio for b in bases]
            for group in optimizer.param_groups:
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
        lambdas = getattr(lr_scheduler, "lr_lambdas", None)  # transformers' schedules are LambdaLR
        if lambdas and len(lambdas) == len(optimizer.param_groups):
            now = [base * f(lr_scheduler.last_epoch) for base, f in zip(lr_scheduler.base_lrs, lambdas, strict=True)]
        else:
            now = [group["lr"] * ratio for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, now, strict=True):
            group["lr"] = lr
        lr_scheduler._last_lr = list(now)
