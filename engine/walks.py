"""The trainer's walks over every module, done once a run instead of at every step.

transformers' `Trainer` calls `model.train()` before every micro-batch, `model.zero_grad()` after every optimizer
step and `model.parameters()` to clip the gradients: each a recursive walk through every module of the model
(~2,000 for a 24-layer LoRA model, the same for 0.5 B parameters as for 7 B), through Python generators and
`Module.__setattr__`: 6.2 + 2.8 + 2.1 ms a step on this project's 2-core CPU for a 24-layer LoRA model (0.1,
0.04 and 0.002 ms from the lists). On a GPU that is time the GPU waits for the next kernel whenever the model is
small enough for the step to be bound by Python (`bench/README.md`). Its FLOP count walks every tensor too: the
parameters are counted once (`count_parameters_once`).

While the trainer trains, the model answers those three calls from lists taken when training begins (the
modules and parameters cannot change inside the loop): `train()` walks nothing when every module is already
training, `zero_grad()` and `parameters()` go through the list. `train(False)` (evaluation), `zero_grad(False)`
and `parameters(recurse=False)` are the model's own. When training ends, the model is as it was.
"""

from __future__ import annotations

from transformers import TrainerCallback

OVERRIDES = ("train", "zero_grad", "parameters")


def walk_once(trainer) -> WalkOnce:
    """Take the trainer's per-step walks out of its loop; returns the callback, to `remove()` after training."""
    count_parameters_once(trainer)
    walks = WalkOnce(trainer)
    trainer.add_callback(walks)
    return walks


def count_parameters_once(trainer) -> None:
    """The trainer adds 6 x tokens x parameters to its FLOP count after every micro-batch and counts the
    parameters anew each time, a walk over every tensor of the model (6 % of a small model's step on a CPU):
    count them once. The same number as transformers' own `Trainer.floating_point_ops`."""
    model = trainer.model
    if not hasattr(model, "num_parameters"):
        return
    name, n = getattr(model, "main_input_name", "input_ids"), model.num_parameters(exclude_embeddings=True)
    trainer.floating_point_ops = lambda inputs: 6 * inputs[name].numel() * n if name in inputs else 0


def install(model) -> None:
    """Answer `model`'s train / zero_grad / parameters from lists taken now (see the module's docstring)."""
    cls = type(model)
    if any(name in vars(model) for name in OVERRIDES):  # already installed, or someone else's override
        return
    import torch
    from transformers import PreTrainedModel

    modules = list(model.modules())
    params = list(cls.parameters(model))
    # every module's train() only sets the flags (torch's, or transformers' which does more only on a change):
    # skipping it when nothing changes is exact (peft's DoRA layers clear a cache at every train(): walked)
    flags_only = (torch.nn.Module.train, PreTrainedModel.train)
    plain = all(type(m).train in flags_only for m in modules)

    def train(mode: bool = True):
        if mode and plain and all(m.training for m in modules):
            return model
        return cls.train(model, mode)

    def zero_grad(set_to_none: bool = True) -> None:
        if not set_to_none:
            return cls.zero_grad(model, set_to_none)
        for p in params:
            if p.grad is not None:
                p.grad = None

    def parameters(recurse: bool = True):
        return iter(params) if recurse else cls.parameters(model, recurse)

    for name, fn in zip(OVERRIDES, (train, zero_grad, parameters), strict=True):
        object.__setattr__(model, name, fn)
    object.__setattr__(model, "_tb_walks", True)


def uninstall(model) -> None:
    if vars(model).pop("_tb_walks", None):
        for name in OVERRIDES:
            vars(model).pop(name, None)


class WalkOnce(TrainerCallback):
    """Installs the lists on the trainer's model when training begins (after a checkpoint is loaded), removes
    them when it ends; `run_training` also removes them after `trainer.train()`, whatever way it ended."""

    def __init__(self, trainer):
        self.trainer = trainer

    def models(self) -> list:
        seen = []
        for m in (self.trainer.model, getattr(self.trainer, "model_wrapped", None)):
            if m is not None and hasattr(m, "modules") and all(m is not s for s in seen):
                seen.append(m)
        return seen

    def on_train_begin(self, args, state, control, **kwargs):
        for m in self.models():
            install(m)

    def on_train_end(self, args, state, control, **kwargs):
        self.remove()

    def remove(self) -> None:
        for m in self.models():
            uninstall(m)
