"""The Benchmark page measures what the CLI measures: the page's run (its job runs `python -m
vtcore bench` in a child process while the page polls, rerunning its script as the live fragment
does) and then the CLI with the same settings, one after the other, side by side.

    python benchmarks/bench_page.py                 # the page's defaults on the default pair
    python benchmarks/bench_page.py --order cli-first --prompts 4

Prints target ms per step and tokens/s of each method for both, and page/CLI ratios (goal:
within 15%). The page runs through streamlit.testing.v1.AppTest in this process: every poll is a
full rerun of pages/5_Benchmark.py, the work a real server does for a watching browser.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
POLL_S = 0.7   # vtapp.common.POLL_S: the page's polling interval while a job runs


def page_run(args) -> tuple[dict, int]:
    """Start the benchmark from the page and poll it like a browser would; (result, reruns)."""
    from streamlit.testing.v1 import AppTest

    from vtcore.bench import load_results

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()   # pages run under the app
    at.switch_page("pages/5_Benchmark.py").run()
    at.number_input(key="bench_prompts").set_value(args.prompts)
    at.number_input(key="bench_repeats").set_value(args.repeats)
    at.number_input(key="bench_new").set_value(args.max_new_tokens)
    at.number_input(key="bench_threads").set_value(args.threads)
    at.selectbox(key="bench_device").set_value("cpu")
    at.run()
    before = len(load_results())
    at.button(key="bench_run").click().run()
    reruns = 0
    while at.get("progress"):
        time.sleep(POLL_S)
        at.run()
        reruns += 1
    assert not at.error, [e.value for e in at.error]
    runs = load_results()
    assert len(runs) == before + 1, "the page's run did not reach the results store"
    return runs[-1].to_dict(), reruns   # the stored run, as the CLI's JSON


def cli_run(args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vtcore", "bench", "--prompts", str(args.prompts), "--repeats", str(args.repeats),
           "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads), "--device", "cpu", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    from vtcore.benchtypes import BenchConfig

    d = BenchConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=d.prompts)
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="the page's default")
    ap.add_argument("--order", choices=["page-first", "cli-first"], default="page-first")
    args = ap.parse_args()
    os.environ["VTCORE_WORKSPACE"] = os.environ.get("VTCORE_WORKSPACE") or tempfile.mkdtemp(prefix="bench-page-")

    t0 = time.perf_counter()
    if args.order == "page-first":
        page, reruns = page_run(args)
        cli = cli_run(args)
    else:
        cli = cli_run(args)
        page, reruns = page_run(args)
    print(f"default pair ({page['draft']}, {page['draft_kind']}), {args.prompts} prompts x {args.repeats} repeats x "
          f"{args.max_new_tokens} tokens, {args.threads} thread(s); the page polled {reruns} times; "
          f"{time.perf_counter() - t0:.0f} s in all ({args.order})")
    print(f"k page {page['k']:,} / CLI {cli['k']:,}, gamma {page['gamma']} / {cli['gamma']}, identical outputs "
          f"{page['identical_outputs']} / {cli['identical_outputs']}")
    print(f"{'':28} {'page':>10} {'CLI':>10} {'page/CLI':>9}")
    worst = 0.0
    for m in ("target_only", "full", "trimmed"):
        for key, label in (("target_ms_per_step", "target ms/step"), ("tokens_per_s", "tokens/s")):
            a, b = page[m][key], cli[m][key]
            worst = max(worst, abs(a / b - 1))
            print(f"{m + ' ' + label:28} {a:10.2f} {b:10.2f} {a / b:8.2f}x")
    for name in ("trimmed_vs_full", "trimmed_vs_target"):
        print(f"{name:28} {page['speedup_' + name]:10.2f} {cli['speedup_' + name]:10.2f}   "
              f"page {page['verdict_' + name]} / CLI {cli['verdict_' + name]}")
    print(f"largest page/CLI difference {worst:.0%}: {'within' if worst <= 0.15 else 'OUTSIDE'} the 15% goal")


if __name__ == "__main__":
    main()
