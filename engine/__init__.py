"""Tuneboard's engine: config, data, model loading, training, generation. Never imports Gradio."""

__version__ = "0.1.0"
