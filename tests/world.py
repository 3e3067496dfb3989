"""Shared test helpers (a unique module name: tests/browser has a conftest of its own)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_ROWS = len(json.loads((ROOT / "assets" / "data" / "demo_sft.json").read_text(encoding="utf-8")))  # demo:sft
FIX = ROOT / "tests" / "fixtures" / "data"  # the broken and well-formed data files the data tests read


def tiny_sft_config(**training) -> dict:
    """A demo SFT LoRA config that trains in seconds on 2 CPU cores and visibly learns."""
    t = {"max_steps": 30, "learning_rate": 3e-3, "per_device_train_batch_size": 8,
         "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "seed": 7}
    t.update(training)
    return {"stage": "sft", "run_name": "test", "adapter": {"method": "lora", "rank": 16, "alpha": 32, "dropout": 0.0},
            "data": {"datasets": [{"path": "demo:sft"}], "max_length": 128}, "training": t}


def train_run(workdir, cfg) -> Path:
    """Train `cfg` (a dict or a RunConfig) into a new run folder of `workdir`, as the CLI and the board do."""
    from engine.config import RunConfig
    from engine.runs import create_run
    from engine.train import run_training

    cfg = cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)
    run_dir = create_run(cfg, workdir)
    run_training(cfg, run_dir, workdir=workdir)
    return run_dir


def logged_losses(run_dir) -> list[float]:
    """The training losses a run logged, step by step."""
    from engine.events import LogStep, read_events

    return [e.loss for e in read_events(str(Path(run_dir) / "events.jsonl"))
            if isinstance(e, LogStep) and e.loss is not None]


def safetensors_weights(folder) -> dict:
    """The tensors of the (first) safetensors file in `folder`."""
    from safetensors.torch import load_file

    return load_file(str(next(Path(folder).glob("*.safetensors"))))


def hub_unreachable(monkeypatch) -> None:
    """The Hub's host does not answer, and nothing says offline (no HF_HUB_OFFLINE): a laptop on a train."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("unreachable")))


def not_in_cache(monkeypatch, cls) -> list:
    """`cls.from_pretrained` finds nothing; returns the list of the `local_files_only` it was called with."""
    asked = []

    def from_pretrained(name, **kw):
        asked.append(kw.get("local_files_only"))
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(cls, "from_pretrained", from_pretrained)
    return asked
