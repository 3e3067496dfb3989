"""Speed and memory of four fine-tuning recipes on the same synthetic data, one process per recipe.

    python bench/bench_train.py --shape tiny --steps 20 --recipes a,b,c,d
    python bench/bench_train.py --data-speed

The model is built from a published config (bench/configs/) with random weights: the shapes set the
cost, not the weights. The data is a stream of Zipf-distributed token ids with log-normal lengths,
written as letter-words of a byte-level BPE (" a", " ab", ...: one token each), so every recipe reads the same tokens
through the ordinary text path. Recipes:
  a  the classic QLoRA tutorial: fp16, NF4 + double quant, LoRA r64/alpha16 on q,v, paged AdamW 32-bit,
     eager attention, padded batches, checkpointing (prepare_model_for_kbit_training's default)
  b  LLaMA-Factory's paper setting: bf16, LoRA r128/alpha256 on all linear layers, 8-bit AdamW,
     checkpointing, sdpa, padded batches
  c  Tuneboard's defaults, trained by engine.train.run_training (the path the board and CLI use)
  d  c with the base in 4-bit (QLoRA)
a and b run on transformers' Trainer + peft, as those recipes did. On CPU, what needs CUDA (fp16/bf16
autocast, paged and 8-bit optimizers) falls back to fp32 + AdamW and the line says `cpu-fallback`.
Each line: tokens/s (real tokens, padding excluded, after two warm-up steps), MFU (6N per token for
full training, 4N + 6*adapter for LoRA, plus 12*layers*q_dim*length for attention, against the GPU's
peak; recomputation is not counted), peak memory (torch's max allocated on GPU, the process's peak
RSS on CPU), the estimate, and the loss at the last step. Results append to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

RECIPES = {"a": "qlora-classic", "b": "llamafactory-paper", "c": "tuneboard-default", "d": "tuneboard-qlora"}
DEFAULTS = {"tiny": (4, 256), "qwen2.5-0.5b": (4, 1024), "llama-2-7b": (4, 1024)}  # micro-batch, cutoff
# dense bf16/fp16 tensor-core peak, TFLOP/s, by the name torch reports
PEAK_TFLOPS = [("H200", 989), ("H100 PCIe", 756), ("H100", 989), ("A100", 312), ("L40S", 362), ("L4", 121),
               ("A10G", 125), ("A10", 125), ("RTX 4090", 165), ("RTX 3090", 71), ("V100", 125), ("T4", 65)]


# ---- synthetic data ----------------------------------------------------------------------------


def lengths(n: int, max_length: int, seed: int) -> list[int]:
    """Log-normal lengths (median ~ max_length/4, a long tail), clipped to [16, max_length - 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    raw = rng.lognormal(mean=math.log(max_length / 4), sigma=0.75, size=n)
    return [int(x) for x in np.clip(raw, 16, max_length - 1)]


LETTERS = "abcdefghijklmnopqrstuvwxyz"
FIRST_WORD = 3 + 1 + len(LETTERS)  # ids 0-2 are pad, eos, unk; then the space and the bare letters; then words
# Qwen2's split: a run of letters with the space before it is one piece, as GPT-2's byte-level BPE does
SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def words(vocab: int) -> list[str]:
    """The vocabulary's words: a, b, ..., z, aa, ab, ... (shortest first), one per id from FIRST_WORD on."""
    out, frontier = [], [""]
    while len(out) < vocab - FIRST_WORD:
        frontier = [w + c for w in frontier for c in LETTERS]
        out += frontier[: vocab - FIRST_WORD - len(out)]
    return out


def token_rows(n: int, vocab: int, max_length: int, seed: int) -> list[list[int]]:
    """Zipf-distributed word ids (like real text's frequencies), so the loss has something to learn."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    ranks = np.arange(1, vocab - FIRST_WORD + 1)
    p = ranks ** -1.1
    p /= p.sum()
    out = []
    for k in lengths(n, max_length, seed):
        out.append((rng.choice(vocab - FIRST_WORD, size=k, p=p) + FIRST_WORD).tolist())
    return out


def text_of(ids: list[int], vocab: int) -> str:
    """The text whose tokens are `ids` (word ids): each word with its space before it."""
    w = _words(vocab)
    return "".join(" " + w[i - FIRST_WORD] for i in ids)


@functools.cache
def _words(vocab: int) -> list[str]:
    return words(vocab)


def word_tokenizer(vocab: int):
    """A byte-level BPE in which every word of `words` (with its space) is one token, id for id.

    Its vocabulary is closed under prefixes and each merge adds one letter to a word, so a class that rebuilds
    byte-level BPE from the saved vocab and merges reads the text the same: transformers 5 loads a qwen2
    folder's tokenizer with Qwen2's own class, which keeps the vocabulary but not the pipeline (a word-level
    tokenizer read that way turned every row into nothing, and the Qwen2.5 shape trained on empty batches)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    space = "\u0120"  # byte-level BPE's name for the space byte
    vocab_map = {"<pad>": 0, "<eos>": 1, "<unk>": 2, space: 3, **{c: 4 + i for i, c in enumerate(LETTERS)}}
    merges = []
    for i, w in enumerate(_words(vocab)):
        vocab_map[space + w] = FIRST_WORD + i
        merges.append((space + w[:-1], w[-1]))
    tok = Tokenizer(models.BPE(vocab_map, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   model_max_length=10**6)


# ---- the parent: prepare once, one subprocess per recipe, print and record -------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="tiny", choices=sorted(DEFAULTS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recipes", default="a,b,c,d")
    ap.add_argument("--batch", type=int, default=None, help="micro-batch (default per shape)")
    ap.add_argument("--seq", type=int, default=None, help="cutoff in tokens (default per shape)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="[R:]a.b=v",
                    help="a config override for the engine's recipes (c, d), as `tuneboard train --set`; "
                         "`d:a.b=v` for recipe d alone")
    ap.add_argument("--recipe-timeout", type=float, default=None, help="seconds a recipe may take before it is killed")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if not in the table")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="append a torch-profiler table of two late steps of each recipe to FILE (not timed)")
    ap.add_argument("--out", default=str(HERE / "results.jsonl"), help="JSONL to append to ('' to skip)")
    ap.add_argument("--machine", default=os.environ.get("BENCH_MACHINE", platform.node()), help="name in the record")
    ap.add_argument("--data-speed", action="store_true", help="time tokenising + packing 100k rows instead")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--table", action="store_true", help="print results.jsonl as the README's markdown table")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    b, s = DEFAULTS[args.shape]
    args.batch, args.seq = args.batch or b, args.seq or s
    if args._prepare:
        return prepare(args)
    if args._worker:
        return worker(args)
    if args.data_speed:
        return data_speed(args)
    if args.table:
        return table(Path(args.out or HERE / "results.jsonl"))

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as tmp:
        base = [sys.executable, str(Path(__file__).resolve()), "--shape", args.shape, "--steps", str(args.steps),
                "--batch", str(args.batch), "--seq", str(args.seq), "--seed", str(args.seed), "--_dir", tmp]
        base += [f"--set={item}" for item in args.set]
        base += ["--profile", str(Path(args.profile).resolve())] if args.profile else []
        t = time.perf_counter()
        failed = 0
        subprocess.run(base + ["--_prepare"], check=True)
        print(f"# {args.shape}: model + {args.steps * args.batch * 2:,} rows prepared in {time.perf_counter() - t:.0f}s;"
              f" micro-batch {args.batch}, cutoff {args.seq}, {args.steps} steps", flush=True)
        for r in recipes:
            extra = ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
            proc = run_worker(base + ["--_worker", r] + extra, args.recipe_timeout)
            if args.out and (proc.returncode is None or proc.returncode):  # the whole story, beside the results
                log = Path(args.out).with_name(f"worker-{r}-{datetime.datetime.now():%H%M%S}.log")
                log.write_text(f"$ {' '.join(proc.args)}\n{proc.stdout}\n{proc.stderr}", encoding="utf-8")
            if proc.returncode is None:
                tail = [x for x in (proc.stderr or "").strip().splitlines() if "Warning" not in x][-3:]
                print(f"{r} {RECIPES[r]:<19} TIMEOUT after {args.recipe_timeout:.0f}s: {' | '.join(tail)}", flush=True)
                failed += 1
                continue
            out = Path(tmp) / f"result-{r}.json"
            if proc.returncode or not out.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"{r} {RECIPES[r]:<19} FAILED: {' | '.join(tail)}", flush=True)
                failed += 1
                continue
            rec = json.loads(out.read_text())
            rec["machine"] = args.machine
            print(line(rec), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
    return 1 if failed else 0  # a script around the bench must not take a crashed recipe for a measurement


def run_worker(cmd: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    """Run one recipe's process; if it outlives `timeout`, kill its whole process group and return what it printed,
    with returncode None. The compiler's worker processes inherit the output pipes: `subprocess.run`'s kill of
    the recipe alone then waited on them for good (an H200 call on 2026-11-27 sat 4 minutes past a 150 s limit)."""
    import signal

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(cmd, None, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def line(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    est = f" (est {r['est_gb']:.2f})" if r.get("device") == "cuda" and r.get("est_gb") else ""
    kind = "GB" if r.get("peak_kind") == "cuda_allocated" else "GB rss"
    fb = f"  [cpu-fallback: {r['fallback']}]" if r.get("fallback") else ""
    fb += "".join(f"  [--set {o}]" for o in r.get("overrides") or [])
    fb += f"  [{', '.join(chosen(r))}]" if chosen(r) else ""
    return (f"{r['recipe']} {r['name']:<19} tokens/s {r['tokens_per_s']:>9,.0f}  MFU {mfu:>6}  "
            f"peak {r['peak_gb']:.2f} {kind}{est}  loss@{r['steps']} {r['loss']:.4f}{fb}")


def chosen(r: dict) -> list[str]:
    """The engine's speed and memory choices a line measured (from resolved.json; lines before 2026-11-26 have none)."""
    res = r.get("resolved") or {}
    names = {"packing": "packed", "liger": "liger", "gradient_checkpointing": "checkpointing", "upcast_norms": "fp32 norms",
             "fused_lora": "fused LoRA", "compile": "compiled"}
    said = [name for key, name in names.items() if res.get(key)]
    cs = res.get("compile_stats")  # what the compiler did: graphs, and any break or failure that left code uncompiled
    if res.get("compile") and cs:
        said[-1] += f" ({cs['graphs']} graphs, {cs['graph_breaks']} breaks, {cs['failed_frames']} failed)"
        said += [f"break: {r}" for r in cs.get("break_reasons", [])[:2]]
    return said


def notes(r: dict) -> str:
    return "; ".join((["cpu-fallback"] if r.get("fallback") else []) + [f"--set {o}" for o in r.get("overrides") or []]
                     + chosen(r) + ([r["note"]] if r.get("note") else []))  # a note added by hand, after the run


def table(path: Path) -> int:
    print("| date | machine | device | shape | recipe | batch x cutoff | steps | tokens/s | MFU | peak | est. | loss | load | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for raw in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(raw)
        if r.get("recipe") not in RECIPES:  # data-speed and bench_board.py's records share the file
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        peak = f"{r['peak_gb']:.2f} GB" + (" RSS" if r.get("peak_kind") == "cpu_rss" else "")
        est = f"{r['est_gb']:.2f} GB" if r.get("device") == "cuda" else "-"
        dev = r.get("gpu") or f"CPU x{r.get('cpu_threads')}"
        print(f"| {r['date'][:10]} | {r['machine']} | {dev} | {r['shape']} | {r['recipe']} {r['name']} | "
              f"{r['batch']}x{r['seq']} | {r['steps']} | {r['tokens_per_s']:,.0f} | {mfu} | {peak} | {est} | "
              f"{r['loss']:.3f} | {_or_dash(r.get('load_avg'))} | {notes(r)} |")
    return 0


# ---- preparation: the random-init model, its tokenizer, the data file ---------------------------------


def shape_config(shape: str) -> dict:
    return json.loads((HERE / "configs" / f"{shape}.json").read_text())


def random_model(shape: str, seed: int, layers: int | None = None):
    """A model of `shape` (its first `layers` decoder layers, if given) with random weights, made where it will
    train: bf16 on a GPU (seconds, not minutes), fp32 on a CPU."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    mc = {**shape_config(shape), **({"num_hidden_layers": layers} if layers else {})}
    cuda = torch.cuda.is_available()
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(**{**mc, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None})
    with torch.device("cuda" if cuda else "cpu"):
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if cuda else torch.float32)


def prepare(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    d = Path(args._dir)
    vocab = shape_config(args.shape)["vocab_size"]
    model = random_model(args.shape, args.seed)
    model.save_pretrained(d / "model")
    word_tokenizer(vocab).save_pretrained(d / "model")
    del model
    rows = token_rows(args.steps * args.batch * 2, vocab, args.seq, args.seed)
    with open(d / "stream.jsonl", "w", encoding="utf-8") as f:
        for ids in rows:
            f.write(json.dumps({"text": text_of(ids, vocab)}) + "\n")
    return 0


# ---- one recipe, in its own process --------------------------------------------------------------


def overrides(recipe: str, items: list[str]) -> list[str]:
    """The `--set` items for `recipe` (c or d): the plain ones, and those written `recipe:a.b=v`."""
    if recipe not in ("c", "d"):
        return []
    mine = []
    for item in items:
        who, sep, rest = item.partition(":")
        if not sep or "=" in who:  # a plain a.b=v (whose value may hold a colon)
            mine.append(item)
        elif who == recipe:
            mine.append(rest)
    return mine


def run_config(recipe: str, args, d: Path):
    """The RunConfig of a recipe: what c/d train with, and what a/b mirror for the estimate."""
    from engine.config import RunConfig

    base = {"stage": "pt", "run_name": f"bench-{recipe}",
            "model": {"name_or_path": str(d / "model")},
            "data": {"datasets": [{"path": str(d / "stream.jsonl")}], "max_length": args.seq},
            "training": {"max_steps": args.steps, "per_device_train_batch_size": args.batch,
                         "gradient_accumulation_steps": 1, "logging_steps": 1, "seed": args.seed,
                         "save_total_limit": 1}}
    if recipe == "a":
        base["model"].update(precision="fp16", attn_implementation="eager")
        base["quantization"] = {"bits": 4, "quant_type": "nf4", "double_quant": True}
        base["adapter"] = {"rank": 64, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
        base["training"].update(optim="paged_adamw_32bit", gradient_checkpointing="on", learning_rate=2e-4,
                                max_grad_norm=0.3, lr_scheduler_type="constant", warmup_ratio=0.0)
    elif recipe == "b":
        base["model"].update(precision="bf16", attn_implementation="sdpa")
        base["adapter"] = {"rank": 128, "alpha": 256, "dropout": 0.0, "target_modules": ["all-linear"]}
        base["training"].update(optim="adamw_8bit", gradient_checkpointing="on", learning_rate=1e-4)
    elif recipe == "d":
        base["quantization"] = {"bits": 4}
    cfg = RunConfig.from_dict(base)
    if sets := overrides(recipe, args.set):  # c and d only
        from engine.config import parse_overrides

        cfg = cfg.with_overrides(parse_overrides(sets))
    return cfg


def worker(args) -> int:
    import torch

    from engine.estimate import GB, count_params, estimate

    d, r = Path(args._dir), args._worker
    cuda = torch.cuda.is_available()
    cfg = run_config(r, args, d)
    profiled = args.profile and args.steps >= 8
    finish = profile_steps(args.steps - 3, Path(args.profile), f"{r} {RECIPES[r]} {args.shape}", cuda) if profiled else None
    t0 = time.perf_counter()
    if r in ("a", "b"):
        steps, fallback = train_plain(r, cfg, args, d, cuda)
    else:
        steps, fallback = train_engine(cfg, d, cuda)
    wall = time.perf_counter() - t0
    if finish:
        finish()
    mc = shape_config(args.shape)
    timed = steps[2:] if len(steps) > 3 else steps[1:]
    if profiled:
        timed = steps[2:-4]  # the profiled steps (and the one after, whose start stops the profiler) are slower
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    tps = tokens / seconds if seconds else 0.0
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = estimate(mc, cfg, fused_lm_head=r in ("c", "d"))
    gpu_name = torch.cuda.get_device_name() if cuda else None
    mfu = None
    peak_flops = (args.peak_tflops or _peak_tflops(gpu_name)) if cuda else args.peak_tflops
    if peak_flops:
        mfu = tps * flops_per_token(mc, cfg, est.params_trainable, d) / (peak_flops * 1e12)
    import transformers

    rec = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "recipe": r, "name": RECIPES[r], "shape": args.shape, "device": "cuda" if cuda else "cpu",
        "gpu": gpu_name, "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "load_avg": os.getloadavg()[0],
        "steps": len(steps), "batch": args.batch, "seq": args.seq,
        "tokens_per_s": tps, "mfu": mfu, "peak_gb": peak / GB,
        "peak_kind": "cuda_allocated" if cuda else "cpu_rss", "est_gb": est.allocated / GB, "est_total_gb": est.total / GB,
        "loss": steps[-1]["loss"], "first_loss": steps[0]["loss"], "fallback": fallback, "wall_s": wall,
        "params": count_params(mc)["total"], "trainable": est.params_trainable,
        "overrides": overrides(r, args.set),
        "resolved": _resolved(d / f"work-{cfg.run_name}" / "run") if r in ("c", "d") else None,
    }
    (d / f"result-{r}.json").write_text(json.dumps(rec))
    return 0


def profile_steps(first: int, out: Path, title: str, cuda: bool):
    """Profile training steps `first` and `first + 1` (every trainer: the patch is on transformers' Trainer)
    and append the top kernels and ops to `out`, with how busy the GPU was across the two steps. Returns a
    function that finishes the table if training ended before the profiler stopped."""
    import torch
    from transformers import Trainer

    original = Trainer.training_step
    state: dict = {"calls": 0, "prof": None, "t": 0.0}

    def stop() -> None:
        prof = state.pop("prof", None)
        if prof is None:
            return
        if cuda:
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - state["t"]) * 1e6
        prof.__exit__(None, None, None)
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"\n## {title}: steps {first}-{first + 1}, {wall_us / 1e3:.0f} ms wall")
            try:  # a profile is a diagnosis: it never costs the recipe its measurement
                table = prof.key_averages()
                # the kernels themselves: an op's row also carries the device time of the kernels it launched
                kernels = [e for e in table if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
                busy = sum(e.self_device_time_total for e in kernels)
                counts = {e.key: e.count for e in table}  # a tensor read on the host (.item(), if t) waits for it
                syncs = (f"{counts.get('aten::_local_scalar_dense', 0)} tensors read on the host, "
                         f"{counts.get('cudaStreamSynchronize', 0)} stream syncs")
                f.write(f", kernels busy {busy / 1e3:.0f} ms = {100 * busy / wall_us:.0f} % of it; {syncs}\n"
                        if cuda else "\n")
                sort = "self_device_time_total" if cuda else "self_cpu_time_total"
                f.write(table.table(sort_by=sort, row_limit=45, max_name_column_width=90) + "\n")
                if cuda:  # the GPU's idle gaps, each with what the host ran meanwhile and the kernel that ended it
                    f.write(f"\n### {title}: where the GPU idled\n" + gaps_table(prof.events()) + "\n")
                if cuda:  # where the host's time goes: what the GPU waits on where it idles
                    f.write(f"\n### {title}: host time\n"
                            + table.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=90) + "\n")
            except Exception as e:  # noqa: BLE001
                f.write(f"\nno table: {type(e).__name__}: {e}\n")

    def step(self, *args, **kwargs):
        state["calls"] += 1
        if state["calls"] == first:
            acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            state["prof"] = torch.profiler.profile(activities=acts)
            if cuda:
                torch.cuda.synchronize()
            state["t"] = time.perf_counter()
            state["prof"].__enter__()
        elif state["calls"] == first + 2:
            stop()
        return original(self, *args, **kwargs)

    Trainer.training_step = step
    return stop


def _or_dash(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"  # a record rebuilt from a printed line has no load average


def idle_gaps(kernels: list[tuple[float, float, str]], ops: list[tuple[float, float, str]], top: int = 15,
              least: float = 20.0) -> tuple[float, float, list[tuple[float, float, str, str]]]:
    """From kernels' and host ops' (start, end, name) in microseconds: the span from the first kernel to the
    last, the time no kernel ran, and the `top` longest gaps of at least `least` us as (start from the first
    kernel, length, the host ops overlapping the gap most, the kernel after it)."""
    kernels = sorted(kernels)
    if not kernels:
        return 0.0, 0.0, []
    gaps, end, idle = [], kernels[0][1], 0.0
    for k0, k1, name in kernels[1:]:
        if k0 > end:
            idle += k0 - end
            if k0 - end >= least:
                gaps.append((end, k0, name))
        end = max(end, k1)
    out = []
    for g0, g1, after in sorted(gaps, key=lambda g: g[0] - g[1])[:top]:
        overlap: dict[str, float] = {}
        for o0, o1, name in ops:
            if o0 < g1 and o1 > g0:
                overlap[name] = overlap.get(name, 0.0) + min(o1, g1) - max(o0, g0)
        host = ", ".join(f"{n} {t:.0f}" for n, t in sorted(overlap.items(), key=lambda x: -x[1])[:3]) or "no op"
        out.append((g0 - kernels[0][0], g1 - g0, host, after))
    return end - kernels[0][0], idle, out


def gaps_table(events) -> str:
    """`idle_gaps` of a torch profile's events, as lines."""
    import torch

    kernels, ops = [], []
    for e in events:
        span = (e.time_range.start, e.time_range.end, e.name)
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA:
            kernels.append(span)
        elif not e.name.startswith(("cuda", "ProfilerStep")):  # runtime calls say launch, not what launched
            ops.append(span)
    span, idle, gaps = idle_gaps(kernels, ops)
    lines = [f"kernels' span {span / 1e3:.1f} ms, no kernel running {idle / 1e3:.1f} ms of it "
             f"({100 * idle / max(span, 1):.0f} %); the longest gaps (us: at, length, host ops overlapping it "
             f"with their overlap, the kernel after):"]
    lines += [f"{at / 1e3:9.2f} ms {length:8.0f}  {host[:150]}  -> {after[:60]}" for at, length, host, after in gaps]
    return "\n".join(lines)


def _peak_tflops(name: str | None) -> float | None:
    for key, tf in PEAK_TFLOPS:
        if name and key in name:
            return tf
    return None


def flops_per_token(mc: dict, cfg, trainable: int, d: Path) -> float:
    """Model FLOPs per trained token: 6N (full) or 4N + 6*adapter (LoRA), plus attention (PaLM's 12*L*q*s)."""
    from engine.estimate import arch, count_params

    a, c = arch(mc), count_params(mc)
    n = c["total"] - c["embedding"] + (c["embedding"] if a.tied else 0)  # the lookup costs nothing; the head does
    dense = 6 * n if cfg.adapter.method == "full" else 4 * n + 6 * trainable
    lens = [len(json.loads(x)["text"].split()) + 1 for x in open(d / "stream.jsonl", encoding="utf-8")]
    lens = [min(x, cfg.data.max_length) for x in lens]
    token_weighted_len = sum(x * x for x in lens) / sum(lens)  # a token attends over its row's length
    return dense + 12 * a.layers * a.q_dim * token_weighted_len


def _resolved(run_dir: Path) -> dict | None:
    """What the engine decided for an engine recipe (its run's resolved.json), so a line says what it measured."""
    keys = ("precision", "attn_implementation", "optim", "packing", "padding_free", "liger", "gradient_checkpointing",
            "upcast_norms", "fused_lora", "compile", "compile_stats")
    try:
        data = json.loads((run_dir / "resolved.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: data[k] for k in keys if k in data}


def train_engine(cfg, d: Path, cuda: bool) -> tuple[list[dict], str]:
    """c / d: the engine's own path, timed from the events it emits."""
    from engine.events import Error, LogStep
    from engine.train import run_training

    steps, last = [], [time.perf_counter()]

    def emit(ev):
        if isinstance(ev, LogStep) and ev.loss is not None:
            now = time.perf_counter()
            dt = now - last[0]
            last[0] = now
            steps.append({"seconds": dt, "tokens": (ev.tokens_per_second or 0) * dt, "loss": ev.loss})
        elif isinstance(ev, Error):
            print(ev.message, file=sys.stderr)

    workdir = d / f"work-{cfg.run_name}"
    run_training(cfg, workdir / "run", emit=emit, workdir=workdir)
    fallback = "" if cuda else "fp32, adamw_torch (the engine's CPU choice)"
    return steps, fallback


def train_plain(r: str, cfg, args, d: Path, cuda: bool) -> tuple[list[dict], str]:
    """a / b: transformers' Trainer + peft, configured as those recipes were."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(d / "model")
    ds = datasets.load_dataset("json", data_files=str(d / "stream.jsonl"), split="train").shuffle(seed=args.seed)
    ds = ds.map(lambda b: tok([t + " <eos>" for t in b["text"]], truncation=True, max_length=args.seq),
                batched=True, remove_columns=["text"])
    ad = cfg.adapter
    fallback = []
    if r == "a":
        dtype = torch.float16 if cuda else torch.float32
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=dtype, quantization_config=q,
                                                     attn_implementation="eager", device_map={"": 0} if cuda else "cpu")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
        optim, mixed = ("paged_adamw_32bit", {"fp16": True}) if cuda else ("adamw_torch", {})
        if not cuda:
            fallback += ["fp32 (not fp16)", "adamw_torch (not paged 32-bit)"]
    else:
        dtype = torch.bfloat16 if cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=dtype, attn_implementation="sdpa")
        model.to("cuda" if cuda else "cpu")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        optim, mixed = ("adamw_8bit", {"bf16": True}) if cuda else ("adamw_torch", {})
        if not cuda:
            fallback += ["fp32 (not bf16)", "adamw_torch (not 8-bit)"]
    targets = "all-linear" if ad.target_modules == ["all-linear"] else ad.target_modules
    model = get_peft_model(model, LoraConfig(r=ad.rank, lora_alpha=ad.alpha, lora_dropout=ad.dropout,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.config.use_cache = False

    def collate(rows):  # padded to the longest row of the batch; the loss ignores the padding
        n = max(len(x["input_ids"]) for x in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, x in enumerate(rows):
            ids[i, : len(x["input_ids"])] = torch.tensor(x["input_ids"])
            mask[i, : len(x["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    steps: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            steps.append({"seconds": time.perf_counter() - self.t, "tokens": state.num_input_tokens_seen - self.seen})

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps:
                steps[-1]["loss"] = logs["loss"]

    t = cfg.training
    targs = TrainingArguments(
        output_dir=str(d / f"out-{r}"), max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=1, learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=0, max_grad_norm=t.max_grad_norm, optim=optim, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=t.seed, use_cpu=not cuda, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", **mixed)
    Trainer(model=model, args=targs, train_dataset=ds, data_collator=collate, callbacks=[Clock()]).train()
    return [s for s in steps if "loss" in s], ", ".join(fallback)


# ---- data speed -------------------------------------------------------------------------------------


def data_speed(args) -> int:
    """The engine's own data path on `--rows` alpaca rows: read + check + normalise, then the preparation.

    The file is alpaca JSONL (instruction/output drawn from the bundled corpus, log-normal lengths); the
    tokenizer is the demo's byte-level BPE with its ChatML template. Preparation is what the engine runs
    before the model loads (`sft.prepare_data`): chat template + batched tokenisation, answer-only labels,
    cut to the cutoff, then trl's bfd packing. Timed with the engine's choice of processes
    (`engine.sft.num_proc`), then with one: in that order, so that the worker processes start before
    this process has used the tokenizer's own threads (it turns them off in children forked after that).
    """
    import datasets
    import numpy as np
    import trl.chat_template_utils  # noqa: F401 - imported here, so that its import is not timed as preparation
    import trl.data_utils  # noqa: F401

    from engine import sft
    from engine.config import RunConfig
    from engine.data import load_training_data
    from engine.demo import build_tokenizer
    from engine.paths import DATA

    datasets.disable_progress_bars()
    corpus = [p for p in (DATA / "demo_pt.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    tok = build_tokenizer(corpus)  # the demo's byte-level BPE with a ChatML template, trained in a second
    words = " ".join(corpus).split()
    rng = np.random.default_rng(args.seed)
    n_words = np.clip(rng.lognormal(math.log(24), 0.8, size=(args.rows, 2)), 2, 1024).astype(int)
    starts = rng.integers(0, len(words), size=(args.rows, 2))

    def say(start: int, k: int) -> str:
        return " ".join(words[(start + j) % len(words)] for j in range(k))

    report = {"rows": args.rows, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": args.machine, "cpu_count": os.cpu_count(), "seq": args.seq, "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="tb-data-") as tmp:
        path = Path(tmp) / "alpaca.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for (a, b), (x, y) in zip(starts.tolist(), n_words.tolist(), strict=True):
                f.write(json.dumps({"instruction": say(a, x), "input": "", "output": say(b, y)}) + "\n")
        cfg = RunConfig.from_dict({"stage": "sft", "data": {"datasets": [{"path": str(path)}], "max_length": args.seq,
                                                            "packing": True}, "training": {"max_steps": 1}})
        t = time.perf_counter()
        train, _ = load_training_data(cfg)
        report["load_s"] = time.perf_counter() - t
        auto = sft.num_proc(len(train))
        for label, n in (("auto", auto), ("np1", 1)) if auto else (("np1", 1),):  # too few rows: one process
            cfg.data.num_proc = n
            t = time.perf_counter()
            prepared, _ = sft.prepare_data(tok, train, None, cfg, packing=True)
            report[f"prepare_s_{label}"] = time.perf_counter() - t
        report.setdefault("prepare_s_auto", report["prepare_s_np1"])
        report["num_proc_auto"] = auto or 1
        report["packed_rows"] = len(prepared.dataset)
        report["tokens"] = int(sum(sum(x) for x in prepared.dataset["seq_lengths"]))
    best = report["prepare_s_auto"]
    print(f"data: {args.rows:,} alpaca rows, {report['tokens']:,} tokens -> {report['packed_rows']:,} packed rows of "
          f"{args.seq}; read+check+normalise {report['load_s']:.1f}s; template+tokenise+labels+pack "
          f"{report['prepare_s_np1']:.1f}s (1 proc) / {best:.1f}s ({report['num_proc_auto']} procs); "
          f"{report['tokens'] / best:,.0f} tokens/s")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"recipe": "data-speed", **report}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
