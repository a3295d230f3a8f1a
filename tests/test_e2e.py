"""The dashboard end to end in a real browser: `streamlit run app.py` on a free port with a fresh
workspace, driven by Playwright + Debian Chromium.

Walks the pages as a user does: the home page on a fresh install, a real file upload and count,
"Start with the sample data", the coverage slider moved with the keyboard, a TPE study whose
points appear on the frontier and a click that selects one, export downloads validated with
vtcore.validate, and a short CPU benchmark. Screenshots go to a temp folder, and into
docs/screenshots/ when VTCORE_SCREENSHOTS=1.

Skipped (with the reason) when /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from apphelpers import ROOT, code_rows
from drafthelpers import tiny_pair
from tests.conftest import share_session_caches

CHROMIUM = os.environ.get("VTCORE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = ROOT / "docs" / "screenshots"

pytestmark = [pytest.mark.e2e]
if not Path(CHROMIUM).is_file():
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"))
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:   # pragma: no cover - depends on the environment
    pytestmark.append(pytest.mark.skip(reason="the playwright package is not installed (pip install playwright)"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ws = share_session_caches(tmp_path_factory.mktemp("e2e-workspace"))
    log = ws.parent / "streamlit.log"
    port = _free_port()
    env = {**os.environ, "VTCORE_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - t0 > 60:
                raise RuntimeError(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"url": url, "ws": ws, "log": log, "shots": tmp_path_factory.mktemp("screenshots")}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)   # assertions wait as long as actions: a busy CI machine renders slowly
    yield pg
    ctx.close()


# ---------------------------------------------------------------- helpers

def idle(pg, timeout: float = 60.0) -> None:
    """Wait until the script is not running and no spinner shows."""
    time.sleep(0.3)
    t0 = time.time()
    while time.time() - t0 < timeout:
        state = pg.evaluate("() => document.querySelector('[data-testid=\"stApp\"]')"
                            "?.getAttribute('data-test-script-state')")
        if state == "notRunning" and pg.locator("[data-testid='stSpinner']").count() == 0:
            return
        time.sleep(0.2)
    raise TimeoutError("the app stayed busy")


def visit(pg, server, path: str = "") -> None:
    pg.goto(f"{server['url']}/{path}")
    pg.wait_for_selector("[data-testid='stApp']")
    idle(pg)


def metric_value(pg, label: str):
    """The value element of the metric labelled exactly `label`."""
    m = pg.locator("[data-testid='stMetric']").filter(has=pg.get_by_text(label, exact=True))
    return m.locator("[data-testid='stMetricValue']").first


def metric(pg, label: str) -> str:
    return metric_value(pg, label).inner_text().strip()


def as_int(text: str) -> int:
    return int(text.replace(",", ""))


def eventually(check, timeout: float = 15.0) -> None:
    t0 = time.time()
    while not check():
        assert time.time() - t0 < timeout, "condition not met in time"
        time.sleep(0.2)


def saved_state(server) -> dict:
    return json.loads((server["ws"] / "state.json").read_text())


def shoot(pg, server, name: str) -> Path:
    """A screenshot of the whole page: the viewport is stretched to the content's height first
    (Streamlit scrolls inside its own container, so a 'full page' shot would be cut)."""
    h = pg.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]')?.scrollHeight || 1100")
    size = pg.viewport_size
    pg.set_viewport_size({"width": size["width"], "height": min(max(int(h) + 80, 900), 3200)})
    idle(pg)
    time.sleep(1.0)   # plotly redraws at the new size
    path = server["shots"] / f"{name}.png"
    pg.screenshot(path=str(path))
    pg.set_viewport_size(size)
    if os.environ.get("VTCORE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
    return path


def plot_traces(pg, key: str = "frontier_plot") -> list[dict]:
    """Name and point count of every trace of the Plotly chart with this widget key (once drawn)."""
    pg.wait_for_function("(key) => document.querySelector(`.st-key-${key} .js-plotly-plot`)?.data?.length > 0", arg=key)
    return pg.evaluate("""(key) => {
        const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
        return el ? el.data.map(t => ({name: t.name, n: (t.x || []).length})) : [];
    }""", key)


# ---------------------------------------------------------------- the walk (in file order, one workspace)

def test_home_on_a_fresh_install(page, server):
    visit(page, server)
    expect(page.get_by_role("heading", name="Vocab Trim Studio")).to_be_visible()
    expect(page.get_by_text("none counted yet")).to_be_visible()
    for label in ("Data", "Coverage", "Frontier", "Export", "Benchmark"):
        expect(page.locator("[data-testid='stSidebar']").get_by_role("link", name=label)).to_be_visible()
    shoot(page, server, "home")


def test_upload_a_file_and_count_it(page, server, tmp_path):
    visit(page, server, "Data")
    page.get_by_text("Upload", exact=True).click()
    idle(page)
    f = tmp_path / "my-domain.jsonl"
    f.write_bytes(code_rows(20))
    page.locator("[data-testid='stFileUploader'] input[type=file]").set_input_files(str(f))
    expect(page.get_by_text("my-domain.jsonl").first).to_be_visible()
    idle(page)
    page.get_by_role("button", name="Count tokens").click()
    expect(metric_value(page, "Rows")).to_be_visible(timeout=60_000)
    idle(page)
    assert metric(page, "Rows") == "20"
    st = saved_state(server)
    assert st["datasets"][0].endswith("-my-domain.jsonl") and Path(st["counts_path"]).is_file()
    expect(page.get_by_text("Top tokens")).to_be_visible()
    shoot(page, server, "data")


def test_start_with_the_sample_leads_to_coverage(page, server):
    visit(page, server)
    page.get_by_role("button", name="Start with the sample data").click()
    page.wait_for_url("**/Coverage", timeout=60_000)
    idle(page)
    assert saved_state(server)["datasets"][0].endswith("samples/code.jsonl")
    assert as_int(metric(page, "k needed")) > 0


def test_two_samples_give_out_of_domain_coverage(page, server):
    from vtcore.countsfile import load_counts
    from vtcore.coverage import k_for_coverage

    visit(page, server, "Data")
    page.locator(".st-key-samples input").click()
    page.keyboard.type("chat")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    idle(page)
    page.get_by_role("button", name="Count tokens").click()
    expect(metric_value(page, "Rows")).to_have_text("4,182", timeout=120_000)   # 164 code + 4,018 chat rows
    visit(page, server, "Coverage")
    st = saved_state(server)
    cf = load_counts(st["counts_path"])
    assert cf.domain_names == ["code", "chat"]
    expect(metric_value(page, "k needed out of domain")).to_have_text(
        f"{k_for_coverage(cf.ood_curve('code', 'chat'), st['min_coverage']):,}")
    assert "ood code→chat" in [t["name"] for t in plot_traces(page, "coverage_plot")]


def test_coverage_slider_moves_k(page, server):
    from vtcore.countsfile import load_counts
    from vtcore.coverage import k_for_coverage

    visit(page, server, "Coverage")
    curve = load_counts(saved_state(server)["counts_path"]).coverage().curve("heldout")
    thumb = page.locator("[data-testid='stSlider'] input[type=range]").first   # the thumb's keyboard target
    idle(page)
    before = float(thumb.input_value())
    assert before == pytest.approx(saved_state(server)["min_coverage"])   # the saved constraint, shown
    k_before = as_int(metric(page, "k needed"))
    assert k_before == k_for_coverage(curve, before)
    thumb.focus()
    for i in range(1, 13):            # steps of 0.001, each shown and rerun before the next
        page.keyboard.press("ArrowRight")
        eventually(lambda: float(thumb.input_value()) == pytest.approx(before + 0.001 * i, abs=1e-9))
        time.sleep(0.4)               # the slider sends its value after a short debounce
        idle(page)
    after = float(thumb.input_value())
    assert after == pytest.approx(before + 0.012, abs=1e-9)
    eventually(lambda: saved_state(server)["min_coverage"] == pytest.approx(after))   # persisted
    expect(metric_value(page, "k needed")).to_have_text(f"{k_for_coverage(curve, after):,}")
    assert as_int(metric(page, "k needed")) > k_before
    # the k line on the plot moved with it
    shapes = page.evaluate("() => document.querySelector('.st-key-coverage_plot .js-plotly-plot').layout.shapes"
                           ".map(s => s.x0)")
    assert as_int(metric(page, "k needed")) in [round(x) for x in shapes if x is not None]
    page.keyboard.press("ArrowLeft")
    idle(page)
    shoot(page, server, "coverage")


def test_tpe_fills_the_frontier_and_a_click_selects_a_point(page, server):
    visit(page, server, "Frontier")
    assert [t["name"] for t in plot_traces(page)][:1] == ["exact frontier"]
    page.get_by_role("button", name="Run TPE").click()
    page.wait_for_url("**/Frontier?study=*")
    # the points arrive while the study runs, then the page settles with all of them
    expect(page.locator("[data-testid='stCaptionContainer']").filter(has_text="(finished)")).to_be_visible(
        timeout=120_000)
    idle(page)
    traces = {t["name"]: t["n"] for t in plot_traces(page)}
    n_trials = saved_state(server)["trials"]
    assert traces.get("trials", 0) + traces.get("infeasible trials", 0) == n_trials, traces
    assert traces.get("best trial") == 1 and traces.get("exact optimum") == 1
    # click the best trial (the star): it becomes the selected point
    from vtcore import studies

    name = saved_state(server)["study"]
    _, rows = studies.load_study_rows(server["ws"] / "studies" / f"{name}.journal")
    best = max((r for r in rows if r["state"] == "COMPLETE" and r["feasible"]),
               key=lambda r: (r["utility"], -r["number"]))
    names = [t["name"] for t in plot_traces(page)]
    layer = page.locator(".st-key-frontier_plot .js-plotly-plot .scatterlayer .trace").nth(names.index("best trial"))
    layer.locator(".points path").first.click(force=True)
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Selected: k =")).to_be_visible()
    eventually(lambda: (saved_state(server).get("selected") or {}).get("source") == "trial")
    sel = saved_state(server)["selected"]
    assert (sel["study"], sel["trial"], sel["k"]) == (name, best["number"], best["k"])
    # a refresh keeps the study (URL) and the selection (workspace)
    page.reload()
    page.wait_for_selector("[data-testid='stApp']")
    idle(page)
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Selected: k =")).to_be_visible()
    assert "selected" in [t["name"] for t in plot_traces(page)]
    shoot(page, server, "frontier")


def test_export_downloads_validate(page, server, tmp_path):
    from vtcore.validate import Expect, validate_path

    sel = saved_state(server)["selected"]
    visit(page, server, "Export")
    assert as_int(metric(page, "kept tokens k")) == sel["k"]
    for name, fmt in ((f"token_map_sglang_k{sel['k']}.pt", "sglang"),
                      (f"vocab_mapping_eagle3_k{sel['k']}.pt", "eagle3"),
                      (f"token_ids_k{sel['k']}.json", "json")):
        with page.expect_download() as dl:
            page.get_by_role("button", name=name).click()
        path = tmp_path / name
        dl.value.save_as(str(path))
        report = validate_path(path, Expect(vocab_size=151936, n=sel["k"]))
        assert report.ok and report.format == fmt and report.n == sel["k"], report.as_dict()
    shoot(page, server, "export")


def _default_pair_for_screenshots() -> bool:
    """README screenshots show the bundled pair (SmolLM2 and its EAGLE-3 head, real numbers) when its
    head is there; the test otherwise uses a tiny random pair, which runs in seconds."""
    from vtcore.eagle3 import WEIGHTS_FILE, default_eagle3_dir

    return os.environ.get("VTCORE_SCREENSHOTS") == "1" and (default_eagle3_dir() / WEIGHTS_FILE).is_file()


def test_short_cpu_benchmark(page, server, tmp_path):
    if _default_pair_for_screenshots():
        target, settings = "default", ()   # the page's defaults: what a first click runs
    else:
        tdir, ddir, _ = tiny_pair(tmp_path)
        target = str(tdir)
        settings = (("Target model", str(tdir)), ("Draft model", str(ddir)), ("prompts", "1"), ("new tokens", "8"),
                    ("repeats", "1"), ("γ (0: from the search)", "4"))
    visit(page, server, "Benchmark")
    expect(page.get_by_text("Device:")).to_be_visible()
    for label, value in settings:
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        idle(page)
    page.get_by_role("button", name="Benchmark", exact=True).click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible(timeout=300_000)
    idle(page)
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    assert metric(page, "trimmed draft vs target alone").endswith("×")
    for key in ("b_tps", "b_acc", "b_split", "b_speed"):   # the four charts (drawn when scrolled to)
        page.locator(f".st-key-{key}").scroll_into_view_if_needed()
        assert plot_traces(page, key), key
    from vtcore.bench import load_results

    runs = load_results(server["ws"])
    assert len(runs) == 1 and runs[0].identical_outputs is True
    assert runs[0].target == (target if target != "default" else runs[0].target)
    shoot(page, server, "benchmark")
