"""RoPE scaling: a model's positions stretched to reach a cutoff longer than the context it was trained for.

As LLaMA-Factory does: the factor is the cutoff over the model's context, rounded up; `linear` interpolates the
positions (Position Interpolation), `dynamic` scales the rotary base with the length (dynamic NTK), `yarn` mixes
both per frequency (YaRN). Standard library only: it reads the model's config.json as a dict and says what to
give `from_pretrained` (transformers 5 names the rotary settings `rope_parameters`).
"""

from __future__ import annotations

import math
from typing import Any


def rope_overrides(model_config: dict[str, Any], kind: str, max_length: int) -> tuple[dict | None, str, dict]:
    """(config overrides for from_pretrained, or None; the note key saying what happened; its params)."""
    config = model_config.get("text_config") or model_config  # a multimodal model's language half
    native = config.get("max_position_embeddings")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    scaled = rope.get("rope_type", rope.get("type", "default"))
    if kind == "none" or not isinstance(native, int) or native <= 0:
        return None, "", {}
    params = {"kind": kind, "cutoff": max_length, "context": native}
    if scaled not in ("default", None):  # Llama 3.1's llama3, Qwen's yarn: the model's own, kept
        return None, "warning.rope_already", {**params, "own": scaled}
    if max_length <= native:
        return None, "warning.rope_not_needed", params
    factor = float(math.ceil(max_length / native))
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    stretched = {"rope_type": kind, "factor": factor, "rope_theta": theta}
    if kind == "yarn":
        stretched["original_max_position_embeddings"] = native
    overrides = {"rope_parameters": stretched, "max_position_embeddings": int(native * factor)}
    return overrides, "warning.rope_scaled", {**params, "factor": f"{factor:g}", "reach": int(native * factor)}
