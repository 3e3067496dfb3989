"""Data: read any common file, detect its format, check it row by row, normalise it for training.

read (sources.py) -> detect + normalise (formats.py) -> check (check.py) -> render + stats
(preview.py); `load_training_data` (load.py) is what the trainer calls, `check_file`
(report.py) what the CLI and the board's data tab call.
"""

from .check import Analysis, analyze, canonical_format, check
from .findings import Finding, summarize
from .formats import FORMATS, TRL_KIND, detect_format, normalize_row
from .load import load_training_data, read_spec
from .preview import marked, preview, render, stats
from .report import FileReport, check_file, inspect_path
from .sources import Source, read_source, resolve_data_path

__all__ = [
    "FORMATS", "TRL_KIND", "Analysis", "FileReport", "Finding", "Source", "analyze", "canonical_format",
    "check", "check_file", "detect_format", "inspect_path", "load_training_data", "marked", "normalize_row",
    "preview", "read_source", "read_spec", "render", "resolve_data_path", "stats", "summarize",
]
