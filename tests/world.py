"""Shared test helpers (a unique module name: tests/browser has a conftest of its own)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tiny_sft_config(**training) -> dict:
    """A demo SFT LoRA config that trains in seconds on 2 CPU cores and visibly learns."""
    t = {"max_steps": 30, "learning_rate": 3e-3, "per_device_train_batch_size": 8,
         "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "seed": 7}
    t.update(training)
    return {"stage": "sft", "run_name": "test", "adapter": {"method": "lora", "rank": 16, "alpha": 32, "dropout": 0.0},
            "data": {"datasets": [{"path": "demo:sft"}], "max_length": 128}, "training": t}
