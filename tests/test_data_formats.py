"""Format detection and normalisation to trl's conversational form."""


import json

import pytest
from world import FIX

from engine.data import analyze, detect_format, normalize_row, read_source
from engine.data.formats import nearest_format
from engine.messages import message


def records(name, fmt="auto", columns=None):
    src = read_source(str(FIX / name))
    result = analyze(src.rows, fmt, columns=columns, numbers=src.numbers, lines=src.lines)
    assert not [f for f in result.findings if f.severity == "error"], [f.to_dict() for f in result.findings]
    return result.format, result.good


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("name, fmt", [
    ("alpaca.json", "alpaca"), ("alpaca_bom_crlf.jsonl", "alpaca"), ("alpaca.csv", "alpaca"), ("alpaca.tsv", "alpaca"),
    ("sharegpt.json", "sharegpt"), ("messages.jsonl", "messages"), ("prompt_completion.jsonl", "prompt_completion"),
    ("preference_columns.json", "preference"), ("preference_messages.jsonl", "preference"),
    ("preference_alpaca.json", "preference"), ("text_blocks.txt", "text"), ("text_lines.txt", "text"),
    ("text.jsonl", "text"), ("json_that_is_jsonl.json", "alpaca"), ("cp949.csv", "alpaca"),
])
def test_every_good_fixture_is_detected_and_has_no_error(name, fmt):
    assert records(name)[0] == fmt


def test_alpaca_input_history_and_system_become_turns():
    _, recs = records("alpaca.json")
    assert recs[0] == {"messages": [user("한국의 수도는 어디인가요?"), bot("한국의 수도는 서울입니다.")]}
    assert recs[1]["messages"][0] == user("把这句话翻译成英文。\n\n我喜欢猫 🐱")
    assert recs[2]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        user("Hi!"), bot("Hello! How can I help?"), user("Give the opposite word.\n\nhot"), bot("cold")]


def test_sharegpt_roles_and_tool_turns():
    _, recs = records("sharegpt.json")
    assert [m["role"] for m in recs[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    system, *tool = recs[1]["messages"]  # the row's tools, told in a system message
    assert system["role"] == "system" and '<tools>\n{"name": "weather"}\n</tools>' in system["content"]
    assert [m["role"] for m in tool] == ["user", "assistant", "user", "assistant"]
    assert tool[1]["content"].startswith("<tool_call>\n{") and tool[1]["content"].endswith("\n</tool_call>")
    assert tool[2]["content"] == '<tool_response>\n{"temp_c": 18}\n</tool_response>'


def test_openai_messages_content_parts_and_tool_calls():
    row = {"messages": [{"role": "developer", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
                        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]},
                        {"role": "tool", "content": "42"}, {"role": "assistant", "content": "It is 42."}]}
    rec, probs = normalize_row(row, "messages")
    assert not probs
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rec["messages"][1]["content"] == "Hi" and "<tool_call>" in rec["messages"][2]["content"]
    # the image is left out, and said: its answer is learnt without it
    assert probs.notes == [("messages", "data.parts_left_out", {"index": 2, "kind": "image_url"})]


def test_parallel_tool_results_are_one_turn_and_results_already_tagged_are_not_tagged_again():
    """Two tool results after one turn of two calls (OpenAI's parallel calls) were refused as "a second user
    message in a row"; Hermes' function-calling data, whose results carry their tags, had them wrapped twice;
    a legacy `function_call` was "a message with no text"; a ShareGPT turn holding a list of calls was one block."""
    calls = [{"id": str(i), "type": "function", "function": {"name": n, "arguments": "{}"}} for i, n in ((1, "a"), (2, "b"))]
    row = {"messages": [user("both"), {"role": "assistant", "content": "", "tool_calls": calls},
                        {"role": "tool", "tool_call_id": "1", "content": "A"},
                        {"role": "tool", "tool_call_id": "2", "content": "B"}, bot("A and B")]}
    rec, probs = normalize_row(row, "messages")
    assert not probs and [m["role"] for m in rec["messages"]] == ["user", "assistant", "user", "assistant"]
    assert rec["messages"][1]["content"] == ('<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
                                             '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>')
    assert rec["messages"][2]["content"] == "<tool_response>\nA\n</tool_response>\n<tool_response>\nB\n</tool_response>"
    tagged = "<tool_response>\n{\"temp\": 3}\n</tool_response>"
    rec, probs = normalize_row({"conversations": [
        {"from": "human", "value": "날씨?"}, {"from": "gpt", "value": '<tool_call>\n{"name": "w"}\n</tool_call>'},
        {"from": "tool", "value": tagged}, {"from": "gpt", "value": "3도"}]}, "sharegpt")
    assert not probs and rec["messages"][2]["content"] == tagged
    rec, probs = normalize_row({"messages": [
        user("calc"), {"role": "assistant", "content": None, "function_call": {"name": "calc", "arguments": '{"x": 1}'}},
        {"role": "function", "name": "calc", "content": "2"}, bot("2")]}, "messages")
    assert not probs and rec["messages"][1]["content"] == '<tool_call>\n{"name": "calc", "arguments": {"x": 1}}\n</tool_call>'
    rec, probs = normalize_row({"conversations": [
        {"from": "human", "value": "two"}, {"from": "function_call", "value": json.dumps([{"name": "a"}, {"name": "b"}])},
        {"from": "observation", "value": "A"}, {"from": "observation", "value": "B"}, {"from": "gpt", "value": "A, B"}]},
        "sharegpt")
    assert not probs and rec["messages"][1]["content"].count("<tool_call>") == 2
    assert rec["messages"][2]["content"].count("<tool_response>") == 2 and len(rec["messages"]) == 4


def test_tool_calls_that_name_no_function_or_are_no_list_are_refused_and_arguments_not_json_said():
    """A call without a function name trained as the bare JSON of the call, and `tool_calls: "bad"` was said to be
    a message with no text."""
    def calls_row(calls, content=""):
        return {"messages": [{"role": "user", "content": "날씨?"},
                             {"role": "assistant", "content": content, "tool_calls": calls},
                             {"role": "tool", "content": "20"}, {"role": "assistant", "content": "20도"}]}

    for calls, key in (([{"type": "function", "function": {"arguments": "{}"}}], "data.tool_call_no_name"),
                       ([{"function": {"name": " ", "arguments": "{}"}}], "data.tool_call_no_name"),
                       (["w"], "data.tool_call_no_name"), ("bad", "data.tool_calls_wrong_type"),
                       ({"name": "w"}, "data.tool_calls_wrong_type")):
        rec, probs = normalize_row(calls_row(calls), "messages")
        assert rec is None and [(f, k, p["index"]) for f, k, p in probs] == [("messages", key, 2)], calls
    rec, probs = normalize_row(calls_row([{"function": {"name": "w", "arguments": "{not json"}}]), "messages")
    assert not probs and '"arguments": "{not json"' in rec["messages"][1]["content"]  # kept as written, and said
    assert probs.notes == [("messages", "data.tool_arguments_not_json", {"index": 2, "name": "w"})]
    for calls in ([{"name": "w", "arguments": {"city": "서울"}}], "[]", None, []):  # Hermes' own form; none at all
        rec, probs = normalize_row(calls_row(calls, "" if isinstance(calls, list) and calls else "맑음"), "messages")
        assert rec is not None and not probs and not probs.notes, calls


def test_prompt_completion_standard_and_conversational():
    _, recs = records("prompt_completion.jsonl")
    assert recs[0] == {"prompt": [user("The capital of France is")], "completion": [bot(" Paris.")]}
    assert recs[1] == {"prompt": [user("스페인의 수도는?")], "completion": [bot("마드리드입니다.")]}


def test_preference_variants_all_normalise_to_prompt_chosen_rejected():
    _, recs = records("preference_columns.json")
    assert recs[1] == {"prompt": [user("하늘은 무슨 색인가요?")], "chosen": [bot("하늘은 파란색입니다.")],
                       "rejected": [bot("모르겠어요.")]}
    _, recs = records("preference_messages.jsonl")
    assert recs[0]["chosen"] == [bot("An apple 🍎.")]
    assert recs[1] == {"prompt": [user("2+2?")], "chosen": [bot("4")], "rejected": [bot("5")]}  # implicit prompt
    _, recs = records("preference_alpaca.json")
    assert recs[0] == {"prompt": [user("Translate to English.\n\n猫")], "chosen": [bot("Cat.")], "rejected": [bot("Dog.")]}
    assert recs[1]["chosen"] == [bot("Thank you very much!")]


def test_answers_that_repeat_the_prompt_are_cut_after_it():
    row = {"prompt": "Q?", "chosen": [user("Q?"), bot("Good.")], "rejected": [user("Q?"), bot("Bad.")]}
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("Q?")], "chosen": [bot("Good.")], "rejected": [bot("Bad.")]}


def test_anthropic_hh_transcripts_become_turns_sharing_the_prompt():
    """HH-RLHF keeps a pair as two transcripts, "\\n\\nHuman: ...\\n\\nAssistant: ...", and no prompt column."""
    talk = "\n\nHuman: 안녕하세요\n\nAssistant: 반갑습니다.\n\nHuman: Tell me a joke\n\nAssistant:"
    row = {"chosen": talk + " Why did the chicken cross the road?\n\nTo get to the other side.",
           "rejected": talk + " No."}
    assert detect_format([row]) == "preference"
    rec, probs = normalize_row(row, "preference")
    assert not probs
    assert rec == {"prompt": [user("안녕하세요"), bot("반갑습니다."), user("Tell me a joke")],
                   "chosen": [bot("Why did the chicken cross the road?\n\nTo get to the other side.")],
                   "rejected": [bot("No.")]}
    rec, probs = normalize_row({**row, "rejected": talk}, "preference")  # an empty last answer: said where
    assert rec is None and [(f, k, p.get("index")) for f, k, p in probs] == [("rejected", "data.empty_message", 4)]
    for other, at in (("\n\nHuman: Something else\n\nAssistant: No.", 1),  # another question: no prompt shared
                      (talk.replace("반갑습니다.", "안녕!") + " No.", 2)):  # they part before their last answers
        rec, probs = normalize_row({**row, "rejected": other}, "preference")
        assert rec is None and [(f, k, p["index"]) for f, k, p in probs] == [("chosen", "data.pair_prompts_differ", at)]
    rec, probs = normalize_row({"chosen": "Sure.", "rejected": "No."}, "preference")  # plain text: no prompt
    assert rec is None and [(f, k) for f, k, _ in probs] == [("prompt", "data.missing_field")]


def test_transcripts_in_a_prompt_or_a_conversation_cell_become_turns():
    """Dahoas/full-hh-rlhf keeps the HH transcript in `prompt` (ending "Assistant:"); it trained as one user turn
    holding "Human:" and "Assistant:". Glaive's `chat`, Guanaco's `### Human:` and `<usr>/<bot>` texts, mapped to
    conversations, were refused as text, and Capybara's {input, output} exchanges as messages without a role."""
    row = {"prompt": "\n\nHuman: 공룡은 어떤 소리를 냈나요?\n\nAssistant: 모릅니다.\n\nHuman: 추측해 보세요\n\nAssistant:",
           "chosen": " 아마 새처럼요.", "rejected": " 몰라요"}
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("공룡은 어떤 소리를 냈나요?"), bot("모릅니다."), user("추측해 보세요")],
                                 "chosen": [bot(" 아마 새처럼요.")], "rejected": [bot(" 몰라요")]}
    full = {**row, "chosen": row["prompt"] + " 아마 새처럼요."}  # the answer repeats the prompt's transcript: cut
    assert normalize_row(full, "preference")[0]["chosen"] == [bot("아마 새처럼요.")]
    glaive = ("USER: What's the USD to EUR rate?\n\n\nASSISTANT: <functioncall> {\"name\": \"rate\"} <|endoftext|>"
              "\n\n\nFUNCTION RESPONSE: {\"rate\": 0.85}\n\n\nASSISTANT: It is 0.85. <|endoftext|>\n")
    rec, probs = normalize_row({"conversations": glaive}, "sharegpt")
    assert not probs and rec["messages"] == [user("What's the USD to EUR rate?"), bot('<functioncall> {"name": "rate"}'),
                                             user('<tool_response>\n{"rate": 0.85}\n</tool_response>'),
                                             bot("It is 0.85.")]
    for text in ("### Human: 안녕?### Assistant: 안녕하세요! ### Human: 잘 가### Assistant: 또 봐요",
                 "<usr> 안녕?\n<bot> 안녕하세요!\n<usr> 잘 가\n<bot> 또 봐요"):
        rec, probs = normalize_row({"conversations": text}, "sharegpt")
        assert not probs and rec["messages"] == [user("안녕?"), bot("안녕하세요!"), user("잘 가"), bot("또 봐요")], text
    capybara = [{"input": "질문 하나", "output": "답 하나"}, {"input": "또?", "output": "네."}]  # exchanges
    rec, probs = normalize_row({"conversations": capybara}, "sharegpt")
    assert not probs and rec["messages"] == [user("질문 하나"), bot("답 하나"), user("또?"), bot("네.")]
    rec, probs = normalize_row({"conversations": "just some text"}, "sharegpt")  # not a transcript: as before
    assert rec is None and [(f, k) for f, k, _ in probs] == [("conversations", "data.wrong_type")]


def test_a_pair_whose_prompt_is_an_alpaca_input_alone_reads_it():
    """distilabel's orca pairs (system, input, chosen, rejected) were refused: "the field prompt is missing"."""
    row = {"system": "", "input": "2+2?", "chosen": "4", "rejected": "5", "status": "tie"}
    assert detect_format([row]) == "preference"
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("2+2?")], "chosen": [bot("4")], "rejected": [bot("5")]}


def test_ranked_answers_pair_the_best_with_the_worst():
    """Nectar (a prompt, seven ranked answers) went in circles of mapping suggestions."""
    row = {"prompt": "\n\nHuman: 1 + 1?\n\nAssistant: ", "turns": 1,
           "answers": [{"answer": "Two.", "model": "a", "rank": 2.0}, {"answer": "2", "model": "b", "rank": 1.0},
                       {"answer": "Eleven.", "model": "c", "rank": 3.0}]}
    assert detect_format([row]) == "preference"
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("1 + 1?")], "chosen": [bot("2")], "rejected": [bot("Eleven.")]}
    assert [f.key for f in analyze([row] * 2, measure=False).findings if f.key == "data.unused_column_maps"] == []


def test_shp_pairs_are_read_by_their_labels():
    """Stanford's SHP was refused, and its natural mapping (chosen=human_ref_A) flipped every pair labelled 0."""
    row = {"post_id": "x", "history": "Why is the sky blue?", "human_ref_A": "Rayleigh scattering.",
           "human_ref_B": "Because.", "labels": 1, "score_A": 52, "score_B": 5}
    assert detect_format([row]) == "preference"
    rec, probs = normalize_row(row, "preference")
    assert not probs and (rec["prompt"], rec["chosen"], rec["rejected"]) == (
        [user("Why is the sky blue?")], [bot("Rayleigh scattering.")], [bot("Because.")])
    rec, _ = normalize_row({**row, "labels": 0}, "preference")
    assert (rec["chosen"], rec["rejected"]) == ([bot("Because.")], [bot("Rayleigh scattering.")])


def test_shp_labels_other_than_a_or_b_are_refused_at_their_row():
    """Any labels value but 1 meant "B was preferred": an empty cell, null, 2, and "A" itself trained B as chosen."""
    row = {"history": "질문?", "human_ref_A": "A 답변입니다", "human_ref_B": "B 답변입니다"}
    for value, a_chosen in ((1, True), ("1", True), (True, True), ("A", True), (1.0, True),
                            (0, False), ("0.0", False), (False, False), ("b", False)):
        rec, probs = normalize_row({**row, "labels": value}, "preference")
        assert not probs and rec["chosen"] == [bot("A 답변입니다" if a_chosen else "B 답변입니다")], value
    for value, got in ((None, "type.null"), ("", "type.empty"), (float("nan"), "type.null"), (2, "2"), (-1, "-1"),
                       ("xxx", "xxx"), ([1], "[1]")):
        rec, probs = normalize_row({**row, "labels": value}, "preference")
        assert rec is None and list(probs) == [("labels", "data.bad_shp_label", {"got": got})], value
    [(_, key, params)] = normalize_row({**row, "labels": None}, "preference")[1]
    assert message(key, params, "ko").endswith("null") and "None" not in message(key, params, "en")


def test_ranked_answers_without_ranks_or_all_tied_are_said_in_answers():
    """Answers with no usable rank were "chosen is missing" and "a preference row without rejected", fields the
    file does not have; answers all ranked 1 became a pair of two equally good answers, unsaid."""
    def answers(*items):
        return {"prompt": "질문", "answers": list(items)}
    rec, probs = normalize_row(answers({"answer": "a", "rank": "2"}, {"answer": "b", "rank": "1"}), "preference")
    assert not probs and (rec["chosen"], rec["rejected"]) == ([bot("b")], [bot("a")])  # ranks written as text
    for row in (answers({"answer": "a"}, {"answer": "b"}), answers({"answer": "a", "rank": 1}),
                answers("a", "b"), answers({"text": "a", "rank": 1}, {"text": "b", "rank": 2}),
                answers({"answer": "a", "rank": None}, {"answer": "b", "rank": 2})):
        rec, probs = normalize_row(row, "preference")
        assert rec is None and [(f, k) for f, k, _ in probs] == [("answers", "data.answers_not_ranked")], row
    rec, probs = normalize_row(answers({"answer": "a", "rank": 1}, {"answer": "b", "rank": 1.0}), "preference")
    assert rec is None and list(probs) == [("answers", "data.answers_tied", {"rank": "1"})]
    rec, probs = normalize_row(answers({"answer": "a", "rank": 1}, {"answer": "b", "rank": 1},
                                       {"answer": "c", "rank": 3}), "preference")  # a tie for the best is no matter
    assert not probs and rec["rejected"] == [bot("c")]


def test_tools_that_define_no_tool_are_none_or_refused():
    """`{}`, `[{}]`, `"{}"` and `"null"` added a 300-token tools prompt with an empty tool to the row; `{"a": 1}` or
    a list of messages was trained as a tool; `[1, 2, 3]` was "should be a list, but it is a list"."""
    row = {"instruction": "서울 날씨?", "output": "맑습니다"}
    plain, _ = normalize_row(row, "alpaca")
    for tools in ({}, [{}], "{}", "[{}]", "null", "None", "", None, []):
        rec, probs = normalize_row({**row, "tools": tools}, "alpaca")
        assert not probs and rec == plain, tools
    for tools, got in (({"a": 1}, '{"a": 1}'), ([1, 2, 3], "1"), ([{"role": "user", "content": "hi"}],
                                                                   '{"role": "user", "content": "hi"}'),
                       ([{"name": "w"}, {"function": {"description": "x"}}], '{"function": {"description": "x"}}')):
        rec, probs = normalize_row({**row, "tools": tools}, "alpaca")
        assert rec is None and [(f, k, p.get("got")) for f, k, p in probs] == [("tools", "data.not_a_tool", got)], tools
    rec, probs = normalize_row({**row, "tools": '{"broken json'}, "alpaca")
    assert rec is None and [(f, k) for f, k, _ in probs] == [("tools", "data.tools_not_json")]
    for tools in ([{"name": "w", "parameters": {}}], [{"type": "function", "function": {"name": "w"}}]):
        rec, probs = normalize_row({**row, "tools": tools}, "alpaca")
        assert not probs and '"w"' in rec["messages"][0]["content"], tools


def test_a_row_with_two_system_prompts_says_which_one_trains():
    """A ShareGPT row with a `system` column and a system turn lost the column's prompt without a word."""
    row = {"system": "최상위 시스템", "conversations": [{"from": "system", "value": "턴 시스템"},
                                                   {"from": "human", "value": "q"}, {"from": "gpt", "value": "답입니다"}]}
    rec, probs = normalize_row(row, "sharegpt")
    assert not probs and rec["messages"][0] == {"role": "system", "content": "턴 시스템"}
    assert probs.notes == [("system", "data.system_twice", {})]
    _, probs = normalize_row({**row, "system": " 턴 시스템"}, "sharegpt")  # the same prompt twice: nothing lost
    assert not probs.notes


def test_a_tool_result_after_the_user_is_said_to_have_no_call():
    row = {"conversations": [{"from": "human", "value": "a"}, {"from": "tool", "value": "res"}, {"from": "gpt", "value": "b"}]}
    rec, probs = normalize_row(row, "sharegpt")
    assert rec is None and list(probs) == [("conversations", "data.tool_result_without_call", {"index": 2})]


def test_xlam_function_calling_rows_map_to_alpaca_with_tool_calls(tmp_path):
    """Salesforce's xLAM rows ({query, answers: JSON calls, tools: JSON definitions}) were refused with a mapping
    that then read the calls as the answer's text and left the tools out."""
    tools = [{"name": "weather", "description": "Weather of a city", "parameters": {"city": {"type": "str"}}}]
    calls = [{"name": "weather", "arguments": {"city": "Seoul"}}, {"name": "weather", "arguments": {"city": "Busan"}}]
    row = {"id": 0, "query": "서울과 부산 날씨?", "answers": json.dumps(calls, ensure_ascii=False), "tools": json.dumps(tools)}
    fmt, mapping = nearest_format(list(row))
    assert (fmt, mapping) == ("alpaca", {"instruction": "query", "output": "answers"})
    mapped = {"instruction": row["query"], "output": row["answers"], "tools": row["tools"]}
    assert detect_format([mapped]) == "alpaca"
    rec, probs = normalize_row(mapped, "alpaca")
    system, asked, answer = rec["messages"]
    assert not probs and asked == user("서울과 부산 날씨?") and '"description": "Weather of a city"' in system["content"]
    assert answer == bot('<tool_call>\n{"name": "weather", "arguments": {"city": "Seoul"}}\n</tool_call>\n'
                         '<tool_call>\n{"name": "weather", "arguments": {"city": "Busan"}}\n</tool_call>')
    # a list of records as the answer of a row with no tools is an answer like any other
    rec, probs = normalize_row({"instruction": "Who?", "output": '[{"name": "Al", "arguments": 1}]'}, "alpaca")
    assert not probs and rec["messages"][-1] == bot('[{"name": "Al", "arguments": 1}]')


def test_a_pair_whose_answers_repeat_another_conversation_says_which_question_differs():
    """UltraFeedback-style rows repeat the prompt in chosen; one that repeats another question was told "must contain
    only assistant messages", while the rows that repeat their own prompt pass."""
    row = {"prompt": "Explain gravity", "chosen": [user("Explain gravity"), bot("Mass attracts mass.")],
           "rejected": [bot("No.")]}
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec["chosen"] == [bot("Mass attracts mass.")]
    _, probs = normalize_row({**row, "chosen": [user("Explain magnets"), bot("Poles.")]}, "preference")
    assert probs == [("chosen", "data.answer_prompt_differs", {"got": "Explain magnets", "expected": "Explain gravity"})]
    _, probs = normalize_row({**row, "rejected": [bot("a"), {"role": "system", "content": "s"}]}, "preference")
    assert [p[1] for p in probs] == ["data.answer_not_assistant"]


def test_sharegpt_preference_with_chosen_and_rejected_messages():
    row = {"conversations": [{"from": "human", "value": "Q"}], "chosen": {"from": "gpt", "value": "A"},
           "rejected": {"from": "gpt", "value": "B"}}
    assert detect_format([row]) == "preference"
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("Q")], "chosen": [bot("A")], "rejected": [bot("B")]}


def test_conversations_as_json_text_in_csv_cells(tmp_path):
    p = tmp_path / "conv.csv"
    p.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}, {""role"": ""assistant"", ""content"": ""yo""}]"\n')
    fmt, recs = records_from(p)
    assert fmt == "messages" and recs == [{"messages": [user("hi"), bot("yo")]}]


def records_from(path):
    src = read_source(str(path))
    result = analyze(src.rows, numbers=src.numbers)
    return result.format, result.good


def test_column_mapping_makes_unknown_columns_known():
    src = read_source(str(FIX / "mapped.jsonl"))
    assert detect_format(src.rows) is None
    assert detect_format(src.rows, {"instruction": "question", "output": "answer"}) == "alpaca"
    fmt, recs = records("mapped.jsonl", columns={"instruction": "question", "output": "answer"})
    assert fmt == "alpaca" and recs[1] == {"messages": [user("¿Qué es esto?"), bot("Una prueba.")]}


def test_the_format_can_be_forced_and_aliases_work():
    fmt, recs = records("preference_columns.json", "prompt_completion", columns={"completion": "chosen"})
    assert fmt == "prompt_completion" and recs[0] == {"prompt": [user("What color is the sky?")],
                                                      "completion": [bot("The sky is blue.")]}
    fmt, recs = records("text.jsonl", "pt")
    assert fmt == "text" and recs[0] == {"text": "A document about tokenizers."}
    fmt, _ = records("messages.jsonl", "openai")
    assert fmt == "messages"
    src = read_source(str(FIX / "alpaca.json"))
    forced = analyze(src.rows, "sharegpt", numbers=src.numbers)
    assert forced.format == "sharegpt" and {f.key for f in forced.findings} == {"data.missing_field"}


def test_nearest_format_suggests_a_mapping():
    assert nearest_format(["question", "answer", "id"]) == ("alpaca", {"instruction": "question", "output": "answer"})
    assert nearest_format(["prompt", "good", "bad"])[0] == "preference"
    assert nearest_format(["user", "assistant"]) == ("alpaca", {"instruction": "user", "output": "assistant"})
    assert nearest_format(["Text"])[0] == "text"
    assert nearest_format(["dialog"]) == ("sharegpt", {"conversations": "dialog"})
    assert nearest_format(["id", "data"]) == ("sharegpt", {"conversations": "data"})  # UltraChat
    assert nearest_format(["id", "system_prompt", "question", "response"]) == (  # OpenOrca
        "alpaca", {"instruction": "question", "output": "response", "system": "system_prompt"})


def test_bare_texts_taking_turns_are_a_conversation_the_user_begins():
    """LIMA and UltraChat keep a conversation as a list of texts: user, assistant, user, ..."""
    row = {"conversations": ["인공지능이 뭐예요?", "기계가 배우는 분야입니다.", "Thanks", "You're welcome."]}
    assert detect_format([row]) == "sharegpt"
    rec, probs = normalize_row(row, "sharegpt")
    assert not probs and rec["messages"] == [user("인공지능이 뭐예요?"), bot("기계가 배우는 분야입니다."),
                                             user("Thanks"), bot("You're welcome.")]
    rec, probs = normalize_row({"conversations": ["Q"]}, "sharegpt")  # a question alone: nothing to learn
    assert rec is None and [k for _, k, _ in probs] == ["data.ends_without_answer"]
    rec, probs = normalize_row({"conversations": ["Q", {"from": "gpt", "value": "A"}]}, "sharegpt")  # a mix: refused
    assert rec is None and [k for _, k, _ in probs] == ["data.wrong_type_in_message"]


def test_an_empty_weight_cell_is_no_weight():
    """Parquet or pandas give a message without a weight NaN where others have one: that is no weight, not a bad one."""
    row = {"messages": [user("q"), {**bot("a"), "weight": float("nan")}, user("q2"), {**bot("b"), "weight": 0.0}]}
    record, problems = normalize_row(row, "messages")
    assert not problems and record["messages"][1] == bot("a") and record["messages"][3] == {**bot("b"), "weight": 0}


def test_an_empty_system_turn_is_no_system_prompt_as_an_empty_system_column_is():
    """SlimOrca and tables with a null cell hold `{"from": "system", "value": ""}`: it refused the row."""
    for empty in ("", None, "  "):
        row = {"conversations": [{"from": "system", "value": empty}, {"from": "human", "value": "Hi"},
                                 {"from": "gpt", "value": "Hello there!"}]}
        rec, probs = normalize_row(row, "sharegpt")
        assert not probs and rec["messages"] == [user("Hi"), bot("Hello there!")]
    row = {"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "Hello there!"}]}
    rec, probs = normalize_row(row, "sharegpt")  # an empty question is still an error
    assert rec is None and [k for _, k, _ in probs] == ["data.empty_message"]


def test_an_answer_repeating_its_prompt_is_cut_also_when_spaces_differ():
    """UltraFeedback-like rows whose prompt column has a trailing space were refused as "not only assistant"."""
    row = {"prompt": "What is 7*8? ", "chosen": [user("What is 7*8?"), bot("56.")],
           "rejected": [user("What is 7*8?"), bot("54.")]}
    rec, probs = normalize_row(row, "preference")
    assert not probs and rec == {"prompt": [user("What is 7*8? ")], "chosen": [bot("56.")], "rejected": [bot("54.")]}


def test_a_chat_opening_with_a_greeting_or_ending_on_a_question_is_trimmed_and_said():
    """ShareGPT dumps: an assistant greeting before the user, a last question left unanswered. Both refused the
    whole file; the conversation between them is what its writer meant to teach."""
    greeting = {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "gpt", "value": "안녕하세요!"},
                                  {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    rec, probs = normalize_row(greeting, "sharegpt")
    assert not probs and rec["messages"] == [{"role": "system", "content": "Be kind."}, user("Q"), bot("A")]
    assert probs.notes == [("conversations", "data.leading_answer_dropped", {"count": 1})]
    rec, probs = normalize_row({"messages": [user("Q"), bot("A"), user("Another one"), user("?")]}, "messages")
    assert not probs and rec["messages"] == [user("Q"), bot("A")]
    assert probs.notes == [("messages", "data.unanswered_dropped", {"count": 2})]
    from engine.data.check import check

    findings = check([greeting, {"messages": [user("Q"), bot("A"), user("More?")]}])
    assert [(f.row, f.severity, f.key) for f in findings if f.key.endswith("_dropped")] == [
        (1, "warning", "data.leading_answer_dropped"), (2, "warning", "data.unanswered_dropped")]
    rec, probs = normalize_row({"messages": [bot("A"), user("Q")]}, "messages")  # nothing left: refused as it was
    assert rec is None and [k for _, k, _ in probs] == ["data.starts_with_assistant"] and not probs.notes


def test_tool_definitions_are_told_in_the_system_message_and_calls_written_as_hermes_does():
    """OpenAI fine-tuning rows: `tools` reached no rendered text (the model learnt calls to functions it was
    never shown), and a call was the raw OpenAI list with its arguments as escaped JSON text."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "서울"}'}}
    row = {"tools": tools, "messages": [
        user("서울 날씨 어때?"), {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "tool", "tool_call_id": "c1", "content": "맑음"},
        {"role": "assistant", "content": "Let me check again.", "tool_calls": [call]},
        {"role": "tool", "content": "맑음"}, bot("맑습니다.")]}
    rec, probs = normalize_row(row, "messages")
    assert not probs
    system, *msgs = rec["messages"]
    assert system["role"] == "system" and '<tools>\n{"type": "function", "function": {"name": "get_weather"' in system["content"]
    hermes = '{"name": "get_weather", "arguments": {"city": "서울"}}'
    assert msgs[1]["content"] == f"<tool_call>\n{hermes}\n</tool_call>\n<tool_call>\n{hermes}\n</tool_call>"
    assert msgs[3]["content"] == f"Let me check again.\n<tool_call>\n{hermes}\n</tool_call>"
    rec, _ = normalize_row({**row, "tools": json.dumps(tools), "system": "Be brief."}, "messages")  # JSON text too
    assert rec["messages"][0]["content"].startswith("Be brief.\n\n# Tools")
    cell = {**row["messages"][1], "tool_calls": json.dumps([call])}  # a table's cell holds the calls as JSON text
    rec, probs = normalize_row({"messages": [user("Q"), cell, {"role": "tool", "content": "맑음"}, bot("맑음.")]},
                               "messages")
    assert not probs and rec["messages"][1]["content"] == f"<tool_call>\n{hermes}\n</tool_call>"

    from engine.data.check import check
    from engine.data.load import to_stage

    plain = {"messages": [user("Hi"), bot("Hello there, friend.")]}
    assert not [f for f in check([row, plain]) if f.key == "data.system_some_rows"]  # tools are no system prompt
    staged = to_stage(normalize_row(row, "messages")[0], "sft", "You are Tuneboard.")  # the run's prompt added
    assert staged["messages"][0]["content"].startswith("You are Tuneboard.\n\n# Tools")
    rec, probs = normalize_row({**row, "tools": "not tools"}, "messages")
    assert rec is None and [(f, k) for f, k, _ in probs] == [("tools", "data.wrong_type")]


def test_numbers_where_text_belongs_are_read_as_their_text_and_said():
    """`{"output": 42}` was an error in JSON and Parquet, while the same cell in a CSV trained as "42"."""
    rec, probs = normalize_row({"instruction": "2+40?", "output": 42}, "alpaca")
    assert not probs and rec["messages"][-1] == bot("42") and probs.notes == [
        ("output", "data.number_as_text", {"value": "42"})]
    rec, probs = normalize_row({"messages": [user("half?"), {"role": "assistant", "content": 0.5}]}, "messages")
    assert rec["messages"][-1] == bot("0.5") and probs.notes[0][1:] == ("data.number_as_text_in_message",
                                                                        {"value": "0.5", "index": 2})
    rec, probs = normalize_row({"prompt": "n?", "completion": 7}, "prompt_completion")
    assert rec["completion"] == [bot("7")]
    for value, key in ((True, "data.wrong_type"), (float("nan"), "data.empty_field")):  # no number; a table's empty cell
        rec, probs = normalize_row({"instruction": "q", "output": value}, "alpaca")
        assert rec is None and [k for _, k, _ in probs] == [key]


def test_a_corpus_with_a_null_leaves_out_that_document_alone(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text('["text one", null, "text two"]', encoding="utf-8")
    src = read_source(str(path))
    result = analyze(src.rows, numbers=src.numbers, lines=src.lines)
    assert result.format == "text" and [r["text"] for r in result.good] == ["text one", "text two"]
    assert [(f.row, f.severity, f.key) for f in result.findings] == [(2, "warning", "data.empty_text_skipped")]
    missing = read_source(str(tmp_path / "sheet.xlsx"))  # a file's name, not a hub dataset this machine can't reach
    assert missing.kind != "hub" and [f.key for f in missing.findings] == ["data.file_not_found"]


def test_a_cell_of_messages_as_pandas_writes_it_is_read_and_broken_json_in_a_cell_is_located():
    """pandas writes a list column into a CSV with Python's quotes; that and a cell of JSON cut short were both
    "should be a list of messages, but it is text"."""
    cell = str([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "it's fine"}])
    rec, probs = normalize_row({"messages": cell}, "messages")
    assert not probs and rec["messages"] == [user("hi"), bot("it's fine")]
    rec, probs = normalize_row({"messages": '[{"role": "user", "content": "hi"}, {"role": "assistant"'}, "messages")
    assert rec is None and list(probs) == [("messages", "data.cell_not_json",
                                            {"error": "json.expecting_comma", "column": 57})]
    rec, probs = normalize_row({"messages": "[{'role': __import__('os').getcwd()}]"}, "messages")
    assert rec is None and [k for _, k, _ in probs] == ["data.cell_not_json"]  # literals only: nothing is run


def test_a_cell_as_numpy_writes_an_array_is_read_item_by_item(tmp_path):
    """`datasets`' to_csv() writes a list column through numpy: items with no comma between them, every row refused
    (and `['hi' 'hello']`, read by Python, is one text joined)."""
    import numpy as np
    import pandas as pd

    msgs = [{"content": "안녕 } {x", "role": "user"}, {"content": "it's fine", "role": "assistant"}]
    p = tmp_path / "to_csv.csv"
    pd.DataFrame({"messages": [np.array(msgs, dtype=object)], "conversations": [np.array(["hi", "hello there"])]}
                 ).to_csv(p, index=False)
    assert "}\n {" in p.read_text(encoding="utf-8")  # as numpy writes it
    [row] = read_source(str(p)).rows
    for column, fmt, want in (("messages", "messages", [user("안녕 } {x"), bot("it's fine")]),
                              ("conversations", "sharegpt", [user("hi"), bot("hello there")])):
        rec, probs = normalize_row({column: row[column]}, fmt)
        assert not probs and rec["messages"] == want, column
