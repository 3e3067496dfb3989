"""Reading data files: every container, encoding and syntax error, with the row numbers a person sees."""

import gzip
import json
from pathlib import Path

import pytest
from world import FIX, hub_unreachable

from engine.data import read_source, resolve_data_path
from engine.data.sources import is_hub_name


def keys(src):
    return [(f.row, f.line, f.key) for f in src.findings]


def test_json_array_rows_know_their_start_lines():
    src = read_source(str(FIX / "alpaca.json"))
    assert src.kind == "json" and len(src.rows) == 4 and not src.findings
    assert src.numbers == [1, 2, 3, 4]
    text = (FIX / "alpaca.json").read_text(encoding="utf-8").split("\n")
    for line in src.lines:  # each row's line is where its `{` is
        assert text[line - 1].strip() == "{"
    assert src.rows[1]["input"] == "我喜欢猫 🐱"


def test_jsonl_with_bom_and_crlf_keeps_unicode_and_line_numbers():
    src = read_source(str(FIX / "alpaca_bom_crlf.jsonl"))
    assert src.kind == "jsonl" and not src.findings
    assert src.numbers == [1, 2, 3, 4]
    assert src.rows[0]["instruction"] == "한국의 수도는 어디인가요?"
    assert src.rows[1]["output"] == "I like cats 🐱."
    assert not any("\r" in v for r in src.rows for v in r.values() if isinstance(v, str))


def test_jsonl_bad_lines_are_reported_and_reading_goes_on():
    src = read_source(str(FIX / "broken.jsonl"))
    assert keys(src) == [(2, 2, "data.unparseable"), (8, 9, "data.trailing_comma")]
    # blank line 3 is no row: the rows after it are numbered among the rows, each with its line (a check said
    # "row 9" of the 7th record, and a reader who opened the 9th record found another)
    assert src.numbers == [1, 3, 4, 5, 6, 7, 9] and src.lines == [1, 4, 5, 6, 7, 8, 10]


def test_json_array_trailing_comma_before_closing_bracket_names_the_line():
    src = read_source(str(FIX / "broken_array.json"))
    assert keys(src) == [(None, 8, "data.trailing_comma")]
    assert src.numbers == [1, 2, 3, 4] and src.lines == [2, 3, 4, 8]


def test_json_array_syntax_error_inside_a_row_resumes_at_the_next_row(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"},\n'
                 '  {"instruction": "e", "output": "f"}\n]\n', encoding="utf-8")
    src = read_source(str(p))
    assert [(f.row, f.line, f.key) for f in src.findings] == [(2, 3, "data.unparseable")]
    assert [r["instruction"] for r in src.rows] == ["a", "e"] and src.numbers == [1, 3] and src.lines == [2, 4]


def test_trailing_comma_inside_an_object_is_named(tmp_path):
    p = tmp_path / "obj.json"
    p.write_text('[\n {"instruction": "a",\n  "output": "b",\n }\n]\n', encoding="utf-8")
    assert keys(read_source(str(p))) == [(1, 3, "data.trailing_comma")]


def test_dict_of_columns_is_read_as_rows():
    src = read_source(str(FIX / "preference_columns.json"))
    assert not src.findings and len(src.rows) == 3
    assert src.rows[1] == {"prompt": "하늘은 무슨 색인가요?", "chosen": "하늘은 파란색입니다.", "rejected": "모르겠어요."}


def test_unequal_columns_and_non_list_objects_are_errors(tmp_path):
    p = tmp_path / "cols.json"
    p.write_text(json.dumps({"prompt": ["a", "b"], "chosen": ["c"], "rejected": ["d", "e"]}), encoding="utf-8")
    src = read_source(str(p))
    assert keys(src) == [(None, None, "data.columns_unequal")] and "chosen: 1" in src.findings[0].params["lengths"]
    src = read_source(str(FIX / "not_a_list.json"))
    assert keys(src) == [(None, None, "data.json_not_list")] and src.findings[0].params["keys"] == "name, version"


def test_a_json_file_that_is_really_jsonl_and_a_wrapped_list():
    src = read_source(str(FIX / "json_that_is_jsonl.json"))
    assert src.kind == "jsonl" and src.numbers == [1, 2] and not src.findings
    src = read_source(str(FIX / "wrapped.json"))
    assert len(src.rows) == 2 and not src.findings


def test_a_single_row_object_is_read_with_a_warning(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}))
    src = read_source(str(p))
    assert len(src.rows) == 1 and [(f.severity, f.key) for f in src.findings] == [("warning", "data.single_object")]


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them_with_their_start_lines():
    src = read_source(str(FIX / "alpaca.csv"))
    # the header is row 1; row 2 spans lines 2-3 (a quoted line break), so row 3 starts on line 4
    assert not src.findings and src.numbers == [2, 3, 4] and src.lines == [2, 4, 5]
    assert src.rows[0]["output"] == "Line one,\nline two." and src.rows[0]["instruction"] == "Write two lines."
    assert src.rows[2]["input"] == 'He said "hi"'
    src = read_source(str(FIX / "broken.csv"))
    assert keys(src) == [(3, 5, "data.csv_field_count")] and src.numbers == [2, 4, 5] and src.lines == [2, 6, 7]


def test_csv_files_joined_with_cat_skip_the_second_header_and_say_so(tmp_path):
    """Two exports joined with `cat` (each with Excel's BOM) trained the second header as a row, silently."""
    part = "\ufeffinstruction,output\n" + "".join(f"q{i},a{i}\n" for i in range(3))
    p = tmp_path / "joined.csv"
    p.write_bytes((part + part).encode("utf-8"))
    src = read_source(str(p))
    assert [r["output"] for r in src.rows] == ["a0", "a1", "a2"] * 2 and src.lines == [2, 3, 4, 6, 7, 8]
    assert [(f.severity, f.key, f.line) for f in src.findings] == [("warning", "data.csv_header_again", 5)]


def test_csv_rows_ending_in_a_comma_are_read_without_the_empty_cell_and_said(tmp_path):
    """`q1,answer one,` under a header of two columns refused the whole file ("in no format Tuneboard knows")."""
    p = tmp_path / "trailing.csv"
    p.write_text("instruction,output\nq1,answer one,\nq2,\"answer, two\", \nq3,answer three\nq4,a4,x\n",
                 encoding="utf-8")
    src = read_source(str(p))
    assert [r["output"] for r in src.rows] == ["answer one", "answer, two", "answer three"]
    assert [(f.severity, f.key, f.row, f.params) for f in src.findings] == [
        ("error", "data.csv_field_count", 5, {"expected": 2, "got": 3}),  # a cell with something in it: not dropped
        ("warning", "data.csv_trailing_cells", None, {"count": 2, "expected": 2})]


def test_a_json_array_cut_short_is_said_to_be_cut_short(tmp_path):
    """A file cut inside its last row was "a comma is missing between two items"; one cut after its last row,
    "a comma or ] is expected" on a line past the file's end."""
    p = tmp_path / "cut.json"
    p.write_text('[\n  {"instruction": "q", "output": "answer"},\n  {"instruction": "q2", "output": "answer"', encoding="utf-8")
    src = read_source(str(p))
    assert [(f.row, f.line, f.params["error"]) for f in src.findings] == [(2, 3, "json.file_ends_early")]
    p.write_text('[\n  {"instruction": "q", "output": "answer"},\n  {"instruction": "q2", "output": "answer"}\n',
                 encoding="utf-8")
    src = read_source(str(p))
    assert len(src.rows) == 2 and [(f.line, f.params["error"]) for f in src.findings] == [(3, "json.ends_before_bracket")]


def test_excel_unicode_text_is_read_as_the_table_it_is(tmp_path):
    """Excel's "Unicode Text (*.txt)" (UTF-16 with a BOM, tab-separated, CRLF), the usual way a Korean Windows user
    gets UTF-16, was read as plain text: SFT refused it, pretraining trained its header and tabs."""
    table = "instruction\tinput\toutput\r\n" + "".join(f"질문 {i}\t\t답변 {i}\r\n" for i in range(4))
    p = tmp_path / "sheet.txt"
    p.write_bytes(table.encode("utf-16"))
    src = read_source(str(p))
    assert src.kind == "csv" and src.rows[3] == {"instruction": "질문 3", "input": "", "output": "답변 3"}
    assert "data.txt_is_table" in [f.key for f in src.findings]
    # text with tabs that is no table stays text: code, or lines without a header of column names
    code = tmp_path / "code.txt"
    code.write_text("def f(x):\n\treturn x\n\ndef g(y):\n\treturn y\n", encoding="utf-8")
    words = tmp_path / "words.txt"
    words.write_text("apple\tred\nbanana\tyellow\n", encoding="utf-8")
    assert read_source(str(code)).kind == read_source(str(words)).kind == "text"


def test_excel_unicode_text_with_a_line_break_in_a_cell_is_still_the_table_it_is(tmp_path):
    """Excel quotes a cell with a line break, so its row spans two lines: the lines' tab counts differed and the
    table was read as plain text (SFT then refused it as text; pretraining would have trained on the table)."""
    p = tmp_path / "sheet.txt"
    p.write_bytes("instruction\tinput\toutput\r\n요약\t\"긴 글\n둘째 줄\"\t짧은 글\r\n번역하세요\t안녕하세요\tHello\r\n"
                  .encode("utf-16"))
    src = read_source(str(p))
    assert src.kind == "csv" and src.rows[0] == {"instruction": "요약", "input": "긴 글\n둘째 줄", "output": "짧은 글"}


def test_json_rows_saved_as_txt_or_csv_are_read_as_json_and_said(tmp_path):
    """JSONL saved as .txt was read as plain text (and refused by SFT as 'plain text'); as .csv, its first row's
    JSON was taken for the header."""
    rows = [{"instruction": "한국의 수도는?", "output": "서울입니다."}, {"instruction": "2+2?", "output": "4"}]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    for name, text, kind in (("a.txt", lines, "JSON Lines"), ("a.csv", "\ufeff" + lines, "JSON Lines"),
                             ("b.txt", json.dumps(rows, ensure_ascii=False, indent=1), "JSON")):
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        src = read_source(str(p))
        assert src.rows == rows and src.numbers == [1, 2], name
        [said] = [f for f in src.findings if f.key == "data.json_named_as_text"]
        assert said.params["kind"] == kind and said.message("en").endswith(".json" if kind == "JSON" else ".jsonl")
    # text that opens with a brace or bracket and is not JSON rows stays text
    for text in ("{not json}\nsecond line\n", "[link](https://example.com) and more\n\nA paragraph.\n", "[1, 2]\n",
                 '{"a": 1}\nthen prose about that object\n'):
        (tmp_path / "t.txt").write_text(text, encoding="utf-8")
        assert read_source(str(tmp_path / "t.txt")).kind == "text", text


def test_a_cp949_file_with_one_damaged_byte_is_refused_at_that_line(tmp_path):
    """It was refused at line 1 ("not valid UTF-8 from this line on": its first Korean character), the damage
    nowhere said."""
    lines = ["instruction,output"] + [f"질문 {i},답변 {i}입니다" for i in range(8)]
    data = "\n".join(lines).encode("cp949").split(b"\n")
    data[5] = data[5][:4] + b"\xff" + data[5][4:]  # line 6
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\n".join(data))
    src = read_source(str(p))
    assert [(f.key, f.line) for f in src.findings] == [("data.damaged_encoding", 6)] and not src.rows
    assert "cp949" in src.findings[0].message("en")
    whole = tmp_path / "whole.csv"  # undamaged, it reads, with a warning
    whole.write_bytes("\n".join(lines).encode("cp949"))
    assert len(read_source(str(whole)).rows) == 8


def test_a_dataset_saved_by_datasets_and_its_arrow_files_are_read(tmp_path):
    """save_to_disk()'s folder was "a folder, not a data file", and its .arrow file "unknown file type"."""
    import datasets

    rows = [{"messages": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"답 {i}"}]}
            for i in range(3)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    src = read_source(str(tmp_path / "one"))
    assert src.rows == rows and src.numbers == [1, 2, 3] and not src.findings
    [arrow] = (tmp_path / "one").glob("*.arrow")
    assert read_source(str(arrow)).rows == rows
    datasets.Dataset.from_list(rows).to_pandas().to_feather(tmp_path / "rows.feather")
    assert [r["messages"] for r in read_source(str(tmp_path / "rows.feather")).rows] == [r["messages"] for r in rows]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
                         ).save_to_disk(str(tmp_path / "splits"))
    src = read_source(str(tmp_path / "splits"))
    assert src.rows == rows and [(f.key, f.params) for f in src.findings] == [
        ("data.splits_in_file", {"name": "train", "others": "test"})]
    assert read_source(str(tmp_path / "splits"), split="test").rows == rows[:1]
    src = read_source(str(tmp_path / "splits"), split="validation")
    assert not src.rows and [(f.key, f.params["splits"]) for f in src.findings] == [
        ("data.saved_split_missing", "train, test")]
    arrow.write_bytes(arrow.read_bytes()[:100])  # damaged: said, not raised
    assert [f.key for f in read_source(str(tmp_path / "one")).findings] == ["data.read_failed"]


def test_a_json_of_splits_and_pandas_default_layout_are_read_as_meant(tmp_path):
    """{"train": [...], "test": [...]} was refused as "columns of different lengths" (or, of equal lengths, told to
    map text=test); pandas' to_json() default was one row whose fields were objects."""
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": rows, "test": rows[:1]}), encoding="utf-8")
    src = read_source(str(splits))
    assert src.rows == rows and [f.key for f in src.findings] == ["data.splits_in_file"]
    splits.write_text(json.dumps({"train": [], "test": rows[:1]}), encoding="utf-8")  # was "columns of different
    src = read_source(str(splits))                                                    # lengths (train: 0, test: 1)"
    assert not src.rows and [(f.key, f.params) for f in src.findings] == [("data.train_split_empty", {"others": "test: 1"})]
    frame = tmp_path / "frame.json"
    frame.write_text(json.dumps({k: {str(i + 10): r[k] for i, r in enumerate(rows)} for k in rows[0]}), encoding="utf-8")
    src = read_source(str(frame))
    assert src.rows == rows and [f.key for f in src.findings] == ["data.pandas_columns"]
    columns = tmp_path / "columns.json"  # the DPO tutorials' dict of equal-length columns still reads as before
    columns.write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}), encoding="utf-8")
    assert read_source(str(columns)).rows == rows


def test_jsonl_lines_ending_in_a_comma_are_read_and_a_line_cut_short_is_named(tmp_path):
    """Rows pasted from a JSON array keep its commas: 20 errors of "more text follows a complete JSON value". A file
    cut while it was written ended in "a comma (,) is missing between two items"."""
    p = tmp_path / "commas.jsonl"
    p.write_text('{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": "d"},\n', encoding="utf-8")
    src = read_source(str(p))
    assert [r["output"] for r in src.rows] == ["b", "d"]
    assert [(f.severity, f.key, f.params.get("count")) for f in src.findings] == [("warning", "data.comma_after_rows", 2)]
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "a long answ', encoding="utf-8")
    src = read_source(str(cut))
    [f] = src.findings
    assert (f.row, f.params["error"]) == (2, "json.line_ends_early") and "cut short" in f.message("en")


def test_tsv_and_semicolon_csv(tmp_path):
    assert read_source(str(FIX / "alpaca.tsv")).rows == [{"instruction": "Name a colour.", "input": "", "output": "Blue."}]
    p = tmp_path / "semi.csv"
    p.write_text("instruction;output\nA, b;C\n", encoding="utf-8")
    assert read_source(str(p)).rows == [{"instruction": "A, b", "output": "C"}]


def test_text_files_one_sample_per_line_or_per_block():
    src = read_source(str(FIX / "text_blocks.txt"))
    assert [r["text"] for r in src.rows] == ["첫 번째 문단입니다.\n두 번째 줄도 같은 문단입니다.", "The second block.", "第三段 🙂"]
    assert src.numbers == [1, 4, 7]
    src = read_source(str(FIX / "text_lines.txt"))
    assert len(src.rows) == 3 and src.rows[2]["text"] == "été à Paris"


def test_a_stray_blank_line_in_a_line_per_sample_file_is_said(tmp_path):
    """One blank line makes a file of 200 one-line samples two blocks: read as the rule says, and said."""
    p = tmp_path / "corpus.txt"
    lines = [f"문장 {i}번입니다." for i in range(200)]
    p.write_text("\n".join(lines[:120]) + "\n\n" + "\n".join(lines[120:]) + "\n", encoding="utf-8")
    src = read_source(str(p))
    assert len(src.rows) == 2 and keys(src) == [(None, None, "data.txt_few_blocks")]
    assert src.findings[0].params == {"count": 2, "total": 200}
    p.write_text("\n\n".join("\n".join(lines[i:i + 4]) for i in range(0, 200, 4)), encoding="utf-8")
    src = read_source(str(p))  # paragraphs of a few lines: what blank lines are for
    assert len(src.rows) == 50 and not src.findings


def test_a_text_keeps_its_indentation(tmp_path):
    """Code and verse: a line's leading spaces are part of the text (`    return 1` was read as `return 1`)."""
    code = tmp_path / "code.txt"
    code.write_text("def f():\n    return 1   \n\n  - item\n    - nested\n", encoding="utf-8")
    assert [r["text"] for r in read_source(str(code)).rows] == ["def f():\n    return 1", "  - item\n    - nested"]
    lines = tmp_path / "lines.txt"
    lines.write_text("first\n    second, indented\n", encoding="utf-8")
    assert [r["text"] for r in read_source(str(lines)).rows] == ["first", "    second, indented"]


def test_parquet_and_gzip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["질문", "q2"], "output": ["답", "a2"]}), p)
    src = read_source(str(p))
    assert src.kind == "parquet" and src.rows[0] == {"instruction": "질문", "output": "답"} and src.numbers == [1, 2]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    assert keys(read_source(str(bad))) == [(None, None, "data.parquet_error")]
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress('{"text": "압축"}\n'.encode()))
    assert read_source(str(gz)).rows == [{"text": "압축"}]


def test_a_damaged_or_cut_short_gzip_is_said_in_the_readers_language(tmp_path):
    """A damaged one ended the command in zlib's English ("error: error: Error -3 while decompressing data"), named
    .gz or not; a cut-short one said Python's EOFError text under --lang ko."""
    packed = gzip.compress(b'{"text": "hello"}\n' * 1000)
    damaged = packed[:30] + bytes(b ^ 0x5A for b in packed[30:60]) + packed[60:]
    for name, data, reason in (("a.jsonl.gz", damaged, "file.gzip_damaged"), ("b.jsonl", damaged, "file.gzip_damaged"),
                               ("c.jsonl.gz", packed[:40], "file.gzip_cut_short")):
        (tmp_path / name).write_bytes(data)
        [f] = read_source(str(tmp_path / name)).findings
        assert (f.key, f.params["error"]) == ("data.read_failed", reason), name
    assert f.message("ko").endswith("압축된 데이터가 중간에 끝납니다(다운로드나 복사가 도중에 끊겼나요?)")
    # a number past Python's 4,300 digits: the row's error in the reader's words, not Python's advice
    (tmp_path / "big.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": '
                                        + "9" * 5000 + "}\n", encoding="utf-8")
    [f] = read_source(str(tmp_path / "big.jsonl")).findings
    assert (f.key, f.line, f.params["error"]) == ("data.unparseable", 2, "json.number_too_long")


def test_binary_files_under_a_text_name_are_named_for_what_they_are(tmp_path):
    """A Parquet file saved as .json is read as Parquet (and said); a gzip one, unpacked; an Excel sheet or a
    picture is refused by what it is, not as broken UTF-8; a NUL byte inside text is an error at its line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "really_parquet.json"
    pq.write_table(pa.table({"instruction": ["질문"], "output": ["답"]}), p)
    src = read_source(str(p))
    assert src.rows == [{"instruction": "질문", "output": "답"}]
    assert [(f.severity, f.key, f.params) for f in src.findings] == [
        ("warning", "data.binary_named_as_text", {"kind": "Parquet", "ext": ".json"})]
    gz = tmp_path / "packed.jsonl"
    gz.write_bytes(gzip.compress('{"text": "압축"}\n'.encode()))
    assert read_source(str(gz)).rows == [{"text": "압축"}]
    for name, head, looks in (("sheet.csv", b"PK\x03\x04\x14\x00\x06\x00", "ZIP (.xlsx, .docx, .zip)"),
                              ("old.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Excel (.xls)"),
                              ("shot.txt", b"\x89PNG\r\n\x1a\n\x00\x00", "PNG")):
        (tmp_path / name).write_bytes(head + bytes(range(256)))
        src = read_source(str(tmp_path / name))
        assert keys(src) == [(None, None, "data.binary_file")] and src.findings[0].params["kind"] == looks
    text = tmp_path / "nul.txt"
    text.write_bytes(b"first line\nsecond\x00 line\n")
    assert keys(read_source(str(text))) == [(None, 2, "data.nul_byte")]
    rows = tmp_path / "nul.jsonl"  # its row is said to fail for the NUL, not for "a line break inside a text",
    rows.write_bytes(b'{"text": "a"}\n{"text": "b\x00c"}\n')  # and once: not also as the file's NUL on that line
    [row] = read_source(str(rows)).findings
    assert (row.key, row.row, row.params["error"]) == ("data.unparseable", 2, "json.nul_byte")
    sheet = tmp_path / "고객문의.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    assert keys(read_source(str(sheet))) == [(None, None, "data.spreadsheet_file")]
    plain = tmp_path / "par1.txt"  # text that merely starts with Parquet's mark
    plain.write_text("PAR1 is the first paragraph.\n")
    assert read_source(str(plain)).rows == [{"text": "PAR1 is the first paragraph."}]


def test_encodings_utf16_cp949_and_damaged_utf8(tmp_path):
    p = tmp_path / "u16.jsonl"
    p.write_bytes('{"text": "유니코드"}\n'.encode("utf-16"))
    assert read_source(str(p)).rows == [{"text": "유니코드"}]
    src = read_source(str(FIX / "cp949.csv"))
    assert src.rows == [{"instruction": "안녕하세요를 영어로?", "output": "Hello"}]
    assert [(f.severity, f.key, f.params["encoding"]) for f in src.findings] == [("warning", "data.encoding_guessed", "cp949")]
    src = read_source(str(FIX / "bad_utf8.jsonl"))  # the damaged row refused at its row, the others read
    assert keys(src) == [(2, 2, "data.not_utf8_row")] and src.numbers == [1, 3]


def test_a_damaged_byte_is_refused_at_its_row_and_skip_bad_rows_trains_on_the_others(tmp_path):
    """One bad byte in a UTF-8 file refused the whole file ("not valid UTF-8 from this line on"), even with
    data.skip_bad_rows: now the row it is in is refused, in every kind of file, and the others are read."""
    from engine.data.load import skippable

    rows = [{"instruction": f"질문 {i}", "output": f"답변 {i}"} for i in range(40)]
    jsonl = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    damaged = jsonl.replace("질문 3,".encode(), b"\xff\xfe 3,").replace("질문 3\"".encode(), b"\xff\xfe 3\"")
    array = json.dumps(rows, ensure_ascii=False, indent=1).encode().replace("답변 4\"".encode(), b"\xc3 4\"")
    for name, data, row in (("a.jsonl", damaged, 4), ("b.json", array, 5)):
        (tmp_path / name).write_bytes(data)
        src = read_source(str(tmp_path / name))
        [f] = src.findings
        assert (f.row, f.key) == (row, "data.not_utf8_row") and row not in src.numbers and len(src.rows) == 39, name
        assert skippable(src.findings, len(src.rows))
    (tmp_path / "c.csv").write_bytes(b"instruction,output\n\xff\xfe,a\n" + "질문,답변\n".encode() * 30)
    assert keys(read_source(str(tmp_path / "c.csv"))) == [(2, 2, "data.not_utf8_row")]
    (tmp_path / "d.csv").write_bytes(b"instruct\xffion,output\n" + "질문,답변\n".encode() * 30)  # the header
    assert keys(read_source(str(tmp_path / "d.csv"))) == [(None, 1, "data.not_utf8")]


@pytest.mark.parametrize("text, enc, read_as", [
    ("中国的首都是哪里？中国的首都是北京。", "gbk", "gb18030"),  # cp949 also decodes these bytes, into hanja
    ("日本の首都はどこですか？東京です。", "shift_jis", "shift_jis"),  # gb18030 also decodes these, into rare hanzi
    ("대한민국의 수도는 서울입니다.", "euc_kr", "cp949"),
    ("La tour Eiffel est très célèbre. C’est à côté du musée.", "cp1252", "cp1252"),  # Excel on Western Windows
])
def test_legacy_encodings_are_read_only_as_what_they_plausibly_are(tmp_path, text, enc, read_as):
    p = tmp_path / "legacy.jsonl"
    p.write_bytes(json.dumps({"instruction": text, "output": "ok"}, ensure_ascii=False).encode(enc) + b"\n")
    src = read_source(str(p))
    assert src.rows == [{"instruction": text, "output": "ok"}]
    assert [(f.key, f.params["encoding"]) for f in src.findings] == [("data.encoding_guessed", read_as)]


def test_bytes_no_encoding_reads_plausibly_are_refused_not_turned_into_mojibake(tmp_path):
    p = tmp_path / "noise.jsonl"  # Korean in cp949 with Chinese in gbk in one file: no single reading fits
    p.write_bytes(b'{"text": "' + "가나다라마바사 ".encode("cp949") * 3 + "鑣閘鑒餐鞠".encode("gbk") * 5 + b'"}\n')
    assert keys(read_source(str(p))) == [(None, 1, "data.not_utf8")]


def test_utf16_without_a_bom_is_recognised(tmp_path):
    for enc in ("utf-16-le", "utf-16-be"):
        p = tmp_path / f"{enc}.jsonl"
        p.write_bytes('{"text": "hello 유니코드"}\n{"text": "two"}\n'.encode(enc))
        src = read_source(str(p))
        assert src.rows == [{"text": "hello 유니코드"}, {"text": "two"}]
        assert [f.params["encoding"] for f in src.findings] == [enc.upper()]


def test_empty_missing_and_unknown_files(tmp_path):
    assert keys(read_source(str(FIX / "empty.jsonl"))) == [(None, None, "data.empty_file")]
    assert keys(read_source(str(FIX / "blank.json"))) == [(None, None, "data.empty_file")]
    assert keys(read_source(str(tmp_path / "nope.jsonl"))) == [(None, None, "data.file_not_found")]
    (tmp_path / "x.docx").write_bytes(b"PK")
    assert keys(read_source(str(tmp_path / "x.docx"))) == [(None, None, "data.unsupported_file")]
    assert keys(read_source(str(tmp_path))) == [(None, None, "data.not_a_file")]


def test_demo_names_resolve_to_bundled_files():
    for name, file in (("demo:sft", "demo_sft.json"), ("demo:dpo", "demo_dpo.json"), ("demo:pt", "demo_pt.txt")):
        assert resolve_data_path(name).endswith(file) and Path(resolve_data_path(name)).exists()
    assert len(read_source("demo:sft").rows) > 50


def test_hub_names_are_told_from_paths():
    assert is_hub_name("someuser/somedataset") and is_hub_name("squad")
    assert not is_hub_name("data/train.jsonl") and not is_hub_name("demo:sft") and not is_hub_name("./x")


@pytest.mark.parametrize("name", ["someuser/somedataset"])
def test_hub_dataset_offline_is_a_clear_finding(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest sets it for the session; said again for clarity
    src = read_source(name)
    assert src.kind == "hub" and keys(src) == [(None, None, "data.hub_offline")]
    assert src.findings[0].params["name"] == name and name in src.findings[0].message()


def test_an_unreachable_hub_is_asked_from_the_cache_only(monkeypatch):
    """Not told it is offline, but the Hub's host does not answer: `datasets` runs in offline mode for the call
    (its cache, no five retries with back-off), the finding says offline, and the mode is put back after."""
    import datasets
    from huggingface_hub import constants

    hub_unreachable(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    seen = []

    def load_dataset(name, split=None):
        seen.append((datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE))
        raise FileNotFoundError(f"Dataset {name} is not cached")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    src = read_source("someuser/somedataset")
    assert keys(src) == [(None, None, "data.hub_offline")] and seen == [(True, True)]
    assert datasets.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is False


def test_lone_surrogates_deep_nesting_and_joined_boms_are_findings_not_crashes(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "bad \\ud800"}\n' + "[" * 5000 + "\n\ufeff{\"text\": \"b\"}\n",
                 encoding="utf-8")
    src = read_source(str(p))
    assert src.rows[0] == {"text": "ok 😀"} and src.rows[-1] == {"text": "b"}
    assert [(f.row, f.key) for f in src.findings] == [(2, "data.unparseable"), (3, "data.unparseable")]
    a = tmp_path / "s.json"
    a.write_text('[\n {"text": "ok \\ud83d\\ude00"},\n {"text": "bad \\udc00"},\n {"text": "fine"}\n]\n', encoding="utf-8")
    src = read_source(str(a))
    assert [r["text"] for r in src.rows] == ["ok 😀", "fine"]
    assert [(f.row, f.line, f.key) for f in src.findings] == [(2, 3, "data.unparseable")]


def test_excel_sep_hint_line_and_one_conversation_per_line(tmp_path):
    p = tmp_path / "sep.csv"
    p.write_text("sep=;\ninstruction;output\nQ;A, b\n", encoding="utf-8")
    src = read_source(str(p))
    assert src.rows == [{"instruction": "Q", "output": "A, b"}] and src.numbers == [3]
    p = tmp_path / "conv.jsonl"
    p.write_text('[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]\n', encoding="utf-8")
    assert read_source(str(p)).rows == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    p = tmp_path / "compact.jsonl"  # really a one-line JSON array of rows
    p.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]', encoding="utf-8")
    assert len(read_source(str(p)).rows) == 2


def test_a_key_given_twice_in_one_object_is_refused_at_its_row_and_line(tmp_path):
    """JSON readers keep the last of a repeated key and drop the other without a word (a CSV header naming a
    column twice is refused too): each row that has one is an error with its line, top-level field and key."""
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "hi", "output": "a"}\n\n'
                 '{"instruction": "수도는?", "instruction": "서울?", "output": "b"}\n'
                 '{"instruction": "say \\"x\\": y", "output": "c"}\n'  # a quoted colon inside a value is no key
                 '{"messages": [{"role": "user", "content": "q", "role": "assistant"}]}\n', encoding="utf-8")
    src = read_source(str(f))
    found = [(x.row, x.line, x.field, x.key, x.params) for x in src.findings]
    assert found == [(2, 3, "instruction", "data.repeated_key", {"name": "instruction"}),
                     (4, 5, "messages", "data.repeated_key", {"name": "role"})]
    assert src.rows[1]["instruction"] == "서울?" and len(src.rows) == 4  # the rows are still read as JSON reads them
    pretty = tmp_path / "p.json"
    pretty.write_text('[\n  {\n    "instruction": "a",\n    "output": "b"\n  },\n  {\n    "instruction": "c",\n'
                      '    "output": "d",\n    "output": "e"\n  }\n]\n', encoding="utf-8")
    assert [(x.row, x.line, x.field) for x in read_source(str(pretty)).findings] == [(2, 9, "output")]
    columns = tmp_path / "c.json"  # a dict of columns that names a column twice
    columns.write_text('{"instruction": ["a", "b"],\n "output": ["c", "d"],\n "instruction": ["e", "f"]}', encoding="utf-8")
    assert [(x.row, x.line, x.field, x.key) for x in read_source(str(columns)).findings] == [
        (None, 3, "instruction", "data.repeated_key")]
    spaced = tmp_path / "s.json"  # keys written as `"key" :` are counted differently: read again, nothing found
    spaced.write_text('[{"instruction" : "a", "output" : "b"}]', encoding="utf-8")
    assert not read_source(str(spaced)).findings


def test_utf16_without_a_bom_is_recognised_in_mostly_korean_text(tmp_path):
    """Hangul's UTF-16 bytes are never 0, so the zero-byte guess above misses such a file: Excel's
    "Unicode text" of a Korean sheet. Its line ends decide it; cp949 bytes never pair a newline with a 0."""
    rows = [("instruction", "output")] + [("대한민국의 수도는 어디인가요? 자세히 설명해 주세요",
                                         "서울특별시는 대한민국의 수도이며 한강이 흐릅니다")] * 5  # 27 % zero bytes
    p = tmp_path / "korean.csv"
    p.write_bytes("\r\n".join(",".join(r) for r in rows).encode("utf-16-le"))
    src = read_source(str(p))
    assert [f.params.get("encoding") for f in src.findings] == ["UTF-16-LE"]
    assert src.rows == [{"instruction": rows[1][0], "output": rows[1][1]}] * 5 and src.numbers == [2, 3, 4, 5, 6]
    p.write_bytes("\n".join(",".join(r) for r in rows).encode("cp949"))  # even length or not: still cp949
    assert [f.params.get("encoding") for f in read_source(str(p)).findings] == ["cp949"]


def test_a_bom_does_not_shift_the_line_of_bad_bytes(tmp_path):
    lines = [b"instruction,output"] + [f"질문 {i},답변 {i}".encode() for i in range(2, 100)]
    lines[50] = "질문,답변".encode("cp949")  # line 51, in a file otherwise UTF-8
    for bom in (b"", b"\xef\xbb\xbf"):
        p = tmp_path / "mixed.csv"
        p.write_bytes(bom + b"\n".join(lines) + b"\n")
        src = read_source(str(p))
        assert keys(src) == [(51, 51, "data.not_utf8_row")] and len(src.rows) == 97 and 51 not in src.numbers


def test_old_mac_line_ends_split_rows_in_every_kind(tmp_path):
    p = tmp_path / "cr.jsonl"
    p.write_text('{"text": "one"}\r{"text": "two"}\r\r{"text": "three"}\r', encoding="utf-8", newline="")
    src = read_source(str(p))
    assert not src.findings and [r["text"] for r in src.rows] == ["one", "two", "three"] and src.numbers == [1, 2, 3]
    assert src.lines == [1, 2, 4]
    p = tmp_path / "cr.txt"
    p.write_text("첫 문장.\r둘째 문장.\r셋째 문장.\r", encoding="utf-8", newline="")
    assert [r["text"] for r in read_source(str(p)).rows] == ["첫 문장.", "둘째 문장.", "셋째 문장."]


def test_csv_quotes_that_would_swallow_rows_are_refused_at_their_line(tmp_path):
    """A quoted cell left open reads every later row into itself; text after a closing quote loses the quotes.
    Neither may pass as a smaller, different dataset."""
    p = tmp_path / "quotes.csv"
    p.write_text('instruction,output\nq1,a1\nq2,"Hello" he said\nq3,a3\nq4,"unclosed\nq5,a5\nq6,a6\n', encoding="utf-8")
    src = read_source(str(p))
    assert keys(src) == [(3, 3, "data.csv_bad_quote"), (5, 5, "data.csv_unclosed_quote")]
    assert src.rows == [{"instruction": "q1", "output": "a1"}, {"instruction": "q3", "output": "a3"}]
    p.write_text('instruction,output\n"a ""quoted"" word","line one\nline two"\nq,a\n', encoding="utf-8")  # right
    src = read_source(str(p))
    assert not src.findings and src.rows[0] == {"instruction": 'a "quoted" word', "output": "line one\nline two"}
    assert src.numbers == [2, 3] and src.lines == [2, 4]


def test_excel_empty_columns_and_rows_are_dropped_and_a_nameless_column_with_values_is_named(tmp_path):
    p = tmp_path / "sheet.csv"
    p.write_text("instruction,output,,\n안녕,반가워요,,\n,,,\nq,a,,\n", encoding="utf-8")
    src = read_source(str(p))
    assert not src.findings and src.rows == [{"instruction": "안녕", "output": "반가워요"}, {"instruction": "q", "output": "a"}]
    assert src.numbers == [2, 4]
    p.write_text("instruction,output,\nq,a,note\n", encoding="utf-8")
    f = read_source(str(p)).findings
    assert [(x.key, x.line, x.params["column"]) for x in f] == [("data.csv_unnamed_column", 1, 3)]


def test_pandas_index_column_is_left_out_with_a_warning_not_refused(tmp_path):
    """`df.to_csv(path)` writes the index as a first column with no name: the commonest CSV from Python was
    refused ("Column 1 has no name in the header but holds values")."""
    import pandas as pd

    p = tmp_path / "pd.csv"
    frame = pd.DataFrame({"instruction": ["한국의 수도?", "2+2?", "색?", "q"], "output": ["서울", "4", "빨강", "a"]})
    for table in (frame, frame.iloc[[0, 2, 3]]):  # a filtered frame keeps its row labels: 0, 2, 3
        table.to_csv(p)
        src = read_source(str(p))
        assert [(f.severity, f.key) for f in src.findings] == [("warning", "data.csv_index_column")]
        assert src.rows[0] == {"instruction": "한국의 수도?", "output": "서울"} and len(src.rows) == len(table)
    p.write_text(",instruction,output\n3,q1,a1\n1,q2,a2\n", encoding="utf-8")  # numbers, but not the rows' order
    assert [f.key for f in read_source(str(p)).findings] == ["data.csv_unnamed_column"]


def test_rows_beside_facts_about_them_and_one_conversation_alone(tmp_path):
    p = tmp_path / "wrapped.json"
    p.write_text(json.dumps({"version": "1.0", "license": "cc-by", "data": [{"instruction": "a", "output": "b"}] * 2}))
    src = read_source(str(p))
    assert len(src.rows) == 2 and [(f.key, f.params["name"], f.params["others"]) for f in src.findings] == [
        ("data.rows_under_key", "data", "version, license")]
    p.write_text(json.dumps({"meta": {"v": 1}, "data": [{"instruction": "a", "output": "b"}]}))  # unclear: refused
    assert [f.key for f in read_source(str(p)).findings] == ["data.json_not_list"]
    p = tmp_path / "chat.json"
    p.write_text(json.dumps([{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "반가워요"}]))
    src = read_source(str(p))
    assert src.rows == [[{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "반가워요"}]]
    assert [f.key for f in src.findings] == ["data.single_conversation"] and src.numbers == [1]


def test_pretty_printed_rows_one_after_another_are_read_with_a_warning(tmp_path):
    rows = [{"instruction": "첫 질문", "output": "첫 답"}, {"instruction": "q2", "output": "a2"}]
    for name in ("pretty.jsonl", "pretty.json"):
        p = tmp_path / name
        p.write_text("\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
        src = read_source(str(p))
        assert src.rows == rows and src.numbers == [1, 2] and src.lines == [1, 5], name  # where each starts
        assert [(f.key, f.params["rows"]) for f in src.findings] == [("data.multiline_rows", 2)]
    p = tmp_path / "commas.jsonl"  # an array's pretty-printed rows without its brackets: read, the commas said once
    p.write_text(",\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    src = read_source(str(p))
    assert src.rows == rows and src.numbers == [1, 2] and src.lines == [1, 5]
    assert [(f.key, f.params.get("rows"), f.line) for f in src.findings] == [
        ("data.multiline_rows", 2, None), ("data.comma_after_rows", None, 4)]
    p = tmp_path / "broken.jsonl"  # one line broken among whole ones: still told line by line
    p.write_text('{"text": "a"}\n{"text": "b"\n{"text": "c"}\n', encoding="utf-8")
    assert keys(read_source(str(p))) == [(2, 2, "data.unparseable")]


def test_json_syntax_errors_are_said_in_the_readers_language(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a" "output": "b"}\n{\'instruction\': "c"}\n{"a": 1} x\n[{"a": 1}', encoding="utf-8")
    found = read_source(str(p)).findings
    assert [f.params["error"] for f in found] == ["json.expecting_comma", "json.expecting_key", "json.extra_data",
                                                  "json.line_ends_early"]
    for f in found:
        ko = f.message("ko")
        assert "Expecting" not in ko and "Extra data" not in ko and "json." not in ko, ko
    assert "쉼표" in found[0].message("ko") and "comma" in found[0].message("en")


def test_comments_in_a_json_array_are_skipped_not_counted_as_rows(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('[\n  // first row\n  {"instruction": "a", "output": "bb"}, /* block\n comment */\n'
                 '  {"instruction": "c", "output": "dd"} // last\n]\n', encoding="utf-8")
    src = read_source(str(p))
    assert src.numbers == [1, 2] and src.lines == [3, 5] and [r["output"] for r in src.rows] == ["bb", "dd"]
    assert [(f.severity, f.key, f.line) for f in src.findings] == [("warning", "data.json_comment", n) for n in (2, 3, 5)]


def test_a_comment_before_the_array_is_skipped_and_every_row_read(tmp_path):
    """`// exported by my script` above the [ made the file read as JSONL: one row, and a row error for each
    line after it, with skip_bad_rows offered as the way out (which trained on that one row)."""
    p = tmp_path / "c.json"
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]
    p.write_text("// exported by my script\n/* v2 */\n[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n",
                 encoding="utf-8")
    src = read_source(str(p))
    assert src.kind == "json" and src.rows == rows and src.lines == [4, 5, 6, 7, 8]
    assert [(f.severity, f.key, f.line) for f in src.findings] == [("warning", "data.json_comment", n) for n in (1, 2)]


def test_comment_lines_in_jsonl_are_skipped_and_said(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('# made by hand\n{"instruction": "a", "output": "b"}\n// two\n{"instruction": "c", "output": "d"}\n',
                 encoding="utf-8")
    src = read_source(str(p))
    assert [r["output"] for r in src.rows] == ["b", "d"] and src.numbers == [1, 2] and src.lines == [2, 4]
    assert [(f.severity, f.key, f.line) for f in src.findings] == [("warning", "data.json_comment", n) for n in (1, 3)]


def test_block_comments_in_jsonl_are_skipped_and_one_left_open_is_refused(tmp_path):
    """The README promised /* */ in JSONL too: `/* exported by tool */` above the rows was "a value is expected
    here" at row 1, and a comment over three lines made three broken rows."""
    p = tmp_path / "c.jsonl"
    p.write_text('/* exported by tool */\n{"instruction": "a", "output": "b"}\n/* two\n lines\n */\n'
                 '/* c */ {"instruction": "c", "output": "d"}\n', encoding="utf-8")
    src = read_source(str(p))
    assert [r["output"] for r in src.rows] == ["b", "d"] and src.numbers == [1, 2] and src.lines == [2, 6]
    assert [(f.severity, f.key, f.line) for f in src.findings] == [("warning", "data.json_comment", n) for n in (1, 3, 6)]
    p.write_text('{"instruction": "a", "output": "b"}\n/* never closed\n{"instruction": "c", "output": "d"}\n',
                 encoding="utf-8")  # it would leave every row after it out, unsaid
    src = read_source(str(p))
    assert [(f.severity, f.key, f.line) for f in src.findings][-1] == ("error", "data.comment_unclosed", 2)


def test_pandas_split_and_table_layouts_are_read_as_rows(tmp_path):
    """to_json(orient="split") was "columns of different lengths (columns: 2, index: 2, data: 2)", and
    orient="table" "one object instead of a list of rows"."""
    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "질문", "output": "답"}]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"columns": ["instruction", "output"], "index": [3, 7],
                                 "data": [[r["instruction"], r["output"]] for r in rows]}), encoding="utf-8")
    src = read_source(str(split))
    assert src.rows == rows and [(f.key, f.params) for f in src.findings] == [("data.pandas_layout", {"orient": "split"})]
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"schema": {"fields": [{"name": "index"}, {"name": "instruction"}, {"name": "output"}],
                                            "primaryKey": ["index"], "pandas_version": "1.4.0"},
                                 "data": [{"index": i, **r} for i, r in enumerate(rows)]}), encoding="utf-8")
    src = read_source(str(table))  # pandas' index is no column of the data
    assert src.rows == rows and [(f.key, f.params) for f in src.findings] == [("data.pandas_layout", {"orient": "table"})]


def test_a_lone_row_with_a_list_of_objects_in_it_stays_one_row(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"text": "한 문서", "sources": [{"url": "a"}, {"url": "b"}]}), encoding="utf-8")
    src = read_source(str(p))
    assert src.rows == [{"text": "한 문서", "sources": [{"url": "a"}, {"url": "b"}]}]
    assert [f.key for f in src.findings] == ["data.single_object"]


def test_openassistant_message_trees_are_threaded_into_their_best_ranked_conversations(tmp_path):
    """oasst1 / oasst2 as the Hub holds them (a message a row) was a corpus of single messages, prompts included,
    "ready to train"; SFT was told to pretrain instead."""
    import pandas as pd

    def msg(mid, parent, role, text, rank=None, deleted=False):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank, "deleted": deleted,
                "lang": "ko", "message_tree_id": "t"}

    rows = [msg("a", None, "prompter", "독점이란?"), msg("b", "a", "assistant", "두 번째 답", rank=1),
            msg("c", "a", "assistant", "가장 좋은 답", rank=0), msg("d", "c", "prompter", "더 쉽게?"),
            msg("e", "d", "assistant", "쉬운 답", rank=0), msg("f", "c", "prompter", "지워진 질문", deleted=True),
            msg("g", None, "prompter", "Hi"), msg("h", "g", "assistant", "Hello")]
    p = tmp_path / "oasst.parquet"
    pd.DataFrame(rows).to_parquet(p)
    src = read_source(str(p))
    assert src.rows == [{"messages": [{"role": "user", "content": "독점이란?"}, {"role": "assistant", "content": "가장 좋은 답"},
                                      {"role": "user", "content": "더 쉽게?"}, {"role": "assistant", "content": "쉬운 답"}]},
                        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    assert src.numbers == [1, 7]
    assert [(f.key, f.params) for f in src.findings] == [("data.message_trees", {"count": 8, "trees": 2, "left": 2})]
    p = tmp_path / "oasst.jsonl"  # and from JSONL, each conversation at its first message's line
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert read_source(str(p)).numbers == [1, 7]


def test_a_git_lfs_pointer_or_a_web_page_is_named_for_what_it_is(tmp_path):
    """A clone without git-lfs leaves pointers where the data was, and a failed download saves an error page: they
    read as a broken Parquet file (pyarrow's words) or as rows that cannot be parsed."""
    pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:" + "4d7a" * 16 + "\nsize 12345678\n")
    for name in ("train.parquet", "train.jsonl", "train.csv"):
        p = tmp_path / name
        p.write_text(pointer, encoding="utf-8")
        [f] = read_source(str(p)).findings
        assert (f.key, f.params["size"]) == ("data.lfs_pointer", "11.8 MB") and "git lfs pull" in f.message("en")
    page = tmp_path / "data.json"
    page.write_text("<!DOCTYPE html>\n<html><head><title>404 &ndash; Not Found</title></head><body>x</body></html>\n")
    src = read_source(str(page))
    assert [(f.key, f.params["title"]) for f in src.findings] == [("data.html_page", "404 – Not Found")] and not src.rows
    page.write_text("<html>\n<body><h1>Sign in</h1> to continue</body></html>")  # no title: its first words
    assert read_source(str(page)).findings[0].params["title"] == "Sign in to continue"
    text = tmp_path / "pages.txt"  # a web page as pretraining text is the reader's to choose
    text.write_text("<html><body>A page kept as text.</body></html>\n")
    assert not read_source(str(text)).findings


def test_an_empty_or_cut_parquet_file_is_said_in_the_readers_language(tmp_path):
    """pyarrow's "Parquet magic bytes not found in footer" went out as it was, in English in a Korean check."""
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert [f.key for f in read_source(str(empty)).findings] == ["data.empty_file"]
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(b"PAR1" + b"x" * 100)
    [f] = read_source(str(cut)).findings
    assert f.key == "data.parquet_error" and "magic" not in f.message("ko") and "잘렸거나" in f.message("ko")


def test_pandas_unnamed_index_is_not_read_as_a_column_but_a_named_one_is(tmp_path):
    """`df[df.score > 3].to_parquet(f)` writes the filtered DataFrame's index as `__index_level_0__` beside the data;
    it was said as a column the training leaves unused, one the user never made. An index they named is theirs."""
    import pandas as pd

    df = pd.DataFrame({"instruction": ["a", "b", "c", "d"], "output": ["w", "x", "y", "z"], "id": [7, 9, 12, 15]})
    df[df.id != 9].to_parquet(tmp_path / "filtered.parquet")  # index 0, 2, 3: no range, so pandas writes it
    df.set_index("id").to_parquet(tmp_path / "named.parquet")
    filtered = read_source(str(tmp_path / "filtered.parquet"))
    assert [set(r) for r in filtered.rows] == [{"instruction", "output", "id"}] * 3
    assert [r["id"] for r in filtered.rows] == [7, 12, 15]
    assert [r["id"] for r in read_source(str(tmp_path / "named.parquet")).rows] == [7, 9, 12, 15]
