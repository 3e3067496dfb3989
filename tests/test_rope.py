"""RoPE scaling: the factor and settings from config.json alone; a run past the demo's context trains, says so,
and its chat, eval and merged export keep the stretched positions."""

from __future__ import annotations

import json

import pytest
from world import tiny_sft_config, train_run

from engine.config import RunConfig
from engine.events import Warning, read_events
from engine.rope import rope_overrides

LLAMA2 = {"max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": None}


def test_the_factor_is_the_cutoff_over_the_context_rounded_up():
    over, key, params = rope_overrides(LLAMA2, "linear", 10_000)
    assert over == {"rope_parameters": {"rope_type": "linear", "factor": 3.0, "rope_theta": 10000.0},
                    "max_position_embeddings": 12288}
    assert key == "warning.rope_scaled" and params["reach"] == 12288 and params["factor"] == "3"
    yarn, _, _ = rope_overrides({**LLAMA2, "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}, "yarn", 8192)
    assert yarn["rope_parameters"] == {"rope_type": "yarn", "factor": 2.0, "rope_theta": 5e5,
                                       "original_max_position_embeddings": 4096}


def test_no_stretch_where_the_cutoff_fits_or_the_model_scales_its_own():
    assert rope_overrides(LLAMA2, "linear", 4096)[:2] == (None, "warning.rope_not_needed")
    llama31 = {"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    over, key, params = rope_overrides(llama31, "dynamic", 200_000)
    assert (over, key, params["own"]) == (None, "warning.rope_already", "llama3")
    assert rope_overrides(LLAMA2, "none", 10_000) == (None, "", {})


def test_the_estimate_says_the_stretch_instead_of_the_positions_never_learnt():
    from engine.estimate import estimate

    cfg = RunConfig.from_dict({"model": {"name_or_path": "x"}, "data": {"max_length": 8192}})
    shape = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, **LLAMA2}
    assert [n["key"] for n in estimate(shape, cfg, 80).notes if "context" in n["key"] or "rope" in n["key"]] == [
        "estimate.note.beyond_context"]
    cfg = cfg.with_overrides({"model.rope_scaling": "linear"})
    assert [n for n in estimate(shape, cfg, 80).notes if "rope" in n["key"]] == [
        {"key": "estimate.note.rope_scaled", "params": {"kind": "linear", "context": 4096, "factor": "2",
                                                        "cutoff": 8192}}]


@pytest.fixture(scope="module")
def stretched_run(tmp_path_factory, demo_model):
    workdir = tmp_path_factory.mktemp("rope")
    cfg = tiny_sft_config(max_steps=3)
    cfg["model"] = {"rope_scaling": "linear"}
    cfg["data"]["max_length"] = 1000  # the demo's context is 512
    return workdir, train_run(workdir, cfg)


def test_a_run_past_the_context_trains_stretched_and_says_so(stretched_run):
    _, run_dir = stretched_run
    said = [e for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, Warning) and "rope" in e.key]
    assert [(e.key, e.params["factor"], e.params["reach"]) for e in said] == [("warning.rope_scaled", "2", 1024)]


def test_chat_and_a_merged_export_keep_the_stretched_positions(stretched_run, tmp_path):
    from engine.export import export_run
    from engine.generate import ChatSession

    workdir, run_dir = stretched_run
    session = ChatSession(workdir)
    session.load(str(run_dir))
    assert session.context_length() == 1024
    session.unload()
    out = tmp_path / "merged"
    export_run(str(run_dir), str(out), merge=True, workdir=workdir)
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == 1024
    assert config["rope_parameters"]["rope_type"] == "linear" and config["rope_parameters"]["factor"] == 2.0
