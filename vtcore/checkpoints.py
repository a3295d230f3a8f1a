"""Draft checkpoints on disk: EAGLE-3 drafts in both layouts, their config mapping, reading and
writing, all here (and standalone causal-LM drafts, which are read the same way).

EAGLE-3 drafts come in two layouts:
- SpecForge / SGLang: a flat Llama config (architectures LlamaForCausalLMEagle3, draft_vocab_size,
  target_hidden_size, eagle_config), the decoder layer named midlayer.*;
- speculators' Eagle3Speculator (what `vllm serve DIR` reads): speculators_model_type "eagle3",
  the layer's own config in transformer_layer_config, the layer named layers.0.*.
Everything is mapped through one form, the *flat* config (SpecForge's fields, plus two of vtcore's
own that only speculators can say: `speculators_norm_output` and `aux_hf_ids`, never written out):
`flat_eagle3_config` reads either layout into it, `specforge_config` / `speculators_config` write
it out, `config_from_dict` makes the Eagle3Config the decoding engine runs (vtcore.eagle3) and
`flat_config` turns one back. `checkpoint_files` renders a checkpoint directory in either layout;
the export and `vtcore.eagle3.save_eagle3` both write through it. vtcore.cost reads a draft's
shapes through `config_from_dict` too.

Aux layer ids (which target hidden states the draft reads) are kept as indices into Hugging Face's
`output_hidden_states` (vtcore.eagle3's module doc): speculators' configs state those; SpecForge /
SGLang configs state layer outputs (HF index - 1) when the first id is 1, as SGLang reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtcore.errors import VTError
from vtcore.formats import TensorSource, ids_from_d2t, load_weights, read_config, safetensors_bytes, tensor_source

SPECULATORS_VERSION = "0.9.0"          # the speculators release whose layout is written and tested
SPECFORGE_LAYER, SPECULATORS_LAYER = "midlayer.", "layers.0."
SPECFORGE_ARCH = "LlamaForCausalLMEagle3"
SPECFORGE_ARCHS = {SPECFORGE_ARCH, "Eagle3LlamaForCausalLM"}
SPECULATORS_ARCHS = {"Eagle3Speculator", "Eagle3DraftModel"}
WEIGHTS_FILE = "model.safetensors"
SPECULATIVE_TOKENS = 3                 # the greedy proposal a speculators config names (its converter's default)
# An Eagle3SpeculatorConfig's own fields (beside transformer_layer_config and speculators_config)
EAGLE3_FIELDS = ("draft_vocab_size", "target_hidden_size", "norm_before_residual", "norm_before_fc", "fc_norm",
                 "norm_output")
_OURS = ("speculators_norm_output", "aux_hf_ids")   # flat-only keys, never written to a config.json


# ---------------------------------------------------------------- which layout

def is_speculators_config(config: dict) -> bool:
    return bool(config.get("speculators_model_type"))


def is_eagle3(config: dict, shapes: dict[str, tuple]) -> bool:
    """An EAGLE-3 draft, in either layout: by its architecture or by its fc / decoder-layer tensors."""
    if is_speculators_config(config):
        return config.get("speculators_model_type") == "eagle3"
    arch = " ".join(config.get("architectures") or [])
    return ("eagle3" in arch.lower() or "fc.weight" in shapes or any(k.startswith(SPECFORGE_LAYER) for k in shapes))


def draft_layout(config: dict, shapes: dict[str, tuple]) -> str:
    if is_speculators_config(config):
        return "speculators"
    return "specforge" if is_eagle3(config, shapes) else "hf"


def is_eagle3_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path` (a directory) holds an EAGLE-3 draft's config.json, in either layout."""
    try:
        return draft_layout(read_config(path), {}) != "hf"
    except VTError:
        return False


# ---------------------------------------------------------------- aux layer ids

def aux_ids_from_specforge(ids) -> tuple[int, ...] | None:
    """SpecForge/SGLang ids are layer outputs (HF index = id + 1) when the first is 1, as SGLang
    reads them since PR #25454; otherwise they already are HF indices."""
    if not ids:
        return None
    ids = [int(i) for i in ids]
    return tuple(i + 1 for i in ids) if ids[0] == 1 else tuple(ids)


def specforge_aux_ids(hf_ids) -> list[int]:
    """HF indices as a SpecForge/SGLang config writes them, so aux_ids_from_specforge reads them back:
    SpecForge's own default (HF 2, ...) in its layer-output convention (1, ...), anything else as
    HF indices. A first HF index of 1 has no unambiguous spelling there."""
    ids = [int(i) for i in hf_ids]
    if ids[0] == 1:
        raise VTError(f"aux layers {ids} (HF indices) cannot be written unambiguously in the SpecForge layout "
                      "(SGLang would read them as layer outputs): save in the speculators layout")
    return [i - 1 for i in ids] if ids[0] == 2 else ids


def flat_aux_ids(flat: dict) -> tuple[int, ...] | None:
    """The HF indices a flat config names (None: the engines' default)."""
    if flat.get("aux_hf_ids"):
        return tuple(int(i) for i in flat["aux_hf_ids"])
    eagle = flat.get("eagle_config") or {}
    return aux_ids_from_specforge(flat.get("eagle_aux_hidden_state_layer_ids")
                                  or eagle.get("eagle_aux_hidden_state_layer_ids"))


# ---------------------------------------------------------------- the config mapping

def flat_eagle3_config(config: dict, where: str = "config.json") -> dict:
    """The flat (SpecForge / SGLang) form of an EAGLE-3 draft config. A speculators config becomes
    its transformer_layer_config plus draft_vocab_size and the EAGLE-3 fields; any other config is
    returned unchanged."""
    archs = set(config.get("architectures") or [])
    if not is_speculators_config(config) and archs & SPECULATORS_ARCHS:
        config = {**config, "speculators_model_type": "eagle3"}
    if not is_speculators_config(config):
        return config
    kind = config.get("speculators_model_type")
    if kind != "eagle3":
        raise VTError(f"{where}: speculators_model_type is {kind!r}; only eagle3 drafts are read")
    layer = config.get("transformer_layer_config")
    if not isinstance(layer, dict):
        raise VTError(f"{where}: a speculators config needs a 'transformer_layer_config' object")
    flat = {k: v for k, v in layer.items() if k != "architectures"}
    flat["architectures"] = [SPECFORGE_ARCH]
    flat.update({k: config[k] for k in EAGLE3_FIELDS if k != "norm_output" and config.get(k) is not None})
    # speculators' norm_output (EAGLE 3.1: the draft feeds norm(h) back) is not SpecForge's norm_output
    # (logits from norm(h), which speculators always does): kept under its own name
    if config.get("norm_output"):
        flat["speculators_norm_output"] = True
    if config.get("eagle_aux_hidden_state_layer_ids"):   # HF indices already (vLLM's reading)
        flat["aux_hf_ids"] = [int(i) for i in config["eagle_aux_hidden_state_layer_ids"]]
    flat["tie_word_embeddings"] = False
    return flat


@dataclass
class Eagle3Config:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int                          # the target's vocabulary V (embedding rows, t2d length)
    draft_vocab_size: int                    # N: lm_head rows
    target_hidden_size: int                  # Ht; fc maps 3*Ht -> H
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None         # HF rope_parameters / rope_scaling beyond "default"
    max_position_embeddings: int = 8192
    hidden_act: str = "silu"
    aux_layer_ids: tuple[int, ...] | None = None   # HF hidden-state indices; None: the default
    fc_norm: bool = False                    # RMSNorm per aux state before fc
    norm_before_fc: bool = False             # one RMSNorm over the 3*Ht concatenation before fc
    norm_before_residual: bool = False       # residual = hidden_norm(hidden)
    norm_logits: bool = True                 # logits = lm_head(norm(h)); False: lm_head(h)
    feed_normed: bool = False                # EAGLE 3.1: the next step gets norm(h), not h
    qk_norm: bool = False                    # Qwen3-style per-head q/k RMSNorm
    fc_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False        # lm_head is the embedding (SGLang does the same)
    layout: str = "specforge"                # "specforge" | "speculators"

    @property
    def num_aux(self) -> int:
        return 3 if self.aux_layer_ids is None else len(self.aux_layer_ids)


def _rope(d: dict) -> tuple[float, dict | None]:
    """(theta, scaling) from either transformers 5 `rope_parameters` or 4.x `rope_theta`/`rope_scaling`."""
    params = d.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    scaling = d.get("rope_scaling") or params
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    return theta, (None if kind in (None, "default") else dict(scaling))


def config_from_dict(d: dict, where: str = "config") -> Eagle3Config:
    """An Eagle3Config from a config.json in the SpecForge/SGLang layout (flat Llama config +
    draft_vocab_size) or the speculators layout (speculators_model_type "eagle3")."""
    flat = flat_eagle3_config(d, where)
    speculators = flat is not d
    archs = set(d.get("architectures") or [])
    if not speculators and "draft_vocab_size" not in d and not archs & SPECFORGE_ARCHS:
        raise VTError(f"not an EAGLE-3 config (no draft_vocab_size, architectures {sorted(archs) or 'missing'})")
    missing = [k for k in ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size") if k not in flat]
    if missing:
        raise VTError(f"EAGLE-3 config lacks {', '.join(missing)}")
    if int(flat.get("num_hidden_layers", 1)) != 1:
        raise VTError(f"EAGLE-3 drafts with {flat['num_hidden_layers']} decoder layers are not supported (only 1)")
    H, heads = int(flat["hidden_size"]), int(flat["num_attention_heads"])
    theta, scaling = _rope(flat)
    V = int(flat["vocab_size"])
    n = flat.get("draft_vocab_size")
    return Eagle3Config(
        hidden_size=H, num_heads=heads, num_kv_heads=int(flat.get("num_key_value_heads") or heads),
        head_dim=int(flat.get("head_dim") or H // heads), intermediate_size=int(flat["intermediate_size"]),
        vocab_size=V, draft_vocab_size=int(n) if n is not None else V,
        target_hidden_size=int(flat.get("target_hidden_size") or H),
        rms_norm_eps=float(flat.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=int(flat.get("max_position_embeddings", 8192)),
        hidden_act=flat.get("hidden_act", "silu"), aux_layer_ids=flat_aux_ids(flat),
        fc_norm=bool(flat.get("fc_norm", False)), norm_before_fc=bool(flat.get("norm_before_fc", False)),
        norm_before_residual=bool(flat.get("norm_before_residual", False)),
        norm_logits=bool(flat.get("norm_output", True)), feed_normed=bool(flat.get("speculators_norm_output")),
        # speculators' layer config defaults to Qwen3's (q/k norms)
        qk_norm=flat.get("model_type", "qwen3" if speculators else None) == "qwen3", fc_bias=bool(flat.get("bias", False)),
        attention_bias=bool(flat.get("attention_bias", False)), mlp_bias=bool(flat.get("mlp_bias", False)),
        tie_word_embeddings=bool(flat.get("tie_word_embeddings", False)),
        layout="speculators" if speculators else "specforge")


def flat_config(cfg: Eagle3Config) -> dict:
    """The flat config of an Eagle3Config: what config_from_dict reads back to the same config."""
    rope = {"rope_type": "default"} if cfg.rope_scaling is None else dict(cfg.rope_scaling)
    flat = {"architectures": [SPECFORGE_ARCH], "model_type": "qwen3" if cfg.qk_norm else "llama",
            "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
            "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size, "num_hidden_layers": 1,
            "rms_norm_eps": cfg.rms_norm_eps, "hidden_act": cfg.hidden_act,
            "max_position_embeddings": cfg.max_position_embeddings,
            "rope_parameters": {"rope_theta": cfg.rope_theta, **rope},
            "attention_bias": cfg.attention_bias, "mlp_bias": cfg.mlp_bias,
            "draft_vocab_size": cfg.draft_vocab_size, "target_hidden_size": cfg.target_hidden_size,
            "tie_word_embeddings": cfg.tie_word_embeddings, "norm_output": cfg.norm_logits, "fc_norm": cfg.fc_norm,
            "norm_before_fc": cfg.norm_before_fc, "norm_before_residual": cfg.norm_before_residual,
            "bias": cfg.fc_bias}
    if cfg.feed_normed:
        flat["speculators_norm_output"] = True
    if cfg.aux_layer_ids:   # only ids the config named: a draft on the engines' shared default stays without
        flat["aux_hf_ids"] = list(cfg.aux_layer_ids)
    return flat


def specforge_config(flat: dict) -> dict:
    """A flat EAGLE-3 config as SGLang's LlamaForCausalLMEagle3 reads it; refuses what it cannot say.
    Aux ids go under eagle_config in the convention SGLang reads back (specforge_aux_ids)."""
    for key in ("norm_before_residual", "norm_before_fc", "speculators_norm_output"):
        if flat.get(key):
            raise VTError(f"the draft has {key.replace('speculators_', '')}: true (speculators' meaning), which "
                          "SGLang's LlamaForCausalLMEagle3 (and SpecForge's) cannot express; export it with "
                          "--format speculators instead")
    if flat.get("model_type") == "qwen3":
        raise VTError("the draft's layer is Qwen3's (per-head q/k norms), which SGLang's LlamaForCausalLMEagle3 "
                      "(and SpecForge's) cannot express; export it with --format speculators instead")
    out = {k: v for k, v in flat.items() if k not in ("norm_before_residual", "norm_before_fc", *_OURS)}
    if flat.get("aux_hf_ids"):
        out["eagle_config"] = {**(flat.get("eagle_config") or {}), "use_aux_hidden_state": True,
                               "eagle_aux_hidden_state_layer_ids": specforge_aux_ids(flat["aux_hf_ids"])}
    return out


def speculators_config(flat: dict, verifier: dict | None, base: dict | None = None,
                       target_config: dict | None = None) -> dict:
    """The config.json of an Eagle3Speculator draft (speculators' layout, what vLLM reads), from a
    flat EAGLE-3 config with draft_vocab_size and vocab_size already set.

    From a speculators draft (`base`) every field is kept and only the sizes (and the verifier,
    when given) change. Otherwise the fields are those speculators' Eagle3Converter writes: the
    decoder layer's config under transformer_layer_config (max_position_embeddings at least the
    target's), norm_before_residual false (SpecForge's layer adds the residual before hidden_norm;
    vLLM assumes true when the field is missing), one greedy proposal of 3 tokens, the verifier."""
    if base is not None:
        out = json.loads(json.dumps(base))
        out["draft_vocab_size"] = int(flat["draft_vocab_size"])
        out["transformer_layer_config"]["vocab_size"] = int(flat["vocab_size"])
        if verifier is not None:
            out.setdefault("speculators_config", {})["verifier"] = verifier
        return out
    if verifier is None:
        raise VTError("a speculators config needs its verifier (the target model: a hub id or directory)")
    if flat.get("norm_output") is False:
        raise VTError("the draft has norm_output: false (SpecForge: logits from the un-normed state), which the "
                      "speculators layout cannot express")
    layer = {k: v for k, v in flat.items() if k not in EAGLE3_FIELDS
             and k not in ("architectures", "eagle_config", "draft_vocab_size", "bias", *_OURS)}
    layer["tie_word_embeddings"] = False
    target_len = (target_config or {}).get("max_position_embeddings")
    if isinstance(target_len, int) and target_len > int(layer.get("max_position_embeddings") or 0):
        layer["max_position_embeddings"] = target_len
    aux = flat_aux_ids(flat)
    return {
        "architectures": ["Eagle3Speculator"],
        "speculators_model_type": "eagle3",
        "speculators_version": SPECULATORS_VERSION,
        "draft_vocab_size": int(flat["draft_vocab_size"]),
        "target_hidden_size": flat.get("target_hidden_size"),
        "norm_before_residual": bool(flat.get("norm_before_residual", False)),
        "norm_before_fc": bool(flat.get("norm_before_fc", False)),
        "fc_norm": bool(flat.get("fc_norm", False)),
        "norm_output": bool(flat.get("speculators_norm_output", False)),
        "eagle_aux_hidden_state_layer_ids": list(aux) if aux else None,
        "embed_requires_grad": False,
        "tie_word_embeddings": False,
        "transformer_layer_config": layer,
        "speculators_config": {
            "algorithm": "eagle3",
            "default_proposal_method": "greedy",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": SPECULATIVE_TOKENS,
                                  "accept_tolerance": 0.0, "verifier_accept_k": 1}],
            "verifier": verifier,
        },
    }


# ---------------------------------------------------------------- tensor names

def specforge_names(weights: dict) -> dict:
    """speculators' tensor names -> SpecForge's: the first decoder layer is midlayer.*."""
    return {SPECFORGE_LAYER + k[len(SPECULATORS_LAYER):] if k.startswith(SPECULATORS_LAYER) else k: v
            for k, v in weights.items()}


def speculators_names(weights: dict) -> dict:
    """SpecForge's tensor names -> speculators' (and vLLM's): midlayer.* is layers.0.*."""
    return {SPECULATORS_LAYER + k[len(SPECFORGE_LAYER):] if k.startswith(SPECFORGE_LAYER) else k: v
            for k, v in weights.items()}


MODULE_LAYER = "layer."   # vtcore.eagle3.Eagle3Draft's name for the decoder layer
_TO_MODULE = (("model.", ""), (SPECFORGE_LAYER, MODULE_LAYER), (SPECULATORS_LAYER, MODULE_LAYER),
              ("midlayers.0.", MODULE_LAYER))


def module_names(weights: dict) -> dict:
    """A checkpoint's tensors (either layout) under Eagle3Draft's names, without what is not the
    draft's (speculators keeps copies of the verifier's norm/head; rotary caches)."""
    out = {}
    for k, v in weights.items():
        if k.startswith(("verifier_", "model.verifier_")) or "rotary_emb" in k:
            continue
        for a, b in _TO_MODULE:
            if k.startswith(a):
                k = b + k[len(a):]
        out[k] = v
    return out


def checkpoint_names(weights: dict) -> dict:
    """Eagle3Draft's tensor names -> SpecForge's (the layer is midlayer.*)."""
    return {SPECFORGE_LAYER + k[len(MODULE_LAYER):] if k.startswith(MODULE_LAYER) else k: v
            for k, v in weights.items()}


# ---------------------------------------------------------------- writing

def checkpoint_files(flat: dict, weights: dict, layout: str, verifier: dict | None = None,
                     base: dict | None = None, target_config: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """(config, {file name: bytes}) of an EAGLE-3 checkpoint in `layout` ("specforge" or
    "speculators"), from a flat config and tensors under SpecForge's names."""
    if layout == "speculators":
        config = speculators_config(flat, verifier, base, target_config)
        weights = speculators_names(weights)
    elif layout == "specforge":
        config = specforge_config(flat)
    else:
        raise VTError(f"unknown EAGLE-3 layout {layout!r} (specforge or speculators)")
    return config, {"config.json": (json.dumps(config, indent=2) + "\n").encode(),
                    WEIGHTS_FILE: safetensors_bytes(weights)}


# ---------------------------------------------------------------- reading

@dataclass
class DraftCheckpoint:
    """A draft directory as read: a flat config and SpecForge tensor names whatever its layout."""

    config: dict                    # flat: a causal LM's config, or SpecForge's EAGLE-3 config
    weights: dict[str, Any]
    layout: str                     # hf | specforge | speculators
    speculators: dict | None = None  # the original config.json of a speculators draft

    @property
    def eagle3(self) -> bool:
        return self.layout != "hf"


def read_draft(directory: str | os.PathLike) -> DraftCheckpoint:
    """A draft directory in any layout vtcore reads: a standalone causal LM, an EAGLE-3 draft in
    SpecForge / SGLang layout, or one in speculators' layout (renamed to the SpecForge form)."""
    raw = read_config(directory)
    weights = load_weights(directory)
    layout = draft_layout(raw, {k: tuple(v.shape) for k, v in weights.items()})
    if layout == "speculators":
        return DraftCheckpoint(flat_eagle3_config(raw, f"{directory}/config.json"), specforge_names(weights),
                               layout, raw)
    return DraftCheckpoint(raw, weights, layout)


def read_eagle3_config(path: str | os.PathLike) -> Eagle3Config:
    """The Eagle3Config of a checkpoint directory (or its config.json), in either layout."""
    p = Path(path)
    d = read_config(p if p.is_dir() else p.parent)
    try:
        return config_from_dict(d)
    except VTError as e:
        raise VTError(f"{p}: {e}") from None


def draft_source(directory: str | os.PathLike, config: dict) -> tuple[dict, TensorSource, str]:
    """(flat config, tensors under SpecForge names, layout) of a draft directory, tensors read lazily."""
    src = tensor_source(directory=directory)
    layout = draft_layout(config, src.shapes)
    if layout != "speculators":
        return config, src, layout
    rename = {k: k2 for k, k2 in zip(src.shapes, specforge_names(dict.fromkeys(src.shapes)))}
    back = {v: k for k, v in rename.items()}
    return (flat_eagle3_config(config, f"{directory}/config.json"),
            TensorSource({rename[k]: s for k, s in src.shapes.items()}, lambda name: src.get(back[name])), layout)


@dataclass
class TrimmedDraft:
    """A trimmed draft directory as read: its config, its tensors without d2t/t2d, the kept ids."""

    config: dict
    weights: dict[str, Any]         # lm_head.weight is [N, H]; the input embedding stays [V, H]
    kept: np.ndarray                # int64[N] ascending: target id of head row i


def read_trimmed_draft(directory: str | os.PathLike) -> TrimmedDraft:
    """A trimmed draft (config.json with draft_vocab_size, lm_head [N, H], d2t and t2d), checked:
    N rows everywhere, ascending ids inside the vocabulary, t2d marking exactly them. Either
    EAGLE-3 layout is read too (config and names in the SpecForge form)."""
    directory = Path(directory)
    ck = read_draft(directory)
    config, weights = ck.config, ck.weights
    for key in ("lm_head.weight", "d2t"):
        if key not in weights:
            raise VTError(f"{directory}: not a trimmed draft (its weights lack '{key}')")
    n = config.get("draft_vocab_size", weights["d2t"].numel())
    kept = ids_from_d2t(weights.pop("d2t"))
    t2d = weights.pop("t2d", None)
    rows = int(weights["lm_head.weight"].shape[0])
    if rows != n or kept.size != n:
        raise VTError(f"{directory}: draft_vocab_size is {n} but lm_head has {rows} rows and d2t {kept.size}")
    V = int(config.get("vocab_size", 0))
    if n > 1 and not (kept[1:] > kept[:-1]).all():
        raise VTError(f"{directory}: d2t does not give ascending kept ids (row i must be the i-th smallest kept id)")
    if kept.min() < 0 or kept.max() >= V:
        raise VTError(f"{directory}: d2t maps to ids outside the vocabulary (0..{V - 1})")
    if t2d is not None and (t2d.numel() != V or not np.array_equal(np.flatnonzero(t2d.numpy()), kept)):
        raise VTError(f"{directory}: t2d does not mark exactly the ids d2t maps to")
    return TrimmedDraft(config, weights, kept)

