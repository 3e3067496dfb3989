"""The tabs' handlers as plain functions of values: no Gradio app is launched."""

from __future__ import annotations

import html as html_mod
import json
import os
import shlex
from pathlib import Path

import pytest
import yaml
from world import ROOT

from board import live
from board.app import accept_language
from board.form import config_to_form
from board.i18n import SKIP, Texts, choose_lang, normalize_lang, t
from board.jobs import Jobs
from board.session import Session
from board.tabs import data as data_tab
from board.tabs import model as model_tab
from board.tabs import runs as runs_tab
from board.tabs import train as train_tab
from board.watch import Watch
from engine.config import ConfigError, RunConfig
from engine.events import Finished, LogStep, RunStarted
from engine.messages import TuneboardError

NAMES = [
    "stage",
    "run_name",
    "model.name_or_path",
    "quantization.mode",
    "adapter.method",
    "data.datasets",
    "data.format",
    "data.columns",
    "data.max_samples",
    "data.max_length",
    "training.learning_rate",
    "training.num_train_epochs",
    "training.save_total_limit",
]


def values(**changes):
    out = config_to_form(RunConfig(), NAMES)
    out.update({k.replace("__", "."): v for k, v in changes.items()})
    return out


# ---- language -------------------------------------------------------------------------------


def test_language_choice():
    assert normalize_lang("ko-KR") == "ko" and normalize_lang("zh-Hans-CN") == "zh" and normalize_lang("pt") is None
    assert choose_lang(None, "ja", "ko") == "ja" and choose_lang("ru", "ja") == "ru" and choose_lang(None, "xx") == "en"
    assert accept_language("fr-FR,ko;q=0.8,en;q=0.9") == "en"
    assert accept_language("fr-FR,ko-KR;q=0.9,en;q=0.5") == "ko"
    assert accept_language("") is None


def test_texts_render_and_relabel():
    texts = Texts()
    texts.add(
        "comp",
        {"label": "ui.train.lr", "info": "ui.train.lr_info", "choices": [("ui.choice.auto", "auto"), (None, "bf16")]},
    )
    (upd,) = texts.updates("ko")
    assert upd["__type__"] == "update" and upd["label"] == "학습률"
    assert upd["choices"] == [("자동", "auto"), ("bf16", "bf16")]
    assert texts.keys() == {"ui.train.lr", "ui.train.lr_info", "ui.choice.auto"}


# ---- model tab --------------------------------------------------------------------------------


def test_method_switches_the_visible_settings():
    lora, freeze, quant = model_tab.on_method("lora", "4bit")
    assert lora["visible"] and not freeze["visible"] and quant["interactive"]
    lora, freeze, quant = model_tab.on_method("full", "4bit")
    assert not lora["visible"] and quant == {"__type__": "update", "value": "none", "interactive": False}
    assert model_tab.on_method("freeze", "none")[1]["visible"]
    assert model_tab.on_trust(True)["visible"] and not model_tab.on_trust(False)["visible"]


def test_the_model_config_is_read_once_per_model(tmp_path, monkeypatch):
    """Every estimate input asks for the model's config.json; a hub model must not cost a download each time."""
    import engine.estimate

    calls = []

    def load(name, workdir=None, revision=None, bundled=False):
        calls.append((name, revision))
        return {"name": name}

    monkeypatch.setattr(engine.estimate, "load_model_config", load)
    model_tab._model_config.cache_clear()
    try:
        for _ in range(3):
            assert model_tab.model_config_of("org/model", None, tmp_path) == {"name": "org/model"}
        model_tab.model_config_of("org/model", "v2", tmp_path)
        assert calls == [("org/model", None), ("org/model", "v2")]
        local = tmp_path / "m"
        local.mkdir()
        (local / "config.json").write_text("{}")
        model_tab.model_config_of(str(local), None, tmp_path)
        model_tab.model_config_of(str(local), None, tmp_path)
        stamp = (local / "config.json").stat().st_mtime_ns + 10**9
        os.utime(local / "config.json", ns=(stamp, stamp))  # an edited config.json is read again
        model_tab.model_config_of(str(local), None, tmp_path)
        assert calls[2:] == [(str(local), None)] * 2
    finally:
        model_tab._model_config.cache_clear()


def test_estimate_card_says_why_when_there_is_none(tmp_path):
    html = model_tab.estimate_html(None, None, tmp_path, "ru", "проблема")
    assert "проблема" in html and t("ui.model.estimate_title", "ru") in html


def test_estimate_card_renders_an_estimate():
    class Est:
        def to_dict(self):
            return {
                "total_gb": 30.0,
                "fits": False,
                "parts": {"weights_gb": 14.0, "activations_gb": 16.0},
                "notes": [{"key": "ui.train.grad_ckpt_info", "params": {}}],
            }

    html = model_tab._render_estimate(Est(), 24.0, "en", "")
    assert "30.0 GB" in html and 'data-fits="false"' in html and "Does not fit in 24 GB" in html
    assert t("ui.estimate.weights", "en") in html and t("ui.train.grad_ckpt_info", "en") in html


def test_estimate_card_says_when_this_machine_has_no_gpu(tmp_path, monkeypatch):
    """On a CPU-only machine the card is judged against the GPU box's number: it says so, first."""
    local = tmp_path / "m"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 1000, "hidden_size": 64,
                                                   "intermediate_size": 128, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4}))
    cfg = RunConfig.from_dict({"model": {"name_or_path": str(local)}})
    monkeypatch.setattr(model_tab, "detect_gpu_memory", lambda: None)
    card = model_tab.estimate_html(cfg, 24.0, tmp_path, "ko", None)
    said = t("ui.model.estimate_no_gpu", "ko", gpu="24")
    assert html_mod.escape(said) in card and card.index(html_mod.escape(said)) < card.index("</ul>")
    monkeypatch.setattr(model_tab, "detect_gpu_memory", lambda: 80.0)
    assert html_mod.escape(said) not in model_tab.estimate_html(cfg, 24.0, tmp_path, "ko", None)
    for bad in (0.0, -5.0, 5000.0):  # a GPU it can't be is said, not quietly read as another size
        card = model_tab.estimate_html(cfg, bad, tmp_path, "en", None)
        assert "more than 0 and at most 2048 GB" in card and "tb-estimate-total" not in card
    assert "1.0 ГБ" in model_tab._fmt_gb(1.0, "ru") and model_tab._fmt_gb(0.5, "en") == "512 MB"


def test_the_gpu_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    """Memory and compute capability come from nvidia-smi, so the board needs no torch; no GPU gives None."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\ncase "$1" in *compute_cap*) echo 7.5;; *memory.total*) echo 15360;; esac\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    model_tab._nvidia_smi.cache_clear()
    assert (model_tab.detect_gpu_memory(), model_tab.detect_gpu_capability()) == (15.0, (7, 5))
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    model_tab._nvidia_smi.cache_clear()
    assert (model_tab.detect_gpu_memory(), model_tab.detect_gpu_capability()) == (None, None)
    model_tab._nvidia_smi.cache_clear()


# ---- train tab --------------------------------------------------------------------------------


def test_progress_and_alerts(tmp_path):
    w = Watch.of("r1", tmp_path)
    w.status, w.step, w.total, w.eta, w.last_loss = "running", 12, 48, 75, 1.23456
    html = live.progress_html(w, "en")
    assert 'data-status="running"' in html and "step 12 / 48" in html and "ETA 1:15" in html and "1.2346" in html
    assert "width:25.0%" in html
    w.status, w.error = "failed", {"key": "error.oom", "params": {"device": "GPU"}, "message": "", "traceback": "TB"}
    alerts = live.alerts_html(w, "ko")
    assert "메모리" in alerts and "TB" not in alerts  # readable message; the traceback is elsewhere
    w.error = {"key": "error.unknown.key", "params": {}, "message": "engine's own words", "traceback": ""}
    assert "engine&#x27;s own words" in live.alerts_html(w, "en")
    assert "No run yet" in live.progress_html(Watch(), "en")
    # a run still starting (minutes, while the demo is built) shows a clock the page counts on
    import os

    (tmp_path / "config.yaml").write_text("stage: sft\n")
    os.utime(tmp_path / "config.yaml", (1_000_000, 1_000_000))
    w = Watch.of("r2", tmp_path)
    w.status = "starting"
    html = live.progress_html(w, "ko")
    assert 'class="tb-since" data-since="1000000"' in html and "시작 중" in html and "경과" not in html  # the wait's
    # clock, not training's: "elapsed 1:20" while starting went back to "elapsed 0:01" once it ran
    assert "0 / ?" in html  # the config names no max_steps: the total is the run's to say
    (tmp_path / "config.yaml").write_text("stage: sft\ntraining:\n  max_steps: 30\n")
    w.began = 2_000_000  # started or resumed from this page: its own clock (a resume's read 2:05 at its click)
    html = live.progress_html(w, "ko")
    assert 'data-since="2000000"' in html and "0 / 30" in html  # the config's total while starting, not "?"
    # the first run builds the demo model first (two minutes on a busy 2-core machine): said, not "loading"
    run = tmp_path / "work" / "runs" / "r3"
    run.mkdir(parents=True)
    w = Watch.of("r3", run)
    w.status = "starting"
    assert "Starting the worker" in live.progress_html(w, "en")
    (tmp_path / "work" / "models" / ".demo-x1").mkdir(parents=True)
    assert "Building the demo model, the first time only" in live.progress_html(w, "en")


def test_charts_redraw_when_a_point_is_replaced(tmp_path):
    """A resume redoes a step: the series keep their lengths, but the chart must show the new value."""
    path = tmp_path / "runs" / "r1"
    path.mkdir(parents=True)
    events = path / "events.jsonl"
    first = [RunStarted(run_id="r1", stage="sft", total_steps=4, pid=os.getpid()), LogStep(step=1, grad_norm=0.5)]
    events.write_text("".join(e.to_json() + "\n" for e in first))
    s, jobs = Session(), Jobs(tmp_path)
    s.watch = Watch.of("r1", path)
    grad = 1 + list(live.PLOTS).index("grad_norm")
    assert list(live.view(s, jobs)[grad].data[0].y) == [0.5]
    with open(events, "a") as f:
        f.write(LogStep(step=1, grad_norm=9.0).to_json() + "\n")
    assert list(live.view(s, jobs)[grad].data[0].y) == [9.0]
    assert all(x is SKIP for x in live.view(s, jobs))  # nothing new: nothing is redrawn


def test_a_dpo_run_shows_its_rewards_and_ranked_pairs_and_an_sft_run_does_not(tmp_path):
    """DPO's loss falls however the pairs are ranked: the Train and Runs tabs chart trl's rewards/* for it."""
    from engine.events import Evaluation

    path = tmp_path / "runs" / "r-dpo"
    path.mkdir(parents=True)
    steps = [LogStep(step=i, loss=0.69 - i / 100, metrics={
        "rewards/chosen": 0.1 * i, "rewards/rejected": -0.05 * i, "rewards/margins": 0.15 * i,
        "rewards/accuracies": min(1.0, 0.25 * i)}) for i in range(1, 5)]
    evals = [Evaluation(step=4, metrics={"loss": 0.6, "rewards/margins": 0.5, "rewards/accuracies": 0.75})]
    events = [RunStarted(run_id="r-dpo", stage="dpo", total_steps=4), *steps, *evals]
    (path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    s, jobs = Session(), Jobs(tmp_path)
    s.watch = Watch.of("r-dpo", path)
    out = live.view(s, jobs, force=True)
    rewards = out[1 + list(live.PLOTS).index("rewards")]
    accuracy = out[1 + list(live.PLOTS).index("accuracy")]
    assert rewards["visible"] and accuracy["visible"]
    lines = {tr.name: list(tr.y) for tr in rewards["value"].data}
    assert lines["chosen"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lines["rejected"] == pytest.approx([-0.05, -0.1, -0.15, -0.2])
    assert lines["margin"][-1] == pytest.approx(0.6) and lines["eval"] == [0.5]  # validation: one legend entry
    assert [tr.showlegend for tr in rewards["value"].data] == [None, None, None, True]
    assert [list(tr.y) for tr in accuracy["value"].data] == [[0.25, 0.5, 0.75, 1.0], [0.75]]
    assert accuracy["value"].layout.yaxis.tickformat == ".0%"
    card, loss, lr, runs_rewards, config, log = runs_tab.detail(jobs, "r-dpo", "ko")
    assert runs_rewards["visible"] and runs_rewards["value"].layout.title.text == t("ui.chart.rewards", "ko")
    # an SFT run: the two charts hide
    s.watch = Watch.of("r-sft", _fake_run(tmp_path, "r-sft", "finished", [2.0, 1.0]))
    out = live.view(s, jobs, force=True)
    assert not out[1 + list(live.PLOTS).index("rewards")]["visible"]
    assert not out[1 + list(live.PLOTS).index("accuracy")]["visible"]


def test_charts_built_without_plotly_checks_are_what_the_checking_constructor_makes():
    """charts._figure skips plotly's validation for speed: rebuilding each figure through it must change nothing
    (and would raise on a property plotly does not know)."""
    import plotly.graph_objects as go

    from board import charts
    from engine.events import Evaluation

    empty, trained = charts.Curves(), charts.Curves()
    trained.add([LogStep(step=i, loss=3 - i / 10, learning_rate=i * 1e-5, grad_norm=1.0) for i in range(1, 50)])
    trained.add([Evaluation(step=49, metrics={"eval_loss": 1.2})])
    figures = [charts.figure(c, m, lang) for c in (empty, trained) for m in charts.METRICS for lang in ("en", "ko")]
    figures += [charts.compare_figure({"a": trained, "b": empty}, "en"), charts.compare_figure({}, "zh")]
    for fig in figures:
        checked = go.Figure(fig.to_dict())
        assert checked.to_dict() == fig.to_dict()
        assert checked.layout.template.layout.plot_bgcolor == "white"  # plotly_white, in full


def test_gate_explains_why_start_is_off(tmp_path):
    s = Session()
    start, stop, resume, reason = live.gate(s, "en")
    assert start["interactive"] and not stop["interactive"] and not resume["interactive"] and reason == ""
    s.data.errors, s.data.first_error = (
        2,
        {"key": "data.missing_field", "row": 3, "params": {"row": 3, "field": "output", "line": None}},
    )
    start, _, _, reason = live.gate(s, "en")
    assert not start["interactive"] and "2 errors" in reason and "row 3" in reason
    s.data.first_error = {"key": "data.missing_column", "row": None, "params": {
        "field": "prompt", "format": "preference", "columns": "a, b", "mapping": "prompt=..."}}
    for lang in ("en", "ja"):  # the form to fill, not `prompt=.`, nor a fourth dot after it
        reason = live.gate(s, lang)[3]
        assert "prompt=..." in reason and "...." not in reason and "...。" not in reason, reason
    s.data.errors = 0
    s.watch = Watch.of("r1", tmp_path)
    s.watch.status = "running"
    start, stop, _, reason = live.gate(s, "en")
    assert not start["interactive"] and stop["interactive"] and "r1" in reason
    s.watch.status = "stopped"
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    assert not live.gate(s, "en")[2]["interactive"]  # a save that never finished is no checkpoint
    (tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert live.gate(s, "en")[2]["interactive"]  # resume needs a checkpoint


def test_skip_bad_rows_lets_start_go_on_a_file_with_bad_rows_but_not_on_a_broken_file():
    """The Data tab's "Skip rows with errors": a file's row errors no longer keep Start off, a whole file's do."""
    from engine.data import check_file

    fixtures = ROOT / "tests" / "fixtures" / "data"
    rows = check_file(str(fixtures / "broken.jsonl"))  # 7 row errors, good rows besides
    whole = check_file(str(fixtures / "unknown_columns.jsonl"))  # a problem of the file
    assert rows.errors and rows.valid and data_tab.summarize_reports([rows]).errors == rows.errors
    skipped = data_tab.summarize_reports([rows], skip_bad_rows=True)
    assert skipped.errors == 0 and skipped.warnings >= rows.errors and not skipped.first_error
    card = data_tab.summary_html([rows], "ko", skipped.skipped)  # the card says what the run will train on
    assert "tb-left-out" in card and f"행 {rows.valid}개로 학습" in card
    assert "tb-left-out" not in data_tab.summary_html([rows], "ko")
    both = data_tab.summarize_reports([rows, whole], skip_bad_rows=True)
    assert both.errors == whole.errors and both.first_error["path"] == whole.path
    s = Session()
    s.data = skipped
    assert live.gate(s, "en")[0]["interactive"]
    s.data = both
    assert not live.gate(s, "en")[0]["interactive"]
    assert "Skip rows with errors" not in live.gate(s, "en")[3]  # a whole file's problem: skipping rows won't do
    s.data = data_tab.summarize_reports([rows])  # switch off, only rows wrong: Start's reason names the switch
    assert "오류 있는 행 건너뛰기" in live.gate(s, "ko")[3] and "Skip rows with errors" in live.gate(s, "en")[3]


def test_stage_follows_demo_data():
    dpo, data, assistant = train_tab.on_stage("dpo", ["demo:sft"])
    assert dpo["visible"] and data["value"] == ["demo:dpo"] and not assistant["visible"]
    _, data, assistant = train_tab.on_stage("sft", ["/w/uploads/mine.jsonl"])
    assert data is SKIP and assistant["visible"]  # the person's own data is left alone


def test_the_demo_stages_hyper_parameters_come_with_the_stage_but_not_over_the_readers_own():
    """DPO on the demo at SFT's learning rate (3e-3) collapsed in three steps; dpo_demo.yaml trains at 3e-4."""
    sft = RunConfig.load(str(ROOT / "assets" / "configs" / "sft_demo.yaml"))
    dpo = RunConfig.load(str(ROOT / "assets" / "configs" / "dpo_demo.yaml"))
    values = [sft.training.learning_rate, sft.training.num_train_epochs, sft.training.warmup_ratio,
              sft.training.eval_steps, sft.training.save_steps, sft.data.val_size]
    out = train_tab.on_stage("dpo", ["demo:sft"], *values)
    assert out[3]["value"] == dpo.training.learning_rate and out[6]["value"] == dpo.training.eval_steps
    mine = [5e-5, *values[1:]]  # a learning rate the reader typed stays
    assert train_tab.on_stage("dpo", ["demo:sft"], *mine)[3] is SKIP
    # on the reader's own data too: pretraining picked on the demo, a file uploaded, SFT picked again trained SFT
    # at pretraining's learning rate, epochs and no validation split
    pt = RunConfig.load(str(ROOT / "assets" / "configs" / "pt_demo.yaml"))
    held = [pt.training.learning_rate, pt.training.num_train_epochs, pt.training.warmup_ratio, pt.training.eval_steps,
            pt.training.save_steps, pt.data.val_size]
    back = train_tab.on_stage("sft", ["/w/uploads/mine.jsonl"], *held)
    got = [u["value"] if u is not SKIP else v for u, v in zip(back[3:], values, strict=True)]
    assert back[1] is SKIP and got == values
    assert train_tab.on_stage("sft", ["/w/uploads/mine.jsonl"], *mine)[3] is SKIP  # (the reader's own rate)


def test_show_command_reproduces_the_run(tmp_path):
    s = Session()
    cmd, msg = train_tab.show_command(s, values(training__learning_rate=5e-5, run_name="exp"), tmp_path)
    text = cmd["value"]
    assert cmd["visible"] and msg == ""
    line = next(ln for ln in text.splitlines() if ln.startswith("tuneboard train"))
    argv = shlex.split(line)
    assert argv[:2] == ["tuneboard", "train"] and argv[3:] == ["--workdir", str(tmp_path)]
    from engine.cli import build_parser

    args = build_parser().parse_args(argv[1:])  # the CLI accepts it as printed
    saved = RunConfig.load(args.config)
    assert saved.training.learning_rate == 5e-5 and saved.run_name == "exp"
    assert saved == RunConfig.from_yaml(text.split("\n\n", 1)[1])  # the YAML shown is the file's
    again, _ = train_tab.show_command(s, values(training__learning_rate=5e-5, run_name="exp"), tmp_path)
    assert again["value"] == text  # same config, same file
    bad, msg = train_tab.show_command(s, values(training__learning_rate=0), tmp_path)
    assert not bad["visible"] and "training.learning_rate" in msg


def test_save_and_load_config(tmp_path):
    s = Session()
    file, msg = train_tab.save_config(s, values(training__num_train_epochs=7.0), tmp_path)
    path = file["value"]
    assert "tb-msg-success" in msg and path.startswith(str(tmp_path / "configs"))
    updates, msg = train_tab.load_config(s, path, NAMES)
    got = dict(zip(NAMES, (u["value"] for u in updates), strict=True))
    assert got["training.num_train_epochs"] == 7.0 and got["data.datasets"] == ["demo:sft"]
    assert s.base["training"]["num_train_epochs"] == 7.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learnin_rate: 1\n")
    updates, msg = train_tab.load_config(s, str(bad), NAMES)
    assert all(u is SKIP for u in updates) and "learning_rate" in msg  # did-you-mean, translated


def test_start_stop_through_the_handlers(tmp_path):
    from test_board_jobs import fake_job, wait_for

    jobs = Jobs(tmp_path, target=fake_job)
    s = Session(lang="ja")
    try:
        msg = train_tab.start(s, values(run_name="slow"), None, jobs)
        assert "tb-msg-info" in msg and s.watch.run_id
        other = Session()
        refused = train_tab.start(other, values(run_name="fast"), None, jobs)
        assert "tb-msg-error" in refused and s.watch.run_id in refused  # one run at a time, said clearly
        wait_for(lambda: (live.view(s, jobs), s.watch.step)[1] >= 2)
        out = live.view(other, jobs)  # another page attaches to the live run on its next tick
        assert other.watch.run_id == s.watch.run_id and out[0] is not SKIP
        assert "tb-msg-info" in train_tab.stop(s, jobs)
        wait_for(lambda: (live.view(s, jobs), s.watch.status)[1] == "stopped")
        assert all(x is SKIP for x in live.view(s, jobs))  # nothing new: nothing is redrawn
        forced = live.view(s, jobs, force=True)
        assert len(forced) == live.N_OUTPUTS and "停止" in forced[0]
    finally:
        jobs.shutdown(timeout=20)


def test_start_refuses_bad_data(tmp_path):
    s = Session()
    s.data.errors, s.data.first_error = 1, {"key": "data.empty_file", "row": None, "params": {"path": "x"}}
    assert "tb-msg-error" in train_tab.start(s, values(), None, Jobs(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_start_refuses_a_model_folder_that_lacks_what_loading_needs(tmp_path):
    """A folder with only config.json used to start, then fail on the tokenizer with a hint to install packages."""
    folder = tmp_path / "w" / "my-model"
    folder.mkdir(parents=True)
    for files, missing in (([], "config.json"), (["config.json"], "tokenizer, weights"),
                           (["config.json", "tokenizer.json"], "weights")):
        for name in files:
            (folder / name).write_text("{}")
        out = train_tab.start(Session(), values(model__name_or_path=str(folder)), None, Jobs(tmp_path / "w"))
        assert "tb-msg-error" in out and f"it has no {missing}" in html_mod.unescape(out), out
        assert not (tmp_path / "w" / "runs").exists()


def test_a_bad_field_is_named_by_its_control_as_well(tmp_path):
    from board.app import build_app

    build_app(tmp_path)  # registers each control's label for its config field
    for lang, label in (("en", "Learning rate (training.learning_rate)"), ("ko", "학습률 (training.learning_rate)")):
        out = train_tab.start(Session(lang=lang), values(training__learning_rate=-1), None, Jobs(tmp_path))
        assert label in out and "tb-msg-error" in out


def test_start_refuses_a_model_folder_that_is_not_there(tmp_path):
    s = Session()
    out = train_tab.start(s, values(model__name_or_path=str(tmp_path / "not-a-model")), None, Jobs(tmp_path))
    assert "tb-msg-error" in out and "not-a-model" in out
    assert not (tmp_path / "runs").exists()


def test_start_refuses_a_hub_model_this_machine_cannot_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = train_tab.start(Session(lang="ko"), values(model__name_or_path="some-org/no-such-model"), None, Jobs(tmp_path))
    assert "tb-msg-error" in out and "some-org/no-such-model" in out
    assert t("error.offline_hub", "ko", name="some-org/no-such-model") in out.replace("&#x27;", "'")


def test_offline_a_well_known_model_gets_an_estimate_from_its_bundled_shape_but_start_still_refuses(tmp_path,
                                                                                                   monkeypatch):
    """The memory card answers before any download (the bundled shape, and says so); Start needs the weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_tab._model_config.cache_clear()
    name = "Qwen/Qwen2.5-7B-Instruct"
    cfg = RunConfig.from_dict({"model": {"name_or_path": name}})
    card = model_tab.estimate_html(cfg, 80.0, tmp_path, "ko").replace("&#x27;", "'")
    assert 'data-fits="true"' in card and t("estimate.note.bundled_shape", "ko", name=name) in card
    assert model_tab.estimate_html(RunConfig.from_dict({"model": {"name_or_path": "some-org/no-such-model"}}), 80.0,
                                   tmp_path, "ko").count("tb-estimate-total") == 0  # no shape: the offline error
    out = train_tab.start(Session(lang="ko"), values(model__name_or_path=name), None, Jobs(tmp_path))
    assert t("error.offline_hub", "ko", name=name) in out.replace("&#x27;", "'")
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "runs").exists()


# ---- data tab ----------------------------------------------------------------------------------


def test_a_bad_file_is_found_by_row(tmp_path):
    bad = tmp_path / "uploads" / "bad.jsonl"
    bad.parent.mkdir()
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}, {"instruction": "e"}]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": str(bad)}]}})
    s = Session(lang="ko")
    summary, findings, preview, fig = data_tab.check_view(s, cfg, None, tmp_path)
    table = findings["value"]
    assert s.data.errors == 1 and s.data.first_error["row"] == 3
    assert any(r[1] == 3 and r[3] == "output" and r[4] == "오류" for r in table)
    assert 'data-errors="1"' in summary and "alpaca" in summary
    assert findings["headers"][1] == t("ui.data.col_row", "ko")
    assert "tb-loss" in preview  # the good rows still render, their answers marked


def test_stage_mismatch_is_an_error(tmp_path):
    alpaca = str(ROOT / "tests" / "fixtures" / "data" / "alpaca.json")  # (demo:sft under dpo takes demo:dpo)
    cfg = RunConfig.from_dict({"stage": "dpo", "data": {"datasets": [{"path": alpaca}]}})
    s = Session()
    data_tab.check_view(s, cfg, None, tmp_path)
    assert s.data.errors == 1 and s.data.first_error["key"] == "data.dpo_needs_preference"
    cfg = RunConfig.from_dict({"stage": "dpo", "data": {"datasets": [{"path": "demo:dpo"}]}})
    data_tab.check_view(s, cfg, None, tmp_path)
    assert s.data.errors == 0


def test_preview_marks_the_trained_part(tmp_path):
    cfg = RunConfig()
    s = Session()
    _, _, preview, _ = data_tab.check_view(s, cfg, None, tmp_path)
    assert preview.count('<mark class="tb-loss">') >= 4  # legend + one answer per shown row
    assert "&lt;|im_start|&gt;user" in preview  # the prompt is shown, escaped, not marked


def test_uploads_are_selected_and_refusals_named(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "x"}\n')
    evil = tmp_path / "evil.py"
    evil.write_text("print(1)")
    choices, msg = data_tab.add_uploads([str(good), str(evil)], ["demo:sft"], tmp_path / "w", "en")
    assert choices["value"] == [str(tmp_path / "w" / "uploads" / "good.jsonl")]
    assert any(v == str(tmp_path / "w" / "uploads" / "good.jsonl") for _, v in choices["choices"])
    assert "evil.py" in msg and "tb-msg-error" in msg
    assert t("ui.data.demo_replaced", "en") in msg  # the demo's place taken, said (the list's help says merged)
    _, msg = data_tab.add_uploads([str(good)], [str(tmp_path / "w" / "uploads" / "good.jsonl")], tmp_path / "w", "en")
    assert "tb-msg-info" not in msg  # no demo was there to replace
    sheet = tmp_path / "문의.xlsx"  # the picker offers sheets, so the page can say to save one as CSV
    sheet.write_bytes(b"PK\x03\x04")
    choices, msg = data_tab.add_uploads([str(sheet)], [], tmp_path / "w", "ko")
    assert choices["value"] == [] and not (tmp_path / "w" / "uploads" / "문의.xlsx").exists()
    assert html_mod.escape(t("data.spreadsheet_file", "ko", path="문의.xlsx", ext=".xlsx")) in msg


def test_a_file_uploaded_again_under_its_name_replaces_the_selected_copy(tmp_path):
    """Fix a file, upload it again: the fixed copy is selected in place of the broken one (which stays on disk for
    runs that used it), the same bytes twice make one copy, and Start's reason names the file with the error."""
    w = tmp_path / "w"
    mine = tmp_path / "my_data.jsonl"
    mine.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    other = tmp_path / "other.jsonl"
    other.write_text('{"instruction": "x", "output": "y"}\n')
    choices, _ = data_tab.add_uploads([str(mine), str(other)], [], w, "en")
    broken = choices["value"][0]
    s = Session()
    data_tab.check_view(s, RunConfig.from_dict({"data": {"datasets": [{"path": p} for p in choices["value"]]}}), None, w)
    reason = live.gate(s, "en")[3]
    assert "my_data.jsonl, row 2" in reason, reason
    mine.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    choices, _ = data_tab.add_uploads([str(mine)], choices["value"], w, "en")
    fixed = choices["value"][-1]
    assert fixed != broken and Path(broken).exists() and choices["value"] == [str(w / "uploads" / "other.jsonl"), fixed]
    again, _ = data_tab.add_uploads([str(mine)], choices["value"], w, "en")  # the same bytes: the same copy
    assert again["value"] == choices["value"] and len(list((w / "uploads").glob("my_data*"))) == 2


def test_the_preview_marks_where_a_long_row_is_cut(tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"instruction": "질문", "output": "아주 긴 답변입니다. " * 400}, ensure_ascii=False) + "\n")
    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": str(long)}], "max_length": 64}})
    _, _, preview, _ = data_tab.check_view(Session(lang="ko"), cfg, None, tmp_path)
    assert preview.count('class="tb-cut-mark"') == 1 and "64" in preview and "✂" in preview
    assert preview.count("아주 긴 답변입니다.") < 60  # what is cut away is shown only in part


def test_a_text_on_one_long_line_is_previewed_in_part(tmp_path):
    """A book saved as one line (pretraining): the preview showed all of it, megabytes of HTML that froze the page."""
    book = tmp_path / "book.txt"
    book.write_text("한 줄로 저장된 아주 긴 책입니다. " * 20_000, encoding="utf-8")  # ~400 k characters, no newline
    cfg = RunConfig.from_dict({"stage": "pt", "data": {"datasets": [{"path": str(book)}], "max_length": 128}})
    _, _, preview, _ = data_tab.check_view(Session(lang="ko"), cfg, None, tmp_path)
    assert len(preview) < 3 * data_tab.PREVIEW_CHARS and "표시하지 않음" in preview
    hidden = len(book.read_text(encoding="utf-8").strip()) - data_tab.PREVIEW_CHARS
    assert f"{hidden:,}" in preview  # how much is not shown


def test_the_data_tab_previews_rows_as_the_stage_trains_them(tmp_path):
    """Pretraining on a chat file trains its contents as plain text; the tab showed the chat template, 14 of 25
    tokens trained, and no word of it. An SFT run's data.system_prompt was missing from the preview too."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"instruction": "질문 0", "output": "답변 0입니다."}, ensure_ascii=False) + "\n")
    pt = RunConfig.from_dict({"stage": "pt", "data": {"datasets": [{"path": str(chat)}]}})
    s = Session(lang="ko")
    _, findings, preview, _ = data_tab.check_view(s, pt, None, tmp_path)
    assert s.data.errors == 0 and s.data.warnings == 1
    assert any(row[4] == t("ui.data.sev_warning", "ko") and "chat.jsonl" in row[5] for row in findings["value"])
    assert "질문 0\n\n답변 0입니다." in html_mod.unescape(preview) and "im_start" not in preview
    assert preview.count('<mark class="tb-loss">') == 2  # the legend's, and the whole row's: every token trains
    sft = RunConfig.from_dict({"data": {"datasets": [{"path": str(chat)}], "system_prompt": "너는 도우미야."}})
    _, findings, preview, _ = data_tab.check_view(Session(lang="ko"), sft, None, tmp_path)
    assert "너는 도우미야." in preview and "im_start" in preview and not findings["value"]


def test_a_form_problem_blocks_start(tmp_path):
    s = Session()
    data_tab.check_view(s, RunConfig(), None, tmp_path)  # a good check first: its OK card must not come back
    assert 'data-ok="true"' in data_tab.render_reports(s)[0]
    with pytest.raises(ConfigError) as problem:
        RunConfig.from_dict({"data": {"max_length": -5}})
    out = data_tab.check_view(s, None, problem.value, tmp_path)
    assert s.data.errors == 1 and "data.max_length" in out[0] and "must be &gt;= 8" in out[0]
    assert not live.gate(s, "en")[0]["interactive"]
    s.lang = "zh"  # a language switch redraws the problem in the new language, and only the problem
    again = data_tab.render_reports(s)[0]
    assert "data.max_length" in again and "必须" in again and "tb-data-file" not in again
    assert "必须" in live.gate(s, "zh")[3]


def test_a_bad_value_outside_the_data_does_not_stop_the_data_check(tmp_path):
    """A negative learning rate used to make Gradio refuse every event, so the panel kept the last file."""
    from board.form import build_config

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    form = {**values(), "training.learning_rate": -1, "data.datasets": [str(bad)]}
    cfg, problem = data_tab.data_config(form, lambda v: build_config(v, None, tmp_path))
    assert problem is None and cfg.data.datasets[0].path == str(bad)
    s = Session()
    data_tab.check_view(s, cfg, problem, tmp_path)
    assert s.data.errors == 1 and s.data.first_error["row"] == 2
    cfg, problem = data_tab.data_config({**form, "data.max_length": 2}, lambda v: build_config(v, None, tmp_path))
    assert cfg is None and problem.field == "data.max_length"
    # a data setting the check does not read (nor follow) is Start's to name: said as the data's, it stayed said
    # once put right, with Start off, as nothing checked the data again (a reloaded page, val_size -0.1 -> 0.1)
    cfg, problem = data_tab.data_config({**form, "data.val_size": -0.1}, lambda v: build_config(v, None, tmp_path))
    assert problem is None and cfg.data.datasets[0].path == str(bad)
    s = Session()
    data_tab.check_view(s, cfg, problem, tmp_path)
    assert not s.data.first_error.get("form")


def test_no_number_box_refuses_events_by_its_own_range(tmp_path):
    import gradio as gr

    from board.app import build_app

    demo, _ = build_app(tmp_path)
    numbers = [b for b in demo.blocks.values() if isinstance(b, gr.Number)]
    assert numbers and all(n.minimum is None and n.maximum is None for n in numbers)


# ---- runs tab -----------------------------------------------------------------------------------


def _fake_run(workdir, name, status, losses):
    path = workdir / "runs" / name
    path.mkdir(parents=True)
    RunConfig().save(str(path / "config.yaml"))
    evs = [RunStarted(run_id=name, stage="sft", total_steps=len(losses), pid=1)]
    evs += [LogStep(step=i + 1, loss=v, learning_rate=1e-4) for i, v in enumerate(losses)]
    evs.append(Finished(status=status, step=len(losses), metrics={"train_loss": losses[-1]}))
    (path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in evs))
    (path / "train.log").write_text("step 1\n")
    return path


def test_runs_listing_detail_and_compare(tmp_path):
    _fake_run(tmp_path, "20250101-000000-sft", "finished", [3.0, 2.0, 1.0])
    _fake_run(tmp_path, "20250102-000000-sft", "stopped", [3.0, 2.5])
    jobs = Jobs(tmp_path)
    table, pick, compare = runs_tab.listing(jobs, "en", None, ["gone"])
    assert [r[0] for r in table["value"]] == ["20250102-000000-sft", "20250101-000000-sft"]
    assert table["value"][0][1] == "stopped" and table["value"][1][4] == "3/3"
    assert pick["value"] == "20250102-000000-sft" and compare["value"] == []
    card, loss, lr, rewards, config, log = runs_tab.detail(jobs, "20250101-000000-sft", "en")
    assert rewards["visible"] is False  # an SFT run has no rewards chart
    assert 'data-status="finished"' in card and "training loss (mean)" in card and "perplexity" not in card
    (tmp_path / "runs" / "20250101-000000-sft" / "eval.json").write_text(
        '{"perplexity": 13.75, "bleu": 4.5, "pairs_ranked_right": 1.0}')
    card, *_ = runs_tab.detail(jobs, "20250101-000000-sft", "en")
    assert "perplexity</td><td>13.75" in card and "BLEU</td><td>4.5" in card and "(Evaluate)</td><td>100%" in card
    assert list(loss.data[0].y) == [3.0, 2.0, 1.0] and "stage: sft" in config and log == "step 1\n"
    fig = runs_tab.compare(jobs, ["20250101-000000-sft", "20250102-000000-sft", "../x"], "en")
    assert [tr.name for tr in fig.data] == ["20250101-000000-sft", "20250102-000000-sft"]
    card, *_ = runs_tab.detail(jobs, "../../etc", "en")
    assert "tb-msg-error" in card
    elsewhere = tmp_path.parent / "elsewhere-run"  # a real run folder, but outside this workdir
    elsewhere.mkdir(exist_ok=True)
    RunConfig().save(str(elsewhere / "config.yaml"))
    card, *_ = runs_tab.detail(jobs, str(elsewhere), "en")
    assert "tb-msg-error" in card
    assert runs_tab.compare(jobs, [str(elsewhere)], "en").data == ()
    with pytest.raises(TuneboardError):
        runs_tab.open_in_train(Session(), str(elsewhere), jobs)


def test_opening_runs_shows_the_newest_run_unless_the_reader_picked_one(tmp_path):
    """A run trained since the page opened was listed first, while the picker, filled as the page opened, still
    showed the older run it held then: the reader had never picked it."""
    from board.app import build_app

    _fake_run(tmp_path, "20250101-000000-sft", "finished", [1.0])
    demo, ui = build_app(tmp_path)
    tab, pick = ui.c["runs-tab"]._id, ui.c["runs-pick"]._id
    refresh = next(fn.fn for fn in demo.fns.values() if (tab, "select") in fn.targets and fn.fn.__name__ == "refresh")
    chosen = next(fn.fn for fn in demo.fns.values() if (pick, "input") in fn.targets)
    _fake_run(tmp_path, "20250102-000000-sft", "finished", [1.0])  # trained since
    s = Session()
    assert refresh(s, "20250101-000000-sft", [])[1]["value"] == "20250102-000000-sft"
    chosen(s, "20250101-000000-sft")  # the reader's own pick stands
    assert refresh(s, "20250101-000000-sft", [])[1]["value"] == "20250101-000000-sft"


def test_deleting_a_run_asks_first_removes_its_folder_and_refuses_a_running_one(tmp_path):
    done = _fake_run(tmp_path, "20250101-000000-sft", "finished", [1.0])
    (done / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (done / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors").write_bytes(b"\0" * 2_500_000)
    jobs = Jobs(tmp_path)
    buttons, note = runs_tab.ask_delete(jobs, done.name, "ko")
    assert buttons["visible"] and "2.5 MB" in note and done.name in note and "영구" in note
    assert done.exists()  # asking deletes nothing
    note = runs_tab.do_delete(jobs, done.name, "en")
    assert "tb-msg-success" in note and "2.5 MB freed" in note and not done.exists()
    assert "tb-msg-error" in runs_tab.do_delete(jobs, done.name, "en")  # already gone: said, not raised

    live = tmp_path / "runs" / "20250102-000000-sft"  # a worker that is alive: this very process
    live.mkdir(parents=True)
    RunConfig().save(str(live / "config.yaml"))
    (live / "events.jsonl").write_text(RunStarted(run_id=live.name, stage="sft", total_steps=9, pid=os.getpid()).to_json())
    buttons, note = runs_tab.ask_delete(jobs, live.name, "en")
    assert not buttons["visible"] and "still running" in note
    assert "still running" in runs_tab.do_delete(jobs, live.name, "en") and live.exists()
    assert runs_tab.ask_delete(jobs, "../../etc", "en")[1].count("tb-msg-error") == 1
    assert runs_tab.ask_delete(jobs, None, "en") == ({"visible": False, "__type__": "update"}, "")


def test_the_open_runs_tab_follows_runs_reading_only_what_changed(tmp_path, monkeypatch):
    import engine.runs as runs_mod

    done = _fake_run(tmp_path, "20250101-000000-sft", "finished", [3.0, 2.0])
    live = tmp_path / "runs" / "20250102-000000-sft"  # its worker is this very process: running
    live.mkdir(parents=True)
    RunConfig().save(str(live / "config.yaml"))
    (live / "events.jsonl").write_text(RunStarted(run_id=live.name, stage="sft", total_steps=9, pid=os.getpid()).to_json()
                                       + "\n")
    read = []
    real = runs_mod.run_info
    monkeypatch.setattr(runs_mod, "run_info", lambda p, ev=None: read.append(os.path.basename(p)) or real(p, ev))
    runs_tab._READ.clear()
    jobs = Jobs(tmp_path)
    table, pick, compare, shown = runs_tab.live_listing(jobs, "en", None, [], None)
    assert [r[0] for r in table["value"]] == [live.name, done.name] and "value" not in pick  # the refresh picks
    assert sorted(read) == sorted([live.name, done.name])

    read.clear()  # nothing new: nothing sent, and the finished run is not read again
    assert runs_tab.live_listing(jobs, "en", live.name, [], shown)[:3] == (SKIP, SKIP, SKIP)
    assert read == [live.name]

    with open(live / "events.jsonl", "a") as f:  # the running run logs a step: its row changes, the pickers do not
        f.write(LogStep(step=3, loss=1.5, learning_rate=1e-4).to_json() + "\n")
    table, pick, compare, shown = runs_tab.live_listing(jobs, "en", live.name, [], shown)
    assert table["value"][0][4] == "3/9" and table["value"][0][5] == "1.5000" and (pick, compare) == (SKIP, SKIP)

    _fake_run(tmp_path, "20250103-000000-sft", "finished", [1.0])  # a new run: the pickers learn it
    table, pick, compare, shown = runs_tab.live_listing(jobs, "en", live.name, [], shown)
    assert pick["choices"][0] == "20250103-000000-sft" and "value" not in pick  # the reader's pick stands
    assert runs_tab.live_listing(jobs, "en", "gone", ["gone", live.name], {})[1:3] == (
        {"__type__": "update", "choices": pick["choices"], "value": pick["choices"][0]},
        {"__type__": "update", "choices": pick["choices"], "value": [live.name]})  # a pick that is gone is replaced
    runs_tab.do_delete(jobs, done.name, "en")  # a deleted run leaves the listing and the cache
    table, *_ = runs_tab.live_listing(jobs, "en", live.name, [], shown)
    assert done.name not in [r[0] for r in table["value"]] and done not in runs_tab._READ


def test_use_run_config_fills_the_form(tmp_path):
    path = _fake_run(tmp_path, "20250101-000000-sft", "finished", [1.0])
    RunConfig.from_dict({"training": {"learning_rate": 3e-5, "resume_from": "last"}}).save(str(path / "config.yaml"))
    s = Session()
    updates, msg = train_tab.use_run_config(s, path.name, tmp_path, NAMES)
    got = dict(zip(NAMES, (u["value"] for u in updates), strict=True))
    assert got["training.learning_rate"] == 3e-5 and s.base["training"]["resume_from"] is None


def test_failed_run_shows_its_error_in_the_readers_language(tmp_path):
    from engine.events import Error

    path = _fake_run(tmp_path, "20250101-000000-sft", "failed", [1.0])
    with open(path / "events.jsonl", "a") as f:
        f.write(Error(key="error.oom", params={"device": "GPU"}, message="x", traceback="tb").to_json() + "\n")
        f.write(Finished(status="failed").to_json() + "\n")
    card, *_ = runs_tab.detail(Jobs(tmp_path), path.name, "ja")
    assert t("error.oom", "ja", device="GPU") in card.replace("&#x27;", "'")


@pytest.mark.parametrize("lang", ["en", "ko", "zh", "ja", "ru"])
def test_every_view_renders_in_every_language(tmp_path, lang):
    path = _fake_run(tmp_path, "20250101-000000-sft", "finished", [2.0, 1.0])
    w = Watch.of(path.name, path)
    w.advance()
    for name in live.PLOTS:
        fig = live.figure(w.curves, name, lang)
        assert fig.layout.title.text == t(live.METRICS[name][0], lang)
    assert live.top_status_html(w, lang)
    assert yaml.safe_load(runs_tab.detail(Jobs(tmp_path), path.name, lang)[4])["stage"] == "sft"


def test_the_upload_box_hint_is_a_css_string_that_cannot_break_out():
    from board.app import brand_html, css_string

    assert css_string('a "b" \\ </style> 한') == '"a \\22 b\\22  \\5c  \\3c \\2f style\\3e  한"'
    assert "--tb-drop-hint" in brand_html("ko") and "파일을 여기에" in brand_html("ko")


def test_a_dpo_runs_metrics_are_named_in_the_readers_language(tmp_path):
    from engine.runs import RunInfo

    info = RunInfo(id="r", path=tmp_path, status="finished", stage="dpo",
                   metrics={"eval_rewards/margins": 1.5, "rewards/accuracies": 0.75, "eval_logps/chosen": -12.0})
    card = runs_tab.detail_html(info, "ko")
    assert "eval_rewards" not in card and "rewards/accuracies" not in card and "logps" not in card
    assert "보상 차이" in card and "올바르게 순위를 매긴 쌍" in card


def _adapter_run(workdir, name, model, status="finished", r=4, alpha=8):
    path = _fake_run(workdir, name, status, [1.0])
    RunConfig.from_dict({"model": {"name_or_path": model}}).save(str(path / "config.yaml"))
    (path / "adapter").mkdir()
    (path / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"r": r, "lora_alpha": alpha, "lora_dropout": 0.05, "target_modules": ["v_proj", "q_proj"],
         "use_dora": False, "use_rslora": True}))
    return path


def test_the_model_tab_offers_the_adapters_of_runs_on_the_same_base_and_shows_their_shape(tmp_path):
    """SFT, then DPO from its adapter: the Model tab lists the runs of this base that left an adapter, a pick
    sets the LoRA controls to the adapter's own shape (not editable), and a new adapter frees them again."""
    sft = _adapter_run(tmp_path, "20250101-000000-sft", "demo")
    _adapter_run(tmp_path, "20250102-000000-sft", "Qwen/Qwen2.5-0.5B")  # another base
    _fake_run(tmp_path, "20250103-000000-sft", "finished", [1.0])  # no adapter (a full fine-tune, say)
    choices = model_tab.init_choices(tmp_path, "demo", "ko")
    assert choices == [("새 어댑터", ""), ("20250101-000000-sft · SFT · 완료", str(sft))]
    assert model_tab.init_choices(tmp_path, "  ", "en")[1][1] == str(sft)  # an empty box is the demo
    assert [v for _, v in model_tab.init_choices(tmp_path, "Qwen/Qwen2.5-0.5B/", "en")][1:] == [
        str(tmp_path / "runs" / "20250102-000000-sft")]
    assert model_tab.init_update(tmp_path, "Qwen/Qwen2.5-0.5B", str(sft), "en")["value"] == ""  # another base
    assert model_tab.init_update(tmp_path, "demo", str(sft), "en")["value"] == str(sft)
    own = tmp_path / "my-adapter"  # a loaded config's own folder stays picked
    assert model_tab.init_update(tmp_path, "demo", str(own), "en")["value"] == str(own)
    shape = model_tab.adapter_shape(str(sft))
    assert [u.get("value") for u in shape] == [4, 8, 0.05, "q_proj, v_proj", False, True]
    assert not any(u["interactive"] for u in shape)
    assert all(u == {"__type__": "update", "interactive": True} for u in model_tab.adapter_shape(""))
    # back to a new adapter: the controls get back what they held before the pick, not the adapter's shape
    mine = [16, 32, 0.0, "all-linear", False, False]
    held, updates = model_tab.pick_adapter(str(sft), None, mine)
    assert held == mine and [u["value"] for u in updates] == [4, 8, 0.05, "q_proj, v_proj", False, True]
    held, updates = model_tab.pick_adapter(str(sft), held, [4, 8, 0.05, "q_proj, v_proj", False, True])  # again
    assert held == mine
    held, updates = model_tab.pick_adapter("", held, [4, 8, 0.05, "q_proj, v_proj", False, True])
    assert held is None and [(u["value"], u["interactive"]) for u in updates] == [(v, True) for v in mine]


def test_an_adapter_to_continue_reaches_the_run_config_only_with_lora(tmp_path):
    from board.form import build_config

    sft = _adapter_run(tmp_path, "20250101-000000-sft", "demo")
    cfg = build_config({"adapter.init_from": str(sft), "stage": "dpo"}, None, tmp_path)
    assert cfg.adapter.init_from == str(sft) and cfg.stage == "dpo"
    assert build_config({"adapter.init_from": "", "stage": "dpo"}, None, tmp_path).adapter.init_from is None
    # the pick hides with the LoRA settings: a method that trains the base drops it instead of failing on it
    assert build_config({"adapter.init_from": str(sft), "adapter.method": "full"}, None, tmp_path).adapter.init_from \
        is None
    with pytest.raises(ConfigError) as e:  # the CLI / YAML says what is wrong
        RunConfig.from_dict({"adapter": {"method": "freeze", "init_from": str(sft)}})
    assert e.value.key == "error.config.init_from_lora" and "freeze" in t(e.value.key, "en", **e.value.params)
    assert config_to_form(cfg, ["adapter.init_from"]) == {"adapter.init_from": str(sft)}
    dpo = _fake_run(tmp_path, "20250102-000000-dpo", "finished", [0.5])
    cfg.save(str(dpo / "config.yaml"))
    card, *_ = runs_tab.detail(Jobs(tmp_path), dpo.name, "en")  # the run says which adapter it went on training
    assert "continued from</td><td>20250101-000000-sft<" in card
    assert config_to_form(RunConfig(), ["adapter.init_from"]) == {"adapter.init_from": ""}


def test_a_run_whose_config_was_edited_into_something_unreadable_says_so(tmp_path):
    """Listed as a plain stopped run with a blank stage: the reader learnt why only on Resume."""
    path = _fake_run(tmp_path, "20250101-000000-sft", "stopped", [1.0])
    (path / "config.yaml").write_text("training:\n  learning_rate: -1\n")
    card, *_ = runs_tab.detail(Jobs(tmp_path), path.name, "ko")
    assert "config.yaml을 읽을 수 없습니다" in card and "training.learning_rate" in card
    (path / "config.yaml").write_text("training: [unclosed\n")
    card, *_ = runs_tab.detail(Jobs(tmp_path), path.name, "en")
    assert "can&#x27;t be read" in card and "YAML" in card


def test_settings_kept_in_the_browser_come_back_and_unknown_ones_are_left_alone():
    from board.tabs.train import restore_form

    names = ["training.learning_rate", "data.datasets", "adapter.rank"]
    saved = {"training.learning_rate": 3e-4, "data.datasets": ["uploads/ko.jsonl"], "gone.field": 1}
    lr, datasets, rank = restore_form(saved, names)
    assert lr["value"] == 3e-4 and datasets["value"] == ["uploads/ko.jsonl"] and rank is SKIP
    assert restore_form(None, names) == [SKIP] * 3 and restore_form("junk", names) == [SKIP] * 3


def test_a_files_card_counts_the_rows_that_did_not_parse_and_none_usable_where_the_stage_refuses_it(tmp_path):
    """broken.csv's 6 rows read as "4 rows read, 3 usable, errors: 3" (the 2 unparsed lines left out of the rows);
    an SFT file under the DPO stage as "15 rows, 15 usable" while the stage refused it whole."""
    from engine.data import check_file
    from engine.data.load import for_stage

    p = tmp_path / "broken.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c",\n{"instruction": "d", "output": "e"}\n'
                 'not json\n{"instruction": "f", "output": ""}\n', encoding="utf-8")
    report = check_file(str(p))
    assert (report.rows, report.unparsed, report.rows_in_file, report.valid) == (3, 2, 5, 2)
    assert "5 rows, 2 usable · errors: 3" in data_tab.summary_html([report], "en")
    refused = check_file(str(ROOT / "tests" / "fixtures" / "data" / "alpaca.json"))
    refused.stage_findings = for_stage(refused, "dpo")
    assert refused.stage_errors and refused.usable == 0 and "4 rows, 0 usable" in data_tab.summary_html([refused], "en")


def test_taking_off_the_last_dataset_says_what_to_do_not_a_fields_error(tmp_path):
    """It read "The data is checked once this is fixed: Datasets (data.datasets): this field is required"."""
    from board.form import form_to_config

    with pytest.raises(ConfigError) as e:
        form_to_config({"data.datasets": []}, None)
    s = Session()
    summary, *_ = data_tab.check_view(s, None, e.value, tmp_path)
    assert "Pick or upload a dataset" in summary and "data.datasets" not in summary
    reason = live.gate(s, "en")[3]
    assert "Pick or upload a dataset" in reason and "required" not in reason


def test_a_bad_value_anywhere_on_the_page_turns_start_off_with_its_field():
    """Epochs -1 or an empty learning rate left Start on until it was pressed."""
    s = Session()
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"training": {"num_train_epochs": -1}})
    s.form_error = {"key": e.value.key, "params": e.value.params}
    start, _, _, reason = live.gate(s, "en")
    assert not start["interactive"] and "training.num_train_epochs" in reason and "must be" in reason
    s.form_error = None
    assert live.gate(s, "en")[0]["interactive"]


def test_the_data_tab_refuses_kto_data_for_dpo_and_takes_it_for_kto(tmp_path):
    from engine.data import check_file
    from engine.data.load import for_stage

    p = tmp_path / "kto.jsonl"
    p.write_text('{"prompt": "q", "completion": "a", "label": true}\n{"prompt": "q", "completion": "b", "label": 0}\n',
                 encoding="utf-8")
    report = check_file(str(p))
    assert report.format == "unpaired"
    assert [f["key"] for f in for_stage(report, "dpo", method="dpo")] == ["data.unpaired_needs_kto"]
    assert for_stage(report, "dpo", method="kto") == []


def test_the_findings_table_gives_a_jsonl_row_its_line(tmp_path):
    """A JSONL row has its line in the table (the line column was empty for JSONL and filled for the rest); after
    a blank line the two differ: the second row is on line 3."""
    from engine.data import check_file

    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "q", "output": "a"}\n\n{"instruction": "q2"}\n', encoding="utf-8")
    c = tmp_path / "bad.csv"
    c.write_text("instruction,output\nq,a\nq2,\n", encoding="utf-8")
    rows = data_tab.findings_rows([check_file(str(p)), check_file(str(c))], "en")
    errors = [r[:4] for r in rows if r[4] == t("ui.data.sev_error", "en")]
    assert errors == [["bad.jsonl", 2, 3, "output"], ["bad.csv", 3, 3, "output"]]
    # every file's errors first: the second file's error sat below the first one's warnings, past the scroll
    severities = [r[4] for r in rows]
    assert severities == sorted(severities, key=lambda sev: sev != t("ui.data.sev_error", "en"))
    assert rows[1][0] == "bad.csv" and len(rows) > 2


def test_start_is_off_while_the_model_card_finds_the_model_cannot_be_had(tmp_path, monkeypatch):
    """The Model card said "this machine is offline" and Start stayed on, saying the same only once pressed."""
    from board import live

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_tab._model_config.cache_clear()
    unusable: list = []
    card = model_tab.estimate_html(RunConfig.from_dict({"model": {"name_or_path": "some-org/no-such-model"}}), 80.0,
                                   tmp_path, "en", unusable=unusable)
    assert [u["key"] for u in unusable] == ["error.offline_hub"] and "tb-estimate-total" not in card
    s = Session()
    s.model_error = unusable[0]
    start, _, _, reason = live.gate(s, "ko")
    assert not start["interactive"] and "some-org/no-such-model" in reason
    s.model_error = None
    assert live.gate(s, "en")[0]["interactive"]
    unusable.clear()
    model_tab.estimate_html(RunConfig.from_dict({}), 80.0, tmp_path, "en", unusable=unusable)
    assert unusable == []  # the demo (built on the first Start) is no problem


def test_no_event_has_two_listeners_that_gradio_holds_back(tmp_path):
    """Gradio's page lets a held-back `always_last` listener go by sending its trigger's whole event again: with
    two such listeners on one field's change, each finishing while the other ran sent the event again, and on a
    loaded machine the page checked its data and saved its settings every second, without end (CI, 2026-11-28)."""
    from collections import Counter

    from board.app import build_app

    demo, ui = build_app(tmp_path)
    held = Counter(target for fn in demo.fns.values() if fn.fn is not None and fn.trigger_mode == "always_last"
                   for target in fn.targets)
    twice = {(demo.blocks[block].elem_id, event): n for (block, event), n in held.items() if n > 1}
    assert twice == {}, twice
    # and each field's change still reaches what follows it: the data check, the estimate, the preference
    # method's settings and Start's gate
    followers = {id(fn) for _, fn, _, _ in ui.on_form_change}
    assert len(followers) == 4, ui.on_form_change
    lr = ui.fields["training.learning_rate"]._id
    assert sum((lr, "change") in fn.targets for fn in demo.fns.values() if fn.fn is not None) == 1
    # called as Gradio calls it, the field that changed runs only its followers: the learning rate is no data's
    # (Gradio left the event out where it could not read the hint, and every change checked the data again)
    import gradio as gr
    from gradio.helpers import special_args

    listener = next(fn for fn in demo.fns.values() if fn.fn is not None and (lr, "change") in fn.targets)
    data = {c: c.value for c in listener.inputs}
    data[ui.session] = Session()  # a page's own
    rate, method, gamma = (ui.fields[k] for k in ("training.learning_rate", "dpo.method", "dpo.simpo_gamma"))

    def heard(values: dict, field) -> dict:
        args, *_ = special_args(listener.fn, [values], None, gr.EventData(field, {}))
        return listener.fn(*args)

    assert ui.c["data-summary"] in heard(data, rate), "the page's first change: everything follows once"
    redrawn = heard({**data, rate: 3e-4}, rate)
    assert ui.c["data-summary"] not in redrawn and ui.c["train-start"] in redrawn and gamma not in redrawn
    redrawn = heard({**data, rate: 3e-4, method: "simpo"}, method)
    assert redrawn[gamma]["interactive"] is True and ui.c["train-start"] in redrawn  # SimPO's margin opens
    # Gradio's page sends only the last of the changes made while the listener ran: Method picked while a stage
    # switch's five fields were heard was never heard itself, and ORPO's greyed settings stayed open
    redrawn = heard({**data, rate: 1e-4, method: "orpo"}, rate)
    assert redrawn[gamma]["interactive"] is False and redrawn[ui.fields["dpo.loss_type"]]["value"] == "sigmoid"
    assert ui.c["data-summary"] in redrawn, "the data check follows the method too (KTO takes unpaired answers)"


def test_a_file_level_problem_names_the_file_not_the_servers_upload_folder(tmp_path):
    """An upload lives in a temporary folder on the server: the message names the file the user picked."""
    up = tmp_path / "gradio" / "0123abcd" / "train.jsonl"
    up.parent.mkdir(parents=True)
    up.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 52428800\n")
    cfg = RunConfig.from_dict({"data": {"datasets": [{"path": str(up)}]}})
    s = Session(lang="ko")
    summary, findings, _, _ = data_tab.check_view(s, cfg, None, tmp_path)
    said = " ".join(str(r[5]) for r in findings["value"])
    assert "train.jsonl" in said and "git lfs" in said and "0123abcd" not in said
    assert "0123abcd" not in live.gate(s, "ko")[3] and "train.jsonl" in live.gate(s, "ko")[3]
    assert t("ui.data.format_unknown", "ko") in summary  # no bare "?" for a file in no format


def test_preference_method_greys_the_settings_it_does_not_use_at_values_start_accepts(tmp_path):
    """ORPO and SimPO have their own loss: the DPO loss and label smoothing are greyed and set back to what they
    accept (an ipo loss greyed under ORPO was refused at Start and could not be changed); ORPO and KTO take no SFT
    weight; only SimPO has a margin. Each method's greyed values build a config Start accepts."""
    from board.form import build_config
    from engine.config import RunConfig

    keys = train_tab.DPO_METHOD_FIELDS
    for method in ("dpo", "kto", "orpo", "simpo"):
        ups = dict(zip(keys, train_tab.method_fields(method), strict=True))
        assert ups["dpo.loss_type"]["interactive"] is (method in ("dpo", "kto"))
        assert ups["dpo.sft_weight"]["interactive"] is (method in ("dpo", "simpo"))
        assert ups["dpo.simpo_gamma"]["interactive"] is (method == "simpo")
        greyed = {k: u["value"] for k, u in ups.items() if "value" in u}
        values = {**config_to_form(RunConfig(), NAMES), "stage": "dpo", "data.datasets": ["demo:dpo"], "dpo.method": method,
                  "dpo.loss_type": "ipo", "dpo.label_smoothing": 0.2, "dpo.sft_weight": 0.5, **greyed}
        if method == "kto":
            values["dpo.loss_type"], values["dpo.sft_weight"] = "sigmoid", 0.0
        cfg = build_config(values, None, tmp_path)
        assert cfg.dpo.method == method
    # beta follows to the method's usual value from another method's, never from the reader's own
    beta = lambda method, value: train_tab.method_fields(method, value)[-1].get("value")  # noqa: E731
    assert (beta("simpo", 0.1), beta("dpo", 2.0), beta("orpo", 2.0), beta("simpo", 0.3), beta("dpo", 0.1)) == \
        (2.0, 0.1, 0.1, None, None)
