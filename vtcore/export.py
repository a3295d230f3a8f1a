"""Export a chosen token set in the formats engines read (docs/formats.md).

Flow: a counts file -> a `ChosenIds` (vtcore.selection: k, a coverage constraint or a study
trial) -> `export(...)` renders every requested format to bytes in memory and validates
them (the dashboard offers those bytes as downloads) -> `write_bundle(...)` writes them
atomically under an output folder, never overwriting without force.

Formats: `sglang` (1-D int64 tensor, frequency order), `eagle3` ({"d2t", "t2d"}),
`speculators-vocab` (d2t-{N}.npy + t2d-{N}.npy), `json` (token_ids + vocab_size + manifest),
`hf-draft` (a trimmed copy of a draft directory; an EAGLE-3 draft is sub-trimmed in the
SpecForge / SGLang layout), `speculators` (an EAGLE-3 draft sub-trimmed in speculators' layout,
what vLLM serves), and always a `summary` JSON of the choice.

V, the target's vocabulary size, comes from vtcore.target; the formats whose readers check V
refuse a V that is only len(tokenizer).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vtcore import __version__, models
from vtcore.cost import DEFAULT_CONTEXT, PRESETS, arch_from_config, latency_reduction, resolve_draft
from vtcore.errors import VTError
from vtcore.files import DISK_FULL, atomic_file, check_space, check_target, os_reason, plain_json, tmp_sibling
from vtcore.checkpoints import (DraftCheckpoint, checkpoint_files, flat_eagle3_config, is_eagle3,
                                is_speculators_config, read_draft)
from vtcore.formats import (eagle3_mapping, ids_from_d2t, read_config, safetensors_bytes, side_files,
                            speculators_vocab_files, tensor_source, torch_bytes)
from vtcore.selection import ChosenIds
from vtcore.target import TargetVocab, config_vocab_size, from_draft, looks_like_hub_id, resolve_vocab
from vtcore.tokens import BUNDLED_SHA256, sha256_file
from vtcore.validate import (Expect, Report, embed_key, head_key, manifest_tokenizer_name,
                             manifest_tokenizer_sha, validate_bytes, validate_draft, validate_npy_pair,
                             validate_speculators, check_eagle3_dir)
from vtcore.workspace import subdir

FORMATS = ["sglang", "eagle3", "speculators-vocab", "json", "hf-draft", "speculators"]
DRAFT_FORMATS = ("hf-draft", "speculators")
# Their readers check V (SpecForge and speculators compare t2d's length with the model config's
# vocab_size; a draft's config states it): a V that is only len(tokenizer) is refused for them.
CHECKS_V = ("eagle3", "speculators-vocab", "hf-draft", "speculators")


RANKED_ON = {"heldout": "the fit rows (all but the held-out fifth, vtcore.split)", "insample": "all rows",
             "acceptance": "a replay of the full draft over fit-row prompts (vtcore.acceptance: accepted tokens "
                           "first), the rest by fit-row frequency"}
AT_K_IS = {"heldout": "C(k) measured on the held-out rows, which the ranking never saw",
           "insample": "C(k) measured on all rows, the rows the ranking was made on",
           "acceptance": "C(k) measured on the held-out rows, which the ranking never saw"}


def draft_dir(draft: str | os.PathLike | None) -> Path | None:
    """The draft as a model directory (config.json + weights), or None for a preset / config file.
    The bundled drafts (vtcore.models' names, or their folders under weights/): the EAGLE-3 head's
    folder as it is; the 2-layer draft, whose folder holds only its trained layers, saved once as a
    standalone HF directory. A hub id (org/name) is fetched like any model (vtcore.models.resolve_model:
    offline only if cached). A directory without config.json is refused, naming the file."""
    if draft is None:
        return None
    kind = models.bundled_draft(draft)
    if kind == "eagle3":
        return models.default_eagle3_dir()
    if kind == "standalone":
        return default_draft_as_dir()
    p = Path(draft).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise VTError(f"{p / 'config.json'}: missing, so {p} is not a draft directory "
                          "(a draft directory holds config.json and its weights)")
        return p
    if str(draft) not in PRESETS and looks_like_hub_id(str(draft)):
        return Path(models.resolve_model(str(draft)))
    return None


def target_of(draft: str | os.PathLike | None, target: str | os.PathLike | None) -> str | os.PathLike | None:
    """The target given, else the default target's directory when the draft is a bundled one
    (both bundled drafts belong to SmolLM2-135M-Instruct)."""
    if target is not None or models.bundled_draft(draft) is None:
        return target
    return str(models.default_target_dir())


def default_draft_as_dir(workspace: str | os.PathLike | None = None) -> Path:
    """The default draft (committed layers + the target's embedding, vtcore.models) written once
    as a plain HF causal-LM directory with the target's tokenizer files, keyed by the layers' hash."""
    layers = models.default_draft_dir() / "layers.safetensors"
    if not layers.is_file():
        raise VTError(f"{layers}: the default draft's trained layers are missing (scripts/train_draft.py makes them)")
    dest = subdir("models", workspace) / f"{models.DEFAULT_DRAFT}-hf-{sha256_file(layers)[:12]}"
    if (dest / "model.safetensors").is_file():
        return dest
    target_dir = Path(models.default_target_dir(workspace))
    draft = models.build_default_draft(models.load_model(target_dir, "cpu"))
    tmp = tmp_sibling(dest)
    try:
        draft.save_pretrained(tmp)
        for name, blob in side_files(target_dir).items():
            if not (tmp / name).exists() and name != models.CONVERSION_MARKER:
                (tmp / name).write_bytes(blob)
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "model.safetensors").is_file():   # not a concurrent writer that won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def estimate_latency(choice: ChosenIds, draft: str | os.PathLike, d: Path | None = None) -> tuple[float | None, str]:
    """R(k) of the draft from its FLOPs (vtcore.cost), and how it was estimated."""
    try:
        d = d if d is not None else draft_dir(draft)
        arch = arch_from_config(d / "config.json") if d is not None else resolve_draft(str(draft))
    except VTError as e:
        return None, f"not estimated: {e}"
    R = float(latency_reduction(arch, min(choice.k, arch.vocab)))
    return R, (f"FLOPs per draft token of {arch.name} (vtcore.cost, context {DEFAULT_CONTEXT}; "
               "a proxy that ignores memory bandwidth)")


def target_tokenizer(target: str | os.PathLike | None) -> tuple[str, str] | None:
    """(tokenizer.json sha256, where it was read) of the target's own tokenizer, when it has one:
    a model directory with tokenizer.json, or a preset of a model family whose tokenizer is bundled."""
    if target is None:
        return None
    p = Path(target).expanduser()
    if p.is_dir():
        return (sha256_file(p / "tokenizer.json"), str(p / "tokenizer.json")) if (p / "tokenizer.json").is_file() else None
    if str(target) in PRESETS and "qwen3" in str(target):
        return BUNDLED_SHA256, f"preset {target} (a Qwen3 model: the bundled Qwen3 tokenizer)"
    return None


def check_counts_tokenizer(choice: ChosenIds, target: str | os.PathLike | None) -> None:
    """Refuse counts made with another tokenizer than the target's own: their ids name other tokens
    there. Same tokenizer.json bytes, or the same vocabulary when both load, is the same tokenizer."""
    theirs = target_tokenizer(target)
    ours = manifest_tokenizer_sha(choice.manifest)
    if theirs is None or ours is None or theirs[0] == ours:
        return
    name = manifest_tokenizer_name(choice.manifest) or "an unnamed tokenizer"
    try:
        from tokenizers import Tokenizer

        from vtcore.tokens import load_tokenizer

        own = (Tokenizer.from_file(theirs[1]) if Path(theirs[1]).is_file() else load_tokenizer().backend_tokenizer
               ).get_vocab(with_added_tokens=True)
        if len(own) == choice.tokenizer_vocab and load_tokenizer(name).get_vocab() == own:
            return
    except Exception:   # noqa: BLE001 - the counts' tokenizer is not at hand or not loadable: the sha256 decides
        pass
    raise VTError(f"the counts were made with tokenizer {name} ({choice.tokenizer_vocab:,} tokens, sha256 "
                  f"{ours[:12]}…) but the target has its own, {theirs[1]} (sha256 {theirs[0][:12]}…): their token "
                  f"ids name other tokens; count the data with "
                  + (f"--tokenizer {target}" if Path(theirs[1]).is_file() else "the bundled Qwen3 tokenizer (count's default)"))


# ---------------------------------------------------------------- renderers

def sglang_tensor(choice: ChosenIds):
    import torch

    return torch.tensor(choice.ids, dtype=torch.int64)


def json_doc(choice: ChosenIds, vocab_size: int) -> dict:
    return {"token_ids": [int(i) for i in choice.ids], "vocab_size": int(vocab_size), "manifest": choice.manifest}


def coverage_doc(choice: ChosenIds) -> dict:
    """Which ranking the exported ids come from and the coverage figures that describe exactly them."""
    return {
        "curve": choice.curve,
        "ranked_on": RANKED_ON[choice.curve],
        "at_k": choice.coverage,
        "at_k_is": AT_K_IS[choice.curve],
        "all_rows": choice.coverage_all_rows,
        "heldout_rows": choice.coverage_heldout_rows,
        "rows_are": "all_rows / heldout_rows: share of the assistant tokens of all rows / of the held-out rows "
                    "that the exported ids cover",
    }


def summary_doc(choice: ChosenIds, vocab: TargetVocab, files: dict[str, str], notes: list[str]) -> dict:
    m, x = choice.manifest, choice.extra
    lat = x.get("latency_reduction")
    return {
        "k": choice.k,
        "vocab_size": vocab.size, "vocab_size_from": vocab.source, "vocab_size_guessed": vocab.guessed,
        "tokenizer_vocab_size": choice.tokenizer_vocab,
        "chosen_by": choice.how,
        "coverage": coverage_doc(choice),
        "latency_reduction": lat,
        "latency_estimate": x.get("latency_estimate") or ("as recorded by the study" if lat is not None else
                                                          "not estimated (give --draft, or export from a study)"),
        "alpha": x.get("alpha"), "min_coverage": x.get("min_coverage"), "objective": x.get("objective"),
        "gamma": x.get("gamma"), "predicted_speedup": x.get("predicted_speedup"),
        "study": {"name": x["study"], "trial": x["trial"], "feasible": x.get("feasible"),
                  "values": x.get("values"), "utility": x.get("utility")}
        if x.get("study") else None,
        "dataset_sha256": m.get("dataset_sha256"),
        "tokenizer": {"name": manifest_tokenizer_name(m), "sha256": manifest_tokenizer_sha(m)},
        "chat_template_sha256": m.get("chat_template_sha256"),
        "mask": m.get("mask_mode"),
        "always_keep": [int(i) for i in choice.always_keep],
        "files": files,
        "notes": notes,
        "manifest": m,
        "vtcore_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _json_bytes(obj: Any) -> bytes:
    # a file name that is not UTF-8 (kept as lone surrogates) is written as its JSON escape, \udcXX
    return (json.dumps(plain_json(obj), indent=1, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def file_name(fmt: str, k: int) -> str:
    """Output names are built here from the format and k only (never from user text)."""
    return {"sglang": f"token_map_sglang_k{k}.pt", "eagle3": f"vocab_mapping_eagle3_k{k}.pt",
            "json": f"token_ids_k{k}.json", "summary": f"summary_k{k}.json",
            "hf-draft": f"hf_draft_k{k}", "eagle3-draft": f"eagle3_draft_k{k}",
            "speculators": f"speculators_draft_k{k}", "speculators-vocab": f"speculators_vocab_k{k}"}[fmt]


# ---------------------------------------------------------------- draft trimming

class NotInDraft(VTError):
    """The chosen ids are not all in the draft's current vocabulary (its head has no row)."""

    def __init__(self, missing: np.ndarray, draft_n: int):
        self.missing, self.draft_n = missing, draft_n
        shown = ", ".join(str(int(i)) for i in missing[:5]) + (f" and {missing.size - 5} more" if missing.size > 5 else "")
        super().__init__(f"{missing.size} chosen ids ({shown}) are outside the draft's current {draft_n}-token "
                         "vocabulary: its head was never trained to score them")


def trim_draft(config: dict, weights: dict, keep_sorted: np.ndarray) -> tuple[dict, dict, str]:
    """Cut the draft's output head to the kept ids (ascending) and store d2t/t2d beside it.

    Works on a standalone causal LM (head = lm_head, or the tied input embedding), on an
    EAGLE-3 checkpoint (head rows follow its d2t) and on an already trimmed draft. Raises
    NotInDraft when a kept id has no row in the current head. Returns (config, weights, kind).
    """
    import torch

    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    kind = "eagle3-draft" if is_eagle3(config, shapes) else "hf-draft"
    hk = head_key(shapes, config)
    if hk is None:
        raise VTError("the draft has neither lm_head.weight nor an embed_tokens.weight to cut")
    head = weights[hk]
    rows = head.shape[0]
    if "d2t" in weights:
        current = ids_from_d2t(weights["d2t"])
    else:
        current = np.arange(rows, dtype=np.int64)
    if current.size != rows:
        raise VTError(f"the draft's d2t has {current.size} entries but {hk} has {rows} rows")
    pos = np.searchsorted(current, keep_sorted)
    inside = (pos < current.size) & (current[np.minimum(pos, current.size - 1)] == keep_sorted)
    if not inside.all():
        raise NotInDraft(keep_sorted[~inside], int(current.size))
    V = config_vocab_size(config)
    index = torch.from_numpy(pos)
    out = {k: v for k, v in weights.items() if k not in ("d2t", "t2d")}
    out["lm_head.weight"] = head.index_select(0, index).contiguous()
    if "lm_head.bias" in weights:
        out["lm_head.bias"] = weights["lm_head.bias"].index_select(0, index).contiguous()
    if "t2d" in weights and weights["t2d"].numel() != V:
        raise VTError(f"the draft's t2d has length {weights['t2d'].numel()} but its config vocab_size is {V}")
    out.update(eagle3_mapping(keep_sorted, V))
    cfg = dict(config)
    cfg["draft_vocab_size"] = int(keep_sorted.size)
    cfg["tie_word_embeddings"] = False   # the head is now its own [N, H] tensor; the embedding stays [V, H]
    return cfg, out, kind


# ---------------------------------------------------------------- bundle

@dataclass
class Artifact:
    """One export: a file, or a directory of files, with its validation report."""

    fmt: str
    name: str                      # file or directory name under --out
    files: dict[str, bytes]        # {name: bytes} for a file; {relative path: bytes} for a directory
    report: Report
    is_dir: bool = False

    def data(self) -> bytes:
        """Bytes for a download button: the file itself, or a zip of the directory."""
        if not self.is_dir:
            return self.files[self.name]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for rel, blob in self.files.items():
                z.writestr(f"{self.name}/{rel}", blob)
        return buf.getvalue()

    @property
    def download_name(self) -> str:
        return self.name + (".zip" if self.is_dir else "")


@dataclass
class Bundle:
    choice: ChosenIds
    vocab: TargetVocab
    artifacts: dict[str, Artifact]          # format (and "summary") -> artifact
    notes: list[str] = field(default_factory=list)
    retrain_needed: bool = False
    messages: list[str] = field(default_factory=list)   # warnings about the export as a whole
    draft_error: str | None = None          # why the draft was not exported (the token maps still were)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def vocab_source(self) -> str:
        return self.vocab.source

    @property
    def validated(self) -> bool:
        return all(a.report.ok for a in self.artifacts.values())

    @property
    def problems(self) -> list[str]:
        return [f"{a.name}: {p}" for a in self.artifacts.values() for p in a.report.problems]

    @property
    def warnings(self) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(self.messages)
        for a in self.artifacts.values():
            for w in a.report.warnings:
                seen.setdefault(w, None)
        return list(seen)


def default_keep_ids(choice: ChosenIds) -> dict[int, str]:
    """The always-keep ids of the counts, named from its manifest where it says which is which."""
    m = choice.manifest
    keep = {int(i): "always-keep token" for i in choice.always_keep}
    if m.get("eos_token_id") is not None:
        keep[int(m["eos_token_id"])] = "EOS token"
    if m.get("end_of_turn_id") is not None:
        keep[int(m["end_of_turn_id"])] = "end-of-turn token"
    return keep


def draft_is_eagle3(d: Path | None) -> bool:
    """Whether a draft directory holds an EAGLE-3 draft (either layout), from its config and tensor names."""
    if d is None:
        return False
    cfg = read_config(d)
    return is_eagle3(cfg, dict.fromkeys(tensor_source(directory=d).shapes, ()))


def normalise_formats(formats: list[str] | str | None, d: Path | None, draft: Any = None,
                      verifier: bool = True) -> list[str]:
    """The formats asked for, checked against the inputs. 'all' is every format the inputs allow:
    hf-draft with a draft directory, speculators with an EAGLE-3 draft and a verifier for it."""
    formats = [formats] if isinstance(formats, str) else list(formats or ["all"])
    eagle = draft_is_eagle3(d)
    out: list[str] = []
    for f in formats:
        f = f.strip().lower()
        if f == "all":
            out += [x for x in FORMATS if x not in DRAFT_FORMATS]
            out += (["hf-draft"] if d is not None else []) + (["speculators"] if eagle and verifier else [])
        elif f in FORMATS:
            out.append(f)
        else:
            raise VTError(f"unknown format {f!r} (choose from {', '.join(FORMATS)} or all)")
    out = list(dict.fromkeys(out))
    for f in DRAFT_FORMATS:
        if f in out and d is None:
            raise VTError(f"--format {f} needs --draft DIR, the draft model directory to trim (config.json + weights)"
                          + (f"; {draft} is not one" if draft is not None else ""))
    if "speculators" in out and not eagle:
        raise VTError(f"--format speculators needs an EAGLE-3 draft (SpecForge / SGLang or speculators layout); "
                      f"{draft} is a standalone causal LM (its trimmed copy is --format hf-draft)")
    return out


def check_vocab_for(fmts: list[str], vocab: TargetVocab) -> list[str]:
    """Refuse the formats whose readers check V when V is only len(tokenizer); the others fall back
    to it with a warning (returned)."""
    if not vocab.guessed:
        return []
    strict = [f for f in fmts if f in CHECKS_V]
    if strict:
        verb = "needs" if len(strict) == 1 else "need"
        raise VTError(f"{', '.join(strict)} {verb} the target model's vocabulary size and V is only len(tokenizer) = "
                      f"{vocab.size:,}: pass --target (config.json, model directory, hub id or preset) or "
                      "--vocab-size V, or export only --format sglang json")
    return [f"V = {vocab.size:,} is len(tokenizer), a guess: ids were checked against it and the JSON states it, "
            "but the target model may have more embedding rows; pass --target or --vocab-size to be sure"]


def verifier_of(vocab: TargetVocab, draft_config: dict | None) -> dict | None:
    """The speculators verifier: the target given as a hub id or directory, else the one a
    speculators draft already names."""
    if vocab.model is not None:
        return {"name_or_path": vocab.model, "architectures": list((vocab.config or {}).get("architectures") or [])}
    if draft_config is not None and is_speculators_config(draft_config):
        return (draft_config.get("speculators_config") or {}).get("verifier")
    return None


def _speculators_artifact(choice: ChosenIds, ck: DraftCheckpoint, cfg: dict, trimmed: dict, vocab: TargetVocab,
                          expect: Expect, notes: list[str]) -> Artifact:
    verifier = verifier_of(vocab, ck.speculators)
    spec, files = checkpoint_files(cfg, trimmed, "speculators",
                                   verifier if vocab.model is not None or ck.speculators is None else None,
                                   ck.speculators, vocab.config)
    name = file_name("speculators", choice.k)
    report = validate_speculators(spec, flat_eagle3_config(spec), tensor_source(weights=trimmed), name, expect)
    who = str(verifier.get("name_or_path"))
    if not looks_like_hub_id(who):
        notes.append(f"the speculators draft names the local verifier {who}: `vllm serve {name}` resolves only a hub "
                     f"id there, so serve it as `vllm serve {who} --speculative-config "
                     f"'{{\"model\": \"{name}\", \"method\": \"eagle3\", \"num_speculative_tokens\": 3}}'`")
    return Artifact("speculators", name, files, report, is_dir=True)


def _hf_draft_artifact(choice: ChosenIds, d: Path, cfg: dict, trimmed: dict, kind: str, expect: Expect,
                       notes: list[str]) -> Artifact:
    name = file_name(kind, choice.k)
    files = side_files(d)
    if kind == "eagle3-draft":
        cfg, written = checkpoint_files(cfg, trimmed, "specforge")
        notes.append("sub-trimmed an EAGLE-3 checkpoint: head rows selected and d2t/t2d rebuilt "
                     "(no retraining needed: every kept id was in its vocabulary)")
        files = {k: v for k, v in files.items() if not k.endswith(".py")} | written   # not a speculators config.py
    else:
        notes.append("hf-draft is a trimmed standalone draft for vtcore bench and research code: SGLang and vLLM "
                     "do not load it (their loaders expect a full-size head or an EAGLE-3 draft)")
        files["config.json"] = (json.dumps(cfg, indent=2) + "\n").encode()
        files["model.safetensors"] = safetensors_bytes(trimmed)
    report = validate_draft(cfg, tensor_source(weights=trimmed), name, expect,
                            [f for f in files if f.startswith("tokenizer")])
    return Artifact("hf-draft", name, files, report, is_dir=True)


def complete_eagle3(ck: DraftCheckpoint, target_dir: str | os.PathLike | None, where: str) -> DraftCheckpoint:
    """An EAGLE-3 checkpoint whose head is the target's tensor (tied to the embedding, or a full-
    vocabulary head the engines load from the target) with that head read from the target's
    weights, in the draft's dtype, so that it can be sub-trimmed and written untied. A tied draft
    also gets the target's embedding as its own tensor. Others are returned unchanged."""
    w, cfg = ck.weights, ck.config
    if "lm_head.weight" in w:
        return ck
    tied = bool(cfg.get("tie_word_embeddings"))
    V, N = config_vocab_size(cfg), int(cfg.get("draft_vocab_size") or config_vocab_size(cfg))
    if not tied and N != V:
        raise VTError(f"{where}: the EAGLE-3 draft has no lm_head.weight for its {N}-token vocabulary")
    if target_dir is None or not Path(target_dir).is_dir():
        raise VTError(f"{where}: the EAGLE-3 draft's head is the target's {'embedding' if tied else 'LM head'} "
                      "(no lm_head.weight in the checkpoint): pass --target DIR, the target model's directory, to "
                      "cut the head from the target's rows")
    src = tensor_source(directory=target_dir)
    ek = embed_key(src.shapes)
    hk = ek if tied or "lm_head.weight" not in src.shapes else "lm_head.weight"
    H = int(cfg.get("hidden_size") or 0)
    if hk is None or src.shapes[hk] != (V, H):
        raise VTError(f"{target_dir}: the target has no [{V}, {H}] {'embedding' if tied else 'LM head'} for this "
                      f"EAGLE-3 draft (found {src.shapes.get(hk) if hk else 'none'}): another target?")
    dtype = next(v.dtype for k, v in w.items() if k.endswith(".weight") and v.is_floating_point())
    out = dict(w, **{"lm_head.weight": src.get(hk).to(dtype)})
    if tied and embed_key(w) is None:
        out["embed_tokens.weight"] = src.get(ek).to(dtype)
    return replace(ck, config=dict(cfg, tie_word_embeddings=False), weights=out)


def _draft_artifacts(choice: ChosenIds, d: Path, fmts: list[str], vocab: TargetVocab, expect: Expect,
                     notes: list[str], arts: dict[str, "Artifact"]) -> bool:
    """Render the draft formats into `arts`; True when the draft must be retrained for this set."""
    ck = read_draft(d)
    if ck.eagle3:
        ck = complete_eagle3(ck, vocab.model if vocab.model and Path(vocab.model).is_dir() else None, str(d))
    try:
        cfg, trimmed, kind = trim_draft(ck.config, ck.weights, choice.sorted_ids)
    except NotInDraft as e:
        extra = ["eagle3"] + (["speculators-vocab"] if "speculators" in fmts else [])
        notes.append(f"the draft must be retrained for this set: {e}; exported the {' and '.join(extra)} "
                     "mapping only (train with it: SpecForge's vocab mapping file, speculators' d2t/t2d .npy)")
        return True
    if "hf-draft" in fmts:
        arts["hf-draft"] = _hf_draft_artifact(choice, d, cfg, trimmed, kind, expect, notes)
    if "speculators" in fmts:
        arts["speculators"] = _speculators_artifact(choice, ck, cfg, trimmed, vocab, expect, notes)
    return False


def _requested(formats: list[str] | str | None) -> list[str]:
    return [f.strip().lower() for f in ([formats] if isinstance(formats, str) else list(formats or ["all"]))]


MAPPING_FORMATS = [f for f in FORMATS if f not in DRAFT_FORMATS]


def export(choice: ChosenIds, formats: list[str] | str | None = None, vocab_size: int | None = None,
           draft: str | os.PathLike | None = None,
           keep_ids: dict[int, str] | None = None, tokenizer_sha256: str | None = None,
           tokenizer_name: str | None = None, target: str | os.PathLike | None = None,
           strict_vocab: bool = True) -> Bundle:
    """Render and validate every requested format in memory; nothing is written here.
    `target` is the target model for V: a config.json, a model
    directory, a hub id or a preset (vtcore.target); a bundled draft brings the default target.
    A draft that cannot be exported (a broken directory, a head it cannot cut) does not stop the
    token maps: they are rendered and the reason is `Bundle.draft_error`. strict_vocab=False leaves
    out the formats whose readers check V when V is only len(tokenizer) (the dashboard) instead of
    refusing them."""
    check_counts_tokenizer(choice, target)
    asked = _requested(formats)
    draft_error = None
    try:
        implied = target_of(draft, target)
        if implied is not target:   # a bundled draft's own target: if its tokenizer is not the counts', the draft fails
            check_counts_tokenizer(choice, implied)
        d = draft_dir(draft)
        dv = from_draft(draft, d)
        if d is not None and draft_is_eagle3(d):   # a corrupt draft is refused by name, never exported as valid
            check_eagle3_dir(d)
        target = implied
    except VTError as e:
        if not (Path(str(draft)).expanduser().is_dir() or models.bundled_draft(draft)
                or any(f in DRAFT_FORMATS for f in asked)):
            raise
        draft_error, d, dv = str(e), None, None
    vocab = resolve_vocab(choice.tokenizer_vocab, choice.manifest, vocab_size, target, dv,
                          top_id=int(choice.ids.max()))
    if draft_error is not None:   # the token maps asked for, or all of them when only the draft was
        asked = ([f for f in asked if f not in DRAFT_FORMATS]
                 or [f for f in MAPPING_FORMATS if f not in CHECKS_V or not vocab.guessed])
    if not strict_vocab and vocab.guessed:
        asked = [f for f in normalise_formats(asked, d, draft) if f not in CHECKS_V]
    fmts = normalise_formats(asked, d, draft, verifier_of(vocab, read_config(d) if d else None) is not None)
    messages = check_vocab_for(fmts, vocab)
    V = vocab.size
    if choice.extra.get("latency_reduction") is None and draft is not None and draft_error is None:
        R, how = estimate_latency(choice, draft, d)
        choice = replace(choice, extra=dict(choice.extra, latency_reduction=R, latency_estimate=how))
    if keep_ids is None:
        keep_ids = default_keep_ids(choice)
    expect = Expect(vocab_size=V, n=choice.k, keep_ids=keep_ids, tokenizer_sha256=tokenizer_sha256,
                    tokenizer_name=tokenizer_name)
    notes: list[str] = []
    if V < choice.tokenizer_vocab:
        notes.append(f"the model's vocabulary ({V}) is smaller than the tokenizer's ({choice.tokenizer_vocab})")
    arts: dict[str, Artifact] = {}
    retrain = False

    def single(fmt: str, blob: bytes) -> None:
        name = file_name(fmt, choice.k)
        arts[fmt] = Artifact(fmt, name, {name: blob}, validate_bytes(blob, name, expect))

    if "speculators" in fmts and verifier_of(vocab, read_config(d)) is None:   # the request, not the draft, is wrong
        raise VTError("--format speculators needs --target MODEL (a hub id or model directory): vLLM serves the "
                      "draft with that verifier")
    if d is not None and any(f in fmts for f in DRAFT_FORMATS):
        try:
            retrain = _draft_artifacts(choice, d, fmts, vocab, expect, notes, arts)
        except VTError as e:
            draft_error = str(e)
        if retrain or draft_error is not None:
            extra = ["eagle3"] + (["speculators-vocab"] if "speculators" in fmts or draft_error else [])
            fmts = [f for f in fmts if f not in DRAFT_FORMATS] + [f for f in extra if f not in fmts]
    if draft_error is not None:
        if not any(f in fmts for f in ("sglang", "json")):
            fmts += [f for f in MAPPING_FORMATS if f not in fmts and (f not in CHECKS_V or not vocab.guessed)]
        notes.append(f"the draft was not exported: {draft_error}")
    if "sglang" in fmts:
        single("sglang", torch_bytes(sglang_tensor(choice)))
    if "eagle3" in fmts:
        single("eagle3", torch_bytes(eagle3_mapping(choice.sorted_ids, V)))
    if "speculators-vocab" in fmts:
        name = file_name("speculators-vocab", choice.k)
        files = speculators_vocab_files(choice.sorted_ids, V)
        arts["speculators-vocab"] = Artifact("speculators-vocab", name, files, validate_npy_pair(files, name, expect),
                                             is_dir=True)
    if "json" in fmts:
        single("json", _json_bytes(json_doc(choice, V)))
    names = {fmt: a.name for fmt, a in arts.items()}
    summary = summary_doc(choice, vocab, names, notes + messages)
    single("summary", _json_bytes(summary))
    return Bundle(choice=choice, vocab=vocab, artifacts=arts, notes=notes, retrain_needed=retrain, messages=messages,
                  draft_error=draft_error)


# ---------------------------------------------------------------- writing

def _check_name(name: str) -> str:
    if not name or name != Path(name).name or name.startswith(".") or "/" in name or "\\" in name:
        raise VTError(f"refusing unsafe output name {name!r}")
    return name


def _write_file_atomic(target: Path, blob: bytes, force: bool = False) -> None:
    with atomic_file(target, fsync=True, force=force) as f:
        f.write(blob)


def _write_dir_atomic(target: Path, files: dict[str, bytes], force: bool = False) -> None:
    check_target(target, force)
    tmp = tmp_sibling(target)
    tmp.mkdir(mode=0o777)
    old = None
    try:
        for rel, blob in files.items():
            _check_name(rel)
            try:
                (tmp / rel).write_bytes(blob)
            except OSError as e:
                raise VTError(f"cannot write --out {target}: {os_reason(e)}"
                              f"{' (the disk is full)' if e.errno in DISK_FULL else ''}") from None
        if target.exists() or target.is_symlink():
            # move the previous export aside first: a directory cannot be replaced in one rename
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old.exists() or old.is_symlink()) and not target.exists():
            os.replace(old, target)  # put the user's previous export back
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_bundle(bundle: Bundle, out_dir: str | os.PathLike, force: bool = False,
                 inputs: list[str | os.PathLike] = ()) -> dict[str, Path]:
    """Write every artifact under out_dir through vtcore.files' one writer (temp file + rename
    each); refuse to overwrite without force, or to write over an input (`inputs`) at all; refuse
    to write anything that failed validation. Every target is checked before the first write."""
    if not bundle.validated:
        raise VTError("export failed validation, nothing written: " + "; ".join(bundle.problems))
    out = Path(out_dir).expanduser()
    try:
        if out.exists() and not out.is_dir():
            raise VTError(f"--out {out} exists and is not a directory")
        made_out = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # a name too long for the file system, no permission, a full disk
        raise VTError(f"--out {str(out)[:120]}: cannot create the folder ({os_reason(e)})") from e
    targets = {fmt: out / _check_name(a.name) for fmt, a in bundle.artifacts.items()}
    for p in targets.values():
        check_target(p, True, inputs)
    existing = [p.name for p in targets.values() if p.exists() or p.is_symlink()]
    if existing and not force:
        raise VTError(f"{out}: {', '.join(existing)} already exist; pass --force to overwrite")
    for fmt, p in targets.items():
        _check_replaceable(p, bundle.artifacts[fmt])
    remove_stale_temps(out)
    order = [f for f in bundle.artifacts if f != "summary"] + ["summary"]   # summary last: it lists the rest
    made: list[Path] = []
    try:
        check_space(out, sum(len(b) for a in bundle.artifacts.values() for b in a.files.values()))
        for fmt in order:
            a, new = bundle.artifacts[fmt], not (targets[fmt].exists() or targets[fmt].is_symlink())
            if a.is_dir:
                _write_dir_atomic(targets[fmt], a.files, force)
            else:
                _write_file_atomic(targets[fmt], a.files[a.name], force)
            if new:
                made.append(targets[fmt])
    except BaseException:   # a full disk, a kill: no half bundle (the outputs this call made are removed)
        for p in made:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        if made_out and not any(out.iterdir()):
            out.rmdir()
        raise
    return targets


def _check_replaceable(target: Path, a: Artifact) -> None:
    """--force replaces what an export wrote, never a folder of the user's: a folder at a file's
    name, or a folder without a draft's config.json or a vocab pair at a folder's name, stays."""
    if not target.is_dir() or target.is_symlink():
        return
    ours = a.is_dir and ((target / "config.json").is_file() or any(target.glob("d2t-*.npy")))
    if not ours:
        raise VTError(f"--out: {target} is a folder this export did not write; move it away (--force replaces "
                      "only earlier exports)")


def remove_stale_temps(out: Path) -> list[str]:
    """Temp files and folders that killed exports left in `out` (.tmp-NAME-PID-HEX, .old-NAME-PID
    whose process is gone) are removed; returns their names."""
    gone = []
    for p in [*out.glob(".tmp-*-*-*"), *out.glob(".old-*-*")]:
        pid = p.name.rsplit("-", 2)[-2] if p.name.startswith(".tmp-") else p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
