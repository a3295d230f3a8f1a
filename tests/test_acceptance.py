"""The acceptance replay: one pass of the full draft over the target's continuation predicts,
for any kept set and gamma, exactly the accepted tokens per step that real greedy speculative
decoding with the trimmed head gets (tiny random-weight Llama target with an EAGLE-3 head and a
standalone draft; the real SmolLM2 pair as one integration test)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vtcore import acceptance as A
from vtcore import eagle3 as E
from vtcore import speculative as sp
from vtcore.errors import VTError
from vtcore.checkpoints import config_from_dict

VOCAB = 96
torch.set_num_threads(1)   # tiny models in Python loops: a second thread only adds synchronisation


@dataclass
class P:
    ids: list


def tiny_target():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).to(torch.float64).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(4.0)   # sharper: repetitive but not constant output
    return m


def standalone_draft(target):
    """The target's embedding, first layer, norm and head: right often, not always."""
    cfg = LlamaConfig.from_dict({**target.config.to_dict(), "num_hidden_layers": 1})
    d = LlamaForCausalLM(cfg).to(target.dtype).eval()
    d.load_state_dict({k: v for k, v in target.state_dict().items()
                       if not k.startswith("model.layers.") or int(k.split(".")[2]) < 1})
    return sp.make_draft(d, name="tiny-standalone")


def eagle3_draft(target, seed=3):
    c = target.config
    cfg = config_from_dict({"architectures": ["LlamaForCausalLMEagle3"], "hidden_size": c.hidden_size,
                              "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                              "vocab_size": c.vocab_size, "draft_vocab_size": c.vocab_size, "rms_norm_eps": 1e-6,
                              "max_position_embeddings": 512, "eagle_aux_hidden_state_layer_ids": [3, 2, 1]})
    draft = E.Eagle3Draft(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    draft.aux_ids = (3, 2, 1)
    draft.embed_weight = target.get_input_embeddings().weight.detach()
    draft.head = target.get_output_embeddings().weight.detach()
    return draft.to(target.dtype).eval()


PROMPTS = [P([5, 17, 3, 40, 2]), P([60, 61, 62, 63, 64, 65, 66, 67]), P([1, 1, 1, 9]), P([30, 31])]
N_NEW = 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.set_num_threads(1)
    target = tiny_target()
    ws = tmp_path_factory.mktemp("acc-ws")
    conts = A.target_continuations(target, PROMPTS, eos=(7,), max_new_tokens=N_NEW, workspace=ws)
    return target, conts, ws


@pytest.fixture(scope="module")
def replays(pair):
    target, conts, _ = pair
    # cap = the vocabulary: every id above the target's token recorded, so the replay is exact for any set
    return {"eagle3": (eagle3_draft(target), A.replay(target, eagle3_draft(target), conts, gamma_max=5, cap=VOCAB)),
            "standalone": (standalone_draft(target), A.replay(target, standalone_draft(target), conts,
                                                               gamma_max=5, cap=VOCAB))}


def trimmed(draft, kept):
    if isinstance(draft, E.Eagle3Draft):
        return E.subtrim(draft, kept)
    return sp.make_draft(draft.model, kept)


def measured(target, draft, conts, gamma, eos=(7,)):
    acc = steps = 0
    for c in conts:
        r = sp.speculative_generate(target, draft, c.prompt,
                                    sp.SpecConfig(gamma=gamma, max_new_tokens=len(c.tokens), eos_ids=eos))
        assert r.tokens == c.response     # lossless: the target's own greedy output
        acc += sum(r.stats.accepted)
        steps += r.stats.steps
    return acc, steps


@pytest.mark.parametrize("kind", ["eagle3", "standalone"])
def test_replay_equals_real_speculative_decoding_with_the_trimmed_head(pair, replays, kind):
    target, conts, _ = pair
    draft, rep = replays[kind]
    # a ranking unrelated to the draft: the continuation's tokens by frequency, then the rest
    counts = np.bincount(rep.tokens, minlength=VOCAB)
    order = A.rank_tokens(counts, [7])
    checked = 0
    for gamma in (2, 5):
        ks = [4, 30, VOCAB]
        table = A.acceptance_table(rep, order, [gamma], k_max=VOCAB)
        for k in ks:
            d = draft if k == VOCAB else trimmed(draft, order[:k])
            acc, steps = measured(target, d, conts, gamma)
            sim = A.for_set(rep, None if k == VOCAB else order[:k], gamma)
            assert (int(sim.accepted[0]), int(sim.steps[0])) == (acc, steps), (kind, gamma, k)
            assert table[0, k] == pytest.approx(acc / steps)
            checked += acc
    assert checked > 10     # the drafts do get tokens accepted: the comparison is not all zeros


def test_the_vectorised_sweep_equals_a_plain_loop_over_k(replays):
    _, rep = replays["eagle3"]
    order = np.random.default_rng(0).permutation(VOCAB)
    lo, hi = A.intervals(rep, order)
    for gamma in (3,):
        table = A.acceptance_table(rep, order, [gamma], k_max=VOCAB)[0]
        for k in range(1, VOCAB + 1, 2):
            one = A.for_set(rep, order[:k], gamma)
            loop = A.simulate(rep, lo, hi, np.array([k]), gamma)
            assert one.accepted[0] == loop.accepted[0] and one.steps[0] == loop.steps[0]
            assert table[k] == pytest.approx(one.accepted_per_step[0])


def test_a_plain_python_walk_agrees_with_simulate(replays):
    """simulate's numpy walk against the definition written out step by step for one k."""
    _, rep = replays["standalone"]
    order = np.arange(VOCAB)[::-1]
    k, gamma, D = 40, 3, rep.gamma_max
    kept = set(order[:k].tolist())
    acc = steps = 0
    for p in range(rep.n_tokens.size):
        N, off, toff = int(rep.n_tokens[p]), int(rep.offsets[p]), int(rep.tok_offsets[p])
        c = 0
        while c < N:
            g = min(gamma, N - c - 1)
            n = 0
            while n < g:
                r = off + (c + n) * D + n
                y = int(rep.tokens[toff + c + n])
                above = [int(a) for a in rep.above[r] if a >= 0]
                if not (rep.n_above[r] <= rep.cap and y in kept and not kept & set(above)):
                    break
                n += 1
            acc += n
            steps += 1
            if rep.eos_at[p] >= 0 and c <= rep.eos_at[p] <= c + n:
                break
            c += n + 1
    sim = A.for_set(rep, order[:k], gamma)
    assert (int(sim.accepted[0]), int(sim.steps[0])) == (acc, steps)


def test_the_acceptance_ranking_uses_fit_prompts_only(pair, replays):
    target, conts, ws = pair
    _, rep = replays["standalone"]
    mixed = A.Replay(**{**rep.__dict__, "heldout": np.array([True, False, True, False])})
    scores = A.accepted_scores(mixed)
    # rebuilt from the fit prompts alone: the same scores
    fit_only = A.accepted_scores(mixed, prompts=np.array([1, 3]))
    assert np.array_equal(scores, fit_only) and scores.sum() > 0
    every = A.accepted_scores(mixed, prompts=np.arange(4))
    assert every.sum() > scores.sum()     # the held-out prompts would have added more
    counts = np.bincount(rep.tokens, minlength=VOCAB)
    order = A.acceptance_ranking(mixed, counts, always_keep=[7])
    assert order[0] == 7 and sorted(order.tolist()) == list(range(VOCAB))
    n_hit = int((scores > 0).sum()) - int(scores[7] > 0)
    assert set(order[1: 1 + n_hit].tolist()) == set(np.flatnonzero(scores > 0).tolist()) - {7}


def test_merged_replays_rank_on_the_union_of_their_prompts(replays):
    _, rep = replays["standalone"]
    fit = A.Replay(**{**rep.__dict__, "heldout": np.zeros(4, dtype=bool)})
    halves = [A.Replay(**{**fit.__dict__, **{k: getattr(fit, k)[sl] for k in ("prompt_len", "n_tokens", "eos_at",
                                                                               "heldout")},
                          "tokens": fit.tokens[t0:t1], "n_above": fit.n_above[t0 * 5:t1 * 5],
                          "above": fit.above[t0 * 5:t1 * 5]})
              for sl, t0, t1 in ((slice(0, 2), 0, int(fit.n_tokens[:2].sum())),
                                 (slice(2, 4), int(fit.n_tokens[:2].sum()), int(fit.n_tokens.sum())))]
    merged = A.merge_replays(halves)
    assert np.array_equal(A.accepted_scores(merged), A.accepted_scores(halves[0]) + A.accepted_scores(halves[1]))
    assert np.array_equal(A.accepted_scores(merged), A.accepted_scores(fit))
    other = A.Replay(**{**halves[1].__dict__, "cap": 3, "above": halves[1].above[:, :3]})
    with pytest.raises(VTError, match="cannot merge"):
        A.merge_replays([halves[0], other])


def test_the_acceptance_file_round_trips_and_bad_files_are_clear(tmp_path, replays):
    _, rep = replays["eagle3"]
    f = A.save_acceptance(tmp_path / "acc.npz", rep)
    back = A.load_acceptance(f)
    assert back.manifest["gamma_max"] == 5 and back.manifest["cap"] == VOCAB
    for k in ("n_above", "above", "tokens", "heldout", "proposable"):
        assert np.array_equal(getattr(back, k), getattr(rep, k))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(VTError, match="bad.npz: not an acceptance file"):
        A.load_acceptance(tmp_path / "bad.npz")
    with pytest.raises(VTError, match="no such acceptance file"):
        A.load_acceptance(tmp_path / "missing.npz")


def test_continuations_are_cached_and_keyed_by_the_weights(pair):
    target, conts, ws = pair
    again = A.target_continuations(target, PROMPTS, eos=(7,), max_new_tokens=N_NEW, workspace=ws)
    assert [c.tokens for c in again] == [c.tokens for c in conts]
    files = list((ws / "continuations").glob("*.json"))
    assert len(files) == len(PROMPTS)
    other = tiny_target()
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    A.target_continuations(other, PROMPTS[:1], eos=(7,), max_new_tokens=N_NEW, workspace=ws)
    assert len(list((ws / "continuations").glob("*.json"))) == len(PROMPTS) + 1
    stop = A.target_continuations(target, PROMPTS, eos=(7,), max_new_tokens=N_NEW, stop_at_eos=True, workspace=ws)
    assert [c.tokens for c in stop] == [c.response for c in conts]


def test_a_fresh_continuation_keeps_the_target_states_and_the_replay_reuses_them(pair, replays, tmp_path):
    target, conts, _ = pair
    draft, rep = replays["eagle3"]
    fresh = A.target_continuations(target, PROMPTS, eos=(7,), max_new_tokens=N_NEW, workspace=tmp_path, draft=draft)
    assert [c.tokens for c in fresh] == [c.tokens for c in conts]     # target_generate's tokens
    assert all(c.states is not None and c.states.shape[0] == len(c.prompt) + N_NEW - 1 for c in fresh)
    again = A.replay(target, draft, fresh, gamma_max=5, cap=VOCAB)    # no second target pass
    assert np.array_equal(again.n_above, rep.n_above) and np.array_equal(again.above, rep.above)
    cached = A.target_continuations(target, PROMPTS, eos=(7,), max_new_tokens=N_NEW, workspace=tmp_path, draft=draft)
    assert all(c.states is None for c in cached)                       # from the cache: tokens only


def test_a_small_cap_is_reported_and_leaves_the_full_head_exact(pair, replays):
    target, conts, _ = pair
    draft, rep = replays["standalone"]
    small = A.replay(target, draft, conts, gamma_max=5, cap=2)
    assert 0 < small.overflow_share() < 1 and rep.overflow_share() == 0
    assert np.array_equal(small.n_above, rep.n_above)
    assert np.array_equal(small.above, rep.above[:, :2])
    for g in (1, 4):   # the full head needs no id above the target's token: the cap never matters
        assert A.for_set(small, None, g).accepted[0] == A.for_set(rep, None, g).accepted[0]


# ---------------------------------------------------------------- sample mode: the expected acceptance


def exact_alpha(target, draft, kept, prefix, T):
    """sum_x min(p(x), q_S(x)) at the end of `prefix`, computed the way decoding does: the target's
    logits of its last position, and the trimmed draft's distribution from its proposer (sample
    mode, one draft step)."""
    d = draft if kept is None else trimmed(draft, kept)
    seq = torch.tensor(prefix)
    with torch.inference_mode():
        logits = sp.postprocess_logits(target, target(seq[None]).logits[0, -1]).float()
        p = torch.softmax(logits / T, -1)
        prop = sp.make_proposer(d)
        aux = E.target_forward(target, seq[:-1], d.aux_ids)[1] if isinstance(d, E.Eagle3Draft) else None
        prop.prefill(seq, seq.numel(), aux)
        cfg = sp.SpecConfig(gamma=1, max_new_tokens=2, mode="sample", temperature=T)
        out = prop.propose(seq, seq.numel(), 1, cfg, torch.Generator().manual_seed(0), sp.Clock(seq.device))
    ids = prop.kept if prop.kept is not None else torch.arange(out.q[0].numel())
    return float(torch.minimum(p[ids], out.q[0]).sum())


@pytest.mark.parametrize("kind", ["eagle3", "standalone"])
def test_expected_acceptance_at_depth_one_is_the_exact_overlap(pair, replays, kind):
    target, conts, _ = pair
    draft, _ = replays[kind]
    kept = np.array([7] + list(range(20, 60)))
    T = 0.7
    ex = A.expected_replay(target, draft, conts[:2], [None, kept], gamma_max=3, temperature=T)
    for p in range(2):
        c = conts[p]
        for j in (0, 3, 11):     # depth 1 at target position j: the chain starts from prompt + y[:j]
            r = int(ex.offsets[p]) + j * 3
            for si, s in enumerate((None, kept)):
                want = exact_alpha(target, draft, s, c.prompt + c.tokens[:j], T)
                assert ex.alpha[si, r] == pytest.approx(want, abs=1e-6), (kind, p, j, si)
    assert 0 < ex.alpha[1].mean() < ex.alpha[0].mean() < 1   # fewer rows, less overlap with the target


def test_expected_steps_equals_the_enumerated_walk():
    """The backward solution against every acceptance outcome of the walk, enumerated with its
    probability (two prompts, one stopping at an EOS, alphas random)."""
    rng = np.random.default_rng(1)
    D, n_tok, eos = 3, np.array([6, 5]), np.array([-1, 2])
    ex = A.Expected(gamma_max=D, temperature=1.0, n_tokens=n_tok, eos_at=eos, heldout=np.array([True, True]),
                    alpha=rng.uniform(0.1, 0.95, size=(2, int(n_tok.sum()) * D)), labels=[None, 1])

    def walk(s, p, c, gamma):   # (expected accepted, expected steps) from committed count c
        N, off = int(n_tok[p]), int(ex.offsets[p])
        g = min(gamma, N - c - 1)
        acc = steps = 0.0
        reach = 1.0
        for m in range(g + 1):
            a = ex.alpha[s, off + (c + m) * D + m] if m < g else 0.0
            pm = reach * (1 - a)
            nxt = c + m + 1
            stop = nxt >= N or (0 <= eos[p] <= c + m)
            sub = (0.0, 0.0) if stop else walk(s, p, nxt, gamma)
            acc += pm * (m + sub[0])
            steps += pm * (1 + sub[1])
            reach *= a
        return acc, steps

    for gamma in (1, 3):
        acc, steps, tokens = A.expected_steps(ex, gamma)
        for s in range(2):
            want = [sum(x) for x in zip(*(walk(s, p, 0, gamma) for p in range(2)))]
            assert (acc[s], steps[s]) == pytest.approx(want)
        assert tokens[0] == 6 + 3


def test_expected_acceptance_at_a_low_temperature_is_the_greedy_replay(pair, replays):
    """As T -> 0 both distributions become the argmax: the expectation is the greedy replay's count."""
    target, conts, _ = pair
    draft, rep = replays["eagle3"]
    kept = np.array([7] + list(range(0, 50)))
    ex = A.expected_replay(target, draft, conts, [None, kept], gamma_max=5, temperature=1e-4)
    for gamma in (2, 4):
        acc, steps, _ = A.expected_steps(ex, gamma)
        for si, s in enumerate((None, kept)):
            sim = A.for_set(rep, s, gamma)
            assert (acc[si], steps[si]) == pytest.approx((sim.accepted[0], sim.steps[0]), abs=1e-6)


# ---------------------------------------------------------------- the benchmark uses it


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory):
    from drafthelpers import tiny_pair

    return tiny_pair(tmp_path_factory.mktemp("pair"))


def test_bench_chooses_on_the_replay_and_replays_what_it_measures(qwen_pair, tmp_path):
    from vtcore import bench

    tdir, ddir, _ = qwen_pair
    cfg = bench.BenchConfig(target=str(tdir), draft=str(ddir), prompts=2, max_new_tokens=8, repeats=1, warmup=0,
                            device="cpu", workspace=str(tmp_path), threads=1, k_from="search", gamma=None,
                            acceptance_model="replay", ranking="acceptance", fit_prompts=3, save=False)
    r = bench.run_bench(cfg)
    assert r.k_gamma_chosen_on == "replay" and r.ranking == "acceptance"
    assert "replayed A(k, gamma)" in r.token_map
    assert r.prediction.acceptance_model == "replay"
    assert r.identical_outputs is True
    for m in (r.full, r.trimmed):   # the replay predicts the measured acceptance exactly (greedy)
        assert m.accepted_per_step_replayed == pytest.approx(m.accepted_per_step)
    assert r.full.accepted_per_step > 0
    d = r.to_dict()   # the JSON contract scripts read
    assert d["prediction"]["acceptance_model"] == "replay" and "accepted_per_step_replayed" in d["trimmed"]
    # the replay's steps are the run's, so the prediction's costs (means over every step) add up to
    # what was measured: the decode time per token and the speed-up with the prefill
    assert r.trimmed.tokens_per_step_replayed == pytest.approx(r.trimmed.tokens_per_step)
    assert r.prediction.decode_ms_trimmed == pytest.approx(r.prediction.decode_ms_trimmed_measured, rel=1e-6)
    assert r.predicted_speedup == pytest.approx(r.speedup_trimmed_vs_target, rel=1e-6)
    # the search's decode-only prediction, and the whole run's with the calibration's prefills
    from dataclasses import replace

    cal, S = r.calibration, r.search_predicted_speedup
    assert cal.prefill_ms_target > 0 and cal.prefill_ms_spec > 0 and r.search_predicted_speedup_with_prefill > 0
    assert bench.with_prefill(replace(cal, prefill_ms_target=0.0, prefill_ms_spec=0.0), S, 8) == pytest.approx(S)
    slower = bench.with_prefill(replace(cal, prefill_ms_spec=cal.prefill_ms_target * 2), S, 8)
    assert slower < bench.with_prefill(replace(cal, prefill_ms_spec=cal.prefill_ms_target), S, 8)
    # sample mode: the expected replay stands beside the measured acceptance
    s = bench.run_bench(bench.BenchConfig(**{**cfg.__dict__, "mode": "sample", "temperature": 0.8, "k": int(r.k),
                                             "gamma": 2, "acceptance_model": "a0", "ranking": "frequency"}))
    for m in (s.full, s.trimmed):
        assert 0 < m.accepted_per_step_replayed < 2 and m.tokens_per_step_replayed > 1
    assert s.prediction.acceptance_model == "replay" and s.identical_outputs is None


# ---------------------------------------------------------------- the CLI, optimize and export read the file


def test_cli_acceptance_file_feeds_optimize_and_export(qwen_pair, tmp_path, code_counts):
    import json

    from clihelpers import last_json, run_vtcore

    tdir, ddir, _ = qwen_pair
    f = tmp_path / "acc.npz"
    p = run_vtcore("acceptance", "--target", str(tdir), "--draft", str(ddir), "--prompts", "2", "--fit-prompts", "3",
                   "--max-new-tokens", "6", "--gamma-max", "4", "--device", "cpu", "--out", str(f), "--json",
                   "--temperature", "0.8", ws=tmp_path / "ws")
    assert p.returncode == 0, p.stderr
    r = last_json(p)
    s = r["sample"]   # sample mode: the expected accepted tokens per step, full head then k = 256 ...
    assert s["temperature"] == 0.8 and s["k"][:2] == [None, 256] and set(s["expected_accepted_per_step"]) == {
        "1", "2", "3", "4"}
    for g, row in s["expected_accepted_per_step"].items():
        assert len(row) == len(s["k"]) and all(0 < a < int(g) for a in row)
    assert r["heldout_prompts"] == 2 and r["fit_prompts"] == 3 and "acceptance [" in p.stderr
    assert r["manifest"]["gamma_max"] == 4 and len(r["manifest"]["data_sha256"]) == 64
    assert set(r["full_accepted_per_step"]) == {"1", "2", "3", "4"}
    rep = A.load_acceptance(f)
    assert rep.manifest["draft_kind"] == "standalone" and int(rep.n_tokens.sum()) == 5 * 6

    a = last_json(run_vtcore("optimize", "--counts", str(code_counts), "--draft", "qwen3-0.6b", "--objective",
                             "speedup", "--cost-ratio", "0.2", "--trials", "2", "--gamma-max", "4", "--acceptance",
                             str(f), "--ranking", "acceptance", "--json", ws=tmp_path / "ws"))
    assert a["acceptance_model"] == "replay" and a["ranking"] == "acceptance"
    # in process: the table the search scored is the file's replay of the acceptance ranking
    from vtcore import problem
    from vtcore.countsfile import load_counts

    cf = load_counts(code_counts)
    spec = problem.SearchSpec(draft="qwen3-0.6b", objective="speedup", cost_ratio=0.2, gamma_max=4)
    setup = problem.attach_acceptance(problem.build(cf, spec), cf, str(f), "acceptance")
    order = A.ranking_for(rep, cf.counts_fit, cf.always_keep, "acceptance")
    k, g = a["exact_best_k"], a["exact_best_gamma"]
    assert setup.problem.accepted[g - 1, k] == pytest.approx(A.for_set(rep, order[:k], g).accepted_per_step[0])
    assert setup.problem.acceptance_model == "replay"
    with pytest.raises(VTError, match="replayed up to gamma 4"):
        problem.attach_acceptance(problem.build(cf, spec.__class__(**{**spec.__dict__, "gamma_max": 6})), cf,
                                  str(f), "frequency")

    e = run_vtcore("export", "--counts", str(code_counts), "--k", "300", "--ranking", "acceptance", "--acceptance",
                   str(f), "--format", "json", "--out", str(tmp_path / "exp"), "--json", ws=tmp_path / "ws")
    assert e.returncode == 0, e.stderr
    out = last_json(e)
    assert out["k"] == 300 and "acceptance-aware ranking" in out["chosen_by"]
    summaries = [json.loads(Path(v).read_text()) for k, v in out["files"].items() if "summary" in k]
    assert all("acceptance-aware" in s["chosen_by"] for s in summaries)
    scores = A.accepted_scores(rep)
    kept = set(json.loads(Path(out["files"]["json"]).read_text())["token_ids"])
    assert set(np.flatnonzero(scores[:151669] > 0).tolist()) <= kept   # every accepted token is kept


# ---------------------------------------------------------------- the real default pair


HAVE_DEFAULT = (E.default_eagle3_dir() / E.WEIGHTS_FILE).is_file()


@pytest.mark.integration
@pytest.mark.skipif(not HAVE_DEFAULT, reason="weights/smollm2-135m-eagle3 is not trained yet")
def test_replay_equals_real_decoding_on_the_default_smollm2_pair(tmp_path):
    from vtcore import bench

    target, tok, draft, *_ = bench.load_models(bench.BenchConfig(device="cpu"), torch.device("cpu"))
    eos = bench.eos_ids(target, tok)
    prompts = bench.load_prompts(bench.default_data(), tok, heldout=True, limit=1)
    conts = A.target_continuations(target, prompts, eos=eos, max_new_tokens=16, workspace=tmp_path)
    rep = A.replay(target, draft, conts, gamma_max=3, cap=64)
    # a trimmed set that keeps some of the continuation's tokens and not others
    kept_ids = np.array(sorted(set(range(1024)) | set(conts[0].tokens[::2])))
    for kept in (None, kept_ids):
        d = draft if kept is None else E.subtrim(draft, kept)
        r = sp.speculative_generate(target, d, prompts[0].ids, sp.SpecConfig(gamma=3, max_new_tokens=16, eos_ids=eos))
        sim = A.for_set(rep, kept, 3)
        assert (int(sim.accepted[0]), int(sim.steps[0])) == (sum(r.stats.accepted), r.stats.steps)
    assert A.for_set(rep, None, 3).accepted[0] > 0
