"""`tuneboard check FILE... [--format F] [--stage S] [--model M] [--max-length N] [--column ours=theirs] [--json]`.

Prints, per file, the detected format, the findings (the first few of each kind, with counts)
and the token statistics; `--json` prints one document instead (the same data the board shows).
Exit code 0 when every file is trainable (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from ..config import ConfigError, parse_columns
from ..messages import TuneboardError, message, table
from .check import FORMAT_LIST, canonical_format
from .preview import marked
from .report import FileReport, check_file
from .tokens import load_tokenizer

SHOWN_PER_KIND = 5  # in the terminal; --json carries up to LIMIT
LIMIT = 20


def cmd_check(args: Any) -> int:
    fmt = getattr(args, "format", "auto") or "auto"
    if canonical_format(fmt) is None:
        raise TuneboardError("data.unknown_format", format=fmt, formats=FORMAT_LIST)
    columns = parse_columns(getattr(args, "column", None))
    tokenizer = load_tokenizer(getattr(args, "model", None))
    max_length = getattr(args, "max_length", None)
    max_length = 1024 if max_length is None else max_length  # 0 is refused below, not taken for the default
    if max_length < 8:  # as data.max_length in a config
        raise ConfigError("--max-length", "error.config.range", f"must be >= 8, got {max_length}", value=max_length,
                          bound=">= 8")
    stage, method = getattr(args, "stage", None), None
    if stage in ("dpo", "kto", "orpo", "simpo"):  # the preference stage, with the method train would use
        stage, method = "dpo", stage
    limit = sys.maxsize if args.json else LIMIT  # a script reading --json gets every bad row
    reports = [check_file(path, fmt, columns=columns, tokenizer=tokenizer, max_length=max_length, limit=limit,
                          preview_rows=3 if args.json else 1, assistant_only=stage != "pt", stage=stage)
               for path in args.files]
    if stage:  # as that stage will train each file: what it refuses, what it takes in another form
        from .load import for_stage

        for report in reports:
            report.stage_findings = for_stage(report, stage, tokenizer, max_length, method=method)
    ok = all(r.trainable for r in reports)
    mixed = None if stage else mixed_stages(reports)
    if args.json:
        doc = {"trainable": ok, "max_length": max_length, "files": [r.to_dict() for r in reports]}
        if mixed:
            doc["notes"] = [{"key": "data.cli.mixed_stages", "params": {"stages": mixed},
                             "message": message("data.cli.mixed_stages", {"stages": mixed})}]
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n")
    else:
        for report in reports:
            _print_report(report)
        if mixed:
            print(message("data.cli.mixed_stages", {"stages": mixed}))
    return 0 if ok else 1


NATURAL_STAGE = {"text": "pt", "preference": "dpo", "unpaired": "dpo"}  # the others: conversations, for SFT


def mixed_stages(reports: list[FileReport]) -> str | None:
    """`sft: a.json; dpo: b.jsonl` where the files checked together suit different stages (each alone passed,
    and a run of all of them trains one), else None."""
    from pathlib import Path

    by: dict[str, list[str]] = {}
    for r in reports:
        if r.format:
            by.setdefault(NATURAL_STAGE.get(r.format, "sft"), []).append(Path(r.path).name)
    return "; ".join(f"{s}: {', '.join(names)}" for s, names in by.items()) if len(by) > 1 else None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")  # not newline or tab


def _visible(text: str) -> str:
    """Control characters from the data shown as escapes: an ESC sequence in a row must not drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _print_report(r: FileReport) -> None:
    kind = "ui.data.kind_" + (r.kind or "?").replace(" ", "_").replace("-", "_")  # in the reader's words, as the board
    kind = message(kind) if kind in table() else r.kind or "?"
    if r.format is None:  # the file's first error says why; `? (?)` said nothing
        key = "data.cli.file_unknown" if r.rows_in_file else "data.cli.file_unread"
        print(message(key, {"path": r.path, "rows": r.rows_in_file}))
    else:
        print(message("data.cli.file", {"path": r.path, "format": r.format, "kind": kind, "rows": r.rows_in_file}))
    for f in r.stage_findings:  # the stage's word on the whole file first
        print(f"  {message('severity.' + f['severity']):<7} {_visible(message(f['key'], f['params']))}")
    shown: dict[str, int] = {}
    for f in r.findings:
        shown[f.key] = shown.get(f.key, 0) + 1
        if shown[f.key] > SHOWN_PER_KIND:
            continue
        where = f.where()
        print(f"  {message('severity.' + f.severity):<7} {where + ': ' if where else ''}{_visible(f.message())}")
        if shown[f.key] == SHOWN_PER_KIND and r.counts[f.key] > SHOWN_PER_KIND:
            print("          " + message("data.cli.more", {"count": r.counts[f.key] - SHOWN_PER_KIND}))
    s = r.stats
    if s.get("rows"):
        est = {"estimate": message("data.cli.estimated"), "calibrated": message("data.cli.calibrated")}.get(s["counting"], "")
        print("  " + message("data.cli.tokens", {**s, "estimated": est}))
        if "max_length" in s:
            key = "data.cli.cutoff_split" if s.get("split") else "data.cli.cutoff"  # a text is split, not cut
            left = s.get("left_out", 0)
            key = "data.cli.cutoff_left_out" if left else key  # a row whose answer starts past it: left out, not cut
            print("  " + message(key, {"max_length": s["max_length"], "over": s["over_cutoff"] - left, "count": left,
                                       "cut": s["tokens_cut"], "packed": s["packed_sequences"]}))
    for item in r.preview:
        for view in item["views"]:
            label = f" [{view['label']}]" if view["label"] else ""
            print("  " + message("data.cli.preview", {"row": item["row"], "tokens": view["tokens"],
                                                      "loss": view["loss_tokens"]}) + label)
            cut = "\n" + message("data.cli.cut", {"max_length": view.get("cut_at")})
            text = _visible(marked(view, cut=cut))
            text = text if len(text) <= 1200 else text[:1200] + " ..."
            print("    " + text.replace("\n", "\n    "))
    verdict = message("data.cli.trainable" if r.trainable else "data.cli.not_trainable")
    counts = {"errors": r.all_errors, "warnings": r.all_warnings}
    print("  " + message("data.cli.summary", counts) + f" - {verdict}\n")
