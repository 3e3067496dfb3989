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
An answer with OpenAI's `"weight": 0` stays in the conversation as context and is not trained on.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from typing import Any, NamedTuple

import numpy as np

from .messages import TuneboardError

BATCH = 1000
UNTRAINED, CUT_AWAY = -1, -2  # why a row was left out, in its placeholder's `length`
_MARKS = re.compile(r"\{%-?\s*generation\s*-?%\}")


class Prepared(NamedTuple):
    dataset: Any  # datasets.Dataset of input_ids, labels (and seq_lengths when packed)
    rows: int  # rows before preparation
    cut: int  # rows kept that were longer than max_length: conversations cut to it, texts split into pieces
    dropped: int  # rows left with no answer token after the cut, left out (not counted in `cut`)
    untrained: int  # rows with no answer to train on at all (every answer has weight 0), left out


def prepare(ds, tok, *, answers_only: bool, max_length: int, packing: bool, num_proc: int | None = None) -> Prepared:
    """`ds` ("messages" or "text" rows) as `input_ids` and `labels` (-100 where the loss does not count), cut or
    split to `max_length`, rows without a label dropped, packed if asked."""
    from trl.data_utils import pack_dataset

    split = "messages" not in ds.column_names
    if not split:
        template = training_template(tok) if answers_only else tok.get_chat_template()
        fields = set(ds.features["messages"].feature)  # keys an arrow struct gives every message, None if absent
        encode = functools.partial(_chat_batch, tok=tok, template=template, answers_only=answers_only,
                                   marked=bool(_MARKS.search(template)), sparse=bool(fields - {"role", "content"}))
    else:
        encode = functools.partial(_text_batch, tok=tok)
    # arrow in and out: 12M token ids written from Python lists cost datasets seconds; as arrays, a fraction
    out = ds.with_format("arrow").map(
        _cut, fn_kwargs={"encode": encode, "max_length": max_length, "split": split}, batched=True,
        batch_size=BATCH, num_proc=num_proc, remove_columns=ds.column_names, desc="Tokenizing").with_format(None)
    lengths = out.data.column("length").to_numpy()
    if (lengths < 0).any():  # the placeholders of rows left out
        out = out.select(np.flatnonzero(lengths >= 0))
    out = out.select_columns(["input_ids", "labels"])
    if packing and len(out):
        out = pack_dataset(out, max_length, "bfd", {"num_proc": num_proc, "desc": "Packing"})
    return Prepared(out, len(ds), cut=int((lengths > max_length).sum()), dropped=int((lengths == CUT_AWAY).sum()),
                    untrained=int((lengths == UNTRAINED).sum()))


def _cut(batch, encode, max_length: int, split: bool):
    """Encode an arrow batch; cut each row to `max_length` (keeping its start) or split it into pieces of it.
    An arrow table of input_ids, labels and `length`: a row's whole length on its first piece, 0 on the
    others; a row with no label left is an empty placeholder whose length says why (UNTRAINED, CUT_AWAY)."""
    import pyarrow as pa

    enc = encode(batch.column("text" if split else "messages").to_pylist())
    ids_out, labels_out, lengths = [], [], []
    for ids, labels in zip(enc["input_ids"], enc["labels"], strict=True):
        if labels.count(-100) == len(labels):  # empty, or no answer to train on
            ids_out.append([]), labels_out.append([]), lengths.append(UNTRAINED)
            continue
        for start in range(0, len(ids) if split else 1, max_length):
            piece = labels[start : start + max_length]
            if piece.count(-100) == len(piece):  # the answers lie past max_length
                if not start:
                    ids_out.append([]), labels_out.append([]), lengths.append(CUT_AWAY)
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
    """The tokenizer's (default) template, or trl's version of it with `{% generation %}` marks when trl has one."""
    from trl.chat_template_utils import get_training_chat_template

    template = tok.get_chat_template()  # the default of a tokenizer that ships named templates (a dict)
    try:
        return get_training_chat_template(tok) or template
    except Exception:  # noqa: BLE001 - trl does not know it (ValueError), or its probes trip on it (a template's
        return template  # own raise_exception): either way the answers are found by prefixes instead


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
    context: list[set[int]] = [set() for _ in convs]  # answers with weight 0: context, not trained on
    if sparse:  # keys an arrow struct fills with None for messages that lack them, dropped as apply_chat_template does
        convs = [[{k: v for k, v in m.items() if v is not None} for m in conv] for conv in convs]
        context = [{j for j, m in enumerate(conv) if m.pop("weight", 1) == 0} for conv in convs]
    texts, spans = _render(tok, template, convs, return_assistant_tokens_mask=answers_only and marked)
    enc = tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False,
              verbose=False)  # no "longer than the model's maximum" warning: rows are cut to max_length next
    ids = enc["input_ids"]
    if not answers_only:
        return {"input_ids": ids, "labels": ids}
    if marked:
        spans = [_trained_spans(s, conv, skip) for s, conv, skip in zip(spans, convs, context, strict=True)]
    else:
        spans = [None] * len(convs)
    unknown = [i for i, s in enumerate(spans) if s is None]
    if unknown:
        found = _answer_spans(tok, template, [convs[i] for i in unknown], [texts[i] for i in unknown],
                              [context[i] for i in unknown])
        for i, s in zip(unknown, found, strict=True):
            spans[i] = s
    labels = [_labels(row, enc.encodings[i], spans[i]) for i, row in enumerate(ids)]
    return {"input_ids": ids, "labels": labels}


def _trained_spans(spans: list, conv: list[dict], context: set[int]) -> list | None:
    """The `{% generation %}` spans of the answers to train on; None when they cannot be told apart (a
    context-only answer, and not one span per answer)."""
    if not context:
        return spans
    answers = [j for j, m in enumerate(conv) if m.get("role") == "assistant"]
    if len(spans) != len(answers):
        return None
    return [span for span, j in zip(spans, answers, strict=True) if j not in context]


def _answer_spans(tok, template: str, convs: list[list[dict]], texts: list[str],
                  context: list[set[int]]) -> list[list[tuple[int, int]]]:
    """Where each answer to train on sits in a rendering without `{% generation %}` marks: after the prompt
    rendered up to it, up to the end of the rendering that includes it. Where a template renders a turn
    differently once it is not the last (a reasoning block, say), the answer's own text is looked for after
    that prompt, with the end-of-turn marker that follows it. A row where neither finds anything falls back
    to everything after the last prompt, if the last answer is to be trained on."""
    from .data.preview import end_markers

    ends = end_markers(tok)
    turns = [(i, j) for i, conv in enumerate(convs) for j, m in enumerate(conv)
             if m.get("role") == "assistant" and j and j not in context[i]]
    before, _ = _render(tok, template, [convs[i][:j] for i, j in turns], add_generation_prompt=True)
    through, _ = _render(tok, template, [convs[i][: j + 1] for i, j in turns])
    spans: list[list[tuple[int, int]]] = [[] for _ in convs]
    for (i, j), p, q in zip(turns, before, through, strict=True):
        text = texts[i]
        if q.startswith(p) and text.startswith(q) and len(q) > len(p):
            spans[i].append((len(p), len(q)))
            continue
        content = convs[i][j].get("content") or ""
        after = max(spans[i][-1][1] if spans[i] else 0, len(os.path.commonprefix([p, text])))
        at = text.find(content, after) if content else -1
        if at >= 0:
            end = at + len(content)
            end += next((len(m) for m in ends if text.startswith(m, end)), 0)
            spans[i].append((at, end))
    lost = [i for i, s in enumerate(spans) if not s and len(convs[i]) > 1 and len(convs[i]) - 1 not in context[i]]
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
        while last + 1 < len(ids) and (encoding.token_to_chars(last + 1) or (end,))[0] < end:
            last += 1  # the rest of a character that byte-level BPE split over several tokens
        labels[first : last + 1] = ids[first : last + 1]
    return labels


def _text_batch(texts: list[str], tok) -> dict[str, list]:
    eos = tok.eos_token
    texts = [t if not eos or t.endswith(eos) else t + eos for t in texts]  # as trl: each text ends the stream
    ids = tok(texts, return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]  # split next
    return {"input_ids": ids, "labels": ids}
