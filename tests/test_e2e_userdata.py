"""The user's own data, start to finish, in a real browser: two uploads (a JSONL and a semicolon
CSV whose columns are mapped on the page) counted as two domains, the coverage constraint moved on
Coverage and kept on the Frontier, after a reload and on Coverage again, a point selected, and the
Export and Benchmark pages following the same dataset, constraint and k.

Shares the browser and server fixtures of test_e2e.py (a server and workspace of its own)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from apphelpers import CODE, code_rows
from test_e2e import (as_int, browser, eventually, expect, idle, metric, metric_value, page,  # noqa: F401
                      plot_traces, pytestmark, saved_state, server, shoot, visit)


def qa_csv(first: int, n: int) -> bytes:
    """HumanEval rows first..first+n as a semicolon question;answer table (names no schema knows)."""
    import pandas as pd

    rows = [json.loads(line) for line in CODE.read_text(encoding="utf-8").splitlines()[first:first + n]]
    return pd.DataFrame({"question": [r["messages"][0]["content"] for r in rows],
                         "answer": [r["messages"][-1]["content"] for r in rows]}).to_csv(index=False, sep=";").encode()


def context_line(pg):
    """The line at the top of a page: dataset, coverage constraint, selected point."""
    return pg.locator("[data-testid='stCaptionContainer']").filter(has_text="Dataset:").first


def constraint(pg, key: str) -> float:
    return float(pg.locator(f".st-key-{key} input[type=range]").input_value())


def test_own_data_every_page_follows_one_constraint_dataset_and_selection(page, server, tmp_path):
    from vtcore.countsfile import load_counts
    from vtcore.coverage import k_for_coverage

    # ---- Data: two uploads, the CSV's columns mapped, counted as two domains
    visit(page, server, "Data")
    page.get_by_text("Upload", exact=True).click()
    idle(page)
    (tmp_path / "mycode.jsonl").write_bytes(code_rows(40))
    (tmp_path / "pydocs.csv").write_bytes(qa_csv(40, 40))
    page.locator("[data-testid='stFileUploader'] input[type=file]").set_input_files(
        [str(tmp_path / "mycode.jsonl"), str(tmp_path / "pydocs.csv")])
    expect(page.get_by_role("button", name="Use these columns")).to_be_visible()
    idle(page)
    page.get_by_role("button", name="Use these columns").click()
    idle(page)
    eventually(lambda: sorted(Path(p).name.split("-", 1)[1] for p in saved_state(server)["uploads"])
               == ["mycode.jsonl", "pydocs.jsonl"])
    page.get_by_role("button", name="Count tokens").click()
    expect(metric_value(page, "Rows")).to_have_text("80", timeout=60_000)
    idle(page)
    st = saved_state(server)
    cf = load_counts(st["counts_path"])
    assert sorted(cf.domain_names) == ["code", "pydocs"]
    curve = cf.coverage().curve("heldout")

    # ---- Coverage: the constraint moved with the keyboard
    visit(page, server, "Coverage")
    expect(context_line(page)).to_contain_text("mycode.jsonl, pydocs.jsonl")
    thumb = page.locator(".st-key-cov_min_coverage input[type=range]")
    assert float(thumb.input_value()) == 0.95
    thumb.focus()
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
        time.sleep(0.4)   # the slider sends its value after a short debounce
        idle(page)
    c = 0.945
    assert constraint(page, "cov_min_coverage") == pytest.approx(c)
    eventually(lambda: saved_state(server)["min_coverage"] == pytest.approx(c))
    expect(metric_value(page, "k needed")).to_have_text(f"{k_for_coverage(curve, c):,}")
    shoot(page, server, "userdata-coverage")

    # ---- Frontier (by the sidebar, as a user goes): the same constraint, the optimum meets it
    page.locator("[data-testid='stSidebar']").get_by_role("link", name="Frontier").click()
    page.wait_for_url("**/Frontier")
    idle(page)
    assert constraint(page, "front_min_coverage") == pytest.approx(c)
    assert float(metric(page, "coverage C")) >= c
    expect(context_line(page)).to_contain_text("C(k) ≥ 0.945")
    # select the exact optimum (the diamond)
    names = [t["name"] for t in plot_traces(page)]
    layer = page.locator(".st-key-frontier_plot .js-plotly-plot .scatterlayer .trace").nth(names.index("exact optimum"))
    layer.locator(".points path").first.click(force=True)
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Selected: k =")).to_be_visible()
    eventually(lambda: (saved_state(server).get("selected") or {}).get("source") == "exact")
    k_sel = saved_state(server)["selected"]["k"]
    assert k_sel == as_int(metric(page, "exact best k"))
    # a reload keeps it, and Coverage after the reload too
    page.reload()
    page.wait_for_selector("[data-testid='stApp']")
    idle(page)
    assert constraint(page, "front_min_coverage") == pytest.approx(c)
    page.locator("[data-testid='stSidebar']").get_by_role("link", name="Coverage").click()
    page.wait_for_url("**/Coverage")
    idle(page)
    assert constraint(page, "cov_min_coverage") == pytest.approx(c)
    expect(metric_value(page, "k needed")).to_have_text(f"{k_for_coverage(curve, c):,}")

    # ---- Export: the selected k of this dataset
    page.locator("[data-testid='stSidebar']").get_by_role("link", name="Export").click()
    page.wait_for_url("**/Export")
    idle(page)
    assert as_int(metric(page, "kept tokens k")) == k_sel
    expect(context_line(page)).to_contain_text(f"k = {k_sel:,}")

    # ---- Benchmark: prompts of the counted dataset, the same constraint, and why its k is its own
    page.locator("[data-testid='stSidebar']").get_by_role("link", name="Benchmark").click()
    page.wait_for_url("**/Benchmark")
    idle(page)
    expect(page.get_by_role("combobox", name="Prompts: held-out rows of")).to_have_value(
        "mycode.jsonl (the counted dataset)")
    assert constraint(page, "bench_min_cov") == pytest.approx(c)
    expect(page.get_by_text("its k is its own", exact=False)).to_contain_text(f"k = {k_sel:,}")
    sidebar = page.locator("[data-testid='stSidebar']")
    assert "Running:" not in sidebar.inner_text()
    shoot(page, server, "userdata-benchmark")
