"""Shared by the engine, benchmark and dashboard tests: a tiny target/draft pair of a real
architecture (random weights, the real bundled Qwen3 tokenizer) so a benchmark runs in seconds,
and a model saved in the "hf-draft" layout. torch is imported inside, when used."""

from __future__ import annotations

import json
from pathlib import Path

V = 151936  # Qwen3's padded embedding size; the tokenizer has 151,669 ids


def tiny_pair(root: Path, extra_token: bool = False):
    """A 2-layer Qwen3 target (hidden 16) and a 1-layer draft made of its first layer (so the draft
    is right often), each saved with the bundled Qwen3 tokenizer; vocabulary 151,936 rows like the
    real Qwen3 models. extra_token: the draft's tokenizer gets one more token (a mismatch).
    Returns (target dir, draft dir, draft model)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from vtcore.tokens import load_tokenizer

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    target = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        target.model.embed_tokens.weight.mul_(20)  # sharper logits: some agreement with the draft
    dcfg = Qwen3Config(**{**cfg.to_dict(), "num_hidden_layers": 1, "layer_types": cfg.layer_types[:1]})
    draft = Qwen3ForCausalLM(dcfg).eval()
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if "layers.1." not in k}, strict=False)
    tok = load_tokenizer()
    tdir, ddir = root / "target", root / "draft"
    target.save_pretrained(tdir)
    tok.save_pretrained(tdir)
    draft.save_pretrained(ddir)
    if extra_token:
        tok = AutoTokenizer.from_pretrained(str(tdir))  # a copy: load_tokenizer() is cached, leave it alone
        tok.add_tokens(["<my_new_token>"])
    tok.save_pretrained(ddir)
    return tdir, ddir, draft


def write_hf_draft(model, kept, path: Path) -> None:
    """The "hf-draft" layout the export module writes (see speculative.load_draft): the LM head cut
    to the kept rows (sorted ascending), d2t/t2d beside it, draft_vocab_size in config.json."""
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    kept = torch.as_tensor(sorted(kept))
    cfg = model.config.to_dict()
    cfg.update(draft_vocab_size=len(kept), tie_word_embeddings=False)
    (path / "config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["lm_head.weight"] = model.lm_head.weight[kept].contiguous()
    state["d2t"] = kept - torch.arange(len(kept))
    t2d = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    t2d[kept] = True
    state["t2d"] = t2d
    save_file(state, str(path / "model.safetensors"))


def tiny_eagle3(target_dir: Path, path: Path, draft_ids=None, layout: str = "speculators", seed: int = 0) -> Path:
    """A random EAGLE-3 head for tiny_pair's 2-layer target, saved in `layout` without the
    embedding (taken from the target at load time, as real EAGLE-3 checkpoints do). Its head
    rows are the target's own rows of `draft_ids` (default: every id), so it proposes plausible
    tokens; it reads the target's states at HF indices (0, 1, 2)."""
    import torch
    from transformers import AutoModelForCausalLM

    from vtcore import checkpoints
    from vtcore import eagle3 as E

    target = AutoModelForCausalLM.from_pretrained(str(target_dir))
    c = target.config
    ids = torch.arange(c.vocab_size) if draft_ids is None else torch.as_tensor(sorted(draft_ids))
    cfg = checkpoints.config_from_dict({"architectures": ["LlamaForCausalLMEagle3"], "hidden_size": c.hidden_size,
                              "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
                              "head_dim": 8, "vocab_size": c.vocab_size, "draft_vocab_size": int(ids.numel()),
                              "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
                              "eagle_aux_hidden_state_layer_ids": [0, 1, 2]})
    draft = E.Eagle3Draft(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    draft.embed_weight = target.get_input_embeddings().weight.detach()
    draft.head = target.get_output_embeddings().weight.detach()[ids].contiguous()
    draft.d2t = ids - torch.arange(ids.numel())
    draft.t2d = torch.zeros(c.vocab_size, dtype=torch.bool)
    draft.t2d[ids] = True
    draft.aux_ids = (0, 1, 2)
    return E.save_eagle3(draft, path, layout=layout, include_embed=False)


def eagle3_checkpoint(path: Path, vocab: int, kept_sorted, hidden: int = 16, seed: int = 0) -> dict:
    """An EAGLE-3 draft checkpoint in SpecForge's serving layout (to_sglang.py): fc, midlayer.*,
    norm, lm_head [N, H] and the d2t/t2d buffers; random weights (tests/test_engines.py makes a
    real one with SpecForge itself)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from vtcore.formats import eagle3_mapping

    from vtcore import eagle3 as E

    g = torch.Generator().manual_seed(seed)
    n = int(np.asarray(kept_sorted).size)
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": 2 * hidden, "num_attention_heads": 2, "num_key_value_heads": 1,
              "num_hidden_layers": 1, "vocab_size": vocab, "draft_vocab_size": n, "tie_word_embeddings": False}
    from vtcore import checkpoints

    with torch.device("meta"):   # every tensor the config implies (fc, the decoder layer, norms)
        shapes = {k: v.shape for k, v in E.Eagle3Draft(checkpoints.config_from_dict(config)).trainable_state().items()}
    w = {k: torch.ones(s) if len(s) == 1 else torch.randn(s, generator=g) for k, s in shapes.items()}
    w["lm_head.weight"] = torch.randn(n, hidden, generator=g)
    w.update(eagle3_mapping(kept_sorted, vocab))
    path.mkdir(parents=True)
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config))
    return w


def tiny_target_config(path: Path, vocab: int = V) -> Path:
    """A target model's directory with only its config.json: enough for V and the speculators verifier."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                                                  "vocab_size": vocab, "hidden_size": 16,
                                                  "max_position_embeddings": 40960}))
    return path
