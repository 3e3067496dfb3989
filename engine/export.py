"""Take a run's result home: the adapter alone, or merged into the base as a plain transformers folder.

A merge loads the base unquantized, in 16-bit when the run trained in 16-bit or on a 4-bit base
(QLoRA: the adapter goes into 16-bit weights, never into the 4-bit ones), in fp32 when the run
trained in fp32. The folder holds safetensors, the tokenizer and the run's chat template.
A hub token lives only in memory: it is never written to the folder, a log or an error message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .config import RunConfig
from .generate import _template_name, read_result, result_dir
from .messages import TuneboardError, message
from .runs import run_and_checkpoint
from .templates import STOP_STRINGS

INFO_FILE = "tuneboard_export.json"
SKIP = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}  # training state, not the result


def merge_dtype(cfg: RunConfig, precision: str) -> str:
    """The precision the base is loaded in for merging: never 4- or 8-bit."""
    if cfg.quantization.bits and precision not in ("bf16", "fp16"):
        return "bf16"
    return precision


def export_run(run: str, out: str | os.PathLike, merge: bool = False, push_to_hub: Optional[str] = None,
               token: Optional[str] = None, workdir=None, checkpoint: Optional[str] = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Write the run's adapter (or, with `merge`, the merged model) to `out`; upload it if asked. `overwrite`
    replaces an earlier export there (a folder this wrote, with its INFO_FILE), and only once the new one is
    complete; any other folder with files in it is refused."""
    if push_to_hub and not token:
        raise TuneboardError("export.error_no_token")
    run_dir, found = run_and_checkpoint(run, workdir)  # (a checkpoint folder: that checkpoint)
    checkpoint = checkpoint or found
    cfg = RunConfig.load(str(run_dir / "config.yaml"))
    result_dir(run_dir, checkpoint, say=False)  # a run with nothing to export is told before anything is written
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise TuneboardError("export.error_is_file", path=str(out))
    if out.is_relative_to(run_dir / "checkpoints"):  # it would be taken for the run's newest checkpoint
        raise TuneboardError("export.error_in_checkpoints", path=str(out))
    final, replace = out, out.exists() and any(out.iterdir())
    if replace and not overwrite:
        raise TuneboardError("export.error_not_empty", path=str(out))
    if replace and not (out / INFO_FILE).exists():
        raise TuneboardError("export.error_not_export", path=str(out), file=INFO_FILE)
    if replace:  # written beside it, swapped in when complete: a failed export leaves the earlier one whole
        out = final.with_name(f".{final.name}.tuneboard-new")
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".tuneboard-write-test"  # a place that can't be written is told now, not after minutes of merging
    probe.write_bytes(b"")
    probe.unlink()

    def write(folder: Path) -> tuple[Optional[str], str, bool]:
        is_adapter = (folder / "adapter_config.json").exists()
        if is_adapter and merge:
            return _merge(cfg, run_dir, folder, out, workdir), "merged", True
        _copy(folder, out)
        if not is_adapter:  # a full or freeze run's model decodes as the chat did, and says what it is, as a merge
            _model_generation(out, cfg, run_dir)
            (out / "README.md").write_text(_card(cfg, run_dir, None), encoding="utf-8")
        return None, "adapter" if is_adapter else "model", is_adapter

    try:  # a run still training may delete the checkpoint being read: read_result holds it, or takes the next
        source, (dtype, kind, is_adapter) = read_result(run_dir, checkpoint, write)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written folder that looks like a result
        raise
    info = {"run": run_dir.name, "kind": kind, "base": cfg.model.name_or_path, "source": str(source),
            "dtype": dtype, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    notes = []  # what the person should know of this export, as message keys
    if kind == "merged" and cfg.quantization.bits:
        notes.append(("warning.qlora_merged", {"bits": cfg.quantization.bits, "dtype": dtype}))
    if merge and not is_adapter:
        notes.append(("warning.merge_not_adapter", {"method": cfg.adapter.method}))
    (out / INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    if replace:
        old = final.with_name(f".{final.name}.tuneboard-old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        out.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        out = final
    result = {**info, "path": str(out), "files": sorted(p.name for p in out.iterdir()),
              "notes": [{"key": key, "params": params} for key, params in notes]}
    if push_to_hub:
        result["url"] = upload(out, push_to_hub, token)
    return result


def _copy(source: Path, out: Path) -> None:
    for p in source.iterdir():
        if p.is_file() and p.name not in SKIP:
            shutil.copy2(p, out / p.name)
            (out / p.name).chmod(0o644)  # an export is for others to read too (the trainer saved some 0600)
    config = out / "config.json"
    if (out / "adapter_config.json").exists() or not config.exists():
        return
    data = json.loads(config.read_text(encoding="utf-8"))
    if data.get("use_cache") is False:  # training turns the KV cache off; generating with the model wants it
        data["use_cache"] = True
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _merge(cfg: RunConfig, run_dir: Path, source: Path, out: Path, workdir) -> str:
    from . import model as model_mod

    model_mod.quiet_libraries()
    import torch
    from peft import PeftModel

    res = model_mod.resolve_for_run(cfg, run_dir, workdir)
    dtype = merge_dtype(cfg, res.precision)
    base = model_mod.load_model(cfg, res, for_training=False, dtype=dtype)  # dtype given: no quantization
    model = PeftModel.from_pretrained(base, str(source)).merge_and_unload()
    tok = model_mod.load_result_tokenizer(cfg, res, source)
    _stop_on_template_end(model, tok, _template_name(run_dir, res))
    _run_generation(model, cfg)
    model.config.use_cache = True
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "README.md").write_text(_card(cfg, run_dir, dtype), encoding="utf-8")
    for p in out.iterdir():  # safetensors writes its files 0600: an export is for others to read too
        if p.is_file():
            p.chmod(0o644)
    del model, base
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return dtype


def _run_generation(model, cfg: RunConfig) -> None:
    """The run's own generation settings as the model's defaults: plain `model.generate()` then answers as the
    board's chat did (the same decoding, repetition penalty included), not with transformers' bare defaults."""
    from .generate import decoding_mode

    gen = cfg.chat_generation()
    mode = decoding_mode(gen)
    settings = dict(do_sample=mode == "sample", num_beams=gen.num_beams, repetition_penalty=gen.repetition_penalty,
                    max_new_tokens=gen.max_new_tokens)
    if mode == "sample":
        settings.update(temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p, min_p=gen.min_p or None)
    model.generation_config.update(**settings)


def _model_generation(out: Path, cfg: RunConfig, run_dir: Path) -> None:
    """generation_config.json of a copied model with the run's settings and the template's end of turn, as
    `_merge` gives a merged one (plain transformers decoded a full run's export with its bare defaults)."""
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        generation = HFGenerationConfig.from_pretrained(str(out))
    except OSError:
        generation = HFGenerationConfig.from_model_config(AutoConfig.from_pretrained(str(out)))
    holder = SimpleNamespace(generation_config=generation)
    _stop_on_template_end(holder, AutoTokenizer.from_pretrained(str(out)),
                          _template_name(run_dir, SimpleNamespace(chat_template="")))
    _run_generation(holder, cfg)
    generation.save_pretrained(str(out))
    (out / "generation_config.json").chmod(0o644)


def _stop_on_template_end(model, tok, template: str) -> None:
    """Plain transformers stops at eos: add the template's end-of-turn token (e.g. <|im_end|>) to it."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    for s in STOP_STRINGS.get(template, []) + [tok.eos_token]:
        tid = tok.convert_tokens_to_ids(s) if s else None
        if isinstance(tid, int) and tid != tok.unk_token_id and tid not in ids:
            ids.append(tid)
    if ids:
        model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids
    if model.generation_config.pad_token_id is None and tok.pad_token_id is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def _card(cfg: RunConfig, run_dir: Path, dtype: Optional[str]) -> str:
    """The export's README: what it is and how plain transformers uses it. `dtype` None: a full or freeze run's own
    model, not a merge."""
    what = f"the adapter is merged into the base ({dtype})" if dtype else "the model as trained"
    return (f"# {run_dir.name}\n\nFine-tuned with Tuneboard ({cfg.stage}, {cfg.adapter.method}"
            f"{', QLoRA' if cfg.quantization.bits == 4 else ''}) from `{cfg.model.name_or_path}`; "
            f"{what}.\n\n"
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "tok = AutoTokenizer.from_pretrained(PATH)\nmodel = AutoModelForCausalLM.from_pretrained(PATH)\n"
            "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True, "
            "return_tensors='pt', return_dict=True)\nprint(tok.decode(model.generate(**ids, max_new_tokens=64)[0]))\n```\n")


def upload(folder: Path, repo: str, token: Optional[str]) -> str:
    """Upload `folder` to a private hub repo. The token is passed to the client and nowhere else."""
    if not token:
        raise TuneboardError("export.error_no_token")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo, private=True, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload from Tuneboard")
    except Exception as e:  # the export itself is done and kept: the message says where, and why the upload failed
        error = scrub(f"{type(e).__name__}: {e}", token)
        raise TuneboardError(_upload_failure(e), repo=repo, path=str(folder), error=error[:300]) from None
    return str(getattr(url, "url", url))


def _upload_failure(e: Exception) -> str:
    """The message key for a failed upload: the Hub out of reach, the token refused, or anything else."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    text = f"{type(e).__name__} {e}"
    if "Offline" in type(e).__name__ or isinstance(e, (ConnectionError, TimeoutError)) or any(
            s in text for s in ("ConnectionError", "Max retries", "Failed to resolve", "Name or service not known")):
        return "export.error_upload_offline"
    if status in (401, 403) or re.search(r"\b40[13]\b", text):
        return "export.error_upload_denied"
    return "export.error_upload"


def scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def cmd_export(args) -> int:
    token = os.environ.get("HF_TOKEN") if args.push_to_hub else None
    result = export_run(args.run, args.out, merge=args.merge, push_to_hub=args.push_to_hub, token=token,
                        workdir=args.workdir, overwrite=args.overwrite)
    print(f"{message('export.kind_' + result['kind'])}: {', '.join(result['files'])}", file=sys.stderr)
    for note in result["notes"]:
        print(f"{message('severity.warning')}: {message(note['key'], note['params'])}", file=sys.stderr)
    if result.get("url"):
        print(message("export.uploaded", {"url": result["url"]}), file=sys.stderr)
    print(result["path"])
    return 0
