"""Tokenizers: the bundled Qwen3 default, hub ids and local directories; identity hashes;
the chat template and its end-of-turn token.

V, the length of every array indexed by token id, is `len(tokenizer)` (base vocabulary plus
added tokens), never the model's padded embedding size.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vtcore.errors import VTError
from vtcore.workspace import workspace_dir

BUNDLED_NAME = "qwen3"
BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / "qwen3"
BUNDLED_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
DEFAULT_TOKENIZER = f"bundled:{BUNDLED_NAME}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundled_tokenizer_dir() -> Path:
    """Unpack the bundled Qwen3 tokenizer once into a cache folder and return it."""
    target = workspace_dir() / "tokenizers" / f"{BUNDLED_NAME}-{BUNDLED_SHA256[:12]}"
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        data = gzip.decompress((BUNDLED_DIR / "tokenizer.json.gz").read_bytes())
        if sha256_bytes(data) != BUNDLED_SHA256:
            raise VTError(f"bundled tokenizer {BUNDLED_DIR}/tokenizer.json.gz is corrupt (sha256 mismatch)")
        try:
            (tmp / "tokenizer.json").write_bytes(data)
            shutil.copy(BUNDLED_DIR / "tokenizer_config.json", tmp / "tokenizer_config.json")
        except OSError as e:   # a full disk or quota: the workspace is named, with what it needs
            raise VTError(f"cannot unpack the bundled tokenizer into the workspace {target.parent} "
                          f"({os.strerror(e.errno) if e.errno else e}; it needs {len(data) / 2**20:.0f} MB free): "
                          "free some space or set VTCORE_WORKSPACE elsewhere") from None
        try:
            os.replace(tmp, target)
        except OSError:  # another process unpacked it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _resolve(name_or_dir: str | None) -> tuple[str, str]:
    """(what to pass to from_pretrained, the name to record)."""
    if name_or_dir in (None, "", DEFAULT_TOKENIZER, BUNDLED_NAME):
        return str(bundled_tokenizer_dir()), DEFAULT_TOKENIZER
    p = Path(name_or_dir).expanduser()
    if p.is_dir():
        return str(p.resolve()), str(p.resolve())
    if p.exists():
        raise VTError(f"tokenizer {name_or_dir}: a tokenizer is a directory (tokenizer.json, tokenizer_config.json) "
                      "or a hub id, not a file")
    if str(name_or_dir).startswith((".", "/", "~")) or os.sep + os.sep in str(name_or_dir) or str(name_or_dir).count("/") > 1:
        raise VTError(f"tokenizer path {name_or_dir} does not exist")
    return str(name_or_dir), str(name_or_dir)


@functools.lru_cache(maxsize=8)
def _load(source: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        if Path(source).is_dir():
            raise VTError(f"tokenizer {source}: cannot load it ({str(e).splitlines()[0]})") from e
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "the model hub is off (HF_HUB_OFFLINE=1)" if offline else "it could not be fetched from the model hub"
        raise VTError(f"tokenizer {source!r} is not a local directory and {why}; pass a local directory "
                      "that holds tokenizer.json and tokenizer_config.json") from e
    if not getattr(tok, "is_fast", False):
        raise VTError(f"tokenizer {source}: only fast (tokenizers-backed) tokenizers are supported")
    if tok.backend_tokenizer.truncation is not None:
        # a message longer than model_max_length is counted whole, never truncated
        tok.backend_tokenizer.no_truncation()
    return tok


def load_tokenizer(name_or_dir: str | None = None):
    """A transformers fast tokenizer: None or 'bundled:qwen3' = the bundled Qwen3 one, a local
    directory, or a hub id (fails offline with a clear message)."""
    source, name = _resolve(name_or_dir)
    tok = _load(source)
    tok.vtcore_name = name  # recorded in manifests
    return tok


@dataclass
class TokenizerInfo:
    name: str
    sha256: str             # of tokenizer.json where there is one, else of its serialisation
    sha256_of: str          # "tokenizer.json" or "serialized"
    chat_template_sha256: str | None
    vocab_size: int         # len(tokenizer)
    eos_token_id: int | None
    end_of_turn_id: int | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@functools.lru_cache(maxsize=8)
def _file_sha(path: str, mtime: float) -> str:
    return sha256_file(path)


def tokenizer_info(tok) -> TokenizerInfo:
    name = getattr(tok, "vtcore_name", None) or tok.name_or_path
    tj = Path(tok.name_or_path) / "tokenizer.json"
    if tj.is_file():
        sha, of = _file_sha(str(tj), tj.stat().st_mtime), "tokenizer.json"
    else:
        sha, of = sha256_bytes(tok.backend_tokenizer.to_str().encode()), "serialized"
    template = chat_template(tok)
    return TokenizerInfo(
        name=name, sha256=sha, sha256_of=of,
        chat_template_sha256=sha256_bytes(template.encode()) if template else None,
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, end_of_turn_id=end_of_turn_id(tok))


def chat_template(tok) -> str | None:
    t = getattr(tok, "chat_template", None)
    if isinstance(t, dict):  # several named templates: the default one
        t = t.get("default") or next(iter(t.values()), None)
    return t or None


def special_token_pattern(tok) -> re.Pattern:
    """Matches every added token in text, longest first (as the tokenizer splits them)."""
    added = sorted({t.content for t in tok.backend_tokenizer.get_added_tokens_decoder().values() if t.content},
                   key=len, reverse=True)
    if not added:
        return re.compile(r"(?!x)x")  # matches nothing
    return re.compile("|".join(re.escape(t) for t in added))


def _find_end_of_turn(tok) -> int | None:
    template = chat_template(tok)
    if template is None:
        return tok.eos_token_id
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
        text = tok.apply_chat_template(probe, tokenize=False)
    except Exception:
        return tok.eos_token_id
    at = text.rfind("pong")
    m = special_token_pattern(tok).search(text, at + 4) if at >= 0 else None
    if m is None or text[at + 4:m.start()].strip():
        return tok.eos_token_id
    return tok.convert_tokens_to_ids(m.group(0))


def end_of_turn_id(tok) -> int | None:
    """The token that closes an assistant turn in this tokenizer's chat template (Qwen3:
    <|im_end|>, Llama 3: <|eot_id|>, Gemma: <end_of_turn>); the EOS token without a template."""
    if not hasattr(tok, "_vtcore_eot"):
        tok._vtcore_eot = _find_end_of_turn(tok)
    return tok._vtcore_eot


def always_keep_ids(tok, extra: list[int] | None = None) -> list[int]:
    """Ids a trimmed draft must always be able to emit: end-of-turn, EOS, plus the user's."""
    ids = [end_of_turn_id(tok), tok.eos_token_id] + list(extra or [])
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def describe_token(tok, token_id: int) -> str:
    """Readable text of one token for tables (special tokens as themselves, bytes decoded)."""
    text = tok.decode([int(token_id)], clean_up_tokenization_spaces=False)
    return json.dumps(text, ensure_ascii=False)[1:-1]
