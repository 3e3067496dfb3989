"""Events survive the trip through events.jsonl, and a torn last line doesn't break reading."""

from engine import events as ev


def test_every_event_round_trips_through_json(tmp_path):
    items = [
        ev.RunStarted(run_id="r", stage="sft", total_steps=10, pid=123),
        ev.LogStep(step=1, loss=2.5, learning_rate=1e-4, grad_norm=0.5, epoch=0.1, tokens_per_second=100.0,
                   memory_gb=1.5, metrics={"rewards/margins": 0.2}),
        ev.Progress(step=1, total_steps=10, elapsed_seconds=1.0, eta_seconds=9.0),
        ev.Evaluation(step=5, metrics={"loss": 2.0}),
        ev.CheckpointSaved(step=5, path="/x/checkpoint-5"),
        ev.Warning(key="warning.x", params={"a": 1}),
        ev.Error(key="error.oom", params={"device": "GPU"}, message="m", traceback="tb"),
        ev.Finished(status="stopped", step=5, metrics={"train_loss": 2.2}),
    ]
    path = tmp_path / "events.jsonl"
    with open(path, "w") as f:
        for e in items:
            f.write(e.to_json() + "\n")
        f.write('{"type": "log", "step": 6, "lo')  # a process killed mid-write
    back = ev.read_events(str(path))
    assert back == items
    assert [e.type for e in back] == ["run_started", "log", "progress", "evaluation", "checkpoint", "warning",
                                      "error", "finished"]


def test_a_run_whose_gradient_stays_zero_is_told_once():
    """A learning rate far too high collapses the model: the loss goes flat and the gradient exactly zero, and
    the run would otherwise 'finish' as if all were well."""
    from types import SimpleNamespace

    from engine.callbacks import STUCK_LOGS, EventCallback
    from engine.events import Warning

    got = []
    cb = EventCallback(got.append)
    control = SimpleNamespace(should_training_stop=False, should_save=False, should_evaluate=False)
    for step, grad in enumerate([2.5, 1.0] + [0.0] * (STUCK_LOGS + 3), 1):
        cb.on_log(None, SimpleNamespace(global_step=step), control,
                  logs={"loss": 6.93, "learning_rate": 5.0, "grad_norm": grad})
    warnings = [e for e in got if isinstance(e, Warning)]
    assert [(w.key, w.params["step"]) for w in warnings] == [("warning.no_gradient", 2 + STUCK_LOGS)]
    assert "learning rate" in warnings[0].message
