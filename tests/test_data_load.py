"""load_training_data: RunConfig.data -> checked, normalised, merged, shuffled, split datasets that train."""

import json
import math
from pathlib import Path

import pytest
from world import FIX, logged_losses, train_run

from engine.config import RunConfig
from engine.data import load_training_data
from engine.messages import TuneboardError


def cfg(stage="sft", *paths, **data):
    specs = [p if isinstance(p, dict) else {"path": str(FIX / p) if not p.startswith("demo:") else p} for p in paths]
    return RunConfig.from_dict({"stage": stage, "data": {"datasets": specs, **data}, "training": {"seed": 3}})


def roles(msgs):
    return [m["role"] for m in msgs]


def test_sft_merges_every_chat_format_into_messages():
    names = ["alpaca.json", "sharegpt.json", "messages.jsonl", "prompt_completion.jsonl", "preference_columns.json",
             "alpaca.csv"]
    notes = []
    train, val = load_training_data(cfg("sft", *names), notes)
    assert val is None and train.column_names == ["messages"] and len(train) == 4 + 2 + 2 + 2 + 3 + 3
    # the one file whose kind SFT reads only in part is told (its rejected answers go unused)
    assert [(k, p["path"].rsplit("/", 1)[-1]) for k, p in notes if k.startswith("warning.sft")] == \
        [("warning.sft_on_preference", "preference_columns.json")]
    for row in train:
        r = roles(row["messages"])
        assert r[-1] == "assistant" and set(r) <= {"system", "user", "assistant"}
    assert any(m["content"] == "The sky is blue." for row in train for m in row["messages"])  # prompt + chosen


def test_dpo_columns_and_prompt_ends_with_the_user():
    train, _ = load_training_data(cfg("dpo", "preference_columns.json", "preference_messages.jsonl", "preference_alpaca.json"))
    assert sorted(train.column_names) == ["chosen", "prompt", "rejected"] and len(train) == 7
    for row in train:
        assert row["prompt"][-1]["role"] == "user"
        assert roles(row["chosen"]) == ["assistant"] and roles(row["rejected"]) == ["assistant"]


def test_pt_reads_text_and_flattens_chats():
    train, _ = load_training_data(cfg("pt", "text_blocks.txt", "alpaca.json"))
    assert train.column_names == ["text"] and len(train) == 7
    texts = set(train["text"])
    assert "The second block." in texts and "한국의 수도는 어디인가요?\n\n한국의 수도는 서울입니다." in texts


def test_demo_sets_resolve():
    for stage, name, column in (("sft", "demo:sft", "messages"), ("dpo", "demo:dpo", "chosen"), ("pt", "demo:pt", "text")):
        train, _ = load_training_data(cfg(stage, name))
        assert column in train.column_names and len(train) > 20


def test_max_samples_system_prompt_shuffle_and_split():
    c = cfg("sft", {"path": "demo:sft", "max_samples": 30}, "alpaca.json", system_prompt="Be brief.", val_size=0.25)
    train, val = load_training_data(c)
    assert len(train) + len(val) == 34 and len(val) == round(34 * 0.25)
    systems = [row["messages"][0] for row in list(train) + list(val)]
    assert all(m["role"] == "system" for m in systems)
    assert sum(m["content"] == "You are a helpful assistant." for m in systems) == 1  # the row's own one is kept
    again_train, again_val = load_training_data(c)
    assert again_train["messages"] == train["messages"] and again_val["messages"] == val["messages"]
    other, _ = load_training_data(c.with_overrides({"data.shuffle_seed": 99}))
    assert other["messages"] != train["messages"]
    train, val = load_training_data(cfg("sft", "alpaca.json", val_size=1))
    assert (len(train), len(val)) == (3, 1)


def test_val_size_that_leaves_nothing_is_an_error():
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", "alpaca.json", val_size=4))
    assert e.value.key == "data.val_size_too_large"


def test_errors_raise_data_invalid_naming_file_row_and_field():
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", "broken.jsonl"))
    assert e.value.key == "error.data_invalid_rows" and e.value.params["count"] == 6  # says the way out
    assert "broken.jsonl row 2" in e.value.params["first"] and "data.skip_bad_rows" in str(e.value)
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", "broken_array.json"))
    assert "broken_array.json line 8" in str(e.value)
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", "mixed_types.jsonl"))
    assert "row 3, field instruction" in str(e.value)  # (row 2's instruction is the number 7: read as "7")


def test_skip_bad_rows_trains_on_the_good_rows_and_says_how_many_were_left_out(tmp_path):
    """A scraped file of 100k rows with a handful broken was refused whole; `data.skip_bad_rows` leaves them out."""
    notes = []
    train, val = load_training_data(cfg("sft", "broken.jsonl", skip_bad_rows=True), notes)
    [(key, params)] = [n for n in notes if n[0] == "warning.bad_rows_skipped"]
    assert (params["count"], params["total"]) == (6, 9) and "broken.jsonl row 2" in params["first"]  # unparsed too
    rows = [str(r) for r in train] + [str(r) for r in (val or [])]
    assert len(rows) == 3 and any("A fine answer." in r for r in rows) and any("Another fine" in r for r in rows)
    assert any("'content': '42'" in r for r in rows)  # a number where text belongs: read as its text
    for path in ("broken_array.json", "unknown_columns.jsonl"):  # a problem of the whole file: refused either way
        with pytest.raises(TuneboardError) as e:
            load_training_data(cfg("sft", path, skip_bad_rows=True))
        assert e.value.key == "error.data_invalid", path
    no_answers = tmp_path / "dolly.jsonl"  # no row has `output`: the file's problem, said before its rows'
    no_answers.write_text('{"instruction": "Q", "response": "A"}\n{"instruction": "Q2", "response": "A2"}\n')
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", {"path": str(no_answers)}, skip_bad_rows=True))
    assert e.value.key == "error.data_invalid" and "No row has the column output" in e.value.params["first"]


def test_file_level_problems_raise_their_own_key(tmp_path):
    for path, key in ((str(tmp_path / "nope.jsonl"), "data.file_not_found"), ("someuser/somedataset", "data.hub_offline"),
                      (str(FIX / "empty.jsonl"), "error.data_invalid"), (str(FIX / "unknown_columns.jsonl"), "error.data_invalid"),
                      (str(FIX / "not_a_list.json"), "error.data_invalid")):
        with pytest.raises(TuneboardError) as e:
            load_training_data(cfg("sft", {"path": path}))
        assert e.value.key == key and Path(path).name in str(e.value), path


def test_hub_offline_error_names_the_dataset():
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", {"path": "someuser/somedataset"}))
    assert e.value.key == "data.hub_offline" and "someuser/somedataset" in str(e.value) and "offline" in str(e.value)


def test_stage_and_format_mismatches_are_explained():
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("sft", "text_lines.txt"))
    assert e.value.key == "data.text_for_sft"
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("dpo", "alpaca.json"))
    assert e.value.key == "data.dpo_needs_preference" and e.value.params["format"] == "alpaca"


def test_column_mapping_and_forced_format_from_the_spec():
    spec = {"path": str(FIX / "mapped.jsonl"), "columns": {"instruction": "question", "output": "answer"}}
    train, _ = load_training_data(cfg("sft", spec))
    assert len(train) == 2
    spec = {"path": str(FIX / "text.jsonl"), "format": "text"}
    assert len(load_training_data(cfg("pt", spec))[0]) == 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny Llama and a tokenizer fitted to the fixtures: enough to take a training step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.demo import build_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tok = build_tokenizer([p.read_text(encoding="utf-8-sig") for p in FIX.glob("*.json*") if "utf8" not in p.name], vocab_size=400)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("stage, files", [
    ("sft", ["alpaca.json", "sharegpt.json", "messages.jsonl", "prompt_completion.jsonl", "alpaca.csv",
             "preference_columns.json"]),
    ("dpo", ["preference_columns.json", "preference_messages.jsonl", "preference_alpaca.json"]),
])
def test_the_normalised_data_trains_one_step(stage, files, tiny_model, tmp_path):
    c = RunConfig.from_dict({
        "stage": stage, "run_name": f"data-{stage}", "model": {"name_or_path": str(tiny_model)},
        "adapter": {"method": "lora", "rank": 4, "alpha": 8},
        "data": {"datasets": [{"path": str(FIX / f)} for f in files], "max_length": 128},
        "training": {"max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                     "learning_rate": 1e-3, "warmup_ratio": 0.0}})
    losses = logged_losses(train_run(tmp_path, c))
    assert losses and all(math.isfinite(v) for v in losses)


def test_pretraining_on_conversations_says_how_it_reads_them():
    notes = []
    load_training_data(cfg("pt", "alpaca.json", "text_lines.txt"), notes)
    assert [(k, p["path"].rsplit("/", 1)[-1]) for k, p in notes] == [("warning.pt_on_chat", "alpaca.json")]


def test_a_spreadsheet_or_binary_file_is_refused_in_its_own_words_once(tmp_path):
    """`train --data sheet.xlsx` said "first: /x/sheet.xlsx: /x/sheet.xlsx is a spreadsheet ... The Data tab or
    `tuneboard check` lists all of them": the path twice, inside a list of errors it is not."""
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(TuneboardError) as e:
        load_training_data(RunConfig.from_dict({"data": {"datasets": [{"path": str(sheet)}]}}))
    assert e.value.key == "data.spreadsheet_file" and str(e.value).count(str(sheet)) == 1


def test_sft_keeps_a_pair_without_its_rejected_answer_and_dpo_refuses_it(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Sky?", "chosen": "Blue, on a clear day.", "rejected": "Green."}\n'
                    '{"prompt": "Snow?", "chosen": "White, mostly."}\n'
                    '{"chosen": [{"role": "user", "content": "Grass?"}, {"role": "assistant", "content": "Green."}]}\n',
                    encoding="utf-8")
    train, _ = load_training_data(cfg("sft", {"path": str(path)}))
    assert sorted(m["content"] for row in train for m in row["messages"] if m["role"] == "assistant") == [
        "Blue, on a clear day.", "Green.", "White, mostly."]
    train, _ = load_training_data(cfg("pt", {"path": str(path)}))
    assert "Snow?\n\nWhite, mostly." in train["text"]
    with pytest.raises(TuneboardError) as e:
        load_training_data(cfg("dpo", {"path": str(path)}))
    assert e.value.key == "error.data_invalid_rows" and "row 2" in e.value.params["first"]


def test_sft_on_pairs_trains_the_chosen_answer_alone_not_the_prompts_earlier_answers(tmp_path):
    """HH-RLHF's prompts hold red-team answers nobody judged; SFT trained them as if they were chosen."""
    from engine.data import check_file

    path = tmp_path / "hh.jsonl"
    talk = "\n\nHuman: Cuss words?\n\nAssistant: Here is a list of them.\n\nHuman: Your favourite?\n\nAssistant:"
    path.write_text(json.dumps({"chosen": talk + " I have none.", "rejected": talk + " This one."}) + "\n",
                    encoding="utf-8")
    other = tmp_path / "pc.jsonl"  # a prompt-completion row alike, as trl trains it: on its completion
    other.write_text(json.dumps({"prompt": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."},
                                            {"role": "user", "content": "More?"}], "completion": "B."}) + "\n")
    train, _ = load_training_data(cfg("sft", {"path": str(path)}, {"path": str(other)}, val_size=0))
    by_first = {row["messages"][0]["content"]: row["messages"] for row in train}
    for first in ("Cuss words?", "Q?"):
        assert [(m["role"], m.get("weight")) for m in by_first[first]] == [
            ("user", None), ("assistant", 0), ("user", None), ("assistant", None)]
    report = check_file(str(path), stage="sft")
    [views] = [item["views"] for item in report.preview if item["record"]["prompt"][0]["content"] == "Cuss words?"]
    trained = "".join(seg["text"] for view in views for seg in view["segments"] if seg["loss"])
    assert "I have none." in trained and "Here is a list" not in trained


def test_mask_history_trains_each_conversations_last_answer_alone(tmp_path):
    """LLaMA-Factory's mask_history: the earlier answers are context; the preview shows what trains."""
    from engine.data import check_file
    from engine.data.load import for_stage
    from engine.data.tokens import load_tokenizer

    path = tmp_path / "chat.jsonl"
    talk = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Name?"}, {"role": "assistant", "content": "I am Tuneboard."}]
    path.write_text(json.dumps({"messages": talk}) + "\n", encoding="utf-8")
    weights = {}
    for mask in (False, True):
        train, _ = load_training_data(cfg("sft", {"path": str(path)}, val_size=0, mask_history=mask))
        weights[mask] = [m.get("weight") for m in train[0]["messages"]]
    assert weights == {False: [None] * 4, True: [None, 0, None, None]}
    report = check_file(str(path), stage="sft")
    tokenizer = load_tokenizer(None)
    for_stage(report, "sft", tokenizer, 1024, mask_history=True)
    trained = "".join(seg["text"] for view in report.preview[0]["views"] for seg in view["segments"] if seg["loss"])
    assert "I am Tuneboard." in trained and "Hello there." not in trained
    train, _ = load_training_data(cfg("pt", {"path": str(path)}, val_size=0, mask_history=True))
    assert "Hello there." in train[0]["text"]  # pretraining reads the whole text, as it does without


def test_llama_factory_kto_conversations_train_as_kto_and_sft_keeps_the_desirable_answers(tmp_path):
    """LLaMA-Factory's KTO rows are a conversation and a `kto_tag`: KTO refused them as "the messages format,
    which has no rejected answers", and SFT and pretraining trained the undesirable answers too."""
    path = tmp_path / "kto_lf.jsonl"
    rows = [({"messages": [{"role": "user", "content": "한국의 수도는?"}, {"role": "assistant", "content": "서울입니다."}]}, True),
            ({"messages": [{"role": "user", "content": "한국의 수도는?"}, {"role": "assistant", "content": "도쿄입니다."}]}, False),
            ({"conversations": [{"from": "human", "value": "일본의 수도는?"}, {"from": "gpt", "value": "도쿄입니다."}]}, "true")]
    path.write_text("".join(json.dumps({**r, "kto_tag": tag}, ensure_ascii=False) + "\n" for r, tag in rows),
                    encoding="utf-8")
    train, _ = load_training_data(RunConfig.from_dict({"stage": "dpo", "dpo": {"method": "kto"},
                                                       "data": {"datasets": [{"path": str(path)}], "val_size": 0}}))
    assert sorted(train.column_names) == ["completion", "label", "prompt"] and sorted(train["label"]) == [False, True, True]
    assert all(row["prompt"][-1]["role"] == "user" and roles(row["completion"]) == ["assistant"] for row in train)
    notes = []
    train, _ = load_training_data(cfg("sft", {"path": str(path)}, val_size=0), notes)
    assert sorted(row["messages"][-1]["content"] for row in train) == ["도쿄입니다.", "서울입니다."]  # Japan's, Korea's
    assert [k for k, _ in notes if k.startswith("warning.sft")] == ["warning.sft_on_unpaired"]
    from engine.data import check_file

    for stage in ("sft", "pt"):  # the preview shows what trains: the undesirable answer of row 2 is not shown
        assert [item["row"] for item in check_file(str(path), stage=stage).preview] == [1, 3], stage
    assert [item["row"] for item in check_file(str(path), stage="kto").preview] == [1, 2, 3]
    notes = []
    train, _ = load_training_data(cfg("pt", {"path": str(path)}, val_size=0), notes)
    assert len(train) == 2 and "warning.pt_on_unpaired" in [k for k, _ in notes]
    bad = tmp_path / "all_bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "a bad answer", "label": false}\n' * 2, encoding="utf-8")
    with pytest.raises(TuneboardError) as e:  # it said "No training rows left after reading the data"
        load_training_data(cfg("sft", {"path": str(bad)}))
    assert "marked undesirable" in str(e.value)


def test_kto_balances_desirable_and_undesirable_answers():
    from engine.dpo import desirable_weight

    assert desirable_weight([True, False, False, False]) == 3.0  # the KTO paper's ratio, which trl only advised
    assert desirable_weight([True, True, True, False]) == pytest.approx(1 / 3)
    assert desirable_weight([True, False]) == desirable_weight([True, True]) == desirable_weight([False]) == 1.0


def test_a_warned_files_check_command_reads_it_as_the_run_did(tmp_path):
    """The run's "`tuneboard check FILE` lists them all" left out the run's --column mapping: that command then
    said "no known format has the columns 질문, 답변, 비고" instead of the warnings it promised."""
    import shlex

    from engine.config import parse_columns
    from engine.data import check_file

    data = tmp_path / "내 데이터.csv"
    data.write_text("질문,답변,비고\n한국 수도?,서울입니다,x\n일본 수도?,도쿄입니다,y\n", encoding="utf-8")
    notes = []
    load_training_data(cfg("sft", {"path": str(data), "format": "alpaca",
                                    "columns": {"instruction": "질문", "output": "답변"}}), notes)
    [(key, params)] = [n for n in notes if n[0] == "warning.data_warnings"]
    args = shlex.split(params["path"])
    assert args == [str(data), "--format", "alpaca", "--column", "instruction=질문, output=답변"]
    report = check_file(args[0], args[2], columns=parse_columns([args[4]]))
    assert report.format == "alpaca" and report.trainable and "data.ignored_columns" in report.counts
