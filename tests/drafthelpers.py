"""Shared by test_speculative.py and test_bench.py: a model saved in the "hf-draft" layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_hf_draft(model, kept, path: Path) -> None:
    """The "hf-draft" layout the export module writes (see speculative.load_draft): the LM head cut
    to the kept rows (sorted ascending), d2t/t2d beside it, draft_vocab_size in config.json."""
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
