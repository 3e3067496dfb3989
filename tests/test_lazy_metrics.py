"""engine/lazy_metrics.py: trl's SFT metrics read back at log steps only, the same numbers in the same logs."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from world import tiny_sft_config, train_run

from engine import lazy_metrics, sft
from engine.events import LogStep, read_events

# on a GPU the demo trains in bf16, whose kernels may sum in another order from one run to the next
TOLERANCE = 2e-2 if torch.cuda.is_available() else 1e-6


def _logs(run_dir) -> list[dict]:
    return [dict(step=e.step, loss=e.loss, grad_norm=e.grad_norm, **e.metrics)
            for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, LogStep)]


class _HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value on the host (on a GPU each is a sync), outside the model's forward."""

    def __init__(self):
        super().__init__()
        self.count, self.in_model = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and not self.in_model:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("packing", ["off", "on"])
def test_the_same_losses_and_metrics_as_trl_computes(workdir, demo_model, monkeypatch, packing):
    """Two micro-batches a step, a log every 2 steps: the losses, entropy, token accuracy and token counts trl
    logs itself (padded rows: the tokens summed on the device; packed: counted on the host)."""
    cfg = tiny_sft_config(max_steps=6, gradient_accumulation_steps=2, logging_steps=2)
    cfg["data"]["packing"] = packing
    installed = []
    real = lazy_metrics.install
    monkeypatch.setattr(lazy_metrics, "install", lambda trainer: installed.append(real(trainer)))
    ours = _logs(train_run(workdir, cfg))
    monkeypatch.setattr(lazy_metrics, "install", lambda trainer: False)
    trls = _logs(train_run(workdir, cfg))
    assert installed == [True]
    assert [log["step"] for log in ours] == [1, 2, 4, 6]  # the first step, then every second
    assert {"entropy", "mean_token_accuracy"} <= set(ours[-1])
    assert len(ours) == len(trls)
    for a, b in zip(ours, trls, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=TOLERANCE), (a["step"], k)


def test_micro_batches_read_nothing_back_until_a_step_is_logged(workdir, demo_model, monkeypatch):
    """trl read four numbers back after every forward; now compute_loss reads none, and the log reads them."""
    reads = []
    build = sft.build

    def counting(model, *args, **kwargs):
        trainer = build(model, *args, **kwargs)
        mode = _HostReads()
        model.register_forward_pre_hook(lambda *_: setattr(mode, "in_model", mode.in_model + 1))
        model.register_forward_hook(lambda *_: setattr(mode, "in_model", mode.in_model - 1))
        loss = trainer.compute_loss

        def compute_loss(*a, **k):
            with mode:
                out = loss(*a, **k)
            reads.append(mode.count)
            mode.count = 0
            return out

        trainer.compute_loss = compute_loss
        return trainer

    monkeypatch.setattr(sft, "build", counting)
    cfg = tiny_sft_config(max_steps=3, gradient_accumulation_steps=2)
    logs = _logs(train_run(workdir, cfg))
    assert len(reads) == 6 and reads == [0] * 6
    assert all(0 <= log["mean_token_accuracy"] <= 1 and log["entropy"] > 0 for log in logs)


def test_trls_own_path_where_the_loss_is_not_the_plain_one():
    class Args:
        loss_type = "nll"

    class Accelerator:
        num_processes = 1

    class Trainer:
        args, accelerator = Args(), Accelerator()
        compute_loss_func, label_smoother, aux_loss_enabled = None, None, False
        _metrics, _total_train_tokens = {}, 0

    assert lazy_metrics.plain(Trainer())
    for attr, value in [("compute_loss_func", print), ("label_smoother", print), ("aux_loss_enabled", True)]:
        t = Trainer()
        setattr(t, attr, value)
        assert not lazy_metrics.plain(t), attr
    t = Trainer()
    t.accelerator = type("Two", (), {"num_processes": 2})()
    assert not lazy_metrics.plain(t)
    t = Trainer()
    t.args = type("Other", (), {"loss_type": "chunked_nll"})()
    assert not lazy_metrics.plain(t) and not lazy_metrics.install(t)
