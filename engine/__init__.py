"""Tuneboard's engine: config, data, model loading, training, generation. Never imports Gradio."""

import os

# OpenMP threads waiting for work spin for a shorter while before they sleep (libgomp spins 300,000 times by
# default). Beside other busy processes (a chat worker next to a CPU training run, a second command, the
# tests' board) the long spin starves the thread being waited for: 30 steps of the demo's two-thread CPU
# pre-training took 128 s beside two busy processes instead of 4 s, and 1.6 s alone either way (sleeping
# at once, OMP_WAIT_POLICY=PASSIVE, costs 1.75x alone). Set before torch loads, as anything of the engine
# is imported first; a user's own OpenMP waiting settings win.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")

__version__ = "0.1.0"
