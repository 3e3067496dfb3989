"""The Chat / Evaluate / Export tab's handlers, without Gradio, against a fake worker; and the real
chat process (spawned, torch only in the child) answering the board's requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from world import ROOT

from board.i18n import SKIP
from board.tabs import chat
from engine.config import ConfigError
from engine.messages import TuneboardError


def answer(text: str, seed: int = 3, **settings) -> dict:
    gen = chat.settings("", "sample", 0.7, 50, 0.9, 0.0, 1.1, 32, 4, 1, "", seed)
    gen.update(settings)
    return {"text": text, "seed": seed, "settings": gen, "adapter": True, "index": 0, "new_tokens": 5,
            "finish": "stop", "seconds": 0.1}


class FakeWorker:
    """Replays what the engine's chat process would send, and records the requests."""

    alive = True

    def __init__(self, replies: dict | None = None, loaded: str | None = None):
        self.replies = replies or {}
        self.loaded = loaded
        self.requests: list[tuple[str, dict]] = []

    def request(self, op, **params):
        self.requests.append((op, params))
        if op == "load":
            self.loaded = params["run"]
        reply = self.replies.get(op)
        if isinstance(reply, Exception):
            raise reply
        if op in ("info", "load"):
            reply = {"loaded": bool(self.loaded), "run": self.loaded, "method": "lora", "base": "demo",
                     "device": "cpu", "precision": "fp32", "quantization": 0}
        for chunk in (reply or {}).get("chunks", []):
            yield "chunk", chunk
        yield "done", (reply or {}).get("done") if op not in ("info", "load") else reply

    def call(self, op, **params):
        return [d for k, d in self.request(op, **params) if k == "done"][0]

    def interrupt(self):
        pass


def test_settings_follow_the_decoding_mode():
    greedy = chat.settings("  ", "greedy", 0.7, 50, 0.9, 0.0, 1.1, 64, 4, 1, "###\n\nEND", 5)
    assert greedy["temperature"] == 0 and greedy["num_beams"] == 1 and greedy["system_prompt"] is None
    assert greedy["stop"] == ["###", "END"] and greedy["seed"] == 5
    beam = chat.settings("Be brief.", "beam", 0.7, 50, 0.9, 0.0, 1.0, 64, 1, 2, "", 0)
    assert beam["num_beams"] == 2 and beam["num_return_sequences"] == 2 and beam["system_prompt"] == "Be brief."
    sample = chat.settings("", "sample", 1.3, 0, 0.95, 0.05, 1.0, 64, 4, 3, "", -1)
    assert (sample["temperature"], sample["top_k"], sample["min_p"], sample["num_beams"]) == (1.3, 0, 0.05, 1)
    assert chat.controls(sample)[1:4] == ["sample", 1.3, 0] and chat.controls(greedy)[1] == "greedy"
    with pytest.raises(ConfigError) as e:
        chat.settings("", "sample", 0.7, 50, 0.0, 0.0, 1.1, 64, 4, 1, "", 0)  # top_p must be > 0
    assert e.value.field == "generation.top_p"


def test_controls_a_decoding_mode_ignores_are_greyed_out():
    states = {m: [u["interactive"] for u in chat.mode_controls(m)] for m in ("greedy", "sample", "beam")}
    assert states == {"greedy": [False] * 6, "sample": [True] * 4 + [False, True], "beam": [False] * 4 + [True] * 2}
    assert chat.settings("", "greedy", 0.7, 50, 0.9, 0.0, 1.0, 64, 4, 3, "", 0)["num_return_sequences"] == 1


def test_history_becomes_the_prompt():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}]
    assert chat.messages_of(history) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert chat.prompt_of(history, "") == [{"role": "user", "content": "hi"}]
    assert chat.prompt_of(history, " more ")[-1] == {"role": "user", "content": "more"}
    assert chat.prompt_of([], "") == []


def test_send_streams_into_the_chat_and_records_the_seed():
    worker = FakeWorker({"chat": {"chunks": [{"text": "3 plus "}, {"text": "3 is 6."}], "done": [answer("3 plus 3 is 6.")]}})
    gen = chat.settings("", "sample", 0.7, 50, 0.9, 0.0, 1.1, 32, 4, 1, "", 3)
    steps = list(chat.send(worker, "run-1", [], [], "What is 3 plus 3?", gen, True, "en"))
    assert worker.loaded == "run-1"  # nothing was loaded: the send loaded the picked run first
    shown = [h[-1]["content"] for h, *_ in steps if h and h[-1]["role"] == "assistant"]
    assert shown[:2] == ["3 plus ", "3 plus 3 is 6."]
    history, records, meta, status, _ = steps[-1]
    assert history == [{"role": "user", "content": "What is 3 plus 3?"}, {"role": "assistant", "content": "3 plus 3 is 6."}]
    assert records[0]["answer"]["seed"] == 3 and records[0]["messages"] == history[:1]
    assert 'data-seed="3"' in meta and "seed 3" in meta and "tb-msg-success" in status
    op, params = worker.requests[-1]
    assert op == "chat" and params["settings"]["seed"] == 3 and params["use_adapter"] is True


def test_send_says_what_is_missing():
    worker = FakeWorker()
    *_, status, _ = list(chat.send(worker, "run-1", [], [], "  ", {}, True, "en"))[-1]
    assert "Type a message" in status
    *_, status, _ = list(chat.send(worker, None, [], [], "hi", {}, True, "ko"))[-1]
    assert chat.t("chat.error_no_run", "ko") in status
    worker = FakeWorker({"chat": TuneboardError("chat.error_no_result", run="r")}, loaded="r")
    history, _, _, status, _ = list(chat.send(worker, "r", [], [], "hi", {}, True, "en"))[-1]
    assert "tb-msg-error" in status and "no saved adapter" in status and history[-1]["content"] == "hi"


def test_a_conversation_past_the_context_gives_the_message_back():
    """The too-long message stayed in the chat, so every later send failed the same way until Clear; and the
    advice named the terminal's /reset."""
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    worker = FakeWorker({"chat": TuneboardError("chat.prompt_too_long", tokens=300, context=256)}, loaded="r")
    history, _, _, status, box = list(chat.send(worker, "r", earlier, [], "a long question", {}, True, "ko"))[-1]
    assert history == earlier and box == "a long question"
    assert status.count("300") == 1 and chat.t("chat.clear", "ko") in status and "/reset" not in status


def test_rerun_reproduces_or_says_it_did_not():
    record = {"messages": [{"role": "user", "content": "q"}], "answer": answer("same text"), "others": [], "run": "r"}
    same = FakeWorker({"chat": {"done": [answer("same text")]}}, loaded="r")
    meta, note = chat.rerun(same, [record], "en")
    assert "r: same seed" in note and "data-seed" in meta  # the answer's run named: the picker may show another
    assert same.requests[-1][1]["settings"] == record["answer"]["settings"]
    meta, note = chat.rerun(FakeWorker({"chat": {"done": [answer("other")]}}, loaded="r"), [record], "en")
    assert "differs" in note and "other" in note
    assert chat.rerun(FakeWorker(), [], "en")[0] is SKIP


def test_compare_streams_both_sides(monkeypatch):
    done = {"base": [answer("base says")], "tuned": [answer("tuned says")]}
    chunks = [{"side": "base", "text": "base "}, {"side": "tuned", "text": "tuned "}]
    worker = FakeWorker({"compare": {"chunks": chunks, "done": done}}, loaded="r")
    monkeypatch.setattr(chat, "STREAM_EVERY", 0)
    steps = list(chat.compare(worker, "r", [], "q", {}, "en"))
    assert steps[1][:2] == ("base ", "") and steps[2][:2] == ("base ", "tuned ")
    assert steps[-1][:2] == ("base says", "tuned says")


def test_a_fast_stream_is_redrawn_at_a_pace_the_page_keeps_up_with(monkeypatch):
    """Redrawn at each token, a 488-token answer written in 6 s took the page 30 s to show (Stop unreachable)."""
    chunks = [{"text": f"w{i} "} for i in range(200)]
    worker = FakeWorker({"chat": {"chunks": chunks, "done": [answer("".join(c["text"] for c in chunks))]}})
    monkeypatch.setattr(chat, "STREAM_EVERY", 60)
    steps = list(chat.send(worker, "run-1", [], [], "q", {}, True, "en"))
    drawn = [h[-1]["content"] for h, *_ in steps if h and h[-1]["role"] == "assistant"]
    assert drawn == ["w0 ", "".join(c["text"] for c in chunks)]  # the first words at once, then the whole answer


def test_seed_sweep_fills_the_table_and_the_picker():
    answers = [answer(f"text {s}", seed=s) for s in (7, 8, 9)]
    worker = FakeWorker({"sweep": {"chunks": answers, "done": answers}}, loaded="r")
    steps = list(chat.sweep(worker, "r", [], "q", {"seed": 7}, 3, True, "en"))
    rows, picker, _ = steps[-1]
    assert rows == [[7, "text 7"], [8, "text 8"], [9, "text 9"]]
    assert picker["choices"] == [7, 8, 9] and picker["value"] == 7
    assert worker.requests[-1][1]["n"] == 3
    seed, note = chat.pin(8, "en")
    assert seed == 8 and "8" in note
    assert "instead of" not in steps[-1][2]
    for asked, sent in ((1000, chat.SWEEP_MAX), (-3, 1)):  # the box has no range of its own: said, not silent
        *_, (_, _, status) = chat.sweep(worker, "r", [], "q", {"seed": 7}, asked, True, "en")
        assert worker.requests[-1][1]["n"] == sent and f"{sent} instead of {asked}" in status


def test_evaluate_shows_progress_then_results(tmp_path):
    result = {"run": "r", "data": "demo:sft", "rows": 2, "perplexity": 3.5, "perplexity_base": 40.0, "bleu": 12.0,
              "rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0, "bleu_tokenize": "13a", "rouge_tokenize": "words+cjk-char",
              "time": "now", "samples": [{"prompt": "p", "reference": "r", "prediction": "x", "rougeL": 0.0}]}
    chunks = [{"phase": "perplexity", "done": 2, "total": 2}, {"phase": "generate", "done": 2, "total": 2}]
    worker = FakeWorker({"eval": {"chunks": chunks, "done": result}})
    steps = list(chat.evaluate(worker, tmp_path, "r", "demo:sft", 2, 16, "en"))
    assert "Perplexity: 2/2" in steps[0][0] and "Generating answers: 2/2" in steps[1][0]
    status, card, _ = steps[-1]
    assert "tb-msg-success" in status and "3.5" in card and "40" in card and "BLEU" in card
    assert worker.requests[-1][1]["data"] == "demo:sft"
    outside = list(chat.evaluate(worker, tmp_path, "r", "/etc/passwd", 2, 16, "en"))[-1][0]
    assert "tb-msg-error" in outside  # the page can't name files outside the workdir
    assert chat.sample_rows(result) == [["p", "r", "x", 0.0]]
    said = {**result, "warnings": [{"key": "warning.data_warnings", "params": {"count": 1, "path": "f.csv",
                                                                            "first": "f.csv: a typo"}}]}
    status, *_ = list(chat.evaluate(FakeWorker({"eval": {"chunks": [], "done": said}}), tmp_path, "r", "", 2, 16,
                                    "en"))[-1]
    assert "tb-msg-warning" in status and "first: f.csv: a typo" in status  # the file's own warnings, said


def test_eval_view_reads_the_runs_eval_json(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("stage: sft\n")
    card, table = chat.eval_view(tmp_path, "r1", "en")
    assert "Not evaluated yet" in card and table["value"] == []
    (run / "eval.json").write_text(json.dumps({"run": "r1", "rows": 1, "data": "validation", "perplexity": 2.0,
                                               "samples": [{"prompt": "a", "reference": "b", "prediction": "c",
                                                            "rougeL": 1.0}]}))
    card, table = chat.eval_view(tmp_path, "r1", "en")
    assert 'data-run="r1"' in card and table["value"] == [["a", "b", "c", 1.0]]
    assert "validation split" in card and "검증 세트" in chat.eval_view(tmp_path, "r1", "ko")[0]
    (run / "eval.json").write_text(json.dumps({"run": "r1", "rows": 4, "data": "validation", "pairs": 4,
                                               "pairs_ranked_right": 0.75, "reward_margin": 1.25}))
    card, _ = chat.eval_view(tmp_path, "r1", "en")  # a DPO run's: a share of pairs, not a bare 0.75
    assert "Pairs ranked right (held out)</td><td>75% (3/4)" in card and "Reward margin" in card


def test_export_into_the_workdir_and_list_it(tmp_path):
    out = tmp_path / "exports" / "mine"

    class ExportWorker(FakeWorker):
        def call(self, op, **params):
            self.requests.append((op, params))
            Path(params["out"]).mkdir(parents=True)
            (Path(params["out"]) / "tuneboard_export.json").write_text(json.dumps({"run": "r", "kind": "merged", "time": "t"}))
            return {"path": params["out"], "files": []}

    worker = ExportWorker()
    status, listing, token = chat.export(worker, tmp_path, "r", "mine", True, " me/repo ", "hf_x", "en")
    assert "tb-msg-success" in status and str(out) in status and token == ""
    op, params = worker.requests[-1]
    assert params["out"] == str(out) and params["merge"] and params["push_to_hub"] == "me/repo" and params["token"] == "hf_x"
    assert params["overwrite"] is False
    chat.export(worker, tmp_path, "r", "again", True, "", "", "en", overwrite=True)  # the page's box, not a terminal
    assert worker.requests[-1][1]["overwrite"] is True
    assert listing["value"][0][:3] == [str(out), "merged model", "r"]
    for bad in ("../up", "a/b", ".hidden"):
        assert "tb-msg-error" in chat.export(worker, tmp_path, "r", bad, False, "", "", "en")[0]
    status, *_ = chat.export(worker, tmp_path, "r", " 내 모델 1 ", False, "", "", "ko")  # spaces were refused
    assert "tb-msg-success" in status and worker.requests[-1][1]["out"] == str(tmp_path / "exports" / "내-모델-1")
    status, *_ = chat.export(worker, tmp_path, None, "", False, "", "", "en")
    assert "Pick a run" in status


def test_the_tab_module_loads_no_torch():
    code = ("import sys, json; import board.tabs.chat, engine.chat_worker, engine.generate, engine.evaluate, "
            "engine.export; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'peft', 'trl'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_chat_process_answers_the_board(trained_run, workdir):
    """The real spawned worker: load, stream, an abandoned stream, an engine error, unload, close."""
    from engine.chat_worker import ChatWorker

    worker = ChatWorker(workdir)
    try:
        info = worker.call("load", run=trained_run.name)
        assert info["loaded"] and info["run"] == trained_run.name
        ask = [{"role": "user", "content": "What is 3 plus 3?"}]
        settings = {"temperature": 0, "max_new_tokens": 24, "repetition_penalty": 1.0, "seed": 2}
        events = list(worker.request("chat", messages=ask, settings=settings, use_adapter=False))
        chunks = [d["text"] for k, d in events if k == "chunk"]
        final = events[-1][1][0]
        assert len(chunks) > 1 and "".join(chunks) == final["text"] and final["seed"] == 2 and not final["adapter"]
        stream = worker.request("sweep", messages=ask, settings={**settings, "temperature": 1.0}, n=4)
        assert next(stream)[0] == "chunk"
        stream.close()  # the page went away mid-sweep: the worker is free again at once
        swept = worker.call("sweep", messages=ask, settings={**settings, "temperature": 1.0}, n=2)
        assert [a["seed"] for a in swept] == [2, 3]
        with pytest.raises(TuneboardError) as e:
            worker.call("chat", messages=ask, settings={"top_p": 0})
        assert e.value.key == "error.config.range"
        assert worker.call("unload") == {"loaded": False}
    finally:
        worker.close()
    assert not worker.alive


def test_loading_a_run_sets_the_controls_to_its_generation_settings(tmp_path):
    """The demo presets sample at 0.2 (the tiny model rambles past its answer at 0.4+): Load shows that."""
    from engine.config import RunConfig

    run = tmp_path / "runs" / "demo-run"
    run.mkdir(parents=True)
    RunConfig.load(str(ROOT / "assets" / "configs" / "sft_demo.yaml")).save(str(run / "config.yaml"))

    class Worker:
        def call(self, verb, **kw):
            return {"loaded": True, "run": kw["run"], "method": "lora", "base": "demo", "device": "cpu",
                    "precision": "fp32"}

    status, *values = chat.load(Worker(), tmp_path, "demo-run", "en")
    controls = dict(zip(chat.SETTINGS, values, strict=True))
    assert "demo-run" in status
    assert (controls["chat-mode"], controls["chat-temperature"], controls["chat-max-new-tokens"]) == ("sample", 0.2, 64)
    status, *values = chat.load(Worker(), tmp_path, "not-a-run", "en")  # loaded elsewhere, no config here
    assert values == [SKIP] * len(chat.SETTINGS)
    picked = dict(zip(chat.SETTINGS, chat.run_settings(tmp_path, "demo-run"), strict=True))  # picked, not loaded
    assert picked["chat-temperature"] == 0.2
    assert chat.run_settings(tmp_path, None) == [SKIP] * len(chat.SETTINGS)
    # a run trained under a system prompt chats under it, unless its generation settings name their own
    trained = RunConfig.load(str(run / "config.yaml")).with_overrides({"data.system_prompt": "너는 도우미야."})
    trained.save(str(run / "config.yaml"))
    assert dict(zip(chat.SETTINGS, chat.run_settings(tmp_path, "demo-run"), strict=True))["chat-system"] == "너는 도우미야."
    trained.with_overrides({"generation.system_prompt": "Answer in English."}).save(str(run / "config.yaml"))
    assert dict(zip(chat.SETTINGS, chat.run_settings(tmp_path, "demo-run"), strict=True))["chat-system"] == \
        "Answer in English."
    assert trained.with_overrides({"stage": "pt"}).chat_generation().system_prompt is None  # plain text: no turns


def test_the_answers_settings_are_named_as_their_controls_in_the_readers_language():
    import dataclasses

    from board.i18n import t
    from engine.generate import GenerationConfig

    assert {f.name for f in dataclasses.fields(GenerationConfig)} <= set(chat.SETTING_LABELS)  # a new one is named
    card = chat.meta_html({"answer": answer("hi", stop=["###"]), "others": []}, "ko")
    for key in ("chat.temperature", "chat.repetition_penalty", "chat.max_new_tokens", "chat.stop_strings"):
        assert t(key, "ko") in card
    assert "repetition_penalty" not in card and "max_new_tokens" not in card


def test_shown_rows_reads_the_page_table_back_without_gradios_empty_row():
    import pandas as pd

    from board.tabs.chat import shown_rows

    assert shown_rows(pd.DataFrame([[0, "hi"], [1, "yo"]], columns=["Seed", "Answer"])) == [[0, "hi"], [1, "yo"]]
    assert shown_rows(pd.DataFrame([["", ""]], columns=["Seed", "Answer"])) == []  # an empty table's one row
    assert shown_rows({"headers": ["Seed", "Answer"], "data": [[2, "x"]]}) == [[2, "x"]]
    assert shown_rows(None) == []


def test_impossible_beams_and_answer_counts_are_refused_not_replaced():
    for beams, answers, name in ((-3, 1, "generation.num_beams"), (0, 1, "generation.num_beams"),
                                 (4, 0, "generation.num_return_sequences")):
        with pytest.raises(ConfigError) as e:
            chat.settings("", "beam", 0.7, 50, 0.9, 0.0, 1.0, 64, beams, answers, "", 0)
        assert e.value.field == name


def test_a_run_picker_follows_the_newest_run_unless_the_reader_picked_one():
    """A run finished after the Chat tab was first opened: the picker kept the older run the page had picked by
    itself, where the newest is what a reader opening the tab means; a run the reader picked stays."""
    newer = ["run-3", "run-2", "run-1"]
    assert chat.run_choices(newer, "run-2", by_reader=False)["value"] == "run-3"
    assert chat.run_choices(newer, "run-2", by_reader=True)["value"] == "run-2"
    assert chat.run_choices(newer, "run-9", by_reader=True)["value"] == "run-3"  # deleted since: the newest
    assert chat.run_choices([], "run-9")["value"] is None
