"""The embedded default model: a tiny Llama built offline and deterministically on first use.

A byte-level BPE tokenizer is trained on the bundled text, a ~0.5M-parameter Llama is
pre-trained on plain text for a few seconds (so LoRA on it behaves like LoRA on a real base,
rather than on noise), and both are cached in `<workdir>/models/demo`. It has a ChatML
template but has never seen it: SFT is what teaches it to answer in turns. The plain text has
questions on one line and answers on the next, as a real base has read on the web: a base that
had never seen a line break would meet one first in the template, right before each answer, and
a short LoRA run would leave it guessing the first word of every answer (often an empty answer).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .paths import DATA, models_dir
from .templates import TEMPLATES

DEMO_NAME = "demo"
VERSION = "2"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
EOS = "<|im_end|>"
PRETRAIN_STEPS = 300


def is_demo(name: str) -> bool:
    return name == DEMO_NAME


def _corpus() -> list[str]:
    """Plain text the base learns language from: the bundled facts, and the demo questions each on a
    line with its answer on the next, as a real base has seen questions answered on the web; never
    in chat form."""
    texts = [p for p in (DATA / "demo_pt.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    for row in json.loads((DATA / "demo_sft.json").read_text(encoding="utf-8")):
        texts.append("\n".join(x for x in (row["instruction"], row["input"], row["output"]) if x))
    return texts


def demo_fingerprint() -> str:
    """What the current demo build is made from; a run records it, as an adapter only fits the base it trained on."""
    h = hashlib.sha256(VERSION.encode())
    for name in ("demo_pt.txt", "demo_sft.json"):
        h.update((DATA / name).read_bytes())
    return h.hexdigest()[:12]


def demo_built(workdir: str | os.PathLike | None = None) -> bool:
    """The demo model is cached and current (ensure_demo_model returns at once)."""
    stamp = models_dir(workdir) / DEMO_NAME / "tuneboard_demo.json"
    try:
        return json.loads(stamp.read_text()).get("fingerprint") == demo_fingerprint()
    except (OSError, ValueError):
        return False


def ensure_demo_model(workdir: str | os.PathLike | None = None) -> Path:
    """The cached demo model folder, built on first use (about ten seconds on two CPU cores)."""
    target = models_dir(workdir) / DEMO_NAME
    stamp = target / "tuneboard_demo.json"
    if demo_built(workdir):
        return target
    fp = demo_fingerprint()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        from .model import quiet_libraries

        quiet_libraries()  # transformers' "Writing model shards" bar is not ours to show
        build_demo_model(tmp)
        (tmp / "tuneboard_demo.json").write_text(json.dumps({"fingerprint": fp, "version": VERSION}))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)  # atomic: a second process building at once simply loses the race
        except OSError:
            if not stamp.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def train_bpe(texts: list[str], vocab_size: int = 1024):
    """The demo's byte-level BPE (a `tokenizers.Tokenizer`) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(texts: list[str], vocab_size: int = 1024):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=train_bpe(texts, vocab_size), eos_token=EOS, pad_token="<|pad|>",
                                   bos_token=None, unk_token=None, model_max_length=512)
    fast.chat_template = TEMPLATES["chatml"]  # with `{% generation %}`: trl puts the loss on the answers
    return fast


def check_tokenizer(workdir: str | os.PathLike | None = None):
    """The demo's tokenizer for checking data, without transformers (see engine.data.light_tokenizer): the built
    model's files, else trained on the spot (a second: token counts need no model, and `tuneboard check` should
    not leave a model folder wherever it runs); the same token counts either way."""
    from .data.light_tokenizer import LightTokenizer

    if demo_built(workdir):
        return LightTokenizer(models_dir(workdir) / DEMO_NAME)
    return LightTokenizer(None, TEMPLATES["chatml"], tokenizer=train_bpe(_corpus()), eos_token=EOS)


def build_demo_model(out: Path, steps: int = PRETRAIN_STEPS, seed: int = 0) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = _corpus()
    tok = build_tokenizer(texts)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None, rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    _pretrain(model, tok, texts, steps, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _pretrain(model, tok, texts: list[str], steps: int, seed: int) -> None:
    import torch

    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    stream: list[int] = []
    for t in texts:
        stream += tok(t)["input_ids"] + [eos]
    seq, batch = 64, 16
    data = torch.tensor(stream[: len(stream) // seq * seq]).view(-1, seq)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, data.size(0), (batch,), generator=gen)
        loss = model(input_ids=data[idx], labels=data[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
