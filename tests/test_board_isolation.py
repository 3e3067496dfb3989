"""The board process never loads torch, transformers, peft or trl, and refuses to serve unsafely.

Checked in fresh subprocesses: the pytest process itself has torch loaded by other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from world import ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes")

PROBE = r"""
import json, sys
from pathlib import Path
from board.app import build_app
from board.jobs import Jobs
from board.session import Session
from board.tabs import data as data_tab, model as model_tab, runs as runs_tab, train as train_tab
from board.form import build_config, config_to_form
from engine.config import RunConfig
import engine.worker  # the spawn target's module is imported by the board: it must stay light

workdir = Path(sys.argv[1])
demo, ui = build_app(workdir)
cfg = RunConfig()
s = Session()
data_tab.check_view(s, cfg, None, workdir)            # engine.data's whole check, as the Data tab runs it
model_tab.estimate_html(cfg, 24, workdir, "en")      # engine.estimate, as the Model tab runs it
train_tab.view(s, ui.jobs, force=True)
runs_tab.listing(ui.jobs, "en", None, None)
train_tab.command_for(cfg, workdir)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
""".replace("HEAVY", repr(HEAVY))


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PYTHONPATH=str(ROOT), TUNEBOARD_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    return env


def test_board_never_imports_torch_or_the_trainers(workdir, demo_model):
    """With the demo built, the probe takes the exact paths: its tokenizer, its config.json."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(workdir)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=_env(workdir),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the board process loaded {loaded}"


ARROW_PROBE = r"""
import json, sys
from pathlib import Path
from board.app import build_app

workdir = Path(sys.argv[1])
demo, ui = build_app(workdir)
at_start = "pyarrow" in sys.modules
import pandas as pd
import pyarrow as pa, pyarrow.parquet as pq  # what the engine imports where it reads a Parquet file
from engine.data.report import check_file

pq.write_table(pa.table({"instruction": ["Say hi", "한국어로 답해"], "output": ["hi", "네"]}), workdir / "d.parquet")
report = check_file(str(workdir / "d.parquet"))
frame = pd.DataFrame([{"instruction": "Say hi", "output": "hi"}])  # a preview table, as the Data tab makes one
print(json.dumps([at_start, report.format, report.valid, frame.shape[0]]), flush=True)
import os
os._exit(0)  # Arrow's threads and the page's can abort the interpreter's teardown (1 in 4 here, with or without
             # the board's pandas change); the board itself never exits that way, it is stopped
"""


def test_the_board_starts_without_arrow_and_still_reads_parquet(tmp_path):
    """pandas 3 imports pyarrow at its own import: 60 MB of the board's resident memory in a fresh install
    (board/__init__.py). The board starts without it, and a Parquet file is still read, checked and previewed
    in the same process."""
    out = subprocess.run([sys.executable, "-c", ARROW_PROBE, str(tmp_path)], capture_output=True, text=True,
                         timeout=240, cwd=ROOT, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, "alpaca", 2, 1]


def test_public_address_without_a_password_is_refused(tmp_path):
    env = _env(tmp_path)
    env.pop("TUNEBOARD_AUTH", None)
    for flags in (["--host", "0.0.0.0"], ["--share"]):
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli", *flags, "--port", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env,
        )
        assert out.returncode == 2, out.stderr[-2000:]
        assert "--auth USER:PASSWORD" in out.stderr


def test_help_documents_the_flags():
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    for flag in ("--host", "--port", "--workdir", "--auth", "--lang"):
        assert flag in out.stdout
