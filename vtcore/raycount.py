"""Counting on Ray Data (`--engine ray`): the same Tally as counts.count_local, from the CPUs of
a Ray cluster, or of a local Ray started on this machine (docs/scale.md).

- read: one Ray read task per dataset runs data.read_dataset itself, on the driver's node (the
  files need only be there), so schema detection, bad rows, domains and each row's index in its
  file (the held-out split) are exactly the local engine's. It yields blocks of `block_rows`
  conversations, then the file's ReadStats, or the error that ended it.
- map: a pool of actors, each holding the tokenizer and an AssistantTokens that adopts the
  driver's first-rows self-check, turns each block into a Tally (int64[V] per domain and split).
- reduce: the driver sums the tallies as they arrive and puts the domains back in the order
  they first appear in the data.

Ray is an optional extra: nothing here imports it until a count asks for this engine.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vtcore.data import MAX_ROW_BYTES, Conversation, ReadStats, read_dataset
from vtcore.errors import VTError
from vtcore.mask import SELF_CHECK_ROWS, AssistantTokens, MaskCheck
from vtcore.split import is_heldout
from vtcore.tally import DataSource, Tally

ENGINES = ("local", "ray")
READER_FEEDS = 16   # actors one read task keeps busy (reading is ~2% of the work per row)
RAY_REQUIREMENT = "ray[data]==2.60.0"   # as requirements-ray.txt pins it


@dataclass
class RayConfig:
    address: str | None = None   # a running cluster ("auto", "HOST:PORT"); None: start a local Ray here
    actors: int | None = None    # tokenizer actors; None: one per CPU of the cluster
    block_rows: int = 256        # conversations per block: one actor call, one bincount per domain and split


def import_ray():
    """The ray module, or a VTError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra)
    except ImportError as e:
        raise VTError(f"the Ray engine needs {RAY_REQUIREMENT}: pip install '{RAY_REQUIREMENT}' "
                      "(or bash scripts/setup.sh --with-ray)") from e
    return ray


_joined: list[str | None] = []   # the address this process connected to, when connect() did it


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT reached a Ray count in the main thread: the command ends. The message is
    the CLI's one line; exit_code is the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def signals_end_the_count(doing: Callable[[], str]) -> Iterator[Callable[[], None]]:
    """While a Ray count runs in the main thread, SIGTERM and SIGINT raise Interrupted (saying
    what it was `doing()`), wherever the count is: probing the address, joining the cluster,
    waiting on the actors. Ray's own driver handler would sys.exit() only once a blocking call
    returns, and Ray retries an unreachable address for minutes. Yields `arm`, to call again
    once Ray has joined: its core worker installs a C++ SIGTERM handler over Python's (it dumps
    a stack and aborts). Other threads (the dashboard's job) are left alone: signals reach the
    main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def stop(signum: int, frame) -> None:
        raise Interrupted(f"{signal.Signals(signum).name} received while {doing()}: counting ended, "
                          "nothing was written", signum)

    def arm() -> None:
        for s in before:
            signal.signal(s, stop)

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    arm()
    try:
        yield arm
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local Ray on this machine (loopback only,
    `num_cpus` or all). A process that already has Ray keeps it, unless connect() made it for
    another address (the dashboard's user changed it): then it leaves that one first. An address
    that does not answer within connect_timeout() seconds is refused before Ray's own retries
    (minutes); one that answers but does not join as a Ray cluster within join_timeout() is
    refused too. ray.init runs in a thread of its own while the caller waits in Python, so a
    signal handler (signals_end_the_count) runs at once, not when Ray's connect gives up."""
    if address:
        probe(address)
    ray = import_ray()
    if ray.is_initialized():
        if not _joined or _joined[0] == address:   # started by the caller (a test), or the same
            return
        ray.shutdown()
        _joined.clear()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no usage report: nothing leaves the machine
    # the workers import vtcore from this copy, shipped with the job: a worker needs only the
    # Python packages (docs/scale.md)
    common = {"logging_level": logging.ERROR, "log_to_driver": False,
              "runtime_env": {"py_modules": [str(Path(__file__).resolve().parent)], "excludes": ["__pycache__"]}}
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    if address:
        kwargs = {"address": address, **common}
    else:
        kwargs = {"num_cpus": num_cpus, "include_dashboard": False, "_node_ip_address": "127.0.0.1", **common}
    try:
        _init_in_thread(ray, kwargs, join_timeout() if address else None, where)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise VTError(f"cannot start or reach {where} ({_first_line(e)})") from e
    _joined[:] = [address]


def _init_in_thread(ray, kwargs: dict, limit: float | None, where: str) -> None:
    """ray.init(**kwargs) in a daemon thread, waited for in short waits (signal handlers run
    between them), at most `limit` seconds. A wait that times out leaves that thread to the
    process's exit: Ray offers no way to cancel a connect in progress. The thread never ends:
    Ray starts its processes (GCS, raylet) with PR_SET_PDEATHSIG, and Linux sends that signal
    when the *thread* that forked them exits, not the process."""
    box: dict[str, BaseException] = {}
    done = threading.Event()

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e
        finally:
            done.set()
        threading.Event().wait()   # parked for the life of the process: Ray's processes live as long

    # Ray says, from a thread other than the main one, that it leaves SIGTERM alone: that is the point
    logging.getLogger("ray._private.worker").setLevel(logging.ERROR)
    t = threading.Thread(target=init, name="ray-init", daemon=True)
    t0 = time.monotonic()
    t.start()
    while not done.wait(0.1):
        if limit is not None and time.monotonic() - t0 > limit:
            raise VTError(f"cannot join {where}: it answers but did not join as a Ray cluster within "
                          f"{limit:g} s (VTCORE_RAY_TIMEOUT x {JOIN_FACTOR}); is it a Ray head node's "
                          "GCS port (ray start --head prints it)?")
    if "error" in box:
        raise box["error"]


def connect_timeout() -> float:
    """Seconds an unreachable --ray-address is given: VTCORE_RAY_TIMEOUT, default 10."""
    raw = os.environ.get("VTCORE_RAY_TIMEOUT", "10")
    try:
        t = float(raw)
    except ValueError:
        t = math.nan
    if not math.isfinite(t):
        raise VTError(f"VTCORE_RAY_TIMEOUT must be a number of seconds, got {raw!r}")
    return max(0.05, t)


JOIN_FACTOR = 6   # joining (ray.init: the GCS, a driver, shipping vtcore) is given this many probe timeouts


def join_timeout() -> float:
    """Seconds ray.init may take to join a --ray-address that answered the probe (60 by default)."""
    return JOIN_FACTOR * connect_timeout()


def probe(address: str) -> None:
    """A TCP connection to host:port of a Ray address (host:port or ray://host:port) within
    connect_timeout(); other forms ("auto") are left to Ray."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    t = connect_timeout()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=t).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise VTError(f"cannot reach the Ray cluster at {address}: {why} within the {t:g} s timeout "
                      "(VTCORE_RAY_TIMEOUT); is the head node running and the port open?") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------- read: one task per dataset


def _block(kind: str, file: int, payload: Any, fraction: float = 0.0):
    """One Ray Data block of one row: what a read task sends down the pipeline."""
    import pyarrow as pa

    return pa.table({"kind": [kind], "file": [file], "fraction": [fraction],
                     "payload": [pickle.dumps(payload, protocol=5)]})


def read_blocks(file: int, source: DataSource, schema: str, skip_bad: bool, block_rows: int,
                max_row_bytes: int = MAX_ROW_BYTES) -> Iterator:
    """A dataset as blocks: ("rows", conversations) while it reads, then ("end", ReadStats) or
    ("error", the VTError that stopped the reader). Rows keep their index in their file."""
    stats = ReadStats()
    rows = read_dataset(source.path, schema=schema, domain=source.domain, skip_bad=skip_bad, stats=stats,
                        max_row_bytes=max_row_bytes)
    try:
        while batch := list(itertools.islice(rows, block_rows)):
            yield _block("rows", file, batch, stats.position.fraction if stats.position else 0.0)
    except VTError as e:   # the driver raises the first error in file order, as the local engine does
        yield _block("error", file, VTError(str(e)))
        return
    stats.position = None   # holds the open file: not sent
    yield _block("end", file, stats)


@functools.lru_cache(maxsize=1)
def _datasource_class():
    """The Ray Data source of a count's datasets (a class made on first use: Ray is optional)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class VTDatasets(Datasource):
        def __init__(self, sources: list[DataSource], schema: str, skip_bad: bool, block_rows: int,
                     max_row_bytes: int):
            super().__init__()
            self.sources, self.schema, self.skip_bad, self.block_rows = sources, schema, skip_bad, block_rows
            self.max_row_bytes = max_row_bytes

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(functools.partial(read_blocks, i, s, self.schema, self.skip_bad, self.block_rows,
                                               self.max_row_bytes), meta)
                    for i, s in enumerate(self.sources)]

        @property
        def supports_distributed_reads(self) -> bool:
            return False   # read where the driver runs: the files need not be on the workers

    return VTDatasets


# ---------------------------------------------------------------- map: a tokenizer per actor


class BlockCounter:
    """A Ray actor's work: the tokenizer, loaded once, turning blocks of conversations into
    per-domain int64[V] bincounts of the fit and the held-out rows."""

    def __init__(self, tok_bytes: bytes, mode: str, decided: MaskCheck, vocab_size: int):
        self.assistant = AssistantTokens(pickle.loads(tok_bytes), mode)
        self.assistant.adopt(decided)
        self.vocab_size = vocab_size

    def __call__(self, batch: dict) -> dict:
        payloads = [pickle.dumps(self.count(int(f), pickle.loads(p)), protocol=5) if k == "rows" else p
                    for k, f, p in zip(batch["kind"], batch["file"], batch["payload"])]
        return {"kind": batch["kind"], "file": batch["file"], "fraction": batch["fraction"],
                "payload": np.array(payloads, dtype=object)}

    def count(self, file: int, convs: list[Conversation]) -> dict:
        part, first, keys = Tally(self.vocab_size), {}, []
        for c in convs:
            keys.append((part.domain_index(c.domain), is_heldout(c.index)))
            first.setdefault(c.domain, (file, c.index))   # a block's rows are in file order
        before = self.assistant.stats.counters()
        plan = self.assistant.plan(convs)
        part.add(keys, self.assistant.collect(plan, self.assistant.encode_texts(plan)))
        after = self.assistant.stats.counters()
        # what travels is the nonzero part: kilobytes a block, where the dense arrays are 2 x 8V bytes
        return {"first": {d: first[d] for d in part.domains}, "rows": len(convs), "counts": part.nonzero(),
                "mask": {k: after[k] - before[k] for k in after}}


# ---------------------------------------------------------------- reduce: on the driver


def first_rows(sources: list[DataSource], schema: str, skip_bad: bool,
               max_row_bytes: int = MAX_ROW_BYTES) -> list[Conversation]:
    """The rows the local engine's self-check sees: the first SELF_CHECK_ROWS of the first
    dataset that has any (its first batch lies inside one file)."""
    for s in sources:
        rows = list(itertools.islice(read_dataset(s.path, schema=schema, domain=s.domain, skip_bad=skip_bad,
                                                  max_row_bytes=max_row_bytes), SELF_CHECK_ROWS))
        if rows:
            return rows
    return []


class _Reduce:
    """The driver's side: sums the blocks' tallies, keeps each file's ReadStats, and raises the
    error the local engine would have raised (the first in file order) once it is known."""

    def __init__(self, n_files: int, vocab_size: int, assistant: AssistantTokens):
        self.tally = Tally(vocab_size)
        self.tally.reads = [None] * n_files
        self.assistant = assistant
        self.first: dict[str, tuple[int, int]] = {}
        self.errors: dict[int, VTError] = {}
        self.fraction = [0.0] * n_files
        self.rows = 0

    def add(self, kind: str, file: int, fraction: float, payload: bytes) -> None:
        part = pickle.loads(payload)
        if kind == "rows":
            for name, held, ids, counts in part["counts"]:
                self.tally.merge(name, held, ids, counts)
            for name, at in part["first"].items():
                self.first[name] = min(self.first.get(name, at), at)
            self.assistant.stats.add(part["mask"])
            self.rows += part["rows"]
            self.fraction[file] = max(self.fraction[file], fraction)
        elif kind == "end":
            self.tally.reads[file] = part
            self.fraction[file] = 1.0
        else:
            self.errors[file] = part
        self.raise_known_error()

    def raise_known_error(self, finished: bool = False) -> None:
        if self.errors:
            f = min(self.errors)
            if finished or all(r is not None for r in self.tally.reads[:f]):
                raise self.errors[f]

    def result(self) -> Tally:
        self.raise_known_error(finished=True)
        missing = [i for i, r in enumerate(self.tally.reads) if r is None]
        if missing:
            raise VTError(f"Ray returned no end of dataset {missing[0] + 1}: counting incomplete")
        self.tally.reorder(sorted(self.first, key=self.first.get))
        return self.tally


def _raise_user_error(e: BaseException, ray) -> None:
    """A VTError raised inside a Ray task comes back wrapped: raise it as itself."""
    seen, x = set(), e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, VTError):
            raise VTError(str(x)) from e
        x = getattr(x, "cause", None) or x.__cause__
    if isinstance(e, ray.exceptions.RayError):
        raise VTError(f"counting on Ray failed: {_first_line(e)}") from e


def count_ray(sources: list[DataSource], datasets: list[dict], tok, assistant: AssistantTokens, vocab_size: int,
              schema: str, skip_bad: bool, progress: Callable[[float, str], None],
              should_stop: Callable[[], bool] | None, cfg: RayConfig | None = None,
              max_row_bytes: int = MAX_ROW_BYTES) -> Tally:
    """Count on Ray: the Tally count_local would return for the same inputs (see the module doc).
    In the main thread SIGTERM and SIGINT end it at any point (signals_end_the_count), and a Ray
    that connect() started or joined for it is left on the way out."""
    cfg = cfg or RayConfig()
    doing = ["reading the first rows"]
    with signals_end_the_count(lambda: doing[0]) as arm:
        try:
            return _count_ray(sources, datasets, tok, assistant, vocab_size, schema, skip_bad, progress,
                              should_stop, cfg, max_row_bytes, doing, arm)
        except Interrupted:
            doing[0] = "leaving Ray"
            _leave_ray()
            raise


def _leave_ray(wait_s: float = 5.0) -> None:
    """ray.shutdown() of a Ray that connect() started or joined (its actors end with the driver),
    given `wait_s` seconds: a signal's exit must not wait on Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not _joined or not ray.is_initialized():
        return
    t = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
    t.start()
    t.join(wait_s)
    if not t.is_alive():
        _joined.clear()


def _count_ray(sources: list[DataSource], datasets: list[dict], tok, assistant: AssistantTokens, vocab_size: int,
               schema: str, skip_bad: bool, progress: Callable[[float, str], None],
               should_stop: Callable[[], bool] | None, cfg: RayConfig, max_row_bytes: int,
               doing: list[str], arm: Callable[[], None]) -> Tally:
    ray = import_ray()
    # the self-check runs here, on the rows the local engine checks; every actor adopts its outcome
    decided = assistant.check(first_rows(sources, schema, skip_bad, max_row_bytes)
                              if assistant.mode == "template" else [])
    progress(0.0, "starting Ray")
    doing[0] = f"joining the Ray cluster at {cfg.address}" if cfg.address else "starting a local Ray"
    connect(cfg.address)
    arm()   # over the handlers Ray's core worker installed
    doing[0] = "starting the tokenizer actors on Ray"
    ray.data.DataContext.get_current().enable_progress_bars = False   # progress is ours: CLI bar, dashboard
    logging.getLogger("ray.data").setLevel(logging.ERROR)             # and so is what stderr says
    actors = cfg.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # one read task per dataset (Ray Data would add a step splitting its output for parallelism:
    # the blocks are the parallelism here). Reading is about 2% of the work: the read tasks
    # leave the CPUs to the actors, and one reader at a time feeds up to READER_FEEDS actors
    # (each reader is a worker process of its own to start)
    ds = ray.data.read_datasource(_datasource_class()(sources, schema, skip_bad, cfg.block_rows, max_row_bytes),
                                  override_num_blocks=len(sources), num_cpus=0,
                                  concurrency=min(len(sources), -(-actors // READER_FEEDS)))
    # each block a read task yields is one unit of work for the actors: Ray Data must not merge
    # them (by default it merges small blocks up to 128 MiB, which would leave one actor busy)
    ds.context.target_max_block_size = 1
    ds = ds.map_batches(BlockCounter, batch_size=None, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                        fn_constructor_kwargs={"tok_bytes": pickle.dumps(tok), "mode": assistant.mode,
                                               "decided": decided, "vocab_size": vocab_size})
    # a dataset of fewer blocks than actors leaves some idle: Ray Data's advice about it is not for users
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
    reduce = _Reduce(len(sources), vocab_size, assistant)
    total_bytes = sum(d["bytes"] for d in datasets) or 1
    progress(0.0, f"Ray: {actors} tokenizer actors starting")
    blocks = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for batch in blocks:
            for kind, file, fraction, payload in zip(batch["kind"], batch["file"], batch["fraction"], batch["payload"]):
                reduce.add(str(kind), int(file), float(fraction), payload)
            if should_stop is not None and should_stop():
                raise VTError("counting stopped")
            done = sum(d["bytes"] * f for d, f in zip(datasets, reduce.fraction)) / total_bytes
            progress(min(done, 0.999), f"{reduce.rows:,} rows · Ray, {actors} actors")
            doing[0] = f"counting on Ray ({reduce.rows:,} rows so far)"
    except VTError:
        raise
    except Exception as e:
        _raise_user_error(e, ray)
        raise
    finally:
        blocks.close()   # stops the pipeline: its actors and read tasks end with it
    return reduce.result()
