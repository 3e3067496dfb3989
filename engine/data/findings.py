"""Findings: what the data check says about a file, row by row (standard library only).

A finding names where (row, and the line the row starts on when the file has lines), what
(the field as the file spells it), how bad (error blocks training, warning does not) and why
(a message key from locales/ with its parameters), so the CLI and the board say the same thing.

Row numbers are counted the way a person finds the row in the file:
  JSONL      the 1-based position among the file's rows (blank and comment lines are not rows); `line` is its
             line, said beside the row where the two differ ("row 7 (line 9)")
  JSON       the 1-based position in the array; `line` is where the row's `{` is
  CSV/TSV    the row as a spreadsheet numbers it, the header being row 1 (first data row: 2; a cell holding
             line breaks is one row); `line` is where the record starts
  text       the line the sample starts on
  Parquet, hub datasets, dict-of-columns JSON: the 1-based position
A finding about the whole file has row None.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from ..messages import message

Severity = Literal["error", "warning"]


@dataclass
class Finding:
    row: int | None
    field: str | None
    severity: Severity
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    def message(self, lang: str | None = None) -> str:
        return message(self.key, {"row": self.row, "line": self.line, "field": self.field, **self.params}, lang)

    def where(self, lang: str | None = None) -> str:
        """`row 3 (line 17), field output` — the place, for one-line summaries."""
        parts = []
        if self.row is not None:
            same = self.line in (None, self.row)
            parts.append(message("where.row" if same else "where.row_line", {"row": self.row, "line": self.line}, lang))
        elif self.line is not None:
            parts.append(message("where.line", {"line": self.line}, lang))
        if self.field:
            parts.append(message("where.field", {"field": self.field}, lang))
        return ", ".join(parts)

    def to_dict(self, lang: str | None = None) -> dict[str, Any]:
        return {"row": self.row, "line": self.line, "field": self.field, "severity": self.severity,
                "key": self.key, "params": self.params, "message": self.message(lang)}


def error(row: int | None, field: str | None, key: str, line: int | None = None, **params: Any) -> Finding:
    return Finding(row, field, "error", key, params, line)


def warning(row: int | None, field: str | None, key: str, line: int | None = None, **params: Any) -> Finding:
    return Finding(row, field, "warning", key, params, line)


def summarize(findings: list[Finding], limit: int = 20) -> tuple[list[Finding], dict[str, int]]:
    """The first `limit` findings of each key (errors first, in file order) and how many of each there are."""
    counts = Counter(f.key for f in findings)
    seen: Counter[str] = Counter()
    kept = []
    order = sorted(findings, key=lambda f: (f.severity != "error", f.row is not None, f.row or 0))
    for f in order:
        seen[f.key] += 1
        if seen[f.key] <= limit:
            kept.append(f)
    return kept, dict(counts)
