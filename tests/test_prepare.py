"""Batched preparation (engine/prepare.py): the same ids and labels as transformers' row-by-row path, answers
found without `{% generation %}` marks, the cutoff's cuts, splits and drops said, a refusing template named."""

import json
import shutil

import datasets
import pytest
from world import DEMO_ROWS, FIX, logged_losses, tiny_sft_config, train_run

from engine.config import RunConfig
from engine.events import Error, Warning, read_events
from engine.messages import TuneboardError
from engine.prepare import prepare
from engine.runs import create_run
from engine.train import run_training

# ChatML without `{% generation %}` marks, a template trl cannot patch either: answers are found by prefixes
PLAIN_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TALK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And another?"},
        {"role": "assistant", "content": "Green, like grass."}]


@pytest.fixture(scope="module")
def tok(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)


def _rows(convs):
    return datasets.Dataset.from_list([{"messages": c} for c in convs])


def _answers(tok, row) -> str:
    """The text of the labelled tokens, runs joined by '|'."""
    runs, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"], strict=True):
        if lab != -100:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    return "|".join(tok.decode(r) for r in runs + ([cur] if cur else []))


def test_ids_and_labels_match_transformers_assistant_mask(tok):
    from engine.data import load_training_data

    train, _ = load_training_data(RunConfig.from_dict({"stage": "sft", "data": {"datasets": [{"path": "demo:sft"}]}}))
    out = prepare(train, tok, answers_only=True, max_length=10_000, packing=False)
    assert out.rows == len(train) and out.cut == out.dropped == out.untrained == 0
    for row, got in zip(train, out.dataset, strict=True):
        enc = tok.apply_chat_template(row["messages"], return_dict=True, return_assistant_tokens_mask=True)
        assert got["input_ids"] == list(enc["input_ids"])
        assert got["labels"] == [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)]
        assert any(m for m in enc["assistant_masks"]) and not all(enc["assistant_masks"])


def test_every_answer_is_found_without_generation_marks(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = PLAIN_CHATML
    row = prepare(_rows([TALK]), tok, answers_only=True, max_length=10_000, packing=False).dataset[0]
    assert _answers(tok, row) == "Blue.<|im_end|>\n|Green, like grass.<|im_end|>\n"
    assert tok.decode(row["input_ids"]) == tok.apply_chat_template(TALK, tokenize=False)


def test_a_template_that_rewrites_earlier_turns_still_labels_the_last_answer(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    # earlier answers are shortened to "...", so a conversation rendered up to them is no prefix of the whole
    tok.chat_template = PLAIN_CHATML.replace("message['content']",
                                             "('...' if message['role'] == 'assistant' and not loop.last "
                                             "else message['content'])")
    row = prepare(_rows([TALK]), tok, answers_only=True, max_length=10_000, packing=False).dataset[0]
    assert _answers(tok, row) == "Green, like grass.<|im_end|>\n"


def test_a_template_that_renders_the_last_turn_differently_still_labels_every_answer(tok):
    """Like Qwen3's empty reasoning block on the last answer only: no prefix holds for the earlier answer, so its
    own text is found after its prompt."""
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = PLAIN_CHATML.replace(
        "message['content'] + '<|im_end|>\n'",
        "('<think></think>' if loop.last and message['role'] == 'assistant' else '') + message['content'] + "
        "'<|im_end|>\n'")
    row = prepare(_rows([TALK]), tok, answers_only=True, max_length=10_000, packing=False).dataset[0]
    # the earlier answer up to its end-of-turn marker; the last one as the template writes it, block included
    assert _answers(tok, row) == "Blue.<|im_end|>|<think></think>Green, like grass.<|im_end|>\n"


def test_a_tokenizer_with_named_templates_uses_its_default(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = {"default": PLAIN_CHATML, "tool_use": "{{ raise_exception('not this one') }}"}
    row = prepare(_rows([TALK]), tok, answers_only=True, max_length=10_000, packing=False).dataset[0]
    assert _answers(tok, row) == "Blue.<|im_end|>\n|Green, like grass.<|im_end|>\n"


def test_an_answer_ending_in_a_character_split_over_tokens_keeps_all_of_it(tok):
    """Byte-level BPE can split one Korean character over several tokens; each of them belongs to the answer."""
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = tok.chat_template.replace(
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
        "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}")
    talk = [{"role": "user", "content": "인사해 주세요"}, {"role": "assistant", "content": "안녕하세요, 세계"}]
    row = prepare(_rows([talk]), tok, answers_only=True, max_length=10_000, packing=False).dataset[0]
    enc = tok.apply_chat_template(talk, return_dict=True, return_assistant_tokens_mask=True)
    assert row["labels"] == [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)]
    assert tok.decode([t for t in row["labels"] if t != -100]) == "안녕하세요, 세계"


def test_without_answers_only_every_token_is_labelled(tok):
    row = prepare(_rows([TALK]), tok, answers_only=False, max_length=10_000, packing=False).dataset[0]
    assert row["labels"] == row["input_ids"]


def test_the_cutoff_cuts_conversations_and_drops_those_left_without_an_answer(tok):
    long_prompt = [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "Yes."}]
    long_answer = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 80}]
    out = prepare(_rows([TALK[1:3], long_prompt, long_answer]), tok, answers_only=True, max_length=32, packing=False)
    assert (out.rows, out.cut, out.dropped, out.untrained) == (3, 1, 1, 0)
    assert len(out.dataset) == 2 and all(len(r["input_ids"]) <= 32 for r in out.dataset)
    assert [len(r["input_ids"]) for r in out.dataset][1] == 32  # the long answer, cut at its start


def test_plain_texts_are_split_into_pieces_not_cut(tok):
    text = " ".join(f"line {i} of a long document" for i in range(40))
    ds = datasets.Dataset.from_list([{"text": text}, {"text": "short"}])
    out = prepare(ds, tok, answers_only=False, max_length=16, packing=False)
    whole = tok(text + tok.eos_token)["input_ids"]
    pieces = [r["input_ids"] for r in out.dataset][:-1]
    assert out.cut == 1 and out.dropped == 0 and len(pieces) == -(-len(whole) // 16)
    assert [t for p in pieces for t in p] == whole and all(len(p) <= 16 for p in pieces)


def test_rows_longer_than_the_models_maximum_are_cut_without_transformers_warning(tok):
    """transformers warns that a text past `model_max_length` "will result in indexing errors": not so here, where
    every row is cut or split to max_length after tokenising, so a run's log must not say it. (transformers marks
    the warning as given in `deprecation_warnings`, whatever its logging level.)"""
    import copy

    warned = "sequence-length-is-longer-than-the-specified-maximum"
    long_tok = copy.deepcopy(tok)
    long_tok.model_max_length = 8
    long_tok.deprecation_warnings.clear()
    talk = _rows([[{"role": "user", "content": "word " * 20}, {"role": "assistant", "content": "word " * 20}]])
    texts = datasets.Dataset.from_list([{"text": "word " * 40}])
    for ds, answers_only in ((talk, True), (talk, False), (texts, False)):
        out = prepare(ds, long_tok, answers_only=answers_only, max_length=64, packing=False)
        assert len(out.dataset) >= 1 and all(len(r["input_ids"]) <= 64 for r in out.dataset)
    assert not long_tok.deprecation_warnings.get(warned)
    long_tok("word " * 20)  # what this test looks for: transformers still warns outside of `prepare`
    assert long_tok.deprecation_warnings.get(warned)


def test_packing_keeps_every_token_and_its_label(tok):
    convs = [TALK, TALK[1:3], TALK[:3]] * 5
    flat = prepare(_rows(convs), tok, answers_only=True, max_length=64, packing=False).dataset
    packed = prepare(_rows(convs), tok, answers_only=True, max_length=64, packing=True).dataset
    assert len(packed) < len(flat)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == sorted(len(r["input_ids"]) for r in flat)
    assert sum(r["labels"].count(-100) for r in packed) == sum(r["labels"].count(-100) for r in flat)


def test_a_template_that_refuses_a_conversation_is_named_with_the_row(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start "
                         "with the user') }}{% endif %}" + PLAIN_CHATML)
    with pytest.raises(TuneboardError) as e:
        prepare(_rows([TALK[1:3], TALK]), tok, answers_only=True, max_length=64, packing=False)
    assert e.value.key == "error.template_failed"
    assert "start with the user" in e.value.params["error"] and "Be brief." in e.value.params["row"]


def test_a_model_whose_template_has_no_marks_trains_on_its_answers(workdir, demo_model, tmp_path):
    """trl refuses a template it cannot patch; the engine finds the answers itself, and the model learns."""
    model = tmp_path / "plain-template"
    shutil.copytree(demo_model, model)
    for f in model.glob("chat_template.jinja"):
        f.write_text(PLAIN_CHATML)
    cfg_file = model / "tokenizer_config.json"
    tc = json.loads(cfg_file.read_text())
    if "chat_template" in tc:
        tc["chat_template"] = PLAIN_CHATML
        cfg_file.write_text(json.dumps(tc))
    run = train_run(workdir, {**tiny_sft_config(max_steps=12), "model": {"name_or_path": str(model)}})
    losses = logged_losses(run)
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.7 * losses[0]
    assert json.loads((run / "resolved.json").read_text())["chat_template"] == "tokenizer"


def test_rows_dropped_by_the_cutoff_are_said_and_a_cutoff_that_leaves_nothing_is_refused(workdir):
    cfg = tiny_sft_config(max_steps=1)
    cfg["data"]["max_length"] = 16  # the demo's prompts take 14 to 20 tokens: the longer ones fill it
    events = read_events(str(train_run(workdir, cfg) / "events.jsonl"))
    said = {e.key: e.params for e in events if isinstance(e, Warning)}
    assert said["warning.rows_dropped"]["count"] > 0 and said["warning.rows_cut"]["count"] > 0
    assert said["warning.rows_dropped"]["rows"] == DEMO_ROWS

    cfg["data"]["max_length"] = 12  # shorter than every prompt
    run = create_run(RunConfig.from_dict(cfg), workdir)
    with pytest.raises(TuneboardError, match=f"None of the {DEMO_ROWS} rows"):
        run_training(RunConfig.from_dict(cfg), run, workdir=workdir)
    errors = [e for e in read_events(str(run / "events.jsonl")) if isinstance(e, Error)]
    assert [e.key for e in errors] == ["error.no_answer_within_cutoff"]


@pytest.mark.parametrize("marks", [True, False])
def test_answers_with_weight_zero_stay_as_context_only(tok, marks):
    """OpenAI's `weight: 0` answers are rendered and tokenised but carry no label; a row of only those is left out."""
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    if not marks:
        tok.chat_template = PLAIN_CHATML
    weighted = [dict(m, weight=0) if m["content"] == "Blue." else m for m in TALK]
    none_trained = [TALK[1], dict(TALK[2], weight=0)]
    out = prepare(_rows([weighted, TALK, none_trained]), tok, answers_only=True, max_length=10_000, packing=False)
    assert (out.rows, out.dropped, out.untrained) == (3, 0, 1)
    first, plain = out.dataset[0], out.dataset[1]
    assert first["input_ids"] == plain["input_ids"]  # the weight changes the labels, not the text
    end = "<|im_end|>" + ("" if marks else "\n")
    assert _answers(tok, first) == f"Green, like grass.{end}"
    assert _answers(tok, plain) == f"Blue.{end}|Green, like grass.{end}"


def test_a_run_says_which_rows_had_nothing_to_train_and_refuses_data_with_nothing(workdir, tmp_path):
    rows = [json.loads(line) for line in (FIX / "openai_weights.jsonl").read_text(encoding="utf-8").splitlines()[:2]]
    data = tmp_path / "weights.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cfg = tiny_sft_config(max_steps=1)
    cfg["data"] = {"datasets": [{"path": str(data)}], "max_length": 128, "val_size": 0}
    events = read_events(str(train_run(workdir, cfg) / "events.jsonl"))
    assert {e.key: e.params["count"] for e in events if isinstance(e, Warning)} == {"warning.rows_untrained": 1}

    data.write_text(json.dumps(rows[1], ensure_ascii=False), encoding="utf-8")  # its one answer has weight 0
    with pytest.raises(TuneboardError) as e:
        train_run(workdir, cfg)
    assert e.value.key == "error.no_trained_answer"
