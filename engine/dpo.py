"""Preference tuning: build trl's DPOTrainer (or KTOTrainer) from a RunConfig, nothing else.

Where the reference comes from, so that a 7B model trained through an adapter is held in memory once:
- a new LoRA / QLoRA adapter: the base with the adapter disabled (trl's `use_adapter(model, None)`);
- `adapter.init_from` (continuing e.g. an SFT run's adapter): the starting model, base + that adapter,
  frozen. trl copies a PeftModel's loaded adapter into a second, frozen adapter named "ref" and
  scores the reference with it, so DPO pulls towards the SFT model, not towards the bare base;
- full or freeze tuning: a second, frozen copy of the base, loaded by engine.model like the policy;
- ORPO and SimPO (`dpo.method`): none, their loss reads the policy alone (engine/ref_free.py).
Precision, optimizer, schedule and logging come from `args`, the TrainingArguments every stage shares.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from .config import KTO_LOSSES, REFERENCE_FREE, RunConfig
from .model import Resolved
from .sft import num_proc

REF_ADAPTER = "ref"  # the name trl gives the frozen copy of a continued adapter
_COMPLETIONS = ("chosen_ids", "rejected_ids", "completion_ids", "KL_completion_ids")


def build(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, res: Resolved, args: dict, callbacks: list):
    d = cfg.dpo
    kto_loss = _kto_loss(cfg) if d.method == "kto" else None  # refuse before loading anything more
    peft = cfg.adapter.method == "lora"
    reference_free = d.method in REFERENCE_FREE
    ref_model = None if peft or reference_free else reference_model(cfg, res)
    # trl truncates to max_length itself but then drops every row whose prompt alone fills it; our
    # collator truncates instead (see `fit`), so no row is lost without a word.
    common = dict(**args, beta=d.beta, max_length=None,
                  dataset_num_proc=num_proc(len(train_ds), cfg.data.num_proc))  # trl tokenises the pairs row by row
    if d.method == "kto":
        trainer = _kto(model, ref_model, tokenizer, train_ds, eval_ds, cfg, kto_loss, common, callbacks)
    else:
        from trl import DPOConfig, DPOTrainer
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        collator = Truncate(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id), cfg.data.max_length,
                            d.max_prompt_length, d.max_completion_length)
        shared = dict(model=model, data_collator=collator, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)
        if reference_free:
            from .ref_free import ReferenceFreeTrainer

            # with no adapter to turn off, "precomputed" reference log-probs are what keeps trl from loading a
            # reference model; the trainer precomputes nothing (its loss reads none)
            trainer = ReferenceFreeTrainer(**shared, args=DPOConfig(**common, precompute_ref_log_probs=not peft),
                                           method=d.method, gamma=d.simpo_gamma, sft_weight=d.sft_weight)
        else:
            loss_type, weights = [d.loss_type], None
            if d.sft_weight > 0:  # RPO / SFT mixing: an NLL term on the chosen answer, weighted
                loss_type, weights = [d.loss_type, "sft"], [1.0, d.sft_weight]
            dpo_args = DPOConfig(**common, loss_type=loss_type, loss_weights=weights,
                                 label_smoothing=d.label_smoothing)
            trainer = DPOTrainer(**shared, ref_model=ref_model, args=dpo_args)
    if peft:
        # (ORPO and SimPO score no reference: the frozen copy of a continued adapter goes too)
        _one_adapter_on_disk(model, continued=bool(cfg.adapter.init_from) and not reference_free)
    return trainer


def _kto_loss(cfg: RunConfig) -> str:
    """trl's KTO loss for `dpo.loss_type` (RunConfig refused the ones KTO cannot do)."""
    return KTO_LOSSES[cfg.dpo.loss_type]


def _kto(model, ref_model, tokenizer, train_ds, eval_ds, cfg: RunConfig, loss: str, common: dict, callbacks: list):
    """KTO learns from answers marked desirable or undesirable; a paired file is unpaired here."""
    from trl import KTOConfig, KTOTrainer
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    d = cfg.dpo
    train_ds = unpair(train_ds, cfg.training.seed)
    eval_ds = unpair(eval_ds, cfg.training.seed) if eval_ds is not None else None  # (unpaired files as they are)
    labels = train_ds["label"]
    kto_args = KTOConfig(**common, loss_type=loss, desirable_weight=desirable_weight(labels))
    collator = Truncate(DataCollatorForUnpairedPreference(pad_token_id=tokenizer.pad_token_id), cfg.data.max_length,
                        d.max_prompt_length, d.max_completion_length)
    advice = logging.getLogger("trl.trainer.kto_trainer")
    level = advice.level
    if all(labels) or not any(labels):  # one kind only: trl's advice on weights (which nothing balances) is noise
        advice.setLevel(logging.ERROR)
    try:
        return KTOTrainer(model=model, ref_model=ref_model, args=kto_args, data_collator=collator,
                          train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    finally:
        advice.setLevel(level)


def desirable_weight(labels: list[bool]) -> float:
    """KTO's weight on the desirable answers' loss that balances the two kinds: the KTO paper (Eq. 8) keeps
    desirable_weight x desirable / (undesirable_weight x undesirable) within [1, 4/3], and trl only advised
    it, in a message naming a setting Tuneboard does not show. 1 where the kinds are even, or one is absent
    (nothing to balance: `tuneboard check` says so)."""
    desirable = sum(bool(x) for x in labels)
    undesirable = len(labels) - desirable
    return undesirable / desirable if desirable and undesirable else 1.0


def unpair(ds, seed: int):
    """prompt/chosen/rejected -> prompt/completion/label, shuffled so each batch mixes good and bad answers.

    trl unpairs in blocks (all chosen, then all rejected) and KTO reads its data in order, which would
    make every micro-batch all-desirable or all-undesirable.
    """
    from trl.data_utils import unpair_preference_dataset

    if "chosen" in ds.column_names:  # a file of KTO's own unpaired answers is already what KTO reads
        ds = unpair_preference_dataset(ds)
    return ds.shuffle(seed=seed).flatten_indices()


def reference_model(cfg: RunConfig, res: Resolved):
    """A frozen copy of the base for full / freeze tuning, in the compute dtype (no fp32 masters needed)."""
    from . import model as model_mod

    ref = model_mod.load_model(cfg, res, for_training=False)
    ref.config.use_cache = False
    ref.requires_grad_(False)
    return ref.eval()


def _one_adapter_on_disk(model, continued: bool) -> None:
    """Keep the saved adapter folder exactly what SFT writes: the trained adapter, nothing else."""
    if REF_ADAPTER not in getattr(model, "peft_config", {}):
        return
    if not continued:
        # A new adapter starts as the identity, so trl's frozen copy of it equals "adapter disabled":
        # drop it and let the reference be the base itself, one adapter lighter.
        model.delete_adapter(REF_ADAPTER)
        return
    # The frozen copy is the reference while training; it is rebuilt from `init_from` on resume, so
    # neither checkpoints nor the result need it (peft would save it under adapter/ref/).
    model.save_pretrained = functools.partial(model.save_pretrained, selected_adapters=["default"])


@dataclass
class Truncate:
    """Fit each tokenized example to the configured lengths, then let trl's collator pad the batch."""

    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    max_length: Optional[int]
    max_prompt_length: Optional[int] = None
    max_completion_length: Optional[int] = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate([fit(e, self.max_length, self.max_prompt_length, self.max_completion_length)
                             for e in examples])


def fit(example: dict[str, Any], max_length: Optional[int], max_prompt: Optional[int] = None,
        max_completion: Optional[int] = None) -> dict[str, Any]:
    """Cut the prompt from the left (its end, the question, stays next to the answer) and the answers
    from the right. Within max_length a long answer never takes more than half from the prompt, and a
    long prompt never leaves an answer with nothing to learn from."""
    out = dict(example)
    prompt = list(example["prompt_ids"])
    keys = [k for k in _COMPLETIONS if k in example]
    answers = {k: list(example[k][:max_completion] if max_completion else example[k]) for k in keys}
    if max_prompt:
        prompt = prompt[-max_prompt:] if len(prompt) > max_prompt else prompt
    if max_length:
        longest = max((len(a) for a in answers.values()), default=0)
        if len(prompt) + longest > max_length:
            keep = min(len(prompt), max(max_length - longest, max_length // 2))
            prompt = prompt[len(prompt) - keep:]
            answers = {k: a[: max_length - len(prompt)] for k, a in answers.items()}
    out["prompt_ids"] = prompt
    out.update(answers)
    return out
