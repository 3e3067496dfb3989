"""Form values <-> RunConfig: the one place where what the page shows becomes the run's contract.

The tabs register each control under a dotted name (`training.learning_rate`). Most names are
RunConfig fields as they are; a few are the page's own shapes (a quantization choice, a comma
list of modules, one list of dataset paths) and are translated here, in both directions.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from engine.config import RunConfig

# the page's shapes that are not a RunConfig field one-to-one
QUANT_MODES = {"none": 0, "8bit": 8, "4bit": 4}  # the page's choice -> quantization.bits
DATASETS, DATA_FORMAT, DATA_COLUMNS, DATA_MAX_SAMPLES = (
    "data.datasets",
    "data.format",
    "data.columns",
    "data.max_samples",
)
QUANT_MODE = "quantization.mode"
# optional text fields: an empty box means "not set"
OPTIONAL_TEXT = {"run_name", "model.revision", "data.system_prompt", "adapter.init_from"}
# optional numbers: an empty box means "not set"
OPTIONAL_NUMBER = {"training.save_total_limit", "training.checkpoint_layers", "data.max_samples", "data.shuffle_seed"}
# ...and where 0 means the same: Gradio draws an empty number box as 0
ZERO_IS_UNSET = {"training.checkpoint_layers"}
PAGE_ONLY = {QUANT_MODE, DATASETS, DATA_FORMAT, DATA_COLUMNS, DATA_MAX_SAMPLES}


def parse_columns(text: str | None) -> dict[str, str]:
    """`instruction=question, output=answer` -> {"instruction": "question", "output": "answer"}."""
    out: dict[str, str] = {}
    for part in (text or "").replace("\n", ",").split(","):
        if "=" in part:
            ours, theirs = (s.strip() for s in part.split("=", 1))
            if ours and theirs:
                out[ours] = theirs
    return out


def format_columns(columns: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in columns.items())


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@functools.cache
def _start() -> RunConfig:
    from engine.paths import CONFIGS

    try:
        return RunConfig.load(str(CONFIGS / "sft_demo.yaml"))
    except (OSError, ValueError):  # an install without the presets: the plain defaults
        return RunConfig()


def start_config() -> RunConfig:
    """What a new page shows: the sft_demo preset, which trains visibly on a CPU in about a minute."""
    return copy.deepcopy(_start())


def form_to_config(values: dict[str, Any], base: dict[str, Any] | None = None) -> RunConfig:
    """Build the RunConfig the page describes. `base` (a loaded config's dict) keeps the fields the
    page has no control for; raises ConfigError naming the dotted field on a bad value."""
    data = RunConfig.from_dict(base or {}).to_dict()
    for name, value in values.items():
        if name in PAGE_ONLY:
            continue
        if name in OPTIONAL_TEXT | OPTIONAL_NUMBER and _blank(value) or name in ZERO_IS_UNSET and value == 0:
            value = None
        elif isinstance(value, str):
            value = value.strip()
        node, parts = data, name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if "adapter.target_modules" in values:
        data["adapter"]["target_modules"] = target_modules_text(values["adapter.target_modules"])
    if data["adapter"]["method"] != "lora":  # the pick of an adapter to continue hides with the LoRA settings
        data["adapter"]["init_from"] = None
    if QUANT_MODE in values:
        data["quantization"]["bits"] = QUANT_MODES.get(values[QUANT_MODE] or "none", 0)  # the 4-bit type stays the loaded config's (nf4 unless it says fp4)
    if DATASETS in values:
        data["data"]["datasets"] = _datasets(values, data["data"]["datasets"])
    return RunConfig.from_dict(data)


def _page_dataset_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The dataset fields the page has one control each for, as DatasetSpec values."""
    out: dict[str, Any] = {}
    if DATA_FORMAT in values:
        out["format"] = values[DATA_FORMAT] or "auto"
    if DATA_COLUMNS in values:
        out["columns"] = parse_columns(values[DATA_COLUMNS])
    if DATA_MAX_SAMPLES in values:
        max_samples = values[DATA_MAX_SAMPLES]
        out["max_samples"] = None if _blank(max_samples) or max_samples == 0 else max_samples
    return out


def _datasets(values: dict[str, Any], base_specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's dataset list, each entry starting from the base entry with the same path so the
    fields the page has no control for (split) survive. The page shows the first dataset's format,
    columns and max rows; a field still showing that value was left alone, so every dataset keeps
    its own, while a field the person changed applies to every dataset."""
    page = _page_dataset_fields(values)
    shown = base_specs[0] if base_specs else {}
    changed = {k: v for k, v in page.items() if v != shown.get(k)}
    by_path: dict[str, list[dict[str, Any]]] = {}
    for spec in base_specs:
        by_path.setdefault(spec["path"], []).append(spec)
    paths = values[DATASETS] or []
    out = []
    for p in [paths] if isinstance(paths, str) else paths:
        path = str(p).strip()
        if not path:
            continue
        own = by_path.get(path)
        out.append({**own.pop(0), **changed} if own else {**page, "path": path})
    return out


def config_to_form(cfg: RunConfig, names: list[str]) -> dict[str, Any]:
    """The value each named control shows for `cfg` (the inverse of form_to_config)."""
    data = cfg.to_dict()
    first = cfg.data.datasets[0] if cfg.data.datasets else None
    page = {
        QUANT_MODE: {0: "none", 8: "8bit", 4: "4bit"}.get(cfg.quantization.bits, "none"),
        DATASETS: [d.path for d in cfg.data.datasets],
        DATA_FORMAT: first.format if first else "auto",
        DATA_COLUMNS: format_columns(first.columns) if first else "",
        DATA_MAX_SAMPLES: (first.max_samples or 0) if first else 0,  # 0: every row
    }
    out: dict[str, Any] = {}
    for name in names:
        if name in page:
            out[name] = page[name]
            continue
        node: Any = data
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if name == "adapter.target_modules" and isinstance(node, list):
            node = ", ".join(node)
        if node is None and name in OPTIONAL_TEXT:
            node = ""
        elif node is None and name in ZERO_IS_UNSET:
            node = 0  # what the page shows for it: an empty number box reads back as 0
        out[name] = node
    return out


def target_modules_text(value: str | list[str] | None) -> list[str]:
    if isinstance(value, list):
        return value
    return [v.strip() for v in (value or "").split(",") if v.strip()] or ["all-linear"]


def build_config(values: dict[str, Any], base: dict[str, Any] | None, workdir) -> RunConfig:
    """form_to_config, then every path the page named checked to lie inside the workdir (or an
    allowed folder): the run a page can start never reads outside it."""
    from pathlib import Path

    from .safety import check_data_path, check_local_path, check_model_path

    workdir = Path(workdir)
    cfg = form_to_config(values, base)
    data = cfg.to_dict()
    data["model"]["name_or_path"] = check_model_path(cfg.model.name_or_path, workdir)
    for spec in data["data"]["datasets"]:
        spec["path"] = check_data_path(spec["path"], workdir)
    if cfg.adapter.init_from:
        data["adapter"]["init_from"] = str(check_local_path(cfg.adapter.init_from, workdir))
    if cfg.training.resume_from and cfg.training.resume_from != "last":
        data["training"]["resume_from"] = str(check_local_path(cfg.training.resume_from, workdir))
    return RunConfig.from_dict(data)
