"""Tree drafting and tree verification (vtcore.tree) on tiny random-weight Llama targets with a
standalone draft and an EAGLE-3 head: greedy output identical to the target alone, the chain as
the t = 1 case, SGLang's head-row count, cache compaction, the tree's selection rule; one short
run on the real SmolLM2 pair."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from test_speculative import PROMPTS, shallow_copy_draft, tiny_eagle3, tiny_llama
from vtcore import eagle3 as E
from vtcore import models
from vtcore import speculative as sp
from vtcore import tree as T
from vtcore.errors import VTError

torch.set_num_threads(1)

SHAPES = [T.TreeShape(3, 2, 5), T.TreeShape(4, 3, 8), T.TreeShape(2, 4, 9)]


@pytest.fixture(scope="module")
def target():
    return tiny_llama(head_scale=4.0)


@pytest.fixture(scope="module")
def drafts(target):
    std = sp.make_draft(shallow_copy_draft(target))
    eag = tiny_eagle3(target)
    return {"standalone": std, "standalone trimmed": sp.make_draft(std.model, list(range(0, 96, 2)) + [1, 3, 5]),
            "eagle3": eag, "eagle3 trimmed": E.subtrim(eag, list(range(48)))}


@pytest.fixture(scope="module")
def wants(target):
    return [sp.target_generate(target, p, sp.SpecConfig(max_new_tokens=20)).tokens for p in PROMPTS]


@pytest.mark.parametrize("name", ["standalone", "standalone trimmed", "eagle3", "eagle3 trimmed"])
def test_greedy_tree_is_token_identical_to_the_target(target, drafts, wants, name):
    accepted = 0
    for shape in SHAPES:
        for prompt, want in zip(PROMPTS, wants):
            r = T.tree_generate(target, drafts[name], prompt, sp.SpecConfig(max_new_tokens=20), shape)
            assert r.tokens == want, (name, shape, prompt)
            # the caches keep committed positions only: all but the last token
            assert r.target_cache.get_seq_length() == len(prompt) + len(want) - 1
            assert r.draft_cache.get_seq_length() <= len(prompt) + len(want) - 1
            assert all(a <= shape.steps for a in r.stats.accepted)
            assert all(d <= shape.tokens - 1 for d in r.stats.drafted)
            accepted += sum(r.stats.accepted)
    assert accepted > 0, "the drafts should get some tokens accepted, else nothing is verified"


def test_kv_cache_after_tree_rounds_equals_a_fresh_prefill(target, drafts):
    """The gathered-and-cropped target cache holds exactly the keys/values a fresh forward over the
    committed sequence computes (the accepted nodes' entries moved to their sequential slots)."""
    prompt = PROMPTS[2]
    r = T.tree_generate(target, drafts["standalone"], prompt, sp.SpecConfig(max_new_tokens=16), T.TreeShape(3, 3, 7))
    assert max(r.stats.accepted) >= 1
    seq = torch.tensor(prompt + r.tokens)
    fresh = models.new_cache(target)
    with torch.inference_mode():
        target.model(input_ids=seq[None, :-1], use_cache=True, **{models.cache_kwarg(target.model): fresh})
    for a, b in zip(r.target_cache.layers, fresh.layers):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a.values, b.values, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["standalone", "eagle3"])
def test_t1_tree_is_the_chain(target, drafts, name):
    """t = 1, n = s + 1 drafts the chain's tokens: same outputs, same accepted counts per round."""
    for prompt in PROMPTS:
        cfg = sp.SpecConfig(gamma=4, max_new_tokens=22)
        chain = sp.speculative_generate(target, drafts[name], prompt, cfg)
        tree = T.tree_generate(target, drafts[name], prompt, cfg, T.TreeShape(4, 1, 5))
        assert tree.tokens == chain.tokens
        assert tree.stats.accepted == chain.stats.accepted
        assert tree.stats.drafted == chain.stats.drafted


@pytest.mark.parametrize("name", ["standalone", "eagle3 trimmed"])
def test_head_rows_per_round_follow_sglangs_formula(target, drafts, name):
    shape = T.TreeShape(4, 3, 8)
    r = T.tree_generate(target, drafts[name], PROMPTS[0], sp.SpecConfig(max_new_tokens=30), shape)
    assert shape.head_rows() == 1 + 3 * 3 == 10 and shape.head_rows(batch=8) == 80
    # every round at full depth (all but the last few, whose depth the token budget cuts)
    full = [(h, d) for h, f, d in zip(r.stats.head_rows, r.stats.draft_forwards, r.stats.drafted) if f == shape.steps]
    assert len(full) >= r.stats.steps - shape.steps
    assert all(rows == shape.head_rows() and drafted == shape.tokens - 1 for rows, drafted in full)


def test_trimmed_tree_only_proposes_kept_ids(target, drafts, monkeypatch):
    seen = []
    real = T.draft_tree

    def spy(*a, **k):
        tree = real(*a, **k)
        seen.extend(tree.token)
        return tree

    monkeypatch.setattr(T, "draft_tree", spy)
    d = drafts["eagle3 trimmed"]
    T.tree_generate(target, d, PROMPTS[0], sp.SpecConfig(max_new_tokens=16), T.TreeShape(3, 4, 8))
    kept = set(d.head_target_ids.tolist())
    assert seen and set(seen) <= kept


def test_selection_keeps_the_best_t_of_t_squared_and_the_best_n_minus_1():
    """A hand-made draft with known log-probabilities: SGLang's rule picks these nodes."""
    class Fixed:
        aux_ids, kept = None, None
        length = 10

        def __init__(self):
            self.fed = []

        def root(self, seq, n_seq):
            return torch.tensor(0), None

        def expand(self, tokens, hidden, positions, visible):
            self.fed.append(tokens.tolist())
            self.length += tokens.numel()
            return tokens, None

        def head(self, x):
            # token x's children: ids 0..4 with log-probs falling off faster for larger x
            z = -(torch.arange(5).double()[None] + 1) * (x.reshape(-1, 1).double() + 1) / 2
            return z[0] if x.dim() == 0 else z

    prop = Fixed()
    tree = T.draft_tree(prop, torch.zeros(11, dtype=torch.long), 11, T.TreeShape(3, 2, 6), 3, sp.Clock(torch.device("cpu")))
    # root children 0 (-0.5) and 1 (-1); expanded: both; 4 children; best 2 kept; and so on
    assert tree.token[:2] == [0, 1] and tree.depth[:2] == [1, 1]
    assert len(tree.token) == 2 + 4 + 4 and tree.head_rows == 1 + 2 * 2
    assert prop.fed[0] == [0, 1]
    d2 = list(range(2, 6))
    best2 = sorted(d2, key=lambda i: -tree.score[i])[:2]
    assert prop.fed[1] == [tree.token[i] for i in sorted(best2)]
    chosen = tree.choose(5)
    want = sorted(sorted(range(len(tree.token)), key=lambda i: -tree.score[i])[:5])
    assert chosen == want
    assert all(tree.parent[c] < 0 or tree.parent[c] in chosen for c in chosen)
    # the verify mask: a node sees the prefix, the tail, its ancestors and itself, nothing else
    vis = T.tree_mask(tree, chosen, cached=4, tail=1)
    for j, c in enumerate(chosen):
        want_cols = set(range(5)) | {5 + j} | {5 + chosen.index(a) for a in tree.ancestors(c)}
        assert set(vis[1 + j].nonzero().flatten().tolist()) == want_cols


def test_tree_shapes_and_sampling_refusal(target, drafts):
    assert T.parse_tree("5,4,8") == T.TreeShape(5, 4, 8)
    for bad in ("5,4", "a,b,c", "5,4,8,1"):
        with pytest.raises(VTError, match="s,t,n"):
            T.parse_tree(bad)
    with pytest.raises(VTError, match=r"2\.\.7"):
        T.TreeShape(2, 2, 8)   # at most the root + 2 + 4 candidates
    cfg = sp.SpecConfig(max_new_tokens=8, mode="sample")
    with pytest.raises(VTError, match="not implemented"):
        T.tree_generate(target, drafts["standalone"], PROMPTS[0], cfg, T.TreeShape(3, 2, 5))
    # the chain shape samples losslessly through the chain's sampler
    a = T.tree_generate(target, drafts["standalone"], PROMPTS[0], cfg, T.TreeShape(3, 1, 4))
    b = sp.speculative_generate(target, drafts["standalone"], PROMPTS[0], sp.SpecConfig(gamma=3, max_new_tokens=8,
                                                                                      mode="sample"))
    assert a.tokens == b.tokens


def test_summary_reports_acceptance_length_and_depths(target, drafts):
    shape = T.TreeShape(3, 2, 6)
    runs = [T.tree_generate(target, drafts["eagle3"], p, sp.SpecConfig(max_new_tokens=16), shape).stats
            for p in PROMPTS[:2]]
    s = T.summarize(runs, shape.steps)
    rounds = sum(r.steps for r in runs)
    assert s["acceptance_length"] == pytest.approx(sum(r.new_tokens for r in runs) / rounds)
    assert s["acceptance_length"] == pytest.approx(1 + s["accepted_per_round"], abs=1e-9) or \
        any(r.new_tokens < 16 for r in runs)
    assert s["accepted_by_depth"] == sorted(s["accepted_by_depth"], reverse=True)
    assert 0 < s["head_share"] < 1


@pytest.mark.integration
def test_real_smollm2_pair_tree_is_identical():
    """The embedded SmolLM2-135M-Instruct with its EAGLE-3 head, a few tokens, full and trimmed."""
    target_dir = models.default_target_dir()
    target = models.load_model(target_dir, "cpu")
    tok = models.load_tokenizer_from(target_dir)
    draft = E.build_default_eagle3(target)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that reverses a list."}],
                                     add_generation_prompt=True, tokenize=True)
    prompt = prompt if isinstance(prompt, list) else prompt["input_ids"]
    cfg = sp.SpecConfig(max_new_tokens=12)
    want = sp.target_generate(target, prompt, cfg).tokens
    trimmed = E.subtrim(draft, sorted(set(range(2000)) | set(want)))
    for d in (draft, trimmed):
        r = T.tree_generate(target, d, prompt, cfg, T.TreeShape(3, 4, 8))
        assert r.tokens == want
        assert sum(r.stats.accepted) > 0


# ---------------------------------------------------------------- the engine cost model


def test_engine_round_work_per_engine():
    from vtcore import enginecost as C

    sg = C.round_shape("sglang", batch=4, steps=5, topk=4, tokens=8)   # SGLang's Llama default, bs 4
    assert sg.head_rows == 4 * (1 + 4 * 4) == T.TreeShape(5, 4, 8).head_rows(batch=4)
    assert (sg.draft_forwards, sg.verified, sg.scatter_rows, sg.max_accepted) == (5, 8, 0, 5)
    vl = C.round_shape("vllm", batch=2, gamma=4)
    assert (vl.head_rows, vl.scatter_rows, vl.verified, vl.draft_forwards) == (8, 8, 5, 4)
    assert C.round_shape("vllm", batch=2, gamma=4, trimmed=False).scatter_rows == 0   # no d2t, no scatter
    ch = C.round_shape("chain", batch=2, gamma=4)
    assert (ch.head_rows, ch.scatter_rows) == (8, 0)
    # t = 1 is the chain's work
    one = C.round_shape("sglang", steps=4, topk=1, tokens=5)
    assert (one.head_rows, one.draft_tokens, one.verified) == (4, 4, 5) == \
        (C.round_shape("chain", gamma=4).head_rows, C.round_shape("chain", gamma=4).draft_tokens, 5)
    for bad in (dict(engine="trt"), dict(engine="sglang", steps=5, topk=4), dict(engine="vllm"),
                dict(engine="chain", gamma=2, batch=0)):
        with pytest.raises(VTError):
            C.round_shape(**bad)


def test_engine_cost_prices_rows_and_the_scatter():
    from vtcore import enginecost as C

    u = C.UnitCosts(layer_ms_per_token=2.0, head_ms_per_row=1.0, scatter_ms=0.5, overhead_ms=3.0)
    verify = {5: 30.0, 8: 36.0}.__getitem__
    vl, ch = C.round_shape("vllm", gamma=4), C.round_shape("chain", gamma=4)
    assert C.draft_ms(ch, u) == 4 * 2.0 + 4 * 1.0
    assert C.draft_ms(vl, u) == C.draft_ms(ch, u) + 4 * 0.5    # the scatter trimming cannot remove
    sg = C.round_shape("sglang", steps=5, topk=4, tokens=8)
    assert C.round_ms(sg, u, verify) == 17 * 2.0 + 17 * 1.0 + 36.0 + 3.0
    assert sg.forward_tokens == (1, 4, 4, 4, 4)
    # a forward over 4 tokens costing 1.5 one-token forwards (a CPU batches them)
    batched = C.UnitCosts(2.0, 1.0, 0.5, 3.0, layer_ratio={1: 1.0, 4: 1.5}.__getitem__)
    assert C.draft_ms(sg, batched) == 2.0 * (1 + 4 * 1.5) + 17 * 1.0
    # and a head on 4 rows costing 2 rows: its weight is read once per matmul
    both = C.UnitCosts(2.0, 1.0, 0.5, 3.0, layer_ratio={1: 1.0, 4: 1.5}.__getitem__,
                       head_ratio={1: 1.0, 4: 2.0}.__getitem__)
    assert C.draft_ms(sg, both) == 2.0 * (1 + 4 * 1.5) + 1.0 * (1 + 4 * 2.0)
    # 3 tokens per round at 20 ms per target token
    assert C.predicted_speedup(3.0, ch, u, verify, 20.0) == pytest.approx(60.0 / (12.0 + 30.0 + 3.0))
    assert C.scatter_ms(100, 5000, repeats=3) > 0


@pytest.mark.integration
def test_tree_benchmark_on_a_tiny_pair(tmp_path_factory):
    """Target alone, a chain and a tree, full and trimmed, measured by vtcore.treebench."""
    from drafthelpers import tiny_pair
    from vtcore import bench, treebench

    tdir, ddir, _ = tiny_pair(tmp_path_factory.mktemp("pair"))
    cfg = bench.BenchConfig(target=str(tdir), draft=str(ddir), prompts=2, max_new_tokens=8, repeats=1, warmup=0,
                            gamma=2, k=3000, device="cpu", threads=1, save=False,
                            workspace=None)   # the session workspace: its counts cache is shared
    shape = T.TreeShape(2, 2, 4)
    r = treebench.run_tree_bench(cfg, [shape], [2])
    assert set(r["methods"]) == {"target_only", "chain 2 full", "chain 2 trimmed", "tree 2,2,4 full",
                                 "tree 2,2,4 trimmed"}
    assert r["identical_outputs"] is True and r["k"] == 3000 and r["notes"] == []   # 2 prompts ran as asked
    assert set(r["draft_layer_ratios"]) == {1, 2} and r["draft_layer_ratios"][2] > 0
    assert set(r["head_ratios"]) == {"full", "trimmed"} and set(r["head_ratios"]["trimmed"]) == {1, 2}
    for name in ("tree 2,2,4 full", "tree 2,2,4 trimmed"):
        m = r["methods"][name]
        assert 1 <= m["acceptance_length"] <= shape.steps + 1
        assert m["head_rows_per_round"] <= shape.head_rows() and m["verified_per_round"] <= shape.tokens
        assert m["predicted_decode_speedup"] > 0 and len(m["accepted_by_depth"]) == shape.steps
        assert m["predicted_draft_ms_per_round"] > 0 and m["measured_verify_ms_per_round"] > 0
        assert m["round_shape"]["head_rows"] == shape.head_rows() and m["loop_ms_per_round"] >= 0
    for name in ("chain 2 full", "chain 2 trimmed"):   # vLLM pays the scatter on a trimmed head only
        m = r["methods"][name]
        assert (m["predicted_decode_speedup_vllm"] < m["predicted_decode_speedup"]) == name.endswith("trimmed")
    # the search's side: acceptance modelled from a replay of this run's target outputs
    sc = r["search"]
    assert set(sc["modelled_acceptance_length"]) == set(r["methods"]) - {"target_only"}, sc
    assert sc["choice"].endswith(" trimmed") and 0 < sc["choice_vs_best"] <= 1.0
    for name, a in sc["modelled_acceptance_length"].items():
        assert 1.0 <= a <= 3.0 + 1e-9     # at most s + 1 = 3 tokens per verify (chain 2, tree depth 2)
    from vtapp import plots

    rows = plots.tree_result_rows(r)
    assert [x["method"] for x in rows][0] == "target alone" and len(rows) == 5
    assert plots.tree_history_row(r)["trees (s,t,n)"] == "2,2,4"
    from vtcore.cmd.bench import human

    text = human(r)   # what `vtcore bench --tree` prints without --json
    assert "tree 2,2,4 trimmed" in text and "identical outputs: True" in text and "engine model's pick" in text
    with pytest.raises(VTError, match="greedy"):
        treebench.run_tree_bench(bench.BenchConfig(mode="sample"), [shape])


def test_cli_tree_flag(tmp_path):
    """`vtcore bench --tree` parses s,t,n and refuses sampling with a tree: exit 2, one line why."""
    from clihelpers import run_vtcore

    p = run_vtcore("bench", "--tree", "3,2,4", "--mode", "sample", "--no-save", ws=tmp_path)
    assert p.returncode == 2
    assert "greedy" in p.stderr and "not implemented" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_vtcore("bench", "--tree", "3,2", ws=tmp_path)
    assert p.returncode == 2 and "s,t,n" in p.stderr


def test_cli_tree_settings_reach_the_benchmark(monkeypatch, tmp_path):
    """--tree values ('grid' expanded, repeats dropped) and --gamma reach run_tree_bench; a saved
    run is one JSON line in its own store."""
    from vtcore import bench, treebench
    from vtcore.cmd import bench as cmd

    seen = {}

    def fake(cfg, shapes, gammas, progress=None, log=None):
        seen.update(shapes=[s.label for s in shapes], gammas=gammas)
        return {"methods": {}, "identical_outputs": True}

    monkeypatch.setattr(treebench, "run_tree_bench", fake)
    cfg = bench.BenchConfig(tree=["grid", (3, 2, 4), (6, 1, 7)], gamma=3, workspace=str(tmp_path))
    r = cmd.run_tree(None, cfg)
    assert seen == {"shapes": ["3,2,4", "4,2,6", "5,4,8", "6,1,7"], "gammas": [3]}
    lines = (tmp_path / "bench" / "tree_results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and r["results_file"].endswith("tree_results.jsonl")
    assert json.loads(lines[0])["config"]["tree"] == ["grid", [3, 2, 4], [6, 1, 7]]
