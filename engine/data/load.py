"""RunConfig.data -> the (train, eval) datasets a trainer consumes, checked first.

Columns by stage (docs/CONTRACTS.md):
  sft  messages: [{role: system|user|assistant, content}]   (preference rows: prompt + chosen;
       prompt-completion rows: prompt + completion; the prompt's own answers as context, weight 0)
  pt   text: str   (chat rows: their contents joined by blank lines; preference: prompt + chosen)
  dpo  prompt: messages ending with the user; chosen / rejected: [{role: assistant, content}]
`max_samples` keeps a seeded random sample of a dataset (in file order); datasets are merged,
shuffled with `data.shuffle_seed` (default `training.seed`) and `val_size` rows are split off.
"""

from __future__ import annotations

import random
import shlex
from typing import TYPE_CHECKING, Any

from ..messages import TuneboardError
from ..templates import plain_text
from .check import Analysis
from .findings import Finding
from .formats import tools_only
from .report import inspect_path
from .sources import Source

# file-level problems whose own message names the file or dataset; others go through error.data_invalid
NAMED_KEYS = {"data.file_not_found", "data.not_a_file", "data.unsupported_file", "data.read_failed",
              "data.hub_offline", "data.hub_failed", "data.binary_file", "data.spreadsheet_file"}

if TYPE_CHECKING:
    import datasets

    from ..config import DatasetSpec, RunConfig


def read_spec(spec: DatasetSpec, tokenizer: Any = None, max_length: int | None = None,
              stage: str | None = None) -> tuple[Source, Analysis]:
    """Read and check one `DatasetSpec` (its path, format, column mapping and split) for `stage`."""
    return inspect_path(spec.path, spec.format, spec.columns, spec.split, tokenizer, max_length, stage)


def skippable(errors: list[Finding], good: int) -> bool:
    """Whether `data.skip_bad_rows` can train on the rest: every error is a row's, and some rows (`good`) are."""
    return good > 0 and all(f.row is not None for f in errors)


def describe(path: str, f: Finding) -> str:
    """`data.jsonl row 3, field output: the field output is empty` (English, for error messages)."""
    where = f.where()
    return f"{path}{' ' + where if where else ''}: {f.message()}"


def to_stage(record: dict, stage: str, system_prompt: str | None, mask_history: bool = False) -> dict:
    """A normalised row in the form `stage` trains on (see the module's table); `mask_history`: SFT on a
    conversation's last answer alone, its earlier answers context."""
    if "text" in record:
        return {"text": record["text"]}
    if "messages" in record:
        prompt, answer, rejected = record["messages"][:-1], record["messages"][-1:], None
    elif "label" in record and stage == "dpo":  # KTO's unpaired answer, as trl's KTOTrainer reads it
        prompt = with_system_prompt(record["prompt"], system_prompt)
        return {"prompt": prompt, "completion": record["completion"], "label": record["label"]}
    elif "completion" in record:
        prompt, answer, rejected = record["prompt"], record["completion"], None
    else:
        prompt, answer, rejected = record["prompt"], record["chosen"], record.get("rejected")
    prompt = with_system_prompt(prompt, system_prompt)
    if stage == "pt":
        return {"text": plain_text(prompt + answer)}
    if stage == "dpo":
        return {"prompt": prompt, "chosen": answer, "rejected": rejected}
    if "messages" in record and not mask_history:
        return {"messages": prompt + answer}
    # a prompt's earlier answers are context, as trl trains a prompt-completion row on its completion alone (an
    # HH-RLHF prompt holds red-team answers nobody judged; only the chosen answer was)
    return {"messages": [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt] + answer}


def with_system_prompt(prompt: list[dict], system_prompt: str | None) -> list[dict]:
    """The run's default system prompt in front of a prompt that has none (before a tools-only one's tools)."""
    if system_prompt and prompt and prompt[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *prompt]
    if system_prompt and prompt and tools_only(prompt[0]):  # the run's prompt, then the row's tools
        return [{"role": "system", "content": f"{system_prompt}\n\n{prompt[0]['content']}"}, *prompt[1:]]
    return prompt


def stage_refusal(fmt: str, stage: str, path: str, method: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """Why a stage cannot train on data of this format (key, params), or None; the board says it before Start.
    `method`: the preference stage's (dpo / kto / orpo / simpo), where known: KTO takes either, the others pairs."""
    if stage == "sft" and fmt == "text":
        return "data.text_for_sft", {"path": path}
    if stage == "dpo" and fmt not in ("preference", "unpaired"):
        return "data.dpo_needs_preference", {"path": path, "format": fmt}
    if stage == "dpo" and fmt == "unpaired" and method not in (None, "kto"):  # DPO, ORPO and SimPO need pairs
        return "data.unpaired_needs_kto", {"path": path}
    return None


# what a stage does with a file of another kind than its own, said as a warning (training goes on)
STAGE_NOTES = {("sft", "preference"): "warning.sft_on_preference", ("pt", "chat"): "warning.pt_on_chat",
               ("sft", "unpaired"): "warning.sft_on_unpaired", ("pt", "unpaired"): "warning.pt_on_unpaired"}


def stage_note(fmt: str, stage: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The warning training gives for a file it takes in another form than the file's (key, params), or None."""
    key = STAGE_NOTES.get((stage, "chat" if stage == "pt" and fmt not in ("text", "unpaired") else fmt))
    return (key, {"path": path}) if key else None


def for_stage(report: Any, stage: str, tokenizer: Any = None, max_length: int | None = None,
              system_prompt: str | None = None, assistant_only: bool = True, path: str | None = None,
              method: str | None = None, mask_history: bool = False) -> list[dict]:
    """A checked file (`FileReport`) as `stage` will train it: what the stage refuses (severity error) or takes
    in another form (warning), as {"key", "params", "severity"}; and its preview drawn again as the stage sees
    the rows: a conversation as the plain text pretraining reads, the system prompt a run adds
    (`data.system_prompt`), a preference pair's chosen answer for SFT."""
    from .preview import render

    if not report.rows or report.format is None:
        return []
    name = path or report.path
    out = []
    if refusal := stage_refusal(report.format, stage, name, method):
        out.append({"key": refusal[0], "params": refusal[1], "severity": "error"})
    elif note := stage_note(report.format, stage, name):
        out.append({"key": note[0], "params": note[1], "severity": "warning"})
    if refusal is None and (note is not None or system_prompt or (mask_history and stage == "sft")):
        for item in report.preview:
            record = to_stage(item["record"], stage, system_prompt, mask_history)
            item["views"] = render(record, tokenizer, assistant_only and stage == "sft", max_length)
    return out


def _unpaired(row: dict) -> list[dict]:
    """A preference pair as KTO's two unpaired answers (the chosen desirable, the rejected not); others as they are."""
    if "chosen" not in row:
        return [row]
    return [{"prompt": row["prompt"], "completion": row["chosen"], "label": True},
            {"prompt": row["prompt"], "completion": row["rejected"], "label": False}]


def check_args(spec: DatasetSpec, path: str) -> str:
    """`tuneboard check`'s arguments that read `path` as `spec` does: the file alone reads another format, or
    none, where a mapping or a format was given."""
    args = [shlex.quote(path)]
    if spec.format != "auto":
        args += ["--format", spec.format]
    if spec.columns:
        args += ["--column", shlex.quote(", ".join(f"{ours}={theirs}" for ours, theirs in spec.columns.items()))]
    return " ".join(args)


def load_training_data(cfg: RunConfig, notes: list[tuple[str, dict]] | None = None,
                       ) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Read, check, normalise, sample, merge, shuffle and split `cfg.data` for `cfg.stage`. A file with
    warnings of its own (read in a guessed encoding, ...) adds one (key, params) to `notes`."""
    import datasets

    stage, data = cfg.stage, cfg.data
    seed = data.shuffle_seed if data.shuffle_seed is not None else cfg.training.seed
    rows: list[dict] = []
    undesirable = 0  # KTO's answers marked undesirable, which SFT and pretraining leave out
    for spec in data.datasets:
        src, result = read_spec(spec, stage=stage)
        problems = [f for f in result.findings if f.severity == "error"]
        if problems and problems[0].key in NAMED_KEYS and not result.records:  # the message names the file
            raise TuneboardError(problems[0].key, **problems[0].params)
        if problems and not (data.skip_bad_rows and skippable(problems, len(result.good))):
            key = "error.data_invalid_rows" if skippable(problems, len(result.good)) else "error.data_invalid"
            first = next((f for f in problems if f.row is None), problems[0])  # the whole file's problem first
            raise TuneboardError(key, count=len(problems), first=describe(src.path, first), path=src.path,
                                 good=len(result.good))
        if problems and notes is not None:  # skip_bad_rows: the rows with errors left out, said
            bad = len({f.row for f in problems})  # rows that did not parse too
            notes.append(("warning.bad_rows_skipped", {"count": bad, "total": len(result.good) + bad, "path": src.path,
                                                       "first": describe(src.path, problems[0])}))
        refusal = stage_refusal(result.format, stage, src.path, cfg.dpo.method)
        if refusal:
            raise TuneboardError(refusal[0], **refusal[1])
        if notes is not None and (note := stage_note(result.format, stage, src.path)):
            notes.append(note)
        # the file's own warnings (a guessed encoding, columns left unused), which a run has no other way to say;
        # row warnings are the Data tab's and `tuneboard check`'s, and the cutoff is said by the run itself
        warnings = [f for f in result.findings if f.severity == "warning" and f.row is None
                    and f.key not in ("data.too_long", "data.too_long_split")]
        if warnings and notes is not None:
            notes.append(("warning.data_warnings", {"count": len(warnings), "path": check_args(spec, src.path),
                                                    "first": describe(src.path, warnings[0])}))
        records = result.good
        if spec.max_samples is not None and spec.max_samples < len(records):
            keep = sorted(random.Random(seed).sample(range(len(records)), spec.max_samples))
            records = [records[i] for i in keep]
        if stage != "dpo":  # KTO's undesirable answers: SFT and pretraining learn from the desirable ones alone
            desirable = [r for r in records if r.get("label") is not False]
            undesirable += len(records) - len(desirable)
            records = desirable
        rows += [to_stage(r, stage, data.system_prompt, data.mask_history and stage == "sft") for r in records]
    if stage == "dpo" and any("label" in r for r in rows) and any("chosen" in r for r in rows):
        rows = [u for r in rows for u in _unpaired(r)]  # KTO on pairs and unpaired answers at once: all unpaired
    if not rows and undesirable:
        raise TuneboardError("error.only_undesirable", count=undesirable, stage=stage.upper())
    if not rows:
        raise TuneboardError("error.empty_dataset")
    random.Random(seed).shuffle(rows)
    n_val = max(1, round(data.val_size * len(rows))) if data.val_size < 1 else int(data.val_size)
    n_val = n_val if data.val_size > 0 else 0
    if n_val >= len(rows):
        raise TuneboardError("data.val_size_too_large", val_size=data.val_size, rows=len(rows))
    train = datasets.Dataset.from_list(rows[n_val:])
    return train, (datasets.Dataset.from_list(rows[:n_val]) if n_val else None)
