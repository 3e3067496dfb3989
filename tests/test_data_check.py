"""The row-by-row check: every error and warning kind, at its exact row, line and field."""


import importlib
import json

import pytest
from world import FIX

from engine.data import check, check_file, inspect_path, summarize
from engine.messages import languages, message, table


def found(name, severity="error", **kw):
    _, result = inspect_path(str(FIX / name), **kw)
    return [(f.row, f.line, f.field, f.key) for f in result.findings if f.severity == severity]


def test_jsonl_errors_every_kind_with_line_numbers():
    # (row, line): line 3 is blank, so the rows after it are on the line after their number
    assert found("broken.jsonl") == [
        (2, 2, None, "data.unparseable"),
        (8, 9, None, "data.trailing_comma"),
        (3, 4, "output", "data.missing_field"),
        (4, 5, "output", "data.empty_field"),
        (6, 7, None, "data.not_an_object"),
        (9, 10, "instruction", "data.empty_field"),
    ]
    # a number where text belongs is read as its text, as a CSV cell `42` is (LLaMA-Factory trains it too), and said
    assert (5, 6, "output", "data.number_as_text") in found("broken.jsonl", "warning")


def test_json_array_errors_give_the_index_and_the_start_line():
    assert found("broken_array.json") == [
        (None, 8, None, "data.trailing_comma"),
        (2, 3, "output", "data.missing_field"),
        (3, 4, "output", "data.wrong_type"),
    ]


def test_conversation_errors():
    got = found("broken_sharegpt.jsonl")
    assert got == [
        (1, 1, "conversations", "data.starts_with_assistant"),
        (2, 2, "conversations", "data.not_alternating"),
        (3, 3, "conversations", "data.ends_without_answer"),
        (4, 4, "conversations", "data.unknown_role"),
        (5, 5, "conversations", "data.system_not_first"),
        (6, 6, "conversations", "data.empty_message"),
    ]
    _, result = inspect_path(str(FIX / "broken_sharegpt.jsonl"))
    by_row = {f.row: f.params for f in result.findings}
    assert by_row[2] == {"index": 2, "role": "user", "who": "role.user"} and by_row[4]["role"] == "narrator"
    assert by_row[5] == {"index": 3}
    # the role is said in the reader's language ("a second user message" stayed English in Korean)
    said = next(f for f in result.findings if f.row == 2).message("ko")
    assert "두 번째 사용자 메시지" in said and "user" not in said


def test_preference_errors():
    assert found("broken_preference.jsonl") == [
        (2, 2, "rejected", "data.missing_rejected"),
        (3, 3, "output", "data.preference_pair"),
        (4, 4, "prompt", "data.prompt_ends_with_assistant"),
    ]


def test_csv_errors_give_the_spreadsheets_row_and_the_line():
    """The header is row 1, as a spreadsheet shows it; row 2's cell holds two line breaks, so row 3 starts on line
    5 (its line was said as its row: "row 12" of a 10-row file)."""
    assert found("broken.csv") == [(3, 5, None, "data.csv_field_count"), (4, 6, "output", "data.empty_field")]


def test_mixed_types_and_nested_columns_never_crash():
    assert found("mixed_types.jsonl") == [
        (3, 3, "instruction", "data.wrong_type"),
        (4, 4, "output", "data.wrong_type"),
        (5, 5, "input", "data.wrong_type"),  # a boolean is no text
    ]
    assert found("mixed_types.jsonl", "warning") == [(2, 2, "instruction", "data.number_as_text"),
                                                     (None, None, None, "data.ignored_columns")]


def test_unknown_columns_suggest_the_nearest_format_and_a_mapping():
    _, result = inspect_path(str(FIX / "unknown_columns.jsonl"))
    [f] = result.findings
    assert (f.row, f.severity, f.key) == (None, "error", "data.unknown_columns")
    assert f.params["format"] == "alpaca" and f.params["mapping"] == "instruction=question, output=answer"
    assert "question" in f.message() and "instruction=question" in f.message()


def test_empty_files_and_not_a_list():
    assert found("empty.jsonl") == [(None, None, None, "data.empty_file")]
    assert found("not_a_list.json") == [(None, None, None, "data.json_not_list")]
    assert [f.key for f in check([])] == ["data.empty_file"]


def test_mapped_columns_are_named_as_the_file_names_them(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"question": "q", "answer": ""}\n', encoding="utf-8")
    assert found(str(p), columns={"instruction": "question", "output": "answer"}) == [(1, 1, "answer", "data.empty_field")]


def test_a_mapping_to_another_formats_field_reads_the_file_in_that_format(tmp_path):
    """`--column text=output` on alpaca rows (train the answers as plain text) was read as alpaca, then refused for
    lacking the `output` the mapping had taken."""
    p = tmp_path / "a.jsonl"
    p.write_text('{"instruction": "질문", "output": "긴 답변 하나"}\n{"instruction": "q", "output": "a longer answer"}\n',
                 encoding="utf-8")
    _, result = inspect_path(str(p), columns={"text": "output"}, stage="pt")
    assert result.format == "text" and [r["text"] for r in result.records] == ["긴 답변 하나", "a longer answer"]
    assert [f.key for f in result.findings] == ["data.ignored_columns"]
    _, result = inspect_path(str(p), columns={"instruction": "output"})  # a field the detected format has: kept
    assert result.format == "alpaca"


def test_an_unused_column_named_as_an_optional_field_is_said_with_its_mapping():
    """OpenHermes' `system_prompt` was the 13th of 15 unused columns, cut from the list without a word."""
    wide = {f"meta_{i}": i for i in range(14)}
    rows = [{"instruction": "q", "output": "a long enough answer", **wide, "system_prompt": "You are a pirate."}] * 2
    found = check(rows)
    [listed] = [f.params["columns"] for f in found if f.key == "data.ignored_columns"]
    assert listed.startswith("system_prompt, meta_0, ") and listed.endswith(", ... (+3)")
    assert [(f.field, f.params) for f in found if f.key == "data.unused_column_maps"] == [
        ("system_prompt", {"ours": "system", "column": "system_prompt"})]
    assert not [f for f in check(rows, columns={"system": "system_prompt"}) if f.key == "data.unused_column_maps"]


def test_warnings_duplicates_short_answers_system_prompt_and_length():
    _, result = inspect_path(str(FIX / "warnings.jsonl"), max_length=64)
    warnings = {f.key: f for f in result.findings if f.severity == "warning"}
    assert not [f for f in result.findings if f.severity == "error"]
    assert (warnings["data.duplicate"].row, warnings["data.duplicate"].params) == (2, {"first": 1})
    assert (warnings["data.short_answer"].row, warnings["data.short_answer"].field) == (3, "output")
    assert warnings["data.system_some_rows"].params == {"count": 1, "total": 6}
    long = warnings["data.too_long"].params
    assert long["count"] == 1 and long["rows"] == "5" and long["total"] == 6 and long["longest"] > 64
    assert long["p50"] <= long["p90"] <= long["p99"] <= long["longest"]
    assert len([f for f in result.findings if f.key == "data.short_answer"]) == 1  # "밤" is one word, not short


def test_good_files_have_no_errors():
    for name in ("alpaca.json", "alpaca_bom_crlf.jsonl", "sharegpt.json", "messages.jsonl", "prompt_completion.jsonl",
                 "preference_columns.json", "preference_messages.jsonl", "preference_alpaca.json", "text_blocks.txt",
                 "text_lines.txt", "text.jsonl", "alpaca.csv", "alpaca.tsv", "json_that_is_jsonl.json", "wrapped.json"):
        report = check_file(str(FIX / name), max_length=4096)
        assert report.errors == 0 and report.trainable, (name, [f.to_dict() for f in report.findings])


def test_the_check_never_stops_early_and_summarises_per_kind():
    rows = [{"instruction": f"q{i}", "output": ""} for i in range(100)] + [{"instruction": "x"}] * 3
    findings = check(rows, "alpaca")
    assert len(findings) == 103
    kept, counts = summarize(findings, limit=5)
    assert counts == {"data.empty_field": 100, "data.missing_field": 3}
    assert [f.row for f in kept if f.key == "data.empty_field"] == [1, 2, 3, 4, 5]
    report = check_file(str(FIX / "broken.jsonl"), limit=1)
    assert report.errors == 6 and report.counts["data.unparseable"] == 1 and not report.trainable


def test_numbers_strings_and_nulls_in_arbitrary_rows():
    rows = [None, 3, "text", [], {"instruction": None, "output": None}, {"instruction": 1.5, "output": True},
            {"conversations": "not a list"}, {"conversations": [1, 2]}]
    findings = check(rows, "alpaca") + check(rows, "sharegpt") + check(rows)  # none raise
    assert findings and all(f.severity == "error" for f in findings if f.row in (1, 2, 3, 4))


@pytest.mark.parametrize("lang", ["en", "ko", "zh", "ja", "ru"])
def test_every_data_key_is_translated_and_formats(lang):
    keys = [k for k in table("en") if k.startswith("data.")]
    assert len(keys) > 40 and lang in languages()
    for key in keys:
        assert key in table(lang), key
        text = message(key, {p: "X" for p in ("row", "line", "field", "path", "count", "total", "first", "index", "role",
                                                "roles", "expected", "got", "error", "column", "encoding", "keys",
                                                "lengths", "name", "ext", "supported", "format", "formats", "columns",
                                                "mapping", "answer", "max_length", "longest", "p50", "p90", "p99",
                                                "rows", "val_size", "value", "kind", "errors", "warnings", "estimated",
                                                "min", "max", "over", "cut", "packed", "tokens", "loss", "ours",
                                                "others", "split", "splits", "trees", "left", "size", "title", "who", "stages",
                                                "rank", "fields", "orient")}, lang)
        assert "{" not in text.replace("{...}", ""), (lang, key, text)


def test_our_column_names_in_other_case_or_with_spaces_are_read_and_said(tmp_path):
    """A header of `Instruction , Input,OUTPUT` (Excel users capitalise) was refused with a mapping to type."""
    p = tmp_path / "caps.csv"
    p.write_text("Instruction ,Input,OUTPUT\nQ1,,A1\nQ2,ctx,\n", encoding="utf-8")
    _, result = inspect_path(str(p))
    assert result.format == "alpaca" and len(result.good) == 1
    said = [f for f in result.findings if f.key == "data.columns_by_name"]
    assert len(said) == 1 and "OUTPUT → output" in said[0].message("en")
    [empty] = [f for f in result.findings if f.key == "data.empty_field"]
    assert (empty.row, empty.field) == (3, "OUTPUT")  # said in the file's own name for the column
    both = tmp_path / "both.jsonl"  # a file that also has the exact name keeps it
    both.write_text('{"instruction": "q", "Instruction": "other", "output": "a"}\n', encoding="utf-8")
    _, result = inspect_path(str(both))
    assert result.good[0]["messages"][0]["content"] == "q"
    assert not [f for f in result.findings if f.key == "data.columns_by_name"]


def test_spreadsheet_error_cells_are_said_at_their_row_and_a_json_list_of_texts_is_a_corpus(tmp_path):
    """#N/A and #VALUE! answers (an Excel export whose formulas failed) trained without a word; a JSON array of
    strings was shown as text yet had every row refused, for pretraining too."""
    p = tmp_path / "sheet.csv"
    p.write_text("instruction,output\nQ1,A1\nQ2,#N/A\nQ3, #VALUE! \n", encoding="utf-8")
    _, result = inspect_path(str(p))
    said = [(f.severity, f.row, f.field, f.params["value"]) for f in result.findings if f.key == "data.spreadsheet_error"]
    assert said == [("warning", 3, "output", "#N/A"), ("warning", 4, "output", "#VALUE!")]
    docs = tmp_path / "docs.json"
    docs.write_text('["첫 문서입니다.", "The second document."]', encoding="utf-8")
    _, result = inspect_path(str(docs))
    assert result.format == "text" and [r["text"] for r in result.good] == ["첫 문서입니다.", "The second document."]
    assert not [f for f in result.findings if f.severity == "error"]


def test_a_required_column_missing_everywhere_is_named_once_with_a_mapping(tmp_path):
    p = tmp_path / "dolly.csv"
    p.write_text("instruction,context,response,category\nQ,,A long answer,qa\nQ2,ctx,Another answer,qa\n")
    _, result = inspect_path(str(p))
    [col] = [f for f in result.findings if f.key == "data.missing_column"]
    # with Dolly's context as the input: mapping the answer alone trained "Summarize the text." without the text
    assert (col.row, col.field, col.params["mapping"]) == (None, "output", "output=response, input=context")
    assert [f.row for f in result.findings if f.key == "data.missing_field"] == [2, 3]
    assert col.params["columns"] == "instruction, context, response, category"
    # a mapping's column is named as the file names it: `question`, not the `instruction` it was read as
    rows = [{"question": "한국의 수도?", "answer": "서울"}, {"question": "2+2?", "answer": "4입니다"}]
    [col] = [f for f in check(rows, columns={"instruction": "question", "output": "response"})
             if f.key == "data.missing_column"]
    assert (col.field, col.params["columns"], col.params["mapping"]) == ("response", "question, answer", "output=answer")


def test_a_preference_file_without_a_prompt_column_is_told_which_column_to_map():
    """Intel/orca_dpo_pairs: system, question, chosen, rejected; a file-level error names `prompt=question`."""
    rows = [{"system": "", "question": f"What is {i}+{i}?", "chosen": str(2 * i), "rejected": "5"} for i in range(3)]
    [col] = [f for f in check(rows) if f.key == "data.missing_column"]
    assert (col.row, col.field, col.params["mapping"]) == (None, "prompt", "prompt=question")
    assert not [f for f in check(rows, columns={"prompt": "question"}) if f.severity == "error"]
    talks = [{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Good answer."}],
              "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Bad answer."}]}]
    assert not [f for f in check(talks) if f.severity == "error"]  # the prompt inside the pair: no column missing
    odd = {"chosen": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "Good answer."}],
           "rejected": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "Bad answer."}]}
    found = check(talks + [odd])  # one pair whose prompts differ: that row's error, not a column no row has
    assert [(f.row, f.key) for f in found if f.severity == "error"] == [(2, "data.pair_prompts_differ")]
    pair = [{"instruction": "Q", "output": ["Good answer.", "Bad answer."]}]  # alpaca's pair: no chosen column
    assert not [f for f in check(pair) if f.severity == "error"]


def test_a_list_of_messages_per_line_is_one_conversation():
    rows = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]]
    result_findings = check(rows)
    assert not result_findings


def test_rows_the_models_template_refuses_are_errors():
    from engine.data import analyze
    from engine.demo import build_tokenizer

    tok = build_tokenizer(["hello"] * 3, vocab_size=270)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    rows = [{"instruction": "a", "output": "bbb"}, {"instruction": "c", "output": "ddd", "system": "s"}]
    result = analyze(rows, tokenizer=tok)
    [f] = [f for f in result.findings if f.severity == "error"]
    assert (f.row, f.key) == (2, "data.template_error") and "System role not supported" in f.params["error"]


def test_random_junk_rows_never_raise():
    import random

    rng = random.Random(0)
    atoms = [None, True, 0, 1.5, 2**70, "", " ", "x", "한국어 😀", "\ud800", "[", '[{"role":"user","content":"hi"}]']
    keys = ["instruction", "input", "output", "system", "history", "conversations", "messages", "prompt", "completion",
            "chosen", "rejected", "text", "from", "value", "role", "content", "tool_calls"]

    def value(depth=0):
        r = rng.random()
        if depth > 2 or r < 0.4:
            return rng.choice(atoms)
        if r < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if r < 0.8:
            return [{rng.choice(["from", "role"]): rng.choice(["human", "gpt", "user", "tool", "x", None]),
                     rng.choice(["value", "content"]): rng.choice(atoms + ["hello"])} for _ in range(rng.randint(0, 4))]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 3))}

    for _ in range(150):
        rows = [{rng.choice(keys): value() for _ in range(rng.randint(0, 4))} for _ in range(rng.randint(1, 6))]
        for fmt in ("auto", "alpaca", "sharegpt", "messages", "prompt_completion", "preference", "text"):
            check(rows, fmt, max_length=16)


def test_checking_without_a_tokenizer_imports_no_ml_library():
    """The board's data tab calls check_file in its own process: it must stay free of torch & co."""
    import subprocess
    import sys

    code = ("import sys; from engine.data import check_file; r = check_file('demo:sft'); "
            "assert r.trainable and r.stats['counting'] == 'estimate'; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=FIX.parents[2], timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_long_texts_are_announced_as_split_not_cut(tmp_path):
    p = tmp_path / "notes.jsonl"
    p.write_text('{"text": "short note"}\n' + '{"text": "%s"}\n' % ("a long line of text " * 60), encoding="utf-8")
    _, result = inspect_path(str(p), max_length=64)
    keys = {f.key: f.params for f in result.findings}
    assert "data.too_long" not in keys and keys["data.too_long_split"]["count"] == 1


def test_openai_weights_are_read_and_wrong_ones_refused_at_their_row():
    """OpenAI's per-answer `weight`: 0 keeps an answer as context only; anything but 0 or 1 on an answer is an error;
    on other messages it is left aside, as OpenAI does."""
    assert found("openai_weights.jsonl") == [(4, 4, "messages", "data.bad_weight"),
                                             (5, 5, "messages", "data.bad_weight")]
    assert (2, 2, "messages", "data.all_weight_zero") in found("openai_weights.jsonl", "warning")
    _, result = inspect_path(str(FIX / "openai_weights.jsonl"))
    bad = {f.row: f.params for f in result.findings if f.key == "data.bad_weight"}
    assert bad[4] == {"index": 2, "value": "0.5"} and bad[5]["value"] == '"yes"'
    assert "weight" not in result.records[2]["messages"][0]  # on a question it means nothing: left aside
    first = result.records[0]["messages"]
    assert first[2] == {"role": "assistant", "content": "Paris", "weight": 0} and "weight" not in first[4]


def test_a_file_whose_every_answer_has_weight_0_is_an_error_where_only_answers_train(tmp_path):
    """`check` said "Ready to train" (a warning a row) and training then failed at step 0 with a run folder made."""
    path = tmp_path / "w0.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": "context", "weight": 0}]}) + "\n"
                            for i in range(3)), encoding="utf-8")
    report = check_file(str(path), tokenizer=None)
    assert report.errors == 1 and [(f.row, f.key, f.params) for f in report.findings if f.severity == "error"] == [
        (None, "data.every_answer_weight_zero", {"rows": 3})]
    assert check_file(str(path), tokenizer=None, assistant_only=False).errors == 0  # every token trains
    assert check_file(str(path), tokenizer=None, stage="pt").errors == 0
    path.write_text(path.read_text() + json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                 {"role": "assistant", "content": "learnt"}]}) + "\n")
    assert check_file(str(path), tokenizer=None).errors == 0  # one row to learn from is enough


def _found_in(path, severity="error"):
    _, result = inspect_path(str(path))
    return [(f.row, f.field, f.key) for f in result.findings if f.severity == severity]


def test_answers_that_are_json_text_stay_text(tmp_path):
    """A model taught to answer in JSON: completions, prompts and preference answers holding JSON are text."""
    p = tmp_path / "json_answers.jsonl"
    rows = [{"prompt": "이름과 나이를 JSON으로", "completion": '{"name": "김철수", "age": 30}'},
            {"prompt": "[1, 3, 2] sorted?", "completion": "[1, 2, 3]"},
            {"prompt": '[{"role": "user", "content": "hi"}]', "completion": "hello"}]  # real messages: parsed
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    _, result = inspect_path(str(p))
    assert [f for f in result.findings if f.severity == "error"] == []
    assert [r["completion"][0]["content"] for r in result.good] == ['{"name": "김철수", "age": 30}', "[1, 2, 3]", "hello"]
    assert [r["prompt"] for r in result.good][1:] == [[{"role": "user", "content": "[1, 3, 2] sorted?"}],
                                                    [{"role": "user", "content": "hi"}]]
    q = tmp_path / "pref_json.jsonl"
    q.write_text(json.dumps({"prompt": "JSON please", "chosen": '{"ok": true}', "rejected": "[1]"}), encoding="utf-8")
    assert _found_in(q) == []


def test_identical_chosen_and_rejected_are_flagged_and_all_of_them_refused(tmp_path):
    p = tmp_path / "pref.jsonl"
    rows = [{"prompt": "같은 답?", "chosen": "동일합니다.", "rejected": "동일합니다. "},
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert _found_in(p, "warning") == [(1, "rejected", "data.same_answers")] and _found_in(p) == []
    p.write_text(json.dumps(rows[0], ensure_ascii=False), encoding="utf-8")
    assert _found_in(p) == [(None, "rejected", "data.all_same_answers")]


def test_alpaca_input_alone_is_a_prompt(tmp_path):
    """As LLaMA-Factory builds it: instruction + input, either of them may be empty or absent."""
    p = tmp_path / "a.jsonl"
    p.write_text('{"instruction": "", "input": "본문", "output": "요약"}\n{"input": "글", "output": "요약2"}\n'
                 '{"instruction": "", "input": "", "output": "x"}\n', encoding="utf-8")
    _, result = inspect_path(str(p))
    assert _found_in(p) == [(3, "instruction", "data.empty_field")]
    assert [r["messages"][0]["content"] for r in result.good] == ["본문", "글"]


def test_rows_whose_prompt_fills_the_cutoff_are_said_to_be_left_out_as_training_does(tmp_path):
    p = tmp_path / "long.jsonl"
    long_prompt = " ".join(["word"] * 400)
    p.write_text(json.dumps({"instruction": "short", "output": "fine"}) + "\n"
                 + json.dumps({"instruction": long_prompt, "output": "lost"}) + "\n"
                 + json.dumps({"instruction": "short again", "output": " ".join(["long"] * 400)}) + "\n",
                 encoding="utf-8")
    _, result = inspect_path(str(p), max_length=64)
    said = [(f.row, f.key) for f in result.findings]
    assert (2, "data.prompt_past_cutoff") in said and (3, "data.prompt_past_cutoff") not in said
    assert next(f for f in result.findings if f.key == "data.too_long").params["count"] == 1  # row 3: cut
    # the file's summary as well: one row cut, one left out, all of its tokens dropped (it said "2 rows cut")
    report = check_file(str(p), max_length=64)
    s, lengths = report.stats, result.lengths
    assert (s["over_cutoff"], s["left_out"]) == (2, 1) and s["tokens_cut"] == lengths[1] + lengths[2] - 64
    assert s["packed_sequences"] == -(-(lengths[0] + 64) // 64)
    p.write_text(json.dumps({"instruction": long_prompt, "output": "lost"}) + "\n", encoding="utf-8")
    _, result = inspect_path(str(p), max_length=64)
    assert [(f.severity, f.key) for f in result.findings if f.severity == "error"] == [
        ("error", "error.no_answer_within_cutoff")]


def test_past_the_exactly_counted_prompts_rows_left_out_are_still_told_and_all_of_them_refused(monkeypatch):
    """A large file of long prompts: rows past the ones rendered exactly are judged by an estimate, so a file where
    no row keeps an answer is refused whatever its size, and no left-out row is called merely cut."""
    monkeypatch.setattr(importlib.import_module("engine.data.check"), "EXACT_PROMPTS", 3)
    long_prompt = " ".join(["word"] * 400)
    rows = [{"instruction": long_prompt, "output": "lost"}] * 8
    found = check(rows, max_length=64)
    assert [f.key for f in found if f.severity == "error"] == ["error.no_answer_within_cutoff"]
    assert sum(f.key == "data.prompt_past_cutoff" for f in found) == 8 and not any(f.key == "data.too_long" for f in found)
    rows[5] = {"instruction": "short", "output": " ".join(["long"] * 400)}  # past the exact ones: cut, kept
    found = check(rows, max_length=64)
    assert not [f for f in found if f.severity == "error"]
    assert [f.params["rows"] for f in found if f.key == "data.too_long"] == ["6"]


def test_a_boolean_weight_is_refused_like_any_other_non_0_or_1(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello", "weight": True}]}) + "\n")
    assert _found_in(p) == [(1, "messages", "data.bad_weight")]


def test_fields_of_only_invisible_characters_are_empty():
    """A zero-width space, a BOM, a word joiner or a Hangul filler draws nothing: training on it teaches nothing."""
    invisible = ["\u200b", "\ufeff", "\u2060\u2060", "\u3164", "\u115f\u1160", "\u200c\u200d", " \u200b\u3000 "]
    rows = [{"instruction": f"질문 {i}", "output": v} for i, v in enumerate(invisible)]
    rows.append({"instruction": "\u200b", "output": "답"})
    rows.append({"instruction": "보이는 글", "output": "\u200b보임"})  # text with a zero-width space in it is fine
    found = [(f.row, f.field, f.key) for f in check(rows, "alpaca") if f.severity == "error"]
    assert found == [(i, "output", "data.empty_field") for i in range(1, 8)] + [(8, "instruction", "data.empty_field")]
    conv = [{"conversations": [{"from": "human", "value": "안녕"}, {"from": "gpt", "value": "\u200b"}]}]
    assert [f.key for f in check(conv, "sharegpt")] == ["data.empty_message"]


def test_a_message_whose_text_is_a_list_of_strings_says_so():
    rows = [{"conversations": [{"from": "human", "value": ["질문 1", "질문 2"]}, {"from": "gpt", "value": "답"}]}]
    (f,) = check(rows, "sharegpt")
    assert (f.key, f.params["index"], f.params["got"]) == ("data.wrong_type_in_message", 1, "type.list")


def test_a_column_mapping_that_names_no_column_is_told():
    rows = [{"instruction": "q", "output": "a much longer answer than that"}] * 2
    found = [(f.severity, f.field, f.params["ours"]) for f in check(rows, columns={"output": "answer"})
             if f.key == "data.mapped_column_missing"]
    assert found == [("warning", "answer", "output")]
    assert not [f for f in check(rows, columns={"output": "output"}) if f.key == "data.mapped_column_missing"]


def test_rows_that_are_not_objects_are_not_also_told_a_missing_column():
    for rows in ([1, 2, 3], ["hello", 4]):  # (texts alone are a corpus: see the spreadsheet-error test)
        assert {f.key for f in check(rows)} == {"data.not_an_object"}


def test_with_no_column_to_suggest_the_mapping_shows_its_form_not_a_dash():
    [f] = [f for f in check([{"instruction": "q", "zzz": 1}] * 2, "alpaca") if f.key == "data.missing_column"]
    assert f.params["mapping"] == "output=..." and not f.message("ko").endswith(": -")


def test_an_empty_document_in_a_corpus_is_left_out_with_a_warning():
    """A web dump's empty page refused the whole pretraining file; it is left out, said at its row (wikitext's
    blank lines, a third of its rows, once)."""
    from engine.data.check import analyze

    rows = [{"text": "첫 문서입니다."}, {"text": ""}, {"text": None}, {"text": "   "}, {"text": "The last one."}]
    out = analyze(rows, measure=False)
    assert out.format == "text" and out.errors == 0
    assert [(f.row, f.field, f.key, f.severity, f.params) for f in out.findings] == [
        (None, "text", "data.empty_texts_skipped", "warning", {"count": 3, "total": 5, "rows": "2, 3, 4"})]
    assert [r["text"] for r in out.good] == ["첫 문서입니다.", "The last one."]
    out = analyze(rows[:2] + rows[4:], measure=False)  # one: said at its row
    assert [(f.row, f.key) for f in out.findings] == [(2, "data.empty_text_skipped")]
    convo = analyze([{"instruction": "q", "output": ""}], measure=False)  # an empty answer stays an error
    assert convo.errors == 1


def test_unknown_columns_are_matched_to_a_format_the_stage_trains(tmp_path):
    """SHP-like columns under `--stage dpo` were told to map to alpaca, which DPO then refused."""
    from engine.data import check_file

    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"question": "Q?", "answer_a": "Good.", "answer_b": "Bad."}) + "\n", encoding="utf-8")
    [f] = [f for f in check_file(str(p)).findings if f.key == "data.unknown_columns"]
    assert f.params["format"] == "alpaca" and "instruction=question" in f.params["mapping"]
    [f] = [f for f in check_file(str(p), stage="dpo").findings if f.key == "data.unknown_columns"]
    assert f.params["format"] == "preference" and f.params["mapping"].startswith("prompt=question")


def test_each_wrong_history_pair_is_said_by_its_item_number_and_an_empty_turn_is_refused():
    """An empty answer in alpaca's history once passed the check and trained the model to answer with nothing
    (a conversation's empty turn was already an error); a flat ["q", "a"] was said to be 'a list, not a list'."""
    row = {"instruction": "질문", "output": "답변입니다"}
    histories = [[["q1", ""]], [["q1", "a1"], ["  ", "a2"]], ["q1", "a1"], [["q1", "a1", "x"]], [[None, "a"]],
                 [["q1", 3]], "not json", [["q1", "a1"]]]
    findings = check([dict(row, history=h) for h in histories], "alpaca")
    said = {f.row: (f.key, f.params.get("index"), f.field) for f in findings if f.severity == "error"}
    assert said == {1: ("data.history_empty_answer", 1, "history"), 2: ("data.history_empty_question", 2, "history"),
                    3: ("data.history_not_pair", 1, "history"), 4: ("data.history_pair_size", 1, "history"),
                    5: ("data.history_empty_question", 1, "history"), 6: ("data.history_wrong_type", 1, "history"),
                    7: ("data.wrong_type", None, "history")}
    by_row = {f.row: f for f in findings}
    assert by_row[3].message("en") == "Item 1 of history should be a [question, answer] pair, but it is text"
    assert by_row[4].message("ko") == "history의 1번째 항목에 값이 3개 있습니다. [질문, 답변] 쌍은 값이 2개입니다"


def test_a_row_of_another_format_is_said_as_one(tmp_path):
    """A file mixing alpaca rows with a ShareGPT and a text row said "the field instruction is missing" at those
    rows, and listed their fields as unused columns."""
    p = tmp_path / "mixed.jsonl"
    rows = [{"instruction": "q", "output": "a"}] * 3 + [{"conversations": [{"from": "human", "value": "q"}]},
                                                        {"text": "a document"}, {"instruction": "q"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    _, result = inspect_path(str(p))
    said = [(f.row, f.key, f.params.get("format")) for f in result.findings if f.severity == "error"]
    assert said == [(4, "data.row_other_format", "sharegpt"), (5, "data.row_other_format", "text"),
                    (6, "data.missing_field", None)]  # an alpaca row without its answer is that


def test_a_file_of_lists_is_in_no_format(tmp_path):
    """[["q", "a"], ...] was headed "text (plain-text language modeling)" above its errors."""
    p = tmp_path / "lists.json"
    p.write_text('[["q", "a"], ["q2", "a2"]]', encoding="utf-8")
    _, result = inspect_path(str(p))
    assert result.format is None and [f.key for f in result.findings] == ["data.not_an_object"] * 2


def test_kto_conversations_short_answer_is_said_in_their_own_field(tmp_path):
    """KTO rows as LLaMA-Factory writes them (messages + kto_tag) had a short answer said "in completion", a field
    the file does not have."""
    p = tmp_path / "kto.jsonl"
    rows = [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": a}], "label": ok}
            for a, ok in (("4 is the answer.", True), ("5", False))]
    p.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert found(str(p), "warning") == [(2, 2, "messages", "data.short_answer")]
