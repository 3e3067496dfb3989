"""The preview: chat-template text with the trained part marked, token counts, statistics."""


import numpy as np
import pytest
from world import FIX

from engine.data import check_file, marked, render, stats
from engine.data.tokens import count, token_lengths

CONV = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "안녕?"},
                     {"role": "assistant", "content": "안녕하세요! 🙂"}, {"role": "user", "content": "Bye"},
                     {"role": "assistant", "content": "Bye!"}]}


@pytest.fixture(scope="module")
def tok():
    from engine.demo import build_tokenizer

    texts = [(FIX / n).read_text(encoding="utf-8-sig") for n in ("alpaca.json", "sharegpt.json", "messages.jsonl")]
    return build_tokenizer(texts * 3, vocab_size=400)


def test_chatml_preview_without_a_tokenizer_marks_assistant_turns():
    [view] = render(CONV)
    assert view["estimated"] and view["label"] is None
    assert view["text"].startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n안녕?<|im_end|>\n")
    assert [s["text"] for s in view["segments"] if s["loss"]] == ["안녕하세요! 🙂<|im_end|>", "Bye!<|im_end|>"]
    assert marked(view).endswith("<|im_start|>assistant\n[[Bye!<|im_end|>]]\n")
    assert 0 < view["loss_tokens"] < view["tokens"]


def test_all_turns_train_when_assistant_only_is_off():
    [view] = render(CONV, assistant_only=False)
    assert sum(s["loss"] for s in view["segments"]) == 5


def test_tokenizer_template_preview_is_exact(tok):
    [view] = render(CONV, tok)
    assert view["text"] == tok.apply_chat_template(CONV["messages"], tokenize=False)
    assert "".join(s["text"] for s in view["segments"]) == view["text"]
    assert [s["text"] for s in view["segments"] if s["loss"]] == ["안녕하세요! 🙂<|im_end|>", "Bye!<|im_end|>"]
    assert view["tokens"] == len(tok(view["text"], add_special_tokens=False)["input_ids"]) and not view["estimated"]


@pytest.mark.parametrize("answer", ["a", "m"])  # letters of <|im_start|> / <|im_end|> themselves
def test_a_short_answer_is_marked_where_it_is_not_inside_the_template(tok, answer):
    msgs = [{"role": "user", "content": "Pick a letter"}, {"role": "assistant", "content": answer}]
    [view] = render({"messages": msgs}, tok)
    assert "".join(s["text"] for s in view["segments"]) == view["text"]
    assert marked(view).endswith(f"<|im_start|>assistant\n[[{answer}<|im_end|>]]\n")


def test_preference_preview_shows_chosen_and_rejected_and_only_answers_train(tok):
    rec = {"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "earlier"},
                      {"role": "user", "content": "Q2"}],
           "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}
    views = render(rec, tok)
    assert [v["label"] for v in views] == ["chosen", "rejected"]
    assert [s["text"] for s in views[1]["segments"] if s["loss"]] == ["bad<|im_end|>"]  # not the earlier turn


def test_plain_text_trains_on_everything():
    [view] = render({"text": "전부 학습합니다."})
    assert view["segments"] == [{"text": "전부 학습합니다.", "loss": True}] and view["loss_tokens"] == view["tokens"]


def test_whole_dataset_lengths_match_the_rendered_preview(tok):
    recs = [CONV, {"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant", "content": "b c"}]},
            {"text": "plain words here"}]
    lengths, how = token_lengths(recs, tok)
    assert how == "exact"
    assert list(lengths) == [render(r, tok)[0]["tokens"] for r in recs]


def test_big_datasets_are_calibrated_and_rows_near_the_cutoff_counted_exactly(tok):
    rng = np.random.default_rng(0)
    words = ["hello", "world", "안녕하세요", "你好", "cats", "🐱"]
    recs = [{"messages": [{"role": "user", "content": " ".join(rng.choice(words, 20))},
                          {"role": "assistant", "content": " ".join(rng.choice(words, int(rng.integers(5, 120))))}]}
            for _ in range(400)]
    exact, how = token_lengths(recs, tok)
    cutoff = int(np.percentile(exact, 97))
    approx, calibrated = token_lengths(recs, tok, max_length=cutoff, budget=40_000)
    assert (how, calibrated) == ("exact", "calibrated")
    assert abs(np.median(approx) - np.median(exact)) <= 0.1 * np.median(exact)
    over = exact > cutoff
    assert over.any() and (approx[over] == exact[over]).all()  # the rows that decide the cutoff warning
    assert ((approx > cutoff) == over).all()


def test_estimates_count_cjk_characters_as_tokens():
    assert list(count(None, ["abcdefgh", "안녕하세요", ""])) == [2, 5, 0]


def test_stats_histogram_cutoff_and_packing():
    s = stats(np.array([10, 20, 30, 200]), max_length=100, counting="exact")
    assert (s["rows"], s["min"], s["max"], s["total"], s["estimated"]) == (4, 10, 200, 260, False)
    assert sum(s["histogram"]["counts"]) == 4 and s["histogram"]["edges"][0] == 0 and s["histogram"]["edges"][-1] == 200
    assert (s["over_cutoff"], s["tokens_cut"], s["packed_sequences"]) == (1, 100, 2)
    assert stats(None)["rows"] == 0


def test_check_file_report_has_preview_and_stats(tok):
    r = check_file(str(FIX / "alpaca.json"), tokenizer=tok, max_length=4096, preview_rows=2)
    assert r.format == "alpaca" and r.kind == "conversational language modeling" and r.rows == 4 and r.valid == 4
    assert [p["row"] for p in r.preview] == [1, 2] and r.preview[0]["record"]["messages"][0]["content"].startswith("한국")
    assert r.stats["counting"] == "exact" and r.stats["rows"] == 4
    d = r.to_dict()
    assert d["trainable"] and d["preview"][0]["views"][0]["segments"]


def test_an_answer_with_weight_zero_is_shown_as_context(tok):
    conv = {"messages": [{"role": "user", "content": "Capital of France?"},
                         {"role": "assistant", "content": "Paris", "weight": 0},
                         {"role": "user", "content": "More sarcastic?"}, {"role": "assistant", "content": "Paris, obviously."}]}
    for t in (None, tok):
        [view] = render(conv, t)
        assert [s["text"] for s in view["segments"] if s["loss"]] == ["Paris, obviously.<|im_end|>"]


def test_without_answer_only_loss_a_weight_zero_answer_trains_like_the_rest():
    conv = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A", "weight": 0}]}
    [view] = render(conv, assistant_only=False)
    assert [s["text"] for s in view["segments"] if s["loss"]] == ["Q?<|im_end|>", "A<|im_end|>"]


def test_a_row_past_the_cutoff_shows_where_training_cuts_it(tok):
    """Training keeps a conversation's first max_length tokens: the preview marks the rest as cut away and counts
    only the kept answer as trained. Plain text is split into pieces instead, so it is not marked."""
    record = {"messages": [{"role": "user", "content": "짧은 질문"}, {"role": "assistant", "content": "긴 답 " * 300}]}
    [view] = render(record, tok, max_length=64)
    kept = "".join(s["text"] for s in view["segments"] if not s.get("cut"))
    assert view["cut_at"] == 64 and view["segments"][-1]["cut"] and not view["segments"][-1]["loss"]
    assert abs(len(tok(kept, add_special_tokens=False)["input_ids"]) - 64) <= 1  # a character split in two tokens
    assert view["tokens"] > 600 and 40 < view["loss_tokens"] < 64
    assert "✂" in marked(view) and marked(view).count("긴 답") < 40
    [whole] = render(record, tok, max_length=4096)
    assert "cut_at" not in whole and not any(s.get("cut") for s in whole["segments"])
    [text] = render({"text": "긴 글 " * 300}, tok, max_length=64)
    assert "cut_at" not in text


def test_a_text_on_one_long_line_is_counted_in_pieces_to_the_same_total(tok, monkeypatch):
    """A 6 MB line took 59 s and 3.4 GB to check, its encoding held whole; counted in pieces cut at spaces it is
    the same number of tokens."""
    from engine.data import tokens

    text = "한 줄로 저장된 아주 긴 책입니다, with English words in it too. " * 3000  # ~140 k characters
    whole = int(tokens.count(tok, [text])[0])
    monkeypatch.setattr(tokens, "LONG_TEXT", 20_000)
    seen = []

    def spy(texts, **kw):  # what the tokenizer is given at once
        seen.append(max(map(len, [texts] if isinstance(texts, str) else texts)))
        return tok(texts, **kw)

    assert int(tokens.count(spy, [text, "short"])[0]) == whole and max(seen) <= 5_000


def test_the_light_tokenizer_counts_and_renders_as_transformers_does(demo_model, tmp_path):
    """`tuneboard check` and the Data tab count tokens without transformers; their counts, offsets, template
    renderings and token lengths are the ones training gets from transformers' tokenizer, for the built demo and
    for the one trained on the spot where it is not built."""
    from transformers import AutoTokenizer

    from engine.data.light_tokenizer import LightTokenizer
    from engine.demo import check_tokenizer

    real = AutoTokenizer.from_pretrained(demo_model)
    texts = ["Hello, world!", "안녕하세요, 모델입니다.", "  spaces\tand\nlines  ", "emoji 🙂 and 漢字", ""]
    convs = [CONV["messages"], CONV["messages"][1:3]]
    for light in (LightTokenizer(demo_model), check_tokenizer(tmp_path / "not-built")):
        assert light(texts)["input_ids"] == real(texts, add_special_tokens=False)["input_ids"]
        assert light(texts[1], return_offsets_mapping=True)["offset_mapping"] == \
            real(texts[1], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for conv in convs:
            for gen in (False, True):
                assert light.apply_chat_template(conv, add_generation_prompt=gen) == \
                    real.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        assert light.eos_token == real.eos_token
        records = [CONV, {"text": texts[1]}]
        assert token_lengths(records, light)[0].tolist() == token_lengths(records, real)[0].tolist()
    assert not (tmp_path / "not-built").exists(), "checking data builds no model"
