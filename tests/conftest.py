"""The tests' offline world: one temp workdir per session holding the demo model, built once."""

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports transformers: no hub, no telemetry, quiet tokenizers.
_HOME = Path(os.environ.get("TUNEBOARD_TEST_HOME") or tempfile.mkdtemp(prefix="tuneboard-tests-"))
os.environ["TUNEBOARD_HOME"] = str(_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")

from world import ROOT, tiny_sft_config, train_run  # noqa: E402,F401 - shared with the test modules


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def workdir() -> Path:
    """The session's TUNEBOARD_HOME; runs from different tests live side by side in it."""
    return _HOME


@pytest.fixture(scope="session")
def demo_model(workdir) -> Path:
    from engine.demo import ensure_demo_model

    return ensure_demo_model(workdir)


@pytest.fixture(scope="session")
def trained_run(workdir, demo_model) -> Path:
    """One short demo SFT LoRA run, shared by the tests that need a finished run."""
    return train_run(workdir, tiny_sft_config())
