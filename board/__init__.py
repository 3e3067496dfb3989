"""Tuneboard's board: the Gradio page. Knows Gradio, plotly, pandas and the engine's torch-free parts; never torch."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import multiprocessing
import os
import sys

# No telemetry, no update check, no hub calls from the board process, whoever imports it first.
for _name, _value in (
    ("GRADIO_ANALYTICS_ENABLED", "False"),
    ("HF_HUB_DISABLE_TELEMETRY", "1"),
    ("DO_NOT_TRACK", "1"),
    ("GRADIO_SSR_MODE", "False"),
):
    os.environ.setdefault(_name, _value)


def _spec_loaded_through(name: str, path, around):
    """`name`'s module spec, with its loading run through `around(run, module)`."""
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return spec
    run = spec.loader.exec_module
    spec.loader.exec_module = lambda module: around(run, module)
    return spec


class _NoStubWriting(importlib.abc.MetaPathFinder):
    """Gradio re-parses every component's source at import to (re)write `.pyi` stubs that its wheel
    already ships; that is over a second of a two-core machine's start. Replace that one
    function with a no-op when `gradio.component_meta` loads; nothing else changes."""

    def find_spec(self, name, path, target=None):
        return _spec_loaded_through(name, path, self._load) if name == "gradio.component_meta" else None

    @staticmethod
    def _load(run, module) -> None:
        run(module)
        if callable(getattr(module, "create_or_modify_pyi", None)):
            module.create_or_modify_pyi = lambda *args, **kwargs: None


class _PandasWithoutArrow(importlib.abc.MetaPathFinder):
    """pandas 3 imports pyarrow at its own import, if installed, to know which of its features to offer; gradio
    imports pandas, and Arrow's libraries then came to 60 MB of the board's resident memory (of 250 MB, in a
    fresh install) for nothing the page does. While `pandas.compat.pyarrow` runs, pyarrow is not found, so this
    process's pandas works as without it (a configuration pandas supports); the engine still imports pyarrow
    itself where it reads a Parquet file, and pandas is untouched where it was imported before the board, and in
    the engine's worker, which the board spawns and which imports this package to find its target."""

    blocking = False

    def find_spec(self, name, path, target=None):
        if self.blocking and name.split(".")[0] == "pyarrow":
            raise ModuleNotFoundError(f"No module named {name!r} (the board's pandas goes without it)", name=name)
        return _spec_loaded_through(name, path, self._load) if name == "pandas.compat.pyarrow" else None

    def _load(self, run, module) -> None:
        self.blocking = "pyarrow" not in sys.modules
        try:
            run(module)
        finally:
            self.blocking = False


_finders = [(_NoStubWriting, "gradio")] + [(_PandasWithoutArrow, "pandas")] * (multiprocessing.parent_process() is None)
for _finder, _before in _finders:
    if _before not in sys.modules and not any(isinstance(f, _finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _finder())
