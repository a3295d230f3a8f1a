"""The dashboard's background work: a registry of named workers that a page finds again after
a browser refresh, and the counting and benchmark jobs the pages start (vtcore.jobs.Job each).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from vtapp import state
from vtcore.errors import VTError
from vtcore.jobs import Job, Progress, ShouldStop, run_child
from vtcore.workspace import repo_root


class Registry:
    """Named long-lived workers (Jobs, StudyRunners): one per name while it runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get(self, name: str) -> Any | None:
        with self._lock:
            return self._items.get(name)

    def put(self, name: str, worker: Any, replace_running: bool = False) -> Any:
        """Store a worker under `name`. A running worker already there is kept and this one
        refused (VTError), unless replace_running: then the old one is asked to stop."""
        with self._lock:
            old = self._items.get(name)
            if old is not None and getattr(old, "running", False) and old is not worker:
                if not replace_running:
                    raise VTError(f"{name!r} is already running; stop it first")
                old.stop()
            self._items[name] = worker
        return worker

    def start(self, name: str, job: Job) -> Job:
        """Register and start a job (refused while another one runs under the same name)."""
        self.put(name, job)
        return job.start()

    def pop(self, name: str) -> Any | None:
        with self._lock:
            return self._items.pop(name, None)

    def running(self) -> list[str]:
        with self._lock:
            return [n for n, w in self._items.items() if getattr(w, "running", False)]

    def failed(self) -> dict[str, str]:
        """name -> one-line error of each worker whose last run failed (until it is replaced)."""
        with self._lock:
            return {n: str(getattr(w, "error", None) or "failed") for n, w in self._items.items()
                    if getattr(w, "state", None) == "error" and not getattr(w, "running", False)}


# ---------------------------------------------------------------------------------------------
# The dashboard's jobs: plain functions over vtcore, each a Job ready to start


def counting_job(paths: list[str], tokenizer: str | None = None, mask: str = "template", schema: str = "auto",
                 skip_bad: bool = False, workspace: str | None = None, engine: str = "local",
                 ray_address: str | None = None, generate: dict | None = None) -> Job:
    """Count a dataset and make the result the workspace's current counts (vtapp.state), so
    the pages find it even if the browser was closed while it ran. The result is count_dataset's
    summary dict. `engine` "ray" counts on Ray Data (a local Ray, or the cluster at `ray_address`).
    `generate` ({"target", "max_new_tokens", "rows"}): count the target's own responses to the
    dataset's prompts instead (vtcore.gencount), with the target's tokenizer."""

    before = state.load_state(workspace).counts_path

    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        from vtcore.counts import count_dataset
        from vtcore.raycount import RayConfig

        # an upload's domain is the name the user gave it, not the stored name's hash prefix
        sources = [(str(p), state.upload_domain(p)) for p in paths]
        if generate is not None:
            from vtcore.gencount import count_and_compare

            _, info = count_and_compare(sources, generate.get("target"), mask=mask, schema=schema,
                                        skip_bad=skip_bad, progress=progress, should_stop=should_stop,
                                        workspace=workspace, max_new_tokens=int(generate["max_new_tokens"]),
                                        rows=int(generate["rows"]))
        else:
            _, info = count_dataset(sources, tokenizer=tokenizer, mask=mask, schema=schema, skip_bad=skip_bad,
                                    progress=progress, should_stop=should_stop, workspace=workspace, engine=engine,
                                    ray=RayConfig(address=ray_address or None))
        st = state.load_state(workspace)
        changed = st.counts_path != info["counts_path"]
        # generated counts are in the target's tokenizer: the pages show its tokens
        st.counts_path, st.datasets = info["counts_path"], [str(p) for p in paths]
        st.tokenizer = info["tokenizer"] if generate is not None else tokenizer
        st.mask, st.skip_bad = (mask if generate is None else "generate"), skip_bad
        # the Data page opens on what is now counted (a count from the home page is of the samples)
        samples = repo_root() / "samples"
        st.data_source = "Bundled sample" if all(Path(p).parent == samples for p in paths) else "Upload"
        if changed:   # a selection or study made for other counts does not carry over
            st.selected, st.study = None, None
        state.save_state(st, workspace)
        return info

    kept = ("nothing changed: the current counts are still " + (Path(before).name if before else "none yet")
            + "; uploaded files stay in the workspace")
    return Job(fn, name="count", kept=kept, meta={"paths": [str(p) for p in paths], "tokenizer": tokenizer,
                                                   "mask": mask, "engine": engine, "generate": generate})


def bench_job(cfg) -> Job:
    """`python -m vtcore bench` for this BenchConfig in a child process (vtcore.jobs.run_child):
    what the CLI measures, untouched by the server's reruns. The child appends its result to the
    results store itself (cfg.save); its pid is in meta["pid"] while it runs."""
    from vtcore.benchtypes import bench_argv

    meta = {"target": cfg.target, "draft": cfg.draft, "pid": None}

    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        return run_child(bench_argv(cfg), progress, should_stop, on_start=lambda pid: meta.update(pid=pid))

    return Job(fn, name="bench", kept="earlier benchmark runs stay in bench/results.jsonl; this run saved nothing",
               meta=meta)


def profile_job(draft: str, device: str = "cpu", threads: int | None = 1, context: int = 1024) -> Job:
    """`python -m vtcore profile` in a child process: the draft's step latency at a grid of k,
    saved under <workspace>/profiles where the Frontier page finds it."""
    args = ["profile", "--draft", draft, "--device", device, "--context", str(context)]
    args += ["--threads", str(threads)] if threads else []

    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        return run_child(args, progress, should_stop)

    return Job(fn, name="profile", kept="earlier profiles stay in the workspace; this run saved nothing",
               meta={"draft": draft, "device": device})


def acceptance_job(req, workspace: str | None = None) -> Job:
    """Measure acceptance for the current counts (vtapp.replays.measure): the replay of req's full
    draft over the target's continuation of req.data's held-out rows, written to the workspace
    and tied to the counts it was made for. Runs in this process like counting (models load once;
    the replay is one pass, not a timing)."""
    from vtapp import replays

    st = state.load_state(workspace)
    if not st.counts_path:
        raise VTError("nothing counted yet: count a dataset first")
    counts_path, mask = st.counts_path, st.mask
    datasets = [(str(p), state.upload_domain(p)) for p in st.datasets]

    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        return replays.measure(req, counts_path, datasets, mask, progress, should_stop, workspace)

    return Job(fn, name="acceptance", kept="earlier acceptance files stay in the workspace; this run wrote none",
               meta={"request": req, "counts_path": counts_path})
