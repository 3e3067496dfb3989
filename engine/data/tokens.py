"""Token counts for normalised records: exact with a tokenizer, estimated without one.

Up to about a million characters (and 20,000 sequences) every row is rendered through the chat
template and tokenized: exact. Beyond that, rendering each row would take too long, so contents
are counted in one batch, a random sample exactly and the rest by a fit (tokens per narrow / per
wide character), plus the template's per-message overhead measured once; rows near the cutoff are
then rendered and counted exactly, so the cutoff warning stays right. Without a tokenizer:
4 characters per token, one per CJK character. Counts other than exact are marked as such.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ESTIMATED_OVERHEAD = 5  # <|im_start|> role \n ... <|im_end|> \n
EXACT_CHARS = 1_000_000  # render and count every row up to this many characters (about a second) ...
EXACT_ROWS = 20_000  # ... and this many sequences (a template render is ~40 us); calibrate beyond


def load_tokenizer(model: str | None) -> Any:
    """`model` (a folder or hub id) -> its tokenizer; None -> the demo tokenizer if it can be had, else None."""
    if model:
        from transformers import AutoTokenizer

        from ..messages import TuneboardError

        if model == "demo":
            model = None
        else:
            from ..model import hub_call  # as a run loads it: a Hub that does not answer, from the cache alone

            try:
                return hub_call(model, AutoTokenizer.from_pretrained, model)
            except TuneboardError:  # offline, or no such model on the Hub
                raise
            except Exception as e:  # a folder without tokenizer files, an id that can't be one: one clear message
                from pathlib import Path

                if Path(model).expanduser().is_dir():  # a folder, just not a model's (not "neither a folder nor ...")
                    raise TuneboardError("error.model_folder_incomplete", path=model,
                                         missing="tokenizer.json / tokenizer_config.json") from None
                raise TuneboardError("error.model_not_found", name=model, error=str(e)[:200]) from None
    try:
        from ..demo import check_tokenizer  # without transformers: `tuneboard check` answers in a fraction of a second

        return check_tokenizer()
    except Exception:  # absent or failing -> estimates
        return None


def conversations(record: dict) -> list[list[dict]]:
    """The token sequences a record trains as: one, or two for preference (chosen, rejected)."""
    if "messages" in record:
        return [record["messages"]]
    if "completion" in record:
        return [record["prompt"] + record["completion"]]
    if "chosen" in record:
        if "rejected" not in record:  # a pair kept for SFT without its rejected answer
            return [record["prompt"] + record["chosen"]]
        return [record["prompt"] + record["chosen"], record["prompt"] + record["rejected"]]
    return []


def render_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The tokenizer's chat template applied, or ChatML when there is none."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _estimate(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(narrow, wide) characters per text; wide = CJK and other 3-4 byte UTF-8 characters."""
    chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    nbytes = np.fromiter((len(t.encode("utf-8", "surrogatepass")) for t in texts), dtype=np.int64, count=len(texts))
    wide = np.minimum((nbytes - chars) // 2, chars)
    return chars - wide, wide


def count(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text (no special tokens added), batched; estimates when tokenizer is None."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    if tokenizer is None:
        narrow, wide = _estimate(texts)
        return np.ceil(narrow / 4 + wide).astype(np.int64)
    long = [i for i, t in enumerate(texts) if len(t) > LONG_TEXT]
    if long:  # a book on one line: counted in pieces, not held whole; the others in one batch as ever
        out = np.zeros(len(texts), dtype=np.int64)
        short = sorted(set(range(len(texts))) - set(long))
        out[short] = count(tokenizer, [texts[i] for i in short])
        out[long] = [_count_long(tokenizer, texts[i]) for i in long]
        return out
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))


LONG_TEXT = 200_000  # characters: a text longer than this is tokenised in pieces (its encoding took ~600 B a char)


def _count_long(tokenizer: Any, text: str) -> int:
    """Tokens of a very long text, tokenised in pieces cut at whitespace: a piece boundary can change a token or
    two of the ~50,000 around it, against the gigabytes a 6 MB line took whole."""
    total, start = 0, 0
    while start < len(text):
        end = min(start + LONG_TEXT // 4, len(text))
        if end < len(text):
            space = text.rfind(" ", start + 1, end)  # a word split in two would count as two
            end = space if space > start else end
        total += len(tokenizer(text[start:end], add_special_tokens=False, return_attention_mask=False,
                               verbose=False)["input_ids"])
        start = end
    return total


def _calibrated(tokenizer: Any, texts: list[str], budget: int) -> np.ndarray:
    """Tokens per text from a fit on a random sample worth `budget` characters: tokens ~ a*narrow + b*wide."""
    narrow, wide = _estimate(texts)
    order = np.random.default_rng(0).permutation(len(texts))
    take = order[: max(int(np.searchsorted(np.cumsum((narrow + wide)[order]), budget)), 50)]
    exact = count(tokenizer, [texts[i] for i in take]).astype(float)
    x = np.stack([narrow[take], wide[take]], axis=1).astype(float)
    if wide[take].sum() == 0:  # no wide characters in the sample: fit narrow only, keep 1 token each for wide
        a = exact.sum() / max(narrow[take].sum(), 1)
        coef = np.array([a, 1.0])
    else:
        coef = np.clip(np.linalg.lstsq(x, exact, rcond=None)[0], 0.05, 4.0)
    out = np.ceil(narrow * coef[0] + wide * coef[1]).astype(np.int64)
    out[take] = exact.astype(np.int64)
    return out


def _overhead(tokenizer: Any) -> tuple[int, int]:
    """(tokens per message, tokens per conversation) that the chat template adds around contents."""
    if tokenizer is None:
        return ESTIMATED_OVERHEAD, 0
    one = [{"role": "user", "content": "hi"}]
    two = one + [{"role": "assistant", "content": "ok"}]
    try:
        n1 = len(tokenizer(render_chat(tokenizer, one), add_special_tokens=False)["input_ids"])
        n2 = len(tokenizer(render_chat(tokenizer, two), add_special_tokens=False)["input_ids"])
    except Exception:  # a template that refuses these turns: fall back to ChatML's shape
        return ESTIMATED_OVERHEAD, 0
    c1, c2 = count(tokenizer, ["hi", "ok"])
    per = max(n2 - n1 - int(c2), 0)
    return per, max(n1 - int(c1) - per, 0)


def token_lengths(records: list[dict], tokenizer: Any = None, max_length: int | None = None,
                  budget: int = EXACT_CHARS, refused: list | None = None) -> tuple[np.ndarray, str]:
    """Tokens each record takes after the chat template (preference: the longer of chosen / rejected),
    and how they were counted: `exact` (each row rendered and tokenized); `calibrated` past `budget`
    characters or EXACT_ROWS sequences (a tokenizer on a sample, a fit for the rest, rows near
    `max_length` rendered exactly); `estimate` without a tokenizer. Rows the tokenizer's chat
    template refuses are counted in ChatML and listed in `refused` as (record index, error)."""
    seqs: list[list[dict] | str] = []
    seq_record: list[int] = []
    for i, record in enumerate(records):
        views = [record["text"]] if "text" in record else conversations(record)
        seqs.extend(views)
        seq_record.extend([i] * len(views))
    rec = np.asarray(seq_record, dtype=np.int64)

    def per_record(seq_lengths: np.ndarray) -> np.ndarray:
        out = np.zeros(len(records), dtype=np.int64)
        np.maximum.at(out, rec, seq_lengths.astype(np.int64))
        return out

    def rendered(which: Any) -> np.ndarray:
        texts = []
        for k in which:
            try:
                texts.append(seqs[k] if isinstance(seqs[k], str) else render_chat(tokenizer, seqs[k]))
            except Exception as e:  # the model's template refuses this row (roles, system...): say so
                if refused is not None:
                    refused.append((int(rec[k]), str(e)[:200]))
                texts.append(render_chat(None, seqs[k]))
        return count(tokenizer, texts)

    flat = [m["content"] for q in seqs if not isinstance(q, str) for m in q] + [q for q in seqs if isinstance(q, str)]
    total = sum(map(len, flat))
    if tokenizer is not None and total <= budget and len(seqs) <= EXACT_ROWS:
        return per_record(rendered(range(len(seqs)))), "exact"
    # contents counted (or estimated) in one batch, plus the template's overhead per message
    owner = np.fromiter((k for k, q in enumerate(seqs) if not isinstance(q, str) for _ in q), dtype=np.int64)
    owner = np.concatenate([owner, np.fromiter((k for k, q in enumerate(seqs) if isinstance(q, str)), dtype=np.int64)])
    n_msgs = np.fromiter((0 if isinstance(q, str) else len(q) for q in seqs), dtype=np.int64, count=len(seqs))
    per_message, base = _overhead(tokenizer)
    per_text = count(None, flat) if tokenizer is None else _calibrated(tokenizer, flat, budget // 3)
    seq_len = np.bincount(owner, weights=per_text, minlength=len(seqs)) + n_msgs * per_message + (n_msgs > 0) * base
    if tokenizer is None:
        return per_record(seq_len), "estimate"
    if max_length:  # the cutoff warning should be right: render and count the rows near it exactly
        near = np.flatnonzero(seq_len >= 0.8 * max_length)
        near = near[np.argsort(-seq_len[near], kind="stable")]
        size = np.cumsum(np.bincount(owner, weights=np.fromiter(map(len, flat), dtype=np.int64), minlength=len(seqs))[near])
        near = near[(size <= budget * 2 // 3) & (np.arange(len(near)) < EXACT_ROWS // 4)]
        if len(near):
            seq_len[near] = rendered(near)
    return per_record(seq_len), "calibrated"
