"""RunConfig: the one typed contract between board, engine and CLI (standard library only).

Every run the board starts is a RunConfig written to `config.yaml`, so any run can be
re-run headless with `tuneboard train config.yaml`. Validation names the bad field by its
dotted path (`training.learning_rate`) and carries a message key for translation.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

Stage = Literal["sft", "dpo", "pt"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Attention = Literal["auto", "flash_attention_2", "varlen", "sdpa", "eager"]
ChatTemplate = Literal["auto", "chatml", "llama2", "llama3", "mistral", "alpaca"]
DataFormat = Literal[
    "auto", "alpaca", "sharegpt", "messages", "prompt_completion", "preference", "unpaired", "text"
]


class ConfigError(ValueError):
    """A bad config value: `field` is the dotted path, `key`/`params` translate the reason."""

    def __init__(self, field: str, key: str, message: str, **params: Any):
        self.field, self.key, self.params = field, key, {"field": field, **params}
        super().__init__(f"{field}: {message}")


_HUB_URL = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?!datasets/|spaces/)([\w.-]+/[\w.-]+)/?(?:tree/[^?#]*)?$")


def _fail(name: str, key: str, message: str, **params: Any) -> None:
    raise ConfigError(name, key, message, **params)


MAX_EPOCHS = 10_000
MAX_STEPS = 100_000_000  # a long pretraining run takes about a million; 1e12 was taken and its ETA read in years


def _check_range(obj: Any, name: str, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    v = getattr(obj, name)
    if v is None:
        return
    if lo is not None and (v < lo or (lo_open and v == lo)):
        op = ">" if lo_open else ">="
        _fail(name, "error.config.range", f"must be {op} {lo}, got {v!r}", value=v, bound=f"{op} {lo}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        op = "<" if hi_open else "<="
        _fail(name, "error.config.range", f"must be {op} {hi}, got {v!r}", value=v, bound=f"{op} {hi}")


@dataclass
class ModelConfig:
    name_or_path: str = field(default="demo", metadata={"help": "Hugging Face id, local folder, or `demo` (tiny offline model)."})
    revision: Optional[str] = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    precision: Precision = field(default="auto", metadata={"help": "auto: bf16 on GPUs with compute capability >= 8.0, fp16 below, fp32 on CPU."})
    attn_implementation: Attention = field(default="auto", metadata={"help": "auto: flash_attention_2 when flash-attn is installed on a GPU; else varlen (PyTorch's variable-length kernel) on a GPU of compute capability 8.0+; else sdpa. A model that soft-caps its attention scores (Gemma 2) gets eager instead of varlen or sdpa, which can't cap them (asking for those is refused)."})
    chat_template: ChatTemplate = field(default="auto", metadata={"help": "auto: the tokenizer's own template, else ChatML."})
    rope_scaling: Literal["none", "linear", "dynamic", "yarn"] = field(default="none", metadata={"help": "Stretch the model's rotary positions to reach a cutoff (data.max_length) longer than its context, by the cutoff over the context rounded up: linear (position interpolation), dynamic (NTK) or yarn. Kept for chat, eval and a merged export; a model that scales its positions already keeps its own. none: positions as trained."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run Python code shipped with the model. Only for models you trust."})

    def __post_init__(self) -> None:
        # a model page's address pasted in place of its id: https://huggingface.co/Qwen/Qwen2.5-7B-Instruct
        if m := _HUB_URL.match(self.name_or_path.strip()):
            self.name_or_path = m.group(1)


@dataclass
class QuantizationConfig:
    bits: Literal[0, 4, 8] = field(default=0, metadata={"help": "0: none; 8: LLM.int8; 4: NF4 (QLoRA)."})
    quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit data type."})
    double_quant: bool = field(default=True, metadata={"help": "Quantize the quantization constants too (saves ~0.4 bit/param)."})
    upcast_norms: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Hold a quantized model's norms, embeddings and LM head in fp32 (peft's prepare_model_for_kbit_training): its hidden states then run in fp32, about twice the activations and their memory traffic. auto: on with fp16 compute (fp16's narrow range), off with bf16, as LLaMA-Factory and Unsloth train QLoRA."})


@dataclass
class AdapterConfig:
    method: Literal["lora", "freeze", "full"] = field(default="lora", metadata={"help": "lora (with 4-bit quantization: QLoRA), freeze (last N layers), full."})
    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha; usually 2*rank."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path (0: none, the fast default: a dropout keeps a mask and a copy of every adapted layer's input)."})
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "Modules to adapt, or all-linear."})
    use_dora: bool = field(default=False, metadata={"help": "DoRA: weight-decomposed LoRA."})
    use_rslora: bool = field(default=False, metadata={"help": "rsLoRA: scale by alpha/sqrt(r) instead of alpha/r."})
    loraplus_lr_ratio: float = field(default=0.0, metadata={"help": "LoRA+: the B matrices learn this many times faster than A (the paper's 16 trained faster at the same cost). 0: off. LoRA only."})
    freeze_trainable_layers: int = field(default=2, metadata={"help": "freeze: train only the last N decoder layers."})
    init_from: Optional[str] = field(default=None, metadata={"help": "Continue training this LoRA adapter (a run folder, or on the command line its id, its adapter folder or a checkpoint): an SFT run's adapter to go on with DPO, say. Its rank, alpha and modules are the adapter's own; the board lists the runs of the same base. A default system prompt it learnt with that this run does not add is said when the run starts."})

    def __post_init__(self) -> None:
        _check_range(self, "rank", 1)
        _check_range(self, "alpha", 0, lo_open=True)
        _check_range(self, "dropout", 0, 1, hi_open=True)
        _check_range(self, "freeze_trainable_layers", 1)
        _check_range(self, "loraplus_lr_ratio", 0, 1000)
        if 0 < self.loraplus_lr_ratio < 1:  # B slower than A is no LoRA+: 0.16 for 16 is the likely slip
            _fail("loraplus_lr_ratio", "error.config.loraplus_ratio",
                  f"0 (off) or at least 1 (B learns that many times faster than A), got {self.loraplus_lr_ratio}",
                  value=self.loraplus_lr_ratio)
        if not self.target_modules:
            _fail("target_modules", "error.config.required", "name at least one module, or all-linear")


# our names for a dataset's columns, every format's fields (engine.data.formats.FORMATS): a mapping's left side
COLUMN_FIELDS = ("instruction", "input", "output", "system", "history", "conversations", "messages", "tools",
                 "prompt", "completion", "chosen", "rejected", "label", "text", "answers", "human_ref_A", "human_ref_B",
                 "labels")


def _check_column_names(columns: dict[str, str], where: str = "columns") -> None:
    """A mapping's left side is one of our names: `bogus=question` was taken, and the check then listed bogus
    as a column of the file."""
    for ours in columns:
        if ours not in COLUMN_FIELDS:
            near = difflib.get_close_matches(str(ours), COLUMN_FIELDS, n=1)
            _fail(where, "error.config.unknown_column", f"{ours} is not one of our column names",
                  column=str(ours), near=near[0] if near else "output", known=", ".join(COLUMN_FIELDS))
    for theirs in dict.fromkeys(columns.values()):  # one column read as two of ours: a typo, which trains
        fields = [ours for ours, t in columns.items() if t == theirs]  # the question as its own answer, unsaid
        if len(fields) > 1:
            _fail(where, "data.column_read_twice", f"{theirs} is mapped to {', '.join(fields)}",
                  column=str(theirs), fields=", ".join(fields))


# PyYAML's usual problems in a hand-edited config, said in the reader's language (a `yaml.` term)
_YAML_PROBLEMS = [("found character '\\t'", "yaml.tab"), ("mapping values are not allowed", "yaml.colon"),
                  ("expected <block end>", "yaml.indent"), ("found unexpected end of stream", "yaml.unclosed"),
                  ("could not find expected ':'", "yaml.no_colon")]


@dataclass
class DatasetSpec:
    path: str = field(default="", metadata={"help": "File (json, jsonl, csv, parquet, txt), `demo:<name>` bundled set, or hub name."})
    format: DataFormat = field(default="auto", metadata={"help": "Detected automatically unless set."})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "Map our names to the file's, e.g. {instruction: question, output: answer}. Ours are instruction, input, output, system, history, conversations, messages, tools, prompt, completion, chosen, rejected, label, text, answers (ranked answers), human_ref_A, human_ref_B and labels (SHP-style pairs); another name is refused."})
    split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Use at most this many rows of this dataset."})

    def __post_init__(self) -> None:
        if not self.path:
            _fail("path", "error.config.required", "a dataset needs a path")
        _check_range(self, "max_samples", 1)
        _check_column_names(self.columns)


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec(path="demo:sft")], metadata={"help": "One or more datasets, merged."})
    max_length: int = field(default=1024, metadata={"help": "Cutoff in tokens: a longer conversation is cut (left out if no answer is left), a longer text split into pieces."})
    val_size: float = field(default=0.0, metadata={"help": "Validation split: a fraction (<1) or a row count (>=1)."})
    packing: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Pack samples into full rows of the cutoff; position ids restart per sample, so packed samples never see each other. auto: on where a variable-length kernel keeps them apart at no cost (flash-attn or PyTorch's varlen on a GPU, padding-free not off); off on CPU, under sdpa or eager, and for the demo model. DPO never packs."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "SFT: compute the loss on the assistant's answers only."})
    mask_history: bool = field(default=False, metadata={"help": "SFT: train on each conversation's last answer only; its earlier answers stay as context (LLaMA-Factory's mask_history). Off: every answer trains."})
    system_prompt: Optional[str] = field(default=None, metadata={"help": "Default system prompt for rows that have none."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Train on the rows without errors and leave the rows with errors out (counted and said when the run starts). Off: a file with any bad row is refused. A problem of the whole file (unreadable, unknown format, a column no row has) refuses it either way."})
    shuffle_seed: Optional[int] = field(default=None, metadata={"help": "Shuffle merged data with this seed (default: training.seed)."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes that tokenise the data (default: one per core from 20,000 rows, else 1)."})

    def __post_init__(self) -> None:
        if not self.datasets:
            _fail("datasets", "error.config.required", "at least one dataset is required")
        _check_range(self, "max_length", 8)
        _check_range(self, "val_size", 0)
        if self.val_size >= 1 and not float(self.val_size).is_integer():
            _fail("val_size", "error.config.range", f"must be a fraction below 1 or a whole row count, got {self.val_size}",
                  value=self.val_size, bound="< 1 or a whole number")
        _check_range(self, "num_proc", 1)


@dataclass
class TrainingConfig:
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the data, at most 10,000 (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: use epochs)."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate. LoRA: 1e-4..3e-4; full: 1e-5..5e-5."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Micro-batch size."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0: off)."})
    optim: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"] = field(default="auto", metadata={"help": "auto: fused AdamW on GPU, AdamW on CPU."})
    gradient_checkpointing: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Recompute each layer's activations in backward (non-reentrant): a fraction of the memory, ~30% more compute. auto: on with 8- or 4-bit quantization (QLoRA: memory is why one quantizes) and whenever the memory estimate says the run would not fit the GPU without it; off otherwise."})
    checkpoint_layers: Optional[int] = field(default=None, metadata={"help": "With gradient checkpointing, how many decoder layers recompute their activations (the first N); the others keep theirs: less recompute, more memory. Empty: all of them, or under auto, where the run would not fit without checkpointing, the fewest that let it fit the GPU with 10% to spare by the memory estimate."})
    seed: int = field(default=42, metadata={"help": "Seed for data order, init and dropout."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N steps (0: at the end only, if there is a validation split)."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: only at the end)."})
    save_total_limit: Optional[int] = field(default=3, metadata={"help": "Keep at most N checkpoints."})
    resume_from: Optional[str] = field(default=None, metadata={"help": "A run folder or checkpoint folder to resume from (`tuneboard train` goes on from it in a new run folder); `last`: the board's Resume, which goes on in the run's own folder from its last checkpoint."})
    report_to: list[str] = field(default_factory=list, metadata={"help": "Experiment trackers: tensorboard, wandb (off by default)."})
    padding_free: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Flatten each batch's rows into one, without pad tokens (positions restart per row, same loss). Packing is always padding-free; auto: on where a varlen kernel runs (flash_attention_2 or varlen on a GPU)."})
    use_liger_kernel: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Liger fused kernels for RMSNorm, SwiGLU and RoPE (pip install tuneboard[gpu]); the LM head's loss is trl's own chunked kernel, which turns Liger's linear + cross-entropy off. auto: on when installed on a GPU where Triton can build its kernels (it needs a C compiler: CC, gcc or clang); with compiled layers (training.compile) the compiler fuses these itself."})
    fused_lora: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Train LoRA's adapter branch as one autograd function that adds it in place in the second matmul, with the base matmul where that is a plain 16-bit Linear or a bitsandbytes 4-bit one (engine/lora_fused.py): peft's numbers (fp32: the loss to the bit), 40% less memory traffic for the branch. auto: on for LoRA, rsLoRA and QLoRA; DoRA, and a quantized model upcast to fp32 norms, keep peft's own."})
    compile: Literal["auto", "on", "off"] = field(default="auto", metadata={"help": "Compile each decoder layer with torch.compile, one graph that they share (engine/compiled.py): fused kernels and less Python a step. The first step waits for the compiler (seconds to a minute). auto: on for LoRA (not DoRA) on a 16-bit model on a GPU where Triton can build kernels, which takes a C compiler (a packed 7B step on an H200 ran 1.13x faster: 44 % MFU against 39 %); off for a 4-bit or 8-bit base (not yet measured to finish compiling in time), on a CPU and for the demo model."})
    neftune_noise_alpha: float = field(default=0.0, metadata={"help": "NEFTune: uniform noise on the input embeddings while training, alpha / sqrt(length x width) for each sequence (packed ones too); the paper used 5 to 15 for instruction tuning. 0: off. SFT and pretraining only."})
    dataloader_num_workers: Optional[int] = field(default=None, metadata={"help": "Data loader worker processes, which collate the next batches while the model trains on this one. Empty: 2 on a GPU (its step then does not wait for the host to collate the next batch), none on a CPU."})

    def __post_init__(self) -> None:
        _check_range(self, "learning_rate", 0, 1, lo_open=True)  # 2e4 for 2e-4: the model collapses, and "finishes"
        # 1e8 was taken and its run's ETA read in years; a small set learnt by heart takes hundreds, not 10,000
        _check_range(self, "num_train_epochs", 0, MAX_EPOCHS, lo_open=True)
        _check_range(self, "per_device_train_batch_size", 1)
        _check_range(self, "gradient_accumulation_steps", 1)
        _check_range(self, "warmup_ratio", 0, 1, hi_open=True)  # transformers reads a warmup of 1 or more as steps
        _check_range(self, "weight_decay", 0)
        _check_range(self, "max_grad_norm", 0)
        _check_range(self, "logging_steps", 1)
        _check_range(self, "eval_steps", 0)
        _check_range(self, "save_steps", 0)
        _check_range(self, "checkpoint_layers", 1)
        _check_range(self, "seed", 0, 2**32 - 1)  # what torch and numpy take: a larger one failed inside the run
        _check_range(self, "dataloader_num_workers", 0)
        _check_range(self, "neftune_noise_alpha", 0, 100)
        _check_range(self, "save_total_limit", 1)  # transformers reads 0 or less as "keep every checkpoint"
        if self.max_steps == 0 or not -1 <= self.max_steps <= MAX_STEPS:
            _fail("max_steps", "error.config.max_steps", f"must be -1 or 1 to {MAX_STEPS:,}, got {self.max_steps}",
                  value=self.max_steps, max=f"{MAX_STEPS:,}")


@dataclass
class DPOConfig:
    beta: float = field(default=0.1, metadata={"help": "DPO and KTO: strength of the pull towards the reference model. ORPO: the weight (lambda) of its odds-ratio term, 0.1 in its paper. SimPO: the scale of its reward, 2 to 10 in its paper."})
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm", "bco_pair", "apo_zero"] = field(default="sigmoid", metadata={"help": "DPO's loss: sigmoid (DPO), ipo, hinge (SLiC), robust (label-smoothed), ...; KTO: sigmoid or apo_zero. ORPO and SimPO have their own (sigmoid here)."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Robust DPO: probability a label is flipped, in [0, 0.5)."})
    sft_weight: float = field(default=0.0, metadata={"help": "Add this times the NLL of the chosen answer (RPO / SFT mixing; with SimPO, CPO-SimPO). ORPO has this term built in."})
    max_prompt_length: Optional[int] = field(default=None, metadata={"help": "Truncate prompts to this many tokens (left side)."})
    max_completion_length: Optional[int] = field(default=None, metadata={"help": "Truncate answers to this many tokens."})
    method: Literal["dpo", "kto", "orpo", "simpo"] = field(default="dpo", metadata={"help": "dpo: paired preferences against a reference model; kto: desirable/undesirable labels; orpo and simpo: pairs with no reference model (less memory, one forward a step): ORPO adds an odds-ratio term to SFT's loss, SimPO compares the answers' average log-probabilities."})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO: the reward margin the chosen answer must win by (0.5 to 1.5 in its paper)."})

    def __post_init__(self) -> None:
        _check_range(self, "beta", 0, lo_open=True)
        _check_range(self, "sft_weight", 0)
        _check_range(self, "simpo_gamma", 0)
        if not 0 <= self.label_smoothing < 0.5:
            _fail("label_smoothing", "error.config.range", f"must be in [0, 0.5), got {self.label_smoothing}", value=self.label_smoothing, bound="[0, 0.5)")


KTO_LOSSES = {"sigmoid": "kto", "apo_zero": "apo_zero_unpaired"}  # dpo.loss_type -> trl's KTO loss
REFERENCE_FREE = ("orpo", "simpo")  # dpo.method: pairs scored by the policy alone (engine/ref_free.py)


@dataclass
class GenerationConfig:
    system_prompt: Optional[str] = field(default=None, metadata={"help": "System prompt for chat."})
    max_new_tokens: int = field(default=256, metadata={"help": "Upper bound on the answer's length."})
    temperature: float = field(default=0.7, metadata={"help": "0 means greedy."})
    top_k: int = field(default=50, metadata={"help": "Sample from the k most likely tokens (0: off)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass."})
    min_p: float = field(default=0.0, metadata={"help": "Drop tokens below min_p times the top probability."})
    repetition_penalty: float = field(default=1.1, metadata={"help": ">1 discourages repeats of tokens already in the prompt or the answer, except the tokens that end an answer."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (>1 disables sampling)."})
    num_return_sequences: int = field(default=1, metadata={"help": "Answers per prompt."})
    stop: list[str] = field(default_factory=list, metadata={"help": "Stop strings."})
    seed: int = field(default=0, metadata={"help": "Same seed + settings + prompt = same answer; negative: a new one drawn each time (and recorded)."})

    def __post_init__(self) -> None:
        _check_range(self, "max_new_tokens", 1)
        _check_range(self, "temperature", 0)
        _check_range(self, "top_k", 0)
        _check_range(self, "top_p", 0, 1, lo_open=True)
        _check_range(self, "min_p", 0, 1)
        _check_range(self, "repetition_penalty", 0, lo_open=True)
        _check_range(self, "num_beams", 1)
        _check_range(self, "num_return_sequences", 1)
        _check_range(self, "seed", None, 2**32 - 1)  # what torch and numpy take; a negative seed means "draw one"
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            _fail("num_return_sequences", "error.config.return_sequences_beams",
                  "beam search returns at most one answer per beam; raise num_beams", beams=self.num_beams)
        if self.num_beams == 1 and self.num_return_sequences > 1 and self.temperature == 0:
            _fail("num_return_sequences", "error.config.return_sequences",
                  "greedy decoding returns one answer; raise num_beams or temperature")


@dataclass
class RunConfig:
    stage: Stage = field(default="sft", metadata={"help": "sft: instruction tuning; dpo: preference tuning; pt: plain-text pretraining."})
    run_name: Optional[str] = field(default=None, metadata={"help": "Prefix of the run id (default: the stage)."})
    model: ModelConfig = field(default_factory=ModelConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        if self.stage == "dpo" and [d.path for d in self.data.datasets] == ["demo:sft"]:
            # the default data (or the SFT preset's) under stage dpo: the bundled pairs, as the board's stage
            # switch does; the instructions have no rejected answers and were refused as a file never named
            self.data.datasets = [dataclasses.replace(self.data.datasets[0], path="demo:dpo")]
        if self.quantization.bits and self.adapter.method != "lora":
            _fail("quantization.bits", "error.config.quant_needs_lora",
                  "a quantized base can only be trained through LoRA (QLoRA)")
        if self.adapter.init_from and self.adapter.method != "lora":  # freeze and full train the base itself
            _fail("adapter.init_from", "error.config.init_from_lora",
                  f"continues a LoRA adapter; adapter.method is {self.adapter.method}", method=self.adapter.method)
        if self.adapter.method == "lora" and self.adapter.use_dora and self.quantization.bits == 8:
            _fail("adapter.use_dora", "error.config.dora_8bit", "DoRA does not support 8-bit bases; use 4-bit or none")
        if self.stage == "dpo" and self.training.neftune_noise_alpha:  # it would noise the reference model's view too
            _fail("training.neftune_noise_alpha", "error.config.neftune_dpo", "NEFTune is for SFT and pretraining")
        if self.stage == "dpo" and self.dpo.method in REFERENCE_FREE:  # their loss is their own
            d, name = self.dpo, self.dpo.method.upper()
            if d.loss_type != "sigmoid":
                _fail("dpo.loss_type", "error.dpo.reference_free_unsupported", f"{name} does not use loss_type",
                      method=name, option=f"loss_type: {d.loss_type}")
            if d.label_smoothing:
                _fail("dpo.label_smoothing", "error.dpo.reference_free_unsupported",
                      f"{name} does not use label_smoothing", method=name, option=f"label_smoothing: {d.label_smoothing}")
            if d.method == "orpo" and d.sft_weight:  # ORPO's loss is SFT's plus its odds-ratio term already
                _fail("dpo.sft_weight", "error.dpo.reference_free_unsupported", "ORPO has SFT mixing built in",
                      method=name, option=f"sft_weight: {d.sft_weight}")
        if self.stage == "dpo" and self.dpo.method == "kto":  # refused here, before any model is loaded
            d = self.dpo
            if d.loss_type not in KTO_LOSSES:
                _fail("dpo.loss_type", "error.dpo.kto_unsupported", f"KTO does not support loss_type {d.loss_type}",
                      option=f"loss_type: {d.loss_type}")
            if d.sft_weight > 0:
                _fail("dpo.sft_weight", "error.dpo.kto_unsupported", "KTO does not support SFT mixing",
                      option=f"sft_weight: {d.sft_weight}")
            if KTO_LOSSES[d.loss_type] == "kto" and self.training.per_device_train_batch_size < 2:
                # KTO estimates its KL term from the other answers in the same micro-batch
                _fail("training.per_device_train_batch_size", "error.dpo.kto_batch_size",
                      "KTO needs a batch size of at least 2", size=self.training.per_device_train_batch_size)

    def with_absolute_paths(self) -> RunConfig:
        """A copy whose local paths (datasets, a model folder, an adapter to continue, a checkpoint) are absolute:
        a run's config.yaml re-runs and evaluates from any folder, not only from the one it was started in."""
        from pathlib import Path

        from .demo import is_demo

        def absolute(p: Optional[str]) -> Optional[str]:
            return str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p

        data = self.to_dict()
        for spec in data["data"]["datasets"]:
            spec["path"] = absolute(spec["path"])
        if not is_demo(self.model.name_or_path) and Path(self.model.name_or_path).expanduser().is_dir():
            data["model"]["name_or_path"] = absolute(self.model.name_or_path)
        data["adapter"]["init_from"] = absolute(self.adapter.init_from)
        if self.training.resume_from != "last":
            data["training"]["resume_from"] = absolute(self.training.resume_from)
        return type(self).from_dict(data)

    def chat_generation(self) -> GenerationConfig:
        """The settings a run chats with: its own, and where they set no system prompt, the one it trained
        with (`data.system_prompt`): a model tuned under a system prompt answers as trained only under it."""
        gen = self.generation
        if gen.system_prompt is None and self.data.system_prompt and self.stage != "pt":
            gen = dataclasses.replace(gen, system_prompt=self.data.system_prompt)
        return gen

    # ---- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        return _build(cls, data or {}, "")

    def to_yaml(self) -> str:
        import yaml  # PyYAML: imported here so the module itself stays standard-library only

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> RunConfig:
        import yaml

        try:
            data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader that refuses repeated keys
        except yaml.MarkedYAMLError as e:  # one line: what and where (PyYAML's own text spans five)
            mark = e.problem_mark or e.context_mark
            problem = str(e.problem or e.context)
            said = next((key for start, key in _YAML_PROBLEMS if problem.startswith(start)), problem)
            if mark:  # said in the reader's language where PyYAML's words are known (messages._term)
                raise ConfigError("<yaml>", "error.config.yaml_at", f"not valid YAML: {problem}", error=said,
                                  line=mark.line + 1, column=mark.column + 1) from None
            raise ConfigError("<yaml>", "error.config.yaml", f"not valid YAML: {problem}", error=said) from None
        except yaml.YAMLError as e:
            raise ConfigError("<yaml>", "error.config.yaml", f"not valid YAML: {e}", error=str(e)) from None
        _check_expansion(data)
        if data is None:  # an empty file is a slip (a save that failed, the wrong file), not "all defaults"
            raise ConfigError("<yaml>", "error.config.empty", "the config is empty")
        if not isinstance(data, dict):
            raise ConfigError("<yaml>", "error.config.not_mapping", "the config must be sections of settings")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> RunConfig:
        with open(path, encoding="utf-8-sig") as f:
            try:
                text = f.read()
            except UnicodeDecodeError:  # a binary file, or a config saved in another encoding
                raise ConfigError("<yaml>", "error.config.not_text", "not a UTF-8 text file", path=path) from None
        return cls.from_yaml(text)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_yaml())

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """Return a copy with dotted-path overrides applied (`training.learning_rate` -> 1e-4)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            node, parts = data, dotted.split(".")
            for i, part in enumerate(parts[:-1]):
                if isinstance(node, list):  # `data.datasets.0.columns.text`: an entry of a list, by its index
                    node = node[_list_index(node, part, ".".join(parts[: i + 1]))]
                    continue
                if part in node and not isinstance(node[part], (dict, list)):  # `adapter.rank.x`: rank is a value
                    raise ConfigError(".".join(parts[: i + 1]), "error.config.not_a_section",
                                      f"a value, not a section ({dotted})", setting=dotted)
                if not isinstance(node.get(part), (dict, list)):
                    raise _unknown(".".join(parts[: i + 1]), part, [k for k in node if k != part])
                node = node[part]
            if isinstance(node, list):  # `data.datasets.0={path: x.jsonl}`: that entry replaced
                node[_list_index(node, parts[-1], dotted)] = value
                continue
            node[parts[-1]] = value  # an unknown leaf is refused by from_dict, with the nearest name
        return type(self).from_dict(data)


def packing_choice(cfg: RunConfig, attn: str) -> bool:
    """Whether samples are packed into full rows under attention `attn`: the engine's rule, which the estimate follows.

    auto packs where a varlen kernel keeps packed samples apart at no cost (flash-attn, or PyTorch's varlen on a
    GPU): a step then holds micro-batch x cutoff real tokens instead of micro-batch samples, and Llama-2-7B LoRA
    trained 2.8x the tokens/s packed than unpacked on an H200 (bench/README.md). Elsewhere (CPU, sdpa) a packed
    row needs a block-diagonal mask over all of it, so auto leaves samples apart; DPO pairs are never packed.
    Nor does auto pack the demo model: its presets are tuned in unpacked steps, and its ~100 short rows packed
    make a quarter of them, too few for the tiny model to learn its answers (measured on a CPU)."""
    from .demo import is_demo

    if cfg.stage == "dpo":
        return False
    if cfg.data.packing == "auto":
        return (cfg.training.padding_free != "off" and attn in ("flash_attention_2", "varlen")
                and not is_demo(cfg.model.name_or_path))
    return cfg.data.packing == "on"


def precision_choice(cfg: RunConfig, capability: tuple[int, int] | None) -> str:
    """The compute precision on a GPU of compute `capability` (None: one not named, planned as a modern one): the
    engine's rule, which the estimate follows. auto is bf16 on Ampere (8.0) or newer, else fp16."""
    if cfg.model.precision != "auto":
        return cfg.model.precision
    return "bf16" if capability is None or tuple(capability) >= (8, 0) else "fp16"


def checkpointing_choice(cfg: RunConfig) -> bool:
    """Whether activations are recomputed in backward, by the config alone: on, or auto with a quantized LoRA (one
    quantizes to save memory, and a packed 7B QLoRA step keeps ~17 GB of activations without checkpointing, ~2 GB
    with it). auto also turns it on where the estimate says the run would not fit without it: that needs the
    model's shape and the GPU, so `engine.estimate.estimate` decides it and the engine follows the estimate."""
    mode = cfg.training.gradient_checkpointing
    return mode == "on" or (mode == "auto" and bool(cfg.quantization.bits) and cfg.adapter.method == "lora")


def upcast_choice(cfg: RunConfig, precision: str) -> bool:
    """Whether a quantized LoRA model's unquantized weights go to fp32 (peft's k-bit preparation) under compute
    `precision`: the engine's rule, which the estimate follows. In fp32 it changes nothing either way."""
    mode = cfg.quantization.upcast_norms
    if not cfg.quantization.bits or cfg.adapter.method != "lora" or precision == "fp32":
        return False
    return mode == "on" or (mode == "auto" and precision == "fp16")


def fused_lora_choice(cfg: RunConfig, precision: str) -> bool:
    """Whether LoRA layers train through `engine.lora_fused` under compute `precision`: the engine's rule, which the
    estimate follows. It gives peft's numbers (to the bit in fp32), so auto is on wherever it applies: not DoRA
    (its layers add terms of their own), nor a quantized model upcast to fp32 norms (its hidden states are fp32,
    and peft's branch computes in the autocast dtype, which the fused one would not)."""
    return (cfg.training.fused_lora != "off" and cfg.adapter.method == "lora" and not cfg.adapter.use_dora
            and not upcast_choice(cfg, precision))


def compile_choice(cfg: RunConfig, cuda: bool) -> bool:
    """Whether the decoder layers train compiled (`engine.compiled`): on, or auto where a GPU run measured them
    faster: LoRA on a 16-bit base on a GPU (Llama-2-7B's packed step on an H200: 16,080 tokens/s against 14,175,
    one graph, no break; bench/README.md). Not DoRA (peft's own layers, not measured compiled), nor a quantized
    base (its compiled 7B run had not finished its first steps after 150 s there), nor a CPU, where the minute
    the compiler takes outweighs what a short run gains, nor the demo model, whose whole run is a second of GPU
    time: compiling it would take longer than training it. Nor where Triton can't build the compiler's GPU kernels
    (not installed, as in a Windows torch, or no C compiler), where every layer would fail to compile and run
    eager after all."""
    from .demo import is_demo
    from .estimate import triton_builds

    mode = cfg.training.compile
    return mode == "on" or (mode == "auto" and cuda and not cfg.quantization.bits and cfg.adapter.method == "lora"
                            and not cfg.adapter.use_dora and not is_demo(cfg.model.name_or_path) and triton_builds())


def padding_free_choice(cfg: RunConfig, attn: str) -> bool:
    """Whether batches go padding-free under attention `attn`: the engine's rule, which the estimate follows.

    Packing is always padding-free (trl's bfd); unpacked batches are when a varlen kernel keeps rows apart.
    With sdpa a flattened batch needs a block-diagonal mask over all of its tokens, which costs more
    than the padding it saves, so auto leaves padded batches padded there (and on CPU)."""
    if cfg.stage == "dpo":
        return False  # trl's DPO collator pads; its padding-free mode is disabled upstream
    if packing_choice(cfg, attn):
        return True
    mode = cfg.training.padding_free
    return mode == "on" or (mode == "auto" and attn in ("flash_attention_2", "varlen"))


def _list_index(items: list, part: str, name: str) -> int:
    """`part` of a dotted path as an index into `items`, or the range it must be in."""
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(name, "error.config.range", f"no entry {part} (0 to {len(items) - 1})", value=part,
                          bound=f"0 .. {len(items) - 1}")
    return int(part)


@functools.cache
def _strict_loader():
    """PyYAML's SafeLoader, refusing a key given twice in one mapping: YAML keeps the last, so a `training:`
    block appended to a preset silently replaced the preset's whole section."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":  # `<<` is a merge key, made to repeat
                    raise ConfigError(str(key), "error.config.duplicate_key", f"given twice, lines {seen[key]} and "
                                      f"{line}; the second would silently replace the first", first=seen[key], line=line)
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader


YAML_VALUES = 100_000  # far above any config; aliases of aliases expand past it in a few hundred bytes


def _check_expansion(data: Any) -> None:
    """Refuse YAML whose aliases expand exponentially (a "billion laughs": 9 anchors of 9 aliases each are 387
    million strings, which an error message's repr or a dump then writes out, for minutes and gigabytes). Counts
    values as they would be written, each alias in full, and stops at YAML_VALUES."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > YAML_VALUES:
            error = f"its aliases (*name) expand to more than {YAML_VALUES:,} values"
            raise ConfigError("<yaml>", "error.config.yaml", f"not valid YAML: {error}", error=error)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def config_from_args(args) -> RunConfig:
    """A CLI verb's config: the YAML file, then --data, --max-steps and --set on top (where the verb has them)."""
    cfg = RunConfig.load(args.config)
    overrides: dict[str, Any] = {}
    columns, fmt = parse_columns(getattr(args, "column", None)), getattr(args, "format", None)
    if getattr(args, "data", None) or columns or fmt:  # --column and --format: for each of --data's files, or
        datasets = ([{"path": p} for p in args.data] if getattr(args, "data", None)  # else the config's datasets
                    else [dataclasses.asdict(d) for d in cfg.data.datasets])
        for d in datasets:
            d["columns"] = {**d.get("columns", {}), **columns}
            d["format"] = fmt or d.get("format", "auto")
        overrides["data.datasets"] = datasets
    if getattr(args, "max_steps", None) is not None:  # 0 is refused by the range check, not ignored
        overrides["training.max_steps"] = args.max_steps
    overrides.update(parse_overrides(args.set))  # after --data: `--set data.datasets.0.columns.output=answer`
    return cfg.with_overrides(overrides) if overrides else cfg


def parse_columns(pairs: list[str] | None) -> dict[str, str]:
    """`--column` values -> {ours: theirs}: `output=answer`, or several at once as a check suggests them
    (`instruction=question, output=response`)."""
    out = {}
    for pair in (p for arg in pairs or [] for p in arg.split(",") if p.strip()):
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError("columns", "data.bad_column_arg", f"expected ours=theirs, got {pair}", value=pair.strip())
        if out.get(ours.strip(), theirs.strip()) != theirs.strip():  # two columns for one field: the last won, unsaid
            raise ConfigError("columns", "data.column_twice", f"{ours.strip()} is mapped twice",
                              name=ours.strip(), columns=f"{out[ours.strip()]}, {theirs.strip()}")
        out[ours.strip()] = theirs.strip()
    _check_column_names(out, "--column")
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["a.b=v", ...]` from `--set` -> `{"a.b": parsed v}`, refusing an item without `=`."""
    overrides = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():  # `--set =5` named no field
            raise ConfigError(item, "error.config.set_syntax", "expected section.key=value", value=item)
        k, v = item.split("=", 1)
        overrides[k.strip()] = parse_value(v, _leaf_type(k.strip()))
    return overrides


# list fields whose items are literal text, where YAML's reading of `[INST]` (a list holding INST) is never meant
LITERAL_LISTS = {"generation.stop"}


def _leaf_type(dotted: str) -> Any:
    """The declared type of a dotted RunConfig field (`data.system_prompt` -> Optional[str]), or None."""
    cls: Any = RunConfig
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hint = typing.get_type_hints(cls).get(part)
        if hint is None:
            return None
        cls = hint
    return "literal_list" if dotted in LITERAL_LISTS else cls


def parse_value(text: str, hint: Any = None) -> Any:
    """Parse a `--set` value the way YAML would (numbers, booleans, lists), else keep the string. A text field
    (`hint` str or Optional[str]) keeps the text as typed: YAML would read `# 역할` as nothing, `0123` as an
    octal number and `Answer: briefly` as a mapping; `null` or nothing still unsets an optional one."""
    if hint in (str, Optional[str]):
        return None if hint is not str and text.strip() in ("", "null", "~") else text
    if hint == "literal_list":  # one stop string as typed; several as a quoted YAML list: ["[INST]", "###"]
        if not text.strip().startswith("["):
            return [text] if text.strip() else None
        parsed = parse_value(text)
        several = isinstance(parsed, list) and (len(parsed) != 1 or any(q in text for q in "'\""))
        return parsed if several else [text]
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        return text
    _check_expansion(value)  # `--set a.b=[&x [...], [*x, *x, ...]]` too
    return value


# ---- typed construction with named errors -----------------------------------------------


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", "error.config.type", "must be a mapping (key: value settings)",
                          expected="type.mapping", value=json.dumps(data, default=str, ensure_ascii=False))
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise _unknown(prefix + str(key), str(key), list(known))
    kwargs = {}
    for name in known:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # raised by this class's own __post_init__: name the field in full
        if prefix:
            e.field = e.params["field"] = prefix + e.field
            e.args = (f"{prefix}{e.args[0]}",)
        raise


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, name + ".")
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):  # YAML 1.1 reads on/off (and true/false) as booleans
            value = "on" if value else "off"
        if isinstance(value, str) and value not in args:  # BF16 for bf16, SFT for sft; "4" for bits 4
            value = next((a for a in args if str(a).lower() == value.strip().lower()), value)
        if value not in args or (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            choices = ", ".join(str(a) for a in args)
            near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(name, "error.config.choice", f"{value!r} is not one of: {choices}{hint}",
                              value=value, choices=choices)
        return value
    if origin is list:
        if isinstance(value, (str, dict)) and args and args[0] is str and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            _type_error(name, value, "list")
        return [_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            _type_error(name, value, "mapping")
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        _type_error(name, value, "true/false")
    if tp is int:
        if isinstance(value, bool):
            _type_error(name, value, "integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        _type_error(name, value, "integer")
    if tp is float:
        if isinstance(value, bool):
            _type_error(name, value, "number")
        number = value if isinstance(value, (int, float)) else None
        if isinstance(value, str):
            try:
                number = float(value)  # YAML 1.1 reads `2e-4` as a string; accept it
            except ValueError:
                pass
        if number is not None and math.isfinite(number):  # NaN would pass every range check unnoticed
            return float(number)
        _type_error(name, value, "number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        _type_error(name, value, "text")
    return value


def _unknown(dotted: str, key: str, known: list[str]) -> ConfigError:
    near = difflib.get_close_matches(key, known, n=1)
    if near:
        return ConfigError(dotted, "error.config.unknown_field_near", f"unknown field; did you mean {near[0]!r}?",
                           suggestion=near[0])
    return ConfigError(dotted, "error.config.unknown_field", f"unknown field; the fields here are {', '.join(known)}",
                       known=", ".join(known))


_TERMS = {"number": "type.number", "integer": "type.integer", "true/false": "type.bool", "text": "type.text",
          "list": "type.list", "mapping": "type.mapping"}  # said in the reader's language (messages._term)


def _type_error(name: str, value: Any, expected: str) -> None:
    if value is None:  # an emptied box in the board, or `key:` with nothing after it in YAML
        raise ConfigError(name, "error.config.empty_value", f"is empty; enter a {expected}",
                          expected=_TERMS.get(expected, expected))
    raise ConfigError(name, "error.config.type", f"expected {expected}, got {json.dumps(value, default=str)}",
                      value=value, expected=_TERMS.get(expected, expected))


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every field: feeds the README reference and the board's hints."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(field_help(tp, prefix + f.name + "."))
        elif f.name != "datasets":
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append((prefix + f.name, f.metadata.get("help", ""), default))
    return out
