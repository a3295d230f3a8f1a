"""Counts: equal to an independent recount, cached by the whole manifest, split and saved right."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES
from vtcore.countsfile import load_counts
from vtcore.counts import KEY_FIELDS, count_dataset
from vtcore.errors import VTError
from vtcore.split import is_heldout


def qwen3_template_with_generation_tags(template: str) -> str:
    """Qwen3's template with {% generation %} around each assistant content and its <|im_end|>, so
    that transformers itself (return_assistant_tokens_mask) marks the tokens to count."""
    head, sep, tail = template.partition('{%- elif message.role == "tool" %}')
    think = "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    plain = "{{- '<|im_start|>' + message.role + '\\n' + content }}"
    close = "{{- '<|im_end|>\\n' }}"
    assert think in head and plain in head and close in head
    head = head.replace(think, "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') "
                               "+ '\\n</think>\\n\\n' }}{% generation %}{{- content.lstrip('\\n') }}{% endgeneration %}")
    head = head.replace(plain, "{{- '<|im_start|>' + message.role + '\\n' }}{% generation %}{{- content }}{% endgeneration %}")
    head = head.replace(close, "{% generation %}{{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}")
    return head + sep + tail


def brute_force_counts(tok, rows: list[dict]) -> Counter:
    tagged = qwen3_template_with_generation_tags(tok.chat_template)
    counts = Counter()
    for row in rows:
        msgs = row["messages"]
        assert tok.apply_chat_template(msgs, tokenize=False, chat_template=tagged) == \
            tok.apply_chat_template(msgs, tokenize=False)
        out = tok.apply_chat_template(msgs, chat_template=tagged, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        counts.update(i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m)
    return counts


def test_counts_equal_transformers_assistant_mask_recount(tmp_path, qwen_tok, workspace):
    code = [json.loads(l) for l in open(SAMPLES / "code.jsonl")]
    with gzip.open(SAMPLES / "chat.jsonl.gz", "rt") as f:
        chat = [json.loads(l) for l in itertools.islice(f, 300)]
    rows = code + chat
    path = tmp_path / "sample.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cf, info = count_dataset([str(path)], tokenizer=qwen_tok)
    expected = brute_force_counts(qwen_tok, rows)
    got = {i: int(c) for i, c in enumerate(cf.counts) if c}
    assert got == dict(expected)
    assert info["assistant_tokens"] == sum(expected.values()) and info["rows"] == len(rows)


def test_counts_file_contract(tmp_path, qwen_tok, workspace):
    out = tmp_path / "code.npz"
    cf, info = count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok, out=out)
    with np.load(out, allow_pickle=False) as z:
        assert z["counts"].dtype == np.int64 and z["counts"].shape == (len(qwen_tok),)
        manifest = json.loads(str(z["manifest"]))
    for field in ("dataset_sha256", "tokenizer", "tokenizer_sha256", "chat_template_sha256", "mask_mode",
                  "rows", "assistant_tokens", "vtcore_version"):
        assert field in manifest, field
    assert manifest["tokenizer_sha256"] == "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
    assert manifest["rows"] == 164 and manifest["assistant_tokens"] == int(cf.counts.sum())
    again = load_counts(out)
    assert np.array_equal(again.counts, cf.counts) and again.manifest == cf.manifest
    assert info["counts_path"] == str(out)


def test_heldout_split_is_every_fifth_row(tmp_path, qwen_tok, workspace):
    rows = [{"prompt": "p", "response": f"answer{i}"} for i in range(10)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cf, _ = count_dataset([str(path)], tokenizer=qwen_tok)
    held_words = {qwen_tok.decode([i]) for i in np.nonzero(cf.counts_heldout)[0]}
    for i in range(10):
        word_ids = qwen_tok.encode(f"answer{i}", add_special_tokens=False)
        last = qwen_tok.decode([word_ids[-1]])
        assert (last in held_words) == is_heldout(i), i
    assert np.array_equal(cf.counts_fit + cf.counts_heldout, cf.counts)


def test_domains_split_counts(qwen_tok, workspace_shared_counts):
    cf, info = count_dataset([str(SAMPLES / "code.jsonl"), str(SAMPLES / "chat.jsonl.gz")], tokenizer=qwen_tok)
    assert cf.domain_names == ["code", "chat"]
    assert np.array_equal(cf.counts_by_domain.sum(axis=0), cf.counts)
    assert info["domains"]["code"] == int(cf.domain_counts("code").sum())


def test_cache_hit_and_every_kind_of_invalidation(tmp_path, qwen_tok, workspace):
    data = tmp_path / "d.jsonl"
    shutil.copy(SAMPLES / "code.jsonl", data)
    first, info = count_dataset([str(data)], tokenizer=qwen_tok)
    assert not info["cache_hit"]
    again, info = count_dataset([str(data)], tokenizer=qwen_tok)
    assert info["cache_hit"] and np.array_equal(again.counts, first.counts)
    assert info["tokens_per_second"] > 0

    # mask mode
    _, info = count_dataset([str(data)], tokenizer=qwen_tok, mask="content")
    assert not info["cache_hit"]
    # schema choice
    _, info = count_dataset([str(data)], tokenizer=qwen_tok, schema="messages")
    assert not info["cache_hit"]
    # chat template (same tokenizer.json)
    d = tmp_path / "tok"
    shutil.copytree(qwen_tok.name_or_path, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] += " "
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    _, info = count_dataset([str(data)], tokenizer=str(d))
    assert not info["cache_hit"]
    # dataset bytes: one row fewer
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:-1]))
    changed, info = count_dataset([str(data)], tokenizer=qwen_tok)
    assert not info["cache_hit"] and changed.manifest["rows"] == 163
    # and the original bytes hit the first entry again
    data.write_text("".join(lines))
    _, info = count_dataset([str(data)], tokenizer=qwen_tok)
    assert info["cache_hit"]


def test_cache_needs_every_manifest_field(tmp_path, qwen_tok, workspace):
    from vtcore.countsfile import save_counts

    data = tmp_path / "d.jsonl"
    shutil.copy(SAMPLES / "code.jsonl", data)
    cf, info = count_dataset([str(data)], tokenizer=qwen_tok)
    # a cache entry whose stored manifest disagrees in any key field is not reused
    for field in KEY_FIELDS:
        tampered = dict(cf.manifest)
        tampered[field] = "something else"
        cf_t = type(cf)(**{**cf.__dict__, "manifest": tampered})
        save_counts(info["counts_path"], cf_t, force=True)   # over the cache entry on purpose
        _, again = count_dataset([str(data)], tokenizer=qwen_tok)
        assert not again["cache_hit"], field


def test_skip_bad_counts_skipped_rows(tmp_path, qwen_tok, workspace):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})
    path.write_text(good + "\n{oops\n" + json.dumps({"messages": [{"role": "user", "content": "u"}]}) + "\n" + good + "\n")
    with pytest.raises(VTError, match=r"d\.jsonl:2: malformed JSON"):
        count_dataset([str(path)], tokenizer=qwen_tok)
    cf, info = count_dataset([str(path)], tokenizer=qwen_tok, skip_bad=True)
    assert info["rows"] == 2 and info["rows_skipped"] == 2
    assert info["skipped"] == {"malformed JSON": 1, "row has no assistant turn": 1}


def test_all_rows_bad_is_an_error(tmp_path, qwen_tok, workspace):
    path = tmp_path / "d.jsonl"
    path.write_text("{oops\n")
    with pytest.raises(VTError, match="no rows to count"):
        count_dataset([str(path)], tokenizer=qwen_tok, skip_bad=True)


def test_progress_reaches_one(qwen_tok, workspace):
    seen = []
    count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok, progress=lambda f, t="": seen.append(f))
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_hf_folder_counts_like_its_file_and_caches_on_its_files(tmp_path, qwen_tok, workspace):
    folder = tmp_path / "code"
    folder.mkdir()
    shutil.copy(SAMPLES / "code.jsonl", folder / "train.jsonl")
    from_file, _ = count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok)
    from_hub, info = count_dataset([f"hf:{folder}"], tokenizer=qwen_tok)
    assert not info["cache_hit"] and from_hub.domain_names == ["code"]
    for name in ("counts", "counts_fit", "counts_heldout", "counts_by_domain"):
        assert np.array_equal(getattr(from_hub, name), getattr(from_file, name)), name
    assert count_dataset([f"hf:{folder}"], tokenizer=qwen_tok)[1]["cache_hit"]
    lines = (folder / "train.jsonl").read_text().splitlines(keepends=True)
    (folder / "train.jsonl").write_text("".join(lines[:-1]))
    changed, info = count_dataset([f"hf:{folder}"], tokenizer=qwen_tok)
    assert not info["cache_hit"] and changed.manifest["rows"] == 163


def test_hub_id_offline_fails_before_counting(qwen_tok, workspace):
    with pytest.raises(VTError, match=r"hf:org/name: a hub dataset needs the model hub, which is off"):
        count_dataset(["hf:org/name"], tokenizer=qwen_tok)


def test_a_cache_made_by_other_code_is_never_reused(qwen_tok, workspace, tmp_path, monkeypatch):
    """The cache key holds a hash of the counting code's source: counts made before an edit to it
    (of the mask, the reader, ...) are counted afresh, not read back."""
    from vtcore import counts

    modules = counts.counting_modules()
    assert {"counts", "mask", "data", "tally", "template", "tokens", "split", "raycount"} <= set(modules)
    cf, info = count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok)
    assert cf.manifest["code_sha256"] == counts.code_sha256() and not info["cache_hit"]
    assert count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok)[1]["cache_hit"]
    # one changed line in one counting module changes the hash
    edited = tmp_path / "vtcore"
    shutil.copytree(Path(counts.__file__).parent, edited, ignore=shutil.ignore_patterns("__pycache__"))
    assert counts.code_sha256(edited) == counts.code_sha256()
    mask = edited / "mask.py"
    mask.write_text(mask.read_text() + "\n# an edit\n")
    other = counts.code_sha256(edited)
    assert other != counts.code_sha256()
    # ... and that code finds no cached result: it counts again, under its own key
    monkeypatch.setattr(counts, "code_sha256", lambda package=None: other)
    again, info2 = count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok)
    assert not info2["cache_hit"] and again.manifest["code_sha256"] == other
    assert info2["counts_path"] != info["counts_path"] and np.array_equal(again.counts, cf.counts)


def test_engine_choice_errors(monkeypatch, qwen_tok, workspace):
    import sys
    from pathlib import Path

    from vtcore.raycount import RAY_REQUIREMENT

    with pytest.raises(VTError, match="engine must be one of local, ray"):
        count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok, engine="spark")
    monkeypatch.setitem(sys.modules, "ray", None)   # as where ray is not installed
    with pytest.raises(VTError, match=r"the Ray engine needs ray\[data\]==2\.60\.0: pip install"):
        count_dataset([str(SAMPLES / "code.jsonl")], tokenizer=qwen_tok, engine="ray", cache=False)
    pinned = [ln for ln in (Path(__file__).parent.parent / "requirements-ray.txt").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert pinned == [RAY_REQUIREMENT]
