"""Tuneboard's engine: config, data, model loading, training, generation. Never imports Gradio."""

import os

# OpenMP threads that wait for work sleep instead of spinning. A spinning wait assumes every thread has
# a core to itself; beside another busy process (a chat worker next to a CPU training run, a second
# command, the tests' board) each step then waits out whole scheduler slices: a two-thread CPU run of
# the demo's pre-training went from 2 s to 75 s beside one other busy process. Set before torch loads
# (here, as anything of the engine is imported first); the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
