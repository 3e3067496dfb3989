"""Training on the offline demo: loss falls, adapters reload in plain peft, the right weights move."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from world import ROOT, hub_unreachable, logged_losses, not_in_cache, safetensors_weights, tiny_sft_config, train_run

from engine.config import RunConfig
from engine.events import Evaluation, Finished, LogStep, Progress, RunStarted, Warning, read_events
from engine.runs import create_run, run_info
from engine.train import run_training


def test_sft_lora_loss_falls_and_run_folder_is_complete(trained_run):
    losses = logged_losses(trained_run)
    assert len(losses) == 30
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first * 0.75, (first, last)
    for name in ("config.yaml", "events.jsonl", "train.log", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer.json", "resolved.json"):
        assert (trained_run / name).exists(), name
    evs = read_events(str(trained_run / "events.jsonl"))
    assert isinstance(evs[0], RunStarted) and evs[0].trainable_params > 0
    assert isinstance(evs[-1], Finished) and evs[-1].status == "finished" and evs[-1].step == 30
    assert all(e.tokens_per_second > 0 for e in evs if isinstance(e, LogStep))  # padded rows: their real tokens
    assert run_info(trained_run).status == "finished"
    # config.yaml is exactly what ran: it re-loads to the same config
    assert RunConfig.load(str(trained_run / "config.yaml")) == RunConfig.from_dict(tiny_sft_config())


def test_adapter_reloads_in_plain_peft_changes_output_and_leaves_base_alone(trained_run, demo_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    saved = safetensors_weights(trained_run / "adapter")
    assert saved and all("lora_" in k for k in saved), "the adapter holds LoRA weights only"
    base_on_disk = safetensors_weights(demo_model)
    base = AutoModelForCausalLM.from_pretrained(demo_model)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, trained_run / "adapter")
        after = tuned(ids).logits
        with tuned.disable_adapter():
            disabled = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4), "the adapter changes the output"
    assert torch.allclose(before, disabled, atol=1e-6), "disabling it gives the base back"
    for k, v in safetensors_weights(demo_model).items():
        assert torch.equal(v, base_on_disk[k]), f"training wrote into the base weights: {k}"


def test_same_seed_gives_same_losses(workdir, demo_model):
    a = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4)))
    b = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4)))
    assert a == b
    c = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4, seed=8)))
    assert c != a


def test_full_finetune_changes_every_weight(workdir, demo_model):
    cfg = tiny_sft_config(max_steps=3, learning_rate=1e-3)
    cfg["adapter"] = {"method": "full"}
    run_dir = train_run(workdir, cfg)
    base, tuned = safetensors_weights(demo_model), safetensors_weights(run_dir / "model")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == set(base), set(base) - changed


def test_freeze_changes_only_the_last_layers(workdir, demo_model):
    cfg = tiny_sft_config(max_steps=3, learning_rate=1e-3)
    cfg["adapter"] = {"method": "freeze", "freeze_trainable_layers": 2}
    run_dir = train_run(workdir, cfg)
    base, tuned = safetensors_weights(demo_model), safetensors_weights(run_dir / "model")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed, "freeze trained nothing"
    assert all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed), changed
    # every tensor of the two trainable layers moved (norm weights included)
    assert {k for k in base if k.startswith(("model.layers.2.", "model.layers.3."))} == changed


def test_resume_continues_the_step_count(workdir, demo_model):
    first = train_run(workdir, tiny_sft_config(max_steps=6, save_steps=3))
    assert (first / "checkpoints" / "checkpoint-3").is_dir()
    cfg = tiny_sft_config(max_steps=6)
    cfg["training"]["resume_from"] = str(first / "checkpoints" / "checkpoint-3")
    second = train_run(workdir, cfg)
    steps = [e.step for e in read_events(str(second / "events.jsonl")) if isinstance(e, LogStep)]
    assert steps and steps[0] == 4 and steps[-1] == 6
    # and says so (the log and the terminal said nothing of where it went on from)
    said = [e for e in read_events(str(second / "events.jsonl")) if isinstance(e, Warning) and e.key == "warning.resuming"]
    assert [e.params for e in said] == [{"checkpoint": cfg["training"]["resume_from"], "step": 3}]
    # the resumed steps reproduce the uninterrupted run's losses
    assert logged_losses(second) == pytest.approx(logged_losses(first)[3:], rel=1e-4)
    # and its mean loss is the whole trajectory's, as the uninterrupted run's (transformers divided the resumed
    # steps' losses by all six steps)
    final = [e for e in read_events(str(second / "events.jsonl")) if isinstance(e, Finished)][-1]
    first_final = [e for e in read_events(str(first / "events.jsonl")) if isinstance(e, Finished)][-1]
    assert final.metrics["train_loss"] == pytest.approx(first_final.metrics["train_loss"], rel=1e-3)
    # a learning rate changed for the resume is the one the resumed steps train at (the checkpoint's optimizer
    # and schedule carry the old peak), the schedule's shape kept: what config.yaml says is what ran
    cfg["training"]["learning_rate"] = 2 * tiny_sft_config()["training"]["learning_rate"]
    third = train_run(workdir, cfg)
    lrs = [e.learning_rate for e in read_events(str(third / "events.jsonl")) if isinstance(e, LogStep)]
    first_lrs = [e.learning_rate for e in read_events(str(first / "events.jsonl")) if isinstance(e, LogStep)]
    assert lrs == pytest.approx([2 * lr for lr in first_lrs[3:]], rel=1e-6)
    assert logged_losses(third)[1:] != pytest.approx(logged_losses(first)[4:], rel=1e-4)
    # a run extended (max_steps 6 -> 12) trains every resumed step on the new schedule, the first one too (it
    # took the old schedule's rate for its step)
    def rates(run):
        return [e.learning_rate for e in read_events(str(run / "events.jsonl")) if isinstance(e, LogStep)]

    short = train_run(workdir, tiny_sft_config(max_steps=6, save_steps=3, lr_scheduler_type="linear"))
    cfg = tiny_sft_config(max_steps=12, lr_scheduler_type="linear")
    whole = rates(train_run(workdir, cfg))
    cfg["training"]["resume_from"] = str(short / "checkpoints" / "checkpoint-3")
    assert rates(train_run(workdir, cfg)) == pytest.approx(whole[3:], rel=1e-6)


def test_loraplus_trains_the_b_matrices_faster_and_resumes(workdir, demo_model):
    """LoRA+: the optimizer's groups as peft makes them, B at 16x A's rate, each following the schedule; a resume
    reloads them (a plain optimizer's two groups would not take the checkpoint's four)."""
    cfg = tiny_sft_config(max_steps=4, save_steps=2, lr_scheduler_type="linear")
    cfg["adapter"]["loraplus_lr_ratio"] = 16
    run_dir = train_run(workdir, cfg)
    state = torch.load(run_dir / "checkpoints" / "checkpoint-2" / "optimizer.pt", weights_only=False)
    groups = [g for g in state["param_groups"] if g["params"]]
    a, b = groups[0]["lr"], groups[1]["lr"]
    assert a == pytest.approx(3e-3 * 2 / 4) and b == pytest.approx(16 * a)  # linear: half-way down at step 2
    plain = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4, lr_scheduler_type="linear")))
    assert logged_losses(run_dir) != plain
    cfg["training"]["resume_from"] = str(run_dir / "checkpoints" / "checkpoint-2")
    assert logged_losses(train_run(workdir, cfg)) == pytest.approx(logged_losses(run_dir)[2:], rel=1e-5)


@pytest.mark.parametrize("adapter", [{"use_dora": True}, {"use_rslora": True}, {"target_modules": ["q_proj", "v_proj"]}],
                         ids=["dora", "rslora", "q_v"])
def test_lora_variants_train_and_record_their_kind(workdir, demo_model, adapter):
    cfg = tiny_sft_config(max_steps=2)
    cfg["adapter"].update(adapter)
    run_dir = train_run(workdir, cfg)
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["use_dora"] == adapter.get("use_dora", False)
    assert saved["use_rslora"] == adapter.get("use_rslora", False)
    if "target_modules" in adapter:
        assert set(saved["target_modules"]) == {"q_proj", "v_proj"}
    # DoRA adds terms of its own to each layer and keeps peft's forward; the others train through the fused branch
    assert json.loads((run_dir / "resolved.json").read_text())["fused_lora"] == (not adapter.get("use_dora"))


def test_qlora_4bit_trains_on_cpu(workdir, demo_model):
    """bitsandbytes quantizes NF4 on the CPU, so the real QLoRA path runs here, validation and chat included
    (bitsandbytes' bf16 CPU repacking of a layer run without gradients broke on the demo's 96-wide layers)."""
    pytest.importorskip("bitsandbytes")
    from engine.config import GenerationConfig
    from engine.events import Evaluation, read_events
    from engine.generate import ChatSession

    cfg = tiny_sft_config(max_steps=3)
    cfg["quantization"] = {"bits": 4, "quant_type": "nf4", "double_quant": True}
    cfg["data"]["val_size"] = 8
    run_dir = train_run(workdir, cfg)
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    losses = logged_losses(run_dir)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert json.loads((run_dir / "resolved.json").read_text())["gradient_checkpointing"]  # auto: on with 4-bit
    assert "started sft on cpu (fp32, sdpa, QLoRA on a 4-bit NF4 base, adamw_torch, gradient checkpointing, fused LoRA)" \
        in (run_dir / "train.log").read_text()
    assert any(isinstance(e, Evaluation) for e in read_events(str(run_dir / "events.jsonl")))
    chat = ChatSession(workdir)
    chat.load(str(run_dir))
    try:
        answer = chat.generate([{"role": "user", "content": "Hello"}], GenerationConfig(max_new_tokens=4, seed=1))[0]
    finally:
        chat.unload()
    assert answer.text


def test_a_4bit_model_that_trains_keeps_its_trainable_layout_through_validation(workdir, demo_model, monkeypatch):
    """On an AVX512-BF16 CPU (made one here) bitsandbytes repacks a 4-bit layer for an inference kernel with no
    backward at its first forward without gradients, and leaves it so: every step after a run's first validation
    went through it. A model that trains keeps every layer's trainable layout; a model for chat only the layers
    the repacking can't take (input width not a multiple of 64)."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    from engine.config import RunConfig
    from engine.model import load_model, resolve

    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: True)
    cfg = RunConfig.from_dict({**tiny_sft_config(), "quantization": {"bits": 4}})
    res = resolve(cfg, workdir)

    def layers(model):
        return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]

    model = load_model(cfg, res, for_training=True)
    shapes = [m.weight.shape for m in layers(model)]
    model.eval()
    with torch.no_grad():
        model(torch.tensor([[1, 5, 9, 14]]))
    assert [m.weight.shape for m in layers(model)] == shapes
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers(model))
    chat = load_model(cfg, res, for_training=False)
    kept = {m.in_features: m.support_avx512bf16_for_cpu for m in layers(chat)}
    assert kept == {96: False, 256: True}  # the demo's widths: hidden 96, MLP 256


def test_checkpointing_recomputes_the_same_training(workdir, demo_model):
    """Checkpointing trades memory for compute, not results: the same losses and weights with it and without."""
    runs = {mode: train_run(workdir, {**tiny_sft_config(max_steps=3), "training": {
        **tiny_sft_config(max_steps=3)["training"], "gradient_checkpointing": mode}}) for mode in ("on", "off")}
    assert [json.loads((r / "resolved.json").read_text())["gradient_checkpointing"] for r in runs.values()] == [True, False]
    assert logged_losses(runs["on"]) == pytest.approx(logged_losses(runs["off"]), rel=1e-4)
    on, off = safetensors_weights(runs["on"] / "adapter"), safetensors_weights(runs["off"] / "adapter")
    for k in on:
        assert torch.allclose(on[k], off[k], atol=1e-5), k


def test_auto_checkpointing_follows_the_estimate_on_a_gpu(tmp_path, monkeypatch):
    """On a GPU, auto turns checkpointing on where the estimate says the run would not fit without it, and
    says so; where it fits, or on a CPU, or when the switch is set, it leaves the choice alone."""
    from engine import estimate as E
    from engine.model import Resolved
    from engine.train import _fit_checkpointing

    shape = json.loads((ROOT / "bench" / "configs" / "llama-2-7b.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(shape))
    cfg = RunConfig.from_dict({"model": {"name_or_path": str(tmp_path)}, "data": {"max_length": 1024},
                               "training": {"per_device_train_batch_size": 4}})
    off = E.estimate(shape, cfg.with_overrides({"training.gradient_checkpointing": "off"}), 80, liger=False)
    on = E.estimate(shape, cfg.with_overrides({"training.gradient_checkpointing": "on"}), 80, liger=False)
    said = []  # the engine estimates with its own Liger choice (off in `res` below), whatever is installed here

    def fit(gpu_gb, config=cfg, device="cuda"):
        monkeypatch.setattr(E, "local_gpu", lambda: (gpu_gb, (9, 0)))
        res = Resolved(path=str(tmp_path), device=device, precision="bf16", attn_implementation="varlen",
                       chat_template="", optim="adamw_torch_fused", liger=False)
        _fit_checkpointing(config, res, tmp_path, said.append)
        fitted.append(res.checkpoint_layers)
        return res.gradient_checkpointing

    fitted = []
    assert not fit(80) and not said
    gpu = (on.total + off.total) / 2 / E.GB
    assert fit(gpu)  # with the fewest layers recomputing that fit, as the estimate chose them
    assert fitted[-1] == E.estimate(shape, cfg, gpu, liger=False).checkpoint_layers and 1 < fitted[-1] < 32
    assert said[-1].key == "warning.checkpointing_auto" and said[-1].params["without"] == f"{off.total / E.GB:.1f}"
    assert not fit(10, device="cpu")
    assert not fit(10, cfg.with_overrides({"training.gradient_checkpointing": "off"}))
    assert len(said) == 1


def test_plain_text_pretraining_with_packing(workdir, demo_model):
    run_dir = train_run(workdir, {"stage": "pt", "adapter": {"method": "lora", "rank": 8, "alpha": 16},
                             "data": {"datasets": [{"path": "demo:pt"}], "max_length": 64, "packing": True},
                             "training": {"max_steps": 3, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
                                          "gradient_accumulation_steps": 1}})
    assert len(logged_losses(run_dir)) == 3
    assert all(e.tokens_per_second > 0 for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, LogStep))


def test_tokens_are_counted_without_padding_and_read_from_the_gpu_only_when_a_step_is_logged():
    """Padded rows count their attention mask's ones, summed where the batch is and read at `total()` (the log);
    padding-free rows count every token, on the host. A DPO batch (chosen and rejected rows, padded) alike."""
    from engine.callbacks import TokenCount

    reads = []

    class Lazy(torch.Tensor):  # counts reads of its value on the host
        def item(self):
            reads.append(1)
            return super().item()

    tokens = TokenCount()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tokens.add({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask.as_subclass(Lazy)})
    tokens.add({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask.as_subclass(Lazy)})
    assert reads == []
    assert tokens.total() == 10 and reads == [1]
    tokens.add({"input_ids": torch.zeros(1, 7, dtype=torch.long), "position_ids": torch.arange(7)[None]})
    assert tokens.total() == 17 and reads == [1]


def test_loader_workers_collate_the_same_batches_and_are_on_by_default_on_a_gpu_only(workdir, demo_model):
    """Two worker processes (kept for the run, evaluation included) train the same losses as the main process
    collating each batch itself; left empty, a GPU gets them and a CPU, whose cores train, does not."""
    from engine.train import GPU_LOADER_WORKERS, _loader_args

    assert _loader_args(None, on_gpu=True) == {"dataloader_num_workers": GPU_LOADER_WORKERS,
                                                "dataloader_persistent_workers": True}
    assert _loader_args(None, on_gpu=False)["dataloader_num_workers"] == 0
    assert _loader_args(0, on_gpu=True) == {"dataloader_num_workers": 0, "dataloader_persistent_workers": False}
    cfg = tiny_sft_config(max_steps=4, eval_steps=2)
    cfg["data"]["val_size"] = 8
    cfg["training"]["dataloader_num_workers"] = 2
    with_workers = train_run(workdir, cfg)
    cfg["training"]["dataloader_num_workers"] = 0
    without = train_run(workdir, cfg)
    rel = 2e-2 if torch.cuda.is_available() else 1e-9  # bf16 kernels on a GPU may sum in another order
    assert logged_losses(with_workers) == pytest.approx(logged_losses(without), rel=rel)
    assert len(logged_losses(without)) == 4
    evals = [[e.metrics["loss"] for e in read_events(str(run / "events.jsonl")) if isinstance(e, Evaluation)]
             for run in (with_workers, without)]
    assert evals[0] == pytest.approx(evals[1], rel=rel) and len(evals[0]) == 2


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_train_prints_the_run_folder_last(workdir, demo_model):
    r = _cli("train", "assets/configs/sft_demo.yaml", "--max-steps", "2", "--workdir", str(workdir),
             "--set", "data.val_size=0", "--set", "training.learning_rate=1e-3", "--quiet")
    assert r.returncode == 0, r.stderr
    run_dir = r.stdout.strip().splitlines()[-1]
    cfg = RunConfig.load(f"{run_dir}/config.yaml")
    assert cfg.training.max_steps == 2 and cfg.training.learning_rate == 1e-3 and cfg.data.val_size == 0
    # the whole run's memory estimate comes first; on a machine without a GPU it says whose it is
    from engine.messages import message

    assert r.stderr.index("Memory estimate for demo") < r.stderr.index("run folder:")
    if not torch.cuda.is_available():
        assert message("estimate.note.no_gpu", {"gpu": "24"}) in r.stderr
    assert "Writing model shards" not in r.stderr


def test_cli_refuses_an_unreachable_hub_model_before_making_a_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "train", "assets/configs/sft_demo.yaml", "--workdir",
                        str(tmp_path), "--set", "model.name_or_path=some-org/no-such-model"], capture_output=True,
                       text=True, cwd=ROOT, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    assert "some-org/no-such-model" in r.stderr and "offline" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_bad_config_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rate: -3\n")
    r = _cli("train", str(bad), "--workdir", str(tmp_path))
    assert r.returncode == 2
    assert "training.learning_rate" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_missing_data_file_is_named(tmp_path):
    r = _cli("train", "assets/configs/sft_demo.yaml", "--data", str(tmp_path / "nope.jsonl"), "--workdir", str(tmp_path))
    assert r.returncode == 2
    assert "nope.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_bad_data_is_refused_in_one_line_before_a_run_folder_exists(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n{"instruction": oops}\n')
    r = _cli("train", "assets/configs/sft_demo.yaml", "--data", str(bad), "--workdir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl row 3" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_cli_train_says_the_data_warnings(workdir, demo_model, tmp_path):
    data = tmp_path / "latin.csv"
    data.write_bytes("instruction,output\nCafé?,Très bien.\nOù?,Là.\nQui?,Moi.\n".encode("cp1252"))
    r = _cli("train", "assets/configs/sft_demo.yaml", "--data", str(data), "--max-steps", "1", "--workdir",
             str(workdir), "--set", "data.val_size=0", "--quiet")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "read as cp1252" in warned[0] and "latin.csv" in warned[0]


def test_cli_data_path_with_a_tilde_is_found(workdir, demo_model, tmp_path):
    """`--data ~/x.jsonl` is what a user types; the early missing-file check expands it as the loader does."""
    import os
    import shutil

    shutil.copy(ROOT / "assets" / "data" / "demo_sft.json", tmp_path / "mine.json")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "train", "assets/configs/sft_demo.yaml", "--data",
                        "~/mine.json", "--max-steps", "1", "--workdir", str(workdir), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    run_dir = r.stdout.strip().splitlines()[-1]
    # recorded as the file it is: the run re-runs from anywhere, as any user (whose ~ is elsewhere)
    assert RunConfig.load(f"{run_dir}/config.yaml").data.datasets[0].path == str((tmp_path / "mine.json").resolve())


def test_cli_train_refuses_a_workdir_it_cannot_make_before_anything_else(tmp_path):
    """`--workdir /proc/nope` built the demo model first ("First use: ..."), then said "File not found"."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = _cli("train", "assets/configs/sft_demo.yaml", "--workdir", str(blocked / "work"), "--max-steps", "1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: Cannot use {blocked / 'work'} as the work folder: Not a directory"]


def test_cli_unknown_set_field_is_rejected(tmp_path):
    r = _cli("train", "assets/configs/sft_demo.yaml", "--set", "training.lr=1", "--workdir", str(tmp_path))
    assert r.returncode == 2 and "training.lr" in r.stderr


def test_hub_model_offline_gives_a_clear_error(workdir):
    from engine.messages import TuneboardError
    from engine.model import load_tokenizer, resolve

    cfg = RunConfig.from_dict({"model": {"name_or_path": "someorg/some-model-that-is-not-cached"}})
    with pytest.raises(TuneboardError) as e:
        load_tokenizer(cfg, resolve(cfg, workdir))
    assert e.value.key == "error.offline_hub"


def test_a_hub_model_whose_host_does_not_answer_is_read_from_the_cache_alone(workdir, monkeypatch):
    """Not told it is offline, the Hub unreachable: from_pretrained asks the cache only (a cached model loads
    at once instead of after five retries with back-off a file), and a model not there is 'offline'."""
    import transformers

    from engine.messages import TuneboardError
    from engine.model import load_tokenizer, resolve

    hub_unreachable(monkeypatch)
    asked = not_in_cache(monkeypatch, transformers.AutoTokenizer)
    cfg = RunConfig.from_dict({"model": {"name_or_path": "someorg/some-model"}})
    with pytest.raises(TuneboardError) as e:
        load_tokenizer(cfg, resolve(cfg, workdir))
    assert e.value.key == "error.offline_hub" and asked == [True]


def test_a_hub_base_whose_host_does_not_answer_is_not_asked_for_an_adapter_config(workdir, monkeypatch):
    """chat, eval and export of a run on a Hub base, offline: transformers asked the Hub whether the id holds an
    adapter_config.json without local_files_only, five times with back-off (~40 s, each retry printed)."""
    import huggingface_hub.constants
    import huggingface_hub.file_download as download

    from engine.messages import TuneboardError
    from engine.model import load_model, resolve

    hub_unreachable(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as read when this process started
    asked = []

    def metadata(url, *a, **k):
        asked.append(url)
        raise OSError("unreachable")

    monkeypatch.setattr(download, "get_hf_file_metadata", metadata)
    cfg = RunConfig.from_dict({"model": {"name_or_path": "someorg/some-model"}})
    with pytest.raises(TuneboardError) as e:
        load_model(cfg, resolve(cfg, workdir), for_training=False)
    assert e.value.key == "error.offline_hub" and asked == []


@pytest.mark.gpu
def test_qlora_bf16_on_gpu(workdir, demo_model):
    cfg = tiny_sft_config(max_steps=5)
    cfg["quantization"] = {"bits": 4}
    run_dir = train_run(workdir, cfg)
    evs = read_events(str(run_dir / "events.jsonl"))
    started = next(e for e in evs if isinstance(e, RunStarted))
    assert started.device != "cpu" and started.precision in ("bf16", "fp16")


def test_gradient_accumulation_matches_a_bigger_batch(workdir, demo_model):
    """1 x 4 with 4 accumulation steps trains the same weights as 4 x 1 (loss normalised over all tokens)."""
    big = train_run(workdir, tiny_sft_config(max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=1))
    acc = train_run(workdir, tiny_sft_config(max_steps=2, per_device_train_batch_size=1, gradient_accumulation_steps=4))
    a, b = safetensors_weights(big / "adapter"), safetensors_weights(acc / "adapter")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-4, rtol=1e-3), k


def test_a_stop_file_stops_the_run_with_a_checkpoint(workdir, demo_model):
    """What the board's Stop does to a run it did not start (a CLI run, one from before a restart)."""
    from engine.runs import STOP_FILE, latest_checkpoint

    cfg = RunConfig.from_dict(tiny_sft_config(max_steps=30))
    run_dir = create_run(cfg, workdir)

    def emit(ev):
        if isinstance(ev, LogStep) and ev.step == 3:
            (run_dir / STOP_FILE).touch()

    run_training(cfg, run_dir, emit=emit, workdir=workdir)
    finished = read_events(str(run_dir / "events.jsonl"))[-1]
    assert isinstance(finished, Finished) and finished.status == "stopped" and 3 <= finished.step < 30
    assert latest_checkpoint(run_dir) is not None and run_info(run_dir).status == "stopped"
    assert not (run_dir / STOP_FILE).exists()  # a resume must not stop at once


def test_cli_a_run_stopped_by_a_stop_request_is_not_a_success(workdir, demo_model, tmp_path):
    """The board's Stop (or a script's stop.request) ends `tuneboard train` with 143, as SIGTERM does: with 0,
    `tuneboard train ... && tuneboard export ...` would export a run that never got to its last step."""
    import os
    import time

    from engine.runs import STOP_FILE

    cmd = [sys.executable, "-m", "engine.cli", "train", "assets/configs/sft_demo.yaml", "--max-steps", "500",
           "--workdir", str(workdir), "--set", "data.val_size=0"]
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and "run folder: " not in (said := (tmp_path / "stderr").read_text()):
        time.sleep(0.1)
    run_dir = Path(said.split("run folder: ")[1].splitlines()[0])
    while time.time() < deadline and " 10/500 " not in (tmp_path / "stderr").read_text():
        time.sleep(0.1)
    (run_dir / STOP_FILE).touch()
    out, _ = proc.communicate(timeout=120)
    said = (tmp_path / "stderr").read_text()[-2000:]
    assert proc.returncode == 143 and out.strip().splitlines()[-1] == str(run_dir), said
    assert run_info(run_dir).status == "stopped" and "stopped at step" in said


def _aborted_at(cfg: RunConfig, workdir, step: int) -> list:
    """A run interrupted (as by a second Ctrl+C) at `step`: its events."""
    run_dir = create_run(cfg, workdir)

    def emit(ev):
        if isinstance(ev, LogStep) and ev.step == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, run_dir, emit=emit, workdir=workdir)
    return read_events(str(run_dir / "events.jsonl"))


def test_a_run_aborted_before_its_first_checkpoint_says_no_weights_were_saved(workdir, demo_model):
    """A second Ctrl+C before any save said "stopped at step N", as if something of it could be resumed."""
    cfg = RunConfig.from_dict(tiny_sft_config(max_steps=30)).with_overrides({"training.save_steps": 1000})
    events = _aborted_at(cfg, workdir, 2)
    assert [e.key for e in events if isinstance(e, Warning)][-1:] == ["warning.aborted_unsaved"]
    assert isinstance(events[-1], Finished) and events[-1].status == "stopped"
    # aborted after a checkpoint: where the run got to and what of it is saved ("stopped at step 5" hid that
    # checkpoint-3 is the newest)
    events = _aborted_at(cfg.with_overrides({"training.save_steps": 3}), workdir, 5)
    [said] = [e for e in events if isinstance(e, Warning) and e.key.startswith("warning.aborted")]
    assert said.key == "warning.aborted_at" and (said.params["step"], said.params["saved"]) == (5, 3)


def test_a_run_whose_folder_is_deleted_ends_and_writes_nothing_back(workdir, demo_model):
    """Deleted from outside while it trained, a run went on to the end and made its folder again (checkpoints, an
    adapter, no config.yaml): a ghost the Runs tab did not list, holding the GPU meanwhile."""
    import shutil

    from engine.messages import TuneboardError

    cfg = RunConfig.from_dict(tiny_sft_config(max_steps=30, save_steps=5))
    run_dir = create_run(cfg, workdir)
    seen = []

    def emit(ev):
        seen.append(ev)
        if isinstance(ev, LogStep) and ev.step == 3:
            shutil.rmtree(run_dir)

    with pytest.raises(TuneboardError) as e:
        run_training(cfg, run_dir, emit=emit, workdir=workdir)
    assert e.value.key == "error.run_deleted" and not run_dir.exists()
    assert max(ev.step for ev in seen if isinstance(ev, LogStep)) < 6 and isinstance(seen[-1], Finished)


def test_a_loss_that_turns_nan_fails_the_run_at_that_step_and_keeps_the_checkpoints_before(workdir, demo_model,
                                                                                           monkeypatch):
    """A diverged run (here: its adapter's weights made NaN after step 3, as an overflow would) stops at the first
    NaN loss instead of training on under a made-up curve (transformers' default puts the earlier losses' mean in
    its place), saves nothing of the NaN weights, and says where and what in the user's words."""
    from transformers import TrainerCallback

    from engine import sft
    from engine.events import Error
    from engine.messages import TuneboardError
    from engine.runs import latest_checkpoint

    class Overflow(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 3:
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))

    build = sft.build
    monkeypatch.setattr(sft, "build", lambda *a, **kw: (t := build(*a, **kw)).add_callback(Overflow()) or t)
    cfg = RunConfig.from_dict(tiny_sft_config(max_steps=20, save_steps=2))
    run_dir = create_run(cfg, workdir)
    with pytest.raises(TuneboardError) as e:
        run_training(cfg, run_dir, workdir=workdir)
    assert e.value.key == "error.loss_not_finite" and e.value.params == {"step": 4, "loss": "nan", "last": "2"}
    events = read_events(str(run_dir / "events.jsonl"))
    steps = [ev for ev in events if isinstance(ev, LogStep)]
    assert [ev.step for ev in steps] == [1, 2, 3, 4] and all(math.isfinite(ev.loss) for ev in steps[:3])
    assert steps[3].loss is None  # the chart leaves the NaN out; the error says it
    error = next(ev for ev in events if isinstance(ev, Error))
    assert "step 4" in error.message and "nan" in error.message
    assert isinstance(events[-1], Finished) and events[-1].status == "failed"
    assert latest_checkpoint(run_dir).name == "checkpoint-2" and not (run_dir / "adapter").exists()


@pytest.mark.parametrize("sig, times, code", [("SIGINT", 1, 130), ("SIGTERM", 1, 143), ("SIGINT", 2, 130)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-twice"])
def test_cli_ctrl_c_stops_after_the_step_keeps_a_checkpoint_and_prints_the_folder(workdir, demo_model, tmp_path,
                                                                                  sig, times, code):
    """Ctrl+C, or the SIGTERM of `kill`, `timeout`, docker stop or a scheduler, stops after the step with a
    checkpoint; a second one aborts at once. Either way the run says where it got to, and stdout's last line
    is its folder."""
    import os
    import signal
    import time

    from engine.runs import latest_checkpoint

    cmd = [sys.executable, "-m", "engine.cli", "train", "assets/configs/sft_demo.yaml", "--max-steps", "500",
           "--workdir", str(workdir), "--set", "data.val_size=0", "--set", "training.save_steps=5"]
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and " 10/500 " not in (tmp_path / "stderr").read_text():  # step 10's line
        time.sleep(0.1)
    reached = " 10/500 " in (tmp_path / "stderr").read_text()
    for _ in range(times):
        proc.send_signal(getattr(signal, sig))
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=120)
    said = (tmp_path / "stderr").read_text()[-2000:]
    assert reached, f"step 10 not reached in 120 s: {said}"
    assert proc.returncode == code, said
    assert out.strip(), f"no run folder on stdout: {said}"
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_info(run_dir).status == "stopped" and latest_checkpoint(run_dir) is not None
    [finished] = [e for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, Finished)]
    assert finished.step >= 10  # where it got to, not step 0
    assert "Traceback" not in (tmp_path / "stderr").read_text()


def test_cli_max_steps_0_is_refused_not_ignored(tmp_path):
    r = _cli("train", "assets/configs/sft_demo.yaml", "--max-steps", "0", "--workdir", str(tmp_path))
    assert r.returncode == 2 and "training.max_steps" in r.stderr and not (tmp_path / "runs").exists()


def test_cli_a_run_that_fails_still_ends_with_its_folder(tmp_path):
    """`tail -1` finds the failed run's folder (its log says why), as it finds a finished one."""
    broken = tmp_path / "broken-model"  # a folder that says it is a model and holds no weights: refused at once
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 100, "hidden_size": 8}))
    r = _cli("train", "assets/configs/sft_demo.yaml", "--max-steps", "1", "--workdir", str(tmp_path),
             "--set", f"model.name_or_path={broken}")
    assert r.returncode == 2 and "no tokenizer, weights" in r.stderr and not (tmp_path / "runs").exists()
    (broken / "tokenizer.json").write_text("{}")  # all there, but unreadable: fails on loading, in the run
    (broken / "model.safetensors").write_bytes(b"not weights")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "train", "assets/configs/sft_demo.yaml", "--max-steps",
                        "1", "--workdir", str(tmp_path), "--set", f"model.name_or_path={broken}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, timeout=600)
    assert r.returncode != 0 and "Traceback" not in r.stdout
    lines = r.stdout.strip().splitlines()  # stderr merged (`2>&1 | tail -1`): the error comes before the folder
    run_dir = Path(lines[-1])
    said = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert "Error" in lines[said] and said < len(lines) - 1
    assert run_dir.parent == tmp_path / "runs" and run_info(run_dir).status == "failed"


def _run_with_checkpoint(root: Path, step: int, **cfg) -> Path:
    run = root / "runs" / "old"
    ckpt = run / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    RunConfig.from_dict(cfg or tiny_sft_config()).save(str(run / "config.yaml"))
    return run


def test_a_checkpoint_that_cannot_go_on_is_refused_before_a_run_exists(tmp_path):
    from engine.messages import TuneboardError
    from engine.train import resume_checkpoint

    old = _run_with_checkpoint(tmp_path, 12)
    base = RunConfig.from_dict(tiny_sft_config())
    assert resume_checkpoint(base.with_overrides({"training.resume_from": str(old)}), None).name == "checkpoint-12"
    own = base.with_overrides({"training.resume_from": "last", "training.max_steps": 12})
    assert resume_checkpoint(own, old).name == "checkpoint-12"  # its own run at its limit: the final save is left
    for overrides, key in (({"adapter.rank": 4}, "error.resume_mismatch"), ({"stage": "dpo"}, "error.resume_mismatch"),
                           ({"training.max_steps": 10}, "error.resume_past_end"),
                           ({"training.resume_from": "last"}, "error.resume_last_new_run"),
                           ({"training.resume_from": str(tmp_path / "nope")}, "error.no_checkpoint")):
        cfg = base.with_overrides({"training.resume_from": str(old), **overrides})
        with pytest.raises(TuneboardError) as e:
            resume_checkpoint(cfg, None)
        assert e.value.key == key, overrides


def test_a_resumed_run_packs_as_its_checkpoint_did(tmp_path):
    """The trainer skips the steps done by their place in the data: another layout would skip the wrong rows."""
    from engine.messages import TuneboardError
    from engine.train import _check_resume_layout, resume_checkpoint

    old = _run_with_checkpoint(tmp_path, 3)
    cfg = RunConfig.from_dict(tiny_sft_config()).with_overrides({"training.resume_from": str(old)})
    ckpt = resume_checkpoint(cfg, tmp_path / "runs" / "new")
    _check_resume_layout(cfg, ckpt, packing=False)  # a run from before: its config said off
    with pytest.raises(TuneboardError) as e:
        _check_resume_layout(cfg, ckpt, packing=True)
    assert e.value.key == "error.resume_mismatch" and e.value.params["field"] == "data.packing"
    from engine.demo import demo_fingerprint

    (old / "resolved.json").write_text(json.dumps({"packing": True, "demo_fingerprint": demo_fingerprint()}))
    _check_resume_layout(cfg, ckpt, packing=True)
    with pytest.raises(TuneboardError) as e:
        _check_resume_layout(cfg, ckpt, packing=False)  # the same config on a CPU
    assert "auto (off here)" in str(e.value.params["new"])
    _check_resume_layout(RunConfig.from_dict(tiny_sft_config()), None, packing=True)  # no resume


def test_the_progress_line_shows_each_steps_own_loss(capsys):
    """trl logs a step's loss just after the step's progress: the line waits for it (it showed the step before's)."""
    from engine.train import ProgressBar

    bar = ProgressBar()
    for step, loss in ((9, 3.0), (10, 2.5)):
        bar(Progress(step=step, total_steps=10))
        bar(LogStep(step=step, loss=loss))
    bar(Finished(status="finished", step=10))
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["[" + "#" * 24 + "] 10/10  loss 2.5000  tok/s -  eta ?", "finished at step 10"]
    from engine.events import Warning
    from engine.messages import set_language

    set_language("ko")  # --lang ko: the bar's sentences too, not only errors
    try:
        bar = ProgressBar()
        bar(Warning(key="warning.no_gradient", params={"step": 3, "loss": "1", "lr": "2"}, message="in English"))
        bar(Finished(status="stopped", step=3))
        bar.close()
    finally:
        set_language(None)
    said = capsys.readouterr().err
    assert said.startswith("경고: ") and "in English" not in said and "warning" not in said


def test_the_mean_loss_weighs_each_log_by_the_steps_it_covers():
    from engine.train import _mean_logged_loss

    history = [{"step": 10, "loss": 2.0}, {"step": 1, "loss": 4.0}, {"step": 10, "eval_loss": 9.0}, {"step": 12}]
    assert _mean_logged_loss(history) == pytest.approx((4.0 + 9 * 2.0) / 10)
    assert _mean_logged_loss([{"step": 3, "eval_loss": 1.0}]) is None


def test_every_metric_a_run_records_has_words_in_every_language(workdir, demo_model):
    """The Runs tab names each metric in the reader's language: a new one from transformers or trl shows here."""
    from engine.evaluate import METRICS
    from engine.messages import languages
    from engine.runs import run_info

    cfg = tiny_sft_config(max_steps=2)
    cfg["data"]["val_size"] = 0.2
    names = set(run_info(train_run(workdir, cfg)).metrics) | {f"eval_{k}" for k in METRICS}
    assert {"train_loss", "eval_loss", "eval_runtime"} <= names
    for lang in languages():
        texts = json.loads((ROOT / "locales" / f"{lang}.json").read_text(encoding="utf-8"))
        assert not [n for n in sorted(names) if f"metric.{n}" not in texts], lang


def test_continuing_an_adapter_of_another_demo_build_is_refused(tmp_path):
    from engine.demo import demo_fingerprint
    from engine.messages import TuneboardError
    from engine.train import check_init_from

    run = tmp_path / "runs" / "sft-old"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "events.jsonl").write_text("")
    RunConfig.from_dict(tiny_sft_config()).save(str(run / "config.yaml"))
    (run / "resolved.json").write_text(json.dumps({"demo_fingerprint": "an-older-one"}))
    cfg = RunConfig.from_dict(tiny_sft_config()).with_overrides({"adapter.init_from": str(run)})
    with pytest.raises(TuneboardError) as e:
        check_init_from(cfg)
    assert e.value.key == "error.demo_rebuilt" and e.value.params["run"] == "sft-old"
    (run / "resolved.json").write_text(json.dumps({"demo_fingerprint": demo_fingerprint()}))
    assert check_init_from(cfg) == []  # the same build: fine
    assert check_init_from(cfg.with_overrides({"adapter.init_from": str(run / "adapter")})) == []  # the folder itself


def test_going_on_from_an_adapter_says_the_system_prompt_it_learnt_with(tmp_path):
    """SFT with a default system prompt, then DPO from its adapter on pairs without one: the DPO run (and its
    chat) went without the prompt the adapter learnt its answers under, without a word."""
    from engine.demo import demo_fingerprint
    from engine.train import check_init_from

    run = tmp_path / "runs" / "sft-with-prompt"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "events.jsonl").write_text("")
    (run / "resolved.json").write_text(json.dumps({"demo_fingerprint": demo_fingerprint()}))
    RunConfig.from_dict(tiny_sft_config()).with_overrides({"data.system_prompt": "당신은 친절한 도우미입니다."}).save(
        str(run / "config.yaml"))
    cfg = RunConfig.from_dict(tiny_sft_config()).with_overrides({"adapter.init_from": str(run / "adapter")})
    [(key, params)] = check_init_from(cfg)
    assert key == "warning.init_from_system_prompt" and params == {"prompt": "당신은 친절한 도우미입니다.",
                                                                   "run": "sft-with-prompt"}
    assert check_init_from(cfg.with_overrides({"data.system_prompt": "당신은 친절한 도우미입니다."})) == []
    checkpoint = run / "checkpoints" / "checkpoint-2"  # a checkpoint of it: the same run, the same prompt
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text("{}")
    [(key, _)] = check_init_from(cfg.with_overrides({"adapter.init_from": str(checkpoint)}))
    assert key == "warning.init_from_system_prompt"


def test_a_resumed_runs_training_time_counts_its_earlier_attempts(tmp_path):
    from engine.train import _earlier_training_time

    assert _earlier_training_time(tmp_path) == 0.0  # no events yet
    attempts = [RunStarted(run_id="r", stage="sft"), Progress(step=1, total_steps=9, elapsed_seconds=10.0),
                Progress(step=2, total_steps=9, elapsed_seconds=20.0), Finished(status="stopped", step=2),
                RunStarted(run_id="r", stage="sft"), Progress(step=3, total_steps=9, elapsed_seconds=5.0),
                Finished(status="failed", step=3)]
    (tmp_path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in attempts))
    assert _earlier_training_time(tmp_path) == 25.0


def test_lora_inputs_are_not_copied_to_fp32_under_autocast():
    """peft casts a LoRA layer's bf16 input to its fp32 weights' dtype, and autocast casts it straight back for
    the matmul: the engine skips that copy under autocast (a GPU's bf16 training), with the same loss and gradients
    to the bit; without autocast peft still casts, so a bf16 input never meets fp32 weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine import adapters

    class Fp32Copies(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and (kwargs or {}).get("dtype") == torch.float32 \
                    and out.numel() >= ids.numel() * 64:
                Fp32Copies.n += 1
            return out

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).to(torch.bfloat16)
    cfg = RunConfig.from_dict({"adapter": {"method": "lora", "rank": 8, "target_modules": ["all-linear"]}})
    model = adapters.prepare(base, cfg)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # so the adapters change the output and get gradients through A
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    ids = torch.randint(0, 500, (2, 32))

    def step(peft_casts: bool):
        if peft_casts:
            for m in model.modules():
                if isinstance(m, BaseTunerLayer):
                    m.cast_input_dtype_enabled = True  # peft's own behaviour
        model.zero_grad()
        Fp32Copies.n = 0
        with Fp32Copies(), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), Fp32Copies.n, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ours, theirs = step(False), step(True)
    adapted = sum(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert theirs[1] - ours[1] == adapted == 14  # peft copied each adapted layer's input (the rest: norms, logits)
    assert ours[0] == theirs[0]
    for name, grad in ours[2].items():
        assert torch.equal(grad, theirs[2][name]), name
    adapters.cast_inputs_only_without_autocast(model)
    assert model(input_ids=ids).logits.dtype == torch.bfloat16  # no autocast: peft casts, nothing breaks


def test_a_bf16_qlora_model_keeps_its_norms_in_bf16_unless_upcast(tmp_path):
    """peft's k-bit preparation holds norms, embeddings and head in fp32, so the hidden states run in fp32 (about
    twice the activations): the engine does it only for fp16 compute or when asked (`quantization.upcast_norms`)."""
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    from engine import adapters
    from engine.config import upcast_choice

    LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=172, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    cfg = RunConfig.from_dict({"quantization": {"bits": 4}, "adapter": {"rank": 8}})
    assert not upcast_choice(cfg, "bf16") and upcast_choice(cfg, "fp16") and not upcast_choice(cfg, "fp32")
    assert upcast_choice(cfg.with_overrides({"quantization.upcast_norms": "on"}), "bf16")
    assert not upcast_choice(cfg.with_overrides({"quantization.bits": 0}), "fp16")
    dtypes, losses = {}, {}
    ids = torch.randint(0, 500, (2, 32))
    for upcast in (False, True):
        base = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, quantization_config=q, device_map="cpu")
        torch.manual_seed(0)
        model = adapters.prepare(base, cfg, upcast_norms=upcast)
        dtypes[upcast] = {p.dtype for n, p in model.named_parameters() if "norm" in n or "embed" in n}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # trains either way
        losses[upcast] = loss.item()
        assert any(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert dtypes == {False: {torch.bfloat16}, True: {torch.float32}}
    assert losses[False] == pytest.approx(losses[True], rel=5e-3)  # the same model, its residual stream in bf16


def test_after_a_stop_a_late_ctrl_c_is_ignored_while_the_process_exits(capsys):
    """Ctrl+C twice, where the first stop ended the run before the second came: the second landed in the
    interpreter's exit as a KeyboardInterrupt traceback. Once a signal has stopped the run, later ones are ignored;
    a run that no signal stopped gives the handlers back as they were. A loader worker forked from the run (the
    Ctrl+C reaches it too) neither says it stops nor aborts."""
    import signal

    from engine.train import _GracefulInterrupt

    before, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        quiet = _GracefulInterrupt()
        quiet.restore()
        assert signal.getsignal(signal.SIGINT) is before
        stopped = _GracefulInterrupt()
        stopped._pid += 1  # as in a data loader worker forked from the run: the run's process answers for it
        stopped._handle(signal.SIGINT, None)
        stopped._handle(signal.SIGINT, None)  # no abort either
        assert not stopped.requested() and capsys.readouterr().err == ""
        stopped._pid -= 1
        stopped._handle(signal.SIGINT, None)
        assert stopped.requested() and "stopping after this step" in capsys.readouterr().err
        stopped.restore()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, before_term)


def test_a_tracker_that_is_not_installed_is_refused_before_a_run_folder(tmp_path, monkeypatch):
    """report_to: tensorboard without the package failed the run at step 0, after its folder was made."""
    import importlib.util

    from engine.messages import TuneboardError
    from engine.train import check_trackers

    cfg = RunConfig.from_dict({"training": {"report_to": ["tensorboard"]}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "ensorboard" in name else real(name, *a))
    with pytest.raises(TuneboardError) as e:
        check_trackers(cfg)
    assert e.value.key == "error.tracker_missing" and "pip install tensorboard" in str(e.value)
    check_trackers(RunConfig.from_dict({"training": {"report_to": ["none"]}}))  # nothing to check
    r = _cli("train", "assets/configs/sft_demo.yaml", "--workdir", str(tmp_path), "--set", "training.report_to=tensorbord")
    assert r.returncode == 2 and "tensorbord is not a tracker" in r.stderr and not (tmp_path / "runs").exists()


def test_lora_targets_the_model_does_not_have_are_refused_before_a_run_folder(workdir, demo_model):
    """`--set adapter.target_modules=foo` failed at step 0 with a run folder made; `[q_proj, v_prj]` trained q_proj
    alone without a word (peft refuses only a list that matches nothing)."""
    from engine.messages import TuneboardError
    from engine.train import check_lora_targets

    def cfg(targets, **more):
        return RunConfig.from_dict({"adapter": {"method": "lora", "target_modules": targets, **more}})

    for targets in (["q_proj", "v_prj"], ["foo"]):
        with pytest.raises(TuneboardError) as e:
            check_lora_targets(cfg(targets), workdir)
        assert e.value.key == "error.lora_targets_unknown" and e.value.params["targets"] == targets[-1]
        assert "q_proj, k_proj, v_proj" in str(e.value)
    for fine in (["q_proj", "v_proj"], ["all-linear"], ["self_attn.q_proj", "lm_head"]):
        check_lora_targets(cfg(fine), workdir)
    check_lora_targets(RunConfig.from_dict({"adapter": {"method": "full"}}), workdir)  # no LoRA: nothing to check


def test_an_adapter_or_checkpoint_is_found_by_its_runs_id(tmp_path):
    """`--set adapter.init_from=<run id>` said "No adapter found in <id>", where chat, eval and export take ids."""
    from engine.train import _runs_by_id

    (tmp_path / "runs" / "20261127-sft").mkdir(parents=True)
    cfg = RunConfig.from_dict(tiny_sft_config()).with_overrides(
        {"adapter.init_from": "20261127-sft", "training.resume_from": "20261127-sft"})
    found = _runs_by_id(cfg, tmp_path)
    assert found.adapter.init_from == found.training.resume_from == str(tmp_path / "runs" / "20261127-sft")
    other = cfg.with_overrides({"adapter.init_from": "no-such-run", "training.resume_from": "last"})
    assert _runs_by_id(other, tmp_path).adapter.init_from == "no-such-run"  # left to be refused as it was


def test_the_logs_words_for_the_engines_choices_are_the_readers():
    """A Korean run's log read "cpu에서 sft 시작(fp32, sdpa, an 8-bit base, ...)"."""
    from types import SimpleNamespace

    from engine.messages import set_language
    from engine.train import run_choices, said_choice

    res = SimpleNamespace(optim="adamw_torch", packing=False, padding_free=True, liger=True, compile=False,
                          gradient_checkpointing=True, checkpoint_layers=22, upcast_norms=True, fused_lora=True)
    said = run_choices(res, bits=4) + run_choices(SimpleNamespace(**{**res.__dict__, "packing": True,
                                                                      "checkpoint_layers": None}), bits=8)
    set_language("ko")
    try:
        korean = [said_choice(c) for c in said]
    finally:
        set_language(None)
    assert [c for c, k in zip(said, korean, strict=True) if c == k] == ["adamw_torch", "adamw_torch"]  # names stay
    assert "그래디언트 체크포인팅 (앞 22개 층)" in korean
