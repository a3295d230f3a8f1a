"""The target model's vocabulary size V, and where it came from.

Every token map is sized by V: EAGLE-3's t2d has V entries, ids must be < V, a trimmed draft's
config says vocab_size V. V is the *target model's* config vocab_size, which can exceed
len(tokenizer): Qwen3 models have 151,936 embedding rows for 151,669 tokens, and SpecForge
and speculators both refuse a t2d of the tokenizer's length.

Sources, strongest first (explicit ones must agree with each other):
- `--vocab-size V`;
- `--target`: a config.json, a model directory, a hub id (its config.json
  only is fetched) or a preset name of vtcore.cost;
- the draft's config (an EAGLE-3 draft carries the target's V; a standalone draft shares it);
- the counts' tokenizer when it is a known one: the bundled Qwen3 tokenizer belongs to Qwen3
  models, whose vocab_size is 151,936.
Otherwise V is only len(tokenizer), a guess: `TargetVocab.guessed`, which the formats whose
readers check V refuse (vtcore.export).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vtcore.cost import PRESETS, resolve_draft
from vtcore.errors import VTError
from vtcore.files import VOCAB_LIMIT, read_json
from vtcore.tokens import BUNDLED_SHA256

# Tokenizer (sha256 of tokenizer.json) -> the vocab_size of the models that use it.
KNOWN_TOKENIZERS: dict[str, tuple[int, str]] = {
    BUNDLED_SHA256: (151936, "the bundled Qwen3 tokenizer: Qwen3 models (Qwen/Qwen3-0.6B ... Qwen3-235B-A22B) "
                             "have vocab_size 151,936"),
}


@dataclass(frozen=True)
class TargetVocab:
    size: int
    source: str                     # where V came from, in words
    guessed: bool = False           # only len(tokenizer): readers that check V may refuse it
    model: str | None = None        # the target as a hub id or model directory, when given that way
    config: dict | None = None      # the target's config.json, when one was read


def config_vocab_size(config: dict | str | os.PathLike) -> int:
    """vocab_size of an HF config (dict, config.json, or a model directory); multimodal configs
    keep it in text_config, speculators' drafts in transformer_layer_config."""
    where = "the model config"
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        p = p / "config.json" if p.is_dir() else p
        config, where = read_json(p, "model config"), str(p)
    if not isinstance(config, dict):
        raise VTError(f"{where}: must be a JSON object, got a JSON {type(config).__name__}")
    V = config.get("vocab_size")
    for nested in ("text_config", "transformer_layer_config"):
        if V is None and isinstance(config.get(nested), dict):
            V = config[nested].get("vocab_size")
    if not isinstance(V, int) or isinstance(V, bool) or V <= 0:
        raise VTError("model config has no positive integer 'vocab_size'")
    if V > VOCAB_LIMIT:
        raise VTError(f"model config says vocab_size {V:,}, more token ids than any vocabulary (limit {VOCAB_LIMIT:,})")
    return V


def looks_like_hub_id(spec: str) -> bool:
    """'org/name': one slash, not a path that exists or starts like one."""
    return (spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()
            and all(part.strip() for part in spec.split("/")))


def hub_config(repo_id: str) -> dict:
    """A hub model's config.json only (a few KB): from the HF cache offline, else downloaded."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        path = hf_hub_download(repo_id, "config.json", local_files_only=offline)
    except Exception as e:
        why = "the model hub is off (HF_HUB_OFFLINE=1) and it is not in the HF cache" if offline else type(e).__name__
        raise VTError(f"--target {repo_id}: cannot read its config.json ({why}); pass a local config.json or "
                      "model directory, or --vocab-size") from None
    return read_json(Path(path), "config.json")


def from_target(spec: str | os.PathLike) -> TargetVocab:
    """V of the target named by --target: a config.json, a model directory, a hub id or a preset."""
    text = str(spec)
    p = Path(text).expanduser()
    if p.is_file():
        return TargetVocab(config_vocab_size(p), f"target config {p}", config=read_json(p, "model config"))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise VTError(f"--target {p}: not a model directory (no config.json)")
        cfg = read_json(p / "config.json", "model config")
        return TargetVocab(config_vocab_size(p / "config.json"), f"target {p}/config.json", model=str(p), config=cfg)
    if text in PRESETS:
        return TargetVocab(config_vocab_size(PRESETS[text]["config"]), f"preset {text} ({PRESETS[text]['source']})")
    if looks_like_hub_id(text):
        cfg = hub_config(text)
        return TargetVocab(config_vocab_size(cfg), f"target {text} (hub config.json)", model=text, config=cfg)
    raise VTError(f"--target {text}: neither a config.json, a model directory, a hub id (org/name) nor a preset "
                  f"({', '.join(PRESETS)})")


def from_tokenizer(tokenizer_vocab: int, manifest: dict) -> TargetVocab:
    """What the counts' tokenizer says: a known tokenizer's models, else len(tokenizer) (a guess)."""
    known = KNOWN_TOKENIZERS.get(str(manifest.get("tokenizer_sha256")))
    if known is not None and known[0] >= tokenizer_vocab:
        return TargetVocab(known[0], known[1])
    return TargetVocab(tokenizer_vocab, f"len(tokenizer) = {tokenizer_vocab:,} of the counts: a guess, the target "
                                        "model may have more embedding rows", guessed=True)


def from_draft(draft: str | os.PathLike | None, directory: str | os.PathLike | None = None) -> TargetVocab | None:
    """The V a draft states: its config's vocab_size (an EAGLE-3 draft's is the target's), or a
    cost preset's. `directory` is the draft as a model directory, when it is one."""
    if draft is None:
        return None
    if directory is not None or Path(draft).is_file():
        return TargetVocab(config_vocab_size(directory if directory is not None else draft), f"draft config {draft}")
    return TargetVocab(resolve_draft(str(draft)).vocab, f"draft preset {draft}")


def resolve_vocab(tokenizer_vocab: int, manifest: dict, vocab_size: int | None = None,
                  target: str | os.PathLike | None = None, draft: TargetVocab | None = None,
                  top_id: int | None = None) -> TargetVocab:
    """The target's V from every source given; explicit ones must agree. `draft` is the V a draft's
    config (or cost preset) states (`from_draft`); `top_id`, the largest id to be mapped, must be < V."""
    tv = _resolve(tokenizer_vocab, manifest, vocab_size, target, draft)
    if top_id is not None and int(top_id) >= tv.size:
        raise VTError(f"vocabulary size {tv.size} ({tv.source}) is smaller than the largest kept id {int(top_id)}: "
                      "this tokenizer does not belong to that model")
    return tv


def _resolve(tokenizer_vocab: int, manifest: dict, vocab_size: int | None,
             target: str | os.PathLike | None, draft: TargetVocab | None) -> TargetVocab:
    found: list[TargetVocab] = []
    if vocab_size is not None:
        found.append(TargetVocab(int(vocab_size), "--vocab-size"))
    if target is not None:
        found.append(from_target(target))
    if draft is not None:
        found.append(draft)
    for tv in found[1:]:
        if tv.size != found[0].size:
            raise VTError(f"vocabulary sizes disagree: {found[0].source} says {found[0].size}, "
                          f"{tv.source} says {tv.size}")
    if not found:
        return from_tokenizer(tokenizer_vocab, manifest)
    first = found[0]
    if first.size <= 0:
        raise VTError(f"vocabulary size must be positive, got {first.size}")
    model = next((tv for tv in found if tv.model is not None), None)   # the verifier, wherever it was named
    return first if model is None else TargetVocab(first.size, first.source, False, model.model, model.config)
