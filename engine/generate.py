"""Talk to a run's result: load base + adapter (or the trained model) once, answer reproducibly.

Every answer carries the seed and settings that made it, so the same seed, settings and prompt
give the same text again on the same machine. torch, transformers and peft are imported inside
the functions that need them: the board may import this module's data types, never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError, GenerationConfig, RunConfig
from .messages import TuneboardError, message
from .runs import RUNNING, latest_checkpoint, resolve_run, run_and_checkpoint, run_info
from .templates import STOP_STRINGS, plain_text

MAX_SEED = 2**31 - 1


@dataclass
class Answer:
    """One generated answer and everything needed to make it again."""

    text: str
    seed: int
    settings: dict[str, Any]  # the GenerationConfig as a dict, with the seed actually used
    adapter: bool = True  # False: the base model answered (adapter disabled)
    index: int = 0  # which of num_return_sequences
    new_tokens: int = 0
    finish: str = "stop"  # stop (end of answer or a stop string) | length | interrupted
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def config(self) -> GenerationConfig:
        """The settings that reproduce this answer."""
        return GenerationConfig(**self.settings)


def resolve_seed(seed: Optional[int]) -> int:
    """A negative or missing seed means "draw one": the drawn seed is what the answer records."""
    if seed is None or seed < 0:
        return random.SystemRandom().randint(0, MAX_SEED)
    return int(seed)


def decoding_mode(gen: GenerationConfig) -> str:
    """greedy | sample | beam: num_beams > 1 is beam search, temperature 0 is greedy."""
    if gen.num_beams > 1:
        return "beam"
    return "greedy" if gen.temperature == 0 else "sample"


def with_seed(gen: GenerationConfig, seed: int, **changes: Any) -> GenerationConfig:
    return dataclasses.replace(gen, seed=seed, **changes)


def conversation(history: list[dict[str, str]], system_prompt: Optional[str]) -> list[dict[str, str]]:
    """The messages sent to the template: the system prompt first (if any), then the turns."""
    turns = [{"role": m["role"], "content": m["content"]} for m in history if m.get("role") != "system"]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


def trim_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string; True if one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _decoded(tok, ids: list[int], stops: list[str]) -> tuple[str, bool]:
    """An answer's text, cut at a stop string (and whether it was), without the half character a token
    limit leaves when it falls inside a character that byte-level BPE spread over tokens (Korean, emoji)."""
    text, stopped = trim_at_stop(tok.decode(ids, skip_special_tokens=True), stops)
    return text.rstrip("\ufffd"), stopped


def _safe_prefix(text: str, stops: list[str]) -> str:
    """What can be shown while streaming: never a piece that may turn out to start a stop string, nor half a
    character (its other bytes are still to come, or never will: the token limit fell inside it)."""
    text, found = trim_at_stop(text, stops)
    text = text.rstrip("\ufffd")
    if found:
        return text
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold]


class Stream:
    """Text chunks as they are generated; `answers` is filled once iteration ends."""

    def __init__(self) -> None:
        self.chunks: Iterator[str] = iter(())
        self.answers: list[Answer] = []

    def __iter__(self) -> Iterator[str]:
        yield from self.chunks


class ChatSession:
    """One loaded model (base + adapter, or a trained full model) and its tokenizer, reused across turns."""

    def __init__(self, workdir=None):
        self.workdir = workdir
        self.model = None
        self.base_model = None  # full / freeze runs only: the untouched base, loaded on first use
        self.tokenizer = None
        self.run_dir: Optional[Path] = None
        self.cfg: Optional[RunConfig] = None
        self.res = None
        self.is_peft = False
        self.stops: list[str] = []
        self.source = ""

    # ---- loading --------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self, run: str, checkpoint: Optional[str] = None, say: bool = True) -> dict[str, Any]:
        """Load `run` (a folder or id): its adapter on the base in the run's quantization and
        precision, or its trained model. `checkpoint` picks a checkpoint folder instead. `say`: a run that never
        finished, read from its latest checkpoint, is said on stderr (`checkpoint_note` says it otherwise)."""
        from . import model as model_mod

        model_mod.quiet_libraries()
        run_dir = resolve_run(run, self.workdir)
        self.unload()
        cfg = RunConfig.load(str(run_dir / "config.yaml"))

        def read(folder: Path):
            is_peft = (folder / "adapter_config.json").exists()
            res = model_mod.resolve_for_run(cfg, run_dir, self.workdir, adapter=is_peft)
            if is_peft:
                from peft import PeftModel

                base = model_mod.load_model(cfg, res, for_training=False)
                model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
            else:
                full = cfg.with_overrides({"model.name_or_path": str(folder), "quantization.bits": 0})
                model = model_mod.load_model(full, model_mod.resolve(full, self.workdir), for_training=False)
            return model.eval(), load_run_tokenizer(cfg, res, folder), res, is_peft

        source, (model, self.tokenizer, res, is_peft) = read_result(run_dir, checkpoint, read, say=say)
        self.model, self.run_dir, self.cfg, self.res = model, run_dir, cfg, res
        self.is_peft = is_peft
        self.stops = STOP_STRINGS.get(_template_name(run_dir, res), [])
        self.source = str(source)
        return self.info()

    def info(self) -> dict[str, Any]:
        if not self.loaded:
            return {"loaded": False}
        return {"loaded": True, "run": self.run_dir.name, "run_dir": str(self.run_dir), "source": self.source,
                "stage": self.cfg.stage, "method": self.cfg.adapter.method, "base": self.cfg.model.name_or_path,
                "device": self.res.device, "precision": self.res.precision, "quantization": self.cfg.quantization.bits,
                "adapter": self.is_peft, "chat_template": bool(self.tokenizer.chat_template)}

    def unload(self) -> None:
        """Drop the model and give its memory back (GPU memory included)."""
        self.model = self.base_model = self.tokenizer = None
        self.run_dir = self.cfg = self.res = None
        gc.collect()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _require(self) -> None:
        if not self.loaded:
            raise TuneboardError("chat.error_not_loaded")

    def _model_for(self, use_adapter: bool):
        """(model, context): the context disables the adapter for base answers on the same copy."""
        import contextlib

        if use_adapter:
            return self.model, contextlib.nullcontext()
        if self.is_peft:
            return self.model, self.model.disable_adapter()
        if self.base_model is None:  # a full or freeze run: the base is a second model
            from . import model as model_mod

            self.base_model = model_mod.load_model(self.cfg, self.res, for_training=False).eval()
        return self.base_model, contextlib.nullcontext()

    # ---- prompts --------------------------------------------------------------------------
    def encode(self, messages: list[dict[str, str]]):
        """Token ids of one prompt (see `encode_batch`)."""
        return self.encode_batch([messages])

    def encode_batch(self, conversations: list[list[dict[str, str]]]):
        """Token ids of the prompts, left-padded into one batch: the run's chat template with the
        assistant's turn opened (plain text for a pretraining run, which never learned a template)."""
        tok = self.tokenizer
        if self.cfg.stage == "pt" or not tok.chat_template:
            enc = tok([plain_text(c) for c in conversations], return_tensors="pt", padding=True)
        else:
            enc = tok.apply_chat_template(conversations, add_generation_prompt=True, padding=True,
                                          return_dict=True, return_tensors="pt")
        return {k: enc[k].to(self.model.device) for k in ("input_ids", "attention_mask")}

    def generate_kwargs(self, gen: GenerationConfig, prompt_len: int, stopping=None) -> dict[str, Any]:
        """`model.generate`'s arguments for `gen` after a prompt of `prompt_len` tokens."""
        mode = decoding_mode(gen)
        if gen.num_beams > 1 and gen.num_return_sequences > gen.num_beams:
            raise ConfigError("generation.num_return_sequences", "error.config.return_sequences",
                              "beam search returns at most num_beams answers")
        if mode == "greedy" and gen.num_return_sequences > 1:
            raise ConfigError("generation.num_return_sequences", "error.config.return_sequences",
                              "greedy decoding returns one answer; raise num_beams or temperature")
        tok = self.tokenizer
        # every knob is passed explicitly, so a model's own generation_config.json cannot change the answer
        kw: dict[str, Any] = dict(
            max_new_tokens=self._room(prompt_len, gen), num_beams=gen.num_beams, do_sample=mode == "sample",
            num_return_sequences=gen.num_return_sequences, repetition_penalty=1.0,
            pad_token_id=tok.pad_token_id, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
        )
        if gen.repetition_penalty != 1.0:  # transformers' own, except on the tokens that end an answer
            kw["logits_processor"] = _repetition_penalty(gen.repetition_penalty, _eos_ids(self.model, tok))
        if mode == "sample":
            kw.update(temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p, min_p=gen.min_p)
        stops = self._stops(gen)
        if stops:
            kw.update(stop_strings=stops, tokenizer=tok)
        if stopping is not None:
            kw["stopping_criteria"] = stopping
        return kw

    # ---- answering --------------------------------------------------------------------------
    def generate(self, messages: list[dict[str, str]], gen: GenerationConfig, use_adapter: bool = True,
                 should_stop: Optional[Callable[[], bool]] = None) -> list[Answer]:
        """All `gen.num_return_sequences` answers to `messages` (system prompt from `gen` if none given)."""
        stream = self.stream(messages, gen, use_adapter, should_stop, live=False)
        for _ in stream:
            pass
        return stream.answers

    def stream(self, messages: list[dict[str, str]], gen: GenerationConfig, use_adapter: bool = True,
               should_stop: Optional[Callable[[], bool]] = None, live: bool = True) -> Stream:
        """Text chunks as tokens are generated. Beam search and several answers can't stream
        token by token (transformers streams one sequence): those yield the first answer whole."""
        self._require()
        seed = resolve_seed(gen.seed)
        gen = with_seed(gen, seed)
        if gen.system_prompt and not any(m["role"] == "system" for m in messages):
            messages = conversation(messages, gen.system_prompt)
        stream = Stream()
        stream.chunks = self._run(messages, gen, use_adapter, should_stop, live, stream)
        return stream

    def _run(self, messages, gen: GenerationConfig, use_adapter: bool, should_stop, live: bool,
             stream: Stream) -> Iterator[str]:
        from transformers import TextIteratorStreamer, set_seed

        inputs = self.encode(messages)
        limit = self.context_length()
        if limit is not None and inputs["input_ids"].shape[1] >= limit:  # past its positions a model writes noise
            raise TuneboardError("chat.prompt_too_long", tokens=int(inputs["input_ids"].shape[1]), context=limit)
        stops = self._stops(gen)
        interrupted = {"flag": False}
        halt = threading.Event()  # set when the reader walks away mid-stream: the generating thread ends too
        stopping = _stopping(lambda: halt.is_set() or bool(should_stop and should_stop()), interrupted)
        kw = self.generate_kwargs(gen, inputs["input_ids"].shape[1], stopping)
        model, ctx = self._model_for(use_adapter)
        live = live and gen.num_beams == 1 and gen.num_return_sequences == 1
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True) if live else None
        out: dict[str, Any] = {}
        start = time.perf_counter()

        def work() -> None:
            import torch

            try:
                with ctx, torch.inference_mode():
                    set_seed(gen.seed)  # right before sampling: the seed alone decides the draws
                    out["ids"] = model.generate(**inputs, **kw, streamer=streamer)
            except BaseException as e:  # handed to the reader, which re-raises it
                out["error"] = e
                if streamer is not None:
                    streamer.text_queue.put(streamer.stop_signal)

        if live:
            thread = threading.Thread(target=work, daemon=True, name="tuneboard-generate")
            thread.start()
            text, shown = "", 0
            try:
                for piece in streamer:
                    text += piece
                    safe = _safe_prefix(text, stops)
                    if len(safe) > shown:
                        yield safe[shown:]
                        shown = len(safe)
            except GeneratorExit:
                halt.set()  # the reader left early: stop generating
                raise
            finally:
                thread.join()
        else:
            work()
        if "error" in out:
            raise out["error"]
        seconds = time.perf_counter() - start
        answers = self._answers(out["ids"], inputs["input_ids"].shape[1], gen, use_adapter, seconds,
                                interrupted["flag"], kw["max_new_tokens"])
        stream.answers = answers
        if live:
            rest = answers[0].text[shown:] if answers[0].text.startswith(text[:shown]) else ""
            if rest:
                yield rest
        elif answers:
            yield answers[0].text

    def _stops(self, gen: GenerationConfig) -> list[str]:
        return [s for s in [*gen.stop, *self.stops] if s]

    def context_length(self) -> int | None:
        """The model's context (max_position_embeddings), or None when its config does not say."""
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    def _room(self, prompt_len: int, gen: GenerationConfig) -> int:
        """The new tokens asked for, or as many as the model's context holds after the prompt: past its positions
        a model writes noise, ever slower (the demo's 512 with --max-new-tokens 100000 ran for hours)."""
        limit = self.context_length()
        if limit is None:
            return gen.max_new_tokens
        return max(1, min(gen.max_new_tokens, limit - prompt_len))

    def _answers(self, ids, prompt_len: int, gen: GenerationConfig, use_adapter: bool, seconds: float,
                 interrupted: bool, room: int) -> list[Answer]:
        """The answers in `ids`; `room`: the new tokens they were given (`_room`)."""
        tok = self.tokenizer
        special = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
        eos = _eos_ids(self.model, tok)
        stops = self._stops(gen)
        out = []
        for i, row in enumerate(ids[:, prompt_len:].tolist()):
            while row and row[-1] == tok.pad_token_id and tok.pad_token_id not in eos:
                row.pop()
            text, stopped = _decoded(tok, row, stops)
            n = len([t for t in row if t not in special])
            if interrupted:
                finish = "interrupted"
            elif stopped or any(t in eos for t in row) or len(row) < room:
                finish = "stop"
            else:  # "context": the model's own length ended it before max_new_tokens did
                finish = "length" if room >= gen.max_new_tokens else "context"
            out.append(Answer(text=text, seed=gen.seed, settings=dataclasses.asdict(gen), adapter=use_adapter,
                              index=i % gen.num_return_sequences, new_tokens=n, finish=finish, seconds=round(seconds, 3)))
        return out

    def generate_batch(self, conversations: list[list[dict[str, str]]], gen: GenerationConfig,
                       use_adapter: bool = True) -> list[Answer]:
        """One answer per conversation, generated as one left-padded batch (evaluation's path)."""
        import torch
        from transformers import set_seed

        self._require()
        gen = with_seed(gen, resolve_seed(gen.seed), num_return_sequences=1)
        inputs = self.encode_batch(conversations)
        model, ctx = self._model_for(use_adapter)
        start = time.perf_counter()
        kw = self.generate_kwargs(gen, inputs["input_ids"].shape[1])
        with ctx, torch.inference_mode():
            set_seed(gen.seed)
            ids = model.generate(**inputs, **kw)
        return self._answers(ids, inputs["input_ids"].shape[1], gen, use_adapter, time.perf_counter() - start, False,
                             kw["max_new_tokens"])

    def sweep(self, messages: list[dict[str, str]], gen: GenerationConfig, n: int,
              use_adapter: bool = True, seeds: Optional[list[int]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> Iterator[Answer]:
        """The same prompt under `n` seeds (gen.seed, gen.seed+1, ... or the given `seeds`), one answer
        each, yielded as each is done. Each equals what a single answer with that seed gives."""
        if seeds is None:
            first = resolve_seed(gen.seed)
            seeds = [(first + i) % (MAX_SEED + 1) for i in range(n)]
        for s in seeds:
            if should_stop is not None and should_stop():
                return
            yield self.generate(messages, with_seed(gen, s, num_return_sequences=1), use_adapter, should_stop)[0]

    def compare(self, messages: list[dict[str, str]], gen: GenerationConfig) -> dict[str, list[Answer]]:
        """The base model's and the tuned model's answers to the same prompt with the same seed."""
        gen = with_seed(gen, resolve_seed(gen.seed))
        return {"base": self.generate(messages, gen, use_adapter=False),
                "tuned": self.generate(messages, gen, use_adapter=True)}


def _stopping(should_stop: Callable[[], bool], interrupted: dict):
    """A stopping criterion that ends generation when the person presses Stop."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Interrupt(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stop = bool(should_stop())
            interrupted["flag"] = interrupted["flag"] or stop
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Interrupt()])


def _repetition_penalty(penalty: float, spared: set[int]):
    """transformers' repetition penalty (`penalty` for every token already in the prompt or the answer), minus the
    tokens in `spared`: the ones that end an answer. A chat template closes every earlier turn with one
    (`<|im_end|>`), so transformers' processor penalizes the end of the answer as a repeat, and at 1.3 the demo's
    answers ran on to max_new_tokens instead of stopping. Applied where transformers applies its own: before
    temperature, top-k and top-p."""
    import torch
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    ids = torch.tensor(sorted(spared))
    on: dict = {}  # the spared ids on the scores' device, made once a generation, not at every token

    class SparingStops(RepetitionPenaltyLogitsProcessor):
        def __call__(self, input_ids, scores):
            index = on.get(scores.device)
            if index is None:
                index = on[scores.device] = ids.to(scores.device)
            kept = scores.index_select(-1, index)
            scores = super().__call__(input_ids, scores)
            return scores.index_copy(-1, index, kept)

    return LogitsProcessorList([SparingStops(float(penalty))])


def _eos_ids(model, tok) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, tok.eos_token_id] if i is not None}


def _template_name(run_dir: Path, res) -> str:
    try:
        return json.loads((run_dir / "resolved.json").read_text()).get("chat_template", "")
    except (OSError, ValueError):
        return res.chat_template


def result_dir(run_dir: Path, checkpoint: Optional[str] = None, say: bool = True) -> Path:
    """The folder holding a run's result: a named checkpoint, else `adapter/`, else `model/`, else (said, unless
    not `say`) the latest checkpoint."""
    if checkpoint:
        p = Path(checkpoint)
        p = p if p.is_absolute() else run_dir / "checkpoints" / p.name
        if not p.resolve().is_relative_to(run_dir.resolve()) or not p.is_dir():
            raise TuneboardError("error.no_checkpoint", path=str(checkpoint))
        return p
    for name in ("adapter", "model"):
        p = run_dir / name
        if (p / "adapter_config.json").exists() or (p / "config.json").exists():
            return p
    last = latest_checkpoint(run_dir)  # a run killed before its end (kill -9, a lost machine) left only these
    if last is not None and any((last / f).exists() for f in ("adapter_config.json", "config.json")):
        if say:
            key, params = checkpoint_note(run_dir, last)
            print(f"{message('severity.warning')}: {message(key, params)}", file=sys.stderr)
        return last
    raise TuneboardError("chat.error_no_result", run=run_dir.name)


def checkpoint_note(run_dir: Path, source: Path, checkpoint: Optional[str] = None) -> Optional[tuple[str, dict]]:
    """The warning `result_dir` prints where a run that never finished was read from its latest checkpoint, as a
    message key and parameters (for a JSON result); None where the source is the run's result or was asked for."""
    if checkpoint or source.parent != run_dir / "checkpoints":
        return None
    key = "warning.using_checkpoint_live" if run_info(run_dir).status == RUNNING else "warning.using_checkpoint"
    return key, {"run": run_dir.name, "checkpoint": source.name}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


@contextlib.contextmanager
def pinned(source: Path, run_dir: Path):
    """`source` as it is now, for as long as it is read: a checkpoint of a run that is still training is deleted by
    the trainer's rotation (save_total_limit) while chat, eval or export load it, so it is read through hard links
    (no copy of the weights) in a folder of its own; anything else as it is."""
    if source.parent != run_dir / "checkpoints":
        yield source
        return
    tmp = Path(tempfile.mkdtemp(prefix=".reading-", dir=run_dir))
    try:
        shutil.copytree(source, tmp / source.name, copy_function=_link_or_copy)
        yield tmp / source.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_result(run_dir: Path, checkpoint: Optional[str], read: Callable[[Path], Any], tries: int = 3,
                say: bool = True) -> tuple[Path, Any]:
    """(the result folder, `read` of it): the newest checkpoint again if the one found was deleted while it was
    pinned (a run still training rotates them every save)."""
    for attempt in range(tries):
        source = result_dir(run_dir, checkpoint, say=say and attempt == 0)
        try:
            with pinned(source, run_dir) as folder:
                return source, read(folder)
        except (FileNotFoundError, shutil.Error):
            if source.exists() or checkpoint or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def load_run_tokenizer(cfg: RunConfig, res, source: Path):
    """The run's tokenizer (`model.load_result_tokenizer`), padding on the left for generation."""
    from . import model as model_mod

    tok = model_mod.load_result_tokenizer(cfg, res, source)
    tok.padding_side = "left"  # batched generation pads on the left, so every answer starts right after its prompt
    return tok


# ---- the CLI verb ---------------------------------------------------------------------------


def settings_from_args(cfg: RunConfig, args) -> GenerationConfig:
    """The run's generation settings with the command line's flags on top."""
    data = dataclasses.asdict(cfg.chat_generation())
    for flag, name in (("system", "system_prompt"), ("seed", "seed"), ("temperature", "temperature"),
                       ("top_k", "top_k"), ("top_p", "top_p"), ("min_p", "min_p"),
                       ("repetition_penalty", "repetition_penalty"), ("num_beams", "num_beams"),
                       ("num_return_sequences", "num_return_sequences"), ("max_new_tokens", "max_new_tokens"),
                       ("stop", "stop")):
        value = getattr(args, flag, None)
        if value is not None:
            data[name] = value
    return RunConfig.from_dict({"generation": data}).generation


def cmd_chat(args) -> int:
    if getattr(args, "json", False) and args.prompt is None:  # the conversation in the terminal has no JSON form
        raise TuneboardError("chat.cli.json_needs_prompt")
    if args.prompt is not None and not args.prompt.strip():  # answered, each time differently, from nothing
        raise TuneboardError("chat.error_empty")
    session = ChatSession(args.workdir)
    run_dir, checkpoint = run_and_checkpoint(args.run, args.workdir)
    cfg = RunConfig.load(str(run_dir / "config.yaml"))
    gen = settings_from_args(cfg, args)
    moot = [f"--{f.replace('_', '-')}" for f in ("temperature", "top_k", "top_p", "min_p")
            if getattr(args, f, None) is not None]
    if gen.num_beams > 1 and moot:  # beam search keeps the likeliest beams: nothing is drawn
        print(message("warning.beams_no_sampling", {"beams": gen.num_beams, "flags": ", ".join(moot)}), file=sys.stderr)
    if getattr(args, "system", None) and cfg.stage == "pt":
        print(f"{message('severity.warning')}: {message('warning.pt_no_system')}", file=sys.stderr)
    session.load(str(run_dir), checkpoint)
    use_adapter = not args.base
    if args.prompt is not None:
        answers = session.generate(conversation([{"role": "user", "content": args.prompt}], gen.system_prompt),
                                   gen, use_adapter)
        if args.json:
            print(json.dumps([a.to_dict() for a in answers], ensure_ascii=False, indent=1))
        elif len(answers) > 1:  # numbered: an answer holding blank lines could not be told from the next
            print("\n\n".join(f"[{i}/{len(answers)}]\n{a.text}" for i, a in enumerate(answers, 1)))
        else:
            print(answers[0].text)
        return 0
    return _repl(session, gen, use_adapter)


_COMMAND = re.compile(r"/[A-Za-z?]+(?:\s|$)")  # `/reset`, `/system ...`; not `/usr/bin is ...`, which is a question


def _repl(session: ChatSession, gen: GenerationConfig, use_adapter: bool) -> int:
    commands = message("chat.cli.commands")
    key = "chat.cli.with_base" if not use_adapter else "chat.cli.with_run"
    print(f"{message(key, {'run': session.run_dir.name})}; {commands}", file=sys.stderr)
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        word, _, rest = line.strip().partition(" ")
        if word in ("/exit", "/quit"):
            return 0
        if word in ("/reset", "/clear"):  # LLaMA-Factory's is `clear`
            history = []
            print(message("chat.cli.cleared"), file=sys.stderr)
            continue
        if word == "/system":
            gen = dataclasses.replace(gen, system_prompt=rest.strip() or None)
            print(message("chat.cli.system_set", {"prompt": gen.system_prompt}) if gen.system_prompt else
                  message("chat.cli.system_cleared"), file=sys.stderr)
            continue
        if word in ("/help", "/?"):
            print(commands, file=sys.stderr)
            continue
        if _COMMAND.match(line.strip()):  # a typo of a command is not a question for the model
            print(message("chat.cli.unknown_command", {"command": word, "commands": commands}), file=sys.stderr)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        stream = session.stream(conversation(history, gen.system_prompt), gen, use_adapter)
        try:
            for chunk in stream:
                print(chunk, end="", flush=True)
        except TuneboardError as e:  # the conversation has outgrown the model's context: said, the question dropped
            history.pop()
            print(f"{message('severity.error')}: {e}", file=sys.stderr)
            continue
        print()
        answer = stream.answers[0]
        print(f"[{message('chat.cli.answer', {'seed': answer.seed, 'tokens': answer.new_tokens})}, "
              f"{message('chat.finish_' + answer.finish)}]",
              file=sys.stderr)
        history.append({"role": "assistant", "content": answer.text})
