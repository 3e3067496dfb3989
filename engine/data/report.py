"""One file's whole check, as the CLI prints it and the board's data tab shows it.

`check_file` = read (sources) + detect / normalise / check (check) + preview and statistics
(preview); `FileReport.to_dict()` is the JSON `tuneboard check --json` prints for each file.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import Any

from ..messages import message
from .check import Analysis, analyze
from .findings import Finding, summarize
from .preview import preview, stats
from .sources import Source, read_source


def inspect_path(path: str, fmt: str = "auto", columns: dict[str, str] | None = None, split: str = "train",
                 tokenizer: Any = None, max_length: int | None = None, stage: str | None = None,
                 ) -> tuple[Source, Analysis]:
    """Read and check one dataset (for `stage`, where known); reading's findings come first in the Analysis."""
    with _collector_paused():
        src = read_source(path, split)
        if not src.rows:
            return src, Analysis(None, findings=list(src.findings))
        result = analyze(src.rows, fmt, columns=columns, numbers=src.numbers, lines=src.lines,
                         tokenizer=tokenizer, max_length=max_length, measure=max_length is not None, stage=stage,
                         controls=src.controls or src.kind in ("parquet", "arrow", "hub"))  # (not searched as text)
    result.findings[:0] = src.findings
    return src, result


@contextlib.contextmanager
def _collector_paused():
    """Reading and checking 100,000 rows makes millions of objects that form no cycles: Python's cycle collector
    walking them again and again took a fifth of the check's time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class FileReport:
    path: str
    source: str  # json | jsonl | csv | parquet | text | hub | missing | ...
    format: str | None
    kind: str | None  # trl's name for the normalised form
    rows: int  # rows read (parsed)
    valid: int  # rows without errors
    findings: list[Finding] = field(default_factory=list)  # the first `limit` of each key
    counts: dict[str, int] = field(default_factory=dict)  # every finding, by key
    errors: int = 0
    warnings: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    preview: list[dict[str, Any]] = field(default_factory=list)
    # what the run's stage refuses or takes in another form (load.for_stage): {"key", "params", "severity"}
    stage_findings: list[dict[str, Any]] = field(default_factory=list)
    unparsed: int = 0  # rows (lines, records) that could not be read at all: each is an error at its row

    @property
    def stage_errors(self) -> list[dict[str, Any]]:
        return [f for f in self.stage_findings if f["severity"] == "error"]

    @property
    def all_errors(self) -> int:
        """The file's errors and its stage's refusals."""
        return self.errors + len(self.stage_errors)

    @property
    def all_warnings(self) -> int:
        """The file's warnings and its stage's notes."""
        return self.warnings + len(self.stage_findings) - len(self.stage_errors)

    @property
    def trainable(self) -> bool:
        return self.all_errors == 0 and self.valid > 0

    @property
    def rows_in_file(self) -> int:
        """The rows the file holds, read or not: what a person counts in it."""
        return self.rows + self.unparsed

    @property
    def usable(self) -> int:
        """The rows the run's stage can train: none where it refuses the file."""
        return 0 if self.stage_errors else self.valid

    def to_dict(self, lang: str | None = None) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "format": self.format, "kind": self.kind,
                "rows": self.rows, "unparsed": self.unparsed, "valid": self.valid, "trainable": self.trainable,
                "errors": self.errors,
                "warnings": self.warnings, "counts": self.counts,
                "findings": [f.to_dict(lang) for f in self.findings], "stats": self.stats, "preview": self.preview,
                "stage_findings": [{**f, "message": message(f["key"], f["params"], lang)} for f in self.stage_findings]}


STAGE_FORMATS = {"dpo": ("preference", "unpaired"), "pt": ("text",)}  # what a stage can train, where it is one format
# what a chat template and answer-only loss make of a conversation, which pretraining's plain text is without
CHAT_ONLY_KEYS = ("data.system_some_rows", "data.all_weight_zero")


def check_file(path: str, fmt: str = "auto", *, columns: dict[str, str] | None = None, split: str = "train",
               tokenizer: Any = None, max_length: int | None = 1024, limit: int = 20, preview_rows: int = 3,
               assistant_only: bool = True, stage: str | None = None) -> FileReport:
    """Everything `tuneboard check` says about one file (or hub dataset); `stage`: the run's, when known."""
    src, result = inspect_path(path, fmt, columns, split, tokenizer, max_length, stage)
    if stage in STAGE_FORMATS:  # columns no format knows: the nearest of the formats this stage trains
        from .check import _keys, unknown_columns
        from .formats import map_columns

        result.findings = [unknown_columns(_keys([map_columns(r, columns) for r in src.rows]), STAGE_FORMATS[stage])
                           if f.key == "data.unknown_columns" else f for f in result.findings]
    good = result.good
    weightless = sum(f.key == "data.all_weight_zero" for f in result.findings)
    if assistant_only and stage != "pt" and good and weightless == len(good):  # training finds no answer to learn
        from .check import ANSWER_FIELD
        from .findings import error

        field = (columns or {}).get(ANSWER_FIELD[result.format], ANSWER_FIELD[result.format])
        result.findings.append(error(None, field, "data.every_answer_weight_zero", rows=len(good)))
    numbers = [n for r, n in zip(result.records, result.numbers, strict=False) if r is not None]
    lengths, as_text = result.lengths, result.format == "text"
    if stage == "pt" and good and result.format not in (None, "text") and lengths is not None:
        from .check import CUTOFF_KEYS, _too_long
        from .load import to_stage
        from .tokens import count

        # pretraining reads a conversation as its plain contents, split at the cutoff: measured and said as such
        # (the chat template's lengths said more tokens than train, a cut where the text is split, and a row
        # whose prompt fills the cutoff left out, where pretraining trains on it)
        lengths, as_text = count(tokenizer, [to_stage(r, "pt", None)["text"] for r in good]), True
        result.findings = [f for f in result.findings if f.key not in CUTOFF_KEYS + CHAT_ONLY_KEYS]
        result.lengths = lengths
        if max_length:
            kept_at = [i for i, r in enumerate(result.records) if r is not None]
            _too_long(result, kept_at, max_length, at=(lambda i: src.lines[i]) if src.lines else None, split=True)
    shown = list(zip(good, numbers, strict=False))
    if stage in ("sft", "pt") and result.format == "unpaired":  # KTO's undesirable answers don't train here: the
        shown = [(r, n) for r, n in shown if r.get("label") is not False]  # preview shows what does
    kept, counts = summarize(result.findings, limit)
    return FileReport(
        path=src.path, source=src.kind, format=result.format, kind=result.trl_kind, rows=len(src.rows),
        valid=len(good), findings=kept, counts=counts, errors=result.errors,
        unparsed=len({f.row for f in src.findings if f.severity == "error" and f.row is not None} - set(src.numbers)),
        warnings=sum(f.severity == "warning" for f in result.findings),
        stats=stats(lengths, max_length, result.counting, split=as_text, left_out=None if as_text else result.left_out),
        preview=preview([r for r, _ in shown], [n for _, n in shown], tokenizer, preview_rows, assistant_only,
                        max_length),
    )
