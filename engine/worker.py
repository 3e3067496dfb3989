"""The background process a board Start spawns: run one job, put each event on a queue.

No torch at module level: the board imports this module to name the spawn target, and the
board process must never load torch. Everything heavy is imported inside the child.
"""

from __future__ import annotations

import os
from typing import Any


def run_job(config_dict: dict[str, Any], run_dir: str, queue, stop_event, workdir: str | None = None) -> None:
    """Spawn target: train `config_dict` into `run_dir`; events go to `queue` and events.jsonl."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .config import RunConfig
    from .messages import set_language
    from .train import run_training

    set_language(os.environ.get("TUNEBOARD_LANG"))  # the log's sentences, in the language of whoever started it
    # The queue only tells the board that the run ended (it reads events.jsonl). A board that has gone (killed,
    # restarted) reads nothing more: once the pipe is full, this process would wait forever at exit to flush
    # events nobody will read, holding its memory (the GPU's too). So it never waits for them.
    queue.cancel_join_thread()

    def emit(ev) -> None:
        try:
            queue.put_nowait(ev.to_dict())
        except Exception:  # a full or closed queue never stops training: events.jsonl has everything
            pass

    cfg = RunConfig.from_dict(config_dict)
    try:
        run_training(cfg, run_dir, emit=emit, should_stop=stop_event.is_set, workdir=workdir)
    except BaseException:
        pass  # already recorded as Error + Finished(failed) in events.jsonl and on the queue
    finally:
        try:
            queue.put(None)  # end of stream
        except Exception:
            pass
