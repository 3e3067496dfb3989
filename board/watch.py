"""One page's view of one run: read new events by offset, keep the curves and the state to show.

A `Watch` lives in the page's session state. Each timer tick calls `advance`, which reads
only what was appended to events.jsonl since the last tick; a fresh Watch on the same run
(a reload, a second tab) reads the file from the start and arrives at the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.events import Error, Finished, LogStep, Progress, RunStarted, Warning

from .charts import Curves
from .jobs import pid_alive, read_new_events

STARTING, RUNNING, FINISHED, STOPPED, FAILED = "starting", "running", "finished", "stopped", "failed"
UNTIL_STARTED = {"warning.building_demo"}  # notices about the wait before training, gone once it starts


@dataclass
class Watch:
    run_id: str = ""
    path: Optional[Path] = None
    offset: int = 0
    status: str = ""
    step: int = 0
    total: int = 0
    elapsed: float = 0.0  # training time of all attempts: a resume continues the clock
    earlier: float = 0.0  # of it, the attempts before the current one
    eta: Optional[float] = None
    pid: int = 0
    started: Optional[float] = None  # when the attempt under `pid` began: a later process with its pid is not it
    device: str = ""
    last_loss: Optional[float] = None
    error: Optional[dict[str, Any]] = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    curves: Curves = field(default_factory=Curves)
    curves_changed: bool = False  # the last advance added or replaced a chart point
    log_size: int = -1
    shown_status: str = ""  # the status the page last drew
    began: Optional[float] = None  # when this page started or resumed the attempt: its "starting for" clock

    @classmethod
    def of(cls, run_id: str, path: Path, began: Optional[float] = None) -> Watch:
        return cls(run_id=run_id, path=path, status=STARTING, began=began)

    @property
    def active(self) -> bool:
        return self.status in (STARTING, RUNNING)

    def advance(self, live: bool = False) -> bool:
        """Read what the run wrote since the last call; `live` says this board's worker is training it.
        True when anything visible changed."""
        self.curves_changed = False
        if self.path is None:
            return False
        events, self.offset = read_new_events(self.path / "events.jsonl", self.offset)
        for ev in events:
            self._apply(ev)
        changed = bool(events)
        self.curves_changed = self.curves.add(events)
        if not live and not events and self.status == RUNNING and not pid_alive(self.pid, self.started):
            self.status = FAILED  # died with no board to record it (a restarted board marks it for good)
            changed = True
        return changed

    def _apply(self, ev: Any) -> None:
        if isinstance(ev, RunStarted):  # also a resume: a new attempt on the same run
            self.status, self.total, self.pid, self.device = RUNNING, ev.total_steps, ev.pid, ev.device
            self.started = ev.time
            self.warnings = [w for w in self.warnings if w["key"] not in UNTIL_STARTED]
            self.earlier = self.elapsed
            self.error, self.final = None, {}
        elif isinstance(ev, Progress):
            self.step, self.total, self.eta = ev.step, ev.total_steps, ev.eta_seconds
            self.elapsed = self.earlier + ev.elapsed_seconds
        elif isinstance(ev, LogStep):
            self.step = max(self.step, ev.step)
            if ev.loss is not None:
                self.last_loss = ev.loss
        elif isinstance(ev, Warning):
            self.warnings.append({"key": ev.key, "params": ev.params, "message": ev.message})
        elif isinstance(ev, Error):
            self.error = {"key": ev.key, "params": ev.params, "message": ev.message, "traceback": ev.traceback}
        elif isinstance(ev, Finished):
            self.status, self.final = ev.status, dict(ev.metrics)
            self.step = max(self.step, ev.step)
            self.eta = None
