"""The fast path the engine picks per device: attention kernel, padding-free batches, Liger, tokenising processes."""

import pytest

from engine import attention, sft
from engine.config import RunConfig, padding_free_choice
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


def test_padding_free_follows_packing_and_the_kernel():
    assert padding_free_choice(_cfg(data={"packing": True}), "sdpa") is True  # trl's bfd packing is padding-free
    assert padding_free_choice(_cfg(), "sdpa") is False  # a flattened batch would need an (n x n) mask
    assert padding_free_choice(_cfg(), "varlen") is True
    assert padding_free_choice(_cfg(), "flash_attention_2") is True
    assert padding_free_choice(_cfg(training={"padding_free": "off"}), "varlen") is False
    assert padding_free_choice(_cfg(training={"padding_free": "on"}), "sdpa") is True
    assert padding_free_choice(_cfg(stage="dpo", data={"datasets": [{"path": "demo:dpo"}]}), "varlen") is False


def test_liger_is_off_on_cpu_and_refused_when_asked_for_but_missing(monkeypatch):
    import importlib.util

    assert liger_choice(_cfg(training={"use_liger_kernel": "on"}), cuda=False) is False
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
