"""RunConfig: YAML round-trips exactly, bad values name their field, every preset validates."""

import ast
import sys

import pytest
from world import ROOT

from engine.config import ConfigError, RunConfig, field_help


def test_default_round_trips_through_yaml():
    cfg = RunConfig()
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg


def test_non_default_round_trips_exactly(tmp_path):
    cfg = RunConfig.from_dict({
        "stage": "dpo", "model": {"name_or_path": "Qwen/Qwen2.5-0.5B", "precision": "bf16"},
        "quantization": {"bits": 4}, "adapter": {"rank": 64, "target_modules": ["q_proj", "v_proj"], "use_dora": True},
        "data": {"datasets": [{"path": "a.jsonl", "columns": {"instruction": "질문"}, "max_samples": 10},
                              {"path": "b.csv", "format": "alpaca"}], "packing": True, "system_prompt": "너는 도우미야"},
        "training": {"learning_rate": 1e-5, "report_to": ["tensorboard"]}, "dpo": {"beta": 0.3, "loss_type": "ipo"},
    })
    path = tmp_path / "c.yaml"
    cfg.save(str(path))
    again = RunConfig.load(str(path))
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()
    assert "너는 도우미야" in path.read_text(encoding="utf-8")  # unicode kept readable, not escaped


@pytest.mark.parametrize("yaml_text, field, key", [
    ("training: {learning_rate: -1}", "training.learning_rate", "error.config.range"),
    ("training: {learning_rat: 0.1}", "training.learning_rat", "error.config.unknown_field_near"),
    ("adapter: {method: lorra}", "adapter.method", "error.config.choice"),
    ("quantization: {bits: 3}", "quantization.bits", "error.config.choice"),
    ("training: {per_device_train_batch_size: two}", "training.per_device_train_batch_size", "error.config.type"),
    ("training: {per_device_train_batch_size: 0}", "training.per_device_train_batch_size", "error.config.range"),
    ("data: {datasets: [{path: ''}]}", "data.datasets[0].path", "error.config.required"),
    ("data: {datasets: []}", "data.datasets", "error.config.required"),
    ("quantization: {bits: 4}\nadapter: {method: full}", "quantization.bits", "error.config.quant_needs_lora"),
    ("dpo: {label_smoothing: 0.7}", "dpo.label_smoothing", "error.config.range"),
    ("adapter: {loraplus_lr_ratio: 0.16}", "adapter.loraplus_lr_ratio", "error.config.loraplus_ratio"),
    ("training: {warmup_ratio: 1.0}", "training.warmup_ratio", "error.config.range"),
    ("stage: rlhf", "stage", "error.config.choice"),
    ("model: {trust_remote_code: maybe}", "model.trust_remote_code", "error.config.type"),
    ("- a\n- b", "<yaml>", "error.config.not_mapping"),
    ("", "<yaml>", "error.config.empty"),
    ("# only a comment\n", "<yaml>", "error.config.empty"),
    ("training: {learning_rate: [oops", "<yaml>", "error.config.yaml_at"),
])
def test_bad_values_are_rejected_with_the_field_name(yaml_text, field, key):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml(yaml_text)
    assert e.value.field == field
    assert e.value.key == key
    assert field in str(e.value)


def test_unknown_field_suggests_the_nearest_or_lists_the_known_ones():
    from engine.messages import message

    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        RunConfig.from_yaml("training: {learning_rte: 0.1}")
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({"zzz.key": 1})
    assert message(e.value.key, e.value.params) == (
        "zzz: unknown field; the fields here are stage, run_name, model, quantization, adapter, data, training, "
        "dpo, generation")
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({"training.learnig_rate": 1})
    assert message(e.value.key, e.value.params) == "training.learnig_rate: unknown field; did you mean 'learning_rate'?"


@pytest.mark.parametrize("field", ["training.learning_rate", "training.warmup_ratio", "adapter.dropout",
                                   "dpo.beta", "data.val_size", "training.num_train_epochs"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "-inf"])
def test_not_a_number_is_refused_where_range_checks_would_let_it_pass(field, value):
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({field: value})
    assert e.value.field == field and e.value.key == "error.config.type"


def test_an_epoch_count_past_ten_thousand_or_steps_past_a_hundred_million_are_refused():
    """1e8 epochs were taken, and the run's ETA read in years."""
    from engine.messages import message

    assert RunConfig().with_overrides({"training.num_train_epochs": 10_000}).training.num_train_epochs == 10_000
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({"training.num_train_epochs": 1e8})
    assert e.value.field == "training.num_train_epochs" and "must be <= 10000" in message(e.value.key, e.value.params)
    assert RunConfig().with_overrides({"training.max_steps": 100_000_000}).training.max_steps == 100_000_000
    for steps in (10**12, 0, -2):  # 1e12 steps were taken too
        with pytest.raises(ConfigError) as e:
            RunConfig().with_overrides({"training.max_steps": steps})
        assert "must be -1 (train by epochs) or from 1 to 100,000,000" in message(e.value.key, e.value.params)


def test_overrides_by_dotted_path_are_typed_and_checked():
    cfg = RunConfig().with_overrides({"training.learning_rate": "1e-3", "adapter.target_modules": "q_proj,v_proj"})
    assert cfg.training.learning_rate == 1e-3
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({"training.nope": 1})
    assert e.value.field == "training.nope"


def test_checkpointing_auto_is_on_for_quantized_lora_and_old_yes_no_configs_still_load():
    from engine.config import checkpointing_choice

    def choice(**over):
        return checkpointing_choice(RunConfig().with_overrides(over))

    assert not choice() and choice(**{"quantization.bits": 4}) and choice(**{"quantization.bits": 8})
    assert not choice(**{"quantization.bits": 4, "training.gradient_checkpointing": "off"})
    assert choice(**{"training.gradient_checkpointing": "on"})
    for text, mode in (("true", "on"), ("false", "off"), ("yes", "on"), ("auto", "auto")):  # runs saved before auto
        assert RunConfig.from_yaml(f"training:\n  gradient_checkpointing: {text}\n").training.gradient_checkpointing == mode


@pytest.mark.parametrize("preset", sorted((ROOT / "assets" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_validates_and_round_trips(preset):
    cfg = RunConfig.load(str(preset))
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg


def test_presets_cover_the_documented_recipes():
    names = {p.name for p in (ROOT / "assets" / "configs").glob("*.yaml")}
    assert {"sft_demo.yaml", "qlora_llama2_ko.yaml", "lora_all_linear_bf16.yaml", "full_finetune.yaml"} <= names
    q = RunConfig.load(str(ROOT / "assets/configs/qlora_llama2_ko.yaml"))
    assert (q.quantization.bits, q.quantization.quant_type, q.quantization.double_quant) == (4, "nf4", True)
    assert (q.adapter.rank, q.adapter.alpha, q.adapter.target_modules) == (64, 16, ["q_proj", "v_proj"])
    assert q.training.optim == "paged_adamw_32bit" and q.training.lr_scheduler_type == "cosine" and q.data.packing == "auto"


def test_every_field_has_help():
    missing = [name for name, text, _ in field_help() if not text]
    assert missing == []


def test_the_readme_config_reference_is_the_configs_own_help():
    """The README's table is printed by scripts/config_reference.py; it had drifted from the fields twice."""
    import subprocess
    import sys

    table = subprocess.run([sys.executable, "scripts/config_reference.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    assert table.strip() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("module", ["engine/config.py", "engine/events.py", "engine/runs.py", "engine/messages.py",
                                    "engine/paths.py", "engine/templates.py"])
def test_contract_modules_import_only_the_standard_library(module):
    tree = ast.parse((ROOT / module).read_text())
    top = set()
    for node in tree.body:  # module level only: lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    assert top <= set(sys.stdlib_module_names) | {"__future__"}, top


def test_importing_the_engine_shortens_openmp_spinning_unless_the_user_chose():
    """Long OpenMP spin-waits made CPU torch 30x slower beside other busy processes; the engine shortens
    them before torch loads, and leaves a user's own choice alone."""
    import os
    import subprocess

    code = "import engine, os; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=e,
                          check=True).stdout.strip()
           for e in (env, {**env, "GOMP_SPINCOUNT": "5"}, {**env, "OMP_WAIT_POLICY": "ACTIVE"})]
    assert out == ["30000", "5", "None"]


@pytest.mark.parametrize("field, value", [("rank", 0), ("alpha", 0), ("dropout", 1.0), ("freeze_trainable_layers", 0),
                                          ("target_modules", [])])
def test_adapter_values_that_train_nothing_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=f"adapter.{field}"):
        RunConfig.from_dict({"adapter": {field: value}})


def test_values_a_person_mistypes_are_refused_with_the_field_and_a_filled_message():
    """2e4 for 2e-4, a seed past what torch takes, a section given a value, an emptied number box, a --set into a
    plain value: each refused with its dotted name, and a message with every placeholder filled."""
    from engine.config import parse_overrides
    from engine.messages import message

    bad = [({"training": {"learning_rate": 2e4}}, "training.learning_rate", "error.config.range"),
           ({"generation": {"seed": 2**40}}, "generation.seed", "error.config.range"),
           ({"generation": {"num_beams": -3}}, "generation.num_beams", "error.config.range"),
           ({"training": 5}, "training", "error.config.type"),
           ({"adapter": [1, 2]}, "adapter", "error.config.type"),
           ({"training": {"learning_rate": None}}, "training.learning_rate", "error.config.empty_value"),
           ({"training": {"seed": 10**23}}, "training.seed", "error.config.range"),  # failed inside the run
           ({"training": {"dataloader_num_workers": -1}}, "training.dataloader_num_workers", "error.config.range"),
           ({"training": {"save_total_limit": 0}}, "training.save_total_limit", "error.config.range")]  # "keep all"
    for data, name, key in bad:
        with pytest.raises(ConfigError) as e:
            RunConfig.from_dict(data)
        assert (e.value.field, e.value.key) == (name, key)
        for lang in ("en", "ko"):
            assert "{" not in message(e.value.key, e.value.params, lang), (data, lang)
    assert RunConfig.from_dict({"generation": {"seed": -1}}).generation.seed == -1  # negative: draw one
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides(parse_overrides(["adapter.rank.x=1"]))
    assert (e.value.field, e.value.key) == ("adapter.rank", "error.config.not_a_section")
    for item in ("=5", " = 5", "nothing"):  # `--set =5` was "error: : unknown field"
        with pytest.raises(ConfigError) as e:
            parse_overrides([item])
        assert e.value.key == "error.config.set_syntax"


@pytest.mark.parametrize("item, field, value", [
    ("data.system_prompt=# 역할: 도우미", "data.system_prompt", "# 역할: 도우미"),  # YAML: a comment, so nothing
    ("data.system_prompt=Answer: briefly", "data.system_prompt", "Answer: briefly"),  # YAML: a mapping
    ("model.revision=0123456", "model.revision", "0123456"),  # YAML 1.1: an octal number, 42798
    ("run_name=2024-01-01", "run_name", "2024-01-01"),  # YAML: a date
    ("run_name=no", "run_name", "no"),  # YAML 1.1: false
    ("run_name=null", "run_name", None),  # unsetting an optional text still works
    ("generation.stop=[INST]", "generation.stop", ["[INST]"]),  # YAML: a list holding INST
    ("generation.stop=### Instruction:", "generation.stop", ["### Instruction:"]),
    ('generation.stop=["[INST]", "###"]', "generation.stop", ["[INST]", "###"]),  # several, quoted
    ("adapter.target_modules=[q_proj, v_proj]", "adapter.target_modules", ["q_proj", "v_proj"]),  # still YAML
    ("training.learning_rate=1e-4", "training.learning_rate", 1e-4),
])
def test_set_keeps_text_as_typed_where_the_field_is_text(item, field, value):
    """--set reads values as YAML, except in text fields: YAML silently turned a system prompt starting with # into
    nothing, a revision into an octal number and a stop string [INST] into INST."""
    from operator import attrgetter

    from engine.config import parse_overrides

    assert attrgetter(field)(RunConfig().with_overrides(parse_overrides([item]))) == value


@pytest.mark.parametrize("argv, workdir, debug", [
    (["--workdir", "X", "--debug", "train", "c.yaml"], "X", True),  # before the verb: was silently dropped
    (["train", "c.yaml", "--workdir", "Y", "--debug"], "Y", True),
    (["--workdir", "X", "train", "c.yaml", "--workdir", "Y"], "Y", False),  # the verb's own wins
    (["check", "f.jsonl"], None, False),
])
def test_workdir_and_debug_count_before_or_after_the_verb(argv, workdir, debug):
    from engine.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.workdir, args.debug) == (workdir, debug)


def test_a_key_given_twice_is_refused_with_its_lines_and_bad_yaml_is_one_line():
    """YAML keeps a repeated key's last value: a training: block appended to a preset replaced the whole section."""
    text = "training:\n  max_steps: 2\nmodel:\n  name_or_path: demo\ntraining:\n  learning_rate: 5.0e-4\n"
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml(text)
    assert e.value.key == "error.config.duplicate_key" and e.value.params == {"field": "training", "first": 1, "line": 5}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml("training:\n  max_steps: 2\n  max_steps: 3\n")
    assert e.value.params == {"field": "max_steps", "first": 2, "line": 3}
    ok = "training: &t\n  max_steps: 2\n"
    assert RunConfig.from_yaml(ok).training.max_steps == 2  # anchors and single keys read as before
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml("training:\n\tmax_steps: 2\n")
    from engine.messages import message

    said = message(e.value.key, e.value.params)
    assert "\n" not in said and said == "The config is not valid YAML at line 2, column 1: a tab in the indentation; " \
        "YAML indents with spaces"
    # PyYAML's usual words, said in the reader's language (they came in English on every page and terminal)
    for text, key in (("data:\n  system_prompt: Role: helper\n", "yaml.colon"), ('run_name: "abc\nstage: sft\n',
                      "yaml.unclosed"), ("training:\n  learning_rate: 1\n max_steps: 3\n", "yaml.indent")):
        with pytest.raises(ConfigError) as e:
            RunConfig.from_yaml(text)
        assert e.value.params["error"] == key, text
        assert "YAML" in message(e.value.key, e.value.params, "ko") and key not in message(e.value.key, e.value.params, "ko")


def test_a_runs_local_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """`tuneboard train c.yaml --data my.jsonl` run from one folder: its config.yaml named my.jsonl as given, so
    re-running it or `tuneboard eval` from anywhere else said the file was not found."""
    (tmp_path / "my.jsonl").write_text("{}\n")
    (tmp_path / "demo").mkdir()  # a folder that happens to be called like the demo model stays the demo
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": "my.jsonl"}, {"path": "demo:sft"}, {"path": "org/set"}]},
                               "adapter": {"init_from": "./gone"}}).with_absolute_paths()
    assert [d.path for d in cfg.data.datasets] == [str(tmp_path / "my.jsonl"), "demo:sft", "org/set"]
    assert cfg.model.name_or_path == "demo" and cfg.adapter.init_from == "./gone"  # what does not exist stays


def test_a_choice_in_other_capitals_is_the_choice():
    cfg = RunConfig.from_dict({"stage": "SFT", "model": {"precision": "BF16"}, "quantization": {"bits": "4"},
                               "adapter": {"method": "LoRA"}})
    assert (cfg.stage, cfg.model.precision, cfg.quantization.bits, cfg.adapter.method) == ("sft", "bf16", 4, "lora")
    with pytest.raises(ConfigError, match="did you mean 'bf16'"):
        RunConfig.from_dict({"model": {"precision": "bf61"}})


def test_set_reaches_into_a_list_by_index():
    """A text column named `content` is mapped with `--set data.datasets.0.columns.text=content`; it was refused
    ("a value, not a section"), and only a whole new datasets list worked."""
    from engine.config import parse_overrides

    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]}})
    got = cfg.with_overrides(parse_overrides(["data.datasets.1.columns.text=content", "data.datasets.0.max_samples=5",
                                              "data.datasets.0={path: c.jsonl}"]))
    assert got.data.datasets[1].columns == {"text": "content"} and got.data.datasets[0].path == "c.jsonl"
    for bad in ("data.datasets.2.path=x", "data.datasets.first.path=x"):
        with pytest.raises(ConfigError) as e:
            cfg.with_overrides(parse_overrides([bad]))
        assert e.value.key == "error.config.range" and e.value.params["bound"] == "0 .. 1"


def test_stage_dpo_on_the_bundled_instructions_takes_the_bundled_pairs():
    """`--set stage=dpo` on sft_demo.yaml (or a config naming no data) was refused over demo_sft.json, a file the
    reader never named; the bundled pairs are what a DPO demo trains on. A file of one's own is left alone."""
    assert [d.path for d in RunConfig.from_dict({"stage": "dpo"}).data.datasets] == ["demo:dpo"]
    cfg = RunConfig.load(str(ROOT / "assets" / "configs" / "sft_demo.yaml")).with_overrides({"stage": "dpo"})
    assert [d.path for d in cfg.data.datasets] == ["demo:dpo"]
    mine = RunConfig.from_dict({"stage": "dpo", "data": {"datasets": [{"path": "mine.jsonl"}]}})
    assert [d.path for d in mine.data.datasets] == ["mine.jsonl"]


def test_train_maps_the_columns_of_its_data_files_as_check_suggests_them():
    """`check` says "map them: instruction=question, output=response"; `train` took no --column, and a mapping
    given by `--set data.datasets.0.columns...` was silently thrown away by --data (a system prompt column
    then went untrained, with a warning that named it unused)."""
    import argparse

    from engine.config import config_from_args

    def args(**kw):
        base = dict(config=str(ROOT / "assets/configs/sft_demo.yaml"), set=[], data=None, column=[], format=None,
                    max_steps=None)
        return argparse.Namespace(**{**base, **kw})

    cfg = config_from_args(args(data=["orca.jsonl"], set=["data.datasets.0.columns.system=system_prompt"]))
    assert [(d.path, d.columns) for d in cfg.data.datasets] == [("orca.jsonl", {"system": "system_prompt"})]
    cfg = config_from_args(args(data=["a.jsonl", "b.csv"], column=["instruction=question, output=response"],
                                format="alpaca"))
    assert [(d.columns, d.format) for d in cfg.data.datasets] == [
        ({"instruction": "question", "output": "response"}, "alpaca")] * 2
    cfg = config_from_args(args(column=["output=answer"]))  # no --data: the config's own datasets
    assert [(d.path, d.columns) for d in cfg.data.datasets] == [("demo:sft", {"output": "answer"})]
    with pytest.raises(ConfigError) as e:
        config_from_args(args(column=["output"]))
    assert e.value.key == "data.bad_column_arg"


def test_yaml_aliases_that_expand_exponentially_are_refused_at_once(tmp_path):
    """A "billion laughs" config (a few hundred bytes, 387 million strings once its aliases are written out) kept
    the CLI, or the board loading it, busy for minutes and gigabytes writing its error message."""
    import time

    levels = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&{n} [" + ", ".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    started = time.time()
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml("stage: sft\nrun_name: [" + ", ".join(levels) + "]\n")
    assert e.value.key == "error.config.yaml" and "aliases" in str(e.value) and time.time() - started < 10
    # an alias or two, as people use them, still reads
    cfg = RunConfig.from_yaml("data:\n  system_prompt: &p Be brief.\ngeneration:\n  system_prompt: *p\n")
    assert cfg.generation.system_prompt == cfg.data.system_prompt == "Be brief."


def test_a_column_mapping_names_one_of_our_fields():
    """`--column bogus=question` (or `outptu=response` in a config) was taken: the check then listed bogus as a
    column of the file, and the advice that followed led nowhere."""
    import argparse

    from engine.config import COLUMN_FIELDS, config_from_args
    from engine.data.formats import FORMATS

    assert set(COLUMN_FIELDS) == {f for required, optional in FORMATS.values() for f in required + optional}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": {"datasets": [{"path": "a.jsonl", "columns": {"outptu": "response"}}]}})
    assert e.value.key == "error.config.unknown_column" and e.value.params["near"] == "output"
    args = argparse.Namespace(config=str(ROOT / "assets/configs/sft_demo.yaml"), set=[], data=["a.jsonl"],
                              column=["bogus=question"], format=None, max_steps=None)
    with pytest.raises(ConfigError) as e:
        config_from_args(args)
    assert e.value.key == "error.config.unknown_column" and e.value.field == "--column"


def test_one_column_mapped_to_two_of_our_fields_is_refused():
    """`--column instruction=질문 --column output=질문` (a typo for output=답변) trained every question as its own
    answer; only "columns not used: 답변" was said."""
    import argparse

    from engine.config import config_from_args

    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": {"datasets": [{"path": "a.csv", "columns": {"instruction": "질문", "output": "질문"}}]}})
    assert (e.value.key, e.value.params["column"], e.value.params["fields"]) == ("data.column_read_twice", "질문", "instruction, output")
    args = argparse.Namespace(config=str(ROOT / "assets/configs/sft_demo.yaml"), set=[], data=["a.csv"],
                              column=["instruction=질문", "output=질문"], format=None, max_steps=None)
    with pytest.raises(ConfigError) as e:
        config_from_args(args)
    assert e.value.key == "data.column_read_twice" and e.value.field == "--column"
    RunConfig.from_dict({"data": {"datasets": [{"path": "a.csv", "columns": {"instruction": "질문", "output": "답변"}}]}})
