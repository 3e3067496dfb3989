"""SFT and pretraining rows to token ids and labels, a batch at a time, before trl packs them.

trl renders the chat template and tokenises one row at a time, then builds the labels token by
token in Python. Here the same work is batched: transformers renders the template, the Rust
tokenizer encodes the whole batch at once, and the labels are cut from character spans, so no
per-token work runs in Python. In the same pass a conversation is cut to `max_length` (a row left
with no answer token is dropped: it would add nothing to the loss) and a plain text is split into
pieces of `max_length`, so continued pretraining keeps every token of a long document; then trl's
best-fit-decreasing packer packs the rows when packing is on. trl's own preparation is skipped.

Answer-only labels come from the template's `{% generation %}` marks. A template without them uses
trl's training version of it where trl knows the model (Qwen, Llama-3, Gemma, Phi, ...); any other
template has each answer found by rendering the conversation up to it, with and without the answer.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from typing import Any, NamedTuple

from .messages import TuneboardError

BATCH = 1000
_MARKS = re.compile(r"\{%-?\s*generation\s*-?%\}")


class Prepared(NamedTuple):
    dataset: Any  # datasets.Dataset of input_ids, labels (and seq_lengths when packed)
    rows: int  # rows before preparation
    cut: int  # rows kept that were longer than max_length: conversations cut to it, texts split into pieces
    dropped: int  # rows left with no answer token after the cut, left out (not counted in `cut`)


def prepare(ds, tok, *, answers_only: bool, max_length: int, packing: bool, num_proc: int | None = None) -> Prepared:
    """`ds` ("messages" or "text" rows) as `input_ids` and `labels` (-100 where the loss does not count), cut or
    split to `max_length`, rows without a label dropped, packed if asked."""
    from trl.data_utils import pack_dataset

    split = "messages" not in ds.column_names
    if not split:
        template = training_template(tok) if answers_only else tok.chat_template
        fields = set(ds.features["messages"].feature)  # keys an arrow struct gives every message, None if absent
        encode = functools.partial(_chat_batch, tok=tok, template=template, answers_only=answers_only,
                                   marked=bool(_MARKS.search(template)), sparse=bool(fields - {"role", "content"}))
    else:
        encode = functools.partial(_text_batch, tok=tok)
    # arrow in and out: 12M token ids written from Python lists cost datasets seconds; as arrays, a fraction
    out = ds.with_format("arrow").map(
        _cut, fn_kwargs={"encode": encode, "max_length": max_length, "split": split}, batched=True,
        batch_size=BATCH, num_proc=num_proc, remove_columns=ds.column_names, desc="Tokenizing").with_format(None)
    lengths = out.data.column("length").to_numpy()  # each source row's length on its first piece, else 0
    kept = int((lengths > 0).sum())
    out = out.select_columns(["input_ids", "labels"])
    if packing and len(out):
        out = pack_dataset(out, max_length, "bfd", {"num_proc": num_proc, "desc": "Packing"})
    return Prepared(out, len(ds), int((lengths > max_length).sum()), len(ds) - kept)


def _cut(batch, encode, max_length: int, split: bool):
    """Encode an arrow batch; cut each row to `max_length` (keeping its start) or split it into pieces of it;
    drop rows with no label left. An arrow table of input_ids, labels, and each source row's length."""
    import numpy as np
    import pyarrow as pa

    enc = encode(batch.column("text" if split else "messages").to_pylist())
    ids_out, labels_out, lengths = [], [], []
    for ids, labels in zip(enc["input_ids"], enc["labels"], strict=True):
        for start in range(0, len(ids) if split else 1, max_length):
            piece = labels[start : start + max_length]
            if piece.count(-100) == len(piece):  # empty, or nothing of the answer within max_length
                continue
            ids_out.append(ids[start : start + max_length])
            labels_out.append(piece)
            lengths.append(0 if start else len(ids))
    offsets = np.zeros(len(ids_out) + 1, np.int32)
    np.cumsum([len(x) for x in ids_out], out=offsets[1:])

    def ragged(rows: list[list[int]]):
        return pa.ListArray.from_arrays(offsets, np.fromiter(itertools.chain.from_iterable(rows), np.int32,
                                                             count=int(offsets[-1])))

    return pa.table({"input_ids": ragged(ids_out), "labels": ragged(labels_out),
                     "length": pa.array(lengths, pa.int64())})


def training_template(tok) -> str:
    """The tokenizer's template, or trl's version of it with `{% generation %}` marks when trl has one."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tok) or tok.chat_template
    except ValueError:  # a template trl does not know: the answers are found by prefixes instead
        return tok.chat_template


def _render(tok, template: str, convs: list, **kw) -> tuple[list[str], list]:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        return render_jinja_template(conversations=convs, chat_template=template, **tok.special_tokens_map, **kw)
    except Exception as e:  # noqa: BLE001 - jinja raises anything the template's own raise_exception says
        for conv in convs:  # find the conversation the template refuses, so the message can show it
            try:
                render_jinja_template(conversations=[conv], chat_template=template, **tok.special_tokens_map, **kw)
            except Exception:  # noqa: BLE001
                raise TuneboardError("error.template_failed", error=str(e),
                                     row=_excerpt(conv)) from e
        raise


def _excerpt(conv: list[dict]) -> str:
    text = " | ".join(f"{m.get('role')}: {m.get('content')}" for m in conv)
    return text if len(text) <= 200 else text[:199] + "…"


def _chat_batch(convs: list, tok, template: str, answers_only: bool, marked: bool, sparse: bool) -> dict[str, list]:
    if sparse:  # keys an arrow struct fills with None for messages that lack them, dropped as apply_chat_template does
        convs = [[{k: v for k, v in m.items() if v is not None} for m in conv] for conv in convs]
    texts, spans = _render(tok, template, convs, return_assistant_tokens_mask=answers_only and marked)
    enc = tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    ids = enc["input_ids"]
    if not answers_only:
        return {"input_ids": ids, "labels": ids}
    if not marked:
        spans = _answer_spans(tok, template, convs, texts)
    labels = [_labels(row, enc.encodings[i], spans[i]) for i, row in enumerate(ids)]
    return {"input_ids": ids, "labels": labels}


def _answer_spans(tok, template: str, convs: list[list[dict]], texts: list[str]) -> list[list[tuple[int, int]]]:
    """Where each answer sits in a rendering without `{% generation %}` marks: after the prompt rendered up to
    it, up to the end of the rendering that includes it. A template that rewrites earlier turns (so a prefix
    is not a prefix) falls back to everything after the last prompt."""
    turns = [(i, j) for i, conv in enumerate(convs) for j, m in enumerate(conv) if m.get("role") == "assistant" and j]
    before, _ = _render(tok, template, [convs[i][:j] for i, j in turns], add_generation_prompt=True)
    through, _ = _render(tok, template, [convs[i][: j + 1] for i, j in turns])
    spans: list[list[tuple[int, int]]] = [[] for _ in convs]
    for (i, _), p, q in zip(turns, before, through, strict=True):
        if q.startswith(p) and texts[i].startswith(q) and len(q) > len(p):
            spans[i].append((len(p), len(q)))
    lost = [i for i, s in enumerate(spans) if not s and len(convs[i]) > 1]
    if lost:
        prompts, _ = _render(tok, template, [convs[i][:-1] for i in lost], add_generation_prompt=True)
        for i, p in zip(lost, prompts, strict=True):
            spans[i] = [(len(os.path.commonprefix([p, texts[i]])), len(texts[i]))]
    return spans


def _labels(ids: list[int], encoding: Any, spans: list) -> list[int]:
    """`ids` where a token overlaps an answer's characters, -100 elsewhere (as transformers' assistant mask)."""
    labels = [-100] * len(ids)
    for start, end in spans:
        first = next((t for c in range(start, end) if (t := encoding.char_to_token(c)) is not None), None)
        if first is None:
            continue
        last = next(t for c in range(end - 1, start - 1, -1) if (t := encoding.char_to_token(c)) is not None)
        labels[first : last + 1] = ids[first : last + 1]
    return labels


def _text_batch(texts: list[str], tok) -> dict[str, list]:
    eos = tok.eos_token
    texts = [t if not eos or t.endswith(eos) else t + eos for t in texts]  # as trl: each text ends the stream
    ids = tok(texts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return {"input_ids": ids, "labels": ids}
