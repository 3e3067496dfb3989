"""Gradio components made to say their problems in the page's language."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.components.number import Number


class Slider(gr.Slider):
    """A slider whose number box may hold a value past its range, as typed: the config then names the field and
    its range in the page's language (the Start reason, the chat's message). Gradio's own check said "Value 0 is
    less than minimum value 1." in English, logged a traceback, and put the box back without a word."""

    is_template = True  # drawn by Gradio's own slider

    def preprocess(self, payload: Any) -> Any:
        return Number.round_to_precision(payload, self.precision)
