"""Shared by the dashboard tests (test_app.py, test_e2e.py): a tiny target/draft pair of a real
architecture (random weights, the real bundled Qwen3 tokenizer) so a benchmark runs in seconds,
and small real datasets."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "samples" / "code.jsonl"


def tiny_pair(root: Path) -> tuple[Path, Path]:
    """A 2-layer Qwen3 target (hidden 16) and a 1-layer draft made of its first layer, each saved
    with the bundled Qwen3 tokenizer; vocabulary 151,936 rows like the real Qwen3 models."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vtcore.tokens import load_tokenizer

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    target = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        target.model.embed_tokens.weight.mul_(20)   # sharper logits: the draft agrees sometimes
    dcfg = Qwen3Config(**{**cfg.to_dict(), "num_hidden_layers": 1, "layer_types": cfg.layer_types[:1]})
    draft = Qwen3ForCausalLM(dcfg).eval()
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if "layers.1." not in k}, strict=False)
    tok = load_tokenizer()
    tdir, ddir = root / "target", root / "draft"
    for model, d in ((target, tdir), (draft, ddir)):
        model.save_pretrained(d)
        tok.save_pretrained(d)
    return tdir, ddir


def code_rows(n: int) -> bytes:
    """The first n rows of the HumanEval sample, as JSONL bytes (a real small upload)."""
    lines = CODE.read_text(encoding="utf-8").splitlines()[:n]
    assert len(lines) == n
    return ("\n".join(lines) + "\n").encode()


def malformed_rows() -> bytes:
    """One good row, then a line cut in the middle (line 2)."""
    first = json.loads(CODE.read_text(encoding="utf-8").splitlines()[0])
    return (json.dumps(first) + "\n" + '{"messages": [{"role": "user", "content": "unterminated\n').encode()
