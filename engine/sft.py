"""SFT and plain-text pretraining: build trl's SFTTrainer from a RunConfig, nothing else."""

from __future__ import annotations

import os

from .config import RunConfig
from .model import Resolved

PARALLEL_ROWS = 20_000  # below this, worker processes cost more to start than they save


def build(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, res: Resolved, args: dict, callbacks: list):
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    conversational = "messages" in train_ds.column_names
    sft_args = SFTConfig(
        **args,
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
        packing_strategy="bfd",  # best-fit decreasing; position ids restart per sample, so no cross-talk
        padding_free=cfg.data.packing,
        assistant_only_loss=cfg.data.assistant_only_loss and conversational and cfg.stage == "sft",
        dataset_text_field="text",
        dataset_num_proc=num_proc(len(train_ds), cfg.data.num_proc),
    )
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, callbacks=callbacks)
    if res.padding_free and not cfg.data.packing:
        # trl only goes padding-free with packing, because only then does it know rows fit max_length; here
        # the rows were truncated when the dataset was prepared above, so flattening each batch is safe.
        trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    return trainer


def num_proc(rows: int, asked: int | None = None) -> int | None:
    """Tokenise in parallel on large datasets: one process per core, none for small ones."""
    if asked is not None:
        return asked if asked > 1 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 16) if rows >= PARALLEL_ROWS and cores > 1 else None
