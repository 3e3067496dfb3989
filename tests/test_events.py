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
