"""Packing without cross-contamination: a packed row gives each sample the logits it gets alone."""

def test_packed_and_padded_training_losses_agree(workdir, demo_model):
    """Same data, same seed: the first step's loss is the same whether samples are packed or padded."""
    from world import tiny_sft_config

    from engine.config import RunConfig
    from engine.events import LogStep, read_events
    from engine.runs import create_run
    from engine.train import run_training

    def first_loss(packing):
        # one batch holding the whole (small) dataset slice, so packing changes layout, not content
        cfg = tiny_sft_config(max_steps=1, per_device_train_batch_size=64)
        cfg["data"].update(packing=packing, max_length=4096, datasets=[{"path": "demo:sft", "max_samples": 16}])
        cfg = RunConfig.from_dict(cfg)
        run_dir = create_run(cfg, workdir)
        run_training(cfg, run_dir, workdir=workdir)
        return next(e.loss for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, LogStep))

    padded, packed = first_loss(False), first_loss(True)
    assert abs(padded - packed) < 1e-3 * max(1.0, padded), (padded, packed)
