"""Measured latency profiles (vtcore.profile, `python -m vtcore profile`), on real architectures
with random weights: tiny shapes per family, and the real smollm2-135m-2l draft on the CPU."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clihelpers import last_json, run_vtcore
from vtcore import cost, profile  # noqa: E402
from vtcore.errors import VTError  # noqa: E402


TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 4096}
FAMILIES = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 8},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"},
    "gemma2": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "sliding_window": 8,
               "final_logit_softcapping": 30.0},
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "sliding_window": 8},
    "phi3": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "num_key_value_heads": 4,
             "head_dim": None, "pad_token_id": 0},
    "eagle3": {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "num_hidden_layers": 1,
               "draft_vocab_size": 1024},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_and_times(family):
    arch = cost.arch_from_config({**TINY, **FAMILIES[family]}, name=f"tiny-{family}")
    prof = profile.measure_profile(arch, ks=[256, 2048], context=32, repeats=2, warmup=1, rounds=1, threads=1)
    assert prof.ks == [256, 2048, 4096] and prof.vocab_size == 4096 and prof.context == 32
    assert all(t > 0 for t in prof.step_ms + prof.head_ms)
    assert prof.threads == 1 and prof.device == "cpu" and prof.dtype == "float32"
    assert float(prof.latency_reduction(4096)) == 0.0


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_decoder_step_leaves_the_cache_at_context(family):
    arch = cost.arch_from_config({**TINY, **FAMILIES[family]})
    with torch.inference_mode():
        body = profile._make_body(arch, 32, torch.float32, "cpu")
        token = torch.zeros(1, 1, dtype=torch.long)
        outs = [body(token) for _ in range(4)]
    assert outs[0].shape == (1, 1, 64)
    if family == "llama":   # same input, position and cache: every step computes the same hidden state
        assert all(torch.allclose(o, outs[0], atol=1e-5) for o in outs[1:])
    full = [layer for layer in body.cache.layers if not layer.is_sliding]
    assert full and all(int(layer.get_seq_length()) == 32 for layer in full)


def test_an_eagle3_profile_times_the_real_draft_with_the_configs_rope():
    outs = {}
    for theta in (10000.0, 500000.0):
        arch = cost.arch_from_config({**TINY, **FAMILIES["eagle3"], "rope_theta": theta})
        torch.manual_seed(0)   # the same weights and cache for both: only the RoPE differs
        with torch.inference_mode():
            body = profile._make_body(arch, 32, torch.float32, "cpu")
            steps = [body(torch.zeros(1, 1, dtype=torch.long)) for _ in range(3)]
        assert body.draft.cfg.rope_theta == theta and body.cache.length == 32   # the cache stays at context
        assert torch.allclose(body.draft.inv_freq, 1.0 / theta ** (torch.arange(0, 16, 2).float() / 16))
        assert steps[0].shape == (1, 1, 64) and all(torch.allclose(s, steps[0], atol=1e-6) for s in steps[1:])
        outs[theta] = steps[0]
    assert not torch.allclose(outs[10000.0], outs[500000.0], atol=1e-4)   # the query's rotation is the config's


def test_smollm2_profile_on_cpu():
    arch = cost.preset("smollm2-135m-2l")
    prof = profile.measure_profile(arch, ks=[1024, 8192], repeats=5, warmup=2, threads=1)
    assert prof.ks == [1024, 8192, 49152]
    head = dict(zip(prof.ks, prof.head_ms))
    step = dict(zip(prof.ks, prof.step_ms))
    # 48x the rows: the head alone must cost several times more, and so must the step
    assert head[49152] > 4 * head[1024]
    assert step[49152] > step[1024] + 0.5 * (head[49152] - head[1024])
    r = prof.latency_reduction(np.array(prof.ks))
    assert 0 < r[0] < 1 and r[-1] == 0.0
    # linear interpolation between grid points
    mid = (1024 + 8192) // 2
    assert float(prof.step_at(mid)) == pytest.approx((step[1024] + step[8192]) / 2, rel=1e-3)
    eff = profile.cache_effect(prof, arch)
    assert set(eff["latency_reduction_flops"]) == set(prof.ks) and isinstance(eff["present"], bool)
    assert eff["note"].startswith("cache effect measured" if eff["present"] else "no cache effect")


def _synthetic(head_ms):
    return profile.LatencyProfile(draft="x", vocab_size=65536, hidden=576, device="cpu", device_name="cpu",
                                  dtype="float32", threads=1, torch_version=torch.__version__, context=1024,
                                  ks=[4096, 16384, 65536], step_ms=[h + 2.0 for h in head_ms], head_ms=head_ms)


def test_cache_effect_reports_either_way():
    arch = replace(cost.preset("smollm2-135m-2l"), vocab=65536)
    linear = profile.cache_effect(_synthetic([1.0, 4.0, 16.0]), arch)          # cost per row constant
    assert not linear["present"] and linear["per_row_speedup"] == pytest.approx(1.0)
    cached = profile.cache_effect(_synthetic([0.25, 1.0, 16.0]), arch)         # small heads 4x cheaper per row
    assert cached["present"] and cached["per_row_speedup"] == pytest.approx(4.0)
    assert cached["latency_reduction_measured"][4096] > cached["latency_reduction_flops"][4096] - 1   # both reported


def test_profile_file_round_trip_and_validation(tmp_path):
    prof = _synthetic([0.25, 1.0, 16.0])
    path = profile.save_profile(tmp_path / "p.json", prof)
    back = profile.load_profile(path)
    assert back == prof
    d = json.loads(path.read_text())
    for broken, message in [({**d, "format": "other"}, "not a latency profile"),
                            ({k: v for k, v in d.items() if k != "step_ms"}, "missing step_ms"),
                            ({**d, "ks": [16384, 4096, 65536]}, "strictly increasing"),
                            ({**d, "ks": [4096, 16384, 60000]}, "must end at the full vocabulary")]:
        (tmp_path / "b.json").write_text(json.dumps(broken))
        with pytest.raises(VTError, match=message):
            profile.load_profile(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(VTError, match="not valid JSON"):
        profile.load_profile(tmp_path / "c.json")
    with pytest.raises(VTError, match="measured for x"):
        back.check_for(cost.preset("qwen3-0.6b"))


def test_bad_requests():
    arch = cost.arch_from_config({**TINY, **FAMILIES["llama"]})
    with pytest.raises(VTError, match="between 1 and"):
        profile.measure_profile(arch, ks=[0, 5000], repeats=1)
    with pytest.raises(VTError, match="--dtype"):
        profile.measure_profile(arch, dtype="int8", repeats=1)
    with pytest.raises(VTError, match="--device"):
        profile.measure_profile(arch, device="tpu", repeats=1)
    if not torch.cuda.is_available():
        with pytest.raises(VTError, match="no CUDA device"):
            profile.measure_profile(arch, device="cuda", repeats=1)


def test_cli_profile(tmp_path):
    # a Qwen3-shaped draft small enough to profile in a test, with Qwen3's padded vocabulary
    cfg = tmp_path / "draft" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({**TINY, **FAMILIES["qwen3"], "vocab_size": 151936}))
    p = run_vtcore("profile", "--draft", str(cfg), "--ks", "4096", "32768", "--repeats", "3", "--threads", "1",
                   "--context", "64", "--json", ws=tmp_path)
    r = last_json(p)
    assert r["ks"] == [4096, 32768, 151936] and Path(r["profile_path"]).is_file()
    assert str(tmp_path / "profiles") in r["profile_path"]
    for key in ("step_ms", "head_ms", "cache_effect", "cache_effect_note", "latency_reduction_measured",
                "latency_reduction_flops", "device", "dtype", "threads", "torch_version", "context"):
        assert key in r, key

    p = run_vtcore("profile", "--draft", "smollm2-135m-2l",
                   "--device", "cuda:0" if not torch.cuda.is_available() else "tpu", "--json", ws=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
