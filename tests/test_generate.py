"""Chat generation on the demo run: reproducible seeds, beam search, base vs tuned, streaming, the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from engine.config import ConfigError, GenerationConfig, RunConfig
from engine.generate import Answer, ChatSession, _safe_prefix, conversation, decoding_mode, resolve_seed, trim_at_stop

ASK = [{"role": "user", "content": "What is 3 plus 3?"}]
SAMPLE = GenerationConfig(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=24, seed=1)
GREEDY = GenerationConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def session(trained_run, workdir):
    s = ChatSession(workdir)
    s.load(str(trained_run))
    yield s
    s.unload()


def test_same_seed_same_text_and_another_seed_another(session):
    first = session.generate(ASK, SAMPLE)[0]
    again = session.generate(ASK, SAMPLE)[0]
    other = session.generate(ASK, dataclasses.replace(SAMPLE, seed=2))[0]
    assert first.text and first.text == again.text
    assert other.text != first.text
    assert first.seed == 1 and first.settings["seed"] == 1 and first.settings["temperature"] == 1.0
    # what an answer records is enough to make it again
    assert session.generate(ASK, first.config())[0].text == first.text


def test_a_drawn_seed_is_recorded_and_reproduces(session):
    drawn = session.generate(ASK, dataclasses.replace(SAMPLE, seed=-1))[0]
    assert 0 <= drawn.seed < 2**31 and drawn.settings["seed"] == drawn.seed
    assert session.generate(ASK, drawn.config())[0].text == drawn.text


def test_beam_search_is_deterministic_whatever_the_seed(session):
    beam = GenerationConfig(num_beams=3, num_return_sequences=2, max_new_tokens=16, seed=5)
    a = session.generate(ASK, beam)
    b = session.generate(ASK, dataclasses.replace(beam, seed=99))
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.index for x in a] == [0, 1]
    assert decoding_mode(beam) == "beam"


def test_several_sampled_answers_per_prompt(session):
    answers = session.generate(ASK, dataclasses.replace(SAMPLE, num_return_sequences=3))
    assert len(answers) == 3 and {a.seed for a in answers} == {1}
    assert len({a.text for a in answers}) > 1


def test_greedy_cannot_return_several_answers(session):
    with pytest.raises(ConfigError):
        GenerationConfig(temperature=0, num_return_sequences=2)
    with pytest.raises(ConfigError):
        session.generate(ASK, GenerationConfig(num_beams=2, num_return_sequences=3))
    with pytest.raises(ConfigError, match="one answer per beam"):  # not "greedy decoding"
        GenerationConfig(temperature=0, num_beams=2, num_return_sequences=3)


def test_base_and_tuned_answers_differ_after_training(session):
    both = session.compare(ASK, GREEDY)
    base, tuned = both["base"][0], both["tuned"][0]
    assert not base.adapter and tuned.adapter
    assert base.text != tuned.text
    # the adapter is back on after the base answered: the tuned answer is what it was
    assert session.generate(ASK, GREEDY)[0].text == tuned.text


def test_the_tuned_demo_answers_every_question_in_turn(session):
    """A short LoRA run teaches the demo the chat form: each answer starts with a word, not an
    immediate end of turn (its base once met a line break first in the template and guessed)."""
    questions = ["What is 3 plus 3?", "What is the capital of Japan?", "What color is a banana?",
                 "Who are you?", "프랑스의 수도는 어디인가요?", "이 더하기 삼은?", "인사해 주세요."]
    answers = [session.generate([{"role": "user", "content": q}], GREEDY)[0] for q in questions]
    assert all(a.text.strip() and a.new_tokens > 1 for a in answers), [a.text for a in answers]


def test_a_repetition_penalty_never_keeps_the_tuned_demo_from_ending_its_answer(session):
    """The template closes every earlier turn with the end-of-turn token, so transformers' penalty alone counts
    it as a repeat: most of the demo's greedy answers ran on past it at 1.5. A penalty above 1 only lowers
    repeated tokens' scores; with the end token spared, a greedy answer that reaches the unpenalized answer's
    last word ends there too."""
    questions = ["What is 3 plus 3?", "What is the capital of France?", "인사해 주세요.", "Who are you?"]
    same_words = 0
    for q in questions:
        ask = [{"role": "user", "content": q}]
        plain = session.generate(ask, dataclasses.replace(GREEDY, max_new_tokens=48))[0]
        penalized = session.generate(ask, dataclasses.replace(GREEDY, repetition_penalty=1.5, max_new_tokens=48))[0]
        if penalized.text.startswith(plain.text):
            same_words += 1
            assert penalized.text == plain.text and penalized.finish == "stop", (q, plain.text, penalized.text)
    assert same_words >= 2  # the rule was put to the test


def test_the_repetition_penalty_is_transformers_own_except_on_the_tokens_that_end_an_answer():
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    from engine.generate import _repetition_penalty

    ids = torch.tensor([[7, 2, 5, 5], [3, 3, 1, 2]])
    scores = torch.randn(2, 10)
    ours = _repetition_penalty(1.5, {2, 9})(ids, scores.clone())
    theirs = RepetitionPenaltyLogitsProcessor(1.5)(ids, scores.clone())
    spared = torch.tensor([2, 9])
    assert torch.equal(ours[:, spared], scores[:, spared])  # the end tokens: as the model scored them
    rest = torch.tensor([i for i in range(10) if i not in (2, 9)])
    assert torch.equal(ours[:, rest], theirs[:, rest])
    assert not torch.equal(theirs[:, 2], scores[:, 2])  # which transformers' own would have penalized


def test_tokens_stream_and_add_up_to_the_answer(session):
    gen = dataclasses.replace(GREEDY, max_new_tokens=40, repetition_penalty=1.1)
    stream = session.stream(ASK, gen, use_adapter=False)  # the base rambles: many chunks
    chunks = list(stream)
    assert len(chunks) > 2
    assert "".join(chunks) == stream.answers[0].text
    assert stream.answers[0].finish == "length" and stream.answers[0].new_tokens == 40


def test_streamed_and_whole_answers_agree_for_a_seed(session):
    stream = session.stream(ASK, dataclasses.replace(SAMPLE, seed=21))
    streamed = "".join(stream)
    assert streamed == stream.answers[0].text == session.generate(ASK, dataclasses.replace(SAMPLE, seed=21))[0].text


def test_stop_strings_end_the_answer(session):
    full = session.generate(ASK, dataclasses.replace(GREEDY, max_new_tokens=40), use_adapter=False)[0].text
    stop = full.split()[2]
    cut = session.generate(ASK, dataclasses.replace(GREEDY, max_new_tokens=40, stop=[stop]), use_adapter=False)[0]
    assert cut.text == full[: full.index(stop)] and cut.finish == "stop"


def test_stop_request_interrupts(session):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    answer = session.generate(ASK, dataclasses.replace(GREEDY, max_new_tokens=60), use_adapter=False,
                              should_stop=should_stop)[0]
    assert answer.finish == "interrupted" and answer.new_tokens < 60


def test_seed_sweep_gives_each_seed_its_own_reproducible_answer(session):
    answers = list(session.sweep(ASK, dataclasses.replace(SAMPLE, seed=10), 3))
    assert [a.seed for a in answers] == [10, 11, 12]
    assert len({a.text for a in answers}) > 1
    pinned = session.generate(ASK, dataclasses.replace(SAMPLE, seed=11))[0]
    assert pinned.text == answers[1].text


def test_system_prompt_goes_first_through_the_runs_template(session):
    gen = dataclasses.replace(GREEDY, system_prompt="Answer briefly.")
    ids = session.encode(conversation(ASK, gen.system_prompt))["input_ids"][0].tolist()
    text = session.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert session.generate(ASK, gen)[0].settings["system_prompt"] == "Answer briefly."


def test_an_answer_never_runs_past_the_models_context(session, monkeypatch):
    """Asked for more new tokens than the model has positions, it stops where its context ends, and says so."""
    monkeypatch.setattr(session.model.config, "max_position_embeddings", 48)
    prompt_len = session.encode(conversation(ASK, None))["input_ids"].shape[1]
    gen = dataclasses.replace(SAMPLE, max_new_tokens=100_000, stop=[], repetition_penalty=1.0)
    answers = [a for seed in range(4) for a in session.generate(ASK, dataclasses.replace(gen, seed=seed))]
    assert all(a.new_tokens <= 48 - prompt_len for a in answers)
    assert all(a.finish in ("stop", "context") for a in answers) and any(a.finish == "context" for a in answers)


def test_unload_lets_go_of_the_model(trained_run, workdir):
    s = ChatSession(workdir)
    info = s.load(trained_run.name)  # a run id works as well as a folder
    assert info["run"] == trained_run.name and info["adapter"] and info["precision"] == "fp32"
    s.unload()
    assert not s.loaded and s.info() == {"loaded": False}


@pytest.mark.gpu
def test_unload_frees_gpu_memory(trained_run, workdir):
    import gc

    import torch

    gc.collect()  # an earlier test's model, unreferenced but not yet collected, would be freed inside load()
    before = torch.cuda.memory_allocated()
    s = ChatSession(workdir)
    s.load(str(trained_run))
    assert torch.cuda.memory_allocated() > before
    s.unload()
    assert torch.cuda.memory_allocated() <= before


def test_answer_round_trips_through_a_dict():
    a = Answer(text="hi", seed=3, settings=dataclasses.asdict(GenerationConfig(seed=3)), adapter=False)
    assert Answer.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_stop_string_helpers():
    assert trim_at_stop("one two###three", ["###", "two"]) == ("one ", True)
    assert trim_at_stop("plain", ["###"]) == ("plain", False)
    assert _safe_prefix("hello #", ["###"]) == "hello "  # '#' may begin the stop string: held back
    assert _safe_prefix("hello ##x", ["###"]) == "hello ##x"
    assert _safe_prefix("안녕 \ufffd", []) == "안녕 "  # the stream never shows half a character
    assert resolve_seed(7) == 7 and 0 <= resolve_seed(-1) < 2**31


def test_cli_answers_once_and_records_the_seed(trained_run, workdir, capsys):
    from engine.cli import main

    args = ["chat", str(trained_run), "--prompt", "What is 3 plus 3?", "--seed", "4", "--temperature", "0",
            "--max-new-tokens", "24", "--repetition-penalty", "1.0", "--workdir", str(workdir)]
    assert main(args + ["--json"]) == 0
    said = capsys.readouterr()
    answers = json.loads(said.out)
    assert "not used" not in said.err  # greedy on its own: nothing to say
    assert answers[0]["seed"] == 4 and answers[0]["settings"]["temperature"] == 0 and answers[0]["adapter"]
    assert main(args + ["--base"]) == 0
    base_text = capsys.readouterr().out.strip()
    assert base_text and base_text != answers[0]["text"].strip()
    assert main(args + ["--num-beams", "2", "--top-p", "0.5"]) == 0  # beams draw nothing: said, not silently moot
    assert "Beam search (2 beams) draws nothing, so these settings are not used: --temperature, --top-p" in \
        capsys.readouterr().err
    long = ["chat", str(trained_run), "--prompt", "hello world " * 400, "--workdir", str(workdir)]
    assert main(long) == 2  # past the demo's 512 positions the model wrote one token of noise, "ok"
    assert re.match(r"error: The conversation is \d{3,} tokens, and the model's context holds 512",
                    capsys.readouterr().err)


def test_terminal_chat_keeps_the_conversation(session, monkeypatch, capsys):
    from engine.generate import _repl

    long = "hello world " * 400  # past the demo's 512 positions: said, and the conversation goes on without it
    lines = iter(["What is 3 plus 3?", "", "/clear", "/foo", long, "/system Answer briefly.", "And 2 plus 2?",
                  "/usr/bin is a folder?", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    asked = []
    real = session.stream
    monkeypatch.setattr(session, "stream", lambda messages, *a, **k: asked.append(messages) or real(messages, *a, **k))
    assert _repl(session, GREEDY, True) == 0
    # /clear started afresh, /foo went to nobody, the long question was dropped, /system applies from then on
    assert [[m["role"] for m in msgs] for msgs in asked] == [
        ["user"], ["user"], ["system", "user"], ["system", "user", "assistant", "user"]]
    assert asked[2][0]["content"] == "Answer briefly." and asked[3][-1]["content"] == "/usr/bin is a folder?"
    err = capsys.readouterr().err
    assert err.count("[seed 0") == 3 and "(conversation cleared)" in err and "unknown command /foo: /reset" in err
    assert re.search(r"The conversation is \d{3,} tokens, and the model's context holds 512", err)
    assert ", hit the" not in err
    from engine.messages import set_language

    lines = iter(["What is 3 plus 3?", "/exit"])  # `--lang ko` speaks Korean here too
    set_language("ko")
    try:
        assert _repl(session, GREEDY, True) == 0
    finally:
        set_language("en")
    err = capsys.readouterr().err
    assert "대화합니다" in err and "[시드 0," in err and "chatting" not in err


def test_json_without_a_prompt_is_refused_not_ignored(trained_run, workdir, capsys):
    from engine.cli import main

    assert main(["chat", str(trained_run), "--json", "--workdir", str(workdir)]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["chat", str(trained_run), "--prompt", "  ", "--workdir", str(workdir)]) == 2  # was answered
    assert "Type a message first" in capsys.readouterr().err
    args = ["chat", str(trained_run), "--prompt", "Hi", "--num-return-sequences", "2", "--max-new-tokens", "6",
            "--workdir", str(workdir)]
    assert main(args) == 0  # several answers, numbered: one holding a blank line could not be told from the next
    out = capsys.readouterr().out
    assert out.startswith("[1/2]\n") and "\n\n[2/2]\n" in out


def test_a_system_prompt_for_a_pretraining_run_is_said_to_go_unused(trained_run, workdir, tmp_path, capsys):
    """`chat PT_RUN --system ...` dropped it without a word (plain text has no turns), and --json still named it."""
    from engine.cli import main

    run = tmp_path / "pt-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = RunConfig.load(str(run / "config.yaml")).with_overrides({"stage": "pt"})
    cfg.save(str(run / "config.yaml"))
    assert main(["chat", str(run), "--prompt", "Hello", "--system", "Answer in Korean", "--max-new-tokens", "4",
                 "--workdir", str(workdir)]) == 0
    assert "system prompt (--system) is not used" in capsys.readouterr().err


def test_leaving_a_stream_early_stops_the_generation(session):
    import threading

    gen = dataclasses.replace(GREEDY, max_new_tokens=400, repetition_penalty=1.1)
    steps = []
    stream = session.stream(ASK, gen, use_adapter=False, should_stop=lambda: steps.append(1) and False)
    chunks = iter(stream)
    next(chunks)
    chunks.close()  # returns once the generating thread has stopped
    assert len(steps) < 400  # stopped well before the token limit
    assert not [t for t in threading.enumerate() if t.name == "tuneboard-generate"]
    assert session.generate(ASK, GREEDY)[0].text  # the model is free for the next answer


def test_a_run_without_its_final_adapter_is_read_from_its_latest_checkpoint(tmp_path, capsys):
    from engine.generate import result_dir
    from engine.messages import TuneboardError

    run = tmp_path / "runs" / "killed"
    for step in (5, 10):
        (run / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (run / "checkpoints" / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
        (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-15").mkdir()  # killed mid-save (a full disk): its README only
    (run / "checkpoints" / "checkpoint-15" / "README.md").write_text("")
    assert result_dir(run).name == "checkpoint-10"
    assert "latest checkpoint, checkpoint-10" in capsys.readouterr().err
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    assert result_dir(run).name == "adapter"  # the finished result first
    with pytest.raises(TuneboardError, match="no saved adapter"):
        result_dir(tmp_path / "runs" / "empty")


def test_a_demo_run_is_read_with_its_own_workdir_and_its_own_demo_build(tmp_path, monkeypatch):
    from engine import model as model_mod
    from engine.config import RunConfig
    from engine.messages import TuneboardError

    run = tmp_path / "elsewhere" / "runs" / "r"
    run.mkdir(parents=True)
    cfg = RunConfig()  # the demo
    seen = []
    monkeypatch.setattr(model_mod, "resolve", lambda cfg, workdir=None: seen.append(workdir))
    (run / "resolved.json").write_text(json.dumps({"demo_fingerprint": model_mod.demo_fingerprint()}))
    model_mod.resolve_for_run(cfg, run, workdir=tmp_path / "cwd-workdir")
    assert seen == [tmp_path / "elsewhere"]  # not a second demo build where the command runs
    for recorded in ({"demo_fingerprint": "an-older-one"}, {}):  # {}: from before builds were recorded
        (run / "resolved.json").write_text(json.dumps(recorded))
        with pytest.raises(TuneboardError) as e:
            model_mod.resolve_for_run(cfg, run)
        assert e.value.key == "error.demo_rebuilt"
        model_mod.resolve_for_run(cfg, run, adapter=False)  # a full or freeze run's model folder stands alone


def test_an_answer_cut_by_the_token_limit_never_ends_in_half_a_character(session):
    """Byte-level BPE spreads a rare syllable over byte tokens: the limit can fall inside one."""
    from engine.generate import _decoded

    ids = session.tokenizer("안녕 뷁", add_special_tokens=False)["input_ids"]
    assert session.tokenizer.decode(ids[:-1]).endswith("\ufffd")  # cut inside 뷁's three bytes
    assert _decoded(session.tokenizer, ids[:-1], []) == ("안녕 ", False)
    assert _decoded(session.tokenizer, ids, ["녕"]) == ("안", True)


def test_a_checkpoint_rotated_away_while_it_is_read_is_still_read_whole(tmp_path, monkeypatch):
    """Chat, eval and export of a run still training read its newest checkpoint, which the trainer's rotation
    deleted mid-load ("Can't find adapter_config.json"): it is read through hard links that outlive the delete,
    and a checkpoint gone before it could be pinned gives way to the next newest."""
    import engine.generate as g

    run = tmp_path / "run"
    for step in (2, 4):
        ckpt = run / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json"):
            (ckpt / name).write_text(f"{name} of step {step}")

    def read(folder):
        shutil.rmtree(run / "checkpoints" / "checkpoint-4")  # the trainer saves step 6 and rotates step 4 out
        return (folder / "adapter_model.safetensors").read_text()

    source, text = g.read_result(run, None, read)
    assert source.name == "checkpoint-4" and text == "adapter_model.safetensors of step 4"
    assert [p.name for p in run.iterdir()] == ["checkpoints"], "the pinned links are gone once read"

    newest = run / "checkpoints" / "checkpoint-6"
    newest.mkdir()
    for name in ("adapter_config.json", "trainer_state.json"):
        (newest / name).write_text("{}")
    real, gone = shutil.copytree, []

    def rotated_first(src, dst, **kw):  # the newest goes between being found and being pinned
        if not gone:
            gone.append(Path(src).name)
            shutil.rmtree(src)
            raise FileNotFoundError(src)
        return real(src, dst, **kw)

    monkeypatch.setattr(g.shutil, "copytree", rotated_first)
    source, name = g.read_result(run, None, lambda folder: folder.name)
    assert gone == ["checkpoint-6"] and source.name == name == "checkpoint-2"
