"""Browser tests: a real `tuneboard` in a subprocess on a free port, driven by Playwright's Chromium.

Skipped cleanly when /usr/bin/chromium or the playwright package is missing. Each board gets a
temporary TUNEBOARD_HOME holding a copy of the session's demo model (so Start trains at once),
and writes its output to test-output/browser/ along with the screenshots.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "browser"


@dataclass
class Board:
    url: str
    home: Path
    proc: subprocess.Popen
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_board(home: Path, name: str, timeout: float = 90.0, extra: tuple[str, ...] = ()) -> Board:
    port = _free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"board-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PYTHONPATH=str(ROOT), TUNEBOARD_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("TUNEBOARD_AUTH", None)
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "--port", str(port), "--workdir", str(home), *extra],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the board exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return Board(url, home, proc, log)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"no page within {timeout} s: {log.read_text()[-3000:]}")


def stop_board(board: Board, clean: bool = True) -> None:
    if board.proc.poll() is not None:
        return
    if clean:
        board.proc.send_signal(signal.SIGINT)  # stops a live run cleanly, then exits
        try:
            board.proc.wait(90)
            return
        except subprocess.TimeoutExpired:
            pass
    board.proc.kill()
    board.proc.wait(10)


def make_home(tmp_path_factory, demo_model: Path, name: str) -> Path:
    home = tmp_path_factory.mktemp(name)
    shutil.copytree(demo_model, home / "models" / "demo")
    return home


GRID = """id => [...document.querySelectorAll('#' + id + ' [role=row]')]
  .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.textContent.trim())).filter(c => c.length)"""


def grid(page, elem_id: str) -> list[list[str]]:
    """A Gradio Dataframe's rows as text (it draws them as ARIA grid rows, not a plain <table>)."""
    return page.evaluate(GRID, elem_id)
