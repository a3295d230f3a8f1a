"""The speculative-decoding engine on tiny random-weight models of real architectures (Llama,
Qwen3): lossless greedy with full and trimmed drafts, KV rollback, the sampling distribution,
token maps and the hf-draft format."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from drafthelpers import write_hf_draft
from vtcore import models
from vtcore import speculative as sp
from vtcore.errors import VTError
from vtcore.formats import read_token_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_llama(vocab=96, layers=3, seed=0, dtype=torch.float64, head_scale=1.0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).to(dtype).eval()
    if head_scale != 1.0:
        with torch.no_grad():
            m.lm_head.weight.mul_(head_scale)
    return m


def tiny_qwen3(vocab=96, layers=1, seed=1, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                      tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg).to(dtype).eval()


def shallow_copy_draft(target, layers=1):
    """A draft that agrees with the target often but not always: the target's embedding, first
    layer(s), norm and head (the way the default SmolLM2 draft is built)."""
    cfg = target.config.__class__.from_dict(target.config.to_dict())
    cfg.num_hidden_layers = layers
    d = LlamaForCausalLM(cfg).to(target.dtype).eval()
    d.load_state_dict({k: v for k, v in target.state_dict().items()
                       if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers})
    return d


PROMPTS = [[5, 17, 3, 40, 2], [7], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71], [1, 1, 1, 9]]


@pytest.fixture(scope="module")
def target():
    return tiny_llama(head_scale=4.0)  # a sharper distribution: repetitive but not constant output


@pytest.fixture(scope="module")
def draft_model(target):
    return shallow_copy_draft(target)


def test_greedy_identical_full_and_trimmed(target, draft_model):
    rng = torch.Generator().manual_seed(3)
    kept = torch.randperm(96, generator=rng)[:40]
    drafts = {
        "full": sp.make_draft(draft_model),
        "trimmed": sp.make_draft(draft_model, kept),
        "other-arch": sp.make_draft(tiny_qwen3()),   # a Qwen3 draft for a Llama target: rarely agrees
    }
    accepted = rejected = 0
    for prompt in PROMPTS:
        for gamma in (1, 3, 5):
            cfg = sp.SpecConfig(gamma=gamma, max_new_tokens=40)
            want = sp.target_generate(target, prompt, cfg).tokens
            assert len(want) == 40
            for name, d in drafts.items():
                got = sp.speculative_generate(target, d, prompt, cfg)
                assert got.tokens == want, (name, gamma, prompt)
                st = got.stats
                assert st.new_tokens == 40 and sum(st.accepted) + st.steps == 40
                accepted += sum(st.accepted)
                rejected += sum(1 for n, g in zip(st.accepted, st.drafted) if n < g)
    # both the accept and the reject path ran many times
    assert accepted > 100 and rejected > 50


def test_trimmed_head_is_a_smaller_matmul_over_the_kept_rows(draft_model):
    kept = torch.tensor([50, 3, 77, 10])
    d = sp.make_draft(draft_model, kept)
    assert d.kept.tolist() == [3, 10, 50, 77]          # sorted ascending
    assert d.head.shape == (4, 32) and d.head.is_contiguous()
    W = draft_model.lm_head.weight
    assert d.head.data_ptr() != W.data_ptr()           # a copy, not a view of the full head
    h = torch.randn(32, dtype=W.dtype)
    assert torch.allclose(h @ d.head.t(), (h @ W.t())[d.kept])


def test_trimmed_draft_only_proposes_kept_ids(target, draft_model):
    # a kept set without the target's favourite tokens: the draft can never propose them, so
    # every step where the target wants one of them is a rejection, and output is still exact
    cfg = sp.SpecConfig(gamma=4, max_new_tokens=30)
    want = sp.target_generate(target, PROMPTS[0], cfg).tokens
    kept = torch.tensor([i for i in range(96) if i not in set(want)])
    got = sp.speculative_generate(target, sp.make_draft(draft_model, kept), PROMPTS[0], cfg)
    assert got.tokens == want
    assert sum(got.stats.accepted) == 0


def _fresh_cache_after(model, ids):
    runner = sp._Runner(model)
    with torch.inference_mode():
        runner.hidden(torch.tensor([ids]))
    return runner.cache


def test_kv_rollback_matches_a_fresh_prefill(target, draft_model):
    prompt = PROMPTS[2]
    cfg = sp.SpecConfig(gamma=4, max_new_tokens=80)
    res = sp.speculative_generate(target, sp.make_draft(draft_model), prompt, cfg)
    st = res.stats
    assert st.steps > 20 and any(n < g for n, g in zip(st.accepted, st.drafted))
    committed = prompt + res.tokens
    # the target's cache is exactly the committed sequence but the last token, as if prefilled
    assert res.target_cache.get_seq_length() == len(committed) - 1
    fresh = _fresh_cache_after(target, committed[:-1])
    for got, want in zip(res.target_cache.layers, fresh.layers):
        assert torch.allclose(got.keys, want.keys, atol=1e-10) and torch.allclose(got.values, want.values, atol=1e-10)
    # the draft's cache is a prefix of the committed sequence (it may lag by the bonus token)
    n = res.draft_cache.get_seq_length()
    assert len(committed) - 2 <= n <= len(committed) - 1
    fresh = _fresh_cache_after(draft_model, committed[:n])
    for got, want in zip(res.draft_cache.layers, fresh.layers):
        assert torch.allclose(got.keys, want.keys, atol=1e-10) and torch.allclose(got.values, want.values, atol=1e-10)


def test_crop_removes_only_the_tail(target):
    runner = sp._Runner(target)
    with torch.inference_mode():
        runner.hidden(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    before = runner.cache.layers[0].keys.clone()
    models.crop_cache(runner.cache, 4)
    assert runner.cache.get_seq_length() == 4
    assert torch.equal(runner.cache.layers[0].keys, before[..., :4, :])
    models.crop_cache(runner.cache, 10)  # never grows
    assert runner.cache.get_seq_length() == 4


def test_verify_ratios_cancel_a_slow_spell(target, monkeypatch):
    """Ratios are taken within a round: a round run 3x slower throughout (a busy shared machine)
    changes no ratio, where medians of raw times would mix fast and slow rounds."""
    spells = iter([[5.0, 5.0]] + [[10.0, 15.0]] * 2 + [[30.0, 45.0]] * 3)   # warm-up, then 5 rounds
    times = [t for spell in spells for t in spell]
    calls = []

    class FakeClock:
        def __init__(self, device):
            pass

        def time_ms(self, fn):
            fn()
            calls.append(1)
            return times[len(calls) - 1]

    monkeypatch.setattr(sp, "Clock", FakeClock)
    assert sp.verify_ratios(target, [1, 2, 3, 4], 2, repeats=5) == [1.0, 1.5]
    assert len(calls) == 12


def test_eos_stops_generation(target, draft_model):
    cfg = sp.SpecConfig(gamma=4, max_new_tokens=40)
    full = sp.target_generate(target, PROMPTS[0], cfg).tokens
    eos = full[7]
    stop = full.index(eos)
    cfg = sp.SpecConfig(gamma=4, max_new_tokens=40, eos_ids=(eos,))
    got = sp.speculative_generate(target, sp.make_draft(draft_model), PROMPTS[0], cfg).tokens
    assert got == full[: stop + 1]
    assert sp.target_generate(target, PROMPTS[0], cfg).tokens == got


# ---------------------------------------------------------------- sampling: the target's distribution

V_S, N_TOK, N_RUNS = 5, 3, 600


def _exact_joint(model, prompt):
    """P(first N_TOK tokens) under the model, by enumerating every prefix."""
    probs = {}

    def walk(prefix, p):
        if len(prefix) == N_TOK:
            probs[tuple(prefix)] = p
            return
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + prefix])).logits[0, -1]
        q = torch.softmax(logits.double(), -1)
        for t in range(V_S):
            walk(prefix + [t], p * float(q[t]))

    walk([], 1.0)
    return probs


def _chi2_exceeds(counts, probs, n, z=3.09):
    """Pearson chi-square vs the exact probabilities, cells with expected < 5 pooled; compares to
    the Wilson-Hilferty approximation of the chi-square quantile at z (3.09: p = 0.001)."""
    cells = sorted(probs, key=probs.get)
    stat, df, pool_e, pool_o = 0.0, -1, 0.0, 0
    for c in cells:
        e, o = probs[c] * n, counts.get(c, 0)
        if e < 5:
            pool_e, pool_o = pool_e + e, pool_o + o
            if pool_e < 5:
                continue
            e, o, pool_e, pool_o = pool_e, pool_o, 0.0, 0
        stat += (o - e) ** 2 / e
        df += 1
    crit = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat > crit, stat, crit


def assert_samples_follow(target, draft, prompt, exact, name):
    """N_RUNS sampled generations with `draft` follow the target's exact joint distribution (and the
    draft was both accepted and rejected often, so both branches of the rule were exercised)."""
    counts, acc, rej = {}, 0, 0
    for seed in range(N_RUNS):
        cfg = sp.SpecConfig(gamma=2, max_new_tokens=N_TOK, mode="sample", seed=seed)
        r = sp.speculative_generate(target, draft, prompt, cfg)
        counts[tuple(r.tokens)] = counts.get(tuple(r.tokens), 0) + 1
        acc += sum(r.stats.accepted)
        rej += sum(1 for n, g in zip(r.stats.accepted, r.stats.drafted) if n < g)
    assert acc > N_RUNS // 6 and rej > N_RUNS // 6, (name, acc, rej)
    bad, stat, crit = _chi2_exceeds(counts, exact, N_RUNS)
    assert not bad, f"{name}: chi2 {stat:.1f} > {crit:.1f}"


def test_sampling_matches_the_target_distribution():
    target = tiny_llama(vocab=V_S, layers=2, seed=11, head_scale=6.0)
    other = tiny_llama(vocab=V_S, layers=1, seed=12, head_scale=6.0)   # a poor draft: many rejections
    prompt = [1, 4, 2]
    exact = _exact_joint(target, prompt)
    assert abs(sum(exact.values()) - 1) < 1e-9
    drafts = {"full": sp.make_draft(other), "trimmed": sp.make_draft(other, [0, 2, 4])}
    for name, d in drafts.items():
        assert_samples_follow(target, d, prompt, exact, name)
    # the test has power: the draft's own distribution, sampled as often, is rejected
    draft_exact = _exact_joint(other, prompt)
    gen = torch.Generator().manual_seed(0)
    keys = list(draft_exact)
    picks = torch.multinomial(torch.tensor([draft_exact[k] for k in keys]), N_RUNS, replacement=True, generator=gen)
    counts = {}
    for i in picks.tolist():
        counts[keys[i]] = counts.get(keys[i], 0) + 1
    assert _chi2_exceeds(counts, exact, N_RUNS)[0]


def test_sample_mode_is_reproducible_from_the_seed(target, draft_model):
    cfg = sp.SpecConfig(gamma=3, max_new_tokens=20, mode="sample", seed=5)
    a = sp.speculative_generate(target, sp.make_draft(draft_model), PROMPTS[0], cfg).tokens
    b = sp.speculative_generate(target, sp.make_draft(draft_model), PROMPTS[0], cfg).tokens
    assert a == b


# ---------------------------------------------------------------- token maps and hf-draft dirs


def test_token_map_formats(tmp_path):
    ids = torch.tensor([40, 2, 7, 90], dtype=torch.long)
    torch.save(ids, tmp_path / "sglang.pt")
    assert read_token_ids(tmp_path / "sglang.pt").tolist() == [40, 2, 7, 90]
    kept = ids.sort().values
    torch.save({"d2t": kept - torch.arange(4), "t2d": torch.zeros(96, dtype=torch.bool)}, tmp_path / "eagle.pt")
    assert read_token_ids(tmp_path / "eagle.pt").tolist() == kept.tolist()
    (tmp_path / "m.json").write_text(json.dumps({"token_ids": [40, 2, 7, 90], "vocab_size": 96}))
    assert read_token_ids(tmp_path / "m.json").tolist() == [40, 2, 7, 90]


def test_bad_token_maps(tmp_path, draft_model):
    torch.save(torch.tensor([1.5, 2.0]), tmp_path / "float.pt")
    with pytest.raises(VTError, match="1-D integer"):
        read_token_ids(tmp_path / "float.pt")
    torch.save(torch.tensor([1, 1, 2]), tmp_path / "dup.pt")
    with pytest.raises(VTError, match="repeats"):
        read_token_ids(tmp_path / "dup.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(VTError, match="junk.pt"):
        read_token_ids(tmp_path / "junk.pt")
    with pytest.raises(VTError, match="outside|vocabulary"):
        sp.make_draft(draft_model, torch.tensor([3, 96]))


def test_token_map_beyond_the_draft_vocab_is_a_clear_error(tmp_path, draft_model):
    d = tmp_path / "draft"
    draft_model.save_pretrained(d)
    torch.save(torch.tensor([0, 5, 151000]), tmp_path / "qwen-map.pt")
    with pytest.raises(VTError, match=r"qwen-map.pt: token id 151000 is outside the draft's vocabulary \(96 rows"):
        sp.load_draft(d, token_map=tmp_path / "qwen-map.pt", dtype=torch.float64)


def test_hf_draft_dir_loads_as_a_trimmed_draft(tmp_path, target, draft_model):
    kept = list(range(0, 96, 2))
    write_hf_draft(draft_model, kept, tmp_path / "hf-draft")
    d = sp.load_draft(tmp_path / "hf-draft", dtype=torch.float64)
    assert d.trimmed and d.kept.tolist() == kept and d.k == len(kept)
    assert torch.equal(d.head, sp.make_draft(draft_model, kept).head)
    cfg = sp.SpecConfig(gamma=3, max_new_tokens=30)
    want = sp.target_generate(target, PROMPTS[0], cfg).tokens
    got = sp.speculative_generate(target, d, PROMPTS[0], cfg)
    assert got.tokens == want
    # and it behaves exactly like the same draft trimmed in memory
    same = sp.speculative_generate(target, sp.make_draft(draft_model, kept), PROMPTS[0], cfg)
    assert got.stats.accepted == same.stats.accepted


def test_hf_draft_with_inconsistent_maps_is_rejected(tmp_path, draft_model):
    write_hf_draft(draft_model, [1, 5, 9], tmp_path / "bad")
    from safetensors.torch import load_file
    state = load_file(str(tmp_path / "bad" / "model.safetensors"))
    state["t2d"][2] = True   # marks an id d2t does not map to
    save_file(state, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(VTError, match="t2d"):
        sp.load_draft(tmp_path / "bad", dtype=torch.float64)


def test_hf_draft_written_by_the_export_module_loads(tmp_path, target, draft_model):
    """The export module's trimming (vtcore.export.trim_draft) and this loader agree on the format."""
    import numpy as np

    from vtcore.export import trim_draft

    kept = np.array(sorted({0, 2, 5, 11, 40, 41, 95}), dtype=np.int64)
    cfg, weights, kind = trim_draft(draft_model.config.to_dict(), dict(draft_model.state_dict()), kept)
    assert kind == "hf-draft"
    out = tmp_path / "exported"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    d = sp.load_draft(out, dtype=torch.float64)
    assert d.kept.tolist() == kept.tolist()
    assert torch.equal(d.head, sp.make_draft(draft_model, kept).head)
    cfg_run = sp.SpecConfig(gamma=3, max_new_tokens=20)
    assert sp.speculative_generate(target, d, PROMPTS[1], cfg_run).tokens == sp.target_generate(target, PROMPTS[1], cfg_run).tokens


# ---------------------------------------------------------------- EAGLE-3 drafts in the decoding engine


def tiny_eagle3(target, seed=3, aux_ids=(3, 2, 1)):
    """A random EAGLE-3 head for `target`: the target's embedding shared, a full-vocabulary head
    (the target's own rows, so its proposals are plausible), reading three of the target's layers."""
    from vtcore import checkpoints
    from vtcore import eagle3 as E

    c = target.config
    cfg = checkpoints.config_from_dict({"architectures": ["LlamaForCausalLMEagle3"], "hidden_size": c.hidden_size,
                              "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                              "vocab_size": c.vocab_size, "draft_vocab_size": c.vocab_size, "rms_norm_eps": 1e-6,
                              "max_position_embeddings": 512, "eagle_aux_hidden_state_layer_ids": list(aux_ids)})
    draft = E.Eagle3Draft(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    draft.aux_ids = tuple(aux_ids)
    draft.embed_weight = target.get_input_embeddings().weight.detach()
    draft.head = target.get_output_embeddings().weight.detach()
    return draft.to(target.dtype).eval()


def test_eagle3_greedy_identical_full_and_subtrimmed(target):
    from vtcore import eagle3 as E

    full = tiny_eagle3(target)
    for prompt in PROMPTS:   # [7]: a one-token prompt, nothing to draft from on the first step
        cfg = sp.SpecConfig(gamma=4, max_new_tokens=24)
        want = sp.target_generate(target, prompt, cfg).tokens
        for draft in (full, E.subtrim(full, sorted(set(want) | {0, 1, 2}))):
            r = sp.speculative_generate(target, draft, prompt, cfg)
            assert r.tokens == want
            assert r.draft_cache.get_seq_length() <= len(prompt) + len(want) - 1


def test_eagle3_proposals_equal_a_fresh_recompute(target, monkeypatch):
    """The loop's draft cache and the target states it keeps are exactly what a from-scratch run
    on the committed prefix gives: each proposal equals a fresh chain (new caches, one target
    forward over the prefix)."""
    from vtcore import eagle3 as E

    draft = tiny_eagle3(target)
    seen = []
    real = sp.Eagle3Proposer.propose

    def spy(self, seq, n_seq, g, cfg, gen, clock):
        prop = real(self, seq, n_seq, g, cfg, gen, clock)
        seen.append((seq[:n_seq].tolist(), prop.tokens.tolist()))
        return prop

    monkeypatch.setattr(sp.Eagle3Proposer, "propose", spy)
    sp.speculative_generate(target, draft, PROMPTS[2], sp.SpecConfig(gamma=3, max_new_tokens=30))
    assert len(seen) > 3
    with torch.inference_mode():
        for prefix, tokens in seen:
            _, aux = E.target_forward(target, torch.tensor(prefix[:-1]), draft.aux_ids)
            cache = E.Eagle3Cache()
            h = draft(torch.tensor(prefix[1:]), draft.fuse(aux), cache)[-1:]
            fresh = []
            for _ in tokens:
                fresh.append(int(draft.head_target_ids[draft.logits(h)[0].argmax()]))
                h = draft(torch.tensor(fresh[-1:]), h, cache)
            assert fresh == tokens, (prefix, fresh, tokens)


def test_eagle3_sampling_matches_the_target_distribution():
    from vtcore import eagle3 as E

    target = tiny_llama(vocab=V_S, layers=4, seed=11, head_scale=6.0)
    full = tiny_eagle3(target, seed=5, aux_ids=(4, 2, 1))
    prompt = [1, 4, 2]
    exact = _exact_joint(target, prompt)
    for name, d in {"eagle3": full, "eagle3 sub-trimmed": E.subtrim(full, [0, 2, 4])}.items():
        assert_samples_follow(target, d, prompt, exact, name)
