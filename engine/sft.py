"""SFT and plain-text pretraining: build trl's SFTTrainer from a RunConfig, nothing else."""

from __future__ import annotations

import os

from . import lazy_metrics
from .config import RunConfig
from .model import Resolved
from .prepare import Prepared, prepare

PARALLEL_ROWS = 20_000  # below this, worker processes cost more to start than they save


def prepare_data(tokenizer, train_ds, eval_ds, cfg: RunConfig, packing: bool) -> tuple[Prepared, Prepared | None]:
    """Token ids and labels, cut to the cutoff and packed if `packing` (the resolved choice, `Resolved.packing`,
    which `build` follows too), ready for `build`."""
    kw = dict(answers_only=cfg.data.assistant_only_loss and cfg.stage == "sft", max_length=cfg.data.max_length,
              packing=packing)
    train = prepare(train_ds, tokenizer, num_proc=num_proc(len(train_ds), cfg.data.num_proc), **kw)
    return train, (prepare(eval_ds, tokenizer, **kw) if eval_ds is not None else None)


def build(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, res: Resolved, args: dict, callbacks: list):
    """The trainer for datasets that `prepare_data` made."""
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    sft_args = SFTConfig(
        **args,
        max_length=cfg.data.max_length,
        packing=res.packing,  # packed rows carry seq_lengths: position ids restart per sample, no cross-talk
        padding_free=res.packing,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, callbacks=callbacks)
    if res.padding_free and not res.packing:
        # trl only goes padding-free with packing, because only then does it know rows fit max_length; here
        # `prepare_data` cut the rows to it, so flattening each batch is safe.
        trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    lazy_metrics.install(trainer)  # its metrics read back at log steps, not after every forward
    return trainer


def num_proc(rows: int, asked: int | None = None) -> int | None:
    """Tokenise in parallel on large datasets: one process per core, none for small ones."""
    if asked is not None:
        return asked if asked > 1 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 16) if rows >= PARALLEL_ROWS and cores > 1 else None
