"""trl's SFT metrics (entropy, token accuracy, tokens seen) kept on the device until the trainer logs.

trl's `SFTTrainer.compute_loss` reads four numbers back from the GPU after each micro-batch's forward, before its
backward: whether any token was scored, the entropy and accuracy sums, and the batch's token count. Each read
waits for the forward to finish, and the GPU then idles while the host goes on to start the backward, with no
work queued ahead of it. Here the micro-batch's sums stay on the device (the token count of a padding-free batch
is its length, known on the host: `callbacks.TokenCount`) and are read together when a step is logged, where the trainer reads the loss
back anyway: one read a logged step instead of four a micro-batch, the same numbers in the same log.

The loss is trl's, computed as its plain path computes it (the fused LM head's log-probabilities, summed and
divided by the tokens of the whole step). Anything else goes to trl's own `compute_loss`: evaluation, a loss
function or label smoothing of the user's, a mixture of experts' auxiliary loss, several processes.
"""

from __future__ import annotations

import functools


def install(trainer) -> bool:
    """Route `trainer`'s (a trl `SFTTrainer`'s) training loss through `_compute_loss` where its path is the plain
    one; returns whether it did."""
    if not plain(trainer):
        return False
    trainer._tb_pending = Pending()
    trainer.compute_loss = functools.partial(_compute_loss, trainer, trainer.compute_loss)
    trainer.log = functools.partial(_log, trainer, trainer.log)
    return True


def plain(trainer) -> bool:
    """trl's compute_loss takes its plain branch, which `_compute_loss` repeats: no user loss, no label smoothing,
    no auxiliary loss, one process, nll or dft."""
    args = trainer.args
    return (getattr(trainer, "compute_loss_func", None) is None and getattr(trainer, "label_smoother", None) is None
            and not getattr(trainer, "aux_loss_enabled", True) and trainer.accelerator.num_processes == 1
            and getattr(args, "loss_type", None) in ("nll", "dft") and hasattr(trainer, "_metrics")
            and hasattr(trainer, "_total_train_tokens"))


class Pending:
    """Each micro-batch's (scored tokens, entropy sum, correct tokens), on the device, and its tokens, counted as
    the run's own count does (`callbacks.TokenCount`: a padded batch's mask summed on the device)."""

    def __init__(self):
        from .callbacks import TokenCount

        self.sums: list = []
        self.tokens = TokenCount()

    def add(self, valid, entropy, correct, inputs) -> None:
        self.sums.append((valid, entropy, correct))
        self.tokens.add(inputs)

    def read(self) -> tuple[list[tuple[float, float]], int]:
        """Per micro-batch (entropy, accuracy) as trl computes them, and the tokens: one read from the device."""
        import torch

        from .callbacks import TokenCount

        per_batch, tokens, device = [], self.tokens.host, self.tokens.device
        if self.sums or device is not None:
            parts = []
            if self.sums:  # trl: (sum / valid).item() if valid > 0 else 0.0, the ratio on the device in fp32
                valid = torch.stack([v for v, _, _ in self.sums]).float()
                sums = torch.stack([torch.stack([e.float(), c.float()]) for _, e, c in self.sums])
                ratios = torch.where(valid[:, None] > 0, sums / valid.clamp(min=1)[:, None], 0.0)
                parts.append(ratios.flatten().double())
            if device is not None:
                parts.append(device.reshape(1).double())  # exact past 2**24
            values = torch.cat(parts).tolist()  # at a log step, where the trainer reads the loss back too
            per_batch = [(values[2 * i], values[2 * i + 1]) for i in range(len(self.sums))]
            tokens += int(values[-1]) if device is not None else 0
        self.sums, self.tokens = [], TokenCount()
        return per_batch, tokens


def _compute_loss(trainer, original, model, inputs, return_outputs=False, num_items_in_batch=None):
    if return_outputs or not trainer.model.training:
        return original(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
    import torch

    inputs["use_cache"] = False
    outputs = model(**inputs, fused_lm_head=True)
    per_token_loss = -outputs.log_probs  # zero on ignored positions
    if trainer.args.loss_type == "dft":
        per_token_loss = per_token_loss * outputs.log_probs.exp().detach()
    num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
    loss = per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
    with torch.no_grad():
        trainer._tb_pending.add(outputs.label_mask.sum(), outputs.entropy.detach().sum(), outputs.is_top1.sum(),
                                inputs)
    return loss


def _log(trainer, original, logs, start_time=None):
    if trainer.model.training:
        flush(trainer)
    return original(logs, start_time)


def flush(trainer) -> None:
    """Put what is pending into trl's metrics, as its compute_loss would have, micro-batch by micro-batch."""
    per_batch, tokens = trainer._tb_pending.read()
    metrics = trainer._metrics["train"]
    for entropy, accuracy in per_batch:
        metrics["entropy"].append(entropy)
        metrics["mean_token_accuracy"].append(accuracy)
    trainer._total_train_tokens += tokens // getattr(trainer, "_tp_size", 1)
    metrics["num_tokens"] = [trainer._total_train_tokens]
