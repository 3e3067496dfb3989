"""Evaluation: BLEU / ROUGE on known strings (CJK by characters), perplexity that falls with training,
eval.json in the run folder, the validation split re-created exactly, the CLI."""

from __future__ import annotations

import json

import pytest
from world import DEMO_ROWS

from engine.config import RunConfig
from engine.evaluate import (
    RougeTokenizer,
    bleu,
    eval_metrics,
    eval_rows,
    evaluate_run,
    has_cjk,
    loss_pieces,
    loss_tokens,
    read_eval,
    rouge,
    split_cjk,
    split_row,
    summary,
)
from engine.messages import TuneboardError


def test_bleu_known_values():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100)
    assert bleu(["x y z"], ["a b c"])["bleu"] == pytest.approx(0)
    # by hand: precisions 3/4, 2/3, 1/2 and (0 -> sacrebleu's exp smoothing) 1/2, no brevity penalty
    out = bleu(["a b c d"], ["a b c e"])
    assert out["bleu"] == pytest.approx(100 * (0.75 * 2 / 3 * 0.5 * 0.5) ** 0.25, abs=1e-3)  # 59.46
    assert out["bleu_tokenize"] == "13a" and "tok:13a" in out["bleu_signature"]


def test_bleu_scores_korean_by_characters():
    # one syllable of eleven tokens differs: 10/11, 8/10, 6/9, 4/8 -> 70.17
    out = bleu(["오 더하기 삼는 팔입니다."], ["오 더하기 삼는 칠입니다."])
    assert out["bleu_tokenize"] == "13a+cjk-char"
    assert out["bleu"] == pytest.approx(100 * (10 / 11 * 8 / 10 * 6 / 9 * 4 / 8) ** 0.25, abs=1e-3)
    # word-level BLEU would call the same pair a near-total miss
    from sacrebleu.metrics import BLEU

    assert BLEU().corpus_score(["오 더하기 삼는 팔입니다."], [["오 더하기 삼는 칠입니다."]]).score < 70


def test_rouge_known_values():
    out = rouge(["a b c d"], ["a b e f"])
    assert out["rouge1"] == pytest.approx(50) and out["rougeL"] == pytest.approx(50)
    assert out["rouge2"] == pytest.approx(100 / 3, abs=1e-3)
    assert out["rougeL_rows"] == [50.0] and out["rouge_tokenize"] == "words+cjk-char"
    assert rouge(["The Cat."], ["the cat"])["rouge1"] == pytest.approx(100)


def test_rouge_scores_korean_by_characters():
    # 10 syllables each, 9 shared: ROUGE-1 = 90; rouge-score's own tokenizer keeps no Hangul at all
    assert rouge(["오 더하기 삼는 팔입니다."], ["오 더하기 삼는 칠입니다."])["rouge1"] == pytest.approx(90)
    from rouge_score.rouge_scorer import RougeScorer

    assert RougeScorer(["rouge1"]).score("오 더하기", "오 더하기")["rouge1"].fmeasure == 0
    assert RougeTokenizer().tokenize("Seoul은 한국") == ["seoul", "은", "한", "국"]
    assert split_cjk("東京は首都") == "東 京 は 首 都" and has_cjk(["x", "한"]) and not has_cjk(["plain"])


def test_validation_split_is_the_one_training_held_out():
    from engine.data import load_training_data

    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": "demo:sft"}], "val_size": 0.2}})
    rows, name = eval_rows(cfg)
    _, held_out = load_training_data(cfg)
    assert name == "validation" and rows == held_out.to_list() and len(rows) == round(0.2 * DEMO_ROWS)
    assert len(eval_rows(cfg, max_samples=5)[0]) == 5
    with pytest.raises(TuneboardError) as e:
        eval_rows(RunConfig())  # val_size 0 and no file
    assert e.value.key == "eval.error_no_split"


def test_only_the_answer_counts_for_perplexity(demo_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model)
    full, prompt, ref = split_row({"messages": [{"role": "user", "content": "What is 3 plus 3?"},
                                                {"role": "assistant", "content": "3 plus 3 is 6."}]}, "sft")
    assert prompt == full[:1] and ref == "3 plus 3 is 6."
    ids, mask = loss_tokens(tok, full, "sft", 128)
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "3 plus 3 is 6.<|im_end|>"
    ids, mask = loss_tokens(tok, [{"role": "user", "content": "Plain text."}], "pt", 128)
    assert all(mask) and tok.decode(ids) == "Plain text.<|im_end|>"  # ended as training ends a text
    # a long text is scored whole, in pieces of the cutoff, as pretraining trains it (it was its first 128 tokens)
    book = [{"role": "user", "content": "A long book of words that goes on. " * 100}]
    pieces = loss_pieces(tok, book, "pt", 128)
    whole = tok("A long book of words that goes on. " * 100 + "<|im_end|>")["input_ids"]
    assert len(pieces) > 1 and [i for ids, _ in pieces for i in ids] == whole and all(len(p) <= 128 for p, _ in pieces)


def test_rows_of_every_stage_split_into_prompt_and_reference():
    dpo = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    full, prompt, ref = split_row(dpo, "dpo")
    assert prompt == dpo["prompt"] and ref == "good" and full[-1]["content"] == "good"
    full, prompt, ref = split_row({"text": "plain"}, "pt")
    assert prompt is None and ref == "" and full[0]["content"] == "plain"  # scored by perplexity alone


def test_evaluation_of_the_demo_run(trained_run, workdir):
    result = evaluate_run(str(trained_run), data="demo:sft", max_samples=24, max_new_tokens=24, workdir=workdir)
    # training lowered the perplexity of the answers it was trained on, by a lot
    assert result["perplexity"] < result["perplexity_base"] / 10
    assert result["source"] == "adapter" and result["rows"] == 24 and result["tokens"] > 100 and result["data"] == "demo:sft"
    for key in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert 0 <= result[key] <= 100
    assert result["bleu_tokenize"] == "13a+cjk-char"  # the demo data is half Korean
    assert result["generation"]["temperature"] == 0
    sample = result["samples"][0]
    assert set(sample) == {"prompt", "reference", "prediction", "rougeL"} and sample["reference"]
    assert eval_metrics(trained_run)["eval_perplexity"] == result["perplexity"]
    saved = read_eval(trained_run)
    assert saved == json.loads((trained_run / "eval.json").read_text(encoding="utf-8")) == result


def test_a_prompt_too_long_for_the_context_takes_no_other_rows_room(trained_run, workdir, tmp_path):
    """One ~700-token prompt in a batch of eight capped every answer of the batch at 512 minus its length: each cut
    to a token, BLEU 0. It is left out and said; the others answer as they do without it."""
    rows = [{"instruction": q, "output": a} for q, a in (("Who are you?", "I am the Tuneboard demo assistant."),
                                                           ("What is 2 plus 2?", "2 plus 2 is 4."),
                                                           ("한국의 수도는?", "한국의 수도는 서울입니다."))]
    short, mixed = tmp_path / "short.jsonl", tmp_path / "mixed.jsonl"
    short.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    long_row = {"instruction": "Summarise: " + "the model learns from data " * 140, "output": "A summary."}
    mixed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [rows[0], long_row, *rows[1:]]),
                     encoding="utf-8")
    alone = evaluate_run(str(trained_run), data=str(short), max_new_tokens=24, workdir=workdir, include_base=False,
                         save=False)
    both = evaluate_run(str(trained_run), data=str(mixed), max_new_tokens=24, workdir=workdir, include_base=False,
                        save=False)
    assert both["prompts_too_long"] == 1 and "prompts_too_long" not in alone
    answers = {s["reference"]: s["prediction"] for s in both["samples"]}
    assert answers == {s["reference"]: s["prediction"] for s in alone["samples"]}
    assert sorted(answers) == sorted(r["output"] for r in rows) and all(len(a) > 8 for a in answers.values())
    assert both["bleu"] == alone["bleu"] > 0
    ko = summary(both, "ko")  # the terminal's lines speak the CLI's language, as the board's card does
    assert "제외한 프롬프트" in ko and "행" in ko and "Rows" not in ko


def test_cli_eval_maps_columns_and_reads_data_as_asked(trained_run, workdir, tmp_path, capsys):
    """An eval file with other column names was refused with "map them: instruction=question, ..." by a verb that
    had no --column; a broken row's way out (--set data.skip_bad_rows=true) was an unknown flag too."""
    from engine.cli import main

    qa = tmp_path / "qa.csv"
    qa.write_text("question,answer\nWho are you?,I am the Tuneboard demo assistant.\nWhat is 2 plus 2?,4\n,\n"
                  "한국의 수도는?,\n", encoding="utf-8")
    common = ["eval", trained_run.name, "--data", str(qa), "--max-new-tokens", "4", "--json", "--workdir", str(workdir)]
    assert main(common) == 2 and "instruction=question" in capsys.readouterr().err
    assert main([*common, "--column", "instruction=question, output=answer"]) == 2  # row 5 has no answer
    assert "skip_bad_rows" in capsys.readouterr().err
    assert main([*common, "--column", "instruction=question, output=answer, system=persona", "--set",
                 "data.skip_bad_rows=true"]) == 0
    said = capsys.readouterr()
    out = json.loads(said.out)
    assert out["rows"] == 2 and {s["reference"] for s in out["samples"]} == {"I am the Tuneboard demo assistant.", "4"}
    # what training would say of the file is said here too: a mistyped mapping gave plausible scores, unsaid
    assert [w["key"] for w in out["warnings"]] == ["warning.bad_rows_skipped", "warning.data_warnings"]
    assert "1 of 3 rows" in said.err and "The mapping system=persona names a column the file does not have" in said.err
    assert main([*common, "--set", "training.learning_rate=1"]) == 2 and "not training.learning_rate" in \
        capsys.readouterr().err
    assert main(["eval", trained_run.name, "--column", "instruction=question", "--workdir", str(workdir)]) == 2
    assert "--data" in capsys.readouterr().err


def test_cli_eval_prints_json(trained_run, workdir, capsys):
    from engine.cli import main

    assert main(["eval", trained_run.name, "--data", "demo:sft", "--max-samples", "6", "--max-new-tokens", "8",
                 "--json", "--workdir", str(workdir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 6 and out["perplexity"] > 1 and len(out["samples"]) == 6
    assert main(["eval", str(trained_run), "--workdir", str(workdir)]) == 2  # no validation split: a clear error
    assert "validation split" in capsys.readouterr().err


def test_eval_of_a_run_that_never_finished_says_its_checkpoint_in_the_json(trained_run, workdir, capsys, tmp_path):
    """`eval --json` of a killed run said "using its latest checkpoint" on stderr alone: `warnings` was []."""
    import shutil

    from engine.cli import main

    killed = trained_run.parent / f"{trained_run.name}-killed"
    shutil.copytree(trained_run, killed, ignore=shutil.ignore_patterns("adapter", "eval.json"))
    [last] = sorted((killed / "checkpoints").iterdir())[-1:]
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"instruction": "Who are you?", "output": "I am the Tuneboard demo assistant."}]),
                    encoding="utf-8")
    try:
        assert main(["eval", killed.name, "--data", str(data), "--max-new-tokens", "2", "--json", "--workdir",
                     str(workdir)]) == 0
    finally:  # the session's workdir lists its runs to other tests
        shutil.rmtree(killed)
    said = capsys.readouterr()
    out = json.loads(said.out)
    assert out["source"] == f"checkpoints/{last.name}"
    assert out["warnings"][0] == {"key": "warning.using_checkpoint", "params": {"run": killed.name,
                                                                               "checkpoint": last.name}}
    assert said.err.count(last.name) == 1  # said once, not by the loader and again with the result
