"""`tuneboard check`: what it prints, the JSON scripts read, and the exit codes."""

import json
import os
import subprocess
import sys

import pytest
from world import FIX, ROOT, hub_unreachable, not_in_cache

from engine.cli import main


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from engine.demo import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tokenizer([(FIX / "alpaca.json").read_text(encoding="utf-8")] * 3, vocab_size=300).save_pretrained(out)
    return str(out)


def run(capsys, *args):
    rc = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_good_files_exit_0_and_print_format_stats_and_preview(capsys, tok_dir):
    rc, out, _ = run(capsys, FIX / "alpaca.json", FIX / "preference_columns.json", "--model", tok_dir)
    assert rc == 0
    assert "alpaca.json: alpaca (conversational language modeling), 4 rows" in out
    assert "preference_columns.json: preference (conversational preference), 3 rows" in out
    assert "Tokens per row" in out and "[[한국의 수도는 서울입니다.<|im_end|>]]" in out and "Ready to train" in out
    # each passes alone; checked together, that one run trains one stage is said (and not with --stage)
    assert out.rstrip().splitlines()[-1].startswith("Note: these files suit different stages (sft: alpaca.json; "
                                                    "dpo: preference_columns.json)")
    rc, out, _ = run(capsys, FIX / "alpaca.json", FIX / "preference_columns.json", "--model", tok_dir, "--json")
    assert json.loads(out)["notes"][0]["params"]["stages"] == "sft: alpaca.json; dpo: preference_columns.json"
    rc, out, _ = run(capsys, FIX / "alpaca.json", FIX / "preference_columns.json", "--model", tok_dir, "--stage", "sft")
    assert "different stages" not in out


def test_errors_exit_1_and_name_rows_and_fields(capsys, tok_dir):
    rc, out, _ = run(capsys, FIX / "alpaca.json", FIX / "broken.jsonl", "--model", tok_dir)
    assert rc == 1
    assert "row 3 (line 4), field output: The field output is missing" in out  # line 3 is blank: no row
    assert "row 8 (line 9): A comma before a closing bracket" in out and "6 errors," in out


def test_warnings_alone_still_exit_0(capsys, tok_dir):
    rc, out, _ = run(capsys, FIX / "warnings.jsonl", "--model", tok_dir, "--max-length", "64")
    assert rc == 0 and "This row repeats row 1" in out and "longer than the cutoff of 64 tokens" in out


def test_json_document(capsys, tok_dir):
    rc, out, _ = run(capsys, FIX / "broken_sharegpt.jsonl", FIX / "alpaca.csv", "--json", "--model", tok_dir)
    doc = json.loads(out)
    assert rc == 1 and doc["trainable"] is False and doc["max_length"] == 1024
    bad, good = doc["files"]
    assert (bad["format"], bad["rows"], bad["errors"], bad["trainable"]) == ("sharegpt", 7, 6, False)
    first = bad["findings"][0]
    assert first == {"row": 1, "line": 1, "field": "conversations", "severity": "error",
                     "key": "data.starts_with_assistant", "params": {},
                     "message": first["message"]} and "starts with the assistant" in first["message"]
    assert (good["format"], good["rows"], good["trainable"], good["source"]) == ("alpaca", 3, True, "csv")
    assert good["stats"]["counting"] == "exact" and sum(good["stats"]["histogram"]["counts"]) == 3
    assert good["preview"][0]["row"] == 2 and any(s["loss"] for s in good["preview"][0]["views"][0]["segments"])


def test_json_lists_every_finding_and_the_text_a_few_of_a_kind(capsys, tmp_path):
    """A script reading --json got 20 of 25,000 errors with no sign that the rest were left off; a person reads
    five of a kind and how many more."""
    path = tmp_path / "empty_answers.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "output": ""}) + "\n" for i in range(30)))
    rc, out, _ = run(capsys, path, "--json")
    [doc] = json.loads(out)["files"]
    assert rc == 1 and [f["row"] for f in doc["findings"]] == list(range(1, 31)) and doc["errors"] == 30
    rc, out, _ = run(capsys, path)
    assert out.count("field output:") == 5 and "... and 25 more like this" in out and "30 errors" in out


def test_format_override_and_column_mapping(capsys, tok_dir):
    rc, out, _ = run(capsys, FIX / "mapped.jsonl", "--json", "--model", tok_dir)
    assert rc == 1 and json.loads(out)["files"][0]["findings"][0]["key"] == "data.unknown_columns"
    rc, out, _ = run(capsys, FIX / "mapped.jsonl", "--json", "--model", tok_dir, "--format", "alpaca",
                     "--column", "instruction=question", "--column", "output=answer")
    assert rc == 0 and json.loads(out)["files"][0]["format"] == "alpaca"


def test_bad_flags_are_one_clear_line(capsys, tok_dir):
    rc, _, err = run(capsys, FIX / "alpaca.json", "--column", "nonsense", "--model", tok_dir)
    assert rc == 2 and "--column expects ours=theirs" in err
    rc, _, err = run(capsys, FIX / "alpaca.json", "--format", "yaml", "--model", tok_dir)
    assert rc == 2 and "Unknown format yaml" in err
    rc, _, err = run(capsys, FIX / "alpaca.json", "--model", str(FIX / "no-such-model"))
    assert rc == 2 and "no-such-model" in err
    rc, _, err = run(capsys, FIX / "alpaca.json", "--column", "output=response", "--column", "output=instruction")
    assert rc == 2 and "output is mapped to two columns (response, instruction)" in err  # the last one won, unsaid
    rc, _, err = run(capsys, FIX / "alpaca.json", "--model", str(FIX))  # a folder, not a model's: not "neither a
    assert rc == 2 and "is a folder but not a whole model" in err     # local folder nor a model on the Hub"


def test_a_hub_tokenizer_this_machine_cannot_reach_is_refused_at_once_as_offline(capsys, monkeypatch):
    """The Hub's host does not answer and HF_HUB_OFFLINE is not set: the cache only (no five retries with
    back-off, ~40 s), and the message says offline, not 'no such model'."""
    import transformers

    hub_unreachable(monkeypatch)
    asked = not_in_cache(monkeypatch, transformers.AutoTokenizer)
    rc, _, err = run(capsys, FIX / "alpaca.json", "--model", "some-org/some-model")
    assert rc == 2 and asked == [True] and "offline" in err and "some-org/some-model" in err


@pytest.mark.parametrize("path", ["/no/such/model", "./no-such-folder", "~/no-such-folder", "a/b/c"])
def test_a_missing_folder_is_not_found_even_offline(capsys, monkeypatch, path):
    """A name only a path can be (not `owner/model`) that isn't there is 'not found', not 'offline', and the
    Hub is not asked."""
    import transformers

    hub_unreachable(monkeypatch)
    asked = not_in_cache(monkeypatch, transformers.AutoTokenizer)
    rc, _, err = run(capsys, FIX / "alpaca.json", "--model", path)
    assert rc == 2 and asked == [] and "not found" in err.lower() and path in err and "offline" not in err


def test_without_a_tokenizer_counts_are_marked_estimated(capsys, monkeypatch):
    import engine.demo

    def unavailable(*a, **k):
        raise RuntimeError("no demo model here")

    monkeypatch.setattr(engine.demo, "check_tokenizer", unavailable)
    rc, out, _ = run(capsys, FIX / "text_lines.txt", "--json")
    stats = json.loads(out)["files"][0]["stats"]
    assert rc == 0 and stats["estimated"] and stats["counting"] == "estimate"


def test_hub_name_offline_in_a_fresh_process_is_a_clear_finding(tok_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "someuser/somedataset", "--json", "--model", tok_dir],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [f] = json.loads(r.stdout)["files"][0]["findings"]
    assert f["key"] == "data.hub_offline" and "someuser/somedataset" in f["message"]


def test_a_language_given_with_its_region_or_as_a_locale_is_spoken_and_an_unknown_one_said(capsys, tmp_path,
                                                                                              monkeypatch):
    """`--lang ko-KR` and TUNEBOARD_LANG=ko_KR.UTF-8 (as $LANG reads) gave English without a word."""
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "질문", "output": 3}\n', encoding="utf-8")
    assert "1행, 필드 output" in run(capsys, p, "--lang", "ko-KR")[1]
    monkeypatch.setenv("TUNEBOARD_LANG", "ko_KR.UTF-8")
    assert "1행, 필드 output" in run(capsys, p)[1]
    rc, out, err = run(capsys, p, "--lang", "xx")
    assert "row 1, field output" in out and "no messages in 'xx'; English instead (there are: en, ja, ko, ru, zh)" in err


def test_lang_speaks_korean_including_places_and_kinds_of_values(capsys, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "질문", "output": {"a": 3}}\n{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    rc, out, _ = run(capsys, p, "--lang", "ko")
    assert rc == 1
    assert "오류      1행, 필드 output: output 필드는 '텍스트' 형식이어야 하는데 '객체' 형식입니다" in out
    assert "type." not in out and "row" not in out
    assert "alpaca (대화형 " in out.splitlines()[0]  # the kind of data too, as the board says it
    rc, out, _ = run(capsys, p)  # the next command is English again
    assert "alpaca (conversational language modeling)" in out.splitlines()[0]
    assert "row 1, field output: The field output should be text, but it is an object" in out
    rc = main(["estimate", str(ROOT / "assets/configs/sft_demo.yaml"), "--set", "training.learning_rate=x"])
    assert rc == 2 and "training.learning_rate: expected a number, got x" in capsys.readouterr().err
    os.environ["TUNEBOARD_LANG"] = "ja"
    try:
        rc = main(["estimate", str(ROOT / "assets/configs/sft_demo.yaml"), "--set", "training.learning_rate=x"])
    finally:
        del os.environ["TUNEBOARD_LANG"]
    assert rc == 2 and capsys.readouterr().err.startswith("エラー: training.learning_rate: 数値")


def test_a_mistyped_command_line_is_said_in_the_readers_language_with_the_close_verb(capsys, monkeypatch):
    """argparse's errors stayed English under --lang ko; `tuneboard trian` named no verb to try."""
    def refused(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert e.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]

    assert refused("--lang", "ko", "trian").endswith("'trian'은(는) 'train', 'check', 'estimate', 'chat', 'eval', "
                                                     "'export' 중 하나가 아닙니다; train을(를) 뜻하셨나요?")
    assert refused("check", "--stage", "sfft", "a.jsonl") == (
        "tuneboard check: error: --stage: 'sfft' is not one of 'sft', 'dpo', 'kto', 'orpo', 'simpo', 'pt'; did you mean sft?")
    assert refused("chat", "run", "--seed", "abc", "--lang=ja") == "tuneboard chat: エラー: --seed: 'abc' は整数ではありません"
    monkeypatch.setenv("TUNEBOARD_LANG", "ru")
    assert refused("train") == "tuneboard train: ошибка: нужно указать: config"
    assert refused("check", "a.jsonl", "--bogus").endswith("нет такого параметра или аргумента: --bogus")
    assert refused("chat", "run", "--seed").endswith("после --seed нужно значение")
    assert refused("estimate", "c.yaml", "--gpu-memory", "0", "--lang", "ko") == (
        "tuneboard estimate: 오류: --gpu-memory: 0보다 큰 수여야 합니다 (입력값: 0)")  # our own flags' checks too,
    # without argparse's English "argument" before them


def test_control_characters_in_rows_are_shown_escaped(capsys, tmp_path):
    p = tmp_path / "esc.jsonl"
    p.write_text(json.dumps({"instruction": "red \x1b[31mtext", "output": "ok\x00"}) + "\n", encoding="utf-8")
    rc, out, _ = run(capsys, p)
    assert "\x1b" not in out and "\x00" not in out and "\\x1b[31mtext" in out
    # and said: they trained silently (escaped in JSON: a raw NUL byte is an error of its own)
    assert "row 1: The row holds control characters (\\x1b)" in out and rc == 0


def test_a_reader_that_stops_early_ends_it_quietly(tok_dir):
    """`tuneboard check *.json | head`: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    files = [str(FIX / "alpaca.json")] * 300  # ~180 KB of report, line by line: more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "check", *files, "--model", tok_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.stdout.read(100).startswith(str(FIX).encode())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "BrokenPipe" not in err and "Traceback" not in err, err


def test_check_counts_demo_tokens_without_building_a_model_where_it_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOARD_HOME", str(tmp_path / "home"))
    rc, out, _ = run(capsys, FIX / "alpaca.json", "--json")
    assert rc == 0 and json.loads(out)["files"][0]["stats"]["counting"] == "exact"  # the demo's own tokenizer
    assert not (tmp_path / "home").exists()


def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch, capsys):
    import types

    import engine.cli as cli

    def fails(args):
        raise BrokenPipeError(32, "Broken pipe (a loader's worker)")

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(run=fails))
    monkeypatch.setitem(cli.COMMANDS, "check", "fake_verb:run")
    assert main(["check", "x"]) == 1 and "a loader's worker" in capsys.readouterr().err


def test_paths_that_cannot_be_used_as_asked_are_one_translated_line_and_exit_2(capsys, tmp_path):
    """A folder given as the config, a binary file, a workdir that is a file, an infinite GPU: bad input (2),
    said in the reader's language, never a Python error name."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    preset = str(ROOT / "assets" / "configs" / "sft_demo.yaml")
    for argv, said in ((["estimate", str(folder)], "a folder, where a file is needed"),
                       (["--lang", "ko", "estimate", str(folder)], "파일이 필요한 곳에 폴더가 있습니다"),
                       (["estimate", str(binary)], "not a UTF-8 text file"),
                       (["train", preset, "--workdir", str(afile), "--max-steps", "1"], "is a file, not a folder"),
                       (["check", str(afile), "--max-length", "0"], "must be >= 8, got 0")):  # 0 was taken for 1024
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "Error:" not in err.replace("error:", ""), (argv, err)
    with pytest.raises(SystemExit) as e:
        main(["estimate", preset, "--gpu-memory", "inf"])
    assert e.value.code == 2


def test_a_long_text_is_said_to_be_split_with_nothing_dropped(capsys, tok_dir, tmp_path):
    """Pretraining splits a text longer than the cutoff into pieces: the check said its tokens were dropped."""
    book = tmp_path / "book.txt"
    book.write_text("a long text of words that goes on and on " * 200 + "\n\nA short one.\n", encoding="utf-8")
    rc, out, _ = run(capsys, book, "--model", tok_dir, "--max-length", "64", "--json")
    stats = json.loads(out)["files"][0]["stats"]
    assert rc == 0 and stats["split"] and stats["tokens_cut"] == 0 and stats["over_cutoff"] == 1
    assert stats["packed_sequences"] == -(-stats["total"] // 64)  # every token, in rows of the cutoff
    rc, out, _ = run(capsys, book, "--model", tok_dir, "--max-length", "64")
    assert "1 text longer, split into pieces of that length (no token dropped)" in out and "dropped;" not in out


def test_stage_checks_a_file_as_that_stage_trains_it(capsys, tok_dir, tmp_path):
    """`tuneboard check` said "Ready to train" for a text file that SFT then refused, and showed a chat file through
    the chat template where pretraining trains its plain text."""
    text = tmp_path / "notes.txt"
    text.write_text("첫 문단입니다.\n\n둘째 문단입니다.\n", encoding="utf-8")
    rc, out, _ = run(capsys, text, "--model", tok_dir)
    assert rc == 0 and "Ready to train" in out  # no stage named: the file alone
    rc, out, _ = run(capsys, text, "--model", tok_dir, "--stage", "sft")
    assert rc == 1 and "notes.txt is plain text" in out and "1 error," in out
    rc, out, _ = run(capsys, FIX / "alpaca.json", "--model", tok_dir, "--stage", "pt", "--json")
    doc = json.loads(out)["files"][0]
    assert rc == 0 and [f["key"] for f in doc["stage_findings"]] == ["warning.pt_on_chat"]
    view = doc["preview"][0]["views"][0]
    assert "<|im_start|>" not in view["text"] and view["tokens"] == view["loss_tokens"]  # plain text, all trained
    sft_doc = json.loads(run(capsys, FIX / "alpaca.json", "--model", tok_dir, "--json")[1])["files"][0]
    assert doc["stats"]["split"] and doc["stats"]["total"] < sft_doc["stats"]["total"]  # measured without template
    rc, out, _ = run(capsys, FIX / "alpaca.json", "--model", tok_dir, "--stage", "dpo")
    assert rc == 1 and "DPO" in out


def test_the_preference_stage_checks_unpaired_answers_as_its_method_trains_them(capsys, tok_dir, tmp_path):
    """`check --stage dpo` said "Ready to train" for KTO's unpaired answers, which `train` with a DPO preset then
    refused; `--stage kto` checks them as KTO trains them."""
    kto = tmp_path / "kto.jsonl"
    kto.write_text("".join(json.dumps({"prompt": q, "completion": a, "label": ok}, ensure_ascii=False) + "\n"
                           for q, a, ok in [("하늘은?", "파랗습니다.", True), ("하늘은?", "초록색입니다.", False)]),
                   encoding="utf-8")
    rc, out, _ = run(capsys, kto, "--model", tok_dir, "--stage", "dpo")
    assert rc == 1 and "dpo.method: kto" in out
    rc, out, _ = run(capsys, kto, "--model", tok_dir, "--stage", "kto")
    assert rc == 0 and "Ready to train" in out
    rc, out, _ = run(capsys, FIX / "preference_columns.json", "--model", tok_dir, "--stage", "kto")
    assert rc == 0  # KTO takes pairs too


def test_under_pretraining_a_long_conversation_is_said_to_be_split_not_left_out(capsys, tok_dir, tmp_path):
    """A conversation whose question fills the cutoff is left out by SFT; pretraining trains its plain text in
    pieces, and the check said the SFT story (the row "left out", every row dropped: an error) under `--stage pt`."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "질문이 아주 깁니다. " * 40},
                                             {"role": "assistant", "content": "짧은 답."}]}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    rc, out, _ = run(capsys, chat, "--model", tok_dir, "--max-length", "32", "--json")
    assert rc == 1 and {"data.prompt_past_cutoff", "error.no_answer_within_cutoff"} <= {
        f["key"] for f in json.loads(out)["files"][0]["findings"]}
    rc, out, _ = run(capsys, chat, "--model", tok_dir, "--max-length", "32", "--stage", "pt", "--json")
    doc = json.loads(out)["files"][0]
    assert rc == 0 and [f["key"] for f in doc["findings"]] == ["data.too_long_split"]
    assert doc["findings"][0]["row"] is None and doc["findings"][0]["params"]["rows"] == "1"
    assert doc["stats"]["split"] and doc["stats"]["tokens_cut"] == 0
    weighted = tmp_path / "weighted.jsonl"  # no system prompt, nor an answer's weight, is pretraining's business
    weighted.write_text("\n".join(json.dumps({"messages": m}) for m in (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
         {"role": "assistant", "content": "A long enough answer."}],
        [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "Another answer here.", "weight": 0}],
    )) + "\n", encoding="utf-8")
    keys = {f["key"] for f in json.loads(run(capsys, weighted, "--model", tok_dir, "--json")[1])["files"][0]["findings"]}
    assert {"data.system_some_rows", "data.all_weight_zero"} <= keys
    doc = json.loads(run(capsys, weighted, "--model", tok_dir, "--stage", "pt", "--json")[1])["files"][0]
    assert not {"data.system_some_rows", "data.all_weight_zero"} & {f["key"] for f in doc["findings"]}


def test_a_file_read_in_no_format_says_so_in_its_header_line(capsys, tmp_path):
    """Its header read `sheet.xlsx: ? (?), 0 rows`."""
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    rc, out, _ = run(capsys, sheet, FIX / "unknown_columns.jsonl")
    assert rc == 1 and "? (?)" not in out
    assert f"{sheet}: no row could be read" in out and "unknown_columns.jsonl: 1 row, in no format" in out


def test_sft_trains_a_preference_pair_that_lacks_its_rejected_answer(capsys, tok_dir, tmp_path):
    """SFT trains a pair's prompt and chosen answer alone, yet a pair without `rejected` refused the whole file
    (Start stayed off) with a message about DPO. Under SFT and pretraining it is a warning and the row is kept;
    under DPO (and with no stage named) it stays the row's error."""
    pairs = [{"prompt": f"질문 {i}?", "chosen": f"좋은 답변 {i}입니다.", "rejected": f"나쁜 답 {i}."} for i in range(4)]
    del pairs[2]["rejected"]
    pairs[3]["rejected"] = " "
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    for stage in ("sft", "pt"):
        rc, out, _ = run(capsys, path, "--model", tok_dir, "--stage", stage, "--json")
        doc = json.loads(out)["files"][0]
        assert rc == 0 and doc["valid"] == 4 and doc["errors"] == 0
        assert [(f["row"], f["key"]) for f in doc["findings"] if f["field"] == "rejected"] == [
            (3, "data.rejected_unused_missing"), (4, "data.rejected_unused_missing")]
    for stage in ("dpo", None):
        rc, out, _ = run(capsys, path, "--model", tok_dir, *(("--stage", stage) if stage else ()), "--json")
        doc = json.loads(out)["files"][0]
        assert rc == 1 and doc["valid"] == 2
        assert [f["row"] for f in doc["findings"] if f["severity"] == "error"] == [3, 4]


def test_kto_answers_of_one_kind_are_said_and_refused_where_the_stage_drops_them(capsys, tok_dir, tmp_path):
    """All answers undesirable: `check --stage sft` said "Ready to train" and train then found no rows; `--stage
    kto` said nothing, and trl printed its advice on a weight Tuneboard does not show."""
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"질문 {i}", "completion": f"나쁜 답 {i}", "label": False},
                                       ensure_ascii=False) + "\n" for i in range(3)), encoding="utf-8")
    rc, out, _ = run(capsys, path, "--model", tok_dir, "--stage", "kto", "--json")
    doc = json.loads(out)["files"][0]
    assert rc == 0 and [(f["key"], f["params"]) for f in doc["findings"]] == [
        ("data.kto_one_kind", {"count": 3, "value": "false"})]
    rc, out, _ = run(capsys, path, "--model", tok_dir, "--stage", "sft")
    assert rc == 1 and "marked undesirable" in out and "SFT" in out
