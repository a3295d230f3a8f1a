"""Peak memory of `count` and `validate` on hostile inputs, each run as its own process.

    python benchmarks/bench_memory.py [--mb 50] [--ids 150000000] [--timeout 600] [--keep DIR] [--bombs-only]

Builds the inputs in a temporary folder: a JSONL file that is one 50 MB line (one conversation
whose answer is 50 MB of text), the same line with --max-row-mb 16 (refused by the row cap), a
.jsonl that is a symlink to /dev/zero, a FIFO named .jsonl, and an SGLang token map of --ids
int64 ids (150 M: a 1.2 GB file; ids drawn in [0, 151936), so most repeat). Each command runs as
a subprocess with its own workspace; its peak RSS comes from os.wait4 (the kernel's ru_maxrss of
that child alone). Prints one line per case: exit status, seconds, peak RSS, the error line.

Before the row cap and bounded reads: the 50 MB line peaked at 18.7 GB (183 s), /dev/zero grew until
MemoryError, the FIFO hung, validate on 150 M ids reached 12.7 GB and ran past 5 minutes.
The goal: count under 2 GB on the 50 MB line (or refused with the cap named).

Then the tiny-file bombs (also alone with --bombs-only): a counts .npz of a few MB that inflates to
2.3 GB (coverage reached 7.0 GB before the header and member checks), a 1 KB .npy whose header
claims 5e10 ids and a zip named .npy (validate: tracebacks), profile --context 2000000 (6.4 GB),
optimize --gamma-max 1000000 (asked for 1.1 TiB), and a torch token map of a few MB that inflates
to 2.3 GB, through validate and bench --token-map (4.5 GB before): each must be one line, well
under 2 GB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the quick brown fox jumps over a lazy dog while def return import numpy as np for i in "
         "range(10): print(i) if x else y").split()


def one_line_jsonl(path: Path, mb: int) -> None:
    """One row, a user turn and a `mb` MB assistant answer (words, a line break now and then),
    written piece by piece: this process stays small (see run())."""
    rng = random.Random(0)
    with open(path, "w") as f:
        f.write('{"messages": [{"role": "user", "content": "Write a lot."}, {"role": "assistant", "content": "')
        size = 0
        while size < mb * 1_000_000:
            w = rng.choice(WORDS) + ("\\n" if rng.random() < 0.02 else " ")
            f.write(w)
            size += len(w)
        f.write('"}]}\n')


TOKEN_MAP = """
import sys, torch
n, path = int(sys.argv[1]), sys.argv[2]
torch.save(torch.randint(0, 151936, (n,), dtype=torch.int64, generator=torch.Generator().manual_seed(0)), path)
"""


def token_map(path: Path, n: int) -> None:
    """n ids in [0, 151936): made in a child process, so this one never holds them (see run())."""
    subprocess.run([sys.executable, "-c", TOKEN_MAP, str(n), str(path)], check=True)


def npy_header(shape: tuple, descr: str = "<i8") -> bytes:
    import io

    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def deflated_counts(path: Path, gb: float, V: int = 151669) -> None:
    """A counts .npz of a few MB whose counts_by_domain member inflates to `gb` GB of zeros,
    streamed through the deflater in pieces (this process stays small)."""
    import zipfile

    rows = int(gb * 1e9 / (8 * V))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("counts.npy", npy_header((V,)) + b"\0" * (8 * V))
        z.writestr("manifest.npy", npy_header((), "<U2") + "{}".encode("utf-32-le"))
        with z.open("counts_by_domain.npy", "w", force_zip64=True) as f:
            f.write(npy_header((rows, V)))
            block = b"\0" * (8 << 20)
            left = rows * V * 8
            while left > 0:
                f.write(block[:left])
                left -= len(block)


DEFLATED_MAP = """
import io, sys, zipfile, torch
gb, path = float(sys.argv[1]), sys.argv[2]
buf = io.BytesIO()
torch.save(torch.arange(4), buf)
with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for info in src.infolist():
        if not info.filename.endswith("/data/0"):
            z.writestr(info.filename, src.read(info))
            continue
        with z.open(info.filename, "w", force_zip64=True) as f:   # the tensor's storage: GBs of zeros
            block, left = bytes(8 << 20), int(gb * 1e9)
            while left > 0:
                f.write(block[:left])
                left -= len(block)
"""


def deflated_token_map(path: Path, gb: float) -> None:
    """A torch.save token map of a few MB whose storage member inflates to `gb` GB (bench
    --token-map reached 4.5 GB on such a file): made in a child process (see run())."""
    subprocess.run([sys.executable, "-c", DEFLATED_MAP, str(gb), str(path)], check=True)


def bomb_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """Tiny files (and flags) that once took the machine: each must now be one line, small."""
    import zipfile

    bomb, within = tmp / "counts-bomb.npz", tmp / "counts-within.npz"
    if not bomb.exists():
        deflated_counts(bomb, 2.3)
    if not within.exists():
        deflated_counts(within, 0.5)   # just within the default 512 MB: read, checked, refused by content
    claim = tmp / "d2t-5.npy"
    claim.write_bytes(npy_header((50_000_000_000,)) + b"\0" * 64)
    (tmp / "t2d-5.npy").write_bytes(npy_header((50_000_000_000,), "|b1") + b"\0" * 64)
    zipped = tmp / "zipped" / "d2t-3.npy"
    zipped.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("x.npy", npy_header((3,)) + b"\0" * 24)
    (zipped.parent / "t2d-3.npy").write_bytes(npy_header((3,), "|b1") + b"\0" * 3)
    tmap = tmp / "token_map_deflated.pt"
    if not tmap.exists():
        deflated_token_map(tmap, 2.3)
    size = bomb.stat().st_size / 1e6
    return [
        (f"coverage, counts .npz of {size:.1f} MB -> 2.3 GB", ["coverage", "--counts", str(bomb), "--json"]),
        (f"coverage, counts .npz of {within.stat().st_size / 1e6:.1f} MB -> 0.5 GB",
         ["coverage", "--counts", str(within), "--json"]),
        ("validate, 1 KB .npy claiming 5e10 ids", ["validate", str(claim), "--json"]),
        ("validate, a zip named .npy", ["validate", str(zipped), "--json"]),
        ("profile --context 2000000", ["profile", "--draft", "qwen3-0.6b", "--context", "2000000", "--json"]),
        ("optimize --gamma-max 1000000", ["optimize", "--counts", str(bomb), "--draft", "qwen3-0.6b",
                                          "--objective", "speedup", "--gamma-max", "1000000", "--json"]),
        (f"validate, torch token map of {tmap.stat().st_size / 1e6:.1f} MB -> 2.3 GB",
         ["validate", str(tmap), "--json"]),
        # the embedded SmolLM2 pair loads first (its RSS is the floor here); --gamma skips the calibration
        (f"bench --token-map, the same {tmap.stat().st_size / 1e6:.1f} MB map",
         ["bench", "--token-map", str(tmap), "--gamma", "2", "--prompts", "1", "--no-save", "--json"]),
    ]


def run(args: list[str], ws: Path, timeout: float) -> dict:
    """One `python -m vtcore ...` process: exit status, seconds, peak RSS (MB), its error line.
    Linux counts the RSS a child had when forked from this process in its ru_maxrss: this
    process must stay small (it builds the big inputs in pieces or in other processes)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VTCORE_WORKSPACE": str(ws), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "vtcore", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        status = None
        while status is None:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(code)
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                _, code, usage = os.wait4(proc.pid, 0)
                status = "timeout"
                break
            time.sleep(0.05)
        proc.returncode = status if isinstance(status, int) else -9
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.startswith(("error:", "warning:"))]
    return {"exit": status, "seconds": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024,
            "message": lines[0][:150] if lines else ""}


def report(cases: list[tuple[str, list[str]]], tmp: Path, timeout: float) -> None:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"inputs in {tmp}; python {sys.version.split()[0]}; each case a fresh process (this one: "
          f"{own:.0f} MB peak, a floor for the figures below)", flush=True)
    print(f"{'case':58} {'exit':>7} {'seconds':>8} {'peak RSS':>10}  first error / warning line")
    for label, argv in cases:
        ws = tmp / "ws"
        r = run(argv, ws, timeout)
        shutil.rmtree(ws, ignore_errors=True)
        print(f"{label:58} {str(r['exit']):>7} {r['seconds']:8.1f} {r['peak_rss_mb']:8.0f} MB  {r['message']}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50, help="size of the one-line JSONL (default 50)")
    ap.add_argument("--ids", type=int, default=150_000_000, help="ids in the big token map (default 150 M)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a case is killed (default 600)")
    ap.add_argument("--keep", default=None, help="build the inputs here and keep them (default: a temp folder)")
    ap.add_argument("--bombs-only", action="store_true", help="only the tiny-file bombs (no 50 MB line, no 1.2 GB map)")
    args = ap.parse_args()

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="vt-bench-memory-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if args.bombs_only:
            report(bomb_cases(tmp), tmp, args.timeout)
            return
        line = tmp / f"one-line-{args.mb}mb.jsonl"
        if not line.exists():
            one_line_jsonl(line, args.mb)
        zero = tmp / "zero.jsonl"
        if not zero.is_symlink():
            zero.symlink_to("/dev/zero")
        fifo = tmp / "fifo.jsonl"
        if not fifo.exists():
            os.mkfifo(fifo)
        tmap = tmp / f"token_map_sglang_k{args.ids}.pt"
        if not tmap.exists():
            token_map(tmap, args.ids)
        cases = [
            (f"count, one {args.mb} MB line", ["count", "--data", str(line), "--no-cache", "--json"]),
            (f"count, one {args.mb} MB line, --max-row-mb 16",
             ["count", "--data", str(line), "--no-cache", "--max-row-mb", "16", "--json"]),
            ("count, .jsonl -> /dev/zero", ["count", "--data", str(zero), "--json"]),
            ("count, FIFO .jsonl", ["count", "--data", str(fifo), "--json"]),
            (f"validate, {args.ids / 1e6:,.0f} M ids ({tmap.stat().st_size / 1e9:.2f} GB), V 151936",
             ["validate", str(tmap), "--vocab-size", "151936", "--json"]),
        ]
        report(cases + bomb_cases(tmp), tmp, args.timeout)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
