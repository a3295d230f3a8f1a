"""Dataset readers and schemas: every format, every schema, every bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import SAMPLES
from vtcore.data import ReadStats, detect_schema, iter_records, read_dataset
from vtcore.errors import DataError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_all(path, **kw):
    stats = ReadStats()
    return list(read_dataset(path, stats=stats, **kw)), stats


@pytest.mark.parametrize("row, schema, expected", [
    ({"messages": CHAT}, "messages", CHAT),
    ({"conversations": CHAT}, "messages", CHAT),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "image_url"},
                                                 {"type": "text", "text": "there"}]},
                   {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]},
     "messages", [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Yo"}]),
    ({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                        {"from": "gpt", "value": "A"}]},
     "sharegpt", [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                  {"role": "assistant", "content": "A"}]),
    ({"instruction": "Add", "input": "1 2", "output": "3"}, "alpaca",
     [{"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca",
     [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]),
    ({"prompt": "P", "response": "R"}, "prompt_response",
     [{"role": "user", "content": "P"}, {"role": "assistant", "content": "R"}]),
    ({"prompt": "P", "completion": "C"}, "prompt_completion",
     [{"role": "user", "content": "P"}, {"role": "assistant", "content": "C"}]),
])
def test_schemas(tmp_path, row, schema, expected):
    assert detect_schema(row) == schema
    (conv,), stats = read_all(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert stats.schema == schema and conv.messages == expected and conv.text is None


def test_text_schema_warns_no_mask(tmp_path):
    (conv,), stats = read_all(write_jsonl(tmp_path / "d.jsonl", [{"text": "<|im_start|>user\nhi<|im_end|>"}]))
    assert conv.text.startswith("<|im_start|>") and stats.schema == "text"
    assert any("no assistant mask" in w for w in stats.warnings)


def test_schema_can_be_forced(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "P", "response": "R", "text": "T"}])
    (conv,), _ = read_all(path, schema="text")
    assert conv.text == "T"


def test_all_file_formats_give_the_same_conversations(tmp_path):
    import pandas as pd

    rows = [{"messages": CHAT, "domain": "d1"}, {"prompt": "P2", "response": "R2"}]
    pr_rows = [{"prompt": "P1", "response": "R1", "domain": "x"}, {"prompt": "P2", "response": "R2", "domain": "y"}]
    want = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
            for r in pr_rows]
    paths = {
        "jsonl": write_jsonl(tmp_path / "a.jsonl", pr_rows),
        "json": tmp_path / "a.json",
        "gz": tmp_path / "a.jsonl.gz",
        "parquet": tmp_path / "a.parquet",
        "csv": tmp_path / "a.csv",
    }
    paths["json"].write_text(json.dumps(pr_rows, indent=2))
    paths["gz"].write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    pd.DataFrame(pr_rows).to_parquet(paths["parquet"])
    pd.DataFrame(pr_rows).to_csv(paths["csv"], index=False)
    for kind, path in paths.items():
        convs, _ = read_all(path)
        assert [c.messages for c in convs] == want, kind
        assert [c.domain for c in convs] == ["x", "y"], kind
    assert rows  # the messages row is exercised by the CSV/JSON-cell test below


def test_csv_and_parquet_cells_holding_message_lists(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"messages": [json.dumps(CHAT)]})
    df.to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "m.parquet")
    for name in ("m.csv", "m.parquet"):
        (conv,), _ = read_all(tmp_path / name)
        assert conv.messages == CHAT


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csv_delimiter_is_sniffed(tmp_path, delimiter):
    import pandas as pd

    rows = [{"prompt": "What is 1, 2; 3?", "response": "A list; or a tuple, maybe."},
            {"prompt": "Say hi", "response": "hi"}]
    path = tmp_path / "pr.csv"
    pd.DataFrame(rows).to_csv(path, index=False, sep=delimiter)
    convs, stats = read_all(path)
    assert stats.schema == "prompt_response"
    assert [c.messages[1]["content"] for c in convs] == [r["response"] for r in rows]


def test_table_columns_mapped_to_user_turn_and_answer(tmp_path):
    import pandas as pd

    from vtcore.data import columns, map_columns

    df = pd.DataFrame({"id": [1, 2], "question": ["How do I sort?", "What is a dict?"],
                       "answer": ["Use sorted().", "A mapping."]})
    df.to_csv(tmp_path / "qa.csv", index=False, sep=";")
    df.to_parquet(tmp_path / "qa.parquet")
    for name in ("qa.csv", "qa.parquet"):
        path = tmp_path / name
        with pytest.raises(DataError, match="cannot detect the schema"):   # no schema knows these names
            read_all(path)
        assert columns(path) == ["id", "question", "answer"]
        mapped = write_jsonl(tmp_path / f"{name}.jsonl", map_columns(path, "question", "answer"))
        convs, stats = read_all(mapped)
        assert stats.schema == "prompt_response"
        assert [c.messages for c in convs][1] == [{"role": "user", "content": "What is a dict?"},
                                                  {"role": "assistant", "content": "A mapping."}]
        with pytest.raises(DataError, match="no column 'reply'"):
            list(map_columns(path, "question", "reply"))
        with pytest.raises(DataError, match="two different columns"):
            list(map_columns(path, "answer", "answer"))


def test_saved_hf_dataset_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT}])
    ds.save_to_disk(str(tmp_path / "saved"))
    convs, stats = read_all(tmp_path / "saved")
    assert len(convs) == 2 and convs[0].messages == CHAT and stats.schema == "messages"
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    dd.save_to_disk(str(tmp_path / "saved_dict"))
    convs, _ = read_all(tmp_path / "saved_dict")
    assert len(convs) == 2  # the train split


def test_json_array_streams_across_chunk_boundaries(tmp_path):
    from vtcore.data import _iter_json_array, _Position

    rows = [{"prompt": f"p{i} " + "x" * (i % 37), "response": f"r{i}", "n": i * 1.5} for i in range(300)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, indent=1))
    got = [rec for _, rec in _iter_json_array(path, _Position(path), chunk_size=97)]
    assert got == rows


def test_per_file_domain_and_row_domain(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"messages": CHAT}, {"messages": CHAT, "domain": "legal"}])
    convs, _ = read_all(path)
    assert [c.domain for c in convs] == ["mixed", "legal"]
    convs, _ = read_all(path, domain="medical")
    assert [c.domain for c in convs] == ["medical", "legal"]


def test_samples_read(tmp_path):
    code, stats = read_all(SAMPLES / "code.jsonl")
    assert len(code) == 164 and stats.schema == "messages" and {c.domain for c in code} == {"code"}
    assert [m["role"] for m in code[0].messages] == ["user", "assistant"]


# ------------------------------------------------------------------ bad input


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n" + '{"messages": [}\n' + json.dumps({"messages": CHAT}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        read_all(path)
    convs, stats = read_all(path, skip_bad=True)
    assert len(convs) == 2 and stats.skipped == {"malformed JSON": 1}
    assert [c.index for c in convs] == [0, 2]  # the split index counts the bad row too


def test_malformed_json_array(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "a", "response": "b"},\n{"prompt": }\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        read_all(path)


@pytest.mark.parametrize("name, content", [("e.jsonl", ""), ("e.json", "[]"), ("blank.jsonl", "\n\n"),
                                           ("e.csv", "prompt,response\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        read_all(path)


def test_row_without_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT}, {"messages": CHAT[:2]}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: row has no assistant turn"):
        read_all(path)
    convs, stats = read_all(path, skip_bad=True)
    assert len(convs) == 1 and stats.skipped == {"row has no assistant turn": 1}


def test_unknown_roles_are_listed(tmp_path):
    msgs = CHAT + [{"role": "narrator", "content": "x"}, {"role": "robot", "content": "y"}]
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}])
    with pytest.raises(DataError, match=r"d\.jsonl:1, field 'messages\[\]\.role': unknown role\(s\) \['narrator', 'robot'\]"):
        read_all(path)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps({"messages": CHAT}).encode() + b"\n" + b'{"prompt": "caf\xe9", "response": "x"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        read_all(path)
    path = tmp_path / "d.json"
    path.write_bytes(b'[{"prompt": "a", "response": "b"},\n{"prompt": "caf\xe9", "response": "x"}]')
    with pytest.raises(DataError, match=r"d\.json:2: not valid UTF-8"):
        read_all(path)


def test_undetectable_schema_lists_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer_text": "a"}])
    with pytest.raises(DataError, match=r"cannot detect the schema: fields found \['answer_text', 'question'\]"):
        read_all(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(iter_records(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown dataset format"):
        list(iter_records(tmp_path / "d.txt"))


# ------------------------------------------------------------------ hf: ids


def test_hub_ids_parse():
    from vtcore.data import HubSpec, parse_hub

    assert parse_hub("hf:org/name") == HubSpec("org/name")
    assert parse_hub("hf:org/name:cfg") == HubSpec("org/name", "cfg")
    assert parse_hub("hf:org/name::test") == HubSpec("org/name", None, "test")
    assert parse_hub("hf:org/name:cfg:train") == HubSpec("org/name", "cfg", "train")
    assert parse_hub("data.jsonl") is None
    for bad in ("hf:", "hf:org/name:a:b:c", "hf:org/name:cfg:"):
        with pytest.raises(DataError, match="expected hf:ORG/NAME"):
            parse_hub(bad)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(DataError, match=r"^hf:org/name: a hub dataset needs the model hub, which is off "
                                        r"\(HF_HUB_OFFLINE=1\)"):
        read_all("hf:org/name")


def test_hf_local_parquet_folder_reads_like_its_files(tmp_path):
    import pandas as pd

    folder = tmp_path / "pq"
    folder.mkdir()
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(7)]
    pd.DataFrame(rows[:4]).to_parquet(folder / "train-00000-of-00002.parquet")
    pd.DataFrame(rows[4:]).to_parquet(folder / "train-00001-of-00002.parquet")
    convs, stats = read_all(f"hf:{folder}")
    assert [c.messages[1]["content"] for c in convs] == [r["response"] for r in rows]
    assert [c.index for c in convs] == list(range(7)) and {c.domain for c in convs} == {"pq"}
    assert stats.schema == "prompt_response" and convs[0].source == f"hf:{folder}:1"


def test_hf_local_dataset_folder_splits_and_config(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"messages": CHAT}] * 3)
    test_chat = [{"role": "user", "content": "P"}, {"role": "assistant", "content": "R"}]
    write_jsonl(folder / "test.jsonl", [{"messages": test_chat}])
    convs, _ = read_all(f"hf:{folder}")            # no split named: train
    assert len(convs) == 3 and convs[0].messages == CHAT
    convs, _ = read_all(f"hf:{folder}::test", domain="t")
    assert [c.messages for c in convs] == [test_chat] and convs[0].domain == "t"
    with pytest.raises(DataError, match=r"ds::nosuch: cannot load the dataset"):
        read_all(f"hf:{folder}::nosuch")


def test_hf_stream_failing_mid_way_names_the_row(tmp_path):
    import pandas as pd

    folder = tmp_path / "mixed"
    folder.mkdir()
    pd.DataFrame([{"prompt": "p", "response": "r"}] * 2).to_parquet(folder / "train-0.parquet")
    pd.DataFrame([{"other": 1}]).to_parquet(folder / "train-1.parquet")
    with pytest.raises(DataError, match=r"mixed:3: cannot read the dataset \(Couldn.t cast"):
        read_all(f"hf:{folder}")
