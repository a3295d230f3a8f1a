"""Export: every format round-trips and loads the way the engines load it (docs/formats.md).

Real data: counts of samples/code.jsonl with the bundled Qwen3 tokenizer; tiny random-weight
LlamaForCausalLM drafts saved with save_pretrained stand in for real draft directories.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vtcore import export as ex  # noqa: E402
from vtcore import selection as pick  # noqa: E402
from vtcore.countsfile import load_counts, save_counts  # noqa: E402
from vtcore.errors import VTError  # noqa: E402
from vtcore.speculative import load_draft  # noqa: E402

from tests.drafthelpers import eagle3_checkpoint, tiny_target_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "samples" / "code.jsonl"
IM_END = 151645          # Qwen3 <|im_end|>: the end-of-turn token
QWEN3_LEN = 151669       # len(tokenizer)
QWEN3_MODEL_V = 151936   # Qwen3 models' padded embedding


@pytest.fixture(scope="module")
def export_ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTCORE_WORKSPACE", str(ws))
        yield ws


@pytest.fixture(scope="module")
def counts_path(export_ws) -> Path:
    from vtcore.counts import count_dataset

    cf, _ = count_dataset([str(CODE)], cache=False, workspace=str(export_ws))
    path = export_ws / "code.npz"
    save_counts(path, cf)
    return path


@pytest.fixture(scope="module")
def cf(counts_path):
    return load_counts(counts_path)


def run_cli(*args: str, subprocess_: bool = False, env: dict | None = None) -> tuple[int, dict | None, str]:
    """The CLI as a user runs it: exit status, the last stdout line as JSON, stderr. In-process by
    default (fast); `subprocess_=True` runs `python -m vtcore` for real."""
    if subprocess_:
        e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env or {}))
        p = subprocess.run([sys.executable, "-m", "vtcore", *args], capture_output=True, text=True, env=e, cwd=ROOT)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    else:
        from vtcore.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
            for k, v in (env or {}).items():
                mp.setenv(k, v)
            try:
                rc = main(list(args))
            except SystemExit as e:   # argparse usage errors
                rc = e.code
        stdout, stderr = out.getvalue(), err.getvalue()
    lines = stdout.strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None), stderr


def tiny_llama(path: Path, tie: bool, vocab: int = QWEN3_LEN, seed: int = 0) -> Path:
    """A real-architecture draft with random weights, saved like any HF checkpoint, plus the
    bundled tokenizer files beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vtcore.tokens import bundled_tokenizer_dir

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=tie)
    LlamaForCausalLM(cfg).save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_tokenizer_dir() / f, path / f)
    return path


# ---------------------------------------------------------------- the choice

@pytest.mark.parametrize("curve, ranked", [("insample", "counts"), ("heldout", "counts_fit")])
def test_k_keeps_the_most_frequent_ids_of_its_curves_ranking(cf, curve, ranked):
    choice = pick.choose_k(cf, 300, curve)
    assert choice.k == 300 and choice.ids.dtype == np.int64 and choice.curve == curve
    assert choice.ids[0] == IM_END and IM_END in cf.always_keep
    counts = getattr(cf, ranked)[choice.ids[1:]]
    assert (np.diff(counts) <= 0).all()                        # frequency order of the rows it ranks on
    assert counts.min() >= getattr(cf, ranked)[np.setdiff1d(np.arange(cf.vocab_size), choice.ids)].max()
    assert choice.coverage_all_rows == pytest.approx(cf.counts[choice.ids].sum() / cf.counts.sum())
    assert choice.coverage_heldout_rows == pytest.approx(cf.counts_heldout[choice.ids].sum() / cf.counts_heldout.sum())
    # the figure shown for k on the curve is the one these exact ids have on that curve's rows
    shown = {"insample": choice.coverage_all_rows, "heldout": choice.coverage_heldout_rows}[curve]
    assert choice.coverage == pytest.approx(shown) and 0 < shown < 1


def test_min_coverage_picks_the_smallest_k_on_its_curve(cf):
    cov = cf.coverage()
    for curve in ("insample", "heldout"):
        choice = pick.choose_min_coverage(cf, 0.95, curve)
        C = cov.curve(curve)
        assert C[choice.k] >= 0.95 > C[choice.k - 1] and choice.coverage >= 0.95


# ---------------------------------------------------------------- sglang

@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")   # SGLang's own call warns the same
def test_sglang_map_loads_and_slices_the_head_as_sglang_does(cf, tmp_path):
    choice = pick.choose_k(cf, 512)
    paths = ex.write_bundle(ex.export(choice, ["sglang"], vocab_size=QWEN3_MODEL_V), tmp_path)
    path = paths["sglang"]
    assert path.name == "token_map_sglang_k512.pt"
    # SGLang (srt/speculative/spec_utils.py load_token_map): torch.load(weights_only=True), then an
    # int64 tensor of "hot token ids". eagle_worker.py gathers those rows of the target's LM head
    # for the draft, and maps the draft's top-k positions back with hot_token_id[topk_index].
    loaded = torch.load(path, weights_only=True)
    hot = torch.tensor(loaded, dtype=torch.int64)
    assert hot.tolist() == choice.ids.tolist()
    torch.manual_seed(1)
    target_head = torch.randn(QWEN3_MODEL_V, 8)
    draft_head = target_head.clone()[hot]
    h = torch.randn(3, 8)
    draft_logits = h @ draft_head.T
    full_logits = h @ target_head.T
    assert torch.equal(draft_logits, full_logits[:, hot])
    topk = draft_logits.topk(4, dim=-1).indices
    target_ids = hot[topk]
    # the best kept token by the full head is what the trimmed draft proposes
    masked = torch.full_like(full_logits, float("-inf"))
    masked[:, hot] = full_logits[:, hot]
    assert torch.equal(target_ids[:, 0], masked.argmax(-1))


# ---------------------------------------------------------------- eagle3

def test_eagle3_mapping_rebuilds_ids_as_the_engines_do(cf, tmp_path):
    choice = pick.choose_k(cf, 700)
    paths = ex.write_bundle(ex.export(choice, ["eagle3"], vocab_size=QWEN3_MODEL_V), tmp_path)
    m = torch.load(paths["eagle3"], weights_only=True)
    d2t, t2d = m["d2t"], m["t2d"]
    assert d2t.dtype == torch.int64 and t2d.dtype == torch.bool
    assert d2t.shape == (700,) and t2d.shape == (QWEN3_MODEL_V,)       # V = the model's, not the tokenizer's
    kept = torch.from_numpy(np.sort(choice.ids))
    # SGLang (models/llama_eagle3.py load_weights) and EAGLE (model/cnets.py): target = d2t + arange
    hot = d2t + torch.arange(d2t.shape[0])
    assert torch.equal(hot, kept)
    # SpecForge (modeling/draft/base.py load_vocab_mapping): copy_ into buffers sized by the config
    t2d_buf = torch.ones(QWEN3_MODEL_V, dtype=torch.bool)
    d2t_buf = torch.zeros(700, dtype=torch.int64)
    t2d_buf.copy_(t2d)
    d2t_buf.copy_(d2t)
    assert int(t2d_buf.sum()) == 700
    # ...and restricts target logits with t2d: column order = ascending ids = the draft head's row order
    torch.manual_seed(2)
    target_head = torch.randn(QWEN3_MODEL_V, 8)
    assert torch.equal(target_head[t2d], target_head[kept])
    # vLLM (models/llama_eagle3.py compute_logits): draft logits scattered into a -inf row at arange + d2t
    h = torch.randn(2, 8)
    draft_logits = h @ target_head[kept].T
    full = torch.full((2, QWEN3_MODEL_V), float("-inf"))
    full[:, torch.arange(700) + d2t_buf] = draft_logits
    assert torch.equal(full[:, kept], (h @ target_head.T)[:, kept])
    assert torch.isinf(full[:, ~t2d]).all()


def test_eagle3_vocab_size_smaller_than_an_id_is_refused(counts_path, tmp_path):
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "500", "--format", "eagle3",
                           "--vocab-size", "1000", "--out", str(tmp_path), "--json", subprocess_=True)
    assert rc == 2 and out is None
    assert "smaller than the largest kept id" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_target_resolves_v_from_a_draft_in_one_place(tmp_path):
    """vtcore.target is the one path to V: a draft's config file, directory or cost preset each
    state a V, explicit sources must agree, and an id at V or above is refused by name."""
    from vtcore.target import from_draft, resolve_vocab

    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 49152}))
    assert from_draft(None) is None
    assert from_draft(tmp_path / "config.json").size == 49152
    assert from_draft("mine", tmp_path).size == 49152 and "draft config mine" in from_draft("mine", tmp_path).source
    assert from_draft("qwen3-0.6b").size == QWEN3_MODEL_V and from_draft("qwen3-0.6b").source == "draft preset qwen3-0.6b"
    assert resolve_vocab(QWEN3_LEN, {}, draft=from_draft("qwen3-0.6b"), top_id=QWEN3_LEN - 1).size == QWEN3_MODEL_V
    guess = resolve_vocab(1000, {})
    assert guess.guessed and guess.size == 1000
    with pytest.raises(VTError, match="disagree"):
        resolve_vocab(1000, {}, vocab_size=QWEN3_MODEL_V, draft=from_draft(tmp_path / "config.json"))
    too_small = r"vocabulary size 49152 \(draft preset smollm2-135m\) is smaller than the largest kept id 49152"
    with pytest.raises(VTError, match=too_small):
        resolve_vocab(1000, {}, draft=from_draft("smollm2-135m"), top_id=49152)


def test_vocab_size_from_a_model_config(cf, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": QWEN3_MODEL_V}))
    b = ex.export(pick.choose_k(cf, 50), ["eagle3"], target=tmp_path)
    assert b.vocab_size == QWEN3_MODEL_V
    with pytest.raises(VTError, match="disagree"):
        ex.export(pick.choose_k(cf, 50), ["eagle3"], vocab_size=QWEN3_LEN, target=tmp_path / "config.json")


# ---------------------------------------------------------------- the target's V, made explicit

@pytest.fixture(scope="module")
def unknown_tok_counts(cf, export_ws) -> Path:
    """The same counts as if made with a tokenizer vtcore does not know: V is then only a guess."""
    import dataclasses

    path = export_ws / "unknown-tokenizer.npz"
    save_counts(path, dataclasses.replace(cf, manifest={**cf.manifest, "tokenizer": "my/tokenizer",
                                                        "tokenizer_sha256": "0" * 64}))
    return path


def test_eagle3_from_the_bundled_tokenizer_is_sized_for_qwen3_models(counts_path, tmp_path):
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "300", "--format", "eagle3",
                           "--out", str(tmp_path), "--json")
    assert rc == 0, err
    assert out["validated"] and out["vocab_size"] == QWEN3_MODEL_V and out["vocab_size_guessed"] is False
    assert "bundled Qwen3 tokenizer" in out["vocab_size_from"] and out["warnings"] == []
    assert torch.load(out["files"]["eagle3"], weights_only=True)["t2d"].shape == (QWEN3_MODEL_V,)


def test_a_guessed_v_is_refused_where_readers_check_it(unknown_tok_counts, tmp_path):
    for fmt in ("eagle3", "speculators-vocab", "all"):
        rc, out, err = run_cli("export", "--counts", str(unknown_tok_counts), "--k", "300", "--format", fmt,
                               "--out", str(tmp_path), "--json")
        assert rc == 2 and out is None and len(err.strip().splitlines()) == 1, (fmt, err)
        assert "len(tokenizer) = 151,669" in err and "--target" in err
    assert not any(tmp_path.iterdir())
    # the SGLang map and the JSON fall back to len(tokenizer), and say so
    rc, out, err = run_cli("export", "--counts", str(unknown_tok_counts), "--k", "300", "--format", "sglang", "json",
                           "--out", str(tmp_path), "--json")
    assert rc == 0 and out["validated"] and out["vocab_size"] == QWEN3_LEN and out["vocab_size_guessed"], err
    assert any("a guess" in w for w in out["warnings"])
    summary = json.loads(Path(out["files"]["summary"]).read_text())
    assert summary["vocab_size_guessed"] is True and any("a guess" in n for n in summary["notes"])
    # an explicit V is taken as given
    rc, out, err = run_cli("export", "--counts", str(unknown_tok_counts), "--k", "300", "--format", "eagle3",
                           "--vocab-size", str(QWEN3_MODEL_V), "--out", str(tmp_path / "v"), "--json")
    assert rc == 0 and out["vocab_size_from"] == "--vocab-size" and not out["vocab_size_guessed"], err


def test_target_names_v_in_every_form(cf, unknown_tok_counts, tmp_path):
    from transformers import Qwen3Config

    choice = pick.choose_k(load_counts(unknown_tok_counts), 50)
    Qwen3Config(vocab_size=QWEN3_MODEL_V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8, intermediate_size=32).save_pretrained(tmp_path / "target")
    # (a preset has its own tokenizer: the counts must be made with it, here the bundled Qwen3 one)
    for target, source, ch in ((tmp_path / "target", "target ", choice),
                               (tmp_path / "target" / "config.json", "target config", choice),
                               ("qwen3-8b", "preset qwen3-8b", pick.choose_k(cf, 50))):
        b = ex.export(ch, ["eagle3"], target=target)
        assert b.vocab_size == QWEN3_MODEL_V and b.vocab_source.startswith(source) and not b.vocab.guessed
    with pytest.raises(VTError, match="model hub is off"):          # a hub id: its config.json only, never offline
        ex.export(choice, ["eagle3"], target="nobody/not-cached-model")
    with pytest.raises(VTError, match="neither a config.json"):
        ex.export(choice, ["eagle3"], target="no-such-thing")
    rc, out, err = run_cli("export", "--counts", str(unknown_tok_counts), "--k", "50", "--format", "eagle3",
                           "--target", str(tmp_path / "target"), "--vocab-size", str(QWEN3_LEN),
                           "--out", str(tmp_path / "o"), "--json")
    assert rc == 2 and "vocabulary sizes disagree" in err
    rc, out, err = run_cli("export", "--counts", str(unknown_tok_counts), "--k", "50", "--format", "eagle3",
                           "--target", str(tmp_path / "target"), "--out", str(tmp_path / "o"), "--json")
    assert rc == 0 and out["vocab_size"] == QWEN3_MODEL_V, err


# ---------------------------------------------------------------- json + summary

def test_json_and_summary_round_trip(cf, counts_path, tmp_path):
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--min-coverage", "0.9", "--format", "json",
                           "--out", str(tmp_path), "--json")
    assert rc == 0, err
    assert out["validated"] is True and out["problems"] == []
    choice = pick.choose_min_coverage(cf, 0.9)
    assert out["k"] == choice.k and out["coverage"]["at_k"] == pytest.approx(choice.coverage)
    assert out["coverage"]["curve"] == "heldout" and out["coverage"]["all_rows"] == pytest.approx(choice.coverage_all_rows)
    doc = json.loads(Path(out["files"]["json"]).read_text())
    assert doc["token_ids"] == choice.ids.tolist()
    assert doc["vocab_size"] == QWEN3_MODEL_V        # the bundled tokenizer's models: Qwen3, vocab_size 151,936
    assert doc["manifest"]["tokenizer_sha256"] == cf.manifest["tokenizer_sha256"]
    summary = json.loads(Path(out["files"]["summary"]).read_text())
    assert summary["k"] == choice.k
    assert summary["coverage"]["heldout_rows"] == pytest.approx(choice.coverage_heldout_rows)
    assert summary["coverage"]["ranked_on"].startswith("the fit rows")
    assert summary["dataset_sha256"] == cf.manifest["dataset_sha256"]
    assert summary["tokenizer"]["sha256"] == cf.manifest["tokenizer_sha256"]
    assert summary["chat_template_sha256"] == cf.manifest["chat_template_sha256"]
    assert summary["files"] == {"json": f"token_ids_k{choice.k}.json"}
    assert summary["vtcore_version"] and summary["created"]


def test_all_formats_from_the_cli_each_validate(counts_path, tmp_path):
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "256", "--format", "sglang",
                           "--format", "eagle3", "--out", str(tmp_path / "o"), "--json", subprocess_=True)
    assert rc == 0, err
    assert set(out["files"]) == {"sglang", "eagle3", "summary"}
    for fmt in ("sglang", "eagle3"):
        rc, rep, err = run_cli("validate", out["files"][fmt], "--json")
        assert rc == 0 and rep["valid"] and rep["n"] == 256, err
        assert rep["vocab_size"] == QWEN3_MODEL_V  # read from the summary written beside it


# ---------------------------------------------------------------- study

def test_export_from_a_study_trial(cf, counts_path, export_ws):
    from vtcore.search import Problem
    from vtcore.studies import StudyRunner

    cov = cf.coverage()
    V = cf.vocab_size
    reduction = 1.0 - (20_000 + np.arange(V + 1)) / (20_000 + V)     # a linear head-cost model
    runner = StudyRunner(Problem(coverage=cov.heldout, reduction=reduction, alpha=0.7, min_coverage=0.5),
                         study_name="export-test", n_trials=6, seed=3, workspace=str(export_ws)).run()
    row = runner.best()
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--from-study", "export-test", "--trial",
                           str(row["number"]), "--format", "sglang", "--out", str(export_ws / "exp"), "--json",
                           env={"VTCORE_WORKSPACE": str(export_ws)})
    assert rc == 0, err
    assert out["k"] == row["k"]
    assert out["latency_reduction"] == pytest.approx(row["latency_reduction"])
    summary = json.loads(Path(out["files"]["summary"]).read_text())
    assert summary["alpha"] == 0.7 and summary["min_coverage"] == 0.5 and summary["objective"] == "utility"
    assert summary["coverage"]["curve"] == "heldout"   # the study ran on the held-out curve: its ranking is exported
    assert summary["study"]["trial"] == row["number"]
    rc, _, err = run_cli("export", "--counts", str(counts_path), "--from-study", "no-such-study", "--trial", "0",
                         "--out", str(export_ws / "exp2"), env={"VTCORE_WORKSPACE": str(export_ws)})
    assert rc == 2 and "not found" in err
    with pytest.raises(VTError):
        pick.choose_from_study(cf, "../../etc/passwd", 0, workspace=str(export_ws))


def test_best_trial_and_a_warning_for_an_infeasible_one(cf, export_ws):
    from vtcore.search import Problem
    from vtcore.studies import StudyRunner

    cov = cf.coverage()
    V = cf.vocab_size
    reduction = 1.0 - (20_000 + np.arange(V + 1)) / (20_000 + V)
    runner = StudyRunner(Problem(coverage=cov.heldout, reduction=reduction, alpha=0.5, min_coverage=0.9),
                         study_name="best-test", n_trials=12, seed=0, workspace=str(export_ws)).run()
    rows = runner.snapshot()
    feasible = [r for r in rows if r["feasible"]]
    best = max(feasible, key=lambda r: r["utility"])
    choice = pick.choose_from_study(cf, "best-test", "best", workspace=str(export_ws))
    assert choice.k == best["k"] and choice.extra["trial"] == best["number"]
    bad = [r for r in rows if r["feasible"] is False]
    assert bad, "seed 0 samples some k below the coverage constraint"
    rc, out, err = run_cli("export", "--counts", str(choice_counts(cf, export_ws)), "--from-study", "best-test",
                           "--trial", str(bad[0]["number"]), "--format", "json", "--out", str(export_ws / "e"),
                           "--json", env={"VTCORE_WORKSPACE": str(export_ws)})
    assert rc == 0, err
    assert any("violates the study's constraint" in w for w in out["warnings"])


def choice_counts(cf, where):
    from vtcore.countsfile import save_counts

    return save_counts(where / "c.npz", cf)


# ---------------------------------------------------------------- hf-draft

@pytest.mark.parametrize("tie", [True, False])
def test_trimmed_hf_draft_logits_equal_the_full_drafts_at_kept_ids(cf, tmp_path, tie):
    from transformers import AutoModelForCausalLM

    full_dir = tiny_llama(tmp_path / "full", tie=tie)
    choice = pick.choose_k(cf, 400)
    bundle = ex.export(choice, ["hf-draft"], draft=full_dir)
    assert bundle.validated, bundle.problems
    out = ex.write_bundle(bundle, tmp_path / "out")["hf-draft"]
    assert out.name == "hf_draft_k400"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["draft_vocab_size"] == 400 and cfg["tie_word_embeddings"] is False and cfg["vocab_size"] == QWEN3_LEN
    assert (out / "tokenizer.json").read_bytes() == (full_dir / "tokenizer.json").read_bytes()

    full = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    draft = load_draft(out)    # how vtcore bench loads it
    trimmed, kept = draft.model, draft.kept
    assert torch.equal(kept, torch.from_numpy(np.sort(choice.ids)))
    assert trimmed.lm_head.weight.shape == (400, 16)
    assert trimmed.model.embed_tokens.weight.shape == (QWEN3_LEN, 16)     # input embedding stays full size
    ids = torch.tensor([[IM_END, 220, 198, 262, 1479, 16]])
    with torch.no_grad():
        hidden = trimmed.model(ids).last_hidden_state
        trimmed_logits = hidden @ trimmed.lm_head.weight.T
        full_logits = full(ids).logits
        assert torch.allclose(trimmed_logits, full_logits[..., kept], atol=1e-6, rtol=0)
        assert torch.allclose(trimmed(ids).logits, full_logits[..., kept], atol=1e-6, rtol=0)


def test_eagle3_checkpoint_is_sub_trimmed_without_retraining(cf, tmp_path):
    old_kept = np.sort(pick.choose_k(cf, 2000).ids)
    old = eagle3_checkpoint(tmp_path / "eagle3", QWEN3_MODEL_V, old_kept)
    choice = pick.choose_k(cf, 300)
    bundle = ex.export(choice, ["hf-draft"], draft=tmp_path / "eagle3")
    assert bundle.validated and not bundle.retrain_needed, bundle.problems
    out = ex.write_bundle(bundle, tmp_path / "out")["hf-draft"]
    assert out.name == "eagle3_draft_k300"
    from safetensors.torch import load_file

    new = load_file(str(out / "model.safetensors"))
    new_kept = new["d2t"] + torch.arange(300)
    assert torch.equal(new_kept, torch.from_numpy(np.sort(choice.ids)))
    assert new["t2d"].shape == (QWEN3_MODEL_V,) and int(new["t2d"].sum()) == 300
    # draft logits over the new set equal the old draft's logits at those ids: rows moved, not retrained
    h = torch.randn(4, 16)
    old_logits = h @ old["lm_head.weight"].T
    pos = torch.from_numpy(np.searchsorted(old_kept, new_kept.numpy()))
    assert torch.equal(h @ new["lm_head.weight"].T, old_logits[:, pos])
    for k in ("fc.weight", "midlayer.self_attn.q_proj.weight", "norm.weight"):
        assert torch.equal(new[k], old[k])
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 300


def test_eagle3_checkpoint_missing_ids_says_retrain_and_exports_the_mapping(cf, tmp_path):
    choice = pick.choose_k(cf, 300)
    old_kept = np.setdiff1d(np.sort(pick.choose_k(cf, 2000).ids), choice.ids[5:10])   # drop 5 chosen ids
    eagle3_checkpoint(tmp_path / "eagle3", QWEN3_MODEL_V, old_kept)
    bundle = ex.export(choice, ["hf-draft"], draft=tmp_path / "eagle3")
    assert bundle.retrain_needed and "hf-draft" not in bundle.artifacts
    assert set(bundle.artifacts) == {"eagle3", "summary"}
    assert any("retrain" in n and "5 chosen ids" in n for n in bundle.notes)
    paths = ex.write_bundle(bundle, tmp_path / "out")
    assert not (tmp_path / "out" / "eagle3_draft_k300").exists()
    m = torch.load(paths["eagle3"], weights_only=True)
    assert m["t2d"].shape == (QWEN3_MODEL_V,)        # V from the draft's config


# ---------------------------------------------------------------- speculators' layout (vLLM)

def test_speculators_layout_of_a_sub_trimmed_eagle3_draft(cf, tmp_path):
    from safetensors.torch import load_file

    old_kept = np.sort(pick.choose_k(cf, 2000).ids)
    old = eagle3_checkpoint(tmp_path / "eagle3", QWEN3_MODEL_V, old_kept)
    target = tiny_target_config(tmp_path / "target")
    choice = pick.choose_k(cf, 300)
    bundle = ex.export(choice, ["speculators"], draft=tmp_path / "eagle3", target=target)
    assert bundle.validated and bundle.artifacts["speculators"].report.format == "speculators", bundle.problems
    out = ex.write_bundle(bundle, tmp_path / "out")["speculators"]
    assert out.name == "speculators_draft_k300" and sorted(p.name for p in out.iterdir()) == ["config.json",
                                                                                             "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Eagle3Speculator"] and cfg["speculators_model_type"] == "eagle3"
    # SpecForge's layer adds the residual before hidden_norm; vLLM assumes true when the field is missing
    assert cfg["draft_vocab_size"] == 300 and cfg["norm_before_residual"] is False
    layer = cfg["transformer_layer_config"]
    assert layer["vocab_size"] == QWEN3_MODEL_V and layer["hidden_size"] == 16 and "draft_vocab_size" not in layer
    assert layer["max_position_embeddings"] == 40960                                  # at least the target's
    assert cfg["speculators_config"]["verifier"] == {"name_or_path": str(target), "architectures": ["Qwen3ForCausalLM"]}
    assert cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"] == 3
    w = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("midlayer.") for k in w) and "layers.0.self_attn.q_proj.weight" in w
    assert torch.equal(w["layers.0.self_attn.q_proj.weight"], old["midlayer.self_attn.q_proj.weight"])
    assert np.array_equal((w["d2t"] + torch.arange(300)).numpy(), choice.sorted_ids)
    pos = torch.from_numpy(np.searchsorted(old_kept, choice.sorted_ids))
    assert torch.equal(w["lm_head.weight"], old["lm_head.weight"][pos]) and w["t2d"].shape == (QWEN3_MODEL_V,)
    # a local verifier: vllm serve DIR resolves only hub ids there, so the export says how to serve it
    assert any("--speculative-config" in n for n in bundle.notes)
    # the layout is read back as a draft: validate, the FLOPs estimate, a further sub-trim
    from vtcore.validate import validate_path

    assert validate_path(out).ok and validate_path(out).format == "speculators"
    again = ex.export(pick.choose_k(cf, 100), ["hf-draft", "speculators"], draft=out)
    assert again.validated and again.choice.extra["latency_reduction"] is not None, again.problems
    sglang_layout = ex.write_bundle(again, tmp_path / "again")["hf-draft"]
    assert sglang_layout.name == "eagle3_draft_k100"
    assert json.loads((sglang_layout / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle3"]
    assert "midlayer.self_attn.q_proj.weight" in load_file(str(sglang_layout / "model.safetensors"))


def test_speculators_needs_an_eagle3_draft_and_its_verifier(cf, tmp_path):
    choice = pick.choose_k(cf, 64)
    with pytest.raises(VTError, match="needs an EAGLE-3 draft"):
        ex.export(choice, ["speculators"], draft=tiny_llama(tmp_path / "full", tie=True))
    eagle3_checkpoint(tmp_path / "eagle3", QWEN3_MODEL_V, np.sort(pick.choose_k(cf, 2000).ids))
    with pytest.raises(VTError, match="needs --target MODEL"):
        ex.export(choice, ["speculators"], draft=tmp_path / "eagle3")
    # all: every format the inputs allow (speculators only once a verifier is known)
    assert "speculators" not in ex.export(choice, "all", draft=tmp_path / "eagle3").artifacts
    assert "speculators" in ex.export(choice, "all", draft=tmp_path / "eagle3",
                                      target=tiny_target_config(tmp_path / "target")).artifacts
    # a hub-id draft is fetched like any model; one that cannot be leaves the token maps, with the reason
    b = ex.export(choice, ["speculators"], draft="nobody/not-cached-draft")
    assert "model hub is off" in b.draft_error and {"eagle3", "speculators-vocab", "sglang", "json"} <= set(b.artifacts)


def test_norm_before_residual_stays_in_the_speculators_layout(cf, tmp_path):
    eagle3_checkpoint(tmp_path / "eagle3", QWEN3_MODEL_V, np.sort(pick.choose_k(cf, 2000).ids))
    out = ex.write_bundle(ex.export(pick.choose_k(cf, 300), ["speculators"], draft=tmp_path / "eagle3",
                                    target=tiny_target_config(tmp_path / "target")), tmp_path / "o")["speculators"]
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "norm_before_residual": True}))
    # SGLang's EAGLE-3 layer has no such option: no SpecForge-layout draft, the token maps and the reason instead
    b = ex.export(pick.choose_k(cf, 100), ["hf-draft"], draft=out)
    assert "norm_before_residual: true" in b.draft_error and "hf-draft" not in b.artifacts and "eagle3" in b.artifacts
    b = ex.export(pick.choose_k(cf, 100), ["speculators"], draft=out)
    assert json.loads(b.artifacts["speculators"].files["config.json"])["norm_before_residual"] is True


def test_speculators_vocab_pair_holds_the_eagle3_mapping(cf, tmp_path):
    choice = pick.choose_k(cf, 500)
    paths = ex.write_bundle(ex.export(choice, ["eagle3", "speculators-vocab"]), tmp_path)
    pair = paths["speculators-vocab"]
    assert pair.name == "speculators_vocab_k500" and sorted(p.name for p in pair.iterdir()) == ["d2t-500.npy",
                                                                                               "t2d-500.npy"]
    d2t, t2d = np.load(pair / "d2t-500.npy"), np.load(pair / "t2d-500.npy")   # what speculators' training CLI does
    m = torch.load(paths["eagle3"], weights_only=True)
    assert d2t.dtype == np.int64 and t2d.dtype == np.bool_ and t2d.shape == (QWEN3_MODEL_V,)
    assert np.array_equal(d2t, m["d2t"].numpy()) and np.array_equal(t2d, m["t2d"].numpy())


def test_download_bytes_match_the_written_files(cf, tmp_path):
    full_dir = tiny_llama(tmp_path / "full", tie=True)
    bundle = ex.export(pick.choose_k(cf, 64), "all", draft=full_dir)
    # all: every format this input allows (speculators needs an EAGLE-3 draft)
    assert set(bundle.artifacts) == {"sglang", "eagle3", "speculators-vocab", "json", "hf-draft", "summary"}
    paths = ex.write_bundle(bundle, tmp_path / "out")
    for fmt in ("sglang", "eagle3", "json", "summary"):
        assert bundle.artifacts[fmt].data() == paths[fmt].read_bytes()
    with zipfile.ZipFile(io.BytesIO(bundle.artifacts["speculators-vocab"].data())) as z:
        assert sorted(z.namelist()) == ["speculators_vocab_k64/d2t-64.npy", "speculators_vocab_k64/t2d-64.npy"]
    art = bundle.artifacts["hf-draft"]
    assert art.download_name == "hf_draft_k64.zip"
    with zipfile.ZipFile(io.BytesIO(art.data())) as z:
        names = set(z.namelist())
        assert {"hf_draft_k64/config.json", "hf_draft_k64/model.safetensors", "hf_draft_k64/tokenizer.json"} <= names
        assert z.read("hf_draft_k64/model.safetensors") == (paths["hf-draft"] / "model.safetensors").read_bytes()


# ---------------------------------------------------------------- safety

def test_existing_files_are_kept_without_force(cf, counts_path, tmp_path):
    target = tmp_path / "token_map_sglang_k128.pt"
    target.write_bytes(b"the user's own file")
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "128", "--format", "sglang",
                           "--out", str(tmp_path), "--json")
    assert rc == 2 and "--force" in err
    assert target.read_bytes() == b"the user's own file"
    assert not (tmp_path / "summary_k128.json").exists()       # nothing half-exported either
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "128", "--format", "sglang",
                           "--out", str(tmp_path), "--force", "--json")
    assert rc == 0, err
    assert torch.load(target, weights_only=True).shape == (128,)


def test_an_interrupted_write_leaves_no_half_file(cf, tmp_path, monkeypatch):
    bundle = ex.export(pick.choose_k(cf, 100), ["sglang", "eagle3"])
    calls = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):   # the process "dies" at the second rename
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(ex.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ex.write_bundle(bundle, tmp_path)
    assert calls["n"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == []   # no temp, no partial bundle


def test_an_interrupted_draft_overwrite_keeps_the_previous_export(cf, tmp_path, monkeypatch):
    full_dir = tiny_llama(tmp_path / "full", tie=True)
    out = tmp_path / "out"
    ex.write_bundle(ex.export(pick.choose_k(cf, 64), ["hf-draft"], draft=full_dir), out)
    before = (out / "hf_draft_k64" / "model.safetensors").read_bytes()
    bundle = ex.export(pick.choose_k(cf, 64, extra_keep=[5]), ["hf-draft"], draft=full_dir)
    real_replace = os.replace

    def dying_replace(src, dst):
        if Path(src).name.startswith(".tmp-hf_draft"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(ex.os, "replace", dying_replace)
    with pytest.raises(OSError):
        ex.write_bundle(bundle, out, force=True)
    assert (out / "hf_draft_k64" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["hf_draft_k64", "summary_k64.json"]


def test_output_names_come_from_the_tool():
    assert ex.file_name("sglang", 7) == "token_map_sglang_k7.pt"
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(VTError):
            ex._check_name(bad)


# ---------------------------------------------------------------- latency estimate

def test_summary_estimates_latency_from_the_drafts_flops(cf, tmp_path):
    from vtcore.cost import arch_from_config, latency_reduction, resolve_draft

    b = ex.export(pick.choose_k(cf, 2048), ["sglang"], draft="qwen3-0.6b")
    assert b.vocab_size == 151936                      # the preset's vocabulary is the model's V
    summary = json.loads(b.artifacts["summary"].data())
    assert summary["latency_reduction"] == pytest.approx(float(latency_reduction(resolve_draft("qwen3-0.6b"), 2048)))
    assert "FLOPs" in summary["latency_estimate"]
    full_dir = tiny_llama(tmp_path / "full", tie=True)
    b = ex.export(pick.choose_k(cf, 64), ["sglang"], draft=full_dir)
    arch = arch_from_config(full_dir / "config.json")
    assert b.choice.extra["latency_reduction"] == pytest.approx(float(latency_reduction(arch, 64)))
    assert 0 < b.choice.extra["latency_reduction"] < 1
    with pytest.raises(VTError, match="needs --draft DIR"):
        ex.export(pick.choose_k(cf, 64), ["hf-draft"], draft="qwen3-0.6b")


@pytest.fixture(scope="module")
def smollm2(export_ws, session_workspace):
    """The default SmolLM2 target (converted once into the shared test workspace) and the code
    sample counted with its tokenizer: (target dir, counts)."""
    from vtcore import models
    from vtcore.counts import count_dataset

    try:
        models.smollm2_gguf()
    except VTError as e:
        pytest.skip(str(e))
    with pytest.MonkeyPatch.context() as mp:   # the session's workspace keeps the one-off GGUF conversion
        mp.setenv("VTCORE_WORKSPACE", str(session_workspace))
        target_dir = models.default_target_dir()
        smol, _ = count_dataset([str(CODE)], tokenizer=str(target_dir), cache=False, workspace=str(export_ws))
        yield target_dir, smol


@pytest.mark.integration
def test_the_default_eagle3_head_exports_untied_from_the_targets_embedding(smollm2, tmp_path):
    from safetensors.torch import load_file

    from vtcore import eagle3 as E
    from vtcore import models

    target_dir, smol = smollm2
    choice = pick.choose_k(smol, 300)
    # by name and by its folder; its head is the target's embedding: cut from the target's rows
    for draft in ("default", models.default_eagle3_dir()):
        bundle = ex.export(choice, "all", draft=draft)
        assert bundle.draft_error is None and bundle.validated, (bundle.draft_error, bundle.problems)
        assert set(bundle.artifacts) == set(ex.FORMATS) | {"summary"} and bundle.vocab_size == 49152
    out = ex.write_bundle(bundle, tmp_path)
    emb = load_file(str(target_dir / "model.safetensors"))["model.embed_tokens.weight"]
    rows = torch.from_numpy(choice.sorted_ids)
    for fmt, layer in (("hf-draft", "midlayer."), ("speculators", "layers.0.")):
        w = load_file(str(out[fmt] / "model.safetensors"))
        assert w["lm_head.weight"].shape == (300, 576) and w["embed_tokens.weight"].shape == (49152, 576)
        assert torch.equal(w["lm_head.weight"], emb[rows].to(w["lm_head.weight"].dtype))      # untied: own tensors
        assert torch.equal(w["embed_tokens.weight"], emb.to(w["embed_tokens.weight"].dtype))
        assert any(k.startswith(layer) for k in w)
        cfg = json.loads((out[fmt] / "config.json").read_text())
        assert cfg.get("tie_word_embeddings") is False
    # our loader reads the export back: the sub-trimmed head scores the kept ids as the tied head does
    target = models.load_model(target_dir, "cpu", torch.float32)
    full = E.build_default_eagle3(target)
    small = E.load_eagle3(out["hf-draft"], "cpu", torch.float32, target=target)
    assert torch.equal(small.head_target_ids, rows) and small.aux_ids == full.aux_ids
    h = torch.randn(3, 576, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(small.logits(h), full.logits(h)[:, rows], atol=0.05, rtol=0.02)   # bf16 head


@pytest.mark.integration
def test_a_bundled_draft_for_counts_of_another_tokenizer_keeps_the_token_maps(smollm2, cf):
    # Qwen3 counts and the SmolLM2 head: the draft does not fit the counts, the Qwen3-sized maps still do
    bundle = ex.export(pick.choose_k(cf, 300), "all", draft="default")
    assert "tokenizer" in bundle.draft_error and "smollm2" in bundle.draft_error
    assert set(bundle.artifacts) == {"sglang", "eagle3", "speculators-vocab", "json", "summary"}
    assert bundle.vocab_size == QWEN3_MODEL_V and bundle.validated


@pytest.mark.integration
def test_the_standalone_2_layer_draft_exports_by_name_and_by_folder(smollm2, tmp_path):
    from vtcore import models

    target_dir, smol = smollm2
    choice = pick.choose_k(smol, 300)
    for draft in ("standalone", models.default_draft_dir()):   # the folder holds only layers.safetensors
        bundle = ex.export(choice, ["hf-draft"], draft=draft)
        assert bundle.validated and bundle.draft_error is None, (bundle.problems, bundle.draft_error)
    assert bundle.vocab_size == 49152
    out = ex.write_bundle(bundle, tmp_path / "out")["hf-draft"]
    assert (out / "tokenizer.json").is_file() and not (out / models.CONVERSION_MARKER).exists()
    draft = load_draft(out)
    trimmed, kept = draft.model, draft.kept
    full_draft = models.build_default_draft(models.load_model(target_dir, "cpu"))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    # in float64: fp32 sums in another order (2 threads, another matmul shape) differ by ~1e-5 at logits ~17
    trimmed, full_draft = trimmed.double(), full_draft.double()
    with torch.no_grad():
        assert torch.allclose(trimmed(ids).logits, full_draft(ids).logits[..., kept], atol=1e-5, rtol=0)


def test_a_broken_draft_folder_keeps_the_token_maps_and_says_which_file(counts_path, tmp_path):
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "README.md").write_text("weights elsewhere")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 151936}))
    for draft, reason in ((no_config, "config.json: missing"), (no_weights, "no weights found (looked for model.safetensors")):
        out = tmp_path / f"out-{draft.name}"
        rc, res, err = run_cli("export", "--counts", str(counts_path), "--k", "300", "--draft", str(draft),
                               "--out", str(out), "--json")
        assert rc == 2 and res is None and len(err.strip().splitlines()) == 1, err
        assert "the draft was not exported" in err and reason in err and str(draft) in err, err
        assert sorted(p.name for p in out.iterdir()) == ["speculators_vocab_k300", "summary_k300.json",
                                                         "token_ids_k300.json", "token_map_sglang_k300.pt",
                                                         "vocab_mapping_eagle3_k300.pt"]
        summary = json.loads((out / "summary_k300.json").read_text())
        assert any(reason in n for n in summary["notes"])


def test_counts_of_another_tokenizer_than_the_targets_are_refused(counts_path, smol_tok_dir, tmp_path):
    from vtcore.tokens import bundled_tokenizer_dir

    # a target folder with its own tokenizer and Qwen3's V, so that only the tokenizer differs
    target = tmp_path / "target"
    shutil.copytree(smol_tok_dir, target)
    (target / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936}))
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "300", "--target", str(target),
                           "--out", str(tmp_path / "out"), "--json")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and f"--tokenizer {target}" in err, err
    assert "bundled:qwen3" in err and not (tmp_path / "out").exists()
    # the same tokenizer saved with other bytes is the same tokenizer; and so is a Qwen3 preset's
    same = tmp_path / "same"
    same.mkdir()
    doc = json.loads((bundled_tokenizer_dir() / "tokenizer.json").read_text())
    (same / "tokenizer.json").write_text(json.dumps(doc, indent=1))
    (same / "config.json").write_text((target / "config.json").read_text())
    for t in (same, "qwen3-8b"):
        rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "300", "--target", str(t),
                               "--format", "eagle3", "--out", str(tmp_path / f"ok-{Path(str(t)).name}"), "--json")
        assert rc == 0 and out["validated"], err


@pytest.fixture(scope="module")
def smol_tok_dir(tmp_path_factory) -> Path:
    """A tokenizer folder that is not the counts' one: the bundled Qwen3 tokenizer with one more token
    (another vocabulary, so other tokenizer.json bytes and another get_vocab())."""
    from transformers import AutoTokenizer

    from vtcore.tokens import bundled_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(str(bundled_tokenizer_dir()))
    tok.add_tokens(["<another_tokenizers_token>"])
    path = tmp_path_factory.mktemp("other-tokenizer")
    tok.save_pretrained(path)
    return path


def test_export_refuses_counts_made_with_another_tokenizer(counts_path, tmp_path):
    from vtcore.tokens import bundled_tokenizer_dir

    # same tokens, different tokenizer.json bytes: a different tokenizer identity to the manifest
    other = tmp_path / "other-tok"
    shutil.copytree(bundled_tokenizer_dir(), other)
    doc = json.loads((other / "tokenizer.json").read_text())
    (other / "tokenizer.json").write_text(json.dumps(doc, indent=1))
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "100", "--tokenizer", str(other),
                           "--out", str(tmp_path / "out"), "--json")
    assert rc == 2 and "made with bundled:qwen3" in err and "nothing written" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    rc, out, err = run_cli("export", "--counts", str(counts_path), "--k", "100", "--tokenizer", "qwen3",
                           "--out", str(tmp_path / "out"), "--json")
    assert rc == 0 and out["validated"] and out["warnings"] == [], err


def test_speculators_norm_output_keeps_its_meaning_across_layouts():
    """speculators' norm_output (EAGLE 3.1: norm(h) fed back) is not SpecForge's (logits from norm(h)):
    converting one layout's config to the other never turns one into the other."""
    from vtcore import checkpoints

    layer = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
             "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 1000}
    base = {"speculators_model_type": "eagle3", "architectures": ["Eagle3Speculator"], "draft_vocab_size": 100,
            "transformer_layer_config": layer}
    for spec_norm in (False, True):
        flat = checkpoints.flat_eagle3_config({**base, "norm_output": spec_norm})
        assert flat.get("norm_output") is None and bool(flat.get("speculators_norm_output")) is spec_norm
        out = checkpoints.speculators_config(flat, verifier={"name_or_path": "t"})
        assert out["norm_output"] is spec_norm and "speculators_norm_output" not in out["transformer_layer_config"]
        if spec_norm:
            with pytest.raises(VTError, match="norm_output: true"):
                checkpoints.specforge_config(flat)
        else:
            assert "norm_output" not in checkpoints.specforge_config(flat)
    with pytest.raises(VTError, match="q/k norms"):   # a Qwen3 layer: SGLang's EAGLE-3 layer has no q/k norms
        checkpoints.specforge_config(checkpoints.flat_eagle3_config({**base, "transformer_layer_config": {
            **layer, "model_type": "qwen3"}}))
    with pytest.raises(VTError, match="norm_output: false"):   # SpecForge's un-normed logits: no speculators spelling
        checkpoints.speculators_config({**layer, "draft_vocab_size": 100, "norm_output": False}, verifier={"name_or_path": "t"})


def test_human_output_names_k_once_with_where_it_came_from(counts_path, tmp_path):
    from vtcore.cmd.export import human
    from vtcore.selection import Selection

    cf = load_counts(counts_path)
    given = pick.choose_k(cf, 300)
    picked = pick.choose(cf, Selection(k=300, curve="heldout", source="manual", counts_path=str(counts_path)))
    for choice, where in ((given, "k given, heldout ranking"), (picked, "typed in")):
        line = human({"k": choice.k, "chosen_by": choice.how, "coverage": ex.coverage_doc(choice), "files": {},
                      "latency_reduction": None, "vocab_size": QWEN3_MODEL_V, "vocab_size_from": "test",
                      "validated": True, "problems": [], "warnings": [], "notes": []}).splitlines()[0]
        assert line.startswith(f"k = 300 ({where}") and line.count("k = ") == 1, line
