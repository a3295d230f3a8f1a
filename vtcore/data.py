"""Read chat datasets and normalise them to conversations of {role, content}.

Files: JSONL (.jsonl/.ndjson, optionally .gz), JSON arrays (.json, streamed), Parquet, CSV,
and directories written by `datasets.Dataset.save_to_disk`; and `hf:ORG/NAME[:CONFIG][:SPLIT]`,
a dataset streamed by `datasets.load_dataset(..., streaming=True)` from the hub (online only) or
from a local folder of data files. Every reader streams: rows come one at a time, the file is
never read whole into memory, and no row is read past `max_row_bytes` (default 64 MB, the
CLI's --max-row-mb): a longer JSONL line or JSON value is a bad row, skipped through in
bounded pieces. FIFOs and devices are refused before anything reads them; a cut or foreign
gzip stream is the file's error.

Schemas (detected from the first row, or chosen): OpenAI-style `messages`/`conversations`
of {role, content} (content may be a list of {type: "text", text} parts), ShareGPT
`conversations` of {from, value}, Alpaca {instruction, input, output}, {prompt, response},
{prompt, completion}, and preformatted {text} (counted whole: no assistant mask possible).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import json
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from vtcore.errors import DataError
from vtcore.files import os_reason

SCHEMAS = ["auto", "messages", "sharegpt", "alpaca", "prompt_response", "prompt_completion", "text"]

# role aliases seen in public chat datasets -> the roles chat templates know
ROLE_ALIASES = {
    "system": "system", "developer": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant",
    "tool": "tool", "function": "tool", "ipython": "tool", "observation": "tool",
    "function_response": "tool",
    "function_call": "assistant",
}


@dataclass
class Conversation:
    messages: list[dict]          # [{"role": system|user|assistant|tool, "content": str}]
    domain: str
    source: str                   # "file:line" for messages that name where a row came from
    index: int                    # 0-based record index in its file (bad rows included)
    text: str | None = None       # preformatted text (schema "text"): counted whole


MAX_ROW_BYTES = 64 << 20   # a JSONL line / JSON value larger than this is a bad row (--max-row-mb)
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)   # a cut or foreign .gz stream


@dataclass
class ReadStats:
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count
    warnings: list[str] = field(default_factory=list)
    schema: str | None = None
    position: "_Position | None" = None   # progress through the file being read
    dropped_parts: dict[str, int] = field(default_factory=dict)   # non-text content part type -> count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# ---------------------------------------------------------------- raw records


class _Position:
    """How far through its file a reader is (bytes of the file on disk), for progress."""

    def __init__(self, path: Path):
        self.size = path.stat().st_size if path.is_file() else 0
        self.raw = None

    @property
    def fraction(self) -> float:
        if not self.size or self.raw is None or self.raw.closed:
            return 0.0
        return min(self.raw.tell() / self.size, 1.0)


def dataset_path(path: str | Path) -> Path:
    """The dataset path, checked before anything reads it: it exists and is a regular file or a
    folder. A FIFO or a device is refused (reading one hangs, or never ends: /dev/zero); a name
    the file system refuses (too long) is a DataError, not an OSError."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DataError("dataset not found", str(path)) from None
    except OSError as e:
        raise DataError(f"cannot open the dataset ({os_reason(e)})", str(path)) from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket")
        raise DataError(f"refused: this is {kind}, not a regular file", str(path))
    return path


class StreamError(DataError):
    """The file cannot be read past this point (a cut or foreign gzip stream): with --skip-bad
    the rows before it are kept and the file's end is reported."""


def _gzip_error(e: BaseException, path: Path, line: int | None) -> StreamError:
    """A cut (EOFError) or foreign (BadGzipFile, zlib.error) .gz stream as the file's error."""
    if isinstance(e, EOFError):
        why = "the gzip stream is cut short (truncated file)"
    else:
        why = f"not a valid gzip stream ({str(e).strip() or type(e).__name__})"
    return StreamError(why, str(path), line)


def _too_long(size: int, cap: int) -> str:
    mb = 1 << 20
    return f"row over the size cap ({size / mb:,.1f} MB > {cap / mb:,.4g} MB; raise it with --max-row-mb, or fix the row)"


def _capped_lines(f, cap: int) -> Iterator[bytes | int]:
    """The lines of a binary file with at most cap + 1 bytes of any line in memory: a longer
    line is read through to its end in 1 MB pieces and given as its length (an int)."""
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        if len(line) > cap and not line.endswith(b"\n"):
            size = len(line)
            del line
            while True:
                rest = f.readline(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield size
        else:
            yield line


def _open_binary(path: Path, pos: _Position | None = None):
    raw = open(path, "rb")
    if pos is not None:
        pos.raw = raw
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)
    return raw


def _kind(path: Path) -> str:
    if path.is_dir():
        return "hf-disk"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
            ".pq": "parquet", ".csv": "csv"}.get(ext, "unknown")


def _decode_line(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})", str(path), line)


def _iter_jsonl(path: Path, pos: "_Position", cap: int = MAX_ROW_BYTES) -> Iterator[tuple[int, dict | DataError]]:
    # a bad line is yielded as its DataError: the caller raises it, or skips it (--skip-bad)
    with _open_binary(path, pos) as f:
        lines = _capped_lines(f, cap)
        line_no = 0
        while True:
            try:
                raw = next(lines, None)
            except GZIP_ERRORS as e:   # nothing can be read after it: the last error of the file
                yield line_no + 1, _gzip_error(e, path, line_no + 1)
                return
            if raw is None:
                return
            line_no += 1
            if isinstance(raw, int):
                yield line_no, DataError(_too_long(raw, cap), str(path), line_no)
                continue
            try:
                text = _decode_line(raw, path, line_no)
            except DataError as e:
                yield line_no, e
                continue
            if line_no == 1:
                text = text.removeprefix("\ufeff")   # a UTF-8 byte order mark is no part of the row
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                yield line_no, DataError(f"malformed JSON ({e.msg} at column {e.colno})", str(path), line_no)
                continue
            except (ValueError, RecursionError) as e:   # a 100,000-digit number; nesting too deep
                why = "nested too deep" if isinstance(e, RecursionError) else str(e).split(":")[0]
                yield line_no, DataError(f"malformed JSON ({why})", str(path), line_no)
                continue
            yield line_no, rec


def _iter_json_array(path: Path, where: _Position, chunk_size: int = 1 << 20,
                     cap: int = MAX_ROW_BYTES) -> Iterator[tuple[int, dict]]:
    """Stream the elements of a top-level JSON array without loading the file; a value longer
    than `cap` characters is an error (the reader cannot resync past it)."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, line_base, eof = "", 0, 1, False
    bytes_read = 0

    with _open_binary(path, where) as f:
        def fill() -> bool:
            nonlocal buf, pos, line_base, eof, bytes_read
            if eof:
                return False
            try:
                chunk = f.read(chunk_size)
            except GZIP_ERRORS as e:
                raise _gzip_error(e, path, None) from None
            try:
                text = utf8.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                line = line_base + buf.count("\n", 0, pos) + chunk[:e.start].count(b"\n")
                raise DataError(f"not valid UTF-8 (byte 0x{chunk[e.start]:02x})", str(path), line)
            bytes_read += len(chunk)
            line_base += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + text, 0
            if not chunk:
                eof = True
            return bool(chunk)

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        def line_at(p: int) -> int:
            return line_base + buf.count("\n", 0, p)

        fill()
        if buf.startswith("\ufeff"):   # a UTF-8 byte order mark
            pos = 1
        skip_ws()
        if pos >= len(buf):
            raise DataError("file is empty (no rows)", str(path))
        if buf[pos] != "[":
            # a .json file holding JSON Lines is common enough to accept
            if buf[pos] == "{":
                yield from _iter_jsonl(path, where, cap)
                return
            raise DataError("expected a JSON array of rows (or JSON Lines)", str(path), line_at(pos))
        pos += 1
        first = True
        while True:
            skip_ws()
            if pos >= len(buf):
                raise DataError("unexpected end of file inside the JSON array", str(path), line_at(pos))
            if buf[pos] == "]":
                return
            if not first:
                if buf[pos] != ",":
                    raise DataError(f"malformed JSON (expected ',' or ']', found {buf[pos]!r})", str(path), line_at(pos))
                pos += 1
                skip_ws()
            first = False
            while True:
                try:
                    rec, end = decoder.raw_decode(buf, pos)
                    # a number or literal cut at the buffer edge decodes "successfully": read more
                    if end >= len(buf) and not eof:
                        raise ValueError
                    break
                except (json.JSONDecodeError, ValueError) as e:
                    if len(buf) - pos > cap:
                        raise DataError(_too_long(len(buf) - pos, cap), str(path), line_at(pos)) from None
                    if not fill():
                        msg = e.msg if isinstance(e, json.JSONDecodeError) else "truncated value"
                        raise DataError(f"malformed JSON ({msg})", str(path), line_at(pos))
            line = line_at(pos)
            if end - pos > cap:   # read whole within one chunk: still over the cap
                raise DataError(_too_long(end - pos, cap), str(path), line)
            pos = end
            yield line, rec


def _maybe_json(value):
    """CSV/Parquet cells may hold a JSON list of messages as text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def _csv_lines(f, path: Path, cap: int) -> Iterator[str]:
    """Text lines for csv.reader, each read within the row cap (a CSV record may span lines)."""
    for n, raw in enumerate(_capped_lines(f, cap), start=1):
        if isinstance(raw, int):
            raise DataError(_too_long(raw, cap), str(path), n)
        text = _decode_line(raw, path, n)
        yield text.removeprefix("\ufeff") if n == 1 else text


CSV_DELIMITERS = ",;\t|"
SNIFF_LINES = 5


def sniff_delimiter(lines: list[str]) -> str:
    """The delimiter of a CSV's first lines (comma, semicolon, tab or bar); a comma when they
    do not say (a one-column file). A spreadsheet's semicolon CSV is then read as columns."""
    for sample in ("".join(lines), lines[0] if lines else ""):
        try:
            return csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
        except csv.Error:
            continue
    return ","


def _iter_csv(path: Path, pos: _Position, cap: int = MAX_ROW_BYTES) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(cap)
    with _open_binary(path, pos) as fb:
        lines = _csv_lines(fb, path, cap)
        first = [line for _, line in zip(range(SNIFF_LINES), lines)]
        reader = csv.DictReader(itertools.chain(first, lines), delimiter=sniff_delimiter(first))
        try:
            for row in reader:
                yield reader.line_num, {k: _maybe_json(v) for k, v in row.items() if k is not None}
        except GZIP_ERRORS as e:
            raise _gzip_error(e, path, reader.line_num + 1) from None
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", str(path), reader.line_num)


def _iter_parquet(path: Path, pos: _Position) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"cannot read Parquet ({e})", str(path))
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            yield row, {k: _maybe_json(v) for k, v in rec.items()}


def _iter_hf_disk(path: Path, pos: _Position) -> Iterator[tuple[int, dict]]:
    try:
        import datasets

        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"not a dataset saved with datasets.save_to_disk ({e})", str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else datasets.concatenate_datasets([ds[s] for s in sorted(ds)])
    for i, rec in enumerate(ds, start=1):  # arrow-backed and memory-mapped: streams
        yield i, {k: _maybe_json(v) for k, v in rec.items()}


# ---------------------------------------------------------------- hub ids

HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class HubSpec:
    name: str                # ORG/NAME on the hub, or a local folder of data files
    config: str | None = None
    split: str | None = None

    @property
    def local(self) -> bool:
        return Path(self.name).expanduser().is_dir()

    @property
    def domain(self) -> str:
        return Path(self.name.rstrip("/")).name


def parse_hub(arg: str | Path) -> HubSpec | None:
    """`hf:ORG/NAME[:CONFIG][:SPLIT]` -> its parts (an empty CONFIG is the default one); None
    for anything that does not start with hf:."""
    arg = str(arg)
    if not arg.startswith(HUB_PREFIX):
        return None
    parts = arg[len(HUB_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2]):
        raise DataError("expected hf:ORG/NAME[:CONFIG][:SPLIT]", arg)
    return HubSpec(parts[0], (parts[1] or None) if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None)


def hub_offline(spec: HubSpec) -> bool:
    """A hub id (not a local folder) while the hub is off: nothing can be streamed."""
    return not spec.local and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _offline_error(arg: str) -> DataError:
    return DataError("a hub dataset needs the model hub, which is off (HF_HUB_OFFLINE=1); pass a local "
                     "folder of data files as hf:/path/to/folder, or a file", arg)


def hub_revision(spec: HubSpec, arg: str) -> str:
    """The commit the hub serves for a dataset id: what a cached count of it is keyed on."""
    if hub_offline(spec):
        raise _offline_error(arg)
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec.name).sha
    except Exception as e:
        raise DataError(f"cannot reach the dataset on the hub ({_why(e)})", arg)


def _iter_hub(spec: HubSpec, arg: str) -> Iterator[tuple[int, dict]]:
    if hub_offline(spec):
        raise _offline_error(arg)
    try:
        import datasets

        name = str(Path(spec.name).expanduser()) if spec.local else spec.name
        ds = datasets.load_dataset(name, spec.config, split=spec.split, streaming=True)
        if isinstance(ds, datasets.IterableDatasetDict):   # no split named: as for save_to_disk folders
            ds = ds["train"] if "train" in ds else datasets.concatenate_datasets([ds[s] for s in sorted(ds)])
        rows = iter(ds)
    except Exception as e:
        raise DataError(f"cannot load the dataset ({_why(e)})", arg)
    row = 0
    while True:
        try:
            rec = next(rows)
        except StopIteration:
            return
        except Exception as e:   # a stream can fail mid-way: files that do not cast, the network
            raise DataError(f"cannot read the dataset ({_why(e)})", arg, row + 1)
        row += 1
        yield row, {k: _maybe_json(v) for k, v in rec.items()}


def _why(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def iter_records(path: str | Path, pos: _Position | None = None,
                 max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[tuple[int, dict | DataError]]:
    """(line or row number, record) for every row of a dataset file, saved directory or hf: id.
    In JSONL a bad line (one over max_row_bytes too, and a gzip stream cut short, which ends
    the file) comes as (line, DataError) so a caller may skip it; other formats raise, since a
    reader cannot resync after a broken row there."""
    spec = parse_hub(path)
    if spec is not None:
        empty = True
        for line, rec in _iter_hub(spec, str(path)):
            empty = False
            yield line, rec
        if empty:
            raise DataError("dataset is empty (no rows)", str(path))
        return
    path = dataset_path(path)
    if max_row_bytes < 1:
        raise DataError(f"the row size cap must be positive, got {max_row_bytes} bytes", str(path))
    kind = _kind(path)
    if kind == "unknown":
        raise DataError("unknown dataset format (use .jsonl, .json, .parquet, .csv, optionally .gz, "
                        "or a directory saved by datasets.save_to_disk)", str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("file is empty (no rows)", str(path))
    pos = pos or _Position(path)
    capped = {"jsonl": lambda: _iter_jsonl(path, pos, max_row_bytes),
              "json": lambda: _iter_json_array(path, pos, cap=max_row_bytes),
              "csv": lambda: _iter_csv(path, pos, max_row_bytes),
              "parquet": lambda: _iter_parquet(path, pos), "hf-disk": lambda: _iter_hf_disk(path, pos)}
    empty = True
    for line, rec in capped[kind]():
        empty = False
        yield line, rec
    if empty:
        raise DataError("file is empty (no rows)", str(path))


# ---------------------------------------------------------------- schemas


def detect_schema(rec: dict, path: str = "", line: int | None = None) -> str:
    if not isinstance(rec, dict):
        raise DataError(f"a row must be a JSON object, got {type(rec).__name__}", path, line)
    for key in ("messages", "conversations", "conversation"):
        msgs = rec.get(key)
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            if "from" in msgs[0] and "value" in msgs[0]:
                return "sharegpt"
            if "role" in msgs[0]:
                return "messages"
    if "instruction" in rec and "output" in rec:
        return "alpaca"
    if "prompt" in rec and "response" in rec:
        return "prompt_response"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion"
    if isinstance(rec.get("text"), str):
        return "text"
    raise DataError(
        f"cannot detect the schema: fields found {sorted(rec)}; expected one of messages/conversations "
        "(list of {role, content} or {from, value}), instruction+output, prompt+response, prompt+completion, "
        "or text", path, line)


def _content_text(content, path: str, line: int, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                if not isinstance(part.get("text"), str):
                    raise DataError("text part has no string 'text'", path, line, f"{where}[{j}].text")
                parts.append(part["text"])
        return "".join(parts)
    raise DataError(f"content must be a string or a list of parts, got {type(content).__name__}", path, line, where)


_CANONICAL = {"system", "user", "assistant", "tool"}


def _messages_from_list(msgs, role_key: str, content_key: str, path: str, line: int, key: str) -> list[dict]:
    if not isinstance(msgs, list):
        raise DataError(f"must be a list, got {type(msgs).__name__}", path, line, key)
    # fast path, the common case: canonical roles and string contents, taken as they are
    try:
        out = [{"role": m[role_key], "content": m[content_key]} for m in msgs]
        if all(m["role"] in _CANONICAL and type(m["content"]) is str for m in out):
            return out
    except (KeyError, TypeError):
        pass
    out, unknown = [], []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise DataError(f"each message must be an object, got {type(m).__name__}", path, line, f"{key}[{j}]")
        if role_key not in m:
            raise DataError(f"message has no '{role_key}' (fields: {sorted(m)})", path, line, f"{key}[{j}]")
        raw_role = str(m[role_key]).strip().lower()
        role = ROLE_ALIASES.get(raw_role)
        if role is None:
            unknown.append(str(m[role_key]))
            continue
        out.append({"role": role, "content": _content_text(m.get(content_key), path, line, f"{key}[{j}].{content_key}")})
    if unknown:
        raise DataError(f"unknown role(s) {sorted(set(unknown))}; known: {sorted(ROLE_ALIASES)}", path, line,
                        f"{key}[].{role_key}")
    return out


def _field(rec: dict, name: str, path: str, line: int) -> str:
    if name not in rec:
        raise DataError(f"missing field (fields: {sorted(rec)})", path, line, name)
    return _content_text(rec[name], path, line, name)


def normalize(rec: dict, schema: str, path: str, line: int) -> tuple[list[dict], str | None]:
    """Messages of one record (and its preformatted text for schema 'text')."""
    if not isinstance(rec, dict):
        raise DataError(f"a row must be a JSON object, got {type(rec).__name__}", path, line)
    if schema == "messages":
        key = next((k for k in ("messages", "conversations", "conversation") if k in rec), None)
        if key is None:
            raise DataError(f"no messages field (fields: {sorted(rec)})", path, line, "messages")
        return _messages_from_list(rec[key], "role", "content", path, line, key), None
    if schema == "sharegpt":
        key = next((k for k in ("conversations", "conversation", "messages") if k in rec), None)
        if key is None:
            raise DataError(f"no conversations field (fields: {sorted(rec)})", path, line, "conversations")
        msgs = _messages_from_list(rec[key], "from", "value", path, line, key)
        if isinstance(rec.get("system"), str) and rec["system"]:
            msgs.insert(0, {"role": "system", "content": rec["system"]})
        return msgs, None
    if schema == "alpaca":
        instruction = _field(rec, "instruction", path, line)
        extra = _content_text(rec.get("input"), path, line, "input")
        user = instruction + ("\n\n" + extra if extra else "")
        return [{"role": "user", "content": user},
                {"role": "assistant", "content": _field(rec, "output", path, line)}], None
    if schema in ("prompt_response", "prompt_completion"):
        answer = "response" if schema == "prompt_response" else "completion"
        return [{"role": "user", "content": _field(rec, "prompt", path, line)},
                {"role": "assistant", "content": _field(rec, answer, path, line)}], None
    if schema == "text":
        return [], _field(rec, "text", path, line)
    raise DataError(f"unknown schema {schema!r}; known: {', '.join(SCHEMAS)}", path, line)


def read_dataset(path: str | Path, schema: str = "auto", domain: str | None = None, skip_bad: bool = False,
                 stats: ReadStats | None = None, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Conversation]:
    """Normalised conversations of one file. Bad rows raise DataError, or with skip_bad are
    counted in `stats.skipped` by reason (a gzip stream cut short also ends the file, with a
    warning). Non-text content parts (images, audio) are counted in `stats.dropped_parts`.
    The row's `domain` field wins over `domain`; without either the file's stem names the domain."""
    if schema not in SCHEMAS:
        raise DataError(f"unknown schema {schema!r}; known: {', '.join(SCHEMAS)}", str(path))
    stats = stats if stats is not None else ReadStats()
    spec = parse_hub(path)
    if spec is None:
        path = dataset_path(path)
        stats.position = _Position(path)
    else:
        path = str(path)   # hf: ids are not paths: keep them as written
    default_domain = domain or (spec.domain if spec is not None else path.name.split(".")[0])
    resolved = None if schema == "auto" else schema
    for index, (line, rec) in enumerate(iter_records(path, stats.position, max_row_bytes)):
        try:
            if isinstance(rec, DataError):
                raise rec
            if resolved is None:
                resolved = detect_schema(rec, str(path), line)
                stats.schema = resolved
                if resolved == "text":
                    stats.warnings.append(f"{path}: preformatted 'text' rows are counted whole: no assistant "
                                          "mask is possible")
            messages, text = normalize(rec, resolved, str(path), line)
            if text is None and not any(m["role"] == "assistant" for m in messages):
                raise DataError("row has no assistant turn", str(path), line)
        except DataError as e:
            if skip_bad:
                stats.skip(_reason_key(e.reason))
                if isinstance(e, StreamError):
                    stats.warnings.append(f"{e}: the {stats.rows:,} rows before it were kept")
                continue
            raise
        stats.rows += 1
        if resolved in ("messages", "sharegpt"):
            _count_dropped_parts(rec, stats.dropped_parts)
        row_domain = rec.get("domain") if isinstance(rec.get("domain"), str) else None
        yield Conversation(messages=messages, domain=row_domain or default_domain, source=f"{path}:{line}",
                           index=index, text=text)


def columns(path: str | Path) -> list[str]:
    """The fields of a dataset's first row: what a CSV or Parquet file's columns are called."""
    for line, rec in iter_records(path):
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec, dict):
            raise DataError(f"a row must be a JSON object, got {type(rec).__name__}", str(path), line)
        return [str(k) for k in rec]
    return []


def map_columns(path: str | Path, user: str, answer: str) -> Iterator[dict]:
    """The rows of a table as prompt/response records: `user` names the column with the user's
    turn, `answer` the column with the assistant's (for files whose column names no schema knows)."""
    if user == answer:
        raise DataError(f"the user turn and the answer must be two different columns, got {user!r} twice", str(path))
    for line, rec in iter_records(path):
        if isinstance(rec, DataError):
            raise rec
        for col in (user, answer):
            if not isinstance(rec, dict) or col not in rec:
                found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                raise DataError(f"no column {col!r} (columns: {found})", str(path), line, col)
        yield {"prompt": _content_text(rec[user], str(path), line, user),
               "response": _content_text(rec[answer], str(path), line, answer)}


def _count_dropped_parts(rec: dict, dropped: dict[str, int]) -> None:
    """Content parts that are not text (image_url, input_audio, ...): not tokenized, so counted
    here to be reported."""
    for key in ("messages", "conversations", "conversation"):
        msgs = rec.get(key)
        if isinstance(msgs, list):
            for m in msgs:
                content = m.get("content", m.get("value")) if isinstance(m, dict) else None
                if type(content) is list:
                    for part in content:
                        if isinstance(part, dict) and part.get("type", "text") != "text":
                            kind = str(part.get("type"))[:40]
                            dropped[kind] = dropped.get(kind, 0) + 1
            return


def dropped_parts_warning(path: str | Path, dropped: dict[str, int]) -> str | None:
    """The note for non-text parts a file's rows carried, or None."""
    if not dropped:
        return None
    kinds = ", ".join(f"{k}: {n:,}" for k, n in sorted(dropped.items()))
    return (f"{path}: {sum(dropped.values()):,} non-text message parts were not counted ({kinds}); "
            "only text is tokenized")


def _reason_key(reason: str) -> str:
    """'malformed JSON (Expecting value at column 3)' -> 'malformed JSON': groups skip counts."""
    return reason.split(" (")[0].split(";")[0].split(":")[0]


def parse_data_arg(arg: str) -> tuple[str, str | None]:
    """`PATH` or `DOMAIN=PATH` (the CLI's --data); PATH may be an hf: id."""
    try:
        exists = Path(arg).exists()
    except OSError:   # e.g. a name longer than the file system allows: dataset_path says so
        exists = False
    if "=" in arg and not exists and not arg.startswith(HUB_PREFIX):
        name, _, p = arg.partition("=")
        if name and "/" not in name and "\\" not in name:
            return p, name
    return arg, None

