"""Time `tuneboard check` on a generated 100,000-row alpaca JSONL (a benchmark, not a test).

Usage: python bench/bench_check.py [--rows N] [--model demo|PATH|none] [--max-length N]
Prints one JSON line per phase (read, check, report, and the whole `tuneboard check FILE` command in a fresh
process, start-up included) with seconds; appends nothing anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data import analyze, check_file, read_source  # noqa: E402
from engine.data.tokens import load_tokenizer  # noqa: E402

WORDS = "the a model learns from data every row is checked before any GPU time is spent".split()
KO = "모델은 데이터에서 배웁니다 모든 행을 학습 전에 확인합니다".split()


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = KO if i % 3 == 0 else WORDS
            row = {"instruction": " ".join(rng.choices(words, k=rng.randint(5, 30))) + f" #{i}",
                   "input": "" if i % 2 else " ".join(rng.choices(words, k=8)),
                   "output": " ".join(rng.choices(words, k=rng.randint(10, 80)))}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--model", default="demo", help="tokenizer: demo, a folder, or none (estimates)")
    p.add_argument("--max-length", type=int, default=1024)
    args = p.parse_args()
    tokenizer = None if args.model == "none" else load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alpaca.jsonl"
        write_rows(path, args.rows)
        t0 = time.perf_counter()
        src = read_source(str(path))
        t1 = time.perf_counter()
        result = analyze(src.rows, numbers=src.numbers, tokenizer=tokenizer, max_length=args.max_length)
        t2 = time.perf_counter()
        report = check_file(str(path), tokenizer=tokenizer, max_length=args.max_length)
        t3 = time.perf_counter()
        model = [] if args.model in ("demo", "none") else ["--model", args.model]
        subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path), "--max-length", str(args.max_length),
                        *model], cwd=ROOT, capture_output=True, check=False)
        t4 = time.perf_counter()
    tok = "estimate" if tokenizer is None else type(tokenizer).__name__
    for phase, secs in (("read", t1 - t0), ("check", t2 - t1), ("check_file (read+check+preview)", t3 - t2),
                        ("tuneboard check FILE (fresh process)", t4 - t3)):
        print(json.dumps({"rows": args.rows, "tokenizer": tok, "phase": phase, "seconds": round(secs, 2)}))
    print(json.dumps({"format": report.format, "errors": report.errors, "warnings": report.warnings,
                      "findings": len(result.findings), "p50_tokens": report.stats.get("p50")}))


if __name__ == "__main__":
    main()
