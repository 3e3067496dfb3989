"""What the model will see: a record rendered through the chat template, the trained part marked.

The loss-carrying part follows trl's defaults: with `assistant_only` (SFT's assistant_only_loss)
the assistant's turns and the end-of-turn token after each; for prompt-completion and preference
rows the completion / chosen / rejected answer; for plain text everything. Without a tokenizer
(or one without a chat template) rows are shown in ChatML and token counts are estimates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tokens import conversations, count, render_chat

END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def end_markers(tokenizer: Any) -> tuple[str, ...]:
    """What can close a turn in a rendering: the tokenizer's eos token, then the common end-of-turn markers."""
    return tuple(t for t in (getattr(tokenizer, "eos_token", None), *END_MARKERS) if t)


_STAND_IN = "\ue000"  # a private-use character: rendered in place of a content to see where it goes


def _content_at(tokenizer: Any, msgs: list[dict], i: int, text: str, lo: int, hi: int, ends: tuple[str, ...]) -> int:
    """Where message i's content starts in its own span text[lo:hi] of the rendered `text`; -1 if not there.

    Where the template puts a stand-in for it, when the content is there. Else (the template's text
    before it depends on what follows) the last place in the span where it is followed by an end-of-turn
    marker, else its last place: the role header before it can hold it too ("a" in <|im_start|>), and so
    can the text after it ("m" in <|im_end|>, "s" in </s>)."""
    content = msgs[i]["content"]
    probe = render_chat(tokenizer, [*msgs[:i], {**msgs[i], "content": _STAND_IN}])
    at = probe.find(_STAND_IN, lo)
    if at >= 0 and text.startswith(probe[:at] + content):
        return at
    for e in ends:
        at = text.rfind(content + e, lo, hi)
        if at >= 0:
            return at
    return text.rfind(content, lo, hi)


def _template_segments(tokenizer: Any, msgs: list[dict], trained: list[bool]) -> list[tuple[str, bool]]:
    """Render with the tokenizer's template (ChatML without one), then find each trained content in
    its message's own span: what the render of the messages up to it adds over the one before it."""
    text = render_chat(tokenizer, msgs)
    ends = end_markers(tokenizer)
    out, pos, lo = [], 0, 0
    for i, (m, loss) in enumerate(zip(msgs, trained, strict=False)):
        hi = len(text) if i == len(msgs) - 1 else len(render_chat(tokenizer, msgs[:i + 1]))
        at = _content_at(tokenizer, msgs, i, text, max(lo, pos), hi, ends) if loss else -1
        lo = hi
        if at < 0:
            continue
        end = at + len(m["content"])
        marker = next((e for e in ends if text.startswith(e, end)), "")
        out += [(text[pos:at], False), (text[at:end + len(marker)], True)]
        pos = end + len(marker)
    out.append((text[pos:], False))
    return out


def _merge(segments: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for text, loss in segments:
        if not text:
            continue
        if merged and merged[-1]["loss"] == loss:
            merged[-1]["text"] += text
        else:
            merged.append({"text": text, "loss": loss})
    return merged


def _segments(tokenizer: Any, msgs: list[dict], start: int, assistant_only: bool) -> list[tuple[str, bool]]:
    """One sequence's segments; messages from `start` on train (with `assistant_only`, only the assistant's
    without weight 0, as engine/prepare.py labels them)."""
    trained = [i >= start and (not assistant_only or (m["role"] == "assistant" and m.get("weight", 1) != 0))
               for i, m in enumerate(msgs)]  # an answer with weight 0 is context only; without answer-only loss all trains
    if getattr(tokenizer, "chat_template", None):
        try:
            return _template_segments(tokenizer, msgs, trained)
        except Exception:  # the template refuses the row; check.py reports it, show ChatML
            pass
    return _template_segments(None, msgs, trained)


def _cut_at(tokenizer: Any, text: str, tokens: int, max_length: int) -> int:
    """Where in `text` its first `max_length` tokens end: from the tokenizer's offsets, else in proportion."""
    if tokenizer is not None:
        try:
            for part in (text[:max_length * 64], text):  # a prefix holds the first max_length tokens (a 5 MB row
                offsets = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True,  # took seconds)
                                    verbose=False)["offset_mapping"]
                if len(offsets) >= max_length:
                    return int(offsets[max_length - 1][1])
        except Exception:  # a tokenizer without offsets (a slow one): in proportion
            pass
    return len(text) * max_length // max(tokens, 1)


def _cut(segments: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """The segments up to character `at`, then the rest as one segment that training cuts away."""
    out, pos = [], 0
    for seg in segments:
        end = pos + len(seg["text"])
        if end <= at:
            out.append(seg)
        elif pos < at:
            out.append({**seg, "text": seg["text"][: at - pos]})
        pos = end
    return out + [{"text": "".join(s["text"] for s in segments)[at:], "loss": False, "cut": True}]


def render(record: dict, tokenizer: Any = None, assistant_only: bool = True,
           max_length: int | None = None) -> list[dict[str, Any]]:
    """One view per trained sequence (two for preference: chosen, rejected):
    {"label", "text", "segments": [{"text", "loss"}], "tokens", "loss_tokens", "estimated"}. With `max_length`, a
    conversation longer than it ends in a segment marked "cut": what training cuts away (it keeps a row's start;
    plain texts are split into pieces instead, and preference pairs are the DPO trainer's to cut)."""
    if "text" in record:
        views = [(None, [(record["text"], True)])]
    else:
        seqs = conversations(record)
        start = 0 if "messages" in record else len(record["prompt"])
        labels = ("chosen", "rejected") if len(seqs) == 2 else (None,)
        views = [(label, _segments(tokenizer, msgs, start, assistant_only))
                 for label, msgs in zip(labels, seqs, strict=False)]
    out = []
    for label, segments in views:
        segs = _merge(segments)
        text = "".join(s["text"] for s in segs)
        tokens = int(count(tokenizer, [text])[0])
        view = {"label": label, "text": text, "segments": segs, "tokens": tokens, "estimated": tokenizer is None}
        if max_length and tokens > max_length and "text" not in record and label is None:
            view["segments"] = segs = _cut(segs, _cut_at(tokenizer, text, tokens, max_length))
            view["cut_at"] = max_length
        view["loss_tokens"] = int(count(tokenizer, [s["text"] for s in segs if s["loss"]]).sum())  # (once: after
        out.append(view)                                                                         # the cut, if any)
    return out


def preview(records: list[dict], numbers: list[int], tokenizer: Any = None, n: int = 3,
            assistant_only: bool = True, max_length: int | None = None) -> list[dict[str, Any]]:
    """The first `n` records: the normalised record and its rendered views, with the row number."""
    return [{"row": number, "record": record, "views": render(record, tokenizer, assistant_only, max_length)}
            for record, number in zip(records[:n], numbers[:n], strict=False)]


def marked(view: dict[str, Any], open_: str = "[[", close: str = "]]", cut: str = "\n✂ ...") -> str:
    """The rendered text with the trained parts wrapped in markers (for terminals and logs); what training cuts
    away is left out, `cut` in its place."""
    return "".join(cut if s.get("cut") else f"{open_}{s['text']}{close}" if s["loss"] else s["text"]
                   for s in view["segments"])


def stats(lengths: np.ndarray | None, max_length: int | None = None, counting: str = "exact",
          bins: int = 10, split: bool = False, left_out: list[int] | None = None) -> dict[str, Any]:
    """Token length distribution, a histogram, and what the cutoff (and packing) would do: cut a longer row at
    the cutoff, or, `split` (plain texts for pretraining), split it into pieces of the cutoff, dropping nothing.
    `left_out`: the rows (indexes into `lengths`) training leaves out whole, their answer past the cutoff."""
    estimated = counting != "exact"
    if lengths is None or not len(lengths):
        return {"rows": 0, "estimated": estimated, "counting": counting}
    lengths = np.asarray(lengths, dtype=np.int64)
    hi = int(lengths.max())
    counts, edges = np.histogram(lengths, bins=bins, range=(0, max(hi, bins)))
    p50, p90, p99 = (int(v) for v in np.percentile(lengths, [50, 90, 99]))
    out = {"rows": int(len(lengths)), "min": int(lengths.min()), "max": hi, "mean": round(float(lengths.mean()), 1),
           "p50": p50, "p90": p90, "p99": p99, "total": int(lengths.sum()), "estimated": estimated, "counting": counting,
           "histogram": {"edges": [int(round(e)) for e in edges], "counts": [int(c) for c in counts]}}
    if max_length:
        kept = lengths if split else np.minimum(lengths, max_length)
        if left_out:
            kept = kept.copy()
            kept[left_out] = 0
        out.update(max_length=max_length, split=split, over_cutoff=int((lengths > max_length).sum()),
                   left_out=len(left_out or ()), tokens_cut=int((lengths - kept).sum()),
                   packed_sequences=int(-(-int(kept.sum()) // max_length)))
    return out
