"""How fast the board serves its page, and how much memory its process holds (no torch in it).

    python bench/bench_board.py [--runs 3] [--browser] [--record]

Starts `python -m engine.cli --port P --workdir TMP` the way `tuneboard` does, and measures:
  serve_s     process start -> first HTTP 200 on /            (target < 3 s on 2 CPU cores)
  rss_mb      the board process's resident memory at that point (target < 250 MB)
  rss_open_mb after a real page has opened and run its load handlers (--browser, Chromium)
  torch_mapped whether any libtorch / libc10 is mapped into the process (must be false)
--record appends the result to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def torch_mapped(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any(lib in maps for lib in ("libtorch", "libc10", "libtorch_cpu"))


def open_page(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#model-name", timeout=60_000)
        page.click("#data-tab-button")  # the data check has run when its summary shows
        page.wait_for_function(
            "() => document.querySelector('#data-summary')?.textContent.trim().length > 0", timeout=60_000
        )
        browser.close()


def one(browser: bool) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as work:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEBOARD_HOME": work, "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "--port", str(port), "--workdir", work],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:])
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("no page after 60 s")
                time.sleep(0.02)
            out = {"serve_s": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_mb(proc.pid), 1)}
            if browser:
                open_page(url)
                time.sleep(1)
                out["rss_open_mb"] = round(rss_mb(proc.pid), 1)
            out["torch_mapped"] = torch_mapped(proc.pid)
            return out
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--browser", action="store_true", help="also open the page in Chromium and measure again")
    ap.add_argument("--record", action="store_true", help="append the result to bench/results.jsonl")
    args = ap.parse_args()
    runs = [one(args.browser) for _ in range(args.runs)]
    result = {
        "bench": "board",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "serve_s_median": statistics.median(r["serve_s"] for r in runs),
        "rss_mb_median": statistics.median(r["rss_mb"] for r in runs),
        "torch_mapped": any(r["torch_mapped"] for r in runs),
        "runs": runs,
    }
    if args.browser:
        result["rss_open_mb_median"] = statistics.median(r["rss_open_mb"] for r in runs)
    print(json.dumps(result, indent=1))
    if args.record:
        with open(ROOT / "bench" / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 1 if result["torch_mapped"] else 0


if __name__ == "__main__":
    sys.exit(main())
