"""The bundled Qwen3 tokenizer and tokenizer loading."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil

import pytest

from vtcore.errors import VTError
from vtcore.tokens import (BUNDLED_DIR, always_keep_ids, end_of_turn_id, load_tokenizer, tokenizer_info)


def test_bundled_file_is_the_pinned_qwen3_tokenizer():
    data = gzip.decompress((BUNDLED_DIR / "tokenizer.json.gz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
    assert "Apache" in (BUNDLED_DIR / "NOTICE").read_text()


def test_bundled_tokenizer_ids(qwen_tok):
    assert qwen_tok("Hello world", add_special_tokens=False)["input_ids"] == [9707, 1879]
    assert qwen_tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [151644, 151645]
    assert len(qwen_tok) == 151669
    info = tokenizer_info(qwen_tok)
    assert info.sha256 == "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
    assert info.chat_template_sha256 is not None and info.vocab_size == 151669


def test_end_of_turn_comes_from_the_template(qwen_tok):
    assert end_of_turn_id(qwen_tok) == 151645
    assert always_keep_ids(qwen_tok, [7]) == [151645, 7]


def test_local_directory_loads(tmp_path, qwen_tok):
    d = tmp_path / "tok"
    shutil.copytree(qwen_tok.name_or_path, d)
    tok = load_tokenizer(str(d))
    assert tokenizer_info(tok).name == str(d.resolve())
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [9707, 1879]


def test_hub_id_offline_says_to_pass_a_directory():
    with pytest.raises(VTError, match="local directory"):
        load_tokenizer("Qwen/Qwen3-8B")


def test_missing_tokenizer_path():
    with pytest.raises(VTError, match="does not exist"):
        load_tokenizer("./no/such/tokenizer")


def test_template_change_changes_the_template_hash(tmp_path, qwen_tok):
    d = tmp_path / "tok"
    shutil.copytree(qwen_tok.name_or_path, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("<|im_start|>", "<|im_start|>", 1) + "\n"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    a, b = tokenizer_info(qwen_tok), tokenizer_info(load_tokenizer(str(d)))
    assert a.sha256 == b.sha256 and a.chat_template_sha256 != b.chat_template_sha256
