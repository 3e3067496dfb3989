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
