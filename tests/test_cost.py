"""Draft architectures, presets and the FLOPs cost model (vtcore.cost, `python -m vtcore flops`)."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clihelpers import last_json, run_vtcore  # noqa: E402
from vtcore import cost  # noqa: E402
from vtcore.errors import VTError  # noqa: E402


# Real configs (abridged to the fields a cost model reads, values as published on the HF hub /
# in SpecForge's configs/ folder).
CONFIGS = {
    "llama3.2-1b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                    "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                    "num_hidden_layers": 16, "vocab_size": 128256, "tie_word_embeddings": True},
    "mistral-7b-v0.1": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
                        "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "num_hidden_layers": 32, "vocab_size": 32000, "sliding_window": 4096,
                        "tie_word_embeddings": False},
    "qwen2.5-0.5b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
                     "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "num_hidden_layers": 24, "vocab_size": 151936, "sliding_window": 32768,
                     "use_sliding_window": False, "tie_word_embeddings": True},
    "qwen3-0.6b": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
                   "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                   "num_hidden_layers": 28, "vocab_size": 151936, "tie_word_embeddings": True,
                   "sliding_window": None, "use_sliding_window": False},
    "gemma-2-2b": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304,
                   "intermediate_size": 9216, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                   "num_hidden_layers": 26, "vocab_size": 256000, "sliding_window": 4096,
                   "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
                   "hidden_activation": "gelu_pytorch_tanh"},
    "gemma-3-1b": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152,
                   "intermediate_size": 6912, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                   "num_hidden_layers": 26, "vocab_size": 262144, "sliding_window": 512,
                   "sliding_window_pattern": 6, "final_logit_softcapping": None},
    # multimodal Gemma 3: transformers saves text_config as a diff against Gemma3TextConfig defaults
    "gemma-3-4b": {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                   "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                                   "num_hidden_layers": 34, "sliding_window": 1024,
                                   "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
                   "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}},
    "phi-3-mini-4k": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072,
                      "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 32,
                      "num_hidden_layers": 32, "vocab_size": 32064, "sliding_window": 2047,
                      "tie_word_embeddings": False},
    # SpecForge configs/qwen3-8b-eagle3.json
    "eagle3-qwen3-8b": {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "head_dim": 128,
                        "hidden_size": 4096, "intermediate_size": 12288, "num_attention_heads": 32,
                        "num_hidden_layers": 1, "num_key_value_heads": 8, "vocab_size": 151936,
                        "draft_vocab_size": 32000, "tie_word_embeddings": False},
    # SpecForge configs/gemma3-1b-eagle3.json: an EAGLE-3 head for a Gemma target
    "eagle3-gemma3-1b": {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "head_dim": 256,
                         "hidden_size": 1152, "intermediate_size": 6912, "num_attention_heads": 4,
                         "num_hidden_layers": 1, "num_key_value_heads": 1, "vocab_size": 262144,
                         "draft_vocab_size": 32000, "target_model_type": "gemma3_text"},
}

EXPECTED = {  # name: (kind, family, hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, tied)
    "llama3.2-1b": ("decoder", "llama", 2048, 16, 32, 8, 64, 8192, 128256, True),
    "mistral-7b-v0.1": ("decoder", "mistral", 4096, 32, 32, 8, 128, 14336, 32000, False),
    "qwen2.5-0.5b": ("decoder", "qwen2", 896, 24, 14, 2, 64, 4864, 151936, True),
    "qwen3-0.6b": ("decoder", "qwen3", 1024, 28, 16, 8, 128, 3072, 151936, True),
    "gemma-2-2b": ("decoder", "gemma2", 2304, 26, 8, 4, 256, 9216, 256000, True),
    "gemma-3-1b": ("decoder", "gemma3", 1152, 26, 4, 1, 256, 6912, 262144, True),
    "gemma-3-4b": ("decoder", "gemma3", 2560, 34, 8, 4, 256, 10240, 262208, True),
    "phi-3-mini-4k": ("decoder", "phi3", 3072, 32, 32, 32, 96, 8192, 32064, False),
    "eagle3-qwen3-8b": ("eagle3", "llama", 4096, 1, 32, 8, 128, 12288, 151936, False),
    "eagle3-gemma3-1b": ("eagle3", "llama", 1152, 1, 4, 1, 256, 6912, 262144, False),
}


# --- the seed paper's proxy, reproduced exactly ---------------------------------------------

def test_paper_flops_reproduce_the_seed_paper():
    a = cost.preset("eagle3-llama3.1-8b")
    assert cost.lm_head_share(a, mode="paper-flops") == pytest.approx(0.6415, abs=1e-4)
    r = cost.latency_reduction(a, np.array([32000, 13264]), mode="paper-flops")
    assert r[0] == pytest.approx(0.481, abs=1e-3)
    assert r[1] == pytest.approx(0.575, abs=1e-3)


def test_paper_flops_components_follow_the_lead_arithmetic():
    a = cost.preset("eagle3-llama3.1-8b")
    h, i, kv, V = 4096, 14336, 8 * 128, 128256
    b = cost.flops_breakdown(a, mode="paper-flops")
    assert b["fc"] == 2 * 3 * h * h
    assert b["attn_proj"] == 2 * 2 * h * h + 2 * (2 * 2 * h * kv) + 2 * h * h
    assert b["mlp"] == 3 * 2 * h * i
    assert b["lm_head"] == 2 * h * V
    assert b["attn_scores"] == b["norms"] == b["embedding"] == b["other"] == 0
    assert sum(b.values()) / 1e6 == pytest.approx(1637.9, abs=0.05)
    # only the head depends on k, and the paper proxy ignores the context
    assert cost.flops_breakdown(a, 13264, context=8192, mode="paper-flops")["lm_head"] == 2 * h * 13264
    assert sum(cost.body_breakdown(a, 8192, "paper-flops").values()) == sum(cost.body_breakdown(a, 16, "paper-flops").values())


def test_full_flops_add_attention_norms_and_grow_with_context():
    a = cost.preset("eagle3-llama3.1-8b")
    paper = sum(cost.flops_breakdown(a, mode="paper-flops").values())
    short = cost.flops_breakdown(a, context=128)
    long = cost.flops_breakdown(a, context=4096)
    assert sum(short.values()) > paper
    assert long["attn_scores"] == pytest.approx(32 * short["attn_scores"])   # linear in L
    assert short["norms"] > 0 and short["embedding"] == 0                    # lookup: no arithmetic
    assert cost.lm_head_share(a, context=4096) < cost.lm_head_share(a, context=128) < cost.lm_head_share(a, mode="paper-flops")


def test_latency_reduction_vectorised_monotone_and_zero_at_full_vocab():
    for name in cost.DRAFT_PRESETS:
        a = cost.preset(name)
        ks = np.arange(1, a.vocab + 1, 997)
        r = cost.latency_reduction(a, ks)
        loop = [1 - float(cost.total_flops(a, int(k))) / float(cost.total_flops(a, a.vocab)) for k in ks]
        assert np.allclose(r, loop)
        assert np.all(np.diff(r) < 0)
        assert float(cost.latency_reduction(a, a.vocab)) == 0.0
        # R(1) is the head's share minus one row: the most trimming can save
        assert float(cost.latency_reduction(a, 1)) == pytest.approx(cost.lm_head_share(a), abs=1e-4)


def test_gqa_makes_kv_projections_cheaper():
    cfg = dict(CONFIGS["llama3.2-1b"])
    gqa = cost.arch_from_config(cfg)
    mha = cost.arch_from_config({**cfg, "num_key_value_heads": 32})
    b_gqa, b_mha = cost.body_breakdown(gqa), cost.body_breakdown(mha)
    h, hd, L = 2048, 64, 16
    assert b_mha["attn_proj"] - b_gqa["attn_proj"] == pytest.approx(L * 2 * (2 * h * (32 - 8) * hd))
    assert b_mha["attn_scores"] == b_gqa["attn_scores"]   # every query head still scores every position


def test_sliding_window_caps_attention_span():
    g2 = cost.arch_from_config(CONFIGS["gemma-2-2b"])
    assert g2.layer_types[:2] == ("sliding_attention", "full_attention")
    full = cost.arch_from_config({**CONFIGS["gemma-2-2b"], "sliding_window": None})
    # below the window nothing changes; beyond it half of Gemma 2's layers stop growing
    assert cost.body_breakdown(g2, 2048)["attn_scores"] == cost.body_breakdown(full, 2048)["attn_scores"]
    assert cost.body_breakdown(g2, 16384)["attn_scores"] == pytest.approx(
        0.5 * cost.body_breakdown(full, 16384)["attn_scores"] + 0.5 * cost.body_breakdown(full, 4096)["attn_scores"])
    g3 = cost.arch_from_config(CONFIGS["gemma-3-1b"])
    assert g3.layer_types.count("full_attention") == 26 // 6   # every 6th layer is global


# --- configs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_real_configs_parse(name, tmp_path):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CONFIGS[name]))
    for src in (CONFIGS[name], d / "config.json", str(d)):   # a dict, the file, its folder
        a = cost.arch_from_config(src)
        got = (a.kind, a.family, a.hidden, a.layers, a.heads, a.kv_heads, a.head_dim, a.intermediate, a.vocab,
               a.tied_embeddings)
        assert got == EXPECTED[name]
    assert sum(cost.flops_breakdown(a).values()) > 0


def test_family_specific_details():
    q2 = cost.arch_from_config(CONFIGS["qwen2.5-0.5b"])
    assert q2.qkv_bias and q2.sliding_window is None          # window off unless use_sliding_window
    q3 = cost.arch_from_config(CONFIGS["qwen3-0.6b"])
    assert q3.qk_norm and not q3.qkv_bias
    g2 = cost.arch_from_config(CONFIGS["gemma-2-2b"])
    assert g2.logit_softcap and g2.norms_per_layer == 4 and g2.embed_scale
    assert cost.head_flops_per_row(g2) == 2 * 2304 + 3 and cost.head_flops_per_row(g2, "paper-flops") == 2 * 2304
    e = cost.arch_from_config(CONFIGS["eagle3-qwen3-8b"])
    assert e.draft_vocab == 32000 and e.target_hidden == 4096
    wide = cost.arch_from_config({**CONFIGS["eagle3-qwen3-8b"], "target_hidden_size": 5120})
    assert cost.body_breakdown(wide)["fc"] == 2 * 3 * 5120 * 4096


def test_missing_fields_are_listed():
    cfg = {k: v for k, v in CONFIGS["qwen3-0.6b"].items() if k not in ("hidden_size", "vocab_size")}
    with pytest.raises(VTError) as e:
        cost.arch_from_config(cfg)
    msg = str(e.value)
    assert "missing hidden_size, vocab_size" in msg and "intermediate_size" in msg   # what a draft needs
    eagle = {k: v for k, v in CONFIGS["eagle3-qwen3-8b"].items() if k != "intermediate_size"}
    with pytest.raises(VTError, match="missing intermediate_size"):
        cost.arch_from_config(eagle)


def test_unknown_architecture_names_the_known_ones(tmp_path):
    cfg = {**CONFIGS["mistral-7b-v0.1"], "architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}
    with pytest.raises(VTError) as e:
        cost.arch_from_config(cfg)
    assert "MixtralForCausalLM" in str(e.value) and "Qwen3ForCausalLM" in str(e.value)
    assert "LlamaForCausalLMEagle3" in str(e.value)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(VTError, match=str(bad)):
        cost.arch_from_config(bad)
    with pytest.raises(VTError, match="multiple of num_key_value_heads"):
        cost.arch_from_config({**CONFIGS["llama3.2-1b"], "num_key_value_heads": 5})
    with pytest.raises(VTError, match="positive integer"):
        cost.arch_from_config({**CONFIGS["llama3.2-1b"], "hidden_size": "2048"})


def test_presets_carry_sources_and_shapes():
    for name in cost.PRESETS:
        a = cost.preset(name)
        assert a.source and a.name == name
    s = cost.preset("smollm2-135m-2l")
    assert (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab, s.tied_embeddings) == \
        (576, 2, 9, 3, 64, 1536, 49152, True)
    assert cost.preset("qwen3-0.6b").vocab == 151936
    e = cost.preset("eagle3-llama3.1-8b")
    assert (e.kind, e.hidden, e.intermediate, e.heads, e.kv_heads, e.vocab) == ("eagle3", 4096, 14336, 32, 8, 128256)
    with pytest.raises(VTError, match="unknown preset"):
        cost.preset("gpt-5")


def test_padded_model_vocab_and_foreign_tokenizer():
    q = cost.preset("qwen3-0.6b")
    cost.check_counts_vocab(151669, q)                   # Qwen3 tokenizer on a 151,936-row model: fine
    with pytest.raises(VTError, match="does not belong"):
        cost.check_counts_vocab(151669, cost.preset("smollm2-135m-2l"))


def test_cost_ratio_against_target():
    d, t = cost.preset("eagle3-llama3.1-8b"), cost.preset("llama3.1-8b")
    ratio = float(cost.total_flops(d, d.vocab)) / cost.target_flops(d)
    assert cost.target_flops(d) == float(cost.total_flops(t, t.vocab))
    assert 0.05 < ratio < 0.2   # a one-layer head against a 32-layer 8B model
    assert cost.target_flops(t) is None


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_flops_json(tmp_path):
    p = run_vtcore("flops", "--draft", "eagle3-llama3.1-8b", "--latency", "paper-flops", "--k", "32000", "13264",
                   "--json", ws=tmp_path, timeout=120)
    r = last_json(p)
    assert r["vocab_size"] == 128256
    assert r["lm_head_share"] == pytest.approx(0.6415, abs=1e-4)
    assert r["latency_reduction"]["32000"] == pytest.approx(0.481, abs=1e-3)
    assert r["latency_reduction"]["13264"] == pytest.approx(0.575, abs=1e-3)
    assert r["total_flops"] == pytest.approx(sum(r["breakdown"].values()))
    assert set(r["breakdown"]) == set(cost.COMPONENTS)
    # a config.json path works the same as a preset
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIGS["gemma-3-4b"]))
    p = run_vtcore("flops", "--draft", str(cfg), "--k", "8192", "--context", "2048", "--json", ws=tmp_path, timeout=120)
    r = last_json(p)
    assert r["vocab_size"] == 262208 and 0 < r["latency_reduction"]["8192"] < r["lm_head_share"]


def test_cli_flops_bad_input_exits_2(tmp_path):
    p = run_vtcore("flops", "--draft", "nope", "--json", ws=tmp_path, timeout=120)
    assert p.returncode == 2 and "preset" in p.stderr and p.stdout == ""
    p = run_vtcore("flops", "--draft", "smollm2-135m-2l", "--k", "0", "99999", "--json", ws=tmp_path, timeout=120)
    assert p.returncode == 2 and "49,152" in p.stderr
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}))
    p = run_vtcore("flops", "--draft", str(cfg), "--json", ws=tmp_path, timeout=120)
    assert p.returncode == 2 and "missing intermediate_size" in p.stderr and len(p.stderr.strip().splitlines()) == 1
