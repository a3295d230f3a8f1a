"""The on-disk formats, each read and written here once, and d2t <-> ids:

- SGLang token map: torch.save of a 1-D int64 tensor of target ids, frequency order.
- EAGLE-3 vocab mapping: torch.save({"d2t": int64[N], "t2d": bool[V]}); the kept ids sorted
  ascending, target id = i + d2t[i], t2d marks the kept ids.
- JSON token ids: {"token_ids": [...], "vocab_size": V, "manifest": {...}}.
- speculators' training vocabulary: d2t-{N}.npy (int64[N]) and t2d-{N}.npy (bool[V]), np.save.
- Checkpoint directories: config.json and weights (safetensors, shards, weights-only .bin),
  read lazily (`tensor_source`). Draft checkpoints, the EAGLE-3 layouts and their config mapping
  are vtcore.checkpoints', built on these readers.

Reading never runs code: .pt/.bin with torch.load(weights_only=True) only (a pickle that
carries code is refused, not executed), .safetensors with safetensors, JSON with json.
validate.py checks what these readers return; export.py renders with these writers; the
decoding engine loads token maps through them.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from vtcore.errors import VTError
from vtcore.files import VOCAB_LIMIT, check_npy, check_zip_size, read_json

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")


# ---------------------------------------------------------------- d2t <-> ids

def d2t_from_ids(sorted_ids: np.ndarray) -> np.ndarray:
    """d2t[i] = s[i] - i for the ascending kept ids s."""
    s = np.asarray(sorted_ids, dtype=np.int64)
    return s - np.arange(s.size, dtype=np.int64)


def ids_from_d2t(d2t: Any) -> np.ndarray:
    """The target ids a d2t maps the draft rows to: i + d2t[i]."""
    d = np.asarray(d2t.detach().cpu().numpy() if hasattr(d2t, "detach") else d2t, dtype=np.int64)
    return d + np.arange(d.size, dtype=np.int64)


# ---------------------------------------------------------------- safe readers

class UnsafeFile(VTError):
    """A pickle that wants to build objects other than plain tensors: refused, not run."""


def safe_torch_load(source: str | os.PathLike | bytes, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: tensors, dicts, lists, numbers only. mmap=True (a
    path to a torch zip file) maps the tensors' bytes instead of reading them: loading costs no
    memory, and stored_ids can then read a big tensor in chunks."""
    import torch

    where = "data" if isinstance(source, (bytes, bytearray)) else str(source)
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    mmap = mmap and not isinstance(source, (bytes, bytearray)) and zipfile.is_zipfile(source)
    if mmap:   # a mapped tensor is the member's bytes as they lie in the file: compressed, they are not ids
        try:
            with zipfile.ZipFile(source) as z:
                packed = next((i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED
                               and "/data/" in i.filename and not i.filename.endswith(".pkl")), None)
        except (zipfile.BadZipFile, OSError):
            packed = None   # torch.load says what is wrong
        if packed:
            raise VTError(f"{where}: tensor data {packed} is compressed; torch.save stores tensors uncompressed, "
                          "so this file was not written by torch.save (re-save it with torch.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. "pickle protocol 4": noise next to our own message
            return torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
            refs, parsed = pickle_globals(data)
            if not refs and not parsed:
                raise VTError(f"{where}: not a readable torch file (neither a torch zip nor a pickle)") from e
            what = f"it references {', '.join(refs[:3])}" if refs else "it uses pickle features tensors never need"
            raise UnsafeFile(f"{where}: refused: the file holds pickled objects other than plain tensors, which "
                             f"could run code on load ({what}); it was not loaded") from e
        raise VTError(f"{where}: not a readable torch file ({first})") from e
    except FileNotFoundError:
        raise VTError(f"{where}: file not found") from None
    except Exception as e:  # zip errors, truncated files, wrong magic
        text = str(e)
        if "TorchScript" in text:   # a TorchScript archive is a program: refused like any code
            raise UnsafeFile(f"{where}: refused: a TorchScript archive carries code, which could run on load; "
                             "it was not loaded (a token map is a plain tensor saved with torch.save)") from e
        raise VTError(f"{where}: not a readable torch file ({_torch_reason(e)})") from e


def _torch_reason(e: Exception) -> str:
    """torch's first sentence of an error, without its advice to load with weights_only=False
    (which would run whatever code the file carries)."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    for cut in ("In PyTorch 2.6", "Re-running `torch.load`", "weights_only"):
        first = first.split(cut)[0]
    return first.strip(" .:")[:200] or type(e).__name__


@dataclass
class StoredIds:
    """A 1-D integer tensor inside a torch zip file, read from the file in chunks: checking
    150 M ids needs memory for one chunk, not for the file (validate)."""

    path: Path
    offset: int          # of the first element, in the file
    dtype: np.dtype      # little-endian, as torch writes
    size: int

    def chunks(self, n: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.size, n):
                want = min(n, self.size - start)
                part = np.fromfile(f, dtype=self.dtype, count=want)
                if part.size != want:
                    raise VTError(f"{self.path}: the tensor's data is cut short")
                yield part


def stored_ids(path: str | os.PathLike, tensor: Any) -> StoredIds | None:
    """Where `tensor` (as safe_torch_load(path, mmap=True) returned it) lies in the file, when
    it is a contiguous 1-D integer tensor of the file's only, uncompressed storage; else None
    (the caller reads the tensor itself)."""
    import torch

    if (not isinstance(tensor, torch.Tensor) or tensor.ndim != 1 or tensor.dtype.is_floating_point
            or tensor.dtype.is_complex or tensor.dtype == torch.bool or not tensor.is_contiguous()):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            data = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl")]
            order = z.read(next(n for n in z.namelist() if n.endswith("/byteorder"))).decode().strip()
    except (zipfile.BadZipFile, StopIteration, OSError, UnicodeDecodeError):
        return None
    storage = tensor.untyped_storage()
    if len(data) != 1 or data[0].compress_type != zipfile.ZIP_STORED or data[0].file_size != storage.nbytes():
        return None
    with open(path, "rb") as f:   # the member's data starts after its local header
        f.seek(data[0].header_offset)
        head = f.read(30)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    itemsize = tensor.element_size()
    dtype = np.dtype(str(tensor.dtype).replace("torch.", "")).newbyteorder("<" if order == "little" else ">")
    return StoredIds(Path(path), data[0].header_offset + 30 + name_len + extra_len
                     + tensor.storage_offset() * itemsize, dtype, int(tensor.numel()))


_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "numpy.")


def pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The callables a pickle (raw, or a torch zip's data.pkl) names, read statically with
    pickletools: nothing is executed. Torch's own rebuild helpers are left out. Also says
    whether every stream parsed as a pickle."""
    import pickletools
    import zipfile

    blobs = [data]
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                blobs = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
        except zipfile.BadZipFile:
            return [], False
    found: list[str] = []
    parsed = bool(blobs)
    for blob in blobs:
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(blob):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(str(arg))
                elif op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:   # a malformed stream: report what was seen before it
            parsed = False
    return [g for g in dict.fromkeys(found) if not g.startswith(_SAFE_GLOBALS)], parsed


@dataclass
class TensorSource:
    """Names, shapes and lazy access to a checkpoint's tensors (file, shards or bytes)."""

    shapes: dict[str, tuple[int, ...]]
    get: Callable[[str], Any]


def tensor_source(weights: dict[str, Any] | None = None, directory: str | os.PathLike | None = None
                  ) -> TensorSource:
    """From a dict of tensors already in memory, or from a checkpoint directory."""
    if weights is not None:
        return TensorSource({k: tuple(v.shape) for k, v in weights.items()}, weights.__getitem__)
    d = Path(directory)
    files: dict[str, Path] = {}
    if (d / "model.safetensors").is_file():
        files = {"*": d / "model.safetensors"}
    elif (d / "model.safetensors.index.json").is_file():
        files = {k: d / v for k, v in _weight_map(d / "model.safetensors.index.json").items()}
    if files:
        from safetensors import safe_open

        shapes, where = {}, {}
        for f in sorted(set(files.values())):
            try:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        shapes[k] = tuple(h.get_slice(k).get_shape())
                        where[k] = f
            except Exception as e:
                raise VTError(f"{f}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from e

        def get(name: str):
            with safe_open(str(where[name]), framework="pt") as h:
                return h.get_tensor(name)
        return TensorSource(shapes, get)
    bins = [d / "pytorch_model.bin"] if (d / "pytorch_model.bin").is_file() else []
    if not bins and (d / "pytorch_model.bin.index.json").is_file():
        bins = sorted({d / v for v in _weight_map(d / "pytorch_model.bin.index.json").values()})
    if bins:
        state: dict[str, Any] = {}
        for b in bins:
            part = safe_torch_load(b)
            if not isinstance(part, dict):
                raise VTError(f"{b}: expected a state dict of tensors, got {type(part).__name__}")
            state.update(part)
        return tensor_source(weights=state)
    raise VTError(f"{d}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def load_weights(directory: str | os.PathLike) -> dict:
    """Every tensor of a checkpoint directory (safetensors, shards, or weights-only .bin)."""
    src = tensor_source(directory=directory)
    return {k: src.get(k) for k in src.shapes}


def read_config(directory: str | os.PathLike) -> dict:
    p = Path(directory) / "config.json"
    if not p.is_file():
        raise VTError(f"{directory}: not a model directory (no config.json)")
    config = read_json(p, "config.json")
    if not isinstance(config, dict):
        raise VTError(f"{p}: config.json must be a JSON object, got a JSON {type(config).__name__}")
    return config


def _weight_map(index: Path) -> dict[str, str]:
    """A sharded checkpoint's index: {tensor name: shard file name}, checked."""
    doc = read_json(index, "checkpoint index")
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) and v and "/" not in v
                                           for k, v in wm.items()):
        raise VTError(f"{index}: must be a JSON object whose 'weight_map' maps tensor names to shard files "
                      "in the same folder")
    return wm


# ---------------------------------------------------------------- token maps

def read_token_ids(path: str | os.PathLike) -> "torch.Tensor":
    """Target ids a trimmed draft keeps, from a token-map file:
    - SGLang --speculative-token-map: torch.save of a 1-D int64 tensor (frequency order);
    - EAGLE-3 / SpecForge: torch.save({"d2t": int64[N], "t2d": bool[V]}), kept = i + d2t[i];
    - JSON {"token_ids": [...]} (or a plain list).
    .pt files are read with weights_only=True: loading runs no code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise VTError(f"{path}: token map not found")
    if path.suffix == ".json":
        if path.stat().st_size > VOCAB_LIMIT * 12:   # ids of any vocabulary, in decimal, with separators
            raise VTError(f"{path}: {path.stat().st_size:,} bytes is more than a token map of any vocabulary")
        obj = read_json(path, "token map")
        ids = obj.get("token_ids") if isinstance(obj, dict) else obj
        if not isinstance(ids, list) or not all(isinstance(i, int) and abs(i) < 1 << 62 for i in ids):
            raise VTError(f"{path}: field 'token_ids' must be a list of integers")
        t = torch.tensor(ids, dtype=torch.long)
    else:
        check_zip_size(path, "token map")   # a deflated 2 MB map must not expand to GBs
        obj = safe_torch_load(path)
        if isinstance(obj, dict) and "d2t" in obj:
            t = torch.from_numpy(ids_from_d2t(torch.as_tensor(obj["d2t"])))
        elif isinstance(obj, torch.Tensor):
            t = obj
        else:
            raise VTError(f"{path}: expected a 1-D tensor of token ids or a dict with 'd2t', got {type(obj).__name__}")
    if t.layout != torch.strided:
        raise VTError(f"{path}: a token map must be a dense 1-D integer tensor, got a {t.layout} tensor")
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise VTError(f"{path}: a token map must be a 1-D integer tensor, got {t.dtype} {list(t.shape)}")
    if t.numel() == 0:
        raise VTError(f"{path}: the token map is empty")
    if int(t.min()) < 0:
        raise VTError(f"{path}: negative token id {int(t.min())}")
    if t.unique().numel() != t.numel():
        raise VTError(f"{path}: the token map repeats ids")
    return t.long()


def torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def eagle3_mapping(sorted_ids: np.ndarray, vocab_size: int) -> dict:
    """d2t[i] = s[i] - i for the ascending kept ids s; t2d marks them in a length-V mask."""
    import torch

    s = np.asarray(sorted_ids, dtype=np.int64)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[torch.from_numpy(s)] = True
    return {"d2t": torch.from_numpy(d2t_from_ids(s)), "t2d": t2d}


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def speculators_vocab_names(n: int) -> tuple[str, str]:
    """The names speculators' training CLI looks for in its --data-path (train/cli.py)."""
    return f"d2t-{n}.npy", f"t2d-{n}.npy"


def speculators_vocab_files(sorted_ids: np.ndarray, vocab_size: int) -> dict[str, bytes]:
    """d2t (int64[N]) and t2d (bool[V]) as two .npy files, as speculators' training CLI reads them."""
    s = np.asarray(sorted_ids, dtype=np.int64)
    t2d = np.zeros(vocab_size, dtype=bool)
    t2d[s] = True
    d2t_name, t2d_name = speculators_vocab_names(s.size)
    return {d2t_name: npy_bytes(d2t_from_ids(s)), t2d_name: npy_bytes(t2d)}


def read_npy(source: str | os.PathLike | bytes) -> np.ndarray:
    """A .npy array, never unpickling objects (allow_pickle=False)."""
    where = "data" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with (io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")) as f:
            if f.read(2) == b"PK":
                raise VTError(f"{where}: a zip archive (an .npz?), not a .npy array")
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(0)
            check_npy(f, where, size)   # the declared shape, before np.load allocates it
        return np.load(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, allow_pickle=False)
    except FileNotFoundError:
        raise VTError(f"{where}: file not found") from None
    except ValueError as e:
        raise VTError(f"{where}: not a plain .npy array ({str(e).splitlines()[0][:200]})") from None


# ---------------------------------------------------------------- draft directories

def safetensors_bytes(weights: dict) -> bytes:
    from safetensors.torch import save

    # safetensors refuses shared or strided memory: copy only tensors that need it (a draft can be GBs)
    seen: set[int] = set()
    out = {}
    for k, v in weights.items():
        v = v.detach().contiguous()
        if v.untyped_storage().data_ptr() in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return save(out, metadata={"format": "pt"})


def side_files(directory: Path) -> dict[str, bytes]:
    """Tokenizer and other small top-level files copied unchanged (weights and config excluded)."""
    out = {}
    for f in sorted(directory.iterdir()):
        if (not f.is_file() or f.name.startswith(".") or f.name == "config.json" or f.suffix in WEIGHT_SUFFIXES
                or f.name.endswith(".index.json")):
            continue
        out[f.name] = f.read_bytes()
    return out
