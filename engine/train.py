"""Run one training job: RunConfig -> data -> model -> trainer -> saved adapter, with events all the way.

`run_training` is the one function both the CLI (`tuneboard train`) and the board's worker
process call, so a run started in the browser and one started in a terminal are the same run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Optional

from .compiled import LIGER_IN_LAYERS_OFF, compile_layers
from .compiled import stats as compile_stats
from .config import ConfigError, RunConfig, config_from_args
from .events import CheckpointSaved, Error, Evaluation, Event, Finished, LogStep, Progress, RunStarted, Warning
from .messages import TuneboardError, error_key, message
from .paths import default_workdir
from .runs import STOP_FILE, create_run, latest_checkpoint, owner_run, resolve_run


class EventLog:
    """Appends every event to events.jsonl (flushed at once) and a readable line to train.log."""

    def __init__(self, run_dir: Path, emit: Optional[Callable[[Event], None]] = None):
        self.events = open(run_dir / "events.jsonl", "a", encoding="utf-8")
        self.log = open(run_dir / "train.log", "a", encoding="utf-8")
        self.emit = emit
        self.step = 0  # the last step an event told of: where a run that is aborted got to

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, (Progress, LogStep)):
            self.step = max(self.step, ev.step)
        self.events.write(ev.to_json() + "\n")
        self.events.flush()
        line = _log_line(ev)
        if line:
            self.log.write(time.strftime("%H:%M:%S ") + line + "\n")
            self.log.flush()
        if self.emit:
            self.emit(ev)

    def close(self) -> None:
        self.events.close()
        self.log.close()


def _log_line(ev: Event) -> str:
    if isinstance(ev, Progress):
        return ""
    # the sentences in the language set for this process (`--lang`, or the page's that started the run); the
    # metrics' names and numbers as they are
    if isinstance(ev, LogStep):
        parts = [message("log.step", {"step": ev.step})] + [
            f"{k} {v:.4g}" for k, v in (("loss", ev.loss), ("lr", ev.learning_rate), ("grad_norm", ev.grad_norm))
            if v is not None]
        return "  ".join(parts + [f"{k} {v:.4g}" for k, v in ev.metrics.items()])
    if isinstance(ev, Evaluation):
        return message("log.eval", {"step": ev.step}) + "  " + "  ".join(f"{k} {v:.4g}" for k, v in ev.metrics.items())
    if isinstance(ev, (Warning, Error)):
        text = message(ev.key, ev.params) if ev.key else ""
        text = ev.message or ev.key if text in ("", ev.key) else text  # a key with no text: as it was written
        return f"{message('severity.warning' if isinstance(ev, Warning) else 'severity.error')}: {text}"
    if isinstance(ev, CheckpointSaved):
        return message("log.checkpoint", {"step": ev.step, "path": ev.path})
    if isinstance(ev, RunStarted):
        how = ", ".join([ev.precision, ev.attn_implementation] + [said_choice(c) for c in ev.choices])
        return message("log.started", {"stage": ev.stage, "device": ev.device, "how": how,
                                       "trainable": f"{ev.trainable_params:,}", "total": f"{ev.total_params:,}",
                                       "train_rows": ev.train_rows, "eval_rows": ev.eval_rows, "steps": ev.total_steps})
    if isinstance(ev, Finished):
        return message(f"log.{ev.status}", {"step": ev.step}) + (f": {ev.output_dir}" if ev.output_dir else "")
    d = ev.to_dict()
    d.pop("time", None)
    return json.dumps(d, ensure_ascii=False, default=str)


def training_args(cfg: RunConfig, res, run_dir: Path, has_eval: bool) -> dict:
    """The TrainingArguments every stage shares, decided by the engine (not by library defaults)."""
    t = cfg.training
    on_gpu = res.device == "cuda"
    eval_every = t.eval_steps if has_eval and t.eval_steps else 0
    return dict(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm or 0.0,
        optim=res.optim, seed=t.seed, data_seed=t.seed,
        **_checkpointing_args(res.gradient_checkpointing),
        bf16=on_gpu and res.precision == "bf16", fp16=on_gpu and res.precision == "fp16", use_cpu=not on_gpu,
        # a step's loss as it is: the default filter syncs the GPU every step to check, and puts the mean of the
        # earlier losses in place of a NaN, so a run that diverged went on training NaN weights under a plausible
        # curve; here the run stops at the first such loss and says so (EventCallback, `error.loss_not_finite`)
        logging_steps=t.logging_steps, logging_first_step=True, logging_nan_inf_filter=False,
        eval_strategy="steps" if eval_every else ("epoch" if has_eval else "no"),
        eval_steps=eval_every or None,
        save_strategy="steps", save_steps=t.save_steps or 10**9, save_total_limit=t.save_total_limit,
        report_to=t.report_to or "none", disable_tqdm=True,
        include_num_input_tokens_seen="no",  # EventCallback counts them without a sync a step (TokenCount)
        use_liger_kernel=res.liger, **_loader_args(t.dataloader_num_workers, on_gpu),
        # each batch is copied to the GPU from pinned memory without waiting: a plain copy waits for every kernel
        # queued before it (the step before's), and the GPU then idles while the host starts the step
        **({"accelerator_config": {"non_blocking": True}, "dataloader_pin_memory": True} if on_gpu else {}),
        # compiled layers fuse their own norms, activations and rotary (trl has turned Liger's loss off already)
        liger_kernel_config=dict(LIGER_IN_LAYERS_OFF) if res.liger and res.compile else None,
        remove_unused_columns=True,
    )


GPU_LOADER_WORKERS = 2  # `training.dataloader_num_workers` left empty on a GPU


def _loader_args(workers: int | None, on_gpu: bool) -> dict:
    """Worker processes collate the next batches while the GPU trains; without them the main process collates
    each one between two steps (~2 ms for a packed 4,096-token batch), with the GPU idle after the step's log has
    read the loss back. Kept for the whole run (`persistent`): evaluation and each new epoch reuse them instead
    of forking new ones."""
    n = workers if workers is not None else GPU_LOADER_WORKERS if on_gpu else 0
    if n:  # the tokenizer's threads are not forked: without this, each worker's fork prints a warning about them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"dataloader_num_workers": n, "dataloader_persistent_workers": n > 0}


def run_choices(res, bits: int = 0) -> list[str]:
    """The engine's speed and memory choices, in the words the run's log says them (first the base's quantization,
    `bits`, so that a QLoRA run says it is one)."""
    said = {4: ["QLoRA on a 4-bit NF4 base"], 8: ["an 8-bit base"]}.get(bits, []) + [res.optim]
    said += ["packed"] if res.packing else ["padding-free"] if res.padding_free else []
    said += ["Liger kernels"] * (res.liger and not res.compile)  # compiled layers leave Liger nothing to patch
    if res.gradient_checkpointing:
        said += [f"gradient checkpointing (first {res.checkpoint_layers} layers)" if res.checkpoint_layers
                 else "gradient checkpointing"]
    return said + ["fp32 norms"] * res.upcast_norms + ["fused LoRA"] * res.fused_lora + ["compiled layers"] * res.compile


# run_choices' words (kept in English in the event and resolved.json) -> the log's, in the reader's language
_CHOICE_KEYS = {"QLoRA on a 4-bit NF4 base": "log.choice_qlora", "an 8-bit base": "log.choice_8bit",
                "packed": "log.choice_packed", "padding-free": "log.choice_padding_free",
                "Liger kernels": "log.choice_liger", "gradient checkpointing": "log.choice_checkpointing",
                "fp32 norms": "log.choice_fp32_norms", "fused LoRA": "log.choice_fused_lora",
                "compiled layers": "log.choice_compiled"}
_FIRST_LAYERS = re.compile(r"gradient checkpointing \(first (\d+) layers\)")


def said_choice(text: str) -> str:
    """One of run_choices' words as the log says it (an optimizer's name as it is)."""
    if m := _FIRST_LAYERS.fullmatch(text):
        return message("log.choice_checkpointing_first", {"layers": int(m[1])})
    return message(_CHOICE_KEYS[text]) if text in _CHOICE_KEYS else text


def _checkpointing_args(on: bool) -> dict:
    """Non-reentrant checkpointing, under whichever name this transformers uses (renamed in 5.x)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def run_training(cfg: RunConfig, run_dir: str | os.PathLike, emit: Optional[Callable[[Event], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, workdir=None, data=None) -> Path:
    """Train `cfg` into `run_dir` (already holding config.yaml). Returns the folder of the saved result.
    `data`: (train, eval, notes) as `load_training_data` made them, when the caller checked the data first."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").exists():
        cfg.save(str(run_dir / "config.yaml"))
    log = EventLog(run_dir, emit)
    stop_file = run_dir / STOP_FILE  # a stop from a board that did not start this run, or from a script

    def stop_requested() -> bool:
        return stop_file.exists() or (should_stop is not None and should_stop())

    try:
        out, step, status, metrics = _train(cfg, run_dir, log, stop_requested, workdir, data)
        log(Finished(status=status, step=step, output_dir=str(out), metrics=metrics))
        return out
    except BaseException as e:
        key, params = error_key(e, "error.training_failed")
        log(Error(key=key, params=params, message=message(key, params), traceback=traceback.format_exc()))
        saved = latest_checkpoint(run_dir) if isinstance(e, KeyboardInterrupt) else None
        if isinstance(e, KeyboardInterrupt) and saved is None:  # aborted: say what is left
            log(Warning(key="warning.aborted_unsaved", message=message("warning.aborted_unsaved")))
        elif saved is not None and int(saved.name.rsplit("-", 1)[-1]) < (log.step or 0):
            # "stopped at step 20" alone, with checkpoint-15 the newest, hid the 5 steps lost
            said = {"step": log.step, "saved": int(saved.name.rsplit("-", 1)[-1]), "path": str(saved)}
            log(Warning(key="warning.aborted_at", params=said, message=message("warning.aborted_at", said)))
        log(Finished(status="stopped" if isinstance(e, KeyboardInterrupt) else "failed", step=log.step))
        raise
    finally:
        log.close()
        stop_file.unlink(missing_ok=True)


def _train(cfg: RunConfig, run_dir: Path, log: EventLog, should_stop, workdir, data=None):
    from .model import quiet_libraries

    quiet_libraries()  # before transformers' trainer pulls in bitsandbytes and its CPU hints
    import torch
    from transformers import PrinterCallback, set_seed

    from . import adapters
    from . import model as model_mod
    from .callbacks import EventCallback, ResumedLearningRate, TrimCheckpointing, count_tokens
    from .data import load_training_data
    from .demo import demo_built, demo_fingerprint, is_demo
    from .neftune import add_neftune
    from .walks import walk_once

    if is_demo(cfg.model.name_or_path) and not demo_built(workdir):  # else the first Start looks stuck
        log(Warning(key="warning.building_demo", message=message("warning.building_demo")))
    res = model_mod.resolve(cfg, workdir)
    _fit_checkpointing(cfg, res, workdir, log)
    if cfg.model.rope_scaling != "none":  # what the stretch does here, or why it does nothing
        _, key, params = model_mod.rope_plan(cfg, res, workdir)
        log(Warning(key=key, params=params, message=message(key, params)))
    resume = resume_checkpoint(cfg, run_dir)
    _check_resume_layout(cfg, resume, res.packing)
    if resume is not None:  # said in the log and on the terminal, not only in the step the curve starts at
        said = {"checkpoint": str(resume), "step": checkpoint_step(resume)}
        log(Warning(key="warning.resuming", params=said, message=message("warning.resuming", said)))
    for key, params in check_init_from(cfg):
        log(Warning(key=key, params=params, message=message(key, params)))
    if cfg.training.optim not in ("auto", res.optim):
        log(Warning(key="warning.optim_fallback", params={"optim": cfg.training.optim, "used": res.optim},
                    message=message("warning.optim_fallback", {"optim": cfg.training.optim, "used": res.optim})))
    if cfg.model.trust_remote_code:
        log(Warning(key="warning.trust_remote_code", message=message("warning.trust_remote_code")))
    set_seed(cfg.training.seed)
    tokenizer = model_mod.load_tokenizer(cfg, res)
    if data is None:
        notes: list[tuple[str, dict]] = []
        train_ds, eval_ds = load_training_data(cfg, notes)
    else:
        train_ds, eval_ds, notes = data
    for key, params in notes:
        log(Warning(key=key, params=params, message=message(key, params)))
    if len(train_ds) == 0:
        raise TuneboardError("error.empty_dataset")
    train_rows, eval_rows = len(train_ds), len(eval_ds) if eval_ds is not None else 0
    if cfg.stage == "dpo":
        from . import dpo as stage
    else:  # tokenised before the model loads, so a data problem is told without waiting for the weights
        from . import sft as stage

        train_ds, eval_ds, train_rows, eval_rows = _prepared(stage.prepare_data(tokenizer, train_ds, eval_ds, cfg, res.packing),
                                                             cfg, log)

    model = model_mod.load_model(cfg, res, for_training=True)
    set_seed(cfg.training.seed)  # adapter init draws random numbers: seed right before it
    model = adapters.prepare(model, cfg, res.gradient_checkpointing, res.upcast_norms, res.fused_lora)
    trainable, total = model_mod.count_params(model)

    callback = EventCallback(log, should_stop, gone=lambda: not (run_dir / "config.yaml").exists())
    args = training_args(cfg, res, run_dir, eval_ds is not None)
    trainer = stage.build(model, tokenizer, train_ds, eval_ds, cfg, res, args, [callback])
    trainer.remove_callback(PrinterCallback)  # our events and progress bar say it, once
    if cfg.adapter.method == "lora" and cfg.adapter.loraplus_lr_ratio:
        trainer.optimizer = adapters.loraplus_optimizer(trainer, cfg.adapter.loraplus_lr_ratio)
    walks = walk_once(trainer)  # the trainer's per-step walks over every module, answered from lists
    noise = add_neftune(trainer.model, cfg.training.neftune_noise_alpha) if cfg.training.neftune_noise_alpha else None
    count_tokens(trainer, callback.tokens)
    if resume is not None:
        trainer.add_callback(ResumedLearningRate())
    if res.gradient_checkpointing:
        trainer.add_callback(TrimCheckpointing(res.checkpoint_layers))
    if res.compile:  # after the trainer applied Liger: the layers are traced as they will run
        compile_layers(trainer.model)

    earlier = _earlier_training_time(run_dir)  # a Resume goes on in the same folder: its clock goes on too
    total_steps = _planned_steps(trainer, cfg)
    log(RunStarted(run_id=run_dir.name, stage=cfg.stage, total_steps=total_steps, device=_device_name(res),
                   precision=res.precision, attn_implementation=res.attn_implementation,
                   trainable_params=trainable, total_params=total, train_rows=train_rows,
                   eval_rows=eval_rows, chat_template=res.chat_template,
                   pid=os.getpid(), choices=run_choices(res, cfg.quantization.bits if cfg.adapter.method == "lora" else 0)))
    resolved = dict(res.__dict__, **({"demo_fingerprint": demo_fingerprint()} if is_demo(cfg.model.name_or_path) else {}))
    (run_dir / "resolved.json").write_text(json.dumps(resolved, indent=1))
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        walks.remove()
        if noise is not None:  # the saved model and a chat after the run see embeddings as they are
            noise.remove()
        if res.compile:  # what the compiler did, beside what the engine chose: a fallback is not silent
            resolved["compile_stats"] = compile_stats()
            (run_dir / "resolved.json").write_text(json.dumps(resolved, indent=1))
    step = trainer.state.global_step
    if callback.deleted:  # its events go to the deleted file; nothing is saved into a folder nobody wants
        raise TuneboardError("error.run_deleted", path=str(run_dir), step=step)
    if callback.diverged:  # the checkpoints saved before it stay; the weights it ended with are not saved
        at, loss = callback.diverged
        raise TuneboardError("error.loss_not_finite", step=at, loss=str(loss), last=_last_checkpoint_step(run_dir))

    out = run_dir / ("adapter" if cfg.adapter.method == "lora" else "model")
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    if resume is not None and (mean := _mean_logged_loss(trainer.state.log_history)) is not None:
        metrics["train_loss"] = mean  # transformers divides this attempt's losses by all the run's steps
    if earlier and "train_runtime" in metrics:
        metrics["train_runtime"] += earlier  # transformers counts this attempt's time only
    status = "stopped" if callback.stopped else "finished"
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, step, status, metrics


def _fit_checkpointing(cfg: RunConfig, res, workdir, log: EventLog) -> None:
    """`gradient_checkpointing: auto` on a GPU: on where the memory estimate says the run would not fit this
    GPU without it (the Model card and `tuneboard estimate` said so before Start), with a warning that says why."""
    if cfg.training.gradient_checkpointing != "auto" or res.gradient_checkpointing or res.device != "cuda":
        return
    from .estimate import estimate, load_model_config, local_gpu

    try:
        gpu, capability = local_gpu()
        est = estimate(load_model_config(res.path, workdir), cfg, gpu, gpu_capability=capability, liger=res.liger)
    except Exception:  # an estimate is advice: without one, auto stays off
        return
    note = next((n for n in est.notes if n["key"] == "estimate.note.checkpointing_auto"), None)
    if note is not None:  # the estimate turned it on to fit (the config's own rule returned above)
        params = {"without": note["params"]["without"], "gpu": f"{gpu:.0f}"}
        res.gradient_checkpointing, res.checkpoint_layers = True, est.checkpoint_layers
        log(Warning(key="warning.checkpointing_auto", params=params, message=message("warning.checkpointing_auto", params)))


def _last_checkpoint_step(run_dir: Path) -> str:
    """The step of the run's last checkpoint, or "-" where it has none."""
    ckpt = latest_checkpoint(run_dir)
    return ckpt.name.rsplit("-", 1)[-1] if ckpt else "-"


def _earlier_training_time(run_dir: Path) -> float:
    """Seconds this run's earlier attempts trained, from its events (each attempt's clock starts at 0)."""
    from .events import read_events

    earlier = elapsed = 0.0
    for ev in read_events(str(run_dir / "events.jsonl")):
        if isinstance(ev, RunStarted):
            earlier = elapsed
        elif isinstance(ev, Progress):
            elapsed = earlier + ev.elapsed_seconds
    return elapsed


def _mean_logged_loss(history: list[dict]) -> Optional[float]:
    """The mean training loss per step over the whole trajectory in a trainer's log history (a resumed
    trainer's holds the checkpoint's logs too): each logged loss is the mean since the log before it."""
    logged = sorted((h["step"], h["loss"]) for h in history if isinstance(h.get("loss"), (int, float)))
    total, prev = 0.0, 0
    for step, loss in logged:
        total, prev = total + loss * (step - prev), step
    return total / prev if prev else None


def _prepared(prepared, cfg: RunConfig, log: EventLog):
    """(train dataset, eval dataset, training rows kept, eval rows kept), after saying what the cutoff and weights
    did to the training rows. Eval rows left with nothing to score are left out (no eval if none is left)."""
    train, ev = prepared
    said = {"rows": train.rows, "max_length": cfg.data.max_length}
    if train.untrained == train.rows:
        raise TuneboardError("error.no_trained_answer", rows=train.rows)
    if train.dropped + train.untrained == train.rows:
        raise TuneboardError("error.no_answer_within_cutoff", **said)
    for count, key in ((train.cut, "warning.rows_split" if cfg.stage == "pt" else "warning.rows_cut"),
                       (train.dropped, "warning.rows_dropped"), (train.untrained, "warning.rows_untrained")):
        if count:
            log(Warning(key=key, params={"count": count, **said}, message=message(key, {"count": count, **said})))
    kept = train.rows - train.dropped - train.untrained
    eval_kept = ev.rows - ev.dropped - ev.untrained if ev is not None else 0
    return train.dataset, (ev.dataset if eval_kept else None), kept, eval_kept


def _planned_steps(trainer, cfg: RunConfig) -> int:
    if cfg.training.max_steps > 0:
        return cfg.training.max_steps
    import math

    per_epoch = math.ceil(len(trainer.get_train_dataloader()) / cfg.training.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * cfg.training.num_train_epochs))


def _device_name(res) -> str:
    if res.device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return "cpu"


RESUME_MUST_MATCH = {  # what shapes the saved weights and optimizer state, per method
    "lora": ("stage", "model.name_or_path", "adapter.method", "adapter.rank", "adapter.target_modules",
             "adapter.use_dora"),
    "freeze": ("stage", "model.name_or_path", "adapter.method", "adapter.freeze_trainable_layers"),
    "full": ("stage", "model.name_or_path", "adapter.method"),
}


def resume_checkpoint(cfg: RunConfig, run_dir: Optional[Path]) -> Optional[Path]:
    """The checkpoint `training.resume_from` names (`last`: this run's own), refused when it cannot go on
    under `cfg`: another stage, base or adapter shape (its weights would not load, or would load into the
    wrong thing), or, for a new run (`run_dir` None: checked before it exists), a step limit it has reached
    already (a run resuming its own last checkpoint may only have its final save left to do)."""
    from .model import check_demo_build

    src = cfg.training.resume_from
    if not src:
        return None
    if src == "last" and run_dir is None:
        raise TuneboardError("error.resume_last_new_run")
    ckpt = latest_checkpoint(run_dir if src == "last" else Path(src).expanduser())
    if ckpt is None:
        raise TuneboardError("error.no_checkpoint", path=src)
    owner = owner_run(ckpt)
    if owner is not None and (owner / "config.yaml").exists():
        saved = RunConfig.load(str(owner / "config.yaml"))
        for name in RESUME_MUST_MATCH[cfg.adapter.method]:
            was, now = attrgetter(name)(saved), attrgetter(name)(cfg)
            if was != now:
                raise TuneboardError("error.resume_mismatch", field=name, old=was, new=now, path=str(ckpt))
        if cfg.adapter.method == "lora":
            check_demo_build(saved, owner)  # an adapter fitted to another demo build
    step = checkpoint_step(ckpt)
    if run_dir is None and step and 0 < cfg.training.max_steps <= step:
        raise TuneboardError("error.resume_past_end", step=step, max_steps=cfg.training.max_steps, path=str(ckpt))
    return ckpt


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer steps a checkpoint was saved after (0 where its trainer state can't be read)."""
    try:
        return int(json.loads((ckpt / "trainer_state.json").read_text()).get("global_step") or 0)
    except (OSError, ValueError, TypeError):
        return 0


def _check_resume_layout(cfg: RunConfig, ckpt: Optional[Path], packing: bool) -> None:
    """A run resuming `ckpt` lays its data out as the checkpoint's run did: the trainer skips the steps already
    done by their place in the data, so packed rows after unpacked ones (or the reverse) would skip the wrong
    samples. `auto` decides by machine, so the same config may pack on one and not on another."""
    owner = owner_run(ckpt) if ckpt is not None else None
    if owner is None:
        return
    try:
        resolved = owner / "resolved.json"
        was = json.loads(resolved.read_text()).get("packing") if resolved.exists() else None
        if was is None:  # a run from before the choice was recorded: its config said it
            saved = RunConfig.load(str(owner / "config.yaml"))
            was = saved.data.packing == "on" and saved.stage != "dpo"
    except (OSError, ValueError, ConfigError):
        return  # nothing recorded to compare with
    if bool(was) != packing:
        here = f"{cfg.data.packing} ({'on' if packing else 'off'} here)"
        raise TuneboardError("error.resume_mismatch", field="data.packing", old="on" if was else "off", new=here,
                             path=str(ckpt))


# ---- the CLI verb ---------------------------------------------------------------------------


def cmd_train(args) -> int:
    from .data import load_training_data

    workdir = Path(args.workdir).resolve() if args.workdir else default_workdir()
    cfg = _runs_by_id(config_from_args(args), workdir).with_absolute_paths()  # config.yaml re-runs from any folder
    if workdir.exists() and not workdir.is_dir():  # before anything is read or built into it
        raise TuneboardError("error.workdir_not_folder", path=str(workdir))
    try:  # (a demo model built first, then "File not found" for a folder that can't be made)
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TuneboardError("error.workdir_unusable", path=str(workdir), error=e.strerror or str(e)) from e
    notes: list[tuple[str, dict]] = []
    train_ds, eval_ds = load_training_data(cfg, notes)  # bad data is refused here, before a run folder exists
    resume_checkpoint(cfg, None)  # so is a checkpoint that cannot go on under this config
    check_before_start(cfg, workdir)  # and a hub id this machine cannot download, a tracker not installed
    check_init_from(cfg)  # and an adapter to continue that was fitted to another demo build
    _print_estimate(cfg, workdir)
    run_dir = create_run(cfg, workdir)
    print(message("log.run_folder", {"path": str(run_dir)}), file=sys.stderr)
    bar = ProgressBar(quiet=args.quiet)
    stop = _GracefulInterrupt()
    aborted, failed = False, None
    try:
        run_training(cfg, run_dir, emit=bar, should_stop=stop.requested, workdir=workdir,
                     data=(train_ds, eval_ds, notes))
    except KeyboardInterrupt:  # a second signal: aborted; the run's events say where it got to
        print("\ninterrupted", file=sys.stderr)
        aborted = True
    except Exception as e:
        from .cli import report

        failed = report(e, getattr(args, "debug", False))  # said before the folder, which stays the last line
    finally:
        try:
            stop.restore()
        except KeyboardInterrupt:  # the second signal, landing just as the run ended: it still says its folder
            aborted = True
            stop.restore()
        bar.close()
        print(str(run_dir))  # the last line, also when the run failed: its log and events are there
    if failed is not None:
        return failed
    # stopped or aborted by Ctrl+C or SIGTERM: the run is not done; the shell's status for that signal
    if aborted or stop.requested():
        return 128 + (stop.signal or 2)
    return 128 + 15 if bar.status == "stopped" else 0  # stopped by the board's Stop or stop.request: as SIGTERM


def _runs_by_id(cfg: RunConfig, workdir: Path) -> RunConfig:
    """An adapter to continue or a checkpoint to resume named by its run's id (as `chat`, `eval` and `export`
    take one): the run's folder in the workdir, where no such path exists here."""
    found = {}
    for dotted, value in (("adapter.init_from", cfg.adapter.init_from), ("training.resume_from", cfg.training.resume_from)):
        if value and value != "last" and not Path(value).expanduser().exists():
            try:
                found[dotted] = str(resolve_run(value, workdir))
            except TuneboardError:
                pass  # no such run either: refused later as the path it was given as
    return cfg.with_overrides(found) if found else cfg


def check_init_from(cfg: RunConfig) -> list[tuple[str, dict]]:
    """`adapter.init_from` names an adapter that fits this base: one trained on another build of the demo
    (before an upgrade) would load without complaint and continue from weights fitted to another model. Returns
    what to say: the system prompt the adapter learnt with, where this run adds another or none (an SFT run's
    `data.system_prompt` is not carried into the DPO run that goes on from it, nor into that run's chat)."""
    from .adapters import adapter_dir
    from .model import check_demo_build

    if not cfg.adapter.init_from or cfg.adapter.method != "lora":
        return []
    found = adapter_dir(cfg.adapter.init_from)  # run/adapter, or run/checkpoints/checkpoint-N, or a bare folder
    for owner in list(found.parents)[:3]:  # run/adapter, run/checkpoints/checkpoint-N
        if (owner / "config.yaml").exists() and (owner / "events.jsonl").exists():
            try:
                saved = RunConfig.load(str(owner / "config.yaml"))
            except ConfigError:
                return []
            check_demo_build(saved, owner)
            learnt = saved.data.system_prompt
            if learnt and learnt != cfg.data.system_prompt:
                short = learnt if len(learnt) <= 80 else learnt[:79] + "…"
                return [("warning.init_from_system_prompt", {"prompt": short, "run": owner.name})]
            return []
    return []


# experiment trackers transformers reports to -> the packages any of which it needs
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
            "comet_ml": ("comet_ml",), "clearml": ("clearml",), "dvclive": ("dvclive",), "swanlab": ("swanlab",),
            "trackio": ("trackio",), "neptune": ("neptune",)}


def check_trackers(cfg: RunConfig) -> None:
    """`training.report_to` names trackers whose package is installed: a missing one failed the run at step 0,
    after its folder was made, with transformers' RuntimeError. No import: the board asks this too."""
    import importlib.util

    for name in cfg.training.report_to:
        if name in ("none", "all"):
            continue
        if name not in TRACKERS:
            raise TuneboardError("error.tracker_unknown", tracker=name, trackers=", ".join(TRACKERS))
        if not any(importlib.util.find_spec(pkg) for pkg in TRACKERS[name]):
            raise TuneboardError("error.tracker_missing", tracker=name, package=TRACKERS[name][0])


def check_before_start(cfg: RunConfig, workdir=None) -> None:
    """What would fail a run as it starts, said before its folder exists (CLI and board): trackers that are not
    installed, a model this machine cannot load."""
    check_trackers(cfg)
    check_model_reachable(cfg, workdir)
    check_lora_targets(cfg, workdir)


def check_lora_targets(cfg: RunConfig, workdir=None) -> None:
    """LoRA's target modules, where config.json says exactly what a (dense) model's layers are named: a name no
    layer has failed the run at step 0 with a run folder made, and one typo among several trained the others
    without a word (peft refuses only a list that matches nothing). No torch, no weights."""
    from .demo import DEMO_NAME, is_demo
    from .estimate import arch, load_model_config
    from .paths import models_dir

    a, name = cfg.adapter, cfg.model.name_or_path
    if a.method != "lora" or a.init_from or "all-linear" in a.target_modules:
        return
    if is_demo(name) and not (models_dir(workdir) / DEMO_NAME / "config.json").exists():
        return  # not built yet (that needs torch): peft says it at the start
    try:
        shape = arch(load_model_config(name, workdir, revision=cfg.model.revision))
    except Exception:  # noqa: BLE001 - a model that can't be reached is said by check_model_reachable
        return
    if not shape.exact or shape.experts:  # a shape we only estimate, or experts peft names its own way
        return
    names = [n for n, _, _ in shape.linears + shape.lora_only]
    unknown = [t for t in a.target_modules
               if not any(t == n or t.endswith("." + n) for n in [*names, "lm_head", "embed_tokens"])]
    if unknown:
        raise TuneboardError("error.lora_targets_unknown", targets=", ".join(unknown), names=", ".join(names))


def check_model_reachable(cfg: RunConfig, workdir=None) -> None:
    """A hub model this machine cannot reach (offline, or no such id) is refused before a run folder exists, by
    fetching its config.json (kilobytes, then in the cache for the run); it failed after, leaving a failed run. So
    is a local folder without what loading it needs, and a path that holds no model.
    No torch: the board asks this too. The demo builds offline."""
    from .demo import is_demo
    from .estimate import load_model_config
    from .model import local_model_dir

    name = cfg.model.name_or_path
    if is_demo(name):
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        check_model_folder(folder)
    elif local_model_dir(name) is None:  # a hub id (a path that holds no model is refused in there)
        load_model_config(name, workdir, revision=cfg.model.revision)


# what a model folder needs, besides config.json: a tokenizer in one of its formats, and weights
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json", "*.bin.index.json")


def check_model_folder(folder: Path) -> None:
    """A local model folder with config.json, a tokenizer and weights; else which of them it lacks."""
    missing = [what for what, ok in (
        ("config.json", (folder / "config.json").exists()),
        ("tokenizer", any((folder / f).exists() for f in _TOKENIZER_FILES)),
        ("weights", any(any(folder.glob(g)) for g in _WEIGHT_GLOBS)),
    ) if not ok]
    if missing:
        raise TuneboardError("error.model_folder_incomplete", path=str(folder), missing=", ".join(missing))


class _GracefulInterrupt:
    """The first Ctrl+C (or SIGTERM: `kill`, `timeout`, docker stop, a scheduler's time limit) stops after the
    current step with a checkpoint; a second one aborts at once."""

    def __init__(self):
        import signal

        self.signal = 0  # the signal that asked to stop
        self._pid = os.getpid()
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the signals as they are
                pass

    def _handle(self, signum, frame) -> None:
        import signal

        if os.getpid() != self._pid:  # a data loader worker forked from the run (a Ctrl+C reaches the whole
            return  # process group): the run's own process stops it, and ends its workers then
        if self.signal:
            raise KeyboardInterrupt
        self.signal = signum
        key = "cli.train_stopping_int" if signum == signal.SIGINT else "cli.train_stopping_term"
        print(f"\n{message(key)}", file=sys.stderr, flush=True)

    def requested(self) -> bool:
        return bool(self.signal)

    def restore(self) -> None:
        """The handlers as they were; once a signal has stopped the run, further ones are ignored instead: the
        process is on its way out as asked, and a Ctrl+C landing in the interpreter's exit would print a traceback."""
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, signal.SIG_IGN if self.signal else old)


def _print_estimate(cfg: RunConfig, workdir: Path) -> None:
    """The whole run's GPU memory estimate, against this machine's GPU; without one, against the default GPU
    size, saying that this run trains on the CPU (as the board's Model card does)."""
    from .demo import demo_built, is_demo
    from .estimate import estimate_text

    if is_demo(cfg.model.name_or_path) and not demo_built(workdir):  # the estimate reads the built demo's shape
        print(message("warning.building_demo"), file=sys.stderr, flush=True)
    try:
        text = estimate_text(cfg, workdir, no_gpu_note="estimate.note.no_gpu")
    except Exception:  # an estimate is advice; it never blocks training
        return
    print(text, file=sys.stderr)


class ProgressBar:
    """One terminal line: step, loss, tokens/s, ETA (to stderr, so stdout stays the run folder). A step's
    loss is logged just after its progress, so the line is drawn again with it (redrawn on a terminal;
    in a log file each 10th step's line is held until then)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet  # warnings and the end only
        self.loss = self.tps = None
        self.tty = sys.stderr.isatty()
        self.progress: Optional[Progress] = None
        self.held = ""  # not a terminal: the line waiting for its step's loss
        self.status: Optional[str] = None  # how the run ended: finished, stopped, failed

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, Finished):
            self.status = ev.status
        if self.quiet and not isinstance(ev, (Warning, Finished)):
            return
        if isinstance(ev, LogStep):
            self.loss = ev.loss if ev.loss is not None else self.loss
            self.tps = ev.tokens_per_second or self.tps
            if self.progress is not None and self.progress.step == ev.step:
                self._draw()
            return
        self._flush()
        if isinstance(ev, RunStarted):  # in the language of --lang, as the run's log
            print(_log_line(ev), file=sys.stderr)
        elif isinstance(ev, Progress):
            self.progress = ev
            self._draw()
        elif isinstance(ev, (Warning, Finished)):  # an Error is said once, by the command's last line
            if self.tty:
                print(file=sys.stderr)
            # a Finished without its output folder: the run folder is the command's last line
            print(_log_line(ev) if isinstance(ev, Warning) else message(f"log.{ev.status}", {"step": ev.step}),
                  file=sys.stderr)

    def _draw(self) -> None:
        ev, width = self.progress, 24
        filled = int(width * ev.step / max(ev.total_steps, 1))
        eta = f"{ev.eta_seconds:.0f}s" if ev.eta_seconds is not None else "?"
        loss = f"{self.loss:.4f}" if self.loss is not None else "-"
        tps = f"{self.tps:,.0f}" if self.tps else "-"
        line = f"[{'#' * filled}{'.' * (width - filled)}] {ev.step}/{ev.total_steps}  loss {loss}  tok/s {tps}  eta {eta}"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif ev.step == ev.total_steps or ev.step % 10 == 0:
            self.held = line

    def _flush(self) -> None:
        if self.held:
            print(self.held, file=sys.stderr)
            self.held = ""

    def close(self) -> None:
        self._flush()

