"""Browser tests' fixtures: Chromium (skipped cleanly when absent), a board per module, a fresh page per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from board_process import CHROMIUM, make_home, start_board, stop_board


@pytest.fixture(scope="module")  # per module: a module that runs its own sync_playwright() then finds none running
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def board(chromium, tmp_path_factory, demo_model):
    b = start_board(make_home(tmp_path_factory, demo_model, "board-home"), "main")
    yield b
    stop_board(b)


@pytest.fixture
def page(chromium, board):
    """A fresh browser context (its own localStorage) per test, with page errors collected."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    pg = context.new_page()
    pg.errors = []
    pg.foreign = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on(
        "request",
        lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else pg.foreign.append(r.url),
    )
    yield pg
    context.close()
