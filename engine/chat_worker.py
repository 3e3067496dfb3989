"""The long-lived engine process behind the board's Chat, Evaluate and Export: it holds the chat model.

Board side, `ChatWorker` (no torch here: the board imports this module) spawns `serve` with the
`spawn` method, sends one request at a time and reads the replies tagged with its id: `chunk`s
as they come (streamed text, a sweep's answers, evaluation progress), then `done` or `error`.
Child side, `serve` keeps one ChatSession, so a loaded model serves turn after turn; unloading
it, or closing the worker, gives its memory back. A hub token rides in a request, in memory only.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Optional

from .messages import TuneboardError, error_key

ENV = {"TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class ChatWorker:
    """The board's handle on the chat process: start it on first use, ask, stream, interrupt, close."""

    def __init__(self, workdir: str | os.PathLike | None = None, poll: float = 0.25):
        self.workdir = str(workdir) if workdir else None
        self.poll = poll
        self._lock = threading.Lock()  # one request at a time: replies never interleave
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._requests = self._replies = self._stop = None
        self._next = 0
        self.last_info: dict | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _ensure(self) -> None:
        if self.alive:
            return
        self._requests, self._replies, self._stop = self._ctx.Queue(), self._ctx.Queue(), self._ctx.Event()
        self._proc = self._ctx.Process(target=serve, name="tuneboard-chat", daemon=True,
                                       args=(self._requests, self._replies, self._stop, self.workdir, ENV))
        self._proc.start()

    def request(self, op: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """("chunk", data) as they come, then ("done", result); an engine error is raised here as a
        TuneboardError. Closing the iterator early interrupts the work and waits for it to end."""
        with self._lock:
            self._ensure()
            self._next += 1
            rid = self._next
            self._stop.clear()
            self._requests.put({"id": rid, "op": op, "params": params})
            finished = False
            try:
                while True:
                    reply = self._get()
                    if reply.get("id") != rid:
                        continue  # the tail of an earlier, abandoned request
                    if reply["kind"] == "chunk":
                        yield "chunk", reply.get("data")
                    elif reply["kind"] == "done":
                        finished = True
                        yield "done", reply.get("data")
                        return
                    else:
                        finished = True
                        raise TuneboardError(reply.get("key") or "chat.error_failed", **(reply.get("params") or {}))
            finally:
                if not finished:  # abandoned (the page stopped listening): end the work before the next request
                    self._stop.set()
                    self._drain(rid)

    def _get(self) -> dict:
        while True:
            try:
                return self._replies.get(timeout=self.poll)
            except queue_mod.Empty:
                if not self.alive:
                    code = self._proc.exitcode if self._proc is not None else None
                    self._proc = None
                    raise TuneboardError("chat.error_worker_died", code=code) from None

    def _drain(self, rid: int, timeout: float = 120.0) -> None:
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                reply = self._replies.get(timeout=self.poll)
            except queue_mod.Empty:
                if not self.alive:
                    return
                continue
            if reply.get("id") == rid and reply["kind"] in ("done", "error"):
                return

    def call(self, op: str, **params: Any) -> Any:
        """Run one request to its end and return its result."""
        result = None
        for kind, data in self.request(op, **params):
            if kind == "done":
                result = data
        if op in ("info", "load", "unload") and isinstance(result, dict):
            self.last_info = result  # what is loaded, for a page that asks without waiting on a generation
        return result

    def interrupt(self) -> None:
        """Ask the running generation to stop after its current token."""
        if self._stop is not None:
            self._stop.set()

    def close(self, timeout: float = 10.0) -> None:
        """Unload the model and end the process (its memory, GPU memory included, goes back)."""
        proc = self._proc
        if proc is None:
            return
        self.interrupt()
        try:
            self._requests.put({"id": 0, "op": "shutdown", "params": {}})
            proc.join(timeout)
        finally:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            self._proc = None


# ---- the child process ----------------------------------------------------------------------


def serve(requests, replies, stop, workdir: Optional[str], env: dict[str, str]) -> None:
    """Spawn target: answer requests until `shutdown`; one ChatSession lives for the whole process."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in the board's terminal is the board's to handle
    from .generate import ChatSession

    session = ChatSession(workdir)
    parent = mp.parent_process()
    while True:
        try:
            req = requests.get(timeout=1.0)
        except queue_mod.Empty:
            if parent is not None and not parent.is_alive():  # the board was killed: don't linger holding memory
                session.unload()
                return
            continue
        rid, op, params = req.get("id"), req.get("op"), req.get("params") or {}
        if op == "shutdown":
            session.unload()
            return

        def emit(data: Any, rid=rid) -> None:
            replies.put({"id": rid, "kind": "chunk", "data": data})

        try:
            handler = HANDLERS.get(op)
            if handler is None:
                raise TuneboardError("chat.error_failed", error=f"unknown request {op!r}")
            result = handler(session, params, emit, stop.is_set)
            replies.put({"id": rid, "kind": "done", "data": result})
        except Exception as e:  # every failure becomes a reply: the page says it, the process lives on
            replies.put({"id": rid, "kind": "error", **error_reply(e, params.get("token"))})


def error_reply(e: BaseException, token: Optional[str] = None) -> dict[str, Any]:
    key, params = error_key(e, "chat.error_failed")
    params = {k: (str(v).replace(token, "***") if token else str(v)) for k, v in params.items()}
    return {"key": key, "params": params}


def _settings(params: dict):
    from .config import RunConfig

    return RunConfig.from_dict({"generation": params.get("settings") or {}}).generation


def _load(session, p, emit, should_stop):
    return session.load(p["run"], p.get("checkpoint"))


def _unload(session, p, emit, should_stop):
    session.unload()
    return session.info()


def _info(session, p, emit, should_stop):
    return session.info()


def _chat(session, p, emit, should_stop):
    stream = session.stream(p["messages"], _settings(p), p.get("use_adapter", True), should_stop)
    for piece in stream:
        emit({"text": piece})
    return [a.to_dict() for a in stream.answers]


def _compare(session, p, emit, should_stop):
    """Base, then tuned, streamed one after the other, with one seed for both."""
    from .generate import resolve_seed, with_seed

    gen = _settings(p)
    gen = with_seed(gen, resolve_seed(gen.seed))
    out = {}
    for side, use_adapter in (("base", False), ("tuned", True)):
        stream = session.stream(p["messages"], gen, use_adapter, should_stop)
        for piece in stream:
            emit({"side": side, "text": piece})
        out[side] = [a.to_dict() for a in stream.answers]
    return out


def _sweep(session, p, emit, should_stop):
    out = []
    for answer in session.sweep(p["messages"], _settings(p), int(p.get("n", 3)), p.get("use_adapter", True),
                                p.get("seeds"), should_stop):
        out.append(answer.to_dict())
        emit(out[-1])
    return out


def _eval(session, p, emit, should_stop):
    from .evaluate import evaluate_run

    return evaluate_run(p["run"], data=p.get("data") or None, max_samples=p.get("max_samples", 50),
                        max_new_tokens=p.get("max_new_tokens", 64), workdir=session.workdir, session=session,
                        progress=lambda phase, done, total: emit({"phase": phase, "done": done, "total": total}))


def _export(session, p, emit, should_stop):
    from .export import export_run

    return export_run(p["run"], p["out"], merge=bool(p.get("merge")), push_to_hub=p.get("push_to_hub") or None,
                      token=p.get("token") or None, workdir=session.workdir, overwrite=bool(p.get("overwrite")))


HANDLERS: dict[str, Callable] = {"load": _load, "unload": _unload, "info": _info, "chat": _chat,
                                 "compare": _compare, "sweep": _sweep, "eval": _eval, "export": _export}
