"""Export: the merged folder loads in plain transformers with base+adapter's logits; the adapter alone;
QLoRA merges into 16-bit weights; a hub token never reaches a file or a message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.config import RunConfig
from engine.export import INFO_FILE, _upload_failure, export_run, merge_dtype
from engine.messages import TuneboardError, message

PROMPT = [{"role": "user", "content": "What is the capital of Korea?"}]


def _logits(model, tok):
    import torch

    enc = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


@pytest.fixture(scope="module")
def merged(trained_run, workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "merged"
    return out, export_run(str(trained_run), out, merge=True, workdir=workdir)


def test_merged_folder_loads_in_plain_transformers_with_the_same_logits(merged, trained_run, demo_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, result = merged
    assert result["kind"] == "merged" and result["dtype"] == "fp32"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not list(out.glob("adapter_*"))
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir()), "others can read a merged export too"
    tok = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tok.chat_template  # the run's chat template travels with it
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(demo_model)
    tuned = PeftModel.from_pretrained(base, str(trained_run / "adapter"))
    a, b = _logits(model, tok), _logits(tuned, tok)
    assert (a - b).abs().max().item() < 1e-4
    with tuned.disable_adapter():
        assert (a - _logits(tuned, tok)).abs().max().item() > 1e-2  # the merge really changed the weights
    info = json.loads((out / INFO_FILE).read_text())
    assert info["run"] == trained_run.name and info["kind"] == "merged"
    # plain transformers stops where the template's turn ends
    assert model.generation_config.eos_token_id in (tok.convert_tokens_to_ids("<|im_end|>"),
                                                    [tok.convert_tokens_to_ids("<|im_end|>")])
    # ... and decodes as the board's chat did, with the run's own settings (not transformers' bare defaults)
    gen = RunConfig.load(str(trained_run / "config.yaml")).chat_generation()
    made = model.generation_config
    assert made.repetition_penalty == gen.repetition_penalty and made.max_new_tokens == gen.max_new_tokens
    assert made.do_sample == (gen.temperature > 0) and (not made.do_sample or made.temperature == gen.temperature)


def test_adapter_alone(trained_run, workdir, tmp_path):
    out = tmp_path / "adapter"
    result = export_run(trained_run.name, out, merge=False, workdir=workdir)
    assert result["kind"] == "adapter"
    names = set(result["files"])
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", INFO_FILE} <= names
    assert "training_args.bin" not in names


def test_refuses_a_folder_that_is_not_empty(trained_run, workdir, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), tmp_path, workdir=workdir)
    assert e.value.key == "export.error_not_empty"
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), tmp_path / "keep.txt", workdir=workdir)
    assert e.value.key == "export.error_is_file" and (tmp_path / "keep.txt").read_text() == "mine"


def test_refuses_the_runs_own_checkpoints_folder_and_an_unwritable_place_before_any_work(trained_run, workdir,
                                                                                         tmp_path, monkeypatch):
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), trained_run / "checkpoints" / "checkpoint-99", workdir=workdir)
    assert e.value.key == "export.error_in_checkpoints" and not (trained_run / "checkpoints" / "checkpoint-99").exists()
    from engine import export as export_mod

    merged = []
    monkeypatch.setattr(export_mod, "_merge", lambda *a: merged.append(a))
    real = Path.write_bytes

    def read_only(self, data):
        if self.name == ".tuneboard-write-test":
            raise OSError(30, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(OSError) as err:
        export_run(str(trained_run), tmp_path / "ro", merge=True, workdir=workdir)
    assert err.value.errno == 30 and merged == []  # told before the merge, which takes minutes on a 7B


def test_qlora_merges_into_16_bit_weights(trained_run, workdir, tmp_path, monkeypatch):
    """A 4-bit run's adapter goes into a 16-bit base, never into quantized weights."""
    from engine import model as model_mod

    run = tmp_path / "runs" / "qlora-run"
    shutil.copytree(trained_run / "adapter", run / "adapter")
    cfg = RunConfig.load(str(trained_run / "config.yaml")).with_overrides({"quantization.bits": 4})
    cfg.save(str(run / "config.yaml"))
    seen = []
    real = model_mod.load_model

    def spy(cfg, res, for_training=True, dtype=None):
        seen.append(dtype)
        return real(cfg, res, for_training=for_training, dtype=dtype)

    monkeypatch.setattr(model_mod, "load_model", spy)
    assert merge_dtype(cfg, "fp32") == "bf16" and merge_dtype(cfg, "fp16") == "fp16"
    assert merge_dtype(RunConfig(), "fp32") == "fp32"
    result = export_run(str(run), tmp_path / "out", merge=True, workdir=workdir)
    assert seen == ["bf16"] and result["dtype"] == "bf16"
    [note] = result["notes"]  # it answers a little otherwise: said
    assert note["key"] == "warning.qlora_merged" and "4-bit base" in message(note["key"], note["params"], "en")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config.get("dtype", config.get("torch_dtype")) == "bfloat16"


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, private, exist_ok):
        FakeApi.calls.append(("create", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, commit_message):
        FakeApi.calls.append(("upload", repo_id))
        if repo_id.endswith("broken"):
            raise RuntimeError(f"401 for token {FakeApi.calls[0][1]}")


def test_upload_keeps_the_token_in_memory(trained_run, workdir, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    secret = "hf_SECRET_do_not_write"
    result = export_run(str(trained_run), tmp_path / "up", push_to_hub="me/tuned", token=secret, workdir=workdir)
    assert result["url"] == "https://huggingface.co/me/tuned"
    assert ("create", "me/tuned", True) in FakeApi.calls and ("upload", "me/tuned") in FakeApi.calls
    for f in (tmp_path / "up").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert secret not in json.dumps(result)
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), tmp_path / "up2", push_to_hub="me/broken", token=secret, workdir=workdir)
    assert e.value.key == "export.error_upload_denied" and secret not in str(e.value) and "***" in str(e.value)
    assert str(tmp_path / "up2") in str(e.value) and (tmp_path / "up2" / "adapter_config.json").exists()  # kept, said
    offline = type("OfflineModeIsEnabled", (ConnectionError,), {})("Cannot reach https://huggingface.co")
    assert _upload_failure(offline) == "export.error_upload_offline"
    assert _upload_failure(ValueError("repo name too long")) == "export.error_upload"
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), tmp_path / "up3", push_to_hub="me/tuned", token=None, workdir=workdir)
    assert e.value.key == "export.error_no_token"


def test_cli_export(trained_run, workdir, tmp_path, capsys):
    from engine.cli import main

    assert main(["export", trained_run.name, str(tmp_path / "cli"), "--workdir", str(workdir)]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "cli").resolve())
    assert (tmp_path / "cli" / "adapter_model.safetensors").exists()


def test_a_full_model_run_chats_and_compares_with_its_base(merged, trained_run, workdir, tmp_path):
    """A run whose result is a whole model (full / freeze): here the merged folder stands in for model/."""
    from engine.config import GenerationConfig
    from engine.generate import ChatSession

    out, _ = merged
    run = tmp_path / "full-run"
    shutil.copytree(out, run / "model")
    RunConfig.load(str(trained_run / "config.yaml")).with_overrides({"adapter.method": "full"}).save(
        str(run / "config.yaml"))
    greedy = GenerationConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=16)
    lora, full = ChatSession(workdir), ChatSession(workdir)
    lora.load(str(trained_run))
    info = full.load(str(run))
    assert not info["adapter"] and info["method"] == "full" and info["source"].endswith("model")
    assert full.generate(PROMPT, greedy)[0].text == lora.generate(PROMPT, greedy)[0].text
    # the base of a full run is a second model, loaded when first asked for
    assert full.generate(PROMPT, greedy, use_adapter=False)[0].text == lora.generate(PROMPT, greedy, use_adapter=False)[0].text
    full.unload()
    lora.unload()
    # its export: the whole model, readable by others, with the KV cache training turned off back on
    config = json.loads((run / "model" / "config.json").read_text())
    (run / "model" / "config.json").write_text(json.dumps({**config, "use_cache": False}))
    (run / "model" / "model.safetensors").chmod(0o600)
    (run / "model" / "generation_config.json").unlink()  # as a full run saves it: transformers' bare defaults
    (run / "model" / "README.md").unlink(missing_ok=True)
    exported = export_run(str(run), tmp_path / "full-export", workdir=workdir)
    assert exported["kind"] == "model"
    # ... which decode as the board's chat did, as a merged export does, and say what the folder is
    gen = RunConfig.load(str(run / "config.yaml")).chat_generation()
    made = json.loads((tmp_path / "full-export" / "generation_config.json").read_text())
    assert made["repetition_penalty"] == gen.repetition_penalty and made["max_new_tokens"] == gen.max_new_tokens
    assert "the model as trained" in (tmp_path / "full-export" / "README.md").read_text()
    assert json.loads((tmp_path / "full-export" / "config.json").read_text())["use_cache"] is True
    assert (tmp_path / "full-export" / "model.safetensors").stat().st_mode & 0o044 == 0o044
    merged = export_run(str(run), tmp_path / "full-merged", merge=True, workdir=workdir)
    assert merged["kind"] == "model" and [n["key"] for n in merged["notes"]] == ["warning.merge_not_adapter"]
    assert not exported["notes"]


def test_overwrite_replaces_an_earlier_export_and_nothing_else(trained_run, workdir, tmp_path):
    out = tmp_path / "again"
    export_run(str(trained_run), out, workdir=workdir)
    (out / "stale.txt").write_text("from before")
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), out, workdir=workdir)
    assert e.value.key == "export.error_not_empty"
    from types import SimpleNamespace

    from engine.chat_worker import HANDLERS

    (out / "stale.txt").write_text("from before")  # the board's worker passes its box on, as the CLI its flag
    result = HANDLERS["export"](SimpleNamespace(workdir=workdir), {"run": str(trained_run), "out": str(out),
                                                                  "overwrite": True}, None, None)
    assert result["path"] == str(out.resolve()) and not (out / "stale.txt").exists()
    (out / "stale.txt").write_text("from before")
    result = export_run(str(trained_run), out, workdir=workdir, overwrite=True)
    assert result["path"] == str(out.resolve()) and (out / "adapter_model.safetensors").exists()
    assert not (out / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TuneboardError) as e:
        export_run(str(trained_run), mine, workdir=workdir, overwrite=True)
    assert e.value.key == "export.error_not_export" and (mine / "notes.txt").read_text() == "keep me"


def test_chat_eval_and_export_take_a_folder_inside_the_run(trained_run, workdir, tmp_path, capsys):
    """`tuneboard chat RUN/checkpoints/checkpoint-N` (or RUN/adapter, the folder a user sees the weights in) said
    "Run not found" of a folder that is there."""
    from engine.cli import main
    from engine.runs import run_and_checkpoint

    [ckpt] = sorted((trained_run / "checkpoints").glob("checkpoint-*"))[-1:]
    assert run_and_checkpoint(ckpt) == (trained_run, ckpt.name)
    assert run_and_checkpoint(trained_run / "adapter") == (trained_run, None)
    assert run_and_checkpoint(trained_run.name, workdir) == (trained_run, None)
    ask = ["--prompt", "Who are you?", "--temperature", "0", "--max-new-tokens", "6", "--json"]
    answers = []
    for where in (ckpt, trained_run / "adapter", trained_run):
        assert main(["chat", str(where), *ask]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["text"])
    assert answers[1] == answers[2]  # the run's own result; the checkpoint's are its own weights'
    info = export_run(str(ckpt), tmp_path / "out")
    assert info["source"] == str(ckpt) and (tmp_path / "out" / "adapter_config.json").exists()
