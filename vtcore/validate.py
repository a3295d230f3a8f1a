"""Validators for exported token maps (docs/formats.md): the checks an engine would trip on.

Files are read by vtcore.formats (never running code); this module only checks what they
hold. The same checks run on bytes in memory (the export validates what it is about to
write) and on files on disk (`python -m vtcore validate FILE`).

A `Report` lists `problems` (the file is wrong: an engine would fail or mis-map tokens)
and `warnings` (the file works but is probably not what the user wants, e.g. no
end-of-turn token: a draft that cannot emit it never ends a turn).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vtcore.checkpoints import config_from_dict, draft_source, is_eagle3
from vtcore.errors import VTError
from vtcore.files import os_reason, parse_json, regular_file
from vtcore.formats import StoredIds, TensorSource, UnsafeFile, ids_from_d2t, read_npy, safe_torch_load, stored_ids
from vtcore.tokens import load_tokenizer, tokenizer_info

_K_IN_NAME = re.compile(r"_k(\d+)(?:\.|$)")
_SHOW = 5  # ids quoted in one message


@dataclass
class Report:
    """The outcome of validating one export (a file, or a draft directory)."""

    path: str
    format: str = "unknown"       # sglang | eagle3 | speculators-vocab | json | summary | hf-draft | eagle3-draft
    #                               | speculators | unknown
    n: int | None = None          # kept tokens
    vocab_size: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "valid": self.ok, "n": self.n,
                "vocab_size": self.vocab_size, "problems": list(self.problems),
                "warnings": list(self.warnings)}


@dataclass
class Expect:
    """What the caller knows and wants checked; every field optional."""

    vocab_size: int | None = None           # the target model's V
    n: int | None = None                    # the declared number of kept tokens
    keep_ids: dict[int, str] | None = None  # id -> why it must be kept (EOS / end-of-turn)
    tokenizer_sha256: str | None = None     # must match the manifest's tokenizer
    tokenizer_name: str | None = None


# ---------------------------------------------------------------- the checks

def _as_int_array(values: Any, what: str, problems: list[str]) -> np.ndarray | None:
    """1-D integer ids from a tensor, array or list; records why not."""
    import torch

    if isinstance(values, torch.Tensor):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            problems.append(f"{what} must hold integer token ids, got dtype {str(values.dtype).replace('torch.', '')}")
            return None
        arr = values.detach().cpu().numpy()
    elif isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            problems.append(f"{what} must hold integer token ids, got dtype {values.dtype}")
            return None
        arr = values
    elif isinstance(values, (list, tuple)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            problems.append(f"{what} must hold integer token ids, found {type(bad[0]).__name__} {bad[0]!r}")
            return None
        arr = np.asarray(values, dtype=np.int64)
    else:
        problems.append(f"{what} must be a list or 1-D tensor of token ids, got {type(values).__name__}")
        return None
    if arr.ndim != 1:
        problems.append(f"{what} must be 1-D, got shape {list(arr.shape)}")
        return None
    return arr.astype(np.int64, copy=False)


def _quote(ids: np.ndarray | list[int]) -> str:
    ids = [int(i) for i in ids]
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return ", ".join(str(i) for i in ids[:_SHOW]) + more


CHUNK_IDS = 1 << 22        # ids checked at a time: memory is O(V + chunk), never O(file)
MASK_LIMIT = 1 << 28       # without V, duplicates are tracked in a bool mask up to this id


def _id_chunks(ids: "np.ndarray | StoredIds", n: int):
    if isinstance(ids, StoredIds):
        yield from ids.chunks(n)
    else:
        for start in range(0, int(ids.size), n):
            yield np.asarray(ids[start:start + n])


def _distinct(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values, the values that occur more than once), both ascending. A sort:
    numpy 2's hash-based np.unique is ~30x slower on millions of int64 ids."""
    s = np.sort(a)
    same = s[1:] == s[:-1]
    return s[np.concatenate([[True], ~same])], np.unique(s[1:][same])


class _Offenders:
    """The smallest few distinct offending ids, and how many offending entries there were."""

    def __init__(self):
        self.shown, self.n = np.zeros(0, dtype=np.int64), 0

    def add(self, bad: np.ndarray) -> None:
        if bad.size:
            self.n += int(bad.size)
            self.shown = _distinct(np.concatenate([self.shown, bad]))[0][:_SHOW]

    def quote(self) -> str:
        more = self.n - self.shown.size
        return ", ".join(str(int(i)) for i in self.shown) + (f" and {more} more" if more > 0 else "")


def check_ids(ids: "np.ndarray | StoredIds", vocab_size: int | None, declared_n: int | None,
              keep_ids: dict[int, str] | None, what: str = "token ids",
              chunk: int | None = None) -> tuple[list[str], list[str]]:
    """Integer ids already parsed: range, duplicates, size, must-keep tokens. The ids (an array,
    or a tensor stored in a file) are read `chunk` at a time; duplicates are found with a
    bool[V] mask, so memory is proportional to V and the chunk, not to the number of ids."""
    problems, warnings = [], []
    n = int(ids.size)
    if n == 0:
        problems.append(f"{what}: empty (a draft needs at least one token)")
        return problems, warnings
    chunk = chunk or CHUNK_IDS
    bound = vocab_size
    if bound is None:   # no V: the mask spans the ids seen (a first pass finds the largest)
        bound = min(max(max(int(c.max()) for c in _id_chunks(ids, chunk)) + 1, 0), MASK_LIMIT)
    seen, dup = np.zeros(bound, dtype=bool), np.zeros(bound, dtype=bool)
    neg, big, beyond = _Offenders(), _Offenders(), []
    for c in _id_chunks(ids, chunk):
        c = c.astype(np.int64, copy=False)
        low, high = c < 0, c >= bound
        neg.add(c[low])
        if vocab_size is not None:
            big.add(c[high])
        elif high.any():
            beyond.append(c[high])     # ids past MASK_LIMIT: few in any real file
        u, repeated = _distinct(c[~(low | high)])
        dup[repeated] = True
        dup[u[seen[u]]] = True
        seen[u] = True
    if neg.n:
        problems.append(f"{what}: negative ids {neg.quote()}")
    if big.n:
        problems.append(f"{what}: ids {big.quote()} are >= the vocabulary size {vocab_size}")
    dups = np.flatnonzero(dup)
    if beyond:
        dups = np.concatenate([dups, _distinct(np.concatenate(beyond))[1]])
    if dups.size:
        problems.append(f"{what}: duplicate ids {_quote(dups)} (each id may appear once)")
    if declared_n is not None and n != declared_n:
        problems.append(f"{what}: {n} ids but the declared size is {declared_n}")
    for tid, why in (keep_ids or {}).items():
        found = bool(seen[tid]) if 0 <= tid < bound else any(bool((c == tid).any()) for c in _id_chunks(ids, chunk))
        if not found:
            warnings.append(f"{why} (id {tid}) is not in the set: a draft that cannot emit it never ends a turn")
    return problems, warnings


def check_mapping(d2t: Any, t2d: Any, vocab_size: int | None, declared_n: int | None = None
                  ) -> tuple[np.ndarray | None, list[str]]:
    """EAGLE-3 d2t/t2d: target id = i + d2t[i] sorted ascending, t2d marks exactly those.
    Returns the kept ids (ascending) when d2t is readable, and the problems found."""
    import torch

    problems: list[str] = []
    d = _as_int_array(d2t, "d2t", problems)
    if not isinstance(t2d, torch.Tensor) or t2d.dtype != torch.bool or t2d.ndim != 1:
        desc = (f"dtype {str(t2d.dtype).replace('torch.', '')}, shape {list(t2d.shape)}"
                if isinstance(t2d, torch.Tensor) else type(t2d).__name__)
        problems.append(f"t2d must be a 1-D bool tensor over the target vocabulary, got {desc}")
        t2d = None
    if d is None:
        return None, problems
    ids = ids_from_d2t(d)
    if declared_n is not None and d.size != declared_n:
        problems.append(f"d2t has {d.size} entries but the declared draft vocabulary is {declared_n}")
    if d.size and (np.diff(ids) <= 0).any():
        bad = int(np.argmax(np.diff(ids) <= 0))
        problems.append(f"d2t + arange is not strictly increasing (draft rows {bad} and {bad + 1} map to "
                        f"{int(ids[bad])} and {int(ids[bad + 1])}): kept ids must be sorted ascending, no duplicates")
    if d.size and ids.min() < 0:
        problems.append(f"d2t + arange gives negative target ids ({_quote(np.unique(ids[ids < 0]))})")
    if t2d is not None:
        V = int(t2d.shape[0])
        if vocab_size is not None and V != vocab_size:
            problems.append(f"t2d has length {V} but the target vocabulary size is {vocab_size}")
        over = ids[ids >= V]
        if over.size:
            problems.append(f"d2t + arange gives ids {_quote(np.unique(over))} >= len(t2d) = {V}")
        marked = int(t2d.sum())
        if marked != d.size:
            problems.append(f"t2d marks {marked} ids but d2t has {d.size} entries (t2d.sum() must equal N)")
        inside = ids[(ids >= 0) & (ids < V)]
        mask = t2d.numpy()
        if inside.size and not mask[inside].all():
            problems.append(f"t2d does not mark ids {_quote(inside[~mask[inside]])} that d2t maps to")
        elif marked == d.size and inside.size == d.size:
            extra = np.setdiff1d(np.flatnonzero(mask), ids)
            if extra.size:
                problems.append(f"t2d marks ids {_quote(extra)} that d2t does not map to")
    elif vocab_size is not None and ids.size and ids.max() >= vocab_size:
        problems.append(f"d2t + arange gives ids >= the vocabulary size {vocab_size}")
    return ids, problems


def check_manifest(manifest: dict | None, expect: Expect) -> list[str]:
    """The manifest's tokenizer must be the one the user says the target uses."""
    if not expect.tokenizer_sha256 or not isinstance(manifest, dict):
        return []
    sha = manifest_tokenizer_sha(manifest)
    if sha is None:
        return []
    if sha != expect.tokenizer_sha256:
        name = manifest_tokenizer_name(manifest) or "another tokenizer"
        return [f"made with {name} (tokenizer sha256 {sha[:12]}…) but the given tokenizer "
                f"{expect.tokenizer_name or ''} has sha256 {expect.tokenizer_sha256[:12]}…: ids would mean other tokens"
                .replace("  ", " ")]
    return []


def manifest_tokenizer_sha(manifest: dict) -> str | None:
    tok = manifest.get("tokenizer")
    if isinstance(tok, dict) and tok.get("sha256"):
        return str(tok["sha256"])
    for key in ("tokenizer_sha256", "tokenizer_json_sha256"):
        if manifest.get(key):
            return str(manifest[key])
    return None


def manifest_tokenizer_name(manifest: dict) -> str | None:
    tok = manifest.get("tokenizer")
    if isinstance(tok, dict):
        return tok.get("name")
    return manifest.get("tokenizer_name") or (tok if isinstance(tok, str) else None)


# ---------------------------------------------------------------- per format

def k_from_name(path: str) -> int | None:
    m = _K_IN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def validate_sglang(obj: Any, path: str, expect: Expect, stored: StoredIds | None = None) -> Report:
    """`stored`: the same tensor read from its file in chunks (validate_path), for bounded memory."""
    r = Report(path=path, format="sglang", vocab_size=expect.vocab_size)
    ids = stored if stored is not None else _as_int_array(obj, "token map", r.problems)
    if ids is None:
        return r
    r.n = int(ids.size)
    declared = expect.n if expect.n is not None else k_from_name(path)
    p, w = check_ids(ids, expect.vocab_size, declared, expect.keep_ids, "token map")
    r.problems += p
    r.warnings += w
    if expect.vocab_size is None:
        r.warnings.append("vocabulary size not given: ids were not checked against V (pass --vocab-size)")
    return r


def validate_eagle3(obj: dict, path: str, expect: Expect) -> Report:
    r = Report(path=path, format="eagle3", vocab_size=expect.vocab_size)
    missing = [k for k in ("d2t", "t2d") if k not in obj]
    if missing:
        r.problems.append(f"missing {' and '.join(missing)} (an EAGLE-3 vocab mapping holds d2t and t2d)")
        return r
    declared = expect.n if expect.n is not None else k_from_name(path)
    ids, problems = check_mapping(obj["d2t"], obj["t2d"], expect.vocab_size, declared)
    r.problems += problems
    if ids is not None:
        r.n = int(ids.size)
        r.vocab_size = expect.vocab_size or (int(obj["t2d"].shape[0]) if hasattr(obj["t2d"], "shape") else None)
        _, w = check_ids(ids, None, None, expect.keep_ids, "kept ids")
        r.warnings += w
    return r


def validate_json(obj: Any, path: str, expect: Expect) -> Report:
    r = Report(path=path, format="json")
    if not isinstance(obj, dict) or "token_ids" not in obj:
        r.problems.append("not a token-map JSON: needs an object with 'token_ids', 'vocab_size', 'manifest'")
        return r
    V = obj.get("vocab_size")
    if not isinstance(V, int) or isinstance(V, bool) or V <= 0:
        r.problems.append(f"'vocab_size' must be a positive integer, got {V!r}")
        V = None
    if expect.vocab_size is not None and V is not None and V != expect.vocab_size:
        r.problems.append(f"'vocab_size' is {V} but the target vocabulary size is {expect.vocab_size}")
    r.vocab_size = expect.vocab_size or V
    if "manifest" not in obj or not isinstance(obj["manifest"], dict):
        r.problems.append("'manifest' is missing or not an object")
    ids = _as_int_array(obj["token_ids"], "'token_ids'", r.problems)
    if ids is None:
        return r
    r.n = int(ids.size)
    declared = expect.n if expect.n is not None else k_from_name(path)
    keep = expect.keep_ids
    if keep is None and isinstance(obj.get("manifest"), dict) and obj["manifest"].get("always_keep") is not None:
        keep = {int(i): "always-keep token" for i in obj["manifest"]["always_keep"]}
    p, w = check_ids(ids, r.vocab_size, declared, keep, "'token_ids'")
    r.problems += p + check_manifest(obj.get("manifest"), expect)
    r.warnings += w
    return r


def validate_summary(obj: Any, path: str, expect: Expect) -> Report:
    r = Report(path=path, format="summary")
    if not isinstance(obj, dict):
        r.problems.append("summary must be a JSON object")
        return r
    for key in ("k", "coverage", "vtcore_version", "created"):
        if key not in obj:
            r.problems.append(f"summary lacks '{key}'")
    if isinstance(obj.get("vocab_size"), int):
        r.vocab_size = obj["vocab_size"]
        if expect.vocab_size is not None and obj["vocab_size"] != expect.vocab_size:
            r.problems.append(f"summary says vocab_size {obj['vocab_size']} but the target's is {expect.vocab_size}")
    if isinstance(obj.get("k"), int):
        r.n = obj["k"]
        if expect.n is not None and obj["k"] != expect.n:
            r.problems.append(f"summary says k = {obj['k']} but {expect.n} was expected")
    r.problems += check_manifest(obj.get("manifest"), expect)
    return r


# ---------------------------------------------------------------- draft checkpoints

def head_key(shapes: dict[str, tuple], config: dict) -> str | None:
    """Which tensor scores the vocabulary: lm_head.weight, else the tied input embedding."""
    if "lm_head.weight" in shapes:
        return "lm_head.weight"
    return embed_key(shapes)


def embed_key(shapes: dict[str, tuple]) -> str | None:
    keys = [k for k in shapes if k.endswith("embed_tokens.weight")]
    return keys[0] if keys else None


# Sizes a draft's config may state: far above any real model, low enough that a size from a
# hand-edited file cannot make a loader allocate terabytes.
DRAFT_LIMITS = {"hidden_size": 1 << 16, "num_attention_heads": 1 << 10, "num_key_value_heads": 1 << 10,
                "head_dim": 1 << 12, "intermediate_size": 1 << 20, "vocab_size": 1 << 24,
                "draft_vocab_size": 1 << 24, "target_hidden_size": 1 << 16, "max_position_embeddings": 1 << 24,
                "num_hidden_layers": 1}
_DRAFT_REQUIRED = ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
FINITE_CHUNK = 1 << 22   # elements checked for NaN / inf at a time


def _config_int(config: dict, key: str, problems: list[str]) -> int | None:
    v = config.get(key)
    if v is None:
        if key in _DRAFT_REQUIRED:
            problems.append(f"config.json: '{key}' is missing")
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        problems.append(f"config.json: '{key}' must be an integer, got {str(v)[:40]!r}")
        return None
    if not 1 <= v <= DRAFT_LIMITS[key]:
        problems.append(f"config.json: '{key}' is {str(v)[:40]}, outside 1..{DRAFT_LIMITS[key]:,}")
        return None
    return v


def _draft_tensor_name(k: str) -> str:
    """A checkpoint's tensor name in the SpecForge form (midlayer.*), whatever the layout wrote."""
    k = k[len("model."):] if k.startswith("model.") else k
    for a in ("layers.0.", "midlayers.0."):
        if k.startswith(a):
            return "midlayer." + k[len(a):]
    return k


def _not_finite(t: Any) -> bool:
    import torch

    flat = t.reshape(-1)
    return any(not bool(torch.isfinite(flat[i:i + FINITE_CHUNK]).all()) for i in range(0, flat.numel(), FINITE_CHUNK))


def eagle3_draft_problems(config: dict, src: TensorSource, finite: bool = True) -> list[str]:
    """Everything that makes an EAGLE-3 draft (flat SpecForge config, tensors under SpecForge
    names) unusable, each naming the field or tensor: config sizes present, integral and in
    range (DRAFT_LIMITS); every tensor's shape and dtype against the config (fc, the decoder
    layer, norms, embedding [V, H], head [draft_vocab_size, H]); d2t/t2d consistent and in range;
    weights finite. export, validate and bench all refuse a draft with any of these."""
    import torch

    from vtcore import eagle3

    problems: list[str] = []
    sizes = {k: _config_int(config, k, problems) for k in DRAFT_LIMITS}
    if problems:
        return problems
    H, heads, V = sizes["hidden_size"], sizes["num_attention_heads"], sizes["vocab_size"]
    N = sizes["draft_vocab_size"] or V
    if N > V:
        problems.append(f"config.json: 'draft_vocab_size' {N:,} is larger than 'vocab_size' {V:,}")
    kv = sizes["num_key_value_heads"] or heads
    if heads % kv:
        problems.append(f"config.json: 'num_attention_heads' {heads} is not a multiple of 'num_key_value_heads' {kv}")
    if sizes["head_dim"] is None and H % heads:
        problems.append(f"config.json: 'hidden_size' {H} is not a multiple of 'num_attention_heads' {heads} "
                        "(and no 'head_dim' is given)")
    if problems:
        return problems
    try:
        cfg = config_from_dict(config)
        with torch.device("meta"):   # the shapes the config implies, nothing allocated
            expected = {k: tuple(v.shape) for k, v in eagle3.Eagle3Draft(cfg).trainable_state().items()}
    except (VTError, ValueError, TypeError) as e:
        return [f"config.json: {e}"]
    expected.update({"embed_tokens.weight": (V, H), "lm_head.weight": (N, H)})
    optional = {"embed_tokens.weight", "lm_head.weight"} | {k for k in expected if "q_norm" in k or "k_norm" in k}
    have = {}
    for k, shape in src.shapes.items():
        if not k.startswith(("verifier_", "model.verifier_")) and "rotary_emb" not in k:
            have[_draft_tensor_name(k)] = k
    for name, shape in expected.items():
        if name not in have:
            if name not in optional:
                problems.append(f"tensor {name} is missing (expected shape {list(shape)})")
            continue
        got = tuple(src.shapes[have[name]])
        if got != shape:
            problems.append(f"tensor {name} is {list(got)}, the config implies {list(shape)}")
    extra = sorted(k for k in set(have) - set(expected) - {"d2t", "t2d"} if "q_norm" not in k and "k_norm" not in k)
    if extra:
        problems.append(f"tensors the config has no place for: {', '.join(extra[:5])}")
    if "lm_head.weight" not in have and N != V and not config.get("tie_word_embeddings"):
        problems.append(f"no lm_head.weight, and the head cannot come from the target: draft_vocab_size {N:,} "
                        f"is not vocab_size {V:,}")
    if N != V and not {"d2t", "t2d"} <= set(have):
        problems.append(f"draft_vocab_size {N:,} < vocab_size {V:,} but the weights lack d2t/t2d")
    if problems:
        return problems
    for name in sorted(set(have) & set(expected)):
        t = src.get(have[name])
        if not t.dtype.is_floating_point:
            problems.append(f"tensor {name} has dtype {str(t.dtype).replace('torch.', '')}, expected a float dtype")
        elif finite and _not_finite(t):
            problems.append(f"tensor {name} holds NaN or infinite values")
    if "d2t" in have:
        d2t, t2d = src.get(have["d2t"]), src.get(have["t2d"]) if "t2d" in have else None
        _, mapping = check_mapping(d2t, t2d, V, N)
        problems += [f"the draft's own {p}" for p in mapping]
    return problems


def check_eagle3_draft(config: dict, src: TensorSource, where: str | os.PathLike) -> None:
    """eagle3_draft_problems as one error naming the draft (VTError, exit 2)."""
    problems = eagle3_draft_problems(config, src)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise VTError(f"{where}: not a usable EAGLE-3 draft: {problems[0]}{more}")


def check_eagle3_dir(directory: str | os.PathLike) -> None:
    """check_eagle3_draft on a draft directory in either layout, tensors read lazily."""
    from vtcore.formats import read_config

    flat, src, _ = draft_source(directory, read_config(directory))
    check_eagle3_draft(flat, src, directory)


def validate_draft(config: dict, src: TensorSource, path: str, expect: Expect,
                   tokenizer_files: list[str] | None = None) -> Report:
    """A trimmed draft directory (ours: hf-draft; or an EAGLE-3 checkpoint)."""
    eagle = is_eagle3(config, src.shapes)
    r = Report(path=path, format="eagle3-draft" if eagle else "hf-draft")
    if eagle:
        r.problems += eagle3_draft_problems(config, src)
        if r.problems:
            return r
    V = config.get("vocab_size")
    if not isinstance(V, int):
        r.problems.append("config.json lacks an integer 'vocab_size'")
        return r
    r.vocab_size = V
    if expect.vocab_size is not None and expect.vocab_size != V:
        r.problems.append(f"config vocab_size is {V} but the target vocabulary size is {expect.vocab_size}")
    N = config.get("draft_vocab_size")
    has_map = "d2t" in src.shapes
    if N is None and not has_map:
        r.problems.append("not a trimmed draft: config.json has no draft_vocab_size and the weights no d2t/t2d")
        return r
    hk = head_key(src.shapes, config)
    if hk is None:
        r.problems.append("no lm_head.weight (and no embed_tokens.weight) in the weights")
        return r
    rows = src.shapes[hk][0]
    if N is not None and rows != N:
        r.problems.append(f"{hk} has {rows} rows but config draft_vocab_size is {N}")
    if N is not None and N < V and config.get("tie_word_embeddings", not eagle) and not eagle:
        r.problems.append("config says tie_word_embeddings: true with a trimmed head: loaders would tie the "
                          "full-size input embedding back in; set it to false")
    ek = embed_key(src.shapes)
    if not eagle and ek is not None and ek != hk and src.shapes[ek][0] != V:
        r.problems.append(f"{ek} has {src.shapes[ek][0]} rows but vocab_size is {V}: the input embedding "
                          "must stay full size")
    if not has_map:
        r.problems.append("weights lack d2t/t2d: nothing says which target id each head row scores")
        return r
    if "t2d" not in src.shapes:
        r.problems.append("weights have d2t but no t2d")
        return r
    ids, problems = check_mapping(src.get("d2t"), src.get("t2d"), V, N if N is not None else rows)
    r.problems += problems
    if ids is not None:
        r.n = int(ids.size)
        if ids.size != rows and not any("entries but" in p for p in problems):
            r.problems.append(f"d2t has {ids.size} entries but {hk} has {rows} rows")
        if expect.n is not None and ids.size != expect.n:
            r.problems.append(f"{ids.size} kept tokens but {expect.n} were expected")
        _, w = check_ids(ids, None, None, expect.keep_ids, "kept ids")
        r.warnings += w
    if tokenizer_files is not None and not eagle and not tokenizer_files:
        r.warnings.append("no tokenizer files in the directory (tokenizer.json / tokenizer_config.json)")
    return r


def validate_speculators(raw: dict, flat: dict, src: TensorSource, path: str, expect: Expect) -> Report:
    """A draft in speculators' Eagle3Speculator layout: the EAGLE-3 checks on its flat form, plus
    the fields vLLM's speculators config reader needs (transformers_utils/configs/speculators)."""
    r = validate_draft(flat, src, path, expect)
    r.format = "speculators"
    spec = raw.get("speculators_config")
    try:
        spec["proposal_methods"][0]["speculative_tokens"]
        spec["verifier"]["name_or_path"]
    except (KeyError, IndexError, TypeError):
        r.problems.append("speculators_config needs proposal_methods[0].speculative_tokens and "
                          "verifier.name_or_path (vLLM reads both)")
    if "norm_before_residual" not in raw:
        r.warnings.append("config.json does not say norm_before_residual: vLLM then assumes true, which a "
                          "SpecForge-trained draft is not")
    return r


def validate_speculators_vocab(d2t: np.ndarray, t2d: np.ndarray, path: str, expect: Expect,
                               declared_n: int | None = None) -> Report:
    """d2t-{N}.npy and t2d-{N}.npy as speculators' training CLI loads them (np.load, then torch)."""
    import torch

    r = Report(path=path, format="speculators-vocab", vocab_size=expect.vocab_size)
    declared = expect.n if expect.n is not None else declared_n
    ids, problems = check_mapping(d2t, torch.from_numpy(np.ascontiguousarray(t2d)), expect.vocab_size, declared)
    r.problems += problems
    if declared_n is not None and d2t.ndim == 1 and d2t.shape[0] != declared_n:
        r.problems.append(f"d2t has {d2t.shape[0]} entries but its file name says {declared_n}")
    if ids is not None:
        r.n = int(ids.size)
        r.vocab_size = expect.vocab_size or int(t2d.shape[0])
        _, w = check_ids(ids, None, None, expect.keep_ids, "kept ids")
        r.warnings += w
    return r


def validate_npy_pair(files: dict[str, bytes], path: str, expect: Expect) -> Report:
    """The speculators-vocab pair given as {name: bytes}: exactly one d2t-{N}.npy and its t2d-{N}.npy."""
    d2t_names = [n for n in files if re.fullmatch(r"d2t-\d+\.npy", n)]
    if len(d2t_names) != 1:
        return Report(path=path, format="speculators-vocab",
                      problems=[f"expected one d2t-{{N}}.npy, found {len(d2t_names)}"])
    n = int(d2t_names[0][4:-4])
    if f"t2d-{n}.npy" not in files:
        return Report(path=path, format="speculators-vocab", problems=[f"d2t-{n}.npy has no t2d-{n}.npy beside it"])
    try:
        d2t, t2d = read_npy(files[d2t_names[0]]), read_npy(files[f"t2d-{n}.npy"])
    except VTError as e:
        return Report(path=path, format="speculators-vocab", problems=[str(e).replace("data: ", "", 1)])
    return validate_speculators_vocab(d2t, t2d, path, expect, declared_n=n)


# ---------------------------------------------------------------- entry points

def validate_object(obj: Any, path: str, expect: Expect) -> Report:
    """Route a loaded .pt object to its format's checks."""
    import torch

    if isinstance(obj, (torch.Tensor, list, tuple)):
        return validate_sglang(obj, path, expect)
    if isinstance(obj, dict) and ("d2t" in obj or "t2d" in obj) and not any(k.endswith(".weight") for k in obj):
        return validate_eagle3(obj, path, expect)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        r = Report(path=path, format="checkpoint")
        r.problems.append("a bare state dict: validate the draft directory (with its config.json) instead")
        return r
    r = Report(path=path)
    r.problems.append(f"not a token map: expected a 1-D tensor of ids or a dict with d2t/t2d, got {type(obj).__name__}")
    return r


def validate_bytes(data: bytes, name: str, expect: Expect | None = None) -> Report:
    """Validate an export held in memory; `name` decides the format as a file name would."""
    expect = expect or Expect()
    if name.endswith(".json"):
        try:
            obj = parse_json(data, name)
        except VTError as e:
            return Report(path=name, format="json", problems=[str(e).replace(f"{name}: ", "", 1)])
        if Path(name).name.startswith("summary"):
            return validate_summary(obj, name, expect)
        return validate_json(obj, name, expect)
    try:
        obj = safe_torch_load(data)
    except UnsafeFile as e:
        return Report(path=name, format="refused", problems=[str(e).replace("data: ", "", 1)])
    except VTError as e:
        return Report(path=name, problems=[str(e).replace("data: ", "", 1)])
    return validate_object(obj, name, expect)


def validate_path(path: str | os.PathLike, expect: Expect | None = None) -> Report:
    """Validate a file or a draft directory on disk."""
    expect = expect or Expect()
    p = Path(path)
    try:
        found = p.exists()
    except OSError as e:   # e.g. a name longer than the file system allows
        raise VTError(f"{p}: cannot open ({os_reason(e)})") from None
    if not found:
        raise VTError(f"{p}: no such file or directory")
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            npys = {f.name: f.read_bytes() for f in p.glob("*.npy")}
            if npys:
                return validate_npy_pair(npys, str(p), expect)
            return Report(path=str(p), problems=["a directory to validate must be a draft with config.json, or "
                                                 "hold d2t-{N}.npy and t2d-{N}.npy"])
        try:
            config = parse_json(cfg.read_bytes(), "config.json")
        except VTError as e:
            return Report(path=str(p), problems=[str(e)])
        if not isinstance(config, dict):
            return Report(path=str(p), problems=[f"config.json must be a JSON object, got a JSON "
                                                 f"{type(config).__name__}"])
        try:
            flat, src, layout = draft_source(p, config)
        except UnsafeFile as e:
            return Report(path=str(p), format="refused", problems=[str(e)])
        except VTError as e:
            return Report(path=str(p), problems=[str(e)])
        if layout == "speculators":
            return validate_speculators(config, flat, src, str(p), expect)
        tok_files = [f.name for f in p.iterdir() if f.name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")]
        return validate_draft(config, src, str(p), expect, tok_files)
    if p.suffix == ".npy":
        n = re.fullmatch(r"[dt]2[td]-(\d+)\.npy", p.name)
        pair = [p.parent / f"d2t-{n.group(1)}.npy", p.parent / f"t2d-{n.group(1)}.npy"] if n else [p]
        r = validate_npy_pair({f.name: f.read_bytes() for f in pair if f.is_file()}, str(p), expect)
        return r
    if p.suffix == ".safetensors":
        return validate_path(p.parent, expect) if (p.parent / "config.json").is_file() else Report(
            path=str(p), problems=["a .safetensors file is validated with its draft directory (config.json)"])
    regular_file(p, "file to validate")   # a FIFO or a device would hang or never end
    if p.suffix == ".json":
        r = validate_bytes(p.read_bytes(), p.name, expect)
    else:
        r = _validate_torch_file(p, expect)
    r.path = str(p)
    return r


def _validate_torch_file(p: Path, expect: Expect) -> Report:
    """A .pt file loaded memory-mapped; a 1-D id tensor is then checked in chunks read from the
    file (stored_ids), so a 1.2 GB token map needs memory for V and one chunk only."""
    try:
        obj = safe_torch_load(p, mmap=True)
    except UnsafeFile as e:
        return Report(path=p.name, format="refused", problems=[str(e).replace(f"{p}: ", "", 1)])
    except VTError as e:
        return Report(path=p.name, problems=[str(e).replace(f"{p}: ", "", 1)])
    stored = stored_ids(p, obj)
    if stored is not None:
        return validate_sglang(obj, p.name, expect, stored)
    return validate_object(obj, p.name, expect)


def tokenizer_expectations(name_or_dir: str | None) -> dict:
    """What a tokenizer says an export must satisfy: its must-keep ids, identity and size."""
    tok = load_tokenizer(name_or_dir)
    info = tokenizer_info(tok)
    keep: dict[int, str] = {}
    if info.end_of_turn_id is not None:
        keep[int(info.end_of_turn_id)] = f"end-of-turn token {tok.convert_ids_to_tokens(int(info.end_of_turn_id))}"
    if info.eos_token_id is not None and int(info.eos_token_id) not in keep:
        keep[int(info.eos_token_id)] = f"EOS token {tok.convert_ids_to_tokens(int(info.eos_token_id))}"
    return {"keep_ids": keep, "tokenizer_sha256": info.sha256, "tokenizer_name": info.name,
            "tokenizer_vocab": info.vocab_size}
