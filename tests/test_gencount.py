"""Counting the target's own responses (count --generate): a tiny random-weight Qwen3 target with the
bundled tokenizer answers the first rows of the code sample; its counts are the response tokens of
each row, split by the row's held-out flag, cached under a key of the target and the settings."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest

from vtcore import gencount
from vtcore.split import is_heldout

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ROWS, NEW = 10, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_torch_thread):
    from drafthelpers import tiny_pair

    root = tmp_path_factory.mktemp("gencount")
    tdir, _, _ = tiny_pair(root)
    data = root / "code12.jsonl"
    data.write_text("".join((SAMPLES / "code.jsonl").read_text().splitlines(keepends=True)[:12]))
    ws = root / "ws"
    cf, info = gencount.count_and_compare([str(data)], str(tdir), max_new_tokens=NEW, rows=ROWS, device="cpu",
                                          workspace=str(ws))
    return tdir, data, ws, cf, info


def test_generated_counts_are_the_responses_tokens_split_by_row(setup):
    """A hand count: the tiny target's greedy tokens, generated here afresh (not from the cache), cut
    after the first EOS, bincounted into the fit or held-out split of their row."""
    import torch

    from vtcore import models, speculative
    from vtcore.bench import eos_ids, render_prompt
    from vtcore.data import read_dataset

    tdir, data, _, cf, info = setup
    target, tok = models.load_model(tdir, "cpu"), models.load_tokenizer_from(tdir)
    eos = eos_ids(target, tok)
    V = len(tok)
    fit, held = np.zeros(V, dtype=np.int64), np.zeros(V, dtype=np.int64)
    rows = list(read_dataset(data))[:ROWS]
    for conv in rows:
        ids = render_prompt(tok, [m for m in conv.messages if m["role"] != "assistant"])
        with torch.inference_mode():
            out = speculative.target_generate(target, ids, speculative.SpecConfig(gamma=1, max_new_tokens=NEW)).tokens
        cut = next((i + 1 for i, t in enumerate(out) if t in eos), len(out))
        for t in out[:cut]:
            if t < V:
                (held if is_heldout(conv.index) else fit)[t] += 1
    assert np.array_equal(cf.counts_fit, fit) and np.array_equal(cf.counts_heldout, held)
    assert np.array_equal(cf.counts, fit + held) and cf.counts.sum() > 0
    assert held.sum() > 0 and fit.sum() > 0   # rows 4 and 9 are held out, the rest fit
    m = cf.manifest
    assert m["mode"] == "generate" and m["generate"]["max_new_tokens"] == NEW and m["generate"]["rows"] == ROWS
    assert m["rows"] == ROWS and info["generate"]["heldout_prompts"] == 2 and info["mode"] == "generate"


def test_the_cache_is_hit_again_and_missed_for_other_settings(setup):
    from vtcore.counts import count_dataset

    tdir, data, ws, cf, info = setup
    again, info2, _ = gencount.count_generated([str(data)], str(tdir), max_new_tokens=NEW, rows=ROWS, device="cpu",
                                               workspace=str(ws))
    assert info2["cache_hit"] and not info["cache_hit"] and info2["counts_path"] == info["counts_path"]
    assert np.array_equal(again.counts_heldout, cf.counts_heldout)
    longer, info3, _ = gencount.count_generated([str(data)], str(tdir), max_new_tokens=NEW + 2, rows=ROWS,
                                                device="cpu", workspace=str(ws))
    assert not info3["cache_hit"] and info3["counts_path"] != info["counts_path"]
    assert longer.counts.sum() >= cf.counts.sum()
    fewer, info4, _ = gencount.count_generated([str(data)], str(tdir), max_new_tokens=NEW, rows=5, device="cpu",
                                               workspace=str(ws))
    assert not info4["cache_hit"] and fewer.manifest["rows"] == 5
    # the dataset's own counts, same data and tokenizer, are another entry
    _, dinfo = count_dataset([str(data)], tokenizer=str(tdir), workspace=str(ws))
    assert dinfo["cache_hit"] and dinfo["mode"] == "dataset" and dinfo["counts_path"] != info["counts_path"]


def test_the_comparison_is_the_held_out_coverage_of_both_rankings(setup):
    from vtcore.counts import count_dataset

    tdir, data, ws, cf, info = setup
    c = info["compare"]
    data_cf, _ = count_dataset([str(data)], tokenizer=str(tdir), workspace=str(ws))
    curve = data_cf.coverage().heldout   # the dataset's own held-out curve: ranked on its fit rows
    for k in c["ks"]:
        assert c["on_dataset_heldout"]["dataset_ranking"][str(k)] == round(float(curve[k]), 4)
        assert 0 < c["on_dataset_heldout"]["generated_ranking"][str(k)] <= 1
    assert c["rank_tokens"] == {"generated_ranking": int(cf.counts_fit.sum()),
                                "dataset_ranking": int(data_cf.counts_fit.sum())}
    gen_curve = cf.coverage().heldout    # the generated counts' own held-out curve
    assert c["on_generated_heldout"]["generated_ranking"]["256"] == round(float(gen_curve[256]), 4)


def test_cli_flags_and_an_offline_hub_id_are_clear(tmp_path, capsys, monkeypatch):
    from vtcore.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = str(SAMPLES / "code.jsonl")
    base = ["count", "--data", data, "--workspace", str(tmp_path)]
    assert main(base + ["--generate", "--target", "no-such-org/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model" in err and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--target", "no-such-org/no-such-model"]) == 2
    assert "--target needs --generate" in capsys.readouterr().err
    assert main(base + ["--generate", "--tokenizer", "x"]) == 2
    assert "--tokenizer does not apply" in capsys.readouterr().err
    assert main(base + ["--generate", "--generate-rows", "0"]) == 2
    assert "--generate-rows" in capsys.readouterr().err


def test_prompt_turns_stop_at_the_last_assistant_turn():
    u, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}
    assert gencount.prompt_turns([u, a, u, a]) == [u, a, u]
    assert gencount.prompt_turns([u]) == [u]
    assert gencount.prompt_turns([{"role": "system", "content": "s"}, a]) == []
    assert json.dumps(gencount.prompt_turns([])) == "[]"


def test_the_dashboards_counting_job_counts_the_responses_and_makes_them_current(setup):
    from vtapp import state
    from vtapp.jobs import counting_job

    tdir, data, ws, cf, info = setup
    job = counting_job([str(data)], workspace=str(ws),
                       generate={"target": str(tdir), "max_new_tokens": NEW, "rows": ROWS}).start()
    job.join(120)
    assert job.state == "finished", job.error
    assert job.result["cache_hit"] and job.result["counts_path"] == info["counts_path"]
    st = state.load_state(str(ws))
    assert st.counts_path == info["counts_path"] and st.mask == "generate" and st.tokenizer == info["tokenizer"] == cf.manifest["tokenizer"]
