"""SFT and plain-text pretraining: build trl's SFTTrainer from a RunConfig, nothing else."""

from __future__ import annotations

from .config import RunConfig
from .model import Resolved


def build(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, res: Resolved, args: dict, callbacks: list):
    from trl import SFTConfig, SFTTrainer

    conversational = "messages" in train_ds.column_names
    sft_args = SFTConfig(
        **args,
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
        packing_strategy="bfd",  # best-fit decreasing; position ids restart per sample, so no cross-talk
        padding_free=padding_free(cfg, res),
        assistant_only_loss=cfg.data.assistant_only_loss and conversational and cfg.stage == "sft",
        dataset_text_field="text",
        dataset_num_proc=None,
    )
    return SFTTrainer(model=model, args=sft_args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)


def padding_free(cfg: RunConfig, res: Resolved) -> bool:
    """Padding-free batches need packing (trl enforces max_length only then) and a varlen-aware kernel."""
    mode = cfg.training.padding_free
    if mode == "off" or not cfg.data.packing:
        return False
    if mode == "on":
        return True
    return res.device == "cuda" and res.attn_implementation == "flash_attention_2"
