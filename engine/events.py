"""Typed events a run emits (standard library only): the engine writes them, the board and CLI read them.

Each event is one JSON line in `runs/<id>/events.jsonl` and one message on the worker's queue,
so a page reload or a board restart redraws a run from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Event:
    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        return _NAMES[type(self)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


@dataclass
class RunStarted(Event):
    run_id: str
    stage: str
    total_steps: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    attn_implementation: str = "sdpa"
    trainable_params: int = 0
    total_params: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    chat_template: str = ""
    pid: int = 0
    choices: list[str] = field(default_factory=list)  # what the engine chose for speed and memory (resolved.json)


@dataclass
class LogStep(Event):
    step: int
    loss: Optional[float] = None
    learning_rate: Optional[float] = None
    grad_norm: Optional[float] = None
    epoch: Optional[float] = None
    tokens_per_second: Optional[float] = None
    memory_gb: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)  # stage-specific: DPO rewards, margins, ...


@dataclass
class Progress(Event):
    step: int
    total_steps: int
    elapsed_seconds: float = 0.0
    eta_seconds: Optional[float] = None


@dataclass
class Evaluation(Event):
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class CheckpointSaved(Event):
    step: int
    path: str


@dataclass
class Warning(Event):  # noqa: A001 - the event's name in events.jsonl
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass
class Error(Event):
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    traceback: str = ""


@dataclass
class Finished(Event):
    status: str  # finished | stopped | failed
    step: int = 0
    output_dir: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


_NAMES: dict[type, str] = {
    RunStarted: "run_started", LogStep: "log", Progress: "progress", Evaluation: "evaluation",
    CheckpointSaved: "checkpoint", Warning: "warning", Error: "error", Finished: "finished",
}
_TYPES = {v: k for k, v in _NAMES.items()}


def from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    cls = _TYPES[data.pop("type")]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def from_json(line: str) -> Event:
    return from_dict(json.loads(line))


def read_events(path: str) -> list[Event]:
    """Read an events.jsonl, skipping a torn last line from a killed process."""
    out: list[Event] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(from_json(line))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return out
