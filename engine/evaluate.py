"""Evaluate a run: perplexity on held-out data, and greedy answers scored with BLEU and ROUGE.

Scores are on a 0-100 scale. Korean, Chinese and Japanese have no spaces between words (or
spaces that split a word from its particles), so word-level scores treat a near-perfect Korean
answer as wrong, and rouge-score's own tokenizer drops every non-Latin letter. We therefore:
  BLEU   sacrebleu with tokenize="13a" when no reference holds CJK; otherwise every Hangul, kana
         and Han character is split into its own token first (then 13a): "13a+cjk-char",
         character n-grams for CJK and word n-grams for the rest, in one corpus score.
  ROUGE  rouge-score with our tokenizer: lower-cased words (any script's letters and digits),
         and CJK characters one by one ("words+cjk-char"); F1 of ROUGE-1/2/L, averaged over rows.
Results go to `<run>/eval.json`; `read_eval` (standard library only) reads them back for the board.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .config import REFERENCE_FREE, GenerationConfig, RunConfig
from .messages import TuneboardError, message
from .runs import run_and_checkpoint
from .templates import plain_text

EVAL_FILE = "eval.json"
CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{CJK}]")
_ROUGE_TOKEN = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")
EVAL_SETTINGS = dict(temperature=0.0, repetition_penalty=1.0, num_beams=1, seed=0)  # greedy: scores don't depend on luck


# ---- metrics ----------------------------------------------------------------------------


def has_cjk(texts: list[str]) -> bool:
    return any(_CJK_CHAR.search(t or "") for t in texts)


def split_cjk(text: str) -> str:
    """Put spaces around every CJK character so that it counts as a token of its own."""
    return re.sub(r"\s+", " ", _CJK_CHAR.sub(lambda m: f" {m.group(0)} ", text)).strip()


def bleu(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus BLEU (0-100) with one reference per prediction; CJK scored by characters (see above)."""
    from sacrebleu.metrics import BLEU

    cjk = has_cjk(references)
    if cjk:
        predictions, references = [split_cjk(p) for p in predictions], [split_cjk(r) for r in references]
    metric = BLEU(tokenize="13a")
    score = metric.corpus_score(predictions, [references])
    return {"bleu": round(score.score, 4), "bleu_tokenize": "13a+cjk-char" if cjk else "13a",
            "bleu_signature": str(metric.get_signature())}


class RougeTokenizer:
    """rouge-score's tokenizer interface: words in any script, CJK characters one by one, lower-cased."""

    name = "words+cjk-char"

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall((text or "").lower())


def rouge(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F1 (0-100) over the rows, plus each row's ROUGE-L."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=RougeTokenizer())
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    n = max(len(rows), 1)
    out: dict[str, Any] = {k: round(100 * sum(r[k].fmeasure for r in rows) / n, 4) for k in ("rouge1", "rouge2", "rougeL")}
    out["rouge_tokenize"] = RougeTokenizer.name
    out["rougeL_rows"] = [round(100 * r["rougeL"].fmeasure, 2) for r in rows]
    return out


# ---- data -------------------------------------------------------------------------------


def eval_rows(cfg: RunConfig, data: Optional[str] = None, max_samples: Optional[int] = None,
              columns: Optional[dict[str, str]] = None, fmt: Optional[str] = None,
              notes: Optional[list[tuple[str, dict]]] = None) -> tuple[list[dict], str]:
    """The rows to evaluate, shaped for the run's stage, and what they are (`validation` or the file).
    Without `data` this is the run's own validation split, re-created exactly as training made it. `columns` and
    `fmt` read `data` as `tuneboard check --column / --format` would; the file's own warnings (a mapping that
    names no column, columns left unused) are added to `notes`, as training says them."""
    from .data import load_training_data

    if data:
        spec = {"path": data, "max_samples": None, "columns": columns or {}, "format": fmt or "auto"}
        ecfg = cfg.with_overrides({"data.datasets": [spec], "data.val_size": 0.0})
        try:
            rows, _ = load_training_data(ecfg, notes)
        except TuneboardError as e:  # a DPO run asked about plain conversations: perplexity, BLEU and ROUGE
            if e.key != "data.dpo_needs_preference":
                raise
            try:
                rows, _ = load_training_data(ecfg.with_overrides({"stage": "sft"}), notes)
            except TuneboardError as plain:  # said for the DPO run it is, not for an SFT one
                if plain.key == "data.text_for_sft":
                    raise TuneboardError("eval.error_text_for_dpo", path=data) from None
                raise
        name = data
    else:
        if cfg.data.val_size <= 0:
            raise TuneboardError("eval.error_no_split")
        _, rows = load_training_data(cfg)
        name = "validation"
    rows = [r for r in rows.to_list() if r.get("label") is not False]  # a KTO run is scored on its good answers
    return (rows[:max_samples] if max_samples else rows), name


def split_row(row: dict, stage: str) -> tuple[list[dict], Optional[list[dict]], str]:
    """(the whole conversation for the loss, the prompt to answer, the reference answer).
    A pretraining row has no prompt: it is scored by perplexity alone."""
    if stage == "pt" or "text" in row:
        return [{"role": "user", "content": row["text"]}], None, ""
    if "completion" in row:  # KTO's unpaired answer (eval keeps the desirable ones: `eval_rows`)
        return list(row["prompt"]) + list(row["completion"]), list(row["prompt"]), row["completion"][-1]["content"]
    if "prompt" in row:  # a preference pair (DPO's rows; a DPO run asked about conversations gets messages)
        full = list(row["prompt"]) + list(row["chosen"])
        return full, list(row["prompt"]), row["chosen"][-1]["content"]
    msgs = list(row["messages"])
    if msgs and msgs[-1]["role"] == "assistant":
        return msgs, msgs[:-1], msgs[-1]["content"]
    return msgs, None, ""


def loss_pieces(tok, messages: list[dict], stage: str, max_length: int) -> list[tuple[list[int], list[int]]]:
    """A row as training reads it, in (ids, mask) pieces: a pretraining text, ended by EOS, split into pieces of
    the cutoff (all of it scored: a book on one line is not its first cutoff's perplexity); a conversation cut at
    the cutoff, one piece, the mask marking the answers."""
    if stage == "pt" or not tok.chat_template:
        text, eos = plain_text(messages), tok.eos_token
        text = text if not eos or text.endswith(eos) else text + eos  # as the run trained it (prepare._text_batch)
        ids = tok(text, verbose=False)["input_ids"]
        return [(ids[i:i + max_length], [1] * len(ids[i:i + max_length])) for i in range(0, len(ids), max_length)]
    return [loss_tokens(tok, messages, stage, max_length)]


def loss_tokens(tok, messages: list[dict], stage: str, max_length: int) -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation cut at the cutoff: the mask marks the answers, whose likelihood counts."""
    if stage == "pt" or not tok.chat_template:
        return loss_pieces(tok, messages, stage, max_length)[0]
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc.get("assistant_masks") or [])
    if not any(mask):  # a template without {% generation %} marks: score the last answer after its prompt
        prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
        k = len(prompt) if ids[: len(prompt)] == list(prompt) else 0
        mask = [0] * k + [1] * (len(ids) - k)
    return ids[:max_length], mask[:max_length]


def pair_examples(tok, row: dict, max_length: int) -> list[tuple[list[int], list[int]]]:
    """A preference row's (chosen, rejected) as two (ids, mask) examples, each masking its answer."""
    return [loss_tokens(tok, list(row["prompt"]) + list(row[side]), "dpo", max_length) for side in ("chosen", "rejected")]


# ---- perplexity ------------------------------------------------------------------------


def masked_nll(model, tok, examples: list[tuple[list[int], list[int]]], batch_size: int = 4,
               progress: Optional[Callable[[int, int], None]] = None) -> list[tuple[float, int]]:
    """(summed NLL, tokens) of each example's masked tokens."""
    import torch
    import torch.nn.functional as F

    out: list[tuple[float, int]] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (row, mask) in enumerate(batch):  # right padding: positions stay as in training
            ids[i, : len(row)] = torch.tensor(row)
            att[i, : len(row)] = 1
            labels[i, : len(row)] = torch.tensor([t if m else -100 for t, m in zip(row, mask, strict=True)])
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
            shift = labels[:, 1:].to(device)
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), shift, ignore_index=-100, reduction="none")
        out += [(float(n), int(c)) for n, c in zip(nll.sum(1).tolist(), (shift != -100).sum(1).tolist(), strict=True)]
        if progress:
            progress(min(start + batch_size, len(examples)), len(examples))
    return out


def perplexity(model, tok, examples: list[tuple[list[int], list[int]]], batch_size: int = 4,
               progress: Optional[Callable[[int, int], None]] = None) -> dict[str, float]:
    """Token-weighted perplexity over the masked tokens: exp(total NLL / tokens)."""
    sums = masked_nll(model, tok, examples, batch_size, progress)
    total, count = sum(n for n, _ in sums), sum(c for _, c in sums)
    loss = total / max(count, 1)
    return {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 700)), 4), "tokens": count}


def preference(tuned: list[tuple[float, int]], reference: Optional[list[tuple[float, int]]],
               beta: float) -> dict[str, float]:
    """DPO's own scores on held-out pairs, from the summed NLL of (chosen, rejected) alternately under the tuned
    model and its reference (the base): the implicit reward of an answer is beta x (log p_tuned - log p_ref);
    a pair is ranked right when the chosen answer's reward beats the rejected one's (trl's rewards/accuracies).
    With no reference (ORPO, SimPO) the reward is theirs: beta x the answer's average log-probability per token."""
    if reference is None:
        rewards = [-beta * nll / max(count, 1) for nll, count in tuned]
    else:
        rewards = [beta * (r_nll - t_nll) for (t_nll, _), (r_nll, _) in zip(tuned, reference, strict=True)]
    margins = [c - r for c, r in zip(rewards[0::2], rewards[1::2], strict=True)]
    n = max(len(margins), 1)
    return {"pairs": len(margins), "pairs_ranked_right": round(sum(m > 0 for m in margins) / n, 4),
            "reward_margin": round(sum(margins) / n, 4)}


# ---- the whole evaluation ---------------------------------------------------------------


def evaluate_run(run: str, data: Optional[str] = None, max_samples: Optional[int] = 50, max_new_tokens: int = 64,
                 workdir=None, session=None, include_base: bool = True, batch_size: int = 8,
                 progress: Optional[Callable[[str, int, int], None]] = None, save: bool = True,
                 columns: Optional[dict[str, str]] = None, fmt: Optional[str] = None,
                 data_overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Perplexity (tuned, and base for comparison), BLEU and ROUGE of greedy answers against the
    references, and a table of samples; written to `<run>/eval.json`. `session` reuses a loaded
    ChatSession of the same run (the board's worker has one). `columns` / `fmt`: how to read `data`;
    `data_overrides`: `data.*` fields read otherwise than the run did (data.skip_bad_rows, ...)."""
    from .generate import ChatSession, checkpoint_note

    run_dir, checkpoint = run_and_checkpoint(run, workdir)  # (a checkpoint folder: its weights are scored)
    cfg = RunConfig.load(str(run_dir / "config.yaml"))
    if data_overrides:
        if wrong := next((k for k in data_overrides if not k.startswith("data.")), None):
            raise TuneboardError("error.eval_set_data_only", field=wrong)
        cfg = cfg.with_overrides(data_overrides)
    started = time.time()
    own = session is None or not session.loaded or session.run_dir != run_dir or checkpoint is not None
    if own:
        session = ChatSession(workdir)
        session.load(str(run_dir), checkpoint, say=False)  # said with the result's warnings, where a script reads them too
    note = progress or (lambda phase, done, total: None)
    try:
        notes: list[tuple[str, dict]] = []
        rows, data_name = eval_rows(cfg, data, max_samples, columns, fmt, notes)
        if not rows:
            raise TuneboardError("error.empty_dataset")
        tok, stage = session.tokenizer, cfg.stage
        parts = [split_row(r, stage) for r in rows]
        examples = [piece for full, _, _ in parts for piece in loss_pieces(tok, full, stage, cfg.data.max_length)]
        # which weights were scored: a run that never finished is read from its latest checkpoint, and a later
        # resume would otherwise make this look like the finished run's score
        source = Path(session.source)
        if own and (said := checkpoint_note(run_dir, source, checkpoint)):
            notes.insert(0, said)
        result: dict[str, Any] = {"run": run_dir.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "data": data_name, "rows": len(rows), "stage": stage,
                                  "source": str(source.relative_to(run_dir)) if source.is_relative_to(run_dir)
                                  else str(source),
                                  "warnings": [{"key": k, "params": p} for k, p in notes]}  # the data file's own
        model, ctx = session._model_for(True)
        with ctx:
            result.update(perplexity(model, tok, examples, progress=lambda d, t: note("perplexity", d, t)))
        if include_base:
            model, ctx = session._model_for(False)
            with ctx:
                base = perplexity(model, tok, examples, progress=lambda d, t: note("perplexity_base", d, t))
            result.update({"perplexity_base": base["perplexity"], "loss_base": base["loss"]})
        pairs = [p for r in rows if r.get("rejected") for p in pair_examples(tok, r, cfg.data.max_length)] \
            if stage == "dpo" else []
        if pairs:  # a preference run: how it ranks held-out pairs, as trl scored it in training
            scored = []
            model, ctx = session._model_for(True)
            with ctx:
                scored.append(masked_nll(model, tok, pairs, progress=lambda d, t: note("preference", d, t)))
            if cfg.dpo.method in REFERENCE_FREE:  # their rewards read the tuned model alone
                result.update(preference(scored[0], None, cfg.dpo.beta))
            else:
                with reference(session, cfg) as (model, name):
                    scored.append(masked_nll(model, tok, pairs, progress=lambda d, t: note("preference", d, t)))
                result.update(preference(scored[0], scored[1], cfg.dpo.beta), reference_model=name)
        asked = [(p, ref) for _, p, ref in parts if p is not None]
        # a prompt that leaves no room in the model's context for the answer is left out, and said: in a batch it
        # took the room of every other row (all cut to a token or two, BLEU 0); the rest go in batches of similar
        # lengths, so that padding takes no row's room either
        lengths = [session.encode(p)["input_ids"].shape[1] for p, _ in asked]
        limit = session.context_length()
        kept = sorted((i for i, n in enumerate(lengths) if limit is None or n + max_new_tokens <= limit),
                      key=lambda i: lengths[i])
        if len(kept) < len(asked):
            result["prompts_too_long"] = len(asked) - len(kept)
        if kept:
            gen = GenerationConfig(**{**EVAL_SETTINGS, "max_new_tokens": max_new_tokens})
            answered: dict[int, str] = {}
            for start in range(0, len(kept), batch_size):
                chunk = kept[start:start + batch_size]
                for i, a in zip(chunk, session.generate_batch([asked[i][0] for i in chunk], gen), strict=True):
                    answered[i] = a.text.strip()
                note("generate", len(answered), len(kept))
            order = sorted(answered)  # the rows' order again
            preds, refs = [answered[i] for i in order], [asked[i][1] for i in order]
            result.update(bleu(preds, refs))
            scores = rouge(preds, refs)
            per_row = scores.pop("rougeL_rows")
            result.update(scores)
            result["generation"] = {k: v for k, v in gen.__dict__.items()}
            result["samples"] = [{"prompt": _prompt_text(asked[i][0]), "reference": ref, "prediction": pred,
                                  "rougeL": r} for i, ref, pred, r in zip(order, refs, preds, per_row, strict=True)]
        result["seconds"] = round(time.time() - started, 2)
    finally:
        if own:
            session.unload()
    if save:
        write_eval(run_dir, result)
    return result


_REFERENCE = "tuneboard_reference"  # the continued adapter, loaded beside the run's own for the reference's scores


@contextlib.contextmanager
def reference(session, cfg: RunConfig):
    """(model, name) scoring DPO's reference as training did: the base, or, for a run that continued an adapter
    (adapter.init_from: an SFT run's), base + that adapter. `name`: "base", or the continued adapter's folder.
    Scoring against the base instead would credit the DPO run with everything its SFT run learnt."""
    from .adapters import adapter_dir

    found = None
    if cfg.stage == "dpo" and session.is_peft and cfg.adapter.init_from:
        try:
            found = adapter_dir(cfg.adapter.init_from)
        except TuneboardError:
            warning = message("warning.reference_gone", {"path": cfg.adapter.init_from})
            print(f"{message('severity.warning')}: {warning}", file=sys.stderr)
    if found is None:
        model, ctx = session._model_for(False)
        with ctx:
            yield model, "base"
        return
    model = session.model
    own = model.active_adapter
    model.load_adapter(str(found), adapter_name=_REFERENCE, is_trainable=False)
    try:
        model.set_adapter(_REFERENCE, inference_mode=True)
        yield model, str(found)
    finally:  # the session chats with the run's adapter again, and holds no second one
        model.set_adapter(own, inference_mode=True)
        model.delete_adapter(_REFERENCE)


def _prompt_text(messages: list[dict]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def write_eval(run_dir: Path, result: dict[str, Any]) -> Path:
    path = Path(run_dir) / EVAL_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)  # never a half-written eval.json for the board to read
    return path


def read_eval(run_dir) -> Optional[dict[str, Any]]:
    """A run's last evaluation, or None (standard library only: the board calls this)."""
    try:
        return json.loads((Path(run_dir) / EVAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


METRICS = ("perplexity", "perplexity_base", "pairs_ranked_right", "reward_margin", "bleu", "rouge1", "rouge2", "rougeL")


def eval_metrics(run_dir) -> dict[str, float]:
    """eval.json's scores named like the trainer's evaluation metrics (`eval_perplexity`, `eval_bleu`, ...),
    for a run's metrics table."""
    result = read_eval(run_dir) or {}
    return {f"eval_{k}": result[k] for k in METRICS if isinstance(result.get(k), (int, float))}


def metric_text(key: str, value: float, result: dict) -> str:
    if key == "pairs_ranked_right":  # a share, not a count: "1" read as one pair
        pairs = result.get("pairs")
        return f"{value:.0%}" + (f" ({round(value * pairs)}/{pairs})" if isinstance(pairs, int) else "")
    return f"{value:.4g}"


def summary_rows(result: dict[str, Any], lang: str | None = None) -> list[tuple[str, str]]:
    """(label, value) of an evaluation, in `lang`: what the CLI prints and the board's Evaluate card shows."""
    def say(key: str, **params: Any) -> str:
        return message(key, params, lang)

    data = say("eval.validation") if result.get("data") == "validation" else str(result.get("data", ""))
    rows = [(say("eval.data_name"), data), (say("eval.rows"), str(result.get("rows", "")))]
    rows += [(say(f"eval.{k}"), metric_text(k, result[k], result))
             for k in METRICS if isinstance(result.get(k), (int, float))]
    if result.get("reference_model"):  # a DPO run: against what its pairs were scored
        ref = result["reference_model"]
        rows.append((say("eval.reference_model"), say("eval.reference_base") if ref == "base" else ref))
    if result.get("prompts_too_long"):
        rows.append((say("eval.prompts_too_long"), str(result["prompts_too_long"])))
    if result.get("bleu_tokenize"):
        rows.append((say("eval.tokenize"), f"BLEU {result['bleu_tokenize']} · ROUGE {result['rouge_tokenize']}"))
    return rows


def summary(result: dict[str, Any], lang: str | None = None) -> str:
    """A few readable lines for the terminal."""
    rows = summary_rows(result, lang)
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{result['run']}"] + [f"  {label + ':':<{width}}{value}" for label, value in rows]
    ref, pred = message("eval.col_reference", None, lang), message("eval.col_prediction", None, lang)
    for s in (result.get("samples") or [])[:3]:
        lines.append(f"  - {s['prompt'][:60]!r}\n    {ref}: {s['reference'][:80]!r}\n    {pred}: {s['prediction'][:80]!r}")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    def progress(phase: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{phase} {done}/{total}   ", end="", file=sys.stderr, flush=True)

    from .config import parse_columns, parse_overrides

    columns, overrides = parse_columns(args.column), parse_overrides(args.set)
    if (columns or args.format) and not args.data:  # the validation split is read as the run read it
        raise TuneboardError("error.eval_column_needs_data")
    result = evaluate_run(args.run, data=args.data, max_samples=args.max_samples, max_new_tokens=args.max_new_tokens,
                          workdir=args.workdir, progress=progress, columns=columns, fmt=args.format,
                          data_overrides=overrides)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for w in result.get("warnings") or []:  # a mistyped mapping gave plausible scores on the wrong columns, unsaid
        print(f"{message('severity.warning')}: {message(w['key'], w['params'])}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        print(summary(result))
    return 0
