"""Check rows against a format: every row's errors, then dataset-wide warnings, never stopping early.

Errors (training would fail or learn garbage): rows that are not objects, missing / empty / wrongly
typed fields, conversations out of turn, preference rows without rejected, unknown columns.
Warnings (training runs; a person may want to look): duplicates, rows over the cutoff, very short
answers, a system prompt in only some rows, columns that will be ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .findings import Finding, error, warning
from .formats import (
    ALIASES,
    FIELDS,
    FORMATS,
    TRL_KIND,
    detect_format,
    final_answer,
    has_system,
    map_columns,
    nearest_format,
    normalize_row,
    row_format,
    suggest_mapping,
    used_fields,
)
from .preview import stats
from .sources import is_turns
from .tokens import conversations, count, render_chat, token_lengths

FORMAT_ALIASES = {"auto": "auto", "openai": "messages", "chatml": "messages", "conversation": "sharegpt",
                  "prompt-completion": "prompt_completion", "dpo": "preference", "pairwise": "preference",
                  "kto": "unpaired", "unpaired_preference": "unpaired",
                  "pt": "text", "plain": "text", "plaintext": "text", "txt": "text"}
ANSWER_FIELD = {"alpaca": "output", "sharegpt": "conversations", "messages": "messages",
                "prompt_completion": "completion", "preference": "chosen", "unpaired": "completion", "text": "text"}
FORMAT_LIST = ", ".join(FORMATS)  # for data.unknown_format
SHORT_ANSWER = 3  # weighted characters; a CJK character weighs 3 (about one word)
EXACT_PROMPTS = 2000  # over-long rows whose prompt is rendered and counted exactly; past them, estimated


@dataclass
class Analysis:
    """The outcome of checking: the format, one trl record per row (None for a bad row), findings."""

    format: str | None
    records: list[dict | None] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    lengths: np.ndarray | None = None  # tokens per good record, in order
    left_out: list[int] = field(default_factory=list)  # of those, the ones training leaves out: no answer in the cutoff
    counting: str = "estimate"  # how `lengths` were counted: exact | calibrated | estimate (tokens.py)

    @property
    def good(self) -> list[dict]:
        return [r for r in self.records if r is not None]

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def trl_kind(self) -> str | None:
        return TRL_KIND.get(self.format or "")


def canonical_format(fmt: str | None) -> str | None:
    """`auto`, a format name, or a common alias (openai, dpo, pt, ...); None if unknown."""
    name = (fmt or "auto").strip().lower().replace(" ", "_")
    name = FORMAT_ALIASES.get(name, name)
    return name if name == "auto" or name in FORMATS else None


def check(rows: list[Any], fmt: str = "auto", **kwargs: Any) -> list[Finding]:
    """Findings for `rows` (see `analyze` for the keyword arguments)."""
    return analyze(rows, fmt, **kwargs).findings


def _loose_names(present: list[str], columns: dict[str, str] | None) -> dict[str, str]:
    """{ours: theirs} for the file's columns that are our field names written otherwise (case, spaces around),
    where the file has no column of that exact name and the person mapped none to it."""
    exact = set(present) | set((columns or {}).values())
    out: dict[str, str] = {}
    for col in present:
        name = col.strip().lower() if isinstance(col, str) else None
        name = SYNONYMS.get(name, name)
        if name in FIELDS and name not in exact and name not in out and name not in (columns or {}):
            out[name] = col
    return out


SYNONYMS = {"kto_tag": "label"}  # another tool's name for one of our fields (LLaMA-Factory's KTO datasets)


def analyze(rows: list[Any], fmt: str = "auto", *, columns: dict[str, str] | None = None,
            numbers: list[int] | None = None, lines: list[int] | None = None, tokenizer: Any = None,
            max_length: int | None = None, measure: bool = True, stage: str | None = None,
            controls: bool = True) -> Analysis:
    """Detect (unless `fmt` is given), normalise and check every row; for `stage` where known (SFT and
    pretraining keep a preference pair that has no rejected answer: they train on the chosen one alone).

    `numbers` / `lines` are the rows' person-facing numbers and start lines (default 1..n); `controls=False`:
    the file was seen to hold no control characters (`Source.controls`), so its rows are not searched for them;
    `columns` maps our field names to the file's ({"output": "answer"}); token lengths use
    `tokenizer` (estimated without one) and feed the `max_length` warning.
    """
    numbers = numbers or list(range(1, len(rows) + 1))
    theirs = dict(columns or {})
    out = Analysis(None, numbers=numbers)
    if not rows:
        out.findings.append(error(None, None, "data.empty_file", path=""))
        return out
    name = canonical_format(fmt)
    if name is None:
        out.findings.append(error(None, None, "data.unknown_format", format=fmt, formats=FORMAT_LIST))
        return out
    present = _keys(rows)
    if loose := _loose_names(present, columns):  # `Instruction`, `OUTPUT `: our names but for case and spaces
        out.findings.append(warning(None, None, "data.columns_by_name",
                                    columns=", ".join(f"{t} → {o}" for o, t in loose.items())))
        theirs.update(loose)
        columns = {**loose, **(columns or {})}
    if columns:
        for ours, col in columns.items():  # a mapping that names no column of the file: a typo, most likely
            if col not in present:
                out.findings.append(warning(None, col, "data.mapped_column_missing", ours=ours,
                                            columns=_names(present) or "-"))
        rows = [map_columns(r, columns) for r in rows]
    # a line that is just a list of messages is one conversation; a file of bare texts (["doc", "doc"]) is a corpus
    rows = [{"messages": r} if isinstance(r, list) and is_turns(r) else r for r in rows]
    if name in ("auto", "text") and all(isinstance(r, str) or r is None for r in rows) and any(rows):
        rows = [{"text": r} for r in rows]  # a corpus; a null in it is one empty document, said at its row
    keys = _keys(rows)
    detected, shapeless = name == "auto", False  # detected: a row of another format is then said at the row
    if name == "auto":
        name = detect_format(rows, named=set(theirs))
        if name is None and keys:
            out.findings.append(unknown_columns(keys))
            return out
        shapeless = name is None  # no row is an object: every row gets `not_an_object` below, in no format
        name = name or "text"
    out.format = name
    at = (lambda i: lines[i]) if lines else (lambda i: None)
    need_rejected = stage not in ("sft", "pt")
    empty: list[int] = []  # empty documents, common in a corpus (a web dump's empty page, wikitext's blank lines)
    for i, row in enumerate(rows):
        record, probs = normalize_row(row, name, need_rejected)
        out.records.append(record)
        if detected and record is None and any(k == "data.missing_field" for _, k, _ in probs):
            other = row_format(row) if isinstance(row, dict) else None  # a row of another format, said as such
            if other and other != name and not {other, name} <= {"sharegpt", "messages"}:
                probs = [(None, "data.row_other_format", {"format": other, "expected": name})]
        if name == "text" and [(f, k) for f, k, _ in probs] == [("text", "data.empty_field")]:
            empty.append(i)  # left out, said, not fatal
            continue
        for fld, key, params in probs:
            out.findings.append(error(numbers[i], theirs.get(fld, fld), key, at(i), **params))
        for fld, key, params in probs.notes if record is not None else ():
            out.findings.append(warning(numbers[i], theirs.get(fld, fld), key, at(i), **params))
    if len(empty) == 1:
        out.findings.append(warning(numbers[empty[0]], theirs.get("text", "text"), "data.empty_text_skipped",
                                    at(empty[0])))
    elif empty:  # said once: wikitext has hundreds of thousands
        out.findings.append(warning(None, theirs.get("text", "text"), "data.empty_texts_skipped", count=len(empty),
                                    total=len(rows), rows=", ".join(str(numbers[i]) for i in empty[:10])
                                    + (", ..." if len(empty) > 10 else "")))
    good = [i for i, r in enumerate(out.records) if r is not None]
    if stage in ("sft", "pt") and name == "unpaired" and good and not any(out.records[i]["label"] for i in good):
        out.findings.append(error(None, theirs.get("label", "label"), "error.only_undesirable", count=len(good),
                                  stage=stage.upper()))  # they learn from the desirable answers alone: none here
    elif name == "unpaired" and len({out.records[i]["label"] for i in good}) == 1:  # KTO learns from both kinds
        out.findings.append(warning(None, theirs.get("label", "label"), "data.kto_one_kind", count=len(good),
                                    value=str(out.records[good[0]]["label"]).lower()))
    _missing_columns(out, keys, theirs, present)
    unused = [k for k in keys if k not in used_fields(name)]
    if unused and good:
        # a column named as one of the format's optional fields is named (OpenHermes' system_prompt went unsaid
        # past the twelfth name), with the mapping that would use it
        maps = {ours: col for col in reversed(unused) for ours in FORMATS[name][1]
                if ours not in keys and col.lower() in ALIASES.get(ours, ())
                and any(isinstance(r.get(col), (str, list)) for r in rows[:50] if isinstance(r, dict))}  # not a count
        unused = [*maps.values(), *(k for k in unused if k not in maps.values())]
        out.findings.append(warning(None, None, "data.ignored_columns", columns=_names(unused)))
        for ours, col in maps.items():
            out.findings.append(warning(None, col, "data.unused_column_maps", ours=ours, column=col))
    if controls:
        _control_characters(out, good, at)
    _duplicates(out, good, at)
    answers = ANSWER_FIELD[name]
    if name == "unpaired" and "completion" not in keys:  # KTO's conversations, their last answer labelled
        answers = next((k for k in ("conversations", "messages") if k in keys), answers)
    _short_answers(out, good, at, theirs.get(answers, answers))
    _system_some_rows(out, good, at)
    _context_only_rows(out, good, at, theirs.get(answers, answers))
    _same_answers(out, good, at, theirs.get("rejected", "rejected"))
    if measure and good:
        refused: list[tuple[int, str]] = []
        out.lengths, out.counting = token_lengths([out.records[i] for i in good], tokenizer, max_length,
                                                  refused=refused)
        for k, reason in refused:
            i = good[k]
            out.findings.append(error(out.numbers[i], None, "data.template_error", at(i), error=reason))
        if max_length:
            _too_long(out, good, max_length, tokenizer, at)
    if detected and shapeless and not good:  # a list of lists was headed "text (plain-text language modeling)"
        out.format = None
    return out


def unknown_columns(keys: list[str], among: tuple[str, ...] | None = None) -> Finding:
    """No known format has these columns: the nearest one (of `among`, a stage's formats) and a mapping to try."""
    suggestion, mapping = nearest_format(keys, among)
    required, optional = FORMATS[suggestion]
    return error(None, None, "data.unknown_columns", columns=_names(keys), format=suggestion,
                 expected=", ".join(required + optional[:2]),
                 mapping=", ".join(f"{o}={t}" for o, t in mapping.items() if o != t)
                 or ", ".join(f"{f}=..." for f in required))  # no guess: the form to fill


def _missing_columns(out: Analysis, keys: list[str], theirs: dict[str, str], named: list[str]) -> None:
    """A required field absent from every row is a column problem: say so once, with a mapping to try, and the
    columns as the file names them (`named`: `question`, where a mapping read it as `instruction`)."""
    if out.format not in ("alpaca", "prompt_completion", "text", "preference", "unpaired") or not keys:
        return  # the others have alternative spellings per row; no keys: no row is an object (said per row)
    absent = tuple(f for f in FORMATS[out.format][0] if f not in keys
                   and not (f == "instruction" and "input" in keys)  # input alone is a prompt too
                   and not (f in ("prompt", "completion") and {"messages", "conversations"} & set(keys)))
    if out.format == "preference":  # the prompt only (chosen and rejected may be alpaca's two-item output),
        # when no row spells it otherwise nor leaves it inside chosen and rejected
        said = {(f.field, f.key) for f in out.findings}
        absent = tuple(f for f in absent if f == "prompt" and (
            not {"instruction", "input", "conversations", "messages"} & set(keys) and not any(out.records)
            and (theirs.get("prompt", "prompt"), "data.missing_field") in said))
    unused = [k for k in keys if k not in used_fields(out.format)]
    for fld in absent:  # with the optional fields a column would fill too (Dolly's context is alpaca's input)
        extra = tuple(o for o in ("input", "system") if o in FORMATS[out.format][1] and o not in keys)
        mapping = suggest_mapping(out.format, unused, (fld, *extra))
        out.findings.append(error(None, theirs.get(fld, fld), "data.missing_column", format=out.format,
                                  columns=_names(named) or "-",
                                  mapping=", ".join(f"{o}={t}" for o, t in mapping.items()) or f"{fld}=..."))


def _names(columns: list[str], limit: int = 12) -> str:
    """Column names for a message: the first `limit`, and how many more (a wide export has dozens)."""
    more = len(columns) - limit
    return ", ".join(columns[:limit]) + (f", ... (+{more})" if more > 0 else "")


def _keys(rows: list[Any]) -> list[str]:
    """Every column name, in order of first appearance."""
    seen: dict[str, None] = {}
    shapes: set[tuple] = set()  # most rows of a file have the same keys: each set of them read once
    for row in rows:
        if isinstance(row, dict) and (shape := tuple(row)) not in shapes:
            shapes.add(shape)
            seen.update(dict.fromkeys(map(str, shape)))
    return list(seen)


def _duplicates(out: Analysis, good: list[int], at: Any) -> None:
    """Rows whose normalised content (roles and texts) equals an earlier row's."""
    records = [out.records[i] for i in good]
    if not records:
        return
    if "text" in records[0]:
        keys: list[Any] = [r["text"] for r in records]
    else:
        parts = [k for k in ("messages", "prompt", "completion", "chosen", "rejected") if k in records[0]]
        if any(k not in r for r in records for k in parts):  # a pair kept without its rejected answer (SFT)
            parts = ["messages", "prompt", "completion", "chosen", "rejected"]
            records = [{k: r.get(k, ()) for k in parts} for r in records]
        keys = [tuple((m["role"], m["content"]) for k in parts for m in r[k]) + tuple(len(r[k]) for k in parts)
                for r in records]
    first: dict[Any, int] = {}
    for i, key in zip(good, keys, strict=False):
        j = first.setdefault(key, i)
        if j != i:
            out.findings.append(warning(out.numbers[i], None, "data.duplicate", at(i), first=out.numbers[j]))


_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")  # but tab, line ends, vertical tab and form feed (a page break)


def _texts(record: dict) -> list[str]:
    if "text" in record:
        return [record["text"]]
    return [m["content"] for seq in conversations(record) for m in seq]


def _control_characters(out: Analysis, good: list[int], at: Any) -> None:
    """Rows that hold control characters (a terminal's colour codes, a NUL written as JSON's \\u0000): the model
    would learn to write them. A warning: a row may mean them."""
    for i in good:
        if found := next((m for t in _texts(out.records[i]) if (m := _CONTROL.search(t))), None):
            out.findings.append(warning(out.numbers[i], None, "data.control_characters", at(i),
                                        value=repr(found.group())[1:-1]))


def _weighted_length(text: str) -> int:
    return sum(3 if ord(ch) >= 0x1100 else 1 for ch in text.strip()[:SHORT_ANSWER])


def _short_answers(out: Analysis, good: list[int], at: Any, fld: str) -> None:
    for i in good:
        answer = final_answer(out.records[i])  # (a character weighs at least 1: a longer one needs no weighing)
        if answer is not None and len(answer.strip()) < SHORT_ANSWER and _weighted_length(answer) < SHORT_ANSWER:
            out.findings.append(warning(out.numbers[i], fld, "data.short_answer", at(i), answer=answer.strip()))


def _context_only_rows(out: Analysis, good: list[int], at: Any, fld: str) -> None:
    """Conversations whose every answer has weight 0: they train nothing and are left out of training."""
    for i in good:
        msgs = out.records[i].get("messages")
        if not msgs or not any("weight" in m for m in msgs):  # only a weight of 0 is kept on a message
            continue
        answers = [m for m in msgs if m["role"] == "assistant"]
        if answers and all(m.get("weight", 1) == 0 for m in answers):
            out.findings.append(warning(out.numbers[i], fld, "data.all_weight_zero", at(i)))


def _same_answers(out: Analysis, good: list[int], at: Any, fld: str) -> None:
    """Preference pairs whose chosen and rejected answers say the same: DPO learns nothing from them (both
    sides' log-probabilities cancel), so the loss cannot show it. All of them is an error."""
    same = [i for i in good if "rejected" in out.records[i] and
            [m["content"].strip() for m in out.records[i]["chosen"]] ==
            [m["content"].strip() for m in out.records[i]["rejected"]]]
    for i in same:
        out.findings.append(warning(out.numbers[i], fld, "data.same_answers", at(i)))
    if same and len(same) == len(good):
        out.findings.append(error(None, fld, "data.all_same_answers", rows=len(same)))


def _system_some_rows(out: Analysis, good: list[int], at: Any) -> None:
    with_system = [i for i in good if has_system(out.records[i])]
    if 0 < len(with_system) < len(good):
        without = next(i for i in good if not has_system(out.records[i]))
        out.findings.append(warning(out.numbers[without], None, "data.system_some_rows", at(without),
                                    count=len(with_system), total=len(good)))


CUTOFF_KEYS = ("data.prompt_past_cutoff", "data.too_long", "data.too_long_split", "error.no_answer_within_cutoff")


def _too_long(out: Analysis, good: list[int], max_length: int, tokenizer: Any = None, at: Any = None,
              split: bool | None = None) -> None:
    """The rows past the cutoff: cut at their end (a conversation whose prompt fills it is left out), or with
    `split` (pretraining's plain text, the default for a text file) split into pieces."""
    split = out.format == "text" if split is None else split
    over = np.flatnonzero(out.lengths > max_length)
    if not len(over):
        return
    if not split and out.format != "preference":  # training cuts a conversation at its end: one whose first
        dropped = set(_prompt_past_cutoff([out.records[good[k]] for k in over], tokenizer, max_length,
                                          out.lengths[over], EXACT_PROMPTS))
        for j in sorted(dropped):  # answer starts past the cutoff keeps no answer token and is left out
            i = good[over[j]]
            out.findings.append(warning(out.numbers[i], None, "data.prompt_past_cutoff", at(i) if at else None,
                                        max_length=max_length))
        if dropped and len(dropped) == len(good):
            out.findings.append(error(None, None, "error.no_answer_within_cutoff", rows=len(good), max_length=max_length))
        out.left_out = [int(over[j]) for j in sorted(dropped)]
        over = np.array([k for j, k in enumerate(over) if j not in dropped], dtype=np.int64)
        if not len(over):
            return
    s = stats(out.lengths, max_length, out.counting, split=split)
    rows = ", ".join(str(out.numbers[good[k]]) for k in over[:10]) + (", ..." if len(over) > 10 else "")
    key = "data.too_long_split" if split else "data.too_long"  # pretraining splits texts
    out.findings.append(warning(None, None, key, count=len(over), total=len(good),
                                max_length=max_length, longest=s["max"], p50=s["p50"], p90=s["p90"], p99=s["p99"],
                                rows=rows, counting=out.counting))


def _prompt_past_cutoff(records: list[dict], tokenizer: Any, max_length: int, lengths: np.ndarray,
                        exact: int) -> list[int]:
    """Indexes of the conversations whose first answer to train on starts at or past `max_length` tokens. The
    first `exact` prompts are rendered and counted; past them (a large file of long rows) a prompt's tokens are
    its row's (`lengths`) times its share of the row's characters."""
    firsts = []
    for k, r in enumerate(records):
        msgs = r.get("messages") or (r.get("prompt", []) + r.get("completion", []))
        j = next((j for j, m in enumerate(msgs) if m["role"] == "assistant" and m.get("weight", 1) != 0), None)
        if j:
            firsts.append((k, msgs[:j], msgs))
    if not firsts:
        return []
    texts = []
    for _, prompt, _ in firsts[:exact]:
        try:
            texts.append(render_chat(tokenizer, prompt, add_generation_prompt=True))
        except Exception:  # noqa: BLE001 - a template that refuses the row is reported by the length check
            texts.append(render_chat(None, prompt, add_generation_prompt=True))
    counted = list(count(tokenizer, texts))
    for k, prompt, msgs in firsts[exact:]:
        share = sum(len(m["content"]) for m in prompt) / max(sum(len(m["content"]) for m in msgs), 1)
        counted.append(int(lengths[k] * share))
    return [k for (k, _, _), n in zip(firsts, counted, strict=True) if n >= max_length]
