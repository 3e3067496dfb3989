"""The board in a real browser: languages, a bad file's row number, a demo SFT run streamed, stopped,
resumed and listed, a reload and a second tab reattaching, a board restart finding its run.

Waits are generous for a two-core machine but always bounded; every screenshot lands in
test-output/browser/ for a person to look at.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from board_process import OUT, grid, make_home, start_board, stop_board

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIRST_POINTS_S = 240  # spawn + torch import + model load on 2 cores, while the board keeps serving
LOSS_POINTS = (
    "() => { const g = document.querySelector('#train-loss-plot .js-plotly-plot');"
    " return g && g.data && g.data[0] && g.data[0].x ? g.data[0].x.length : 0 }"
)




UNNAMED_FIELDS = """() => [...document.querySelectorAll('textarea, input:not([type=hidden]):not([type=file])')]
  .filter(f => f.offsetParent !== null)
  .filter(f => !f.labels?.length && !f.getAttribute('aria-label') && !f.getAttribute('aria-labelledby'))
  .map(f => (f.closest('[id]') || {}).id + ':' + f.type)"""


def open_board(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#model-name", timeout=60_000)
    page.wait_for_function("() => document.body.dataset.tbReady === '1'", timeout=90_000)  # load handlers done


def tab(page, name: str) -> None:
    page.click(f"#{name}-tab-button")
    page.wait_for_timeout(300)


def choose(page, elem_id: str, label: str) -> None:
    page.click(f"#{elem_id} input")
    page.click(f'[role=option][aria-label="{label}"]')


def settled(page, before: str | None, quiet_ms: int = 1500, timeout: float = 30.0) -> None:
    """Wait until the page's saved settings (`tuneboard-form` in localStorage, each save a new ciphertext) have
    changed from `before` and then stayed as they are for `quiet_ms`: every change made so far is saved."""
    read = "localStorage.getItem('tuneboard-form')"
    page.wait_for_function(f"(before) => {read} !== before", arg=before, timeout=timeout * 1000)
    deadline, last, since = time.monotonic() + timeout, page.evaluate(read), time.monotonic()
    while time.monotonic() - since < quiet_ms / 1000:
        assert time.monotonic() < deadline, "the page's settings kept changing"
        page.wait_for_timeout(200)
        if (now := page.evaluate(read)) != last:
            last, since = now, time.monotonic()


def shot(page, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def status(page) -> str | None:
    return page.get_attribute("#train-progress .tb-progress", "data-status")


def points(page) -> int:
    return page.evaluate(LOSS_POINTS)


def wait_status(page, wanted: set[str], timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(page)
        if s in wanted:
            return s
        page.wait_for_timeout(500)
    raise AssertionError(
        f"status stayed {status(page)!r}, wanted {wanted}; progress: {page.inner_text('#train-progress')!r}"
    )


def wait_points(page, more_than: int, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = points(page)
        if n > more_than:
            return n
        page.wait_for_timeout(500)
    raise AssertionError(
        f"the loss chart stayed at {points(page)} points (wanted > {more_than}); "
        f"progress: {page.inner_text('#train-progress')!r}"
    )


def run_id_shown(page) -> str:
    return page.inner_text("#train-progress .tb-run-id") if page.query_selector("#train-progress .tb-run-id") else ""


def start(page) -> str:
    """Press Start and wait until the page shows the new run (it may have shown an older one)."""
    before = run_id_shown(page)
    page.click("#train-start")
    page.wait_for_function(
        "old => { const e = document.querySelector('#train-progress .tb-run-id'); return e && e.textContent !== old }",
        arg=before,
        timeout=60_000,
    )
    return run_id_shown(page)


def long_run(page, epochs: int = 60) -> None:
    """Make the demo run long enough to watch, stop and reload (hundreds of steps)."""
    tab(page, "train")
    page.fill("#train-epochs input", str(epochs))
    page.press("#train-epochs input", "Tab")


def test_every_tab_renders_offline(page, board):
    open_board(page, board.url)
    for name, ready in (
        ("model", "#model-estimate"),
        ("data", "#data-summary .tb-card"),
        ("train", "#train-loss-plot"),
        ("runs", "#runs-table"),
    ):
        tab(page, name)
        page.wait_for_selector(ready, timeout=60_000)
        page.wait_for_timeout(800)
        shot(page, f"tab-{name}")
        # every field a screen reader can reach has a name (the Train log's was taken by its Copy button)
        assert page.evaluate(UNNAMED_FIELDS) == [], name
    assert "alpaca" in page.evaluate("() => document.querySelector('#data-summary').textContent")
    assert page.errors == [], page.errors
    assert page.foreign == [], f"requests outside this machine: {page.foreign}"


def test_offline_a_listed_model_still_gets_its_memory_estimate(page, board):
    """No Hub here: picking a listed 7B model shows its estimate from the bundled shape, and says so."""
    open_board(page, board.url)
    choose(page, "model-name", "Qwen/Qwen2.5-7B-Instruct")
    page.wait_for_function(
        "() => document.querySelector('#model-estimate')?.textContent.includes('bundled copy')", timeout=30_000
    )
    card = page.inner_text("#model-estimate")
    assert "GB" in card and "Cannot download" not in card, card
    shot(page, "model-bundled-estimate")
    assert page.errors == [], page.errors


def test_enter_in_the_model_box_keeps_what_was_typed(page, board):
    """Enter took the first listed match: Qwen/Qwen2.5-0.5B became Qwen/Qwen2.5-0.5B-Instruct, another model, without
    a word. Typed + Enter is kept as typed; a listed model is still picked with the arrow keys and Enter."""
    open_board(page, board.url)
    page.click("#model-name input")
    page.fill("#model-name input", "Qwen/Qwen2.5-0.5B")
    page.press("#model-name input", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#model-estimate')?.textContent.includes('Qwen/Qwen2.5-0.5B')"
        " && !document.querySelector('#model-estimate').textContent.includes('Instruct')", timeout=30_000)
    assert page.input_value("#model-name input") == "Qwen/Qwen2.5-0.5B"
    page.click("#model-name input")
    page.fill("#model-name input", "Qwen3-0.6")
    page.press("#model-name input", "ArrowDown")
    page.press("#model-name input", "Enter")
    page.wait_for_function("() => document.querySelector('#model-name input')?.value === 'Qwen/Qwen3-0.6B'",
                           timeout=30_000)
    assert page.errors == [], page.errors


def test_switch_to_korean_and_it_stays(page, board):
    open_board(page, board.url)
    choose(page, "top-lang", "한국어")
    page.wait_for_function(
        "() => document.querySelector('#model-tab-button')?.textContent.includes('모델')", timeout=30_000
    )
    tab(page, "train")
    page.wait_for_function(
        "() => document.querySelector('#train-start')?.textContent.includes('학습 시작')", timeout=30_000
    )
    assert "단계" in page.inner_text("#train-stage")
    assert "학습률" in page.inner_text("#train-lr")
    assert page.evaluate("document.documentElement.lang") == "ko"  # screen readers, and Han glyphs drawn as Korean
    shot(page, "ko-train")
    tab(page, "data")
    page.wait_for_function(
        "() => document.querySelector('#data-summary')?.textContent.includes('감지된 형식')", timeout=30_000
    )
    shot(page, "ko-data")
    # Gradio words its upload box in the browser's language (English here): the box shows the page's words
    hint = page.evaluate("() => getComputedStyle(document.querySelector("
                         "'#data-upload [data-testid=upload-text]'), '::after').content")
    assert "파일을 여기에" in hint, hint
    # Gradio's own words, which its front end takes from the browser's language, follow the page's too
    assert "드롭" in page.inner_text("#data-upload [data-testid=upload-text]")
    tab(page, "chat")  # a table's column names too, before it has any rows (its label says 시드 as well)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chat-sweep-table thead th')].some(th => th.innerText.trim() === '시드')",
        timeout=30_000,
    )
    page.reload()  # the reader's choice is remembered in this browser
    page.wait_for_function(
        "() => document.querySelector('#model-tab-button')?.textContent.includes('모델')", timeout=60_000
    )
    assert "모델" in page.inner_text("#model-name")
    tab(page, "data")  # drawn after the remembered choice was applied as the page opened
    page.wait_for_selector("#data-upload [data-testid=upload-text]", timeout=30_000)
    assert "드롭" in page.inner_text("#data-upload [data-testid=upload-text]")
    assert page.evaluate("document.documentElement.lang") == "ko"


def test_the_language_chosen_last_is_the_one_the_next_window_opens_in(chromium, board):
    """A language picked as the page opened was often lost: the language the page opened in was saved as well,
    and whichever save finished last won (a helper's five picks, each in a new window: two came back as the
    one before)."""
    state = None
    for label in ("한국어", "English", "日本語"):
        context = chromium.new_context(storage_state=state, locale="en-US")
        try:
            pg = context.new_page()
            pg.goto(board.url)
            pg.wait_for_selector("#top-lang input", timeout=60_000)
            choose(pg, "top-lang", label)  # at once, while the page still opens
            pg.wait_for_function("() => document.body.dataset.tbReady === '1'", timeout=90_000)
            pg.wait_for_timeout(2000)
            state = context.storage_state()
        finally:
            context.close()
        context = chromium.new_context(storage_state=state, locale="en-US")
        try:
            pg = context.new_page()
            open_board(pg, board.url)
            assert pg.input_value("#top-lang input") == label
            state = context.storage_state()
        finally:
            context.close()


def test_browser_language_is_the_default(chromium, board):
    context = chromium.new_context(locale="ja-JP")
    try:
        pg = context.new_page()
        open_board(pg, board.url)
        pg.wait_for_function(
            "() => document.querySelector('#train-tab-button')?.textContent.includes('学習')", timeout=30_000
        )
        tab(pg, "chat")  # the empty tables' column names too
        pg.wait_for_function(
            "() => [...document.querySelectorAll('#chat-sweep-table thead th')]"
            ".some(th => th.innerText.trim() === 'シード')",
            timeout=30_000,
        )
    finally:
        context.close()


def test_a_bad_file_shows_its_row_and_blocks_start(page, board, tmp_path):
    bad = tmp_path / "bad_rows.jsonl"
    rows = [
        {"instruction": "2+2?", "output": "4"},
        {"instruction": "3+3?", "output": "6"},
        {"instruction": "5+5?"},
        {"instruction": "1+1?", "output": "2"},
    ]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    open_board(page, board.url)
    tab(page, "data")
    page.set_input_files("#data-upload input[type=file]", str(bad))
    page.wait_for_function(
        "() => document.querySelector('#data-findings')?.textContent.includes('output')", timeout=60_000
    )
    cells = grid(page, "data-findings")
    assert any(row[1] == "3" and row[3] == "output" and row[4] == "error" for row in cells), cells
    assert page.get_attribute("#data-summary .tb-data-file", "data-errors") == "1"
    shot(page, "data-bad-file")
    tab(page, "train")
    assert page.is_disabled("#train-start")
    reason = page.inner_text("#train-start-reason")
    assert "1 error" in reason and "row 3" in reason, reason
    tab(page, "data")  # "Skip rows with errors": the good rows train, the bad one is left out
    page.click("#data-skip-bad-rows input[type=checkbox]")
    page.wait_for_selector("#data-summary .tb-left-out", timeout=60_000)  # the card says what will train
    assert "3 usable rows" in page.inner_text("#data-summary .tb-left-out")
    shot(page, "data-skip-bad-rows")
    tab(page, "train")
    page.wait_for_function("() => !document.querySelector('#train-start').disabled", timeout=60_000)
    # no reason left (Gradio's "0.1s" timer of an event still in flight may show there a moment on a busy machine)
    page.wait_for_function("() => document.querySelector('#train-start-reason').innerText.trim() === ''",
                           timeout=30_000)


def test_demo_run_streams_reattaches_stops_and_resumes(page, chromium, board):
    open_board(page, board.url)
    long_run(page)
    run_id = start(page)
    wait_status(page, {"starting", "running"}, 30)
    first = wait_points(page, 2, FIRST_POINTS_S)
    more = wait_points(page, first, 60)  # the chart keeps gaining points
    assert more > first
    assert page.is_disabled("#train-start") and not page.is_disabled("#train-stop")
    shot(page, "train-running")

    page.reload()  # a reload reattaches to the live run and keeps streaming
    open_board(page, board.url)
    tab(page, "train")
    assert wait_status(page, {"running"}, 30) == "running"
    after = wait_points(page, 0, 30)
    wait_points(page, after, 60)
    assert page.inner_text("#train-progress .tb-run-id") == run_id

    second = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()  # a second tab
    try:
        open_board(second, board.url)
        tab(second, "train")
        wait_status(second, {"running"}, 30)
        assert second.inner_text("#train-progress .tb-run-id") == run_id
        assert second.is_disabled("#train-start")
        assert run_id in second.inner_text("#train-start-reason")  # one run at a time, and why
    finally:
        second.context.close()

    page.click("#train-stop")
    assert wait_status(page, {"stopped", "failed", "finished"}, 120) == "stopped"
    stopped_at = int(page.get_attribute("#train-progress .tb-progress", "data-step"))
    assert "Resume" in page.inner_text("#train-alerts")
    assert not page.is_disabled("#train-resume") and not page.is_disabled("#train-start")
    shot(page, "train-stopped")

    tab(page, "runs")
    deadline, row = time.time() + 60, None
    while time.time() < deadline:  # the listing is read when asked: ask until the run is in it
        page.click("#runs-refresh")
        page.wait_for_timeout(1500)
        row = next((cells for cells in grid(page, "runs-table") if cells[0] == run_id), None)
        if row and row[1] == "stopped":
            break
    assert row and row[1] == "stopped", row
    page.wait_for_function(
        "() => document.querySelector('#runs-loss-plot .js-plotly-plot')?.data?.[0]?.x?.length > 0", timeout=30_000
    )
    shot(page, "runs-stopped")

    tab(page, "train")
    page.click("#train-resume")
    wait_status(page, {"starting", "running"}, 30)
    deadline = time.time() + FIRST_POINTS_S
    while int(page.get_attribute("#train-progress .tb-progress", "data-step") or 0) <= stopped_at + 2:
        assert time.time() < deadline, page.inner_text("#train-progress")
        page.wait_for_timeout(500)
    assert page.inner_text("#train-progress .tb-run-id") == run_id  # the same run, continued
    page.click("#train-stop")
    assert wait_status(page, {"stopped", "failed", "finished"}, 120) == "stopped"


def test_dpo_goes_on_from_the_sft_runs_adapter_and_charts_its_rewards(page, board):
    """SFT, then DPO on its adapter, all on the page: the Model tab offers the stopped SFT run above, the LoRA
    controls take the adapter's shape, and the DPO run draws its rewards and ranked pairs beside the loss."""
    open_board(page, board.url)
    assert not page.is_visible("#train-rewards-plot")  # no DPO run watched yet
    page.click("#model-init-from input")
    options = page.locator("[role=option]").all_inner_texts()
    sft = next((o for o in options if "· SFT ·" in o), None)
    assert sft, options
    page.click(f'[role=option][aria-label="{sft}"]')
    page.wait_for_function("() => document.querySelector('#model-rank input')?.disabled", timeout=30_000)
    tab(page, "train")
    page.click("#train-stage >> text=DPO (preferences)")
    page.fill("#train-max-steps input", "4")
    page.press("#train-max-steps input", "Tab")
    page.wait_for_timeout(500)
    start(page)
    assert wait_status(page, {"finished", "failed", "stopped"}, FIRST_POINTS_S) == "finished", page.inner_text(
        "#train-alerts")
    page.wait_for_function(
        "() => document.querySelector('#train-rewards-plot .js-plotly-plot')?.data?.[0]?.x?.length > 0",
        timeout=30_000,
    )
    names = page.evaluate("() => document.querySelector('#train-rewards-plot .js-plotly-plot').data.map(d => d.name)")
    assert [n for n in names if "eval" not in n] == ["chosen", "rejected", "margin"], names  # + validation's
    assert page.is_visible("#train-accuracy-plot")
    config = (board.home / "runs" / run_id_shown(page) / "config.yaml").read_text()
    assert "stage: dpo" in config and f"init_from: {board.home / 'runs' / sft.split(' · ')[0]}" in config, config
    shot(page, "train-dpo-rewards")


def test_a_failed_run_reads_as_a_sentence_with_details_on_demand(page, board):
    broken = board.home / "broken-model"  # a model folder whose config.json names no architecture: Start takes
    broken.mkdir(exist_ok=True)  # it (one without config.json, a tokenizer or weights is refused at Start), loading
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')  # it fails
    (broken / "tokenizer.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not weights")
    open_board(page, board.url)
    page.fill("#model-name input", "./broken-model")
    page.press("#model-name input", "Enter")
    tab(page, "train")
    start(page)
    assert wait_status(page, {"failed", "finished", "stopped"}, FIRST_POINTS_S) == "failed"
    alert = page.inner_text("#train-alerts")
    assert alert.startswith("The run failed") and "Traceback" not in alert, alert
    page.click("#train-details")  # the traceback is one click away
    page.wait_for_function(
        "() => document.querySelector('#train-traceback')?.textContent.includes('Traceback')", timeout=30_000
    )
    shot(page, "train-failed")


def test_runs_tab_compares_runs_on_one_chart(page, board):
    open_board(page, board.url)
    tab(page, "runs")
    page.wait_for_function("() => document.querySelectorAll('#runs-table [role=gridcell]').length > 0", timeout=30_000)
    ids = [row[0] for row in grid(page, "runs-table")]
    assert len(ids) >= 2, ids  # the stopped demo run and the failed one from the tests above
    for run_id in ids[:2]:
        page.click("#runs-compare input")
        page.click(f'[role=option][aria-label="{run_id}"]')
        page.wait_for_timeout(500)
    page.keyboard.press("Escape")
    page.wait_for_function(
        "() => document.querySelector('#runs-compare-plot .js-plotly-plot')?.data?.length >= 2", timeout=30_000
    )
    names = page.evaluate("() => document.querySelector('#runs-compare-plot .js-plotly-plot').data.map(d => d.name)")
    assert sorted(n for n in names if " · " not in n) == sorted(ids[:2])  # a run with a validation split adds
    assert all(n.split(" · ")[0] in ids[:2] for n in names)  # its eval curve, "<run> · eval"
    shot(page, "runs-compare")


def test_a_run_is_deleted_after_a_confirmation(page, board):
    from engine.config import RunConfig
    from engine.events import Finished, RunStarted

    run, other = (board.home / "runs" / f"2020010{i}-000000-old-experiment" for i in (1, 3))  # old: never picked first
    for r in (run, other):
        r.mkdir(parents=True)
        RunConfig().save(str(r / "config.yaml"))
        events = [RunStarted(run_id=r.name, stage="sft", total_steps=1, pid=1), Finished(status="finished", step=1)]
        (r / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    open_board(page, board.url)
    tab(page, "runs")
    page.wait_for_function("id => document.querySelector('#runs-table')?.textContent.includes(id)", arg=run.name,
                           timeout=30_000)
    choose(page, "runs-pick", run.name)
    page.click("#runs-delete")
    page.wait_for_selector("#runs-delete-yes", state="visible", timeout=30_000)
    assert "for good" in page.inner_text("#runs-delete-note") and run.exists()
    shot(page, "runs-delete-confirm")
    page.click("#runs-delete-no")  # changing one's mind keeps the run
    page.wait_for_selector("#runs-delete-yes", state="hidden", timeout=30_000)
    assert run.exists()
    page.click("#runs-delete")
    page.wait_for_selector("#runs-delete-yes", state="visible", timeout=30_000)
    choose(page, "runs-pick", other.name)  # another run picked: the question about the first one is withdrawn
    page.wait_for_selector("#runs-delete-yes", state="hidden", timeout=30_000)
    choose(page, "runs-pick", run.name)
    page.click("#runs-delete")
    page.click("#runs-delete-yes")
    page.wait_for_function("() => document.querySelector('#runs-delete-note')?.textContent.includes('deleted')",
                           timeout=30_000)
    assert not run.exists()
    page.wait_for_function("id => !document.querySelector('#runs-table')?.textContent.includes(id)", arg=run.name,
                           timeout=30_000)
    assert page.is_hidden("#runs-delete-yes") and other.exists() and not page.errors


def test_the_open_runs_tab_follows_a_running_run(page, board):
    """No Refresh needed: while the tab is open, a running run's steps and loss show up within seconds."""
    import os

    from engine.config import RunConfig
    from engine.events import Finished, LogStep, RunStarted

    run = board.home / "runs" / "20200102-000000-elsewhere"  # a run whose worker is this test process
    run.mkdir(parents=True)
    RunConfig().save(str(run / "config.yaml"))
    (run / "events.jsonl").write_text(RunStarted(run_id=run.name, stage="sft", total_steps=8, pid=os.getpid()).to_json()
                                      + "\n")
    open_board(page, board.url)
    tab(page, "runs")
    row = "id => (document.querySelector('#runs-table')?.textContent || '')"
    page.wait_for_function(f"id => ({row})(id).includes(id)", arg=run.name, timeout=30_000)
    with open(run / "events.jsonl", "a") as f:
        f.write(LogStep(step=5, loss=0.4321, learning_rate=1e-4).to_json() + "\n")
    page.wait_for_function(f"id => ({row})(id).includes('5/8') && ({row})(id).includes('0.4321')", arg=run.name,
                           timeout=30_000)
    with open(run / "events.jsonl", "a") as f:
        f.write(Finished(status="finished", step=8).to_json() + "\n")
    page.wait_for_function("() => [...document.querySelectorAll('#runs-table [role=row]')].some("
                           "r => r.textContent.includes('20200102-000000-elsewhere') && r.textContent.includes('finished'))",
                           timeout=30_000)
    assert not page.errors


def test_show_command_and_save_config(page, board):
    open_board(page, board.url)
    tab(page, "train")
    page.fill("#train-lr input", "0.0003")
    page.press("#train-lr input", "Tab")
    page.click("#train-show-command")
    page.wait_for_function(
        "() => document.querySelector('#train-command')?.textContent.includes('tuneboard train')", timeout=30_000
    )
    text = page.evaluate("() => document.querySelector('#train-command').textContent")
    # the code view draws only the lines in sight: check the file the printed command names
    path = re.search(r"tuneboard train (\S+\.yaml) --workdir", text).group(1)
    assert "learning_rate: 0.0003" in Path(path).read_text() and path.startswith(str(board.home))
    page.click("#train-save-config")
    page.wait_for_function(
        "() => document.querySelector('#train-message')?.textContent.includes('.yaml')", timeout=30_000
    )
    saved = list((board.home / "configs").glob("*.yaml"))
    assert saved and any("learning_rate: 0.0003" in p.read_text() for p in saved)
    page.click("#train-stage >> text=DPO (preferences)")  # KTO is chosen on the page, as DPO's method
    page.check("#train-dpo-method input[value=kto]")
    page.wait_for_timeout(500)
    page.click("#train-show-command")
    page.wait_for_function("() => /configs\\/dpo-/.test(document.querySelector('#train-command')?.textContent)",
                           timeout=30_000)
    text = page.evaluate("() => document.querySelector('#train-command').textContent")
    path = re.search(r"tuneboard train (\S+\.yaml) --workdir", text).group(1)
    assert "method: kto" in Path(path).read_text()


def test_orpo_and_simpo_grey_the_settings_they_do_not_use(page, board):
    """The preference methods without a reference: the DPO loss and smoothing greyed for both, the margin open for
    SimPO alone, and what the page shows is what the command trains."""
    open_board(page, board.url)
    tab(page, "train")
    page.click("#train-stage >> text=DPO (preferences)")
    page.check("#train-dpo-method input[value=orpo]")
    disabled = "(id) => document.querySelector('#' + id + ' input')?.disabled"
    page.wait_for_function(f"() => ({disabled})('train-dpo-loss') && ({disabled})('train-dpo-simpo-gamma')"
                           f" && ({disabled})('train-dpo-sft-weight')", timeout=30_000)
    page.check("#train-dpo-method input[value=simpo]")
    page.wait_for_function(f"() => !({disabled})('train-dpo-simpo-gamma') && !({disabled})('train-dpo-sft-weight')"
                           f" && ({disabled})('train-dpo-loss')", timeout=30_000)
    page.fill("#train-dpo-simpo-gamma input", "0.8")
    page.press("#train-dpo-simpo-gamma input", "Tab")
    page.wait_for_timeout(500)
    page.click("#train-show-command")
    page.wait_for_function("() => /configs\\/dpo-/.test(document.querySelector('#train-command')?.textContent)",
                           timeout=30_000)
    text = page.evaluate("() => document.querySelector('#train-command').textContent")
    saved = Path(re.search(r"tuneboard train (\S+\.yaml) --workdir", text).group(1)).read_text()
    assert "method: simpo" in saved and "simpo_gamma: 0.8" in saved and "loss_type: sigmoid" in saved, saved
    assert "beta: 2.0" in saved, "SimPO's usual beta, not DPO's 0.1"
    assert not page.errors


def test_a_restarted_board_finds_its_run(chromium, tmp_path_factory, demo_model):
    """The worker outlives a killed board; the next board reattaches, and Stop still reaches it."""
    home = make_home(tmp_path_factory, demo_model, "restart-home")
    first = start_board(home, "restart-1")
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    try:
        open_board(pg, first.url)
        long_run(pg)
        run_id = start(pg)
        wait_points(pg, 2, FIRST_POINTS_S)
        stop_board(first, clean=False)  # killed: no chance to stop its run
        second = start_board(home, "restart-2")
        try:
            open_board(pg, second.url)
            tab(pg, "train")
            assert wait_status(pg, {"running"}, 30) == "running"
            assert pg.inner_text("#train-progress .tb-run-id") == run_id
            n = wait_points(pg, 0, 30)
            wait_points(pg, n, 60)  # still streaming, read back from events.jsonl
            assert pg.is_disabled("#train-start")
            pg.click("#train-stop")
            assert wait_status(pg, {"stopped", "failed", "finished"}, 120) == "stopped"
        finally:
            stop_board(second)
    finally:
        context.close()
        stop_board(first, clean=False)


def test_a_reload_keeps_the_settings_and_a_board_started_in_korean_says_so_to_the_browser(chromium, tmp_path_factory,
                                                                                          demo_model):
    """A reload put the demo data and every default back without a word (Start then trained on those); and a board
    started with --lang ko, opened in an English browser, kept <html lang="en"> and Gradio's English words."""
    board = start_board(make_home(tmp_path_factory, demo_model, "ko-home"), "ko", extra=("--lang", "ko"))
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    pg = context.new_page()
    try:
        open_board(pg, board.url)
        pg.wait_for_function("() => document.documentElement.lang === 'ko'", timeout=30_000)
        tab(pg, "train")
        pg.fill("#train-lr input", "0.00042")
        pg.fill("#train-epochs input", "7")
        pg.press("#train-epochs input", "Tab")
        tab(pg, "data")
        mine = tmp_path_factory.mktemp("upload") / "mine.jsonl"  # uploaded after the board started
        mine.write_text('{"instruction": "질문", "output": "답변입니다."}\n', encoding="utf-8")
        pg.set_input_files("#data-upload input[type=file]", str(mine))
        pg.wait_for_function("() => document.querySelector('#data-datasets').innerText.includes('mine.jsonl')",
                             timeout=30_000)
        saved = pg.evaluate("localStorage.getItem('tuneboard-form')")
        pg.click("#data-assistant-only input")  # a checkbox: off
        settled(pg, saved)  # saved by a round trip to the board: 500 ms was too short on a busy machine
        pg.reload()
        open_board(pg, board.url)
        tab(pg, "train")
        pg.wait_for_function("() => document.querySelector('#train-lr input')?.value === '0.00042'", timeout=30_000)
        assert pg.input_value("#train-epochs input") == "7"
        tab(pg, "data")
        assert not pg.is_checked("#data-assistant-only input")
        # the upload, by its name: the list was the one the board started with, and showed it as a bare path
        chosen = pg.inner_text("#data-datasets")
        assert "mine.jsonl" in chosen and "uploads/" not in chosen, chosen
        context.clear_cookies()
        fresh = chromium.new_context(locale="en-US").new_page()  # another browser keeps its own
        open_board(fresh, board.url)
        tab(fresh, "train")
        assert fresh.input_value("#train-lr input") != "0.00042"
        fresh.context.close()
    finally:
        context.close()
        stop_board(board)


def test_a_bad_number_turns_start_off_as_it_is_typed(page, board):
    open_board(page, board.url)
    tab(page, "train")
    page.fill("#train-epochs input", "-1")
    page.press("#train-epochs input", "Tab")
    page.wait_for_function("() => document.querySelector('#train-start')?.disabled", timeout=30_000)
    assert "num_train_epochs" in page.inner_text("#train-start-reason")
    page.fill("#train-epochs input", "2")
    page.press("#train-epochs input", "Tab")
    page.wait_for_function("() => !document.querySelector('#train-start')?.disabled", timeout=30_000)
    assert page.errors == [], page.errors


def test_on_a_phone_the_top_bar_wraps_instead_of_overlapping(chromium, board):
    context = chromium.new_context(viewport={"width": 420, "height": 900}, locale="en-US")
    try:
        pg = context.new_page()
        open_board(pg, board.url)
        brand, status, lang = (pg.locator(s).bounding_box() for s in ("#top-brand", "#top-status", "#top-lang"))
        assert brand["width"] > 200 and status["y"] >= brand["y"] + brand["height"] - 1, (brand, status)
        assert lang["x"] + lang["width"] <= 420 and pg.evaluate("document.documentElement.scrollWidth") <= 420
    finally:
        context.close()


def test_sigterm_ends_the_board_as_ctrl_c_does(tmp_path):
    """docker stop, systemd and kill send SIGTERM: the board stops its run with a checkpoint (Jobs.shutdown, as for
    Ctrl+C) and exits 143, instead of dying at once and leaving the run to be killed with the container."""
    import signal

    board = start_board(tmp_path, "sigterm")
    try:
        board.proc.send_signal(signal.SIGTERM)
        assert board.proc.wait(60) == 143
    finally:
        stop_board(board, clean=False)
