"""Form values <-> RunConfig (board/form.py) and the path rules the page lives by (board/safety.py)."""

from __future__ import annotations

import os

import pytest

from board.form import build_config, config_to_form, form_to_config, parse_columns
from board.safety import check_data_path, check_model_path, is_loopback, launch_auth, parse_auth, store_upload
from engine.config import ConfigError, RunConfig
from engine.messages import TuneboardError

NAMES = [
    "stage",
    "run_name",
    "model.name_or_path",
    "model.revision",
    "quantization.mode",
    "adapter.method",
    "adapter.rank",
    "adapter.target_modules",
    "adapter.use_dora",
    "data.datasets",
    "data.format",
    "data.columns",
    "data.max_samples",
    "data.max_length",
    "data.system_prompt",
    "training.learning_rate",
    "training.save_total_limit",
    "dpo.beta",
]


def test_defaults_round_trip():
    cfg = RunConfig()
    assert form_to_config(config_to_form(cfg, NAMES)) == cfg


def test_page_shapes_become_config_fields():
    values = config_to_form(RunConfig(), NAMES) | {
        "quantization.mode": "4bit",
        "adapter.target_modules": "q_proj, v_proj",
        "data.datasets": ["demo:sft", "x.jsonl"],
        "data.format": "alpaca",
        "data.columns": "instruction=question,\n output = answer",
        "data.max_samples": 10,
        "run_name": "  ",
        "model.revision": "",
        "training.save_total_limit": None,
        "training.learning_rate": "1e-4",
    }
    cfg = form_to_config(values)
    assert cfg.quantization.bits == 4 and cfg.quantization.quant_type == "nf4"
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    assert [d.path for d in cfg.data.datasets] == ["demo:sft", "x.jsonl"]
    assert all(d.format == "alpaca" and d.max_samples == 10 for d in cfg.data.datasets)
    assert cfg.data.datasets[0].columns == {"instruction": "question", "output": "answer"}
    assert cfg.run_name is None and cfg.model.revision is None and cfg.training.save_total_limit is None
    assert cfg.training.learning_rate == 1e-4
    # the number box Gradio draws as 0 when empty: 0 is "not set" (all layers, or auto's count), N is N
    assert form_to_config(values | {"training.checkpoint_layers": 0}).training.checkpoint_layers is None
    assert form_to_config(values | {"training.checkpoint_layers": 12}).training.checkpoint_layers == 12
    # ... and a loaded config's "not set" shows as that 0, not as a blank box
    assert config_to_form(cfg, ["training.checkpoint_layers"]) == {"training.checkpoint_layers": 0}
    back = config_to_form(cfg, NAMES)
    assert back["quantization.mode"] == "4bit" and back["adapter.target_modules"] == "q_proj, v_proj"
    assert form_to_config(back) == cfg
    # the 4-bit type has no control: a loaded config's fp4 stays fp4 (it became nf4)
    fp4 = {"quantization": {"bits": 4, "quant_type": "fp4"}}
    assert form_to_config({"quantization.mode": "4bit"}, fp4).quantization.quant_type == "fp4"


def test_zero_max_samples_means_every_row_and_blank_modules_all_linear():
    values = config_to_form(RunConfig(), NAMES) | {"data.max_samples": 0, "adapter.target_modules": " "}
    cfg = form_to_config(values)
    assert cfg.data.datasets[0].max_samples is None
    assert cfg.adapter.target_modules == ["all-linear"]


def test_base_keeps_fields_the_page_has_no_control_for():
    base = RunConfig.from_dict({"generation": {"temperature": 0.2}, "training": {"report_to": ["tensorboard"]}})
    cfg = form_to_config(config_to_form(RunConfig(), NAMES), base.to_dict())
    assert cfg.generation.temperature == 0.2 and cfg.training.report_to == ["tensorboard"]


def test_datasets_keep_their_own_fields_through_the_form():
    cfg = RunConfig.from_dict(
        {
            "data": {
                "datasets": [
                    {"path": "tatsu-lab/alpaca", "split": "validation"},
                    {"path": "x.jsonl", "format": "sharegpt", "columns": {"messages": "turns"}, "max_samples": 7},
                ]
            }
        }
    )
    assert form_to_config(config_to_form(cfg, NAMES), cfg.to_dict()) == cfg
    # a field the person changed on the page applies to every dataset; the split still survives
    changed = form_to_config(config_to_form(cfg, NAMES) | {"data.max_samples": 3}, cfg.to_dict())
    assert [d.max_samples for d in changed.data.datasets] == [3, 3]
    assert changed.data.datasets[0].split == "validation"
    assert changed.data.datasets[1].format == "sharegpt"


def test_bad_values_name_their_field():
    with pytest.raises(ConfigError) as e:
        form_to_config(config_to_form(RunConfig(), NAMES) | {"training.learning_rate": -1})
    assert e.value.field == "training.learning_rate" and e.value.key == "error.config.range"
    with pytest.raises(ConfigError) as e:
        form_to_config(config_to_form(RunConfig(), NAMES) | {"data.datasets": []})
    assert e.value.field == "data.datasets"
    with pytest.raises(ConfigError) as e:  # a quantized base needs LoRA
        form_to_config(config_to_form(RunConfig(), NAMES) | {"quantization.mode": "8bit", "adapter.method": "full"})
    assert e.value.key == "error.config.quant_needs_lora"


def test_parse_columns_ignores_junk():
    assert parse_columns("a=b, c = d, broken, =x, y=") == {"a": "b", "c": "d"}
    assert parse_columns(None) == {}


def test_paths_from_the_page_stay_inside_the_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEBOARD_ALLOWED_DIRS", raising=False)
    work = tmp_path / "work"
    (work / "uploads").mkdir(parents=True)
    (work / "uploads" / "a.jsonl").write_text("{}\n")
    outside = tmp_path / "secret.jsonl"
    outside.write_text("{}\n")
    assert check_data_path("demo:sft", work) == "demo:sft"
    assert check_data_path("tatsu-lab/alpaca", work) == "tatsu-lab/alpaca"  # a hub name
    assert check_data_path("uploads/a.jsonl", work) == str(work / "uploads" / "a.jsonl")
    for bad in (str(outside), "../secret.jsonl", "uploads/../../secret.jsonl", "/etc/passwd", "~/x.json"):
        with pytest.raises(TuneboardError) as e:
            check_data_path(bad, work)
        assert e.value.key == "ui.error.outside_workdir"
    (work / "link.jsonl").symlink_to(outside)  # a link inside pointing out is still outside
    with pytest.raises(TuneboardError):
        check_data_path("link.jsonl", work)
    monkeypatch.setenv("TUNEBOARD_ALLOWED_DIRS", str(tmp_path))  # unless the person starting the board allows it
    assert check_data_path(str(outside), work) == str(outside)


def test_build_config_checks_model_and_data_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEBOARD_ALLOWED_DIRS", raising=False)
    values = config_to_form(RunConfig(), NAMES)
    assert build_config(values, None, tmp_path) == RunConfig()
    with pytest.raises(TuneboardError):
        build_config(values | {"model.name_or_path": "/opt/models/llama"}, None, tmp_path)
    with pytest.raises(TuneboardError):
        build_config(values | {"data.datasets": ["/etc/hosts.json"]}, None, tmp_path)
    hub = build_config(values | {"model.name_or_path": "Qwen/Qwen2.5-0.5B"}, None, tmp_path)
    assert hub.model.name_or_path == "Qwen/Qwen2.5-0.5B"


def test_a_model_folder_outside_the_workdir_is_refused(tmp_path, monkeypatch):
    """`outside/model` reads like a hub id, but the engine loads an existing folder of that name."""
    monkeypatch.delenv("TUNEBOARD_ALLOWED_DIRS", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TuneboardError) as e:
        check_model_path("outside/model", work)
    assert e.value.key == "ui.error.model_outside_workdir" and "TUNEBOARD_ALLOWED_DIRS" in str(e.value)
    with pytest.raises(TuneboardError) as e:  # a folder that is nowhere (a typo): not found, not "outside"
        check_model_path("/nonexistent/model/path", work)
    assert e.value.key == "error.model_not_found"
    assert check_model_path("Qwen/Qwen2.5-0.5B", work) == "Qwen/Qwen2.5-0.5B"  # no such folder: a hub id
    assert check_model_path("   ", work) == "demo"  # an emptied box, not the workdir itself
    from engine.config import RunConfig

    url = RunConfig.from_dict({"model": {"name_or_path": "https://huggingface.co/Qwen/Qwen2.5-0.5B/tree/main"}})
    assert url.model.name_or_path == "Qwen/Qwen2.5-0.5B"  # a model page's address pasted: its id
    monkeypatch.setenv("TUNEBOARD_ALLOWED_DIRS", str(tmp_path))
    assert check_model_path("outside/model", work) == str(tmp_path / "outside" / "model")


def test_uploads_are_bounded_renamed_and_copied(tmp_path):
    src = tmp_path / "my data (1).jsonl"
    src.write_text('{"text": "hi"}\n')
    dest = store_upload(src, tmp_path / "work")
    assert dest.parent == tmp_path / "work" / "uploads" and dest.name == "my_data_1_.jsonl"
    assert not os.access(dest, os.X_OK)
    assert store_upload(src, tmp_path / "work") == dest  # the same bytes again: the same copy
    src.write_text('{"text": "changed"}\n')
    again = store_upload(src, tmp_path / "work")
    assert again != dest and again.exists() and dest.read_text() == '{"text": "hi"}\n'  # never overwrites one
    src.write_text('{"text": "changed again, the same second"}\n')
    third = store_upload(src, tmp_path / "work")
    assert len({dest, again, third}) == 3 and again.read_text() == '{"text": "changed"}\n'

    with pytest.raises(TuneboardError) as e:
        store_upload(src, tmp_path / "work", max_mb=0.000001)
    assert e.value.key == "ui.error.upload_size"
    script = tmp_path / "run.sh"
    script.write_text("rm -rf /")
    with pytest.raises(TuneboardError) as e:
        store_upload(script, tmp_path / "work")
    assert e.value.key == "ui.error.upload_type"


def test_public_addresses_need_a_password(monkeypatch):
    monkeypatch.delenv("TUNEBOARD_AUTH", raising=False)
    assert launch_auth("127.0.0.1", False, None) is None
    assert launch_auth("localhost", False, None) is None
    for host, share in (("0.0.0.0", False), ("192.168.1.5", False), ("127.0.0.1", True), ("::", False)):
        with pytest.raises(TuneboardError) as e:
            launch_auth(host, share, None)
        assert e.value.key == "ui.error.auth_required"
    assert launch_auth("0.0.0.0", False, "ann:secret") == ("ann", "secret")
    monkeypatch.setenv("TUNEBOARD_AUTH", "bob:pw")
    assert launch_auth("0.0.0.0", True, None) == ("bob", "pw")
    with pytest.raises(TuneboardError):
        parse_auth("nopassword")
    assert is_loopback("::1") and not is_loopback("0.0.0.0")


def test_a_slider_passes_a_typed_value_past_its_range_to_the_config_check():
    """Gradio's own check answered rank 0 with "Value 0 is less than minimum value 1." in English, a traceback in
    the log, and the box set back without a word; the config's check says it in the page's language."""
    import gradio as gr

    from board.widgets import Slider

    with gr.Blocks():
        ours, theirs = Slider(minimum=1, maximum=512, step=1), gr.Slider(minimum=1, maximum=512, step=1)
    assert ours.preprocess(0) == 0 and ours.get_block_name() == "slider"
    with pytest.raises(gr.Error):
        theirs.preprocess(0)
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"adapter": {"rank": ours.preprocess(0)}})
    assert e.value.field == "adapter.rank"
