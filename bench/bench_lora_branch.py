"""LoRA's branch, peft's against the engine's fused one (engine/lora_fused.py), on a few decoder layers of a
published shape: milliseconds per forward + backward at a packed step's token count, same inputs, same weights,
and the same layers without an adapter (what the branch itself costs).

    python bench/bench_lora_branch.py --shape llama-2-7b --layers 2 --tokens 4096   # GPU: seconds
    python bench/bench_lora_branch.py --shape tiny --tokens 1024                    # CPU
    python bench/bench_lora_branch.py --shape llama-2-7b --layers 8 --bits 4        # QLoRA's base (NF4)

On a GPU the layers run as the engine trains them: bf16 weights, fp32 adapters (r 8 on every linear layer),
bf16 autocast; on a CPU in fp32. With --bits 4 the base layers are bitsandbytes' NF4 ones with double quant
(the fused path then dequantizes in its own function, `_Lora4bitLinear`). Prints one line per branch and
appends them to `--out` (a JSONL file).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="tiny", help="bench/configs/<shape>.json")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers to run (the shape's own width)")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens a step (one packed row)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--bits", type=int, default=0, choices=(0, 4), help="4: the base in NF4 (QLoRA)")
    ap.add_argument("--repeat", type=int, default=20, help="timed steps after 3 warm-up steps")
    ap.add_argument("--machine", default=os.environ.get("TB_MACHINE", "dev"))
    ap.add_argument("--out", type=Path, help="append each line to this JSONL file")
    args = ap.parse_args()

    import torch
    from bench_train import random_model
    from peft import LoraConfig, get_peft_model

    from engine.adapters import cast_inputs_only_without_autocast
    from engine.lora_fused import fuse_lora_layers

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    base = random_model(args.shape, seed=0, layers=args.layers)
    config, dtype = base.config, base.dtype
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules="all-linear")
    for p in base.parameters():
        p.requires_grad_(False)
    tmp = tempfile.TemporaryDirectory() if args.bits else None
    if tmp:  # QLoRA's base: NF4 with double quant, bitsandbytes' layers, as the engine loads it
        base.save_pretrained(tmp.name)
        del base

    def fresh():
        if not tmp:
            return copy.deepcopy(base)
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        from engine.model import keep_cpu_4bit_layout

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
        m = AutoModelForCausalLM.from_pretrained(tmp.name, quantization_config=q, dtype=dtype, device_map=device)
        keep_cpu_4bit_layout(m, True)
        return m

    models = {"none": fresh().train().model}  # no adapter: what the frozen layers cost alone
    for name in ("peft", "fused"):
        torch.manual_seed(1)
        m = cast_inputs_only_without_autocast(get_peft_model(fresh(), lora)).train()
        if name == "fused":
            fuse_lora_layers(m)
        models[name] = m.get_base_model().model  # the decoder stack, without the LM head
    base = None
    hidden = torch.randn(1, args.tokens, config.hidden_size, device=device, dtype=dtype, requires_grad=True)
    positions = torch.arange(args.tokens, device=device)[None]

    def step(core) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            out = core(inputs_embeds=hidden, position_ids=positions).last_hidden_state
        out.float().square().mean().backward()

    def timed(core) -> list[float]:
        for _ in range(3):
            step(core)
        times = []
        for _ in range(args.repeat):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            step(core)
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t) * 1000)
        return times

    results = {}
    for _ in range(2):  # alternate, so that clocks and caches treat both alike
        for name, core in models.items():
            results.setdefault(name, []).extend(timed(core))
    device_name = torch.cuda.get_device_name() if cuda else f"CPU x{os.cpu_count()}"
    for name, times in results.items():
        ms = statistics.median(times)
        line = {"recipe": f"lora-branch-{name}", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"), "machine": args.machine, "device": device_name, "shape": args.shape,
                "layers": args.layers, "tokens": args.tokens, "rank": args.rank, "bits": args.bits, "ms_per_step": ms,
                "ms_per_layer": ms / args.layers, "torch": torch.__version__}
        print(f"lora branch {name:<5} {args.shape}{' 4-bit' * bool(args.bits)} x{args.layers} layers, {args.tokens} "
              f"tokens: {ms:8.2f} ms a step "
              f"(fwd + bwd), {ms / args.layers:7.2f} ms a layer  [{device_name}]", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")
    none, peft, fused = (statistics.median(results[k]) for k in ("none", "peft", "fused"))
    print(f"lora branch: fused {peft / fused:.3f}x peft's speed; the branch adds {peft - none:.2f} ms to the frozen "
          f"layers' {none:.2f} ms with peft, {fused - none:.2f} ms fused", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
