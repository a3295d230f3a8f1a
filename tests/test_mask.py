"""Assistant-only token extraction with the tokenizer's own chat template."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import SAMPLES
from vtcore.data import Conversation, read_dataset
from vtcore.mask import AssistantTokens
from vtcore.tokens import load_tokenizer

TWO_TURNS = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 = 4."},
]


def conv(messages, text=None):
    return Conversation(messages=messages, domain="t", source="test", index=0, text=text)


def test_hand_checked_multi_turn(qwen_tok):
    # Rendered: <|im_start|>system\n...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n
    #           <|im_start|>assistant\nHello there!<|im_end|>\n<|im_start|>user\n...<|im_end|>\n
    #           <|im_start|>assistant\n<think>\n\n</think>\n\n2+2 = 4.<|im_end|>\n
    # Counted: each assistant content and the <|im_end|> closing it. Not counted: system and
    # user turns, the "<|im_start|>assistant\n" headers, the empty think block the template
    # inserts before the last answer, the "\n" after <|im_end|>.
    expected = [9707, 1052, 0, 151645,                 # "Hello" " there" "!" <|im_end|>
                17, 10, 17, 284, 220, 19, 13, 151645]  # "2" "+" "2" " =" " " "4" "." <|im_end|>
    at = AssistantTokens(qwen_tok, "template")
    assert at.encode([conv(TWO_TURNS)]) == [expected]
    assert at.stats.turns == 2 and at.stats.turns_unlocated == 0
    assert AssistantTokens(qwen_tok, "content").encode([conv(TWO_TURNS)]) == [expected]


def test_template_mode_sees_merges_across_the_header(qwen_tok):
    # "assistant\n" + "\nHi": the template renders "\n\n" as one token (271), which overlaps
    # the content and is counted; content-only encodes "\n" (198) alone.
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\nHi"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "ok"}]
    template = AssistantTokens(qwen_tok, "template").encode([conv(msgs)])[0]
    content = AssistantTokens(qwen_tok, "content").encode([conv(msgs)])[0]
    assert template[:2] == [271, 13048] and content[:2] == [198, 13048]


def test_reasoning_block_is_counted_with_its_tags(qwen_tok):
    msgs = [{"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}]
    ids = AssistantTokens(qwen_tok, "template").encode([conv(msgs)])[0]
    assert [qwen_tok.decode([i]) for i in ids] == [
        "<think>", "\n", "add", " them", "\n", "</think>", "\n\n", "4", "<|im_end|>"]


def test_content_containing_the_header_word(qwen_tok):
    msgs = [{"role": "user", "content": "say assistant"}, {"role": "assistant", "content": "assistant"}]
    ids = AssistantTokens(qwen_tok, "template").encode([conv(msgs)])[0]
    assert ids == qwen_tok.encode("assistant", add_special_tokens=False) + [151645]


def test_preformatted_text_is_counted_whole(qwen_tok):
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>"
    ids = AssistantTokens(qwen_tok, "template").encode([conv([], text=text)])[0]
    assert ids == qwen_tok.encode(text, add_special_tokens=False)


def test_segment_path_equals_whole_conversation_encoding_on_samples(qwen_tok):
    convs = list(read_dataset(SAMPLES / "code.jsonl")) + list(read_dataset(SAMPLES / "chat.jsonl.gz"))[:400]
    fast = AssistantTokens(qwen_tok, "template")
    got = fast.encode(convs)
    assert fast.stats.path == "segment"
    whole = AssistantTokens(qwen_tok, "template")
    whole._checked, whole.stats.path = True, "full"
    assert [sorted(x) for x in whole.encode(convs)] == [sorted(x) for x in got]


@pytest.mark.parametrize("sample", ["code.jsonl", "chat.jsonl.gz"])
def test_template_and_content_modes_differ_little_on_samples(qwen_tok, sample):
    convs = list(read_dataset(SAMPLES / sample))
    V = len(qwen_tok)
    counts = {}
    for mode in ("template", "content"):
        ids = AssistantTokens(qwen_tok, mode).encode(convs)
        counts[mode] = np.bincount(np.fromiter((i for row in ids for i in row), dtype=np.int64), minlength=V)
    a, b = counts["template"], counts["content"]
    tv = 0.5 * np.abs(a / a.sum() - b / b.sum()).sum()
    moved = int(np.abs(a - b).sum())
    print(f"\n{sample}: template {a.sum():,} tokens, content {b.sum():,}; "
          f"{moved} token counts differ, total variation {tv:.2e}")
    assert 0 < moved and tv < 1e-3   # they do differ, by little (docs/benchmarks.md has the figures)


def test_no_chat_template_falls_back_to_content_with_warning(tmp_path, qwen_tok):
    d = tmp_path / "tok"
    shutil.copytree(qwen_tok.name_or_path, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(str(d))
    at = AssistantTokens(tok, "template")
    assert at.mode == "content" and "no chat template" in at.stats.warnings[0]
    assert at.encode([conv(TWO_TURNS)])[0][-1] == tok.eos_token_id


def test_long_message_is_never_truncated(tmp_path, qwen_tok):
    d = tmp_path / "tok"
    shutil.copytree(qwen_tok.name_or_path, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 16
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(str(d))
    long = " ".join(f"word{i}" for i in range(500))
    n = len(qwen_tok.encode(long, add_special_tokens=False))
    assert n > 16
    msgs = [{"role": "user", "content": long}, {"role": "assistant", "content": long}]
    for mode in ("template", "content"):
        assert len(AssistantTokens(tok, mode).encode([conv(msgs)])[0]) == n + 1
