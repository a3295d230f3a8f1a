"""Measured latency profiles: the draft's real step time at a grid of head sizes k.

The FLOPs proxy ignores memory bandwidth. At batch 1 a draft step reads every weight once, and
the LM head is usually the biggest matrix, so once a trimmed head fits in cache its rows get
cheaper than the full head's: latency can fall faster than FLOPs. A profile measures it.

What is timed (weights are random: latency does not depend on their values):
- step(k): one draft decoding step with a KV cache of `context` tokens: the model body for one
  token (transformers' own model for decoders; for EAGLE-3 vtcore.eagle3's own draft, the forward
  the benchmark runs: fc + one layer whose Q/K/V take 2*hidden inputs, the config's RoPE), then
  the head as a k-row matrix and the greedy argmax.
  Consecutive steps at one k run back to back, as the gamma steps of one draft round do.
- head(k): the head matmul + argmax alone.
Each k: warm-up, then repeats spread over rounds (grid order alternating), median.
R_measured(k) = 1 - step(k) / step(V), linear between grid points (flat below the first).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtcore.cost import DraftArch, latency_reduction as flops_reduction
from vtcore.errors import VTError
from vtcore.files import atomic_file, memory_available, read_json

FORMAT = "vtcore-latency-profile/1"
DTYPES = ("float32", "bfloat16", "float16")


def default_grid(vocab: int) -> list[int]:
    """Powers of two from 256 up to below V, and V itself."""
    ks = [k for k in (256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072) if k < vocab]
    return ks + [vocab]


@dataclass
class LatencyProfile:
    draft: str
    vocab_size: int
    hidden: int
    device: str
    device_name: str
    dtype: str
    threads: int
    torch_version: str
    context: int
    ks: list[int]
    step_ms: list[float]
    head_ms: list[float]
    step_ms_p90: list[float] = field(default_factory=list)
    repeats: int = 0
    warmup: int = 0
    timing: str = "perf_counter"
    created: str = ""
    arch: dict = field(default_factory=dict)
    format: str = FORMAT

    def step_at(self, ks: np.ndarray | int) -> np.ndarray:
        return np.interp(np.asarray(ks, dtype=np.float64), self.ks, self.step_ms)

    def head_at(self, ks: np.ndarray | int) -> np.ndarray:
        return np.interp(np.asarray(ks, dtype=np.float64), self.ks, self.head_ms)

    def latency_reduction(self, ks: np.ndarray | int) -> np.ndarray:
        """R_measured(k) = 1 - step(k) / step(V)."""
        return 1.0 - self.step_at(ks) / float(self.step_at(self.vocab_size))

    def check_for(self, arch: DraftArch, where: str = "profile") -> None:
        if self.vocab_size != arch.vocab or self.hidden != arch.hidden:
            raise VTError(f"{where} was measured for {self.draft} (vocab {self.vocab_size:,}, hidden {self.hidden}) "
                          f"but the draft is {arch.name} (vocab {arch.vocab:,}, hidden {arch.hidden})")


def save_profile(path: str | os.PathLike, prof: LatencyProfile, force: bool = False) -> Path:
    """Write atomically; an existing file is replaced only with force (vtcore.files.atomic_file)."""
    path = Path(path)
    with atomic_file(path, force=force) as f:
        f.write((json.dumps(asdict(prof), indent=1) + "\n").encode())
    return path


def load_profile(path: str | os.PathLike) -> LatencyProfile:
    path = Path(path)
    d = read_json(path, "latency profile")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise VTError(f"{path}: not a latency profile (format should be {FORMAT!r}; make one with "
                      "`python -m vtcore profile`)")
    needed = ["draft", "vocab_size", "hidden", "device", "dtype", "context", "ks", "step_ms", "head_ms"]
    missing = [k for k in needed if k not in d]
    if missing:
        raise VTError(f"{path}: latency profile is missing {', '.join(missing)}")
    ks, step = d["ks"], d["step_ms"]
    if len(ks) < 2 or len(ks) != len(step) or len(ks) != len(d["head_ms"]):
        raise VTError(f"{path}: 'ks', 'step_ms' and 'head_ms' must be lists of the same length >= 2")
    if any(b <= a for a, b in zip(ks, ks[1:])):
        raise VTError(f"{path}: 'ks' must be strictly increasing")
    if ks[-1] != d["vocab_size"]:
        raise VTError(f"{path}: the grid must end at the full vocabulary {d['vocab_size']} (ends at {ks[-1]})")
    if any(not (isinstance(t, (int, float)) and t > 0) for t in step):
        raise VTError(f"{path}: 'step_ms' must hold positive numbers")
    known = LatencyProfile.__dataclass_fields__
    return LatencyProfile(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------------------------
# Building a random-weight draft

def _torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise VTError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def _decoder_body(arch: DraftArch, dtype, device):
    """transformers' own base model (no head) with the draft's shapes and a tiny embedding table:
    a lookup costs the same whatever the table's size, and the head is timed separately."""
    from transformers import AutoConfig, AutoModel

    cfg = dict(arch.hf_config)
    if isinstance(cfg.get("text_config"), dict):   # Gemma3ForConditionalGeneration: the text model
        cfg = dict(cfg["text_config"])
        cfg["model_type"] = "gemma3_text"
    model_type = cfg.pop("model_type", None) or arch.family
    for key in ("architectures", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                "transformers_version", "_name_or_path", "auto_map", "quantization_config"):
        cfg.pop(key, None)
    cfg.update(vocab_size=256, tie_word_embeddings=False, use_cache=True, pad_token_id=None, head_dim=arch.head_dim)
    config = AutoConfig.for_model(model_type, **cfg)
    try:
        model = AutoModel.from_config(config, attn_implementation="sdpa")
    except ValueError:   # Gemma 2 soft-caps attention logits: no SDPA kernel, transformers runs it eagerly
        model = AutoModel.from_config(config, attn_implementation="eager")
    return model.to(device=device, dtype=dtype).eval(), config


def _eagle3_body(arch: DraftArch, context: int, dtype, device) -> Callable:
    """The real EAGLE-3 step (vtcore.eagle3.Eagle3Draft: fc over the target's aux states, the one
    layer with the config's RoPE, then the norm the logits read) with random weights, a 256-row
    embedding (a lookup costs the same whatever the table's size; the head is timed apart) and a
    KV cache of `context` random positions, cropped back after each step."""
    import torch

    from vtcore import eagle3
    from vtcore.checkpoints import config_from_dict

    cfg = config_from_dict(arch.hf_config, arch.source)
    draft = eagle3.Eagle3Draft(cfg).to(device=device, dtype=dtype).eval()
    draft.embed_weight = torch.randn(256, cfg.hidden_size, device=device, dtype=dtype)
    cache = eagle3.Eagle3Cache()
    shape = (cfg.num_kv_heads, context, cfg.head_dim)
    cache.append(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype))
    aux = torch.randn(1, cfg.num_aux * cfg.target_hidden_size, device=device, dtype=dtype)
    normed = cfg.norm_logits and not cfg.feed_normed   # as Eagle3Draft.logits reads h_out

    def body(token):
        h = draft(token.reshape(-1)[:1], draft.fuse(aux), cache)
        cache.crop(context)
        return (draft.norm(h) if normed else h).reshape(1, 1, -1)

    body.draft, body.cache = draft, cache   # for inspection (tests)
    return body


def _make_body(arch: DraftArch, context: int, dtype, device) -> Callable:
    """A function token -> last hidden state (1, 1, h) running one draft step with a KV cache of
    `context` tokens, and leaving the cache as it found it."""
    import torch

    if arch.kind == "eagle3":
        return _eagle3_body(arch, context, dtype, device)
    from transformers import StaticCache

    model, config = _decoder_body(arch, dtype, device)
    cache = StaticCache(config=config, max_cache_len=context + 1)
    for i in range(arch.layers):   # random context instead of a prefill: values do not change timing
        shape = (1, arch.kv_heads, context, arch.head_dim)
        cache.update(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype), i)
    pos = torch.tensor([[context]], device=device)

    def body(token):
        out = model(input_ids=token, position_ids=pos, cache=cache, use_cache=True).last_hidden_state
        for layer in cache.layers:   # back to `context` tokens; a full sliding window just rolls
            if getattr(layer, "is_croppable", True):
                layer.crop(-1)
        return out

    body.cache = cache   # for inspection (tests): stays at `context` tokens between steps
    return body


# ---------------------------------------------------------------------------------------------
# Timing

def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_profile(arch: DraftArch, device: str = "cpu", dtype: str | None = None, ks: list[int] | None = None,
                    context: int = 1024, repeats: int | None = None, warmup: int = 3, rounds: int = 3,
                    threads: int | None = None, budget_s: float = 20.0, seed: int = 0,
                    progress: Callable[[float, str], None] | None = None) -> LatencyProfile:
    """Time the draft step and the head alone at every k of the grid; see the module docstring.

    repeats=None picks a count that fits about `budget_s` seconds (at least 5, at most 30)."""
    import torch
    import torch.nn.functional as F

    from vtcore.speculative import Clock

    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    tdtype = _torch_dtype(dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VTError("--device cuda: no CUDA device is available to this torch "
                      f"({torch.__version__}); use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise VTError(f"--device must be cpu or cuda[:N], got {device!r}")
    if context < 1:
        raise VTError(f"--context must be >= 1, got {context}")
    V = arch.vocab
    need = 2 * arch.layers * arch.kv_heads * arch.head_dim * (context + 1) * tdtype.itemsize
    free = memory_available()
    if device == "cpu" and free is not None and need > free // 2:   # the KV cache of `context` tokens
        raise VTError(f"--context {context:,}: the profile's KV cache needs {need / 2**20:,.0f} MB, more than half "
                      f"of this machine's available memory ({free / 2**20:,.0f} MB); lower --context")
    ks = sorted(set(int(k) for k in (ks or default_grid(V))) | {V})
    bad = [k for k in ks if not 1 <= k <= V]
    if bad:
        raise VTError(f"--ks values must be between 1 and the vocabulary size {V:,}: {bad}")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(seed)
        with torch.inference_mode():
            body = _make_body(arch, context, tdtype, device)
            head = torch.randn(V, arch.hidden, device=device, dtype=tdtype) * 0.02
            token = torch.randint(0, 256, (1, 1), device=device)
            timer = Clock(torch.device(device)).time_ms
            hs = body(token)[:, -1]

            def step(k: int):
                return F.linear(body(token)[:, -1], head[:k]).argmax(-1)   # head[:k] is contiguous

            def head_only(k: int):
                return F.linear(hs, head[:k]).argmax(-1)

            for _ in range(warmup):
                step(V)
            if repeats is None:
                t_full = statistics.median(timer(lambda: step(V)) for _ in range(3)) / 1e3
                repeats = int(min(30, max(5, budget_s / max(t_full * 2 * len(ks), 1e-9))))
            per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
            steps: dict[int, list[float]] = {k: [] for k in ks}
            heads: dict[int, list[float]] = {k: [] for k in ks}
            done, total = 0, repeats * len(ks)
            for r, n in enumerate(per_round):
                for k in (ks if r % 2 == 0 else ks[::-1]):
                    for _ in range(warmup):
                        step(k)
                    steps[k] += [timer(lambda: step(k)) for _ in range(n)]
                    heads[k] += [timer(lambda: head_only(k)) for _ in range(n)]
                    done += n
                    if progress:
                        progress(done / total, f"k={k:,}")
            n_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return LatencyProfile(
        draft=arch.name, vocab_size=V, hidden=arch.hidden, device=device, device_name=_device_name(device),
        dtype=dtype, threads=n_threads, torch_version=torch.__version__, context=context, ks=ks,
        step_ms=[statistics.median(steps[k]) for k in ks], head_ms=[statistics.median(heads[k]) for k in ks],
        step_ms_p90=[float(np.percentile(steps[k], 90)) for k in ks], repeats=repeats, warmup=warmup,
        timing="cuda_events" if device.startswith("cuda") else "perf_counter",
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), arch=arch.summary())


def cache_effect(prof: LatencyProfile, arch: DraftArch, mode: str = "flops") -> dict[str, Any]:
    """Does a trimmed head cost less per row than the full one, and how far does measured latency
    fall below the FLOPs proxy? Reported as measured, whichever way it comes out."""
    bytes_per = {"float32": 4, "bfloat16": 2, "float16": 2}[prof.dtype]
    ks = np.array(prof.ks)
    head = np.array(prof.head_ms)
    ns_per_row = head * 1e6 / ks
    r_meas = prof.latency_reduction(ks)
    r_flops = flops_reduction(arch, ks, prof.context, mode)
    full = ns_per_row[-1]
    # the trimmed sizes big enough that fixed per-call overhead does not dominate the head time
    sizable = [i for i in range(len(ks) - 1) if head[i] > 5 * head[0] or ks[i] >= 4096] or list(range(len(ks) - 1))
    i_best = min(sizable, key=lambda i: ns_per_row[i]) if sizable else len(ks) - 1
    ratio = float(full / ns_per_row[i_best]) if ns_per_row[i_best] > 0 else float("nan")
    present = bool(ratio > 1.25)
    mb = lambda k: k * arch.hidden * bytes_per / 2**20
    if present:
        note = (f"cache effect measured: the head costs {ns_per_row[i_best]:.3f} ns/row at k={ks[i_best]:,} "
                f"({mb(ks[i_best]):.0f} MB) vs {full:.3f} ns/row at the full {ks[-1]:,} rows ({mb(ks[-1]):.0f} MB), "
                f"{ratio:.1f}x cheaper per row: latency falls faster than FLOPs there")
    else:
        note = (f"no cache effect measured: the head costs {full:.3f} ns/row at the full {ks[-1]:,} rows "
                f"({mb(ks[-1]):.0f} MB) and at best {ns_per_row[i_best]:.3f} ns/row trimmed (k={ks[i_best]:,}); "
                "on this device latency falls about as FLOPs do, or slower")
    return {"present": present, "per_row_speedup": ratio, "note": note,
            "head_ns_per_row": {int(k): float(v) for k, v in zip(ks, ns_per_row)},
            "head_mb": {int(k): float(mb(k)) for k in ks},
            "latency_reduction_measured": {int(k): float(v) for k, v in zip(ks, r_meas)},
            "latency_reduction_flops": {int(k): float(v) for k, v in zip(ks, r_flops)}}
