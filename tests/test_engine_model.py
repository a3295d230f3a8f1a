"""The search's speed-up per serving engine (vtcore.enginecost + search.Problem.engine): the
tree's acceptance recursion against brute-force enumeration, the chain as its t = 1 case, the
round prices written out by hand, the replayed rank table against a per-record count, and
`optimize --engine-model` end to end on a hand-made counts file."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from vtcore import acceptance, enginecost
from vtcore.countsfile import CountsFile, save_counts
from vtcore.search import Problem, predicted_speedup, solve_exact

V = 512


def brute_accepted(p, t, s, n, k):
    """Expected accepted tokens of SGLang's tree built node by node: the root's t best children,
    then per step the t^2 children of the t frontier nodes (each scored by its path's product of
    rank probabilities) with the best t as the next frontier; the n - 1 best of all drafted."""
    frontier = [(float(p[0, r, k]), (r,)) for r in range(t)]
    cands = list(frontier)
    for d in range(2, s + 1):
        children = [(f * float(p[d - 1, r, k]), path + (r,)) for f, path in frontier for r in range(t)]
        frontier = sorted(children, key=lambda x: -x[0])[:t]
        cands += children
    drafted = sorted(cands, key=lambda x: -x[0])[:n - 1]
    # the accepted length is the number of drafted nodes on the target's path: sum of their chances
    return sum(score for score, _ in drafted)


def test_tree_recursion_is_the_enumeration_and_the_chain_is_its_t1_case():
    rng = np.random.default_rng(3)
    p = rng.random((4, 3, 2)) * 0.33          # rows sum below 1, as probabilities of disjoint ranks
    p[1, :, 0] = [0.05, 0.3, 0.2]             # a depth where the best child is not rank 0
    for t in (1, 2, 3):
        acc = enginecost.tree_accepted(p, t, 4, 9)
        for s, n in itertools.product(range(1, 5), range(2, 10)):
            for k in range(2):
                assert acc[s - 1, n, k] == pytest.approx(brute_accepted(p, t, s, n, k), abs=1e-12)
    a = np.array([0.2, 0.7, 0.95])
    chain = enginecost.tree_accepted(enginecost.geometric_ranks(a, 1, 6), 1, 6, 7)
    for s in range(1, 7):   # Leviathan et al.: tokens per step = (1 - a^(s+1)) / (1 - a)
        assert np.allclose(1 + chain[s - 1, s + 1], predicted_speedup(a, s, 0.0, 1.0))
    # ranks falling off with r: a wider tree holds the chain's path, so it never accepts less at
    # the same budget; more tokens never less; and never more than the tree's depth
    wide = enginecost.tree_accepted(enginecost.geometric_ranks(a, 4, 6), 4, 6, 16)
    for s in range(1, 7):
        assert np.all(wide[s - 1, s + 1] >= chain[s - 1, s + 1] - 1e-12)
    assert np.all(np.diff(wide, axis=1) >= -1e-12) and np.all(wide[:, :, :] <= np.arange(1, 7)[:, None, None] + 1e-9)
    assert wide[4, 8, 1] > chain[4, 6, 1]     # (5, 4, 8) beats the chain of 5 at a = 0.7


def test_roofline_and_round_shapes_by_hand():
    assert enginecost.roofline(8, 1, 128) == 1.0          # memory-bound: 8 tokens at the price of 1
    assert enginecost.roofline(8, 64, 128) == 4.0         # 512 tokens / 128, over 64 / 128 -> 1
    assert enginecost.roofline(4, 1, 1) == 4.0            # a CPU: linear
    assert enginecost.roofline(3, 256, 128) == 3.0        # already compute-bound at one token
    s = enginecost.round_shape("sglang", 4, steps=5, topk=4, tokens=8)
    assert (s.head_rows, s.forward_tokens, s.verified) == (4 * (1 + 4 * 4), (4, 16, 16, 16, 16), 8)
    v = enginecost.round_shape("vllm", 2, gamma=3)
    assert (v.head_rows, v.scatter_rows, v.verified) == (6, 6, 4)


def problem(engine, **kw):
    rng = np.random.default_rng(1)
    f = np.sort(rng.random(V))[::-1]
    C = np.concatenate([[0.0], np.cumsum(f) / f.sum()])
    R = 0.6 * (1 - np.arange(V + 1) / V)                  # the head is 60% of the draft step at k = V
    return Problem(C, R, objective="speedup", a0=0.8, cost_ratio_full=0.25, gamma_max=5, engine=engine, **kw)


def test_chain_and_vllm_prices_by_hand():
    paper, chain = problem(None), problem("chain", batch=1, parallel_tokens=128)
    ks, g = np.arange(1, V + 1)[None, :], np.arange(1, 6)[:, None]
    assert np.allclose(paper.speedup(ks, g), chain.speedup(ks, g))   # bs 1: the verify is one step
    cpu = problem("chain", parallel_tokens=1)
    k, gam = 100, 3
    tokens = float(predicted_speedup(0.8 * cpu.coverage[k], gam, 0.0))
    assert cpu.speedup(k, gam) == pytest.approx(tokens / (gam * 0.25 * (1 - cpu.reduction[k]) + 4))
    vllm = problem("vllm", batch=32, parallel_tokens=64, scatter_cost=0.01)
    draft = 0.25 * (1 - vllm.reduction[k]) + 0.01 * 32 / 1.0        # 32 rows scattered, target still 1 step
    assert vllm.speedup(k, gam) == pytest.approx(tokens / (gam * draft + enginecost.roofline(4, 32, 64)))
    # the scatter does not shrink with k: it moves the best k up and lowers every speed-up
    assert solve_exact(vllm).speedup < solve_exact(problem("chain", batch=32, parallel_tokens=64)).speedup


def test_sglang_search_is_the_best_tree_by_brute_force():
    p = problem("sglang", topk_max=3, tokens_max=8)
    for k, s in [(20, 1), (60, 3), (300, 5)]:
        c = 0.25 * (1 - p.reduction[k])
        ranks = enginecost.geometric_ranks(0.8 * p.coverage[k:k + 1], 3, 5)
        best = max(((1 + brute_accepted(ranks, t, s, n, 0)) / (c * (1 + (s - 1) * 1.0) + 1.0), t, n)
                   for t in range(1, 4) for n in range(2, 9) if n <= 1 + t + (s - 1) * t * t)
        sp, t, n = p.tree_speedup(k, s)   # geometric ranks: tabulated over a, interpolated
        assert float(sp) == pytest.approx(best[0], rel=1e-4)
        at_pick = (1 + brute_accepted(ranks, int(t), s, int(n), 0)) / (c * (1 + (s - 1) * 1.0) + 1.0)
        assert at_pick == pytest.approx(best[0], rel=1e-4)
    ex = solve_exact(p)
    grid = p.speedup(np.arange(1, V + 1)[None, :], np.arange(1, 6)[:, None])
    # replayed ranks given as a table: read at every k (V is small), the same as the geometric ones
    ranks = enginecost.geometric_ranks(0.8 * p.coverage, 3, 5).copy()
    replayed = problem("sglang", topk_max=3, tokens_max=8, ranks=ranks)
    assert replayed.acceptance_model == "replayed ranks"
    assert np.allclose(replayed.speedup(np.arange(1, V + 1)[None, :], np.arange(1, 6)[:, None]), grid, rtol=1e-4)
    assert ex.speedup == pytest.approx(grid.max()) and ex.best_tree[0] == ex.best_gamma
    # at batch 1 on a GPU the tree is nearly free: it beats the chain; priced linearly (a CPU at a
    # large batch) every extra token costs a forward and the best tree is thin
    assert ex.best_tree[1] > 1 and ex.speedup > solve_exact(problem("chain")).speedup
    cpu = solve_exact(problem("sglang", topk_max=3, tokens_max=8, batch=64, parallel_tokens=1))
    assert cpu.best_tree[2] <= ex.best_tree[2] and cpu.speedup < ex.speedup
    assert p.evaluate(60, 3)["tree"][0] == 3 and p.fingerprint()["engine"] == "sglang"


def handmade_replay(Vr: int, D: int, cap: int, N: int, seed: int, top: int = 6) -> acceptance.Replay:
    """Two held-out continuations of N tokens (the second ends at an EOS at 9), each record with a
    random number of ids scored above the target's token (every 7th not proposable)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, min(Vr, 64), size=2 * N)
    n_above = rng.integers(0, top, size=2 * N * D)
    n_above[::7] = acceptance.BIG                                  # not proposable
    above = np.full((2 * N * D, cap), -1, dtype=np.int32)
    for i in range(2 * N * D):
        y = tokens[i // D]
        if n_above[i] < acceptance.BIG:
            ids = rng.choice(np.setdiff1d(np.arange(Vr), [y]), size=min(int(n_above[i]), cap), replace=False)
            above[i, :ids.size] = ids
    return acceptance.Replay(gamma_max=D, cap=cap, prompt_len=np.array([5, 5]), n_tokens=np.array([N, N]),
                             eos_at=np.array([-1, 9]), heldout=np.array([True, True]), tokens=tokens,
                             n_above=n_above, above=above, proposable=np.arange(Vr), vocab_size=Vr,
                             manifest={"version": acceptance.ACCEPTANCE_VERSION, "draft": "handmade"})


def test_replayed_ranks_count_each_record():
    """A hand-made replay: ranks[d, r, k] is the share of depth-d records whose target token is in
    order[:k] with exactly r kept ids above it; r = 0 is the chain's acceptance interval."""
    Vr, D, cap, N = 40, 3, 4, 12
    rep = handmade_replay(Vr, D, cap, N, seed=5)
    tokens, n_above, above = rep.tokens, rep.n_above, rep.above
    order = np.random.default_rng(5).permutation(Vr)
    got = enginecost.replay_ranks(rep, order, 3, Vr)
    rank = np.argsort(order)
    for d in range(1, D + 1):
        recs = [(p * N + j, p * N * D + j * D + d - 1) for p, last in ((0, N - 1), (1, 9)) for j in range(d - 1, last + 1)]
        for k in (0, 5, 17, Vr):
            for r in range(3):
                hit = sum(1 for ti, ri in recs if n_above[ri] <= cap and rank[tokens[ti]] < k
                          and sum(rank[x] < k for x in above[ri] if x >= 0) == r)
                assert got[d - 1, r, k] == pytest.approx(hit / len(recs)), (d, r, k)
        lo, hi = acceptance.intervals(rep, order)   # r = 0 is the chain's rule, record by record
        for k in (3, 11, 29):
            chain = sum(1 for _, ri in recs if n_above[ri] <= cap and lo[ri] <= k <= hi[ri])
            assert got[d - 1, 0, k] == pytest.approx(chain / len(recs))


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    rng = np.random.default_rng(11)
    fit = (3000.0 / np.arange(1, V + 1) ** 1.2).astype(np.int64)
    rng.shuffle(fit)
    held = (fit // 3 + rng.integers(0, 2, V)).astype(np.int64)
    root = tmp_path_factory.mktemp("engine")
    cf = CountsFile(counts=fit + held, manifest={"format": "vtcore-counts/1", "always_keep": [], "rows": 10,
                                                 "tokenizer": "handmade", "dataset_sha256": "x" * 64},
                    counts_fit=fit, counts_heldout=held, domain_names=["d"], counts_by_domain=(fit + held)[None, :])
    path = save_counts(root / "c.npz", cf)
    draft = root / "draft.json"
    draft.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
                                 "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 4,
                                 "num_hidden_layers": 1, "vocab_size": V}))
    return path, draft


def test_cli_engine_model(handmade, tmp_path, monkeypatch, capsys):
    """In this process through the CLI's own entry (the parsing and JSON of `python -m vtcore`)."""
    from vtcore.cli import main

    monkeypatch.setenv("VTCORE_WORKSPACE", str(tmp_path))

    def cli(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    path, draft = handmade
    base = ["optimize", "--counts", str(path), "--draft", str(draft), "--objective", "speedup", "--cost-ratio",
            "0.3", "--trials", "6", "--gamma-max", "5"]
    code, out, _ = cli(*base, "--engine-model", "sglang", "--topk-max", "3", "--tokens-max", "10", "--json")
    r = json.loads(out.strip().splitlines()[-1])
    s, t, n = r["exact_best_tree"]
    assert code == 0 and r["engine_model"] == "sglang" and s == r["exact_best_gamma"]
    assert 2 <= n <= min(10, 1 + t + (s - 1) * t * t)
    assert r["best_tree"][0] == r["best_gamma"] and r["acceptance_model"].startswith("geometric")
    code, out, _ = cli(*base, "--engine-model", "vllm", "--batch-size", "8", "--scatter-cost", "0.001")
    assert code == 0 and "engine model vllm, batch 8" in out
    code, _, err = cli("optimize", "--counts", str(path), "--draft", str(draft), "--engine-model", "sglang")
    assert code == 2 and "--objective speedup" in err
    code, _, err = cli(*base, "--engine-model", "chain", "--batch-size", "0")
    assert code == 2 and "--batch-size must be >= 1" in err
    # an acceptance file: the tree's ranks are the replay's (a hand-made replay over these ids)
    acc = acceptance.save_acceptance(tmp_path / "acc.npz", handmade_replay(V, 5, 8, 40, seed=2, top=4))
    code, out, _ = cli(*base, "--engine-model", "sglang", "--topk-max", "3", "--tokens-max", "10",
                       "--acceptance", str(acc), "--json")
    r2 = json.loads(out.strip().splitlines()[-1])
    assert r2["acceptance_model"] == "replayed ranks" and "tree acceptance: per-depth ranks" in r2["coverage_note"]
    assert r2["exact_speedup"] != r["exact_speedup"]
    code, _, err = cli(*base[:-2], "--gamma-max", "6", "--engine-model", "sglang", "--acceptance", str(acc))
    assert code == 2 and "replayed up to" in err
