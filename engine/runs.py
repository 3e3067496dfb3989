"""Run folders: create them, list them, read a run's status back (standard library only).

A run's truth is its folder: `config.yaml` (what ran), `events.jsonl` (what happened), the
saved adapter or model, checkpoints, `train.log`. Status is derived from the events and
whether the worker's pid is still alive, so a board restart sees what really happened.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import RunConfig
from .events import Error, Evaluation, Finished, LogStep, Progress, RunStarted, read_events
from .messages import TuneboardError, error_key
from .paths import runs_dir

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"
STOP_FILE = "stop.request"  # touched in a run folder, it stops that run after its current step (board, scripts)
_ID_OK = re.compile(r"^\w[\w.-]{0,127}$")  # letters of any script: a run may be called 한국어-실행


@dataclass
class RunInfo:
    id: str
    path: Path
    status: str
    stage: str = ""
    model: str = ""
    created: float = 0.0
    step: int = 0
    total_steps: int = 0
    last_loss: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # the last attempt's error, in English
    error_key: str = ""  # ... and as a message key with its parameters, for other languages
    error_params: dict[str, Any] = field(default_factory=dict)
    has_adapter: bool = False
    has_model: bool = False
    config_error: Optional[tuple[str, dict[str, Any]]] = None  # config.yaml can't be read: (key, params)
    init_from: str = ""  # the adapter it went on training (adapter.init_from): an SFT run a DPO run continued


def create_run(cfg: RunConfig, workdir: str | os.PathLike | None = None) -> Path:
    """Make `<workdir>/runs/<id>/` with the config written; ids sort by time and never collide."""
    base = runs_dir(workdir)
    base.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"[^\w.-]+", "-", cfg.run_name or cfg.stage).strip("-.") or cfg.stage
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_id = f"{stamp}-{prefix}" + (f"-{n}" if n else "")
        path = base / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        cfg.save(str(path / "config.yaml"))
        return path
    raise RuntimeError("could not allocate a run id")


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Process `pid` runs (a zombie does not). With `since` (when the run said it started, under that pid):
    and it is that run's process, not a later one given the same number (after a reboot or a container
    restart, pids are handed out again from 1; the run would otherwise read as training forever)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[-1].split()
    except OSError:
        return True  # no /proc (macOS): the pid is all there is to go by
    if fields[0] == "Z":
        return False
    started = process_start_time(fields)
    return since is None or started is None or started <= since + 2  # /proc's boot time is in whole seconds


def process_start_time(stat_fields: list[str]) -> float | None:
    """A process's start as a Unix time, from its /proc/<pid>/stat fields after the name."""
    try:
        ticks = int(stat_fields[19])  # field 22 of the whole line: start time in clock ticks since boot
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_info(path: str | os.PathLike, events: Optional[list] = None) -> RunInfo:
    """What a run folder says of itself; `events` when the caller has read events.jsonl already."""
    path = Path(path)
    events = read_events(str(path / "events.jsonl")) if events is None else events
    info = RunInfo(id=path.name, path=path, status=FAILED, created=path.stat().st_mtime if path.exists() else 0.0)
    try:
        cfg = RunConfig.load(str(path / "config.yaml"))
        info.stage, info.model, info.init_from = cfg.stage, cfg.model.name_or_path, cfg.adapter.init_from or ""
    except Exception as e:  # edited by hand into something else: said on the run's card, which Resume would refuse
        key, params = error_key(e, "error.config.unreadable")
        info.config_error = (key, {**params, "error": params.get("error", str(e))})
    pid, since, finished, attempts = 0, None, None, 0
    for ev in events:
        if isinstance(ev, RunStarted):  # a resumed run starts again: what ended before no longer counts
            pid, since, info.total_steps = ev.pid, ev.time, ev.total_steps
            info.created = info.created if attempts else ev.time  # but it began when it first started
            attempts += 1
            finished, info.error, info.error_key, info.error_params = None, "", "", {}
        elif isinstance(ev, LogStep):
            info.step = max(info.step, ev.step)
            if ev.loss is not None:
                info.last_loss = ev.loss
        elif isinstance(ev, Progress):
            info.step, info.total_steps = max(info.step, ev.step), ev.total_steps
        elif isinstance(ev, Evaluation):
            info.metrics.update({f"eval_{k}" if not k.startswith("eval") else k: v for k, v in ev.metrics.items()})
        elif isinstance(ev, Finished):
            finished = ev
        elif isinstance(ev, Error):
            info.error, info.error_key, info.error_params = ev.message or ev.key, ev.key, ev.params
    if finished is not None:
        info.status = finished.status
        info.metrics.update(finished.metrics)
    elif events and pid_alive(pid, since):
        info.status = RUNNING
    elif not events and time.time() - info.created < 120:
        info.status = RUNNING  # just created; the worker is still importing torch
    info.has_adapter = (path / "adapter" / "adapter_config.json").exists()
    info.has_model = (path / "model" / "config.json").exists()
    return info


def list_runs(workdir: str | os.PathLike | None = None, cache: Optional[dict] = None) -> list[RunInfo]:
    """The workdir's runs, newest first. With `cache` (a dict the caller keeps between calls), a run whose files
    have not changed is not read again; a running one always is (its worker may have died meanwhile)."""
    base = runs_dir(workdir)
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        if not (p.is_dir() and (p / "config.yaml").exists()):
            continue
        if cache is None:
            out.append(run_info(p))
            continue
        stamp = _stamp(p)
        hit = cache.get(p)
        info = hit[1] if hit and hit[0] == stamp and hit[1].status != RUNNING else run_info(p)
        cache[p] = (stamp, info)
        out.append(dataclasses.replace(info, metrics=dict(info.metrics)))  # callers may change their copy
    if cache is not None:
        for gone in set(cache) - {r.path for r in out}:
            cache.pop(gone, None)
    return sorted(out, key=lambda r: r.id, reverse=True)


def _stamp(path: Path) -> tuple:
    """What `run_info` reads, as sizes and times: the folder (an adapter or model saved), the config, the events."""
    out = []
    for f in (path, path / "config.yaml", path / "events.jsonl", path / "adapter", path / "model"):
        try:
            st = f.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def resolve_run(run: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Path:
    """A run folder or a run id in the workdir; an id can never reach outside `<workdir>/runs`."""
    p = Path(run)
    if p.is_dir() and (p / "config.yaml").exists():
        return p.resolve()
    name = str(run)
    if _ID_OK.match(name):
        cand = runs_dir(workdir) / name
        if cand.is_dir():
            return cand.resolve()
    raise TuneboardError("error.run_not_found", run=name)


def run_and_checkpoint(run: str | os.PathLike, workdir: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """`resolve_run` for chat, eval and export, which also take a folder inside a run as its user finds it: a
    checkpoint (`run/checkpoints/checkpoint-N`: that checkpoint's weights) or the run's `adapter` or `model`
    folder (the run's own result)."""
    p = Path(run)
    if p.is_dir() and not (p / "config.yaml").exists():
        p = p.resolve()
        if (owner := owner_run(p)) is not None and (owner / "config.yaml").exists():
            return owner, p.name
        if p.name in ("adapter", "model") and (p.parent / "config.yaml").exists():
            return p.parent, None
    return resolve_run(run, workdir), None


def owner_run(ckpt: Path) -> Path | None:
    """The run folder a checkpoint belongs to (run/checkpoints/checkpoint-N), or None for a loose one."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def deletable(path: str | os.PathLike, live: bool = False) -> RunInfo:
    """The run, if it may be deleted; a running one is refused: stop it first. `live`: the caller knows it runs."""
    info = run_info(path)
    if live or info.status == RUNNING:
        raise TuneboardError("error.run_running_delete", run=info.id)
    return info


def delete_run(path: str | os.PathLike, live: bool = False) -> int:
    """Remove a run folder and everything in it (config, logs, checkpoints, adapter, exports inside it); the
    bytes freed. A running run is refused (`deletable`)."""
    info = deletable(path, live)
    size = folder_size(info.path)
    shutil.rmtree(info.path)
    return size


def folder_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def latest_checkpoint(path: str | os.PathLike) -> Optional[Path]:
    """The newest complete `checkpoint-N` under a run folder (or the folder itself if it is one). A checkpoint
    whose save never finished (a full disk, a kill mid-save) has no trainer_state.json, the trainer's last file:
    the one before it is where the run got to."""
    path = Path(path)
    if re.fullmatch(r"checkpoint-\d+", path.name) and path.is_dir():
        return path
    ckpts = [p for p in (path / "checkpoints").glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None

