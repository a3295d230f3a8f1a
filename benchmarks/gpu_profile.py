"""Draft-step latency vs kept vocabulary k on a GPU, for real architecture shapes (random weights).

    python benchmarks/gpu_profile.py                 # bare GPU machine: torch + transformers only, no hub
    python benchmarks/gpu_profile.py --small         # shrunken shapes, runs on a CPU (a smoke check)

Self-contained: imports nothing from vtcore. Two pairs, bf16 on CUDA:
- a Qwen3-8B-shaped target with a Qwen3-0.6B-shaped standalone draft (vocab 151,936);
- a Llama-3.1-8B-shaped target with an EAGLE-3-shaped one-layer draft (vocab 128,256): fc fusing
  three target hidden states (3H -> H), one decoder layer whose attention reads [embed; hidden]
  (2H inputs), norm, head.
For each k in {V, 64k, 32k, 16k, 8k, 4k}: one draft step (a 1-token forward over a KV cache of
--ctx tokens, then the head over the first k rows, a contiguous [k, H] weight) timed whole with
CUDA events, the head alone too (its share), and the target's verify forward for gamma + 1
tokens (and a 1-token decode) over the same context. Prints one JSON object.

What each serving engine pays per round (vtcore.enginecost): for each k the head alone at 1, t
and bs * t rows in one matmul (SGLang's tree steps run t rows per request, bs * t in a batch;
--topk, --batch), vLLM's full-vocabulary scatter of k draft logits (`new_full((rows, V), -inf)`
then an indexed copy, as Eagle3LlamaForCausalLM.compute_logits does with a d2t map) at 1 and bs
rows, and the target's verify of n tree tokens (--tokens) next to gamma + 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

KS = [None, 65536, 32768, 16384, 8192, 4096]   # None: the full vocabulary

SHAPES = {
    "qwen3-8b": dict(arch="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     tie_word_embeddings=False, rope_theta=1e6),
    "qwen3-0.6b": dict(arch="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       tie_word_embeddings=True, rope_theta=1e6),
    "llama-3.1-8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         tie_word_embeddings=False, rope_theta=5e5),
    "eagle3-llama-3.1-8b": dict(arch="eagle3", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}
PAIRS = [("qwen3-8b", "qwen3-0.6b"), ("llama-3.1-8b", "eagle3-llama-3.1-8b")]


def shrink(shape: dict) -> dict:
    """--small: same vocabulary (the head is the point), 1/16 the width, few layers."""
    s = dict(shape)
    s.update(hidden_size=max(shape["hidden_size"] // 16, 64), intermediate_size=max(shape["intermediate_size"] // 16, 128),
             num_hidden_layers=min(shape["num_hidden_layers"], 2 if shape["num_hidden_layers"] > 1 else 1),
             num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    return s


# ---------------------------------------------------------------- timing


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, iters: int, warmup: int) -> list[float]:
        """Milliseconds of each call of fn()."""
        for _ in range(warmup):
            fn()
        if self.cuda:
            torch.cuda.synchronize()
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            for s, e in zip(starts, ends):
                s.record()
                fn()
                e.record()
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in zip(starts, ends)]
        out = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


# ---------------------------------------------------------------- models


def hf_model(shape: dict, device, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    kw = {k: v for k, v in shape.items() if k != "arch"}
    kw["max_position_embeddings"] = 8192
    cfg = (Qwen3Config if shape["arch"] == "qwen3" else LlamaConfig)(**kw)
    with torch.device(device):  # random init directly on the device, in the target dtype
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def cache_kwarg(module) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class HFDecoder:
    """A HF causal LM's decoder with a KV cache of `ctx` tokens, stepped and rolled back."""

    def __init__(self, model, ctx: int, device):
        from transformers import DynamicCache

        self.model, self.ctx, self.device = model, ctx, device
        self.decoder = model.get_decoder()
        self.kw = cache_kwarg(self.decoder)
        self.cache = DynamicCache(config=model.config)
        ids = torch.randint(0, model.config.vocab_size, (1, ctx), device=device)
        with torch.inference_mode():
            self.decoder(input_ids=ids, use_cache=True, **{self.kw: self.cache})

    def rollback(self) -> None:
        extra = self.cache.get_seq_length() - self.ctx
        if extra > 0:
            import inspect

            name = next(iter(inspect.signature(self.cache.crop).parameters))
            self.cache.crop(self.ctx if name == "max_length" else -extra)

    @torch.inference_mode()
    def hidden(self, n: int) -> torch.Tensor:
        ids = torch.randint(0, self.model.config.vocab_size, (1, n), device=self.device)
        h = self.decoder(input_ids=ids, use_cache=True, **{self.kw: self.cache}).last_hidden_state
        self.rollback()
        return h[0, -1]

    @torch.inference_mode()
    def logits(self, n: int) -> torch.Tensor:
        ids = torch.randint(0, self.model.config.vocab_size, (1, n), device=self.device)
        out = self.model(input_ids=ids, use_cache=True, **{self.kw: self.cache}).logits
        self.rollback()
        return out


class Eagle3Draft(torch.nn.Module):
    """EAGLE-3's draft shape: fc(3H -> H) over the target's low/mid/high features, one decoder
    layer whose q/k/v read [norm(embed); norm(hidden)] (2H), a SwiGLU MLP, norm, head."""

    def __init__(self, s: dict, device, dtype):
        super().__init__()
        H, I, nh, nkv, hd = s["hidden_size"], s["intermediate_size"], s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
        self.nh, self.nkv, self.hd = nh, nkv, hd
        with torch.device(device):
            self.embed = torch.nn.Embedding(s["vocab_size"], H)
            self.fc = torch.nn.Linear(3 * H, H, bias=False)
            self.norm_e, self.norm_h, self.norm_mlp, self.norm_out = (torch.nn.RMSNorm(H) for _ in range(4))
            self.q = torch.nn.Linear(2 * H, nh * hd, bias=False)
            self.k = torch.nn.Linear(2 * H, nkv * hd, bias=False)
            self.v = torch.nn.Linear(2 * H, nkv * hd, bias=False)
            self.o = torch.nn.Linear(nh * hd, H, bias=False)
            self.gate = torch.nn.Linear(H, I, bias=False)
            self.up = torch.nn.Linear(H, I, bias=False)
            self.down = torch.nn.Linear(I, H, bias=False)
            self.lm_head = torch.nn.Linear(H, s["vocab_size"], bias=False)
        self.to(dtype).eval()

    def prefill(self, ctx: int, device, dtype) -> None:
        self.kc = torch.randn(1, self.nkv, ctx, self.hd, device=device, dtype=dtype)
        self.vc = torch.randn(1, self.nkv, ctx, self.hd, device=device, dtype=dtype)

    @torch.inference_mode()
    def hidden(self, token: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        h = self.fc(feats)                                   # [1, H]
        x = torch.cat([self.norm_e(self.embed(token)), self.norm_h(h)], -1)
        q = self.q(x).view(1, self.nh, 1, self.hd)
        k = torch.cat([self.kc, self.k(x).view(1, self.nkv, 1, self.hd)], 2)
        v = torch.cat([self.vc, self.v(x).view(1, self.nkv, 1, self.hd)], 2)
        a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)   # rotary omitted: elementwise, small
        h = h + self.o(a.reshape(1, -1))
        m = self.norm_mlp(h)
        h = h + self.down(F.silu(self.gate(m)) * self.up(m))
        return self.norm_out(h)[0]


# ---------------------------------------------------------------- what each engine pays


def engine_rows(args) -> list[int]:
    """Head rows per forward: 1 (a chain, batch 1), t (a tree step), bs * t (a tree step in a batch)."""
    return sorted({1, args.topk, args.batch * args.topk})


def head_rows(h: torch.Tensor, head: torch.Tensor, sizes: list[int], timer, args) -> dict:
    """Milliseconds of the head over each number of rows in one matmul (its weight read once)."""
    last = h.reshape(-1, h.shape[-1])[-1:]
    out = {}
    for n in sizes:
        x = last.expand(n, -1).contiguous()
        out[str(n)] = med(timer(lambda: torch.matmul(x, head.t()), args.iters, args.warmup))
    return out


def scatter_fn(k: int, V: int, rows: int, device, dtype):
    """vLLM's compute_logits with a d2t map: k logits per row written into a -inf row of V."""
    logits = torch.randn(rows, k, device=device, dtype=dtype)
    ids = torch.randperm(V, device=device)[:k].sort().values

    def fn():
        full = logits.new_full((rows, V), float("-inf"))
        full[:, ids] = logits
        return full

    return fn


# ---------------------------------------------------------------- measuring one pair


def profile_pair(tname: str, dname: str, args, device, dtype, timer) -> dict:
    ts, ds = SHAPES[tname], SHAPES[dname]
    if args.small:
        ts, ds = shrink(ts), shrink(ds)
    V = ds["vocab_size"]
    res = {"target": tname, "draft": dname, "vocab_size": V, "ctx": args.ctx, "gamma": args.gamma,
           "target_shape": {k: v for k, v in ts.items() if k != "arch"},
           "draft_shape": {k: v for k, v in ds.items() if k != "arch"}}
    t0 = time.perf_counter()

    # draft
    if ds["arch"] == "eagle3":
        draft = Eagle3Draft(ds, device, dtype)
        draft.prefill(args.ctx, device, dtype)
        token = torch.randint(0, V, (1,), device=device)
        feats = torch.randn(1, 3 * ds["hidden_size"], device=device, dtype=dtype)
        body = lambda: draft.hidden(token, feats)  # noqa: E731
        W = draft.lm_head.weight
    else:
        model = hf_model(ds, device, dtype)
        dec = HFDecoder(model, args.ctx, device)
        body = lambda: dec.hidden(1)  # noqa: E731
        W = model.get_output_embeddings().weight
    H = W.shape[1]
    h = body()
    body_ms = timer(body, args.iters, args.warmup)
    res["draft_body_ms"] = med(body_ms)
    rows = []
    for k in KS:
        k = V if k is None else min(k, V)
        head = W[:k].detach().clone().contiguous()   # a trimmed head is its own smaller weight

        def head_only():
            return torch.matmul(h, head.t())

        def step():
            with torch.inference_mode():
                return torch.matmul(body(), head.t()).argmax()

        head_ms = med(timer(head_only, args.iters, args.warmup))
        step_ms = med(timer(step, args.iters, args.warmup))
        row = {"k": k, "draft_step_ms": step_ms, "head_ms": head_ms,
               "head_share": round(head_ms / step_ms, 4) if step_ms else None,
               "head_gflop": round(2 * k * H / 1e9, 4),
               "head_mb": round(k * H * head.element_size() / 2**20, 1),
               "head_rows_ms": head_rows(h, head, engine_rows(args), timer, args)}
        if k < V:   # vLLM scatters only a head with a d2t map, i.e. a trimmed one
            row["scatter_ms"] = {str(r): med(timer(scatter_fn(k, V, r, device, dtype), args.iters, args.warmup))
                                 for r in sorted({1, args.batch})}
        rows.append(row)
        del head
    res["draft"] = rows
    full = rows[0]["draft_step_ms"]
    for r in rows:
        r["step_speedup_vs_full"] = round(full / r["draft_step_ms"], 3)
    if ds["arch"] == "eagle3":
        del draft
    else:
        del model, dec
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # target
    model = hf_model(ts, device, dtype)
    dec = HFDecoder(model, args.ctx, device)
    res["target_verify_ms"] = med(timer(lambda: dec.logits(args.gamma + 1), args.iters, args.warmup))
    res["target_decode_ms"] = med(timer(lambda: dec.logits(1), args.iters, args.warmup))
    res["target_verify_tree_ms"] = med(timer(lambda: dec.logits(args.tokens), args.iters, args.warmup))
    res["tree"] = {"topk": args.topk, "tokens": args.tokens, "batch": args.batch}
    for r in rows:   # vLLM's scatter per drafted token in target steps (search's --scatter-cost)
        if "scatter_ms" in r:
            r["scatter_cost"] = round(r["scatter_ms"]["1"] / res["target_decode_ms"], 6)
    for r in rows:  # draft/target cost ratio c the speed-up model uses
        r["cost_ratio"] = round(r["draft_step_ms"] / res["target_decode_ms"], 4)
    del model, dec
    if device.type == "cuda":
        torch.cuda.empty_cache()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="shrunken shapes (CPU smoke check)")
    ap.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    ap.add_argument("--ctx", type=int, default=512, help="tokens already in the KV cache")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 50 GPU, 10 CPU)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--topk", type=int, default=4, help="tree top-t: the head is timed at t and batch * t rows")
    ap.add_argument("--tokens", type=int, default=8, help="tree draft tokens n: the target verifies n tokens")
    ap.add_argument("--batch", type=int, default=8, help="batch size for the head rows and the scatter")
    ap.add_argument("--pairs", default="all", help="'all', or comma-separated target names: qwen3-8b, llama-3.1-8b")
    args = ap.parse_args()
    if min(args.topk, args.tokens, args.batch, args.gamma) < 1:
        ap.error("--topk, --tokens, --batch and --gamma must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA device is available")
    if device.type == "cpu" and not args.small:
        print("warning: full 8B shapes on a CPU take very long; use --small", file=sys.stderr)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.iters = args.iters or (50 if device.type == "cuda" else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    if args.small:
        args.ctx = min(args.ctx, 128)
    torch.manual_seed(0)
    timer = Timer(device)
    t0 = time.perf_counter()
    import transformers

    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "dtype": str(dtype).replace("torch.", ""), "small": args.small, "torch": torch.__version__,
           "transformers": transformers.__version__, "timing": "CUDA events" if device.type == "cuda" else "perf_counter",
           "iters": args.iters, "pairs": []}
    wanted = None if args.pairs == "all" else set(args.pairs.split(","))
    for tname, dname in PAIRS:
        if wanted and tname not in wanted:
            continue
        print(f"profiling {tname} + {dname} ...", file=sys.stderr, flush=True)
        out["pairs"].append(profile_pair(tname, dname, args, device, dtype, timer))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
