"""board/jobs.py and board/watch.py against a fake worker: spawn, stream, stop, refuse, die, recover.

The fake worker has the engine worker's signature and writes events the way run_training does
(events.jsonl + the queue), so these tests need no torch and take seconds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from board.jobs import Jobs, _open_attempt, pid_alive, read_new_events, read_tail
from board.watch import FAILED, FINISHED, RUNNING, STOPPED, Watch
from engine.config import RunConfig
from engine.events import CheckpointSaved, Finished, LogStep, Progress, RunStarted, read_events
from engine.messages import TuneboardError
from engine.runs import STOP_FILE, run_info


def fake_job(config_dict, run_dir, queue, stop_event, workdir, env):
    """Spawn target: `run_name` picks the behaviour (fast | slow | crash | silent)."""
    mode = config_dict.get("run_name") or "fast"
    run_dir = Path(run_dir)
    steps = 400 if mode == "slow" else 5

    def emit(ev):
        with open(run_dir / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(ev.to_json() + "\n")
        with open(run_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{ev.type}\n")
        queue.put(ev.to_dict())

    if mode == "silent":
        os._exit(5)  # dies before saying anything
    if mode == "env":
        (run_dir / "env.json").write_text(json.dumps(sorted(env)))
    start = 0
    if (config_dict.get("training") or {}).get("resume_from") == "last":
        start = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    emit(RunStarted(run_id=run_dir.name, stage="sft", total_steps=steps, pid=os.getpid()))
    for step in range(start + 1, steps + 1):
        if mode == "crash" and step == 3:
            os._exit(3)
        emit(LogStep(step=step, loss=10.0 / step, learning_rate=1e-4, grad_norm=1.0))
        emit(Progress(step=step, total_steps=steps, elapsed_seconds=step * 0.05, eta_seconds=(steps - step) * 0.05))
        if stop_event.is_set() or (run_dir / STOP_FILE).exists():
            (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
            (run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
            emit(CheckpointSaved(step=step, path=str(run_dir / "checkpoints" / f"checkpoint-{step}")))
            emit(Finished(status="stopped", step=step))
            queue.put(None)
            return
        time.sleep(0.05)
    emit(Finished(status="finished", step=steps, metrics={"train_loss": 1.0}))
    queue.put(None)


def wait_for(cond, timeout=30.0, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(every)
    raise AssertionError("condition not met in time")


@pytest.fixture
def jobs(tmp_path):
    j = Jobs(tmp_path, target=fake_job)
    yield j
    j.shutdown(timeout=20)


def cfg(name: str) -> RunConfig:
    return RunConfig.from_dict({"run_name": name})


def test_read_new_events_reads_complete_lines_only(tmp_path):
    path = tmp_path / "events.jsonl"
    first = LogStep(step=1, loss=2.0).to_json()
    path.write_text(first + "\n" + '{"type": "log", "st', encoding="utf-8")  # a torn last line
    events, offset = read_new_events(path, 0)
    assert [e.step for e in events] == [1] and offset == len(first) + 1
    with open(path, "a", encoding="utf-8") as f:
        f.write('ep": 2, "loss": 1.5}\n')
    events, offset2 = read_new_events(path, offset)
    assert [(e.step, e.loss) for e in events] == [(2, 1.5)] and offset2 == path.stat().st_size
    assert read_new_events(path, offset2) == ([], offset2)
    assert read_new_events(tmp_path / "missing.jsonl", 5) == ([], 0)


def test_read_tail_starts_at_a_line(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("".join(f"line {i}\n" for i in range(1000)), encoding="utf-8")
    tail = read_tail(path, 100)
    assert tail.endswith("line 999\n") and tail.startswith("line ")
    assert read_tail(tmp_path / "none.log") == ""


def test_start_streams_and_finishes(jobs, tmp_path):
    run_id = jobs.start(cfg("fast"))
    w = Watch.of(run_id, tmp_path / "runs" / run_id)
    wait_for(lambda: (w.advance(live=jobs.is_live(run_id)), w.status)[1] == FINISHED)
    assert w.curves.loss.x == [1, 2, 3, 4, 5]
    assert w.final == {"train_loss": 1.0}
    wait_for(lambda: jobs.own() is None)
    assert run_info(tmp_path / "runs" / run_id).status == "finished"


def test_the_hub_token_reaches_the_worker_in_memory_only(jobs, tmp_path):
    run_id = jobs.start(cfg("env"), token="hf_secret123")
    path = tmp_path / "runs" / run_id
    wait_for(lambda: not jobs.is_live(run_id) and (path / "env.json").exists())
    assert "HF_TOKEN" in json.loads((path / "env.json").read_text())
    for f in path.rglob("*"):
        if f.is_file() and f.name != "env.json":
            assert "hf_secret123" not in f.read_text(errors="replace"), f


def test_the_run_is_told_the_language_of_the_page_that_started_it(jobs, tmp_path):
    run_id = jobs.start(cfg("env"), lang="ko")
    path = tmp_path / "runs" / run_id
    wait_for(lambda: not jobs.is_live(run_id) and (path / "env.json").exists())
    assert "TUNEBOARD_LANG" in json.loads((path / "env.json").read_text())


def test_the_log_speaks_the_runs_language():
    from engine.events import Finished, RunStarted
    from engine.messages import set_language
    from engine.train import _log_line

    started = RunStarted(run_id="r", stage="sft", device="cpu", precision="fp32", attn_implementation="sdpa",
                         choices=[], trainable_params=1000, total_params=5000, train_rows=10, eval_rows=2, total_steps=4)
    try:
        set_language("ko")
        assert "5,000개 중 1,000개" in _log_line(started) and "4단계에서 중지" in _log_line(Finished(status="stopped", step=4))
    finally:
        set_language(None)
    assert _log_line(Finished(status="finished", step=4)) == "finished at step 4"


def test_second_start_is_refused_while_one_runs(jobs):
    first = jobs.start(cfg("slow"))
    with pytest.raises(TuneboardError) as e:
        jobs.start(cfg("fast"))
    assert e.value.key == "ui.error.busy" and e.value.params["run"] == first
    assert jobs.busy() == first


def test_two_starts_at_once_get_one_run_and_the_scan_leaves_the_lock_free(jobs, monkeypatch):
    """The workdir scan runs outside the lock the page's timer needs; both Starts pass it together,
    and the decision under the lock still lets only one of them spawn."""
    import board.jobs as jobs_mod

    real, held, both_scanning = jobs_mod.list_runs, [], threading.Barrier(2)

    def scan(workdir):
        held.append(jobs._lock.locked())
        both_scanning.wait(timeout=10)
        return real(workdir)

    monkeypatch.setattr(jobs_mod, "list_runs", scan)
    results = []

    def start():
        try:
            results.append(jobs.start(cfg("slow")))
        except TuneboardError as e:
            results.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert held == [False, False]
    started = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, TuneboardError)]
    assert len(started) == 1 and len(refused) == 1
    assert refused[0].key == "ui.error.busy" and refused[0].params["run"] == started[0]


def test_stop_keeps_a_checkpoint_and_resume_continues(jobs, tmp_path):
    run_id = jobs.start(cfg("slow"))
    path = tmp_path / "runs" / run_id
    w = Watch.of(run_id, path)
    wait_for(lambda: (w.advance(live=True), w.step)[1] >= 3)
    assert jobs.stop(run_id)
    wait_for(lambda: (w.advance(live=jobs.is_live(run_id)), w.status)[1] == STOPPED)
    stopped_at, began = w.step, run_info(path).created
    wait_for(lambda: jobs.own() is None)
    assert (path / "checkpoints").is_dir()
    wait_for(lambda: not (path / STOP_FILE).exists())  # the request is cleared once the worker is gone
    jobs.resume(run_id)
    wait_for(lambda: (w.advance(live=True), w.status)[1] == RUNNING and w.step > stopped_at + 2)
    assert w.curves.loss.x == list(range(1, w.curves.loss.x[-1] + 1))  # one continuous curve, no repeats
    assert run_info(path).created == began  # the Runs tab's "started" is when it first started
    jobs.stop(run_id)
    wait_for(lambda: (w.advance(live=jobs.is_live(run_id)), w.status)[1] == STOPPED)


def test_resume_refuses_a_checkpoint_that_cannot_go_on_before_starting_anything(jobs, tmp_path):
    """A demo run from before the demo was rebuilt: said on Resume, not by a run that then fails."""
    path = tmp_path / "runs" / "old-demo"
    (path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    cfg("old").save(str(path / "config.yaml"))
    (path / "resolved.json").write_text(json.dumps({"demo_fingerprint": "an-older-build"}))
    with pytest.raises(TuneboardError) as e:
        jobs.resume("old-demo")
    assert e.value.key == "error.demo_rebuilt"
    assert jobs.own() is None and not (path / "events.jsonl").exists()


def test_a_worker_that_dies_is_recorded_as_failed(jobs, tmp_path):
    run_id = jobs.start(cfg("crash"))
    path = tmp_path / "runs" / run_id
    wait_for(lambda: jobs.own() is None and not jobs.is_live(run_id))
    events = read_events(str(path / "events.jsonl"))
    assert isinstance(events[-1], Finished) and events[-1].status == "failed"
    assert events[-2].key == "ui.error.worker_died_silent" and events[-2].params["code"] == 3  # it printed nothing
    w = Watch.of(run_id, path)
    w.advance(live=False)
    assert w.status == FAILED and w.error["key"] == "ui.error.worker_died_silent"


def test_a_silent_death_is_failed_too(jobs, tmp_path):
    run_id = jobs.start(cfg("silent"))
    wait_for(lambda: not jobs.is_live(run_id))
    assert run_info(tmp_path / "runs" / run_id).status == "failed"


def test_recover_marks_runs_whose_worker_is_gone(tmp_path):
    """A board restart: a run left 'running' by a worker that no longer exists becomes failed."""
    path = tmp_path / "runs" / "20250101-000000-sft"
    path.mkdir(parents=True)
    RunConfig().save(str(path / "config.yaml"))
    dead = 2**22 + 12345  # above the usual pid range: not alive
    assert not pid_alive(dead)
    (path / "events.jsonl").write_text(RunStarted(run_id=path.name, stage="sft", pid=dead).to_json() + "\n")
    alive = tmp_path / "runs" / "20250101-000001-sft"
    alive.mkdir()
    RunConfig().save(str(alive / "config.yaml"))
    (alive / "events.jsonl").write_text(RunStarted(run_id=alive.name, stage="sft", pid=os.getpid()).to_json() + "\n")
    assert Jobs(tmp_path).recover() == [path.name]
    assert run_info(path).status == "failed"
    assert run_info(alive).status == "running"
    assert Jobs(tmp_path).recover() == []  # once


def test_stop_reaches_a_run_this_board_did_not_spawn(tmp_path):
    path = tmp_path / "runs" / "20250101-000000-sft"
    path.mkdir(parents=True)
    RunConfig().save(str(path / "config.yaml"))
    (path / "events.jsonl").write_text(RunStarted(run_id=path.name, stage="sft", pid=os.getpid()).to_json() + "\n")
    assert Jobs(tmp_path).stop(path.name)
    assert (path / STOP_FILE).exists()


def test_run_ids_cannot_leave_the_workdir(jobs):
    for bad in ("../x", "/etc", "..", "a/../../b"):
        with pytest.raises(TuneboardError):
            jobs.stop(bad)
        with pytest.raises(TuneboardError):
            jobs.resume(bad)


def test_run_names_in_any_script_are_kept_and_nothing_else_gets_through(tmp_path):
    from engine.runs import create_run, resolve_run

    made = {n: create_run(RunConfig.from_dict({"run_name": n}), tmp_path).name
            for n in ("한국어-실행", "long run/äö", "日本語 テスト", "../..", "a/../../b")}
    assert made["한국어-실행"].endswith("-한국어-실행") and made["long run/äö"].endswith("-long-run-äö")
    assert made["日本語 テスト"].endswith("-日本語-テスト")
    assert made["../.."].endswith("-sft") and made["a/../../b"].endswith("-a-..-..-b")
    assert all((tmp_path / "runs" / m).is_dir() for m in made.values())
    assert resolve_run(made["한국어-실행"], tmp_path) == (tmp_path / "runs" / made["한국어-실행"]).resolve()


def test_open_attempt():
    s, f = RunStarted(run_id="r", stage="sft"), Finished(status="stopped")
    assert _open_attempt([]) and _open_attempt([s]) and not _open_attempt([s, f])
    assert _open_attempt([s, f, s])  # resumed, still going


def test_watch_applies_a_resume_and_a_dead_pid(tmp_path):
    path = tmp_path / "runs" / "r"
    path.mkdir(parents=True)
    lines = [
        RunStarted(run_id="r", stage="sft", total_steps=4, pid=os.getpid()),
        LogStep(step=1, loss=3.0),
        LogStep(step=2, loss=2.0),
        Progress(step=2, total_steps=4, elapsed_seconds=60.0),
        Finished(status="stopped", step=2),
    ]
    (path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in lines))
    w = Watch.of("r", path)
    assert w.advance() and w.status == STOPPED and w.step == 2 and w.elapsed == 60.0
    assert not w.advance()  # nothing new: nothing changed
    more = [RunStarted(run_id="r", stage="sft", total_steps=4, pid=2**22 + 7), LogStep(step=3, loss=1.0),
            Progress(step=3, total_steps=4, elapsed_seconds=25.0)]
    with open(path / "events.jsonl", "a") as f:
        f.write("".join(e.to_json() + "\n" for e in more))
    w.advance(live=True)
    assert w.status == RUNNING and w.curves.loss.y == [3.0, 2.0, 1.0]
    assert w.elapsed == 85.0  # the clock goes on from the stopped attempt's minute
    again = Watch.of("r", path)  # a reload reads the file from the start and shows the same
    again.advance(live=True)
    assert again.elapsed == 85.0
    w.advance(live=False)  # the pid in RunStarted is gone and no board holds it
    assert w.status == FAILED


def test_a_pid_handed_to_a_later_process_is_not_the_runs(tmp_path):
    """After a reboot or a container restart pids start again from 1: a run that died with the old machine
    must not read as training forever because some new process has its pid (Start, Stop and Delete locked)."""
    from engine.runs import pid_alive

    assert pid_alive(os.getpid()) and pid_alive(os.getpid(), since=time.time())
    assert not pid_alive(os.getpid(), since=time.time() - 10 * 3600)  # this process began after that run did
    path = tmp_path / "runs" / "r"
    path.mkdir(parents=True)
    RunConfig().save(str(path / "config.yaml"))
    started = RunStarted(run_id="r", stage="sft", total_steps=200, pid=os.getpid())
    started.time -= 10 * 3600  # the run began hours before the process that now holds its pid
    (path / "events.jsonl").write_text(started.to_json() + "\n" + LogStep(step=6, loss=2.0).to_json() + "\n")
    assert run_info(path).status == FAILED
    w = Watch.of("r", path)
    w.advance()
    w.advance()  # no new events, and the pid is not the run's
    assert w.status == FAILED
    jobs = Jobs(tmp_path)
    assert jobs.busy() is None and jobs.recover() == ["r"]  # Start is free again; the run is marked as failed


def test_the_finished_banner_gives_the_whole_runs_time(tmp_path):
    """The engine's train_runtime counts every attempt now; a run finished before that counted the last only."""
    from board import live

    w = Watch.of("r", tmp_path)
    w.status, w.elapsed, w.earlier = FINISHED, 125.0, 100.0
    w.final = {"train_runtime": 126.0}  # this engine: all attempts
    assert "2:06" in live.alerts_html(w, "en")
    w.final = {"train_runtime": 25.0}  # an older engine: the last attempt only
    assert "2:05" in live.alerts_html(w, "en")


def test_the_building_demo_notice_goes_once_training_starts(tmp_path):
    from engine.events import Warning as RunWarning

    path = tmp_path / "r"
    path.mkdir()
    lines = [RunWarning(key="warning.building_demo"), RunWarning(key="warning.optim_fallback"),
             RunStarted(run_id="r", stage="sft", total_steps=4), Finished(status="finished", step=4)]
    (path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in lines[:2]))
    w = Watch.of("r", path)
    w.advance()
    assert [x["key"] for x in w.warnings] == ["warning.building_demo", "warning.optim_fallback"]
    with open(path / "events.jsonl", "a") as f:
        f.write("".join(e.to_json() + "\n" for e in lines[2:]))
    w.advance()
    assert [x["key"] for x in w.warnings] == ["warning.optim_fallback"]  # the other notice still stands


def test_events_written_are_what_the_engine_reads(tmp_path):
    """The board's own failure record parses with the engine's reader (one file format)."""
    from board.jobs import died_events

    (tmp_path / "worker.log").write_text("Traceback...\nBoom\n")
    err, fin = died_events(tmp_path, 9)
    line = json.loads(err.to_json())
    assert line["type"] == "error" and line["params"] == {"code": 9} and "Boom" in line["traceback"]
    assert fin.status == "failed"
    assert err.key == "ui.error.worker_died"  # "its output is under Show details": there is some
    assert died_events(tmp_path, -9)[0].key == "ui.error.worker_killed"  # SIGKILL: most often out of memory
    (tmp_path / "worker.log").write_text("")
    assert died_events(tmp_path, 1)[0].key == "ui.error.worker_died_silent"  # no details to point to


def _flood(cfg, run_dir, emit=None, should_stop=None, workdir=None):
    for step in range(3000):  # ~1 MB of events: far more than a pipe holds
        emit(LogStep(step=step, loss=1.0, metrics={f"metric/{i}": 1.0 for i in range(8)}))


def _orphaned_worker(queue, stop_event, run_dir):
    """Spawn target: the engine's worker, training a run that logs a lot, for a board that has gone."""
    import engine.train

    engine.train.run_training = _flood
    from engine.worker import run_job

    run_job(RunConfig().to_dict(), run_dir, queue, stop_event)


def test_a_worker_whose_board_has_gone_still_exits(tmp_path):
    """A killed board reads nothing more from its worker's queue: the worker must end when its run does, not
    wait forever to flush events into a full pipe (holding its memory, and a GPU's)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()  # never read, as by a board that was killed
    proc = ctx.Process(target=_orphaned_worker, args=(queue, stop, str(tmp_path)))
    proc.start()
    proc.join(120)
    try:
        assert proc.exitcode == 0, "the worker hung at exit on a queue nobody reads"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
