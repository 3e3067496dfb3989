"""Spawn, stop and reattach the training worker; read a run's events and log back by offset.

The engine runs in a child process started with the `spawn` method (the board process never
loads torch). The child writes every event to `runs/<id>/events.jsonl` and puts it on a queue;
the board drains the queue and reads the file, so a reload, a second tab or a restarted board
all see the same run. One run at a time: a second Start while one runs is refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.config import RunConfig
from engine.events import Error, Event, Finished, RunStarted, from_json
from engine.messages import TuneboardError, message
from engine.runs import RUNNING, STOP_FILE, create_run, latest_checkpoint, list_runs, pid_alive, run_info
from engine.train import resume_checkpoint

from .safety import run_path

WORKER_LOG = "worker.log"  # the child's stdout/stderr: library warnings, a crash before the engine logs


def _child(config_dict: dict, run_dir: str, queue, stop_event, workdir: str, env: dict[str, str]) -> None:
    """The spawned process: detach, send output to worker.log, run the engine's job."""
    os.setsid()  # Ctrl+C in the board's terminal or the board dying must not kill the run
    os.environ.update(env)  # e.g. HF_TOKEN: passed in memory, never written to the run folder
    fd = os.open(Path(run_dir) / WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from engine.worker import run_job

    run_job(config_dict, run_dir, queue, stop_event, workdir)  # the engine also watches the run's STOP_FILE


@dataclass
class _Live:
    run_id: str
    path: Path
    process: Any
    queue: Any
    stop: Any
    offset: int  # events.jsonl's size at spawn: what came after belongs to this attempt
    thread: Optional[threading.Thread] = None
    finished: bool = False  # the worker said how it ended; its process may still be exiting

    @property
    def training(self) -> bool:
        return not self.finished and (self.process.is_alive() or bool(self.thread and self.thread.is_alive()))


def read_new_events(path: Path, offset: int) -> tuple[list[Event], int]:
    """Events appended to `path` since byte `offset`, and the new offset (complete lines only)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if size < offset:  # the file was replaced: start over
        offset = 0
    if size == offset:
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(from_json(line.decode("utf-8")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return out, offset + end


def read_tail(path: Path, max_bytes: int = 16_000) -> str:
    """The end of a text file (a log), starting at a line boundary."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


def _append_events(path: Path, *events: Event) -> None:
    with open(path / "events.jsonl", "a", encoding="utf-8") as f:
        for ev in events:
            f.write(ev.to_json() + "\n")


def died_events(path: Path, code: Any) -> tuple[Error, Finished]:
    """What the board records for a worker that ended without saying how: failed, with its output."""
    tail = read_tail(path / WORKER_LOG, 8_000)
    params = {"code": code}
    # killed (SIGKILL: the kernel's out-of-memory killer, most often), or ended with nothing said: the message
    # must not send the reader to an output that is not there
    key = "ui.error.worker_killed" if code == -9 else "ui.error.worker_died" if tail.strip() else \
        "ui.error.worker_died_silent"
    return (
        Error(key=key, params=params, message=message(key, params), traceback=tail),
        Finished(status="failed"),
    )


def _refuse_if(running: Optional[str]) -> None:
    """One run at a time: a Start or Resume while `running` holds the GPU is refused."""
    if running:
        raise TuneboardError("ui.error.busy", run=running)


def _open_attempt(events: list[Event]) -> bool:
    """True when the last attempt in these events started (or was created) and never finished."""
    last_start = max((i for i, e in enumerate(events) if isinstance(e, RunStarted)), default=-1)
    return not any(isinstance(e, Finished) for e in events[last_start + 1 :])


class Jobs:
    """The workdir's runs as the board sees them: at most one live worker, spawned by this board or found running."""

    def __init__(self, workdir: str | os.PathLike, target: Any = None):
        self.workdir = Path(workdir).resolve()
        self.target = target or _child  # the spawn target; tests give a fake one with the same signature
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}

    # ---- what is running -----------------------------------------------------------------
    def own(self) -> Optional[str]:
        """The run this board's worker is training, if any."""
        with self._lock:
            return self._own_locked()

    def busy(self) -> Optional[str]:
        """The run that holds the GPU now: ours, or one found running in the workdir (a CLI run, a
        worker that outlived an earlier board)."""
        mine = self.own()
        if mine:
            return mine
        for info in list_runs(self.workdir):
            if info.status == RUNNING:
                return info.id
        return None

    def is_live(self, run_id: str) -> bool:
        """This board's worker is training `run_id` (not merely exiting after it ended)."""
        with self._lock:
            live = self._live.get(run_id)
            return live is not None and live.training

    # ---- start / stop / resume -------------------------------------------------------------
    def start(self, cfg: RunConfig, token: str | None = None, lang: str | None = None) -> str:
        """Spawn a run of `cfg`; its log is written in `lang` (the page's that started it)."""
        _refuse_if(self.busy())  # outside the lock: the workdir scan reads every run, and the page's timer waits on it
        with self._lock:
            _refuse_if(self._own_locked())  # a Start that passed the scan beside this one has spawned by now
            run_dir = create_run(cfg, self.workdir)
            self._spawn(cfg, run_dir, token, lang)
        return run_dir.name

    def resume(self, run_id: str, token: str | None = None, lang: str | None = None) -> str:
        """Continue a stopped or failed run in its own folder from its last checkpoint."""
        path = run_path(run_id, self.workdir)
        if latest_checkpoint(path) is None:
            raise TuneboardError("error.no_checkpoint", path=path.name)
        cfg = RunConfig.load(str(path / "config.yaml")).with_overrides({"training.resume_from": "last"})
        resume_checkpoint(cfg, path)  # one that cannot go on is said here, not by a run that then fails
        _refuse_if(self.busy())  # outside the lock, as in start
        with self._lock:
            _refuse_if(self._own_locked())
            self._spawn(cfg, path, token, lang)
        return path.name

    def stop(self, run_id: str) -> bool:
        """Ask a run to stop at the end of its current step; it saves a checkpoint and ends `stopped`."""
        path = run_path(run_id, self.workdir)
        with self._lock:
            live = self._live.get(path.name)
        if live is not None:
            live.stop.set()
        if live is None and run_info(path).status != RUNNING:
            return False
        (path / STOP_FILE).touch()  # reaches a worker this board did not spawn, too
        return True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop our live run cleanly (a checkpoint is kept) and wait for it, up to `timeout`."""
        with self._lock:
            lives = list(self._live.values())
        for live in lives:
            live.stop.set()
        deadline = time.time() + timeout
        for live in lives:
            live.process.join(max(0.0, deadline - time.time()))
            if live.thread:
                live.thread.join(max(0.0, deadline - time.time()))

    # ---- after a board restart ---------------------------------------------------------------
    def recover(self) -> list[str]:
        """Mark runs whose worker died while no board watched as failed, with the worker's output.
        Runs still training are left alone: the page reattaches to them."""
        marked = []
        for info in list_runs(self.workdir):
            if self.is_live(info.id):
                continue
            events_path = info.path / "events.jsonl"
            events, _ = read_new_events(events_path, 0)
            if not _open_attempt(events) or info.status == RUNNING:
                continue
            if not events and not (info.path / WORKER_LOG).exists():
                continue  # never started by a board: nothing to say about it
            started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
            if started is not None and pid_alive(started.pid, started.time):
                continue
            _append_events(info.path, *died_events(info.path, "?"))
            marked.append(info.id)
        return marked

    # ---- internals ---------------------------------------------------------------------------
    def _own_locked(self) -> Optional[str]:
        """own(), for a caller that holds the lock."""
        return next((run_id for run_id, live in self._live.items() if live.training), None)

    def _spawn(self, cfg: RunConfig, run_dir: Path, token: str | None, lang: str | None = None) -> None:
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        events = run_dir / "events.jsonl"
        offset = events.stat().st_size if events.exists() else 0
        ctx = mp.get_context("spawn")
        q, stop = ctx.Queue(), ctx.Event()
        env = {"TOKENIZERS_PARALLELISM": "false", **({"TUNEBOARD_LANG": lang} if lang else {})}
        if token:
            env["HF_TOKEN"] = token
        proc = ctx.Process(
            target=self.target,
            name=f"tuneboard-{run_dir.name}",
            args=(cfg.to_dict(), str(run_dir), q, stop, str(self.workdir), env),
        )
        proc.start()
        live = _Live(run_id=run_dir.name, path=run_dir, process=proc, queue=q, stop=stop, offset=offset)
        live.thread = threading.Thread(target=self._drain, args=(live,), daemon=True, name=f"drain-{run_dir.name}")
        self._live[run_dir.name] = live
        live.thread.start()

    def _drain(self, live: _Live) -> None:
        """Empty the queue (a full pipe would block the child at exit), then settle the run's status."""
        while True:
            try:
                item = live.queue.get(timeout=0.5)
            except queue_mod.Empty:
                if not live.process.is_alive():
                    break
                continue
            except (EOFError, OSError):
                break
            if item is None:
                break
            if isinstance(item, dict) and item.get("type") == "finished":
                live.finished = True
        live.process.join(60)
        events, _ = read_new_events(live.path / "events.jsonl", live.offset)
        if not any(isinstance(e, Finished) for e in events):
            _append_events(live.path, *died_events(live.path, live.process.exitcode))
        with self._lock:
            if self._live.get(live.run_id) is live:  # a resume may already have put a new attempt here
                self._live.pop(live.run_id)
                (live.path / STOP_FILE).unlink(missing_ok=True)
