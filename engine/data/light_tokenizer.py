"""A tokenizer for checking data without transformers (which would load torch into the board, and takes
`tuneboard check` two seconds to import).

The data check needs four things of a tokenizer: batch token counts, token offsets, the chat template, and
the end-of-turn token. `tokenizers` (Rust) reads tokenizer.json and a sandboxed jinja2
renders the template the way transformers does, so counts and previews are exact for any
model whose files are already on this machine: the demo, a local folder, the hub cache.
Anything else gets None, and the engine's estimates (marked as such) are shown instead.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..templates import TEMPLATES


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _environment():
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks the answer for trl; here it just renders."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class LightTokenizer:
    """The slice of a transformers tokenizer that engine.data calls: __call__, chat_template,
    apply_chat_template, eos_token."""

    def __init__(self, folder: Path | None, template: str | None = None, tokenizer: Any = None,
                 eos_token: str | None = None):
        """A model folder's tokenizer.json, or a `tokenizers.Tokenizer` already made (`tokenizer`)."""
        from tokenizers import Tokenizer

        self.folder = folder
        self._tok = tokenizer if tokenizer is not None else Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg_path = folder / "tokenizer_config.json" if folder is not None else None
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path and cfg_path.exists() else {}
        own = cfg.get("chat_template")
        if isinstance(own, list):  # [{"name": "default", "template": ...}, ...]
            own = next((x.get("template") for x in own if x.get("name") == "default"), None)
        jinja_file = folder / "chat_template.jinja" if folder is not None else None
        if not own and jinja_file and jinja_file.exists():
            own = jinja_file.read_text(encoding="utf-8")
        self.chat_template = template or own or None
        self.eos_token = eos_token or _token_text(cfg.get("eos_token"))
        self.bos_token = _token_text(cfg.get("bos_token"))
        self._compiled = None

    def __call__(self, texts, add_special_tokens: bool = False, return_attention_mask: bool = False,
                 return_offsets_mapping: bool = False, **_: Any):
        one = isinstance(texts, str)
        encs = self._tok.encode_batch([texts] if one else list(texts), add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encs]
        return {k: v[0] for k, v in out.items()} if one else out

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False, **_: Any
    ) -> str:
        if self._compiled is None:
            self._compiled = _environment().from_string(self.chat_template or TEMPLATES["chatml"])
        return self._compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )


def tokenizer_folder(model: str, workdir: Path) -> Path | None:
    """Where `model`'s tokenizer.json already is on this machine, without any download."""
    if model == "demo":
        folder = workdir / "models" / "demo"
        return folder if (folder / "tokenizer.json").exists() else None
    p = Path(model).expanduser()
    if p.is_absolute() or model.startswith("."):
        return p if (p / "tokenizer.json").exists() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model, "tokenizer.json")
    except Exception:  # a malformed id, an unreadable cache: no exact counts, that's all
        return None
    return Path(hit).parent if isinstance(hit, str) else None


@lru_cache(maxsize=4)
def _load(folder: str, mtime: float, template: str | None) -> LightTokenizer:
    return LightTokenizer(Path(folder), template)


def light_tokenizer(model: str, workdir: Path, chat_template: str = "auto") -> LightTokenizer | None:
    """The tokenizer the run will use, if its files are here; `chat_template` as in ModelConfig."""
    folder = tokenizer_folder(model, workdir)
    if folder is None:
        return None
    template = TEMPLATES.get(chat_template) if chat_template != "auto" else None
    try:
        return _load(str(folder), (folder / "tokenizer.json").stat().st_mtime, template)
    except Exception:  # an unreadable tokenizer: fall back to estimates
        return None
