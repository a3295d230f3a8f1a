"""Files the tool reads from users and writes for them: JSON read with errors that name the
file, and every write atomic (temp file + one rename), so a crash never leaves half a file.

`atomic_file` is the one writer: it refuses to replace an existing file unless `force`
(the CLI's --force; the tool's own files, the counts cache and the dashboard state, pass
force=True), never replaces a file the same command reads (`inputs`), and turns every
reason a target cannot be written into one VTError line naming the path.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from vtcore.errors import VTError


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed file; a missing file or bad JSON is a VTError naming the path (`what` says
    what the file should have been: "config file", "latency profile", ...)."""
    path = Path(path)
    if not path.exists():
        raise VTError(f"{path}: {what} not found")
    regular_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VTError(f"{path}: cannot read the {what} ({os_reason(e)})") from e
    except UnicodeDecodeError as e:
        raise VTError(f"{path}: not valid JSON ({e})") from e
    if not text.strip():
        raise VTError(f"{path}: the {what} is empty")
    return parse_json(text, path)


def parse_json(text: str | bytes, where: str | os.PathLike) -> Any:
    """json.loads whose every failure is one VTError naming `where`: bad syntax, a number too
    long to convert (Python's 4,300-digit limit) or nesting too deep for the parser."""
    try:
        return json.loads(text)
    except RecursionError:
        raise VTError(f"{where}: not valid JSON (nested too deep)") from None
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError, a 100,000-digit number
        raise VTError(f"{where}: not valid JSON ({str(e)[:200]})") from None


# Sizes read from a file are checked against these before anything is allocated.
VOCAB_LIMIT = 1 << 21   # token ids: 8x the largest real vocabulary (Gemma 3's 262,144)


def array_limit() -> int:
    """Bytes one file's arrays may need once read: VTCORE_MAX_ARRAY_MB (default 512: a counts file
    of 400 domains over a 152k vocabulary), so a small file whose header claims a huge array is
    refused before it is allocated, and one within it stays under 2 GB with its copies."""
    raw = os.environ.get("VTCORE_MAX_ARRAY_MB", "512")
    try:
        return max(1, int(float(raw) * (1 << 20)))
    except ValueError:
        raise VTError(f"VTCORE_MAX_ARRAY_MB must be a number of megabytes, got {raw!r}") from None


def memory_available() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mb(n: int | float) -> str:
    return f"{n / (1 << 20):,.1f} MB"


def npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, bytes of data) from a .npy stream's header, read without the data."""
    import numpy as np
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(f, max_header_size=10000)
        else:
            shape, _, dtype = npformat.read_array_header_2_0(f, max_header_size=10000)
    except (ValueError, SyntaxError, TypeError, OverflowError) as e:
        raise VTError(f"{where}: not a plain .npy array ({str(e).splitlines()[0][:200]})") from None
    if dtype.hasobject:
        raise VTError(f"{where}: holds Python objects (pickled); only plain arrays are read")
    return tuple(shape), dtype, int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_npy(f: BinaryIO, where: str, available: int | None, limit: int | None = None) -> None:
    """A .npy stream's declared array must fit `limit` (array_limit()) and the bytes there are
    (`available`, None: unknown): a 1 KB file claiming 5e10 elements is refused, not allocated."""
    limit = array_limit() if limit is None else limit
    start = f.tell()
    shape, dtype, nbytes = npy_header(f, where)
    if nbytes > limit:
        raise VTError(f"{where}: declares a {dtype} array of shape {list(shape)} ({_mb(nbytes)}), over the limit "
                      f"of {_mb(limit)} (VTCORE_MAX_ARRAY_MB)")
    if available is not None and nbytes > available - (f.tell() - start):
        raise VTError(f"{where}: declares {list(shape)} {dtype} ({nbytes:,} bytes) but holds only "
                      f"{max(available - (f.tell() - start), 0):,} bytes of data (cut short or forged)")


def check_npz(path: str | os.PathLike, limit: int | None = None) -> None:
    """Every array of a .npz (a zip of .npy) checked by its header before np.load decompresses
    it, and all of them together within `limit`: a 2 MB deflated file cannot expand to GBs."""
    import zipfile

    limit = array_limit() if limit is None else limit
    try:
        with zipfile.ZipFile(path) as z:
            total = 0
            for info in z.infolist():
                where = f"{path}: member {info.filename}"
                if info.file_size > limit:
                    raise VTError(f"{where} expands to {_mb(info.file_size)}, over the limit of {_mb(limit)} "
                                  "(VTCORE_MAX_ARRAY_MB)")
                with z.open(info) as f:
                    check_npy(f, where, info.file_size, limit)
                total += info.file_size
            if total > limit:
                raise VTError(f"{path}: its arrays expand to {_mb(total)}, over the limit of {_mb(limit)} "
                              "(VTCORE_MAX_ARRAY_MB)")
    except zipfile.BadZipFile as e:
        raise VTError(f"{path}: not a .npz archive ({e})") from None
    except OSError as e:
        raise VTError(f"{path}: cannot read ({os_reason(e)})") from None


def check_zip_size(path: str | os.PathLike, what: str, limit: int | None = None) -> None:
    """A zip-based file (torch.save's format) must expand to at most `limit` bytes in all."""
    import zipfile

    limit = array_limit() if limit is None else limit
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as z:
        total = sum(i.file_size for i in z.infolist())
    if total > limit:
        raise VTError(f"{path}: the {what} expands to {_mb(total)}, over the limit of {_mb(limit)} "
                      "(VTCORE_MAX_ARRAY_MB)")


def os_reason(e: OSError) -> str:
    """An OSError's reason without the path Python glues to it ("Permission denied")."""
    return e.strerror or type(e).__name__


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` when it is a regular file (symlinks followed); a FIFO, device or socket is refused
    before anything opens it (reading one hangs, or never ends: /dev/zero)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise VTError(f"{str(path)[:300]}: cannot open the {what} ({os_reason(e)})") from e
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a directory" if stat.S_ISDIR(mode) else "not a regular file")
        raise VTError(f"{path}: refused: the {what} is {kind}, not a regular file")
    return path


def tmp_sibling(target: Path) -> Path:
    """A fresh hidden name beside target (same filesystem, so the final rename is atomic).
    At most 40 bytes of the target's name are kept, so a legal 255-byte name still has a
    legal temp name."""
    stem = os.fsencode(target.name)[:40].decode("utf-8", "ignore")
    return target.parent / f".tmp-{stem}-{os.getpid()}-{secrets.token_hex(4)}"


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Both paths name one file (links and relative paths included); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_target(target: str | os.PathLike, force: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 flag: str = "--out") -> Path:
    """Refuse to write `target` over an input of the same command (even with --force) or over
    an existing file without force; the reason is one line naming the path."""
    target = Path(target)
    for src in inputs:
        inside = Path(src).is_dir() and Path(src).resolve() in Path(os.path.abspath(target)).parents
        if same_file(target, src) or inside:
            raise VTError(f"{flag} {target} is {'inside ' if inside else ''}an input of this command ({src}); "
                          "refusing to overwrite it (write the result to another path)")
    if _present(target, flag) and not force:
        raise VTError(f"{flag} {target} already exists; pass --force to overwrite it")
    return target


def _present(target: Path, flag: str) -> bool:
    """Something (a file, a folder, a link, even a dangling one) has this name."""
    try:
        os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise _write_error(target, e, flag) from None
    return True


def _make_parent(target: Path, flag: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise VTError(f"cannot write {flag} {target}: {e.filename} exists and is not a folder") from e
    except OSError as e:
        raise VTError(f"cannot write {flag} {target}: cannot create the folder {target.parent} "
                      f"({os_reason(e)})") from e


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system that holds `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_space(target: str | os.PathLike, need: int, flag: str = "--out") -> None:
    """Refuse before writing `need` bytes where the file system has less free."""
    free = free_bytes(target)
    if free is not None and need > free:
        raise VTError(f"cannot write {flag} {target}: needs {_mb(need)}, only {_mb(free)} free on its file system")


def _write_error(target: Path, e: OSError, flag: str) -> VTError:
    if e.errno in DISK_FULL:
        free = free_bytes(target)
        return VTError(f"cannot write {flag} {target}: the disk is full ({'quota exceeded' if e.errno == errno.EDQUOT else 'no space left'}"
                       f"{'' if free is None else f', {_mb(free)} free'}); free some space or write elsewhere")
    if e.errno == errno.ENAMETOOLONG:
        return VTError(f"cannot write {flag} {str(target)[:120]}...: the name is too long for this file system")
    if e.errno == errno.EISDIR:
        return VTError(f"cannot write {flag} {target}: it is a folder")
    return VTError(f"cannot write {flag} {target} ({os_reason(e)})")


@contextmanager
def atomic_file(target: str | os.PathLike, fsync: bool = False, force: bool = False,
                inputs: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `target` when the block ends without error; on an error
    the temp file is removed and `target` is untouched. An existing target is replaced only
    with force=True, an input of the command (`inputs`) never (check_target). fsync=True also
    flushes it to disk first (exports; not the dashboard state written on every widget
    change). `flag` names the target in messages ("--out", "counts cache", ...)."""
    target = check_target(target, force, inputs, flag)
    _make_parent(target, flag)
    tmp = tmp_sibling(target)
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp forces 0600)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise _write_error(target, e, flag) from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if not force and _present(target, flag):   # made while we wrote
            raise VTError(f"{flag} {target} appeared while writing; pass --force to overwrite it")
        try:
            os.replace(tmp, target)
        except OSError as e:
            raise _write_error(target, e, flag) from e
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in DISK_FULL:   # raised by the caller's writes or the flush
            raise _write_error(target, e, flag) from None
        raise


def plain_json(obj: Any) -> Any:
    """numpy scalars and arrays, paths and NaN / inf (as null) made plain JSON values."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # a torch scalar
        return plain_json(obj.item())
    return obj
