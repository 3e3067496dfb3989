"""The Chat & export tab in a real Chromium against a real board: chat with the demo run and watch the
text stream in, run a 3-seed sweep and pin a seed, export a merged model and see its folder listed."""

from __future__ import annotations

import shutil

import pytest
from board_process import grid, make_home, start_board, stop_board

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chat_board(chromium, trained_run, demo_model, tmp_path_factory):
    """A board over a workdir holding only the demo model and the demo run (so the run is the one picked)."""
    home = make_home(tmp_path_factory, demo_model, "chat-home")
    run = home / "runs" / trained_run.name
    shutil.copytree(trained_run, run)
    from engine.config import RunConfig  # the run's own answer length, which the page must bring with the run

    RunConfig.load(str(run / "config.yaml")).with_overrides({"generation.max_new_tokens": 96}).save(str(run / "config.yaml"))
    board = start_board(home, "chat")
    yield board, trained_run.name
    stop_board(board)


@pytest.fixture(scope="module")
def chat_page(chromium, chat_board):
    """One page for the module: the sweep and the export follow the chat, as a person would."""
    from playwright.sync_api import expect

    board, run_id = chat_board
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    pg = context.new_page()
    pg.goto(board.url)
    pg.locator("#chat-tab-button").click()
    expect(pg.locator("#chat-run input")).to_have_value(run_id, timeout=30_000)
    yield pg
    context.close()


# records every text the last answer showed, however fast the chunks come
WATCH = """() => {
  window.__seen = [];
  const box = document.querySelector('#chat-output');
  new MutationObserver(() => {
    const bots = box.querySelectorAll('.bot, [data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  }).observe(box, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_streams_the_answer(chat_page):
    from playwright.sync_api import expect

    page = chat_page
    # the run the page picked by itself brings its own settings, as picking it by hand does
    expect(page.locator("#chat-max-new-tokens input[type=number]")).to_have_value("96", timeout=30_000)
    page.evaluate(WATCH)
    box = page.locator("#chat-input textarea")
    box.fill("What is the capital")
    box.press("Shift+Enter")  # a new line, as the placeholder says
    box.type("of Korea?")
    assert box.input_value() == "What is the capital\nof Korea?"
    box.press("Enter")  # sends (it didn't: Gradio sends on Enter only from a one-line box)
    expect(page.locator("#chat-meta")).to_contain_text("seed 0", timeout=120_000)
    expect(page.locator("#chat-status")).to_contain_text("Loaded")
    seen = page.evaluate("window.__seen")
    assert len(seen) >= 2, seen  # the answer grew on the page before it was complete
    assert seen[-1].startswith(seen[0]) and len(seen[-1]) > len(seen[0])
    assert seen[-1] in page.locator("#chat-output").inner_text()


def test_greedy_greys_out_what_it_ignores(chat_page):
    """Greedy decoding's answers-per-prompt box was disabled but drawn like an enabled one."""
    page = chat_page
    opacity = "() => getComputedStyle(document.querySelector('#chat-num-return input')).opacity"
    assert page.evaluate(opacity) == "1"
    page.locator("#chat-mode").get_by_text("Greedy", exact=True).click()
    page.wait_for_function("() => document.querySelector('#chat-num-return input').disabled", timeout=30_000)
    assert float(page.evaluate(opacity)) < 0.7
    # the temperature slider whole, its label with it (Gradio dimmed only the thumb: it looked settable)
    page.wait_for_function("() => document.querySelector('#chat-temperature input[type=range]').disabled")
    label = "() => getComputedStyle(document.querySelector('#chat-temperature label')).opacity"
    assert float(page.evaluate(label)) < 0.7
    page.locator("#chat-mode").get_by_text("Sampling", exact=True).click()
    page.wait_for_function("() => !document.querySelector('#chat-num-return input').disabled", timeout=30_000)


def test_three_seed_sweep_and_pin(chat_page):
    from playwright.sync_api import expect

    page = chat_page
    page.locator("#chat-sweep-n input").fill("3")
    page.locator("#chat-sweep").click()
    expect(page.locator("#chat-sweep-table [role=grid]")).to_have_attribute("aria-rowcount", "4", timeout=120_000)
    expect(page.locator("#chat-sweep-pick input")).to_have_value("0", timeout=30_000)
    assert [row[0] for row in grid(page, "chat-sweep-table")] == ["0", "1", "2"]
    page.locator("#chat-sweep-pick input").click()
    page.get_by_role("option", name="2", exact=True).click()
    page.locator("#chat-pin").click()
    expect(page.locator("#chat-seed input")).to_have_value("2", timeout=30_000)


def headers(page, elem_id: str) -> list[str]:
    return page.evaluate(f"() => [...document.querySelectorAll('#{elem_id} thead th')].map(th => th.innerText.trim())")


def test_a_language_switch_keeps_the_sweep_and_relabels_its_headers(chat_page):
    """A table's headers change with the page's language, and the rows a sweep made stay (Gradio shows new headers
    only with a value, so the rows go back with them)."""
    page = chat_page
    assert "Seed" in headers(page, "chat-sweep-table")
    for name, seed in (("한국어", "시드"), ("English", "Seed")):
        page.click("#top-lang input")
        page.click(f'[role=option][aria-label="{name}"]')
        page.wait_for_function(f"() => [...document.querySelectorAll('#chat-sweep-table thead th')]"
                               f".some(th => th.innerText.trim() === '{seed}')", timeout=30_000)
        assert [row[0] for row in grid(page, "chat-sweep-table")] == ["0", "1", "2"]
        assert (name == "English") == ("Seed" in headers(page, "chat-sweep-table"))


def test_export_a_merged_model_and_see_it_listed(chat_page, chat_board):
    from playwright.sync_api import expect

    page = chat_page
    board, run_id = chat_board
    page.locator("#export-tab-button").click()
    expect(page.locator("#export-run input")).to_have_value(run_id, timeout=30_000)
    page.locator("#export-name").locator("textarea, input").first.fill("browser-merged")
    page.locator("#export-start").click()
    expect(page.locator("#export-status")).to_contain_text("Exported to", timeout=120_000)
    expect(page.locator("#export-list")).to_contain_text("browser-merged")
    expect(page.locator("#export-list")).to_contain_text("merged model")
    assert (board.home / "exports" / "browser-merged" / "model.safetensors").exists()
