"""What the model will see: a record rendered through the chat template, the trained part marked.

The loss-carrying part follows trl's defaults: with `assistant_only` (SFT's assistant_only_loss)
the assistant's turns and the end-of-turn token after each; for prompt-completion and preference
rows the completion / chosen / rejected answer; for plain text everything. Without a tokenizer
(or one without a chat template) rows are shown in ChatML and token counts are estimates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tokens import count, render_chat

END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def _chatml_segments(msgs: list[dict], trained: list[bool]) -> list[tuple[str, bool]]:
    out = []
    for m, loss in zip(msgs, trained, strict=False):
        out += [(f"<|im_start|>{m['role']}\n", False), (m["content"] + "<|im_end|>", loss), ("\n", False)]
    return out


def _template_segments(tokenizer: Any, msgs: list[dict], trained: list[bool]) -> list[tuple[str, bool]]:
    """Render with the tokenizer's template, then find each trained content in the text, in order."""
    text = render_chat(tokenizer, msgs)
    ends = tuple(t for t in (getattr(tokenizer, "eos_token", None), *END_MARKERS) if t)
    out, pos = [], 0
    for m, loss in zip(msgs, trained, strict=False):
        at = text.find(m["content"], pos)
        if at < 0:
            continue
        end = at + len(m["content"])
        if loss:
            marker = next((e for e in ends if text.startswith(e, end)), "")
            out += [(text[pos:at], False), (text[at:end + len(marker)], True)]
            end += len(marker)
        else:
            out.append((text[pos:end], False))
        pos = end
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


def render(record: dict, tokenizer: Any = None, assistant_only: bool = True) -> list[dict[str, Any]]:
    """One view per trained sequence (two for preference: chosen, rejected):
    {"label", "text", "segments": [{"text", "loss"}], "tokens", "loss_tokens", "estimated"}."""
    if "text" in record:
        views = [(None, [(record["text"], True)])]
    else:
        if "messages" in record:
            seqs = [(None, record["messages"], 0)]
        elif "completion" in record:
            seqs = [(None, record["prompt"] + record["completion"], len(record["prompt"]))]
        else:
            n = len(record["prompt"])
            seqs = [("chosen", record["prompt"] + record["chosen"], n), ("rejected", record["prompt"] + record["rejected"], n)]
        views = []
        for label, msgs, start in seqs:
            trained = [i >= start and (m["role"] == "assistant" or not assistant_only) for i, m in enumerate(msgs)]
            try:
                if tokenizer is not None and getattr(tokenizer, "chat_template", None):
                    views.append((label, _template_segments(tokenizer, msgs, trained)))
                    continue
            except Exception:  # the template refuses the row; check.py reports it, show ChatML
                pass
            views.append((label, _chatml_segments(msgs, trained)))
    out = []
    for label, segments in views:
        segs = _merge(segments)
        text = "".join(s["text"] for s in segs)
        lengths = count(tokenizer, [text] + [s["text"] for s in segs if s["loss"]])
        out.append({"label": label, "text": text, "segments": segs, "tokens": int(lengths[0]),
                    "loss_tokens": int(lengths[1:].sum()), "estimated": tokenizer is None})
    return out


def preview(records: list[dict], numbers: list[int], tokenizer: Any = None, n: int = 3,
            assistant_only: bool = True) -> list[dict[str, Any]]:
    """The first `n` records: the normalised record and its rendered views, with the row number."""
    return [{"row": number, "record": record, "views": render(record, tokenizer, assistant_only)}
            for record, number in zip(records[:n], numbers[:n], strict=False)]


def marked(view: dict[str, Any], open_: str = "[[", close: str = "]]") -> str:
    """The rendered text with the trained parts wrapped in markers (for terminals and logs)."""
    return "".join(f"{open_}{s['text']}{close}" if s["loss"] else s["text"] for s in view["segments"])


def stats(lengths: np.ndarray | None, max_length: int | None = None, counting: str = "exact",
          bins: int = 10) -> dict[str, Any]:
    """Token length distribution, a histogram, and what the cutoff (and packing) would do."""
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
        kept = np.minimum(lengths, max_length)
        out.update(max_length=max_length, over_cutoff=int((lengths > max_length).sum()),
                   tokens_cut=int((lengths - kept).sum()), packed_sequences=int(-(-int(kept.sum()) // max_length)))
    return out
