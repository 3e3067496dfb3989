"""The fast path the engine picks per device: attention kernel, padding-free batches, Liger, tokenising processes."""

import pytest

from engine import attention, sft
from engine.config import RunConfig, packing_choice, padding_free_choice
from engine.messages import TuneboardError
from engine.model import attention_choice, liger_choice


def _cfg(**sections):
    return RunConfig.from_dict({"stage": sections.pop("stage", "sft"), **sections})


@pytest.fixture
def no_flash(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))


def test_attention_auto_is_sdpa_on_cpu_and_varlen_on_a_gpu_without_flash_attn(monkeypatch, no_flash):
    packed = _cfg(data={"packing": True})
    assert attention_choice(packed, cuda=False) == attention_choice(_cfg(), cuda=False) == "sdpa"
    monkeypatch.setattr(attention, "available_on_gpu", lambda: True)
    assert attention_choice(packed, cuda=True) == attention_choice(_cfg(), cuda=True) == "varlen"
    monkeypatch.setattr(attention, "available_on_gpu", lambda: False)  # pre-Ampere, or an old torch
    assert attention_choice(packed, cuda=True) == "sdpa"
    assert attention_choice(_cfg(model={"attn_implementation": "varlen"}), cuda=False) == "varlen"
    with pytest.raises(TuneboardError) as e:
        attention_choice(_cfg(model={"attn_implementation": "flash_attention_2"}), cuda=True)
    assert e.value.key == "error.flash_unavailable"


def test_a_model_that_soft_caps_attention_scores_gets_eager_attention(tmp_path, monkeypatch, no_flash):
    """Gemma 2 caps its attention scores (tanh), which neither sdpa nor PyTorch's varlen kernel does: transformers
    refuses sdpa for it, but took the registered varlen kernel and would have trained without the cap on a GPU.
    auto picks eager there (flash-attn, which caps, where installed); asking for sdpa or varlen is refused."""
    import json

    from engine import estimate
    from engine.model import resolve, softcapped

    folder = tmp_path / "gemma2"
    folder.mkdir()
    shape = {"model_type": "gemma2", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "head_dim": 16,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "attn_logit_softcapping": 50.0}
    (folder / "config.json").write_text(json.dumps(shape))
    gemma2 = _cfg(model={"name_or_path": str(folder)})
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({**shape, "model_type": "llama",
                                                                "attn_logit_softcapping": None}))
    assert softcapped(gemma2) and not softcapped(_cfg(model={"name_or_path": str(tmp_path / "llama")}))
    assert resolve(gemma2).attn_implementation == "eager"  # on this CPU
    monkeypatch.setattr(attention, "available_on_gpu", lambda: True)
    assert attention_choice(gemma2, cuda=True, softcap=True) == "eager"
    assert attention_choice(gemma2, cuda=True) == "varlen"  # what it was before
    for asked in ("sdpa", "varlen"):
        with pytest.raises(TuneboardError) as e:
            attention_choice(gemma2.with_overrides({"model.attn_implementation": asked}), cuda=True, softcap=True)
        assert e.value.key == "error.attn_softcap" and asked in str(e.value.params)
    assert estimate.estimate(shape, gemma2).attention == "eager"
    assert estimate.estimate({**shape, "attn_logit_softcapping": None}, gemma2).attention == "varlen"


def test_padding_free_follows_packing_and_the_kernel():
    assert padding_free_choice(_cfg(data={"packing": True}), "sdpa") is True  # trl's bfd packing is padding-free
    assert padding_free_choice(_cfg(), "sdpa") is False  # a flattened batch would need an (n x n) mask
    assert padding_free_choice(_cfg(), "varlen") is True
    assert padding_free_choice(_cfg(), "flash_attention_2") is True
    assert padding_free_choice(_cfg(training={"padding_free": "off"}), "varlen") is False
    assert padding_free_choice(_cfg(training={"padding_free": "on"}), "sdpa") is True
    assert padding_free_choice(_cfg(stage="dpo", data={"datasets": [{"path": "demo:dpo"}]}), "varlen") is False


def test_packing_is_on_by_default_where_a_varlen_kernel_keeps_samples_apart():
    real = {"name_or_path": "Qwen/Qwen2.5-7B"}
    assert _cfg().data.packing == "auto"
    assert packing_choice(_cfg(model=real), "varlen") is packing_choice(_cfg(model=real), "flash_attention_2") is True
    assert packing_choice(_cfg(model=real), "sdpa") is packing_choice(_cfg(model=real), "eager") is False  # CPU
    assert packing_choice(_cfg(model=real, training={"padding_free": "off"}), "varlen") is False  # packing is padding-free
    assert packing_choice(_cfg(model=real, data={"packing": "off"}), "varlen") is False
    assert packing_choice(_cfg(data={"packing": "on"}), "sdpa") is True
    dpo = _cfg(stage="dpo", model=real, data={"datasets": [{"path": "demo:dpo"}], "packing": "on"})
    assert packing_choice(dpo, "varlen") is False
    assert packing_choice(_cfg(stage="pt", model=real), "varlen") is True
    assert packing_choice(_cfg(), "varlen") is False  # auto never packs the demo model (its presets' steps)
    assert packing_choice(_cfg(data={"packing": "on"}), "varlen") is True  # unless asked


def test_on_off_switches_read_yaml_booleans(tmp_path):
    """Older configs say `packing: true`; YAML 1.1 reads a bare `on` / `off` as a boolean too."""
    (tmp_path / "c.yaml").write_text("data:\n  packing: true\ntraining:\n  padding_free: off\n  use_liger_kernel: on\n")
    cfg = RunConfig.load(str(tmp_path / "c.yaml"))
    assert (cfg.data.packing, cfg.training.padding_free, cfg.training.use_liger_kernel) == ("on", "off", "on")
    assert _cfg(data={"packing": False}).data.packing == "off"
    assert RunConfig.from_yaml(cfg.to_yaml()).data.packing == "on"


def test_the_run_records_what_auto_packing_resolved_to(monkeypatch):
    from engine import model

    monkeypatch.setattr(model, "resolve_path", lambda name, workdir=None: name)  # no demo build for this
    monkeypatch.setattr(model, "softcapped", lambda cfg, workdir=None: False)  # nor a config to read
    real = _cfg(model={"name_or_path": "Qwen/Qwen2.5-7B"})
    for attn, packed in (("sdpa", False), ("varlen", True)):  # what this machine runs decides, whichever it is
        monkeypatch.setattr(model, "attention_choice", lambda cfg, cuda, softcap=False, attn=attn: attn)
        assert model.resolve(real).packing is packed
        assert model.resolve(_cfg(data={"packing": "on"})).packing is True


def test_liger_is_off_on_cpu_and_where_triton_builds_nothing_and_refused_when_asked_for_but_missing(
        monkeypatch):
    import importlib.util

    assert liger_choice(_cfg(training={"use_liger_kernel": "on"}), cuda=False) is False
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # installed, with the Triton its kernels are written in
                        lambda name, *a: True if name in ("liger_kernel", "triton") else real(name, *a))
    monkeypatch.setenv("CC", "/usr/bin/cc")
    assert liger_choice(_cfg(), cuda=True) is True
    monkeypatch.delenv("CC")
    monkeypatch.setattr("shutil.which", lambda name, *a: None)  # no C compiler: Triton builds no kernel
    assert liger_choice(_cfg(), cuda=True) is False
    assert liger_choice(_cfg(training={"use_liger_kernel": "on"}), cuda=True) is True  # asked for: as asked
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert liger_choice(_cfg(), cuda=True) is False
    with pytest.raises(TuneboardError) as e:
        liger_choice(_cfg(training={"use_liger_kernel": "on"}), cuda=True)
    assert e.value.key == "error.liger_unavailable"


def test_tokenising_goes_parallel_only_where_it_pays(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert sft.num_proc(500) is None
    assert sft.num_proc(100_000) == 2
    assert sft.num_proc(100_000, asked=1) is None
    assert sft.num_proc(50, asked=4) == 4


def test_the_trainer_counts_flops_as_transformers_does_without_walking_the_model_each_step():
    import types

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    from engine.walks import count_parameters_once

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    trainer = types.SimpleNamespace(model=model)
    inputs = {"input_ids": torch.zeros(3, 7, dtype=torch.long)}
    expected = Trainer.floating_point_ops(trainer, inputs)
    count_parameters_once(trainer)
    model.num_parameters = lambda **kw: pytest.fail("counted the parameters again")
    assert trainer.floating_point_ops(inputs) == expected > 0
    assert trainer.floating_point_ops({"inputs_embeds": None}) == 0


def test_the_demo_presets_train_the_same_steps_on_a_gpu_as_on_a_cpu():
    """Packed, the demo's ~100 short rows make a quarter of the steps, and the tiny model answers garbage;
    a real model chosen on the board (which starts from sft_demo) gets auto's packing."""
    from world import ROOT

    for name in ("sft_demo", "freeze_demo"):
        cfg = RunConfig.load(str(ROOT / "assets" / "configs" / f"{name}.yaml"))
        assert packing_choice(cfg, "varlen") is packing_choice(cfg, "sdpa") is False, name
    real = cfg.with_overrides({"model.name_or_path": "Qwen/Qwen2.5-7B"})
    assert packing_choice(real, "varlen") is True
