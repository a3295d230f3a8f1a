"""Validator: each defect an engine would trip on is caught (one test per defect), valid
exports pass, and a pickle that carries code is refused without running it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vtcore import export as ex  # noqa: E402
from vtcore import selection as pick  # noqa: E402
from vtcore.countsfile import load_counts  # noqa: E402
from vtcore.validate import Expect, validate_bytes, validate_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IM_END = 151645
QWEN3_LEN = 151669


@pytest.fixture(scope="module")
def choice(code_counts):
    return pick.choose_k(load_counts(code_counts), 200)


def validate_cli(*args: str) -> tuple[int, dict | None, str]:
    from vtcore.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", *args, "--json"])
    lines = out.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None), err.getvalue()


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def mapping(ids, V: int) -> dict:
    """d2t/t2d exactly as the engines define them, from ids in the given order (no sorting)."""
    ids = torch.as_tensor(ids, dtype=torch.int64)
    t2d = torch.zeros(V, dtype=torch.bool)
    t2d[ids] = True
    return {"d2t": ids - torch.arange(ids.numel()), "t2d": t2d}


def only(problems: list[str], text: str) -> None:
    assert problems, "expected a problem"
    assert any(text in p for p in problems), problems


# ---------------------------------------------------------------- valid files pass

def test_valid_exports_pass(choice, tmp_path):
    paths = ex.write_bundle(ex.export(choice, "all", vocab_size=151936), tmp_path)
    for fmt, path in paths.items():
        rc, rep, err = validate_cli(str(path), "--vocab-size", "151936", "--tokenizer", "qwen3")
        assert rc == 0 and rep["valid"] and rep["problems"] == [] and rep["warnings"] == [], (fmt, rep, err)
        if fmt != "summary":
            assert rep["n"] == 200 and rep["format"] == fmt


# ---------------------------------------------------------------- token-id defects

def test_float_ids(tmp_path):
    r = validate_path(save(tmp_path / "m.pt", torch.tensor([1.0, 2.0, 3.0])), Expect(vocab_size=10))
    only(r.problems, "integer token ids")


def test_id_not_below_vocab_size(choice, tmp_path):
    ids = torch.tensor(list(choice.ids[:-1]) + [QWEN3_LEN + 5])
    rc, rep, err = validate_cli(str(save(tmp_path / "m.pt", ids)), "--vocab-size", str(QWEN3_LEN))
    assert rc == 2 and not rep["valid"]
    only(rep["problems"], f"{QWEN3_LEN + 5} are >= the vocabulary size {QWEN3_LEN}")
    assert "invalid sglang" in err and len(err.strip().splitlines()) == 1


def test_negative_id(tmp_path):
    r = validate_path(save(tmp_path / "m.pt", torch.tensor([3, -1, 5])), Expect(vocab_size=10))
    only(r.problems, "negative ids -1")


def test_duplicate_ids(choice, tmp_path):
    ids = torch.from_numpy(choice.ids.copy())
    ids[7] = ids[3]
    r = validate_path(save(tmp_path / "m.pt", ids), Expect(vocab_size=QWEN3_LEN))
    only(r.problems, f"duplicate ids {int(ids[3])}")


def test_size_not_as_declared(choice, tmp_path):
    # declared by the tool's own name (..._k200.pt) ...
    r = validate_path(save(tmp_path / "token_map_sglang_k200.pt", torch.from_numpy(choice.ids[:199])))
    only(r.problems, "199 ids but the declared size is 200")
    # ... or by the user
    rc, rep, _ = validate_cli(str(save(tmp_path / "mine.pt", torch.from_numpy(choice.ids))), "--k", "256")
    assert rc == 2
    only(rep["problems"], "200 ids but the declared size is 256")


def test_empty_and_two_dimensional_maps(tmp_path):
    only(validate_path(save(tmp_path / "a.pt", torch.tensor([], dtype=torch.int64))).problems, "empty")
    only(validate_path(save(tmp_path / "b.pt", torch.tensor([[1, 2], [3, 4]]))).problems, "must be 1-D")


def test_missing_end_of_turn_is_a_warning(choice, tmp_path):
    ids = torch.from_numpy(choice.ids[choice.ids != IM_END])
    rc, rep, _ = validate_cli(str(save(tmp_path / "m.pt", ids)), "--tokenizer", "qwen3")
    assert rc == 0 and rep["valid"]                      # it loads fine, but the draft never ends a turn
    assert any("<|im_end|>" in w and str(IM_END) in w for w in rep["warnings"]), rep["warnings"]


# ---------------------------------------------------------------- d2t / t2d defects

def test_d2t_not_sorted(choice, tmp_path):
    ids = np.sort(choice.ids)
    ids[[10, 11]] = ids[[11, 10]]                        # two draft rows swapped
    r = validate_path(save(tmp_path / "m.pt", mapping(ids, QWEN3_LEN)), Expect(vocab_size=QWEN3_LEN))
    only(r.problems, "not strictly increasing (draft rows 10 and 11")


def test_d2t_duplicate_target_ids(choice, tmp_path):
    ids = np.sort(choice.ids)
    m = mapping(ids, QWEN3_LEN)
    m["d2t"][5] = int(ids[4]) - 5                        # row 5 scores the same id as row 4
    r = validate_path(save(tmp_path / "m.pt", m), Expect(vocab_size=QWEN3_LEN))
    only(r.problems, "not strictly increasing")


def test_t2d_sum_differs_from_n(choice, tmp_path):
    m = mapping(np.sort(choice.ids), QWEN3_LEN)
    m["t2d"][int(np.setdiff1d(np.arange(1000), choice.ids)[0])] = True
    r = validate_path(save(tmp_path / "m.pt", m), Expect(vocab_size=QWEN3_LEN))
    only(r.problems, "t2d marks 201 ids but d2t has 200 entries")


def test_t2d_marks_other_ids(choice, tmp_path):
    ids = np.sort(choice.ids)
    m = mapping(ids, QWEN3_LEN)
    outsider = int(np.setdiff1d(np.arange(1000), ids)[0])
    m["t2d"][int(ids[3])] = False
    m["t2d"][outsider] = True                            # same count, wrong membership
    r = validate_path(save(tmp_path / "m.pt", m), Expect(vocab_size=QWEN3_LEN))
    only(r.problems, f"does not mark ids {int(ids[3])}")


def test_t2d_not_bool(choice, tmp_path):
    m = mapping(np.sort(choice.ids), QWEN3_LEN)
    m["t2d"] = m["t2d"].to(torch.uint8)
    only(validate_path(save(tmp_path / "m.pt", m)).problems, "t2d must be a 1-D bool tensor")


def test_t2d_length_is_not_the_models_vocab(choice, tmp_path):
    m = mapping(np.sort(choice.ids), QWEN3_LEN)         # made for len(tokenizer) ...
    rc, rep, _ = validate_cli(str(save(tmp_path / "m.pt", m)), "--vocab-size", "151936")   # ... model has 151936
    assert rc == 2
    only(rep["problems"], "t2d has length 151669 but the target vocabulary size is 151936")


def test_mapping_lacks_d2t(choice, tmp_path):
    m = mapping(np.sort(choice.ids), QWEN3_LEN)
    del m["d2t"]
    only(validate_path(save(tmp_path / "m.pt", m)).problems, "missing d2t")


# ---------------------------------------------------------------- json / manifest defects

def test_manifest_made_with_another_tokenizer(choice, tmp_path):
    doc = ex.json_doc(choice, QWEN3_LEN)
    doc["manifest"] = dict(doc["manifest"], tokenizer="some/other", tokenizer_sha256="0" * 64)
    p = tmp_path / "token_ids_k200.json"
    p.write_text(json.dumps(doc))
    rc, rep, _ = validate_cli(str(p), "--tokenizer", "qwen3")
    assert rc == 2
    only(rep["problems"], "made with some/other")
    doc["manifest"] = choice.manifest                    # the real one passes
    p.write_text(json.dumps(doc))
    assert validate_cli(str(p), "--tokenizer", "qwen3")[0] == 0


def test_json_defects(choice, tmp_path):
    doc = ex.json_doc(choice, QWEN3_LEN)
    bad_ids = dict(doc, token_ids=[1, "2", 3])
    only(validate_bytes(json.dumps(bad_ids).encode(), "x.json").problems, "integer token ids")
    only(validate_bytes(json.dumps(dict(doc, vocab_size=100)).encode(), "x.json").problems, ">= the vocabulary size 100")
    only(validate_bytes(json.dumps({"ids": [1]}).encode(), "x.json").problems, "needs an object with 'token_ids'")
    only(validate_bytes(b"{not json", "x.json").problems, "not valid JSON")
    no_manifest = {k: v for k, v in doc.items() if k != "manifest"}
    only(validate_bytes(json.dumps(no_manifest).encode(), "x.json").problems, "'manifest' is missing")


# ---------------------------------------------------------------- pickles with code

class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_never_run(tmp_path):
    control, marker = tmp_path / "control-ran", tmp_path / "validator-ran"
    # the payload is real: a naive unpickle (in a child process) does run it
    naive = tmp_path / "naive.pkl"
    naive.write_bytes(pickle.dumps(_Payload(control)))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(naive)!r}, 'rb'))"], check=False)
    assert control.exists()

    raw = tmp_path / "token_map_sglang_k5.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))      # legacy pickle layout
    zipped = tmp_path / "vocab_mapping_eagle3_k5.pt"
    torch.save({"d2t": _Payload(marker), "t2d": torch.zeros(3, dtype=torch.bool)}, zipped)   # torch zip layout
    for path in (raw, zipped):
        rc, rep, err = validate_cli(str(path))
        assert rc == 2 and rep["format"] == "refused" and not rep["valid"]
        only(rep["problems"], "refused")
        assert "system" in rep["problems"][0]             # says what it asked for
        assert not marker.exists()


def test_draft_with_a_pickled_bin_is_refused(tmp_path):
    marker = tmp_path / "ran"
    d = tmp_path / "draft"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"vocab_size": 10, "draft_vocab_size": 2}))
    torch.save({"lm_head.weight": _Payload(marker)}, d / "pytorch_model.bin")
    r = validate_path(d)
    assert r.format == "refused" and not r.ok and not marker.exists()
    b = ex.export(pick.ChosenIds(np.array([1, 2]), "insample", 10, None, 1.0, None, {}, [], "test"), ["hf-draft"],
                  draft=d)   # the draft is refused; the token maps that need no V are still made
    assert "refused" in b.draft_error and set(b.artifacts) == {"sglang", "json", "summary"}
    assert not marker.exists()


# ---------------------------------------------------------------- trimmed draft defects

@pytest.fixture()
def draft_dir(choice, tmp_path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=QWEN3_LEN, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "full")
    return ex.write_bundle(ex.export(choice, ["hf-draft"], draft=tmp_path / "full"), tmp_path / "out")["hf-draft"]


def _edit(d: Path, config: dict | None = None, weights=None) -> None:
    from safetensors.torch import load_file, save_file

    if config:
        c = json.loads((d / "config.json").read_text())
        c.update(config)
        (d / "config.json").write_text(json.dumps(c))
    if weights:
        w = load_file(str(d / "model.safetensors"))
        weights(w)
        save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})


def test_trimmed_draft_passes(draft_dir):
    r = validate_path(draft_dir, Expect(vocab_size=QWEN3_LEN))
    assert r.ok and r.format == "hf-draft" and r.n == 200, r.problems


def test_draft_head_rows_differ_from_draft_vocab_size(draft_dir):
    _edit(draft_dir, config={"draft_vocab_size": 150})
    only(validate_path(draft_dir).problems, "lm_head.weight has 200 rows but config draft_vocab_size is 150")


def test_draft_still_ties_embeddings(draft_dir):
    _edit(draft_dir, config={"tie_word_embeddings": True})
    only(validate_path(draft_dir).problems, "tie_word_embeddings: true")


def test_draft_input_embedding_was_cut(draft_dir):
    def cut(w):
        w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:1000].clone()
    _edit(draft_dir, weights=cut)
    only(validate_path(draft_dir).problems, "the input embedding must stay full size")


def test_draft_without_mapping(draft_dir):
    _edit(draft_dir, weights=lambda w: (w.pop("d2t"), w.pop("t2d")))
    only(validate_path(draft_dir).problems, "weights lack d2t/t2d")


def test_draft_mapping_disagrees_with_head(draft_dir):
    _edit(draft_dir, weights=lambda w: w.__setitem__("d2t", w["d2t"][:199].clone()))
    only(validate_path(draft_dir).problems, "d2t has 199 entries but the declared draft vocabulary is 200")


def test_not_a_token_map(tmp_path):
    only(validate_path(save(tmp_path / "x.pt", {"weights": torch.zeros(2)})).problems, "a bare state dict")
    only(validate_path(save(tmp_path / "y.pt", {"ids": "1 2 3"})).problems, "not a token map")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a torch file")
    only(validate_path(tmp_path / "junk.pt").problems, "not a readable torch file")


# ---------------------------------------------------------------- speculators: the .npy pair and the draft layout

@pytest.fixture()
def npy_pair(choice, tmp_path) -> Path:
    return ex.write_bundle(ex.export(choice, ["speculators-vocab"]), tmp_path / "out")["speculators-vocab"]


def test_npy_pair_passes_as_a_folder_or_either_file(npy_pair):
    for path in (npy_pair, npy_pair / "d2t-200.npy", npy_pair / "t2d-200.npy"):
        rc, rep, err = validate_cli(str(path), "--tokenizer", "qwen3")
        assert rc == 0 and rep["format"] == "speculators-vocab" and rep["n"] == 200, (path, rep, err)
        assert rep["vocab_size"] == 151936 and rep["warnings"] == []     # V from the summary beside the folder


def test_npy_pair_defects(npy_pair):
    np.save(npy_pair / "t2d-200.npy", np.load(npy_pair / "t2d-200.npy")[:QWEN3_LEN])
    only(validate_path(npy_pair, Expect(vocab_size=151936)).problems, "t2d has length 151669")
    (npy_pair / "t2d-200.npy").unlink()
    only(validate_path(npy_pair).problems, "d2t-200.npy has no t2d-200.npy")
    d2t = np.load(npy_pair / "d2t-200.npy")
    np.save(npy_pair / "d2t-200.npy", d2t[:199])
    t2d = np.zeros(151936, dtype=bool)
    t2d[d2t[:199] + np.arange(199)] = True
    np.save(npy_pair / "t2d-200.npy", t2d)
    only(validate_path(npy_pair).problems, "its file name says 200")      # speculators finds it by that name
    np.save(npy_pair / "t2d-200.npy", t2d.astype(np.float32))
    only(validate_path(npy_pair).problems, "t2d must be a 1-D bool tensor")


@pytest.fixture()
def speculators_dir(choice, tmp_path) -> Path:
    from tests.drafthelpers import eagle3_checkpoint, tiny_target_config

    eagle3_checkpoint(tmp_path / "eagle3", 151936, np.union1d(choice.ids, np.arange(300, 700)))
    bundle = ex.export(choice, ["speculators"], draft=tmp_path / "eagle3", target=tiny_target_config(tmp_path / "t"))
    return ex.write_bundle(bundle, tmp_path / "out")["speculators"]


def test_speculators_draft_passes(speculators_dir):
    rc, rep, err = validate_cli(str(speculators_dir), "--tokenizer", "qwen3")
    assert rc == 0 and rep["format"] == "speculators" and rep["n"] == 200 and rep["vocab_size"] == 151936, (rep, err)


def test_speculators_draft_defects(speculators_dir):
    cfg = json.loads((speculators_dir / "config.json").read_text())

    def edit(**changes):
        (speculators_dir / "config.json").write_text(json.dumps({**cfg, **changes}))
        return validate_path(speculators_dir)

    layer = {**cfg["transformer_layer_config"], "vocab_size": QWEN3_LEN}
    only(edit(transformer_layer_config=layer).problems, "t2d has length 151936 but the target vocabulary size is 151669")
    spec = {**cfg["speculators_config"], "verifier": {"architectures": []}}
    only(edit(speculators_config=spec).problems, "verifier.name_or_path")
    only(edit(draft_vocab_size=150).problems, "tensor lm_head.weight is [200, 16], the config implies [150, 16]")
    del cfg["norm_before_residual"]
    r = edit()
    assert r.ok and any("norm_before_residual" in w for w in r.warnings)
