"""One open page's state on the server: its language, the run it watches, what its data check found.

Kept in a single `gr.State(Session)` that handlers change in place (never replace), so the
timer's tick and a button's click on the same page cannot overwrite each other's work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .watch import Watch


@dataclass
class DataReport:
    """The last data check, kept as keys so it can be said again in another language."""

    checked: bool = False
    errors: int = 0
    warnings: int = 0
    first_error: dict[str, Any] = field(default_factory=dict)  # {"key", "params", "row", "path"}
    signature: str = ""  # what was checked (paths, format, columns, cutoff, stage)
    skipped: list[str] = field(default_factory=list)  # files whose rows with errors a run leaves out (skip_bad_rows)
    skippable: bool = False  # every error is a row's, in files with good rows: "Skip rows with errors" would train


def _start_fields() -> dict[str, Any]:
    from .form import start_config

    return start_config().to_dict()


class Session:
    """Not a dataclass on purpose: Gradio would try to serialise a dataclass default into the page."""

    def __init__(self, lang: str = "en"):
        self.lang = lang
        self.watch = Watch()
        self.data = DataReport()
        self.data_reports: list[Any] = []  # engine.data FileReports of the last check
        self.data_cutoff = 1024
        self.form_error: dict[str, Any] | None = None  # a value on the page Start would refuse: {"key", "params"}
        self.form_seen: dict[str, Any] | None = None  # the fields' values when their change listener last ran
        self.model_error: dict[str, Any] | None = None  # the model can't be had (offline, not there): {"key", "params"}
        # a loaded config's fields the page has no control for; a new page starts from the sft_demo preset
        self.base: dict[str, Any] = _start_fields()
        self.picked_runs: dict[str, str] = {}  # run pickers (chat, eval, export) the reader set: {elem id: run}
        self.lock = threading.RLock()

    def __deepcopy__(self, memo: dict) -> Session:
        return Session(lang=self.lang)  # Gradio copies the default per page: each page starts fresh
