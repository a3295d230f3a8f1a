"""EAGLE-3 draft heads in plain torch, computed the way SpecForge trains them and SGLang/vLLM run them.

An EAGLE-3 head (Li et al. 2025) is one decoder layer that reads the TARGET's hidden states:

    fused   = fc(cat(aux_a, aux_b, aux_c))                  [T, H]   (3 target layers -> H)
    x       = cat(input_layernorm(embed(token)), hidden_norm(hidden))            [T, 2H]
    h       = hidden + o_proj(attn(q/k/v_proj(x)))          residual = the un-normed hidden
    h       = h + mlp(post_attention_layernorm(h))                   -> h_out [T, H]
    logits  = lm_head(norm(h_out))                          [T, N] over the draft vocabulary
    target id of head row i = i + d2t[i]

Position alignment (SpecForge specforge/modeling/target/target_head.py `preprocess` shifts
input_ids and the target logits left by one; vLLM's EAGLE proposer, v1/spec_decode/eagle.py
(llm_base_proposer.py in newer releases) `propose`, feeds target_token_ids[1:] at the target's
positions): at position t the draft takes the embedding of token t+1 with the target's fused
hidden state at t and predicts token t+2. The first draft step after
a verify feeds the target's aux hidden states of every newly committed position (which also
rewrites the draft's KV cache there); each later step feeds the draft's own h_out at the next
position (SGLang srt/models/llama_eagle3.py `LlamaModel.forward` returns (norm(h) for the logits,
the un-normed h "for draft decode"); SpecForge specforge/algorithms/eagle3/model.py
`OnlineEagle3Model.forward` feeds `backbone()`'s un-normed output into the next TTT step).

Norm flags that differ between checkpoints (all read from config.json):
- SpecForge 0.2.0 `norm_output` (default True): logits = lm_head(norm(h)); False: lm_head(h)
  (modeling/draft/llama3_eagle.py `LlamaForCausalLMEagle3.compute_logits`). SGLang ignores it.
- speculators 0.9.0 `norm_output` (default False) means something else, EAGLE 3.1: the draft
  feeds norm(h) back (and takes logits from it) (models/eagle3/core.py `Eagle3DraftModel.forward`).
  `norm_before_residual` (residual = hidden_norm(hidden)), `norm_before_fc` (one RMSNorm over the
  3*Ht concatenation, weight `input_norm`) and `fc_norm` (one RMSNorm per aux state, weights
  `fc_norm.{0,1,2}`, also in SpecForge) are honoured as well.

Which target hidden states ("aux layers"), as read in SpecForge 0.2.0 and speculators 0.9.0
(installed), SGLang main (llama_eagle3.py at 03d5a77) and vLLM main (2026). We store them as
indices into Hugging Face's `output_hidden_states` tuple: index i = the input of decoder layer
i = the output of layer i-1 (0 = the embedding output; L = the last layer's output BEFORE the
final norm, which is what the engines capture, while HF's tuple holds it after the norm).
- vLLM (model_executor/models/llama.py `get_eagle3_aux_hidden_state_layers` -> (2, L//2, L-3);
  `LlamaModel.forward` appends `hidden_states + residual` before layer idx, or after layer idx
  as idx+1 since EagleModelMixin, the same states) and speculators 0.9.0
  (models/utils.py `resolve_target_layer_ids` default [2, L//2, L-3]) use this convention, also
  for explicit `eagle_aux_hidden_state_layer_ids` (vLLM v1/worker/gpu_model_runner.py
  `_get_eagle3_aux_layers_from_config` passes them through unchanged).
- SGLang (srt/models/llama.py `set_eagle3_layers_to_capture`): default [2, L//2, L-3] captured
  before layer i (same states); explicit ids are layer OUTPUTS and get +1 (since sglang PR
  #25454, May 2026, only when the first id is 1). SpecForge 0.2.0
  (algorithms/model_providers.py `resolve_eagle_capture_layers`) defaults to
  [1, L//2-1, L-4] in that output convention and hands them to SGLang, so every engine agrees
  on the default: HF indices (2, L//2, L-3), i.e. the outputs of layers 1, L//2-1 and L-4.
  "2, L//2, L-3" is right in the input/HF-index convention; for SmolLM2 (L = 30): HF indices
  (2, 15, 27).

API for a chain-drafting loop (one sequence; tests/test_eagle3.py `greedy_chain` is a reference):
target_forward (target states through its KV cache) -> draft.fuse -> draft(tokens, hidden,
Eagle3Cache) -> draft.logits -> draft.head_target_ids[row]; roll back with cache.crop(n).
Loading: load_eagle3, build_default_eagle3 (checkpoints and their configs: vtcore.checkpoints);
subtrim for a smaller head; save_eagle3 writes through vtcore.checkpoints, as the export does.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vtcore import checkpoints, formats, models
# the config, its mapping and the layouts are vtcore.checkpoints'; the names, vtcore.models'
from vtcore.checkpoints import WEIGHTS_FILE, Eagle3Config  # noqa: F401
from vtcore.errors import VTError
from vtcore.models import DEFAULT_EAGLE3, default_eagle3_dir  # noqa: F401


# ---------------------------------------------------------------- config


def default_aux_layer_ids(num_target_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's default in HF hidden-state indices: (2, L//2, L-3) (see the module doc)."""
    L = int(num_target_layers)
    ids = (2, L // 2, L - 3)
    if L < 4 or len(set(ids)) != 3:
        raise VTError(f"a {L}-layer target is too shallow for EAGLE-3's default aux layers {ids}")
    return ids


def aux_layer_ids(cfg: Eagle3Config, target_config=None) -> tuple[int, ...]:
    """The HF hidden-state indices the draft reads: the draft config's ids, else the target
    config's `eagle_aux_hidden_state_layer_ids` (vLLM convention), else the default."""
    if cfg.aux_layer_ids:
        return tuple(cfg.aux_layer_ids)
    if target_config is None:
        raise VTError("the draft names no aux layers: pass the target (its layer count sets the default)")
    tc = getattr(target_config, "text_config", target_config)
    ids = getattr(tc, "eagle_aux_hidden_state_layer_ids", None)
    if ids:
        return tuple(int(i) for i in ids)
    return default_aux_layer_ids(tc.num_hidden_layers)


# ---------------------------------------------------------------- building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in fp32, cast back before the weight: what HF, SpecForge and the engines do
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def _inv_freq(cfg: Eagle3Config) -> tuple[torch.Tensor, float]:
    if cfg.rope_scaling is None:
        exps = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim
        return 1.0 / (cfg.rope_theta ** exps), 1.0
    # scaled RoPE (llama3, yarn, linear, ...): transformers' own formulas, from an equivalent config
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {**cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    kind = params.get("rope_type", params.get("type"))
    params["rope_type"] = kind
    lc = LlamaConfig(hidden_size=cfg.num_heads * cfg.head_dim, num_attention_heads=cfg.num_heads,
                     head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
                     rope_parameters=params)
    if kind not in ROPE_INIT_FUNCTIONS:
        raise VTError(f"unsupported RoPE type {kind!r}")
    inv, scale = ROPE_INIT_FUNCTIONS[kind](lc, None)
    return inv.float(), float(scale)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Eagle3Layer(nn.Module):
    """The one decoder layer; q/k/v read [input_layernorm(embedding); hidden_norm(hidden)]."""

    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        H, hd = cfg.hidden_size, cfg.head_dim
        self.cfg = cfg
        self.input_layernorm = RMSNorm(H, cfg.rms_norm_eps)
        self.hidden_norm = RMSNorm(H, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(H, cfg.rms_norm_eps)
        attn = nn.Module()
        attn.q_proj = nn.Linear(2 * H, cfg.num_heads * hd, bias=cfg.attention_bias)
        attn.k_proj = nn.Linear(2 * H, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        attn.v_proj = nn.Linear(2 * H, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        attn.o_proj = nn.Linear(cfg.num_heads * hd, H, bias=cfg.attention_bias)
        if cfg.qk_norm:
            attn.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
            attn.k_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.self_attn = attn
        mlp = nn.Module()
        mlp.gate_proj = nn.Linear(H, cfg.intermediate_size, bias=cfg.mlp_bias)
        mlp.up_proj = nn.Linear(H, cfg.intermediate_size, bias=cfg.mlp_bias)
        mlp.down_proj = nn.Linear(cfg.intermediate_size, H, bias=cfg.mlp_bias)
        self.mlp = mlp

    def qkv(self, emb: torch.Tensor, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """emb, hidden [..., T, H] -> q [..., nh, T, hd], k/v [..., nkv, T, hd] (RoPE applied), residual."""
        cfg, a = self.cfg, self.self_attn
        hn = self.hidden_norm(hidden)
        residual = hn if cfg.norm_before_residual else hidden
        x = torch.cat([self.input_layernorm(emb), hn], dim=-1)
        shape = x.shape[:-1]

        def heads(t, n):
            return t.view(*shape, n, cfg.head_dim).transpose(-2, -3)

        q = heads(a.q_proj(x), cfg.num_heads)
        k, v = heads(a.k_proj(x), cfg.num_kv_heads), heads(a.v_proj(x), cfg.num_kv_heads)
        if cfg.qk_norm:
            q, k = a.q_norm(q), a.k_norm(k)
        return _apply_rope(q, cos, sin), _apply_rope(k, cos, sin), v, residual

    def finish(self, attn: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """attn [..., nh, T, hd] -> the layer output [..., T, H]."""
        attn = attn.transpose(-2, -3).flatten(-2)
        h = residual + self.self_attn.o_proj(attn)
        m = self.mlp
        x = self.post_attention_layernorm(h)
        act = F.silu if self.cfg.hidden_act == "silu" else _act(self.cfg.hidden_act)
        return h + m.down_proj(act(m.gate_proj(x)) * m.up_proj(x))


def _act(name: str):
    from transformers.activations import ACT2FN

    return ACT2FN[name]


# ---------------------------------------------------------------- the draft's KV cache


@dataclass
class Eagle3Cache:
    """One sequence's draft keys/values [nkv, capacity, hd], RoPE applied. `length` positions
    are valid; rolling back a rejected draft is `crop(n)`."""
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[-2]
        if self.k is None or self.length + n > self.k.shape[-2]:
            cap = max(2 * (self.length + n), 64)   # amortised growth: no copy per token
            nk = k.new_empty(*k.shape[:-2], cap, k.shape[-1])
            nv = v.new_empty(*v.shape[:-2], cap, v.shape[-1])
            if self.k is not None:
                nk[..., : self.length, :] = self.k[..., : self.length, :]
                nv[..., : self.length, :] = self.v[..., : self.length, :]
            self.k, self.v = nk, nv
        self.k[..., self.length: self.length + n, :] = k
        self.v[..., self.length: self.length + n, :] = v
        self.length += n
        return self.k[..., : self.length, :], self.v[..., : self.length, :]

    def crop(self, length: int) -> None:
        self.length = min(self.length, max(int(length), 0))

    def get_seq_length(self) -> int:
        return self.length


# ---------------------------------------------------------------- the draft


class Eagle3Draft(nn.Module):
    """An EAGLE-3 head. Weights: embed [V, H] (often the target's, shared), fc, one layer, norm,
    and a replaceable contiguous head [n, H] with d2t int64[n] (target id = i + d2t[i])."""

    def __init__(self, cfg: Eagle3Config, embed: torch.Tensor | None = None, head: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        H, Ht = cfg.hidden_size, cfg.target_hidden_size
        self.fc = nn.Linear(cfg.num_aux * Ht, H, bias=cfg.fc_bias)
        self.fc_norm = nn.ModuleList([RMSNorm(Ht, cfg.rms_norm_eps) for _ in range(cfg.num_aux)]) if cfg.fc_norm else None
        self.input_norm = RMSNorm(cfg.num_aux * Ht, cfg.rms_norm_eps) if cfg.norm_before_fc else None
        self.layer = Eagle3Layer(cfg)
        self.norm = RMSNorm(H, cfg.rms_norm_eps)
        inv, self.rope_scale = _inv_freq(cfg)
        self.register_buffer("inv_freq", inv, persistent=False)
        # plain tensors, not parameters: frozen, possibly shared with the target, replaceable
        self.embed_weight = embed
        self.head = head
        self.d2t = torch.zeros(cfg.draft_vocab_size, dtype=torch.long)
        self.t2d = torch.ones(cfg.vocab_size, dtype=torch.bool) if cfg.draft_vocab_size == cfg.vocab_size else None
        self.aux_ids: tuple[int, ...] | None = cfg.aux_layer_ids
        self.name = ""

    # -- pieces the decoding loop calls

    @property
    def n(self) -> int:
        return int(self.head.shape[0])

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.embed_weight)

    def fuse(self, aux: torch.Tensor) -> torch.Tensor:
        """The target's concatenated aux states [..., 3*Ht] -> the draft's hidden input [..., H]."""
        if self.input_norm is not None:
            aux = self.input_norm(aux)
        if self.fc_norm is not None:
            aux = torch.cat([nm(c) for nm, c in zip(self.fc_norm, aux.chunk(len(self.fc_norm), -1))], -1)
        return self.fc(aux)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [..., T, hd] for absolute positions [..., T]."""
        f = positions.to(self.inv_freq.device).float()[..., None] * self.inv_freq
        e = torch.cat([f, f], dim=-1)
        return (e.cos() * self.rope_scale).to(dtype), (e.sin() * self.rope_scale).to(dtype)

    def forward(self, token_ids: torch.Tensor, hidden: torch.Tensor, cache: Eagle3Cache,
                positions: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One chain step for T new positions of ONE sequence: token_ids [T] (the token after each
        position), hidden [T, H] (fuse(target aux) or a previous step's output), appended to
        `cache`. Returns h_out [T, H]: what the next step feeds back as `hidden` (norm(h) for
        EAGLE-3.1 checkpoints, else the un-normed h). `attn_mask` (bool [T, cache length after the
        append], True = visible) replaces the causal mask: tree drafting (vtcore.tree) passes one."""
        T = token_ids.shape[-1]
        if positions is None:
            positions = torch.arange(cache.length, cache.length + T, device=token_ids.device)
        cos, sin = self.rope(positions, hidden.dtype)
        q, k, v, residual = self.layer.qkv(self.embed(token_ids).to(hidden.dtype), hidden, cos, sin)
        K, Vv = cache.append(k, v)
        L = K.shape[-2]
        rep = self.cfg.num_heads // self.cfg.num_kv_heads
        K, Vv = K.repeat_interleave(rep, dim=0), Vv.repeat_interleave(rep, dim=0)
        mask = attn_mask
        if mask is None and T > 1:  # causal among the new positions; every cached one is visible
            mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(L - T)
        attn = F.scaled_dot_product_attention(q, K, Vv, attn_mask=mask)
        h = self.layer.finish(attn, residual)
        return self.norm(h) if self.cfg.feed_normed else h

    def logits(self, h_out: torch.Tensor) -> torch.Tensor:
        """[..., n] over the draft vocabulary (head rows): lm_head(norm(h_out)); a sub-trimmed
        head is a genuinely smaller matmul."""
        x = h_out if (self.cfg.feed_normed or not self.cfg.norm_logits) else self.norm(h_out)
        return x @ self.head.t().to(x.dtype)

    @property
    def head_target_ids(self) -> torch.Tensor:
        """int64[n]: the target id each head row scores."""
        return torch.arange(self.n, device=self.d2t.device) + self.d2t

    # -- training-time test (SpecForge's cache_hidden attention), batched

    def ttt_step(self, token_ids: torch.Tensor, hidden: torch.Tensor, kv: list, positions: torch.Tensor,
                 mask0: torch.Tensor) -> torch.Tensor:
        """TTT step k = len(kv) over a batch: token_ids [B, T], hidden [B, T, H], positions [B, T]
        of step 0 (step k uses positions + k). Query t attends the step-0 keys allowed by mask0
        [B, 1, T, T] (bool: causal and padding) plus its own keys from steps 1..k (the diagonal),
        exactly what a chain of k+1 draft steps from position t sees. Appends (k, v) to kv."""
        step = len(kv)
        cos, sin = self.rope(positions + step, hidden.dtype)
        q, k, v, residual = self.layer.qkv(self.embed(token_ids).to(hidden.dtype), hidden,
                                           cos.unsqueeze(1), sin.unsqueeze(1))
        rep = self.cfg.num_heads // self.cfg.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        kv.append((k, v))
        k0, v0 = kv[0]
        scale = 1.0 / math.sqrt(self.cfg.head_dim)
        s0 = (q @ k0.transpose(-1, -2)) * scale
        s0 = s0.masked_fill(~mask0, torch.finfo(s0.dtype).min)
        diag = [(q * ki).sum(-1, keepdim=True) * scale for ki, _ in kv[1:]]
        w = torch.softmax(torch.cat([s0, *diag], dim=-1).float(), dim=-1).to(q.dtype)
        T = s0.shape[-1]
        out = w[..., :T] @ v0
        for i, (_, vi) in enumerate(kv[1:]):
            out = out + w[..., T + i: T + i + 1] * vi
        h = self.layer.finish(out, residual)
        return self.norm(h) if self.cfg.feed_normed else h

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """fc + layer + norm(s) in SpecForge names (midlayer.*): everything but embed/head/d2t/t2d."""
        return checkpoints.checkpoint_names(self.state_dict())


def subtrim(draft: Eagle3Draft, kept_target_ids) -> Eagle3Draft:
    """A draft sharing every weight of `draft` but whose head keeps only the rows of
    `kept_target_ids` (ascending), copied into a contiguous [k, H] tensor; d2t/t2d follow.
    Every kept id must be in the draft's vocabulary (VTError otherwise)."""
    kept = torch.as_tensor(kept_target_ids, dtype=torch.long).flatten().unique(sorted=True)
    if kept.numel() == 0:
        raise VTError("the token map keeps no ids")
    ids = draft.head_target_ids.cpu()
    V = draft.cfg.vocab_size
    if int(kept.min()) < 0 or int(kept.max()) >= V:
        raise VTError(f"token id {int(kept.max()) if int(kept.max()) >= V else int(kept.min())} is outside the "
                      f"target vocabulary (0..{V - 1})")
    row_of = torch.full((V,), -1, dtype=torch.long)
    row_of[ids] = torch.arange(ids.numel())
    rows = row_of[kept]
    if bool((rows < 0).any()):
        bad = kept[rows < 0]
        raise VTError(f"{bad.numel()} kept token id(s) are not in the EAGLE-3 draft's vocabulary of {ids.numel()} "
                      f"(first: {bad[:5].tolist()}); keep a subset of its d2t ids")
    new = copy.copy(draft)   # shallow: modules, parameters and the embedding are shared
    dev = draft.head.device
    new.head = draft.head.index_select(0, rows.to(dev)).contiguous()
    new.d2t = (kept - torch.arange(kept.numel())).to(draft.d2t.device)
    t2d = torch.zeros(V, dtype=torch.bool)
    t2d[kept] = True
    new.t2d = t2d
    return new


# ---------------------------------------------------------------- the target side


@torch.no_grad()
def target_forward(target, input_ids: torch.Tensor, aux_ids, cache=None, attention_mask=None,
                   position_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the target's decoder on input_ids ([T] or [B, T]) appended to its KV `cache` (a HF
    Cache, or None) and return (last hidden state after the final norm — the logits input —,
    the aux states concatenated [.., T, k*Ht] in `aux_ids` order). Forward hooks on just the
    needed layers: no copy of every layer's hidden state."""
    dec = models.decoder_of(target)
    layers = dec.layers
    L = len(layers)
    squeeze = input_ids.dim() == 1
    ids = input_ids[None] if squeeze else input_ids
    grabbed: dict[int, torch.Tensor] = {}
    hooks = []

    def grab(i):
        def hook(_m, _inp, out):
            grabbed[i] = out[0] if isinstance(out, tuple) else out
        return hook

    for i in aux_ids:
        if not 0 <= i <= L:
            raise VTError(f"aux layer {i} outside 0..{L} for a {L}-layer target")
        mod = dec.embed_tokens if i == 0 else layers[i - 1]   # HF index i = output of layer i-1
        hooks.append(mod.register_forward_hook(grab(i)))
    try:
        kw = {"use_cache": False} if cache is None else {models.cache_kwarg(dec): cache, "use_cache": True}
        if position_ids is not None:   # a tree verify: nodes sit at their depth's position
            kw["position_ids"] = position_ids
        out = dec(input_ids=ids, attention_mask=attention_mask, **kw)
    finally:
        for h in hooks:
            h.remove()
    aux = torch.cat([grabbed[i] for i in aux_ids], dim=-1)
    last = out.last_hidden_state
    return (last[0], aux[0]) if squeeze else (last, aux)


# ---------------------------------------------------------------- loading


def load_eagle3(path_or_hub_id: str | os.PathLike, device="cpu", dtype=None, target=None,
                workspace=None) -> Eagle3Draft:
    """An Eagle3Draft from a local dir in the SpecForge or speculators layout, or a hub id (via
    vtcore.models.resolve_model: only from the local HF cache when offline). A missing
    embed_tokens (or lm_head of a tied / full-vocabulary draft) is shared from `target`."""
    path = Path(models.resolve_model(path_or_hub_id, workspace))
    cfg = checkpoints.read_eagle3_config(path)
    state = checkpoints.module_names(formats.load_weights(path))
    dtype = dtype or models.model_dtype(device)
    embed = state.pop("embed_tokens.weight", None)
    head = state.pop("lm_head.weight", None)
    d2t, t2d = state.pop("d2t", None), state.pop("t2d", None)
    if embed is None:
        if target is None:
            raise VTError(f"{path}: the checkpoint has no embed_tokens; pass the target to share its embedding")
        embed = target.get_input_embeddings().weight.detach()
    if tuple(embed.shape) != (cfg.vocab_size, cfg.hidden_size):
        raise VTError(f"{path}: embedding is {list(embed.shape)}, the config says "
                      f"[{cfg.vocab_size}, {cfg.hidden_size}] (a target with another vocabulary or hidden size?)")
    if head is None:
        if cfg.tie_word_embeddings:
            head = embed
        elif cfg.draft_vocab_size == cfg.vocab_size and target is not None:
            head = target.get_output_embeddings().weight.detach()   # SGLang: load_lm_head_from_target
        else:
            raise VTError(f"{path}: the checkpoint has no lm_head.weight")
    if tuple(head.shape) != (cfg.draft_vocab_size, cfg.hidden_size):
        raise VTError(f"{path}: lm_head is {list(head.shape)}, expected [{cfg.draft_vocab_size}, {cfg.hidden_size}]")
    draft = Eagle3Draft(cfg)
    missing, unexpected = draft.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise VTError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    draft = draft.to(device=device, dtype=dtype).eval()
    for p in draft.parameters():
        p.requires_grad_(False)
    same = lambda t: t.device == torch.device(device) and t.dtype == dtype  # noqa: E731
    draft.embed_weight = embed if same(embed) else embed.to(device=device, dtype=dtype)
    draft.head = (draft.embed_weight if head is embed else
                  (head if same(head) else head.to(device=device, dtype=dtype))).contiguous()
    if d2t is None:
        if cfg.draft_vocab_size != cfg.vocab_size:
            raise VTError(f"{path}: draft_vocab_size {cfg.draft_vocab_size} < vocab_size {cfg.vocab_size} but no d2t")
        d2t = torch.zeros(cfg.draft_vocab_size, dtype=torch.long)
    d2t = d2t.long()
    ids = torch.arange(d2t.numel()) + d2t
    if d2t.numel() != cfg.draft_vocab_size or int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise VTError(f"{path}: d2t has {d2t.numel()} entries mapping outside 0..{cfg.vocab_size - 1}")
    if t2d is not None and (t2d.numel() != cfg.vocab_size or not torch.equal(t2d.bool().nonzero().flatten(), ids.sort().values)):
        raise VTError(f"{path}: t2d does not mark exactly the ids d2t maps to")
    draft.d2t = d2t.to(device)
    mask = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    mask[ids] = True
    draft.t2d = mask
    if target is not None:
        draft.aux_ids = aux_layer_ids(cfg, target.config)
        tH = getattr(getattr(target.config, "text_config", target.config), "hidden_size")
        if tH != cfg.target_hidden_size:
            raise VTError(f"{path}: built for a target of hidden size {cfg.target_hidden_size}, the target has {tH}")
    draft.name = str(path_or_hub_id)
    return draft


def save_eagle3(draft: Eagle3Draft, path: str | os.PathLike, layout: str = "specforge",
                include_embed: bool = True, include_head: bool = True, dtype=None,
                verifier: dict | None = None) -> Path:
    """Write a checkpoint in the SpecForge (`midlayer.*`) or speculators (`layers.0.*`) layout
    through vtcore.checkpoints, the export's writer: the same config fields. Aux layer ids are
    written only when the draft's config named them. The speculators layout names `verifier`
    (default: an unnamed Llama target)."""
    cfg, path = draft.cfg, Path(path)
    cast = (lambda t: t.detach().to(dtype)) if dtype else (lambda t: t.detach())  # noqa: E731
    state = {k: cast(v) for k, v in draft.trainable_state().items()}
    if include_embed:
        state["embed_tokens.weight"] = cast(draft.embed_weight)
    if include_head:
        state["lm_head.weight"] = cast(draft.head)
        state["d2t"] = draft.d2t.cpu()
        state["t2d"] = draft.t2d.cpu()
    state = {k: v.cpu() for k, v in state.items()}
    _, files = checkpoints.checkpoint_files(
        checkpoints.flat_config(cfg), state, layout,
        verifier=verifier or {"name_or_path": None, "architectures": ["LlamaForCausalLM"]})
    path.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (path / name).write_bytes(blob)
    return path


def build_default_eagle3(target, weights_dir: str | os.PathLike | None = None) -> Eagle3Draft:
    """The default SmolLM2-135M-Instruct EAGLE-3 head: the committed fc + layer + norm, with the
    target's embedding as both embedding and (tied, full-vocabulary) head, shared not copied."""
    weights_dir = Path(weights_dir or default_eagle3_dir())
    if not (weights_dir / WEIGHTS_FILE).is_file():
        raise VTError(f"{weights_dir / WEIGHTS_FILE}: the default EAGLE-3 head's weights are missing "
                      "(run scripts/train_eagle3.py to make them)")
    emb = target.get_input_embeddings().weight
    draft = load_eagle3(weights_dir, emb.device, emb.dtype, target=target)
    draft.name = DEFAULT_EAGLE3
    return draft
