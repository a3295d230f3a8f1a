"""Assistant-only token ids: exactly the tokens a draft must learn to predict.

Template-exact mode (the default) renders each conversation with the tokenizer's own chat
template, finds every assistant message's text in the rendering, and keeps the tokens of
the rendered conversation that overlap it, plus the end-of-turn token that closes the turn.
System/user/tool turns and template headers (`<|im_start|>assistant\\n`, and text a template
puts before the content such as Qwen3's empty `<think>\\n\\n</think>\\n\\n`, which the
non-thinking prompt hands the model) are not counted. A rendered reasoning block
(`<think>...</think>` from a message's reasoning) is counted: the model generates it.

Speed: a tokenizer splits its input at added (special) tokens before anything else, so
the text between two of them is tokenized on its own. The fast path encodes only the
segment around each assistant message, not the whole conversation. It is checked against
full-conversation encoding on the first rows of every run and dropped if they ever differ
(tokenizers whose pre-tokenizer looks at the position in the whole input).

Content-only mode encodes each assistant content on its own plus one end-of-turn token:
faster, and off by the few tokens that merge across the header/content boundary.

Memory: a tokenizer holds about 100+ bytes per input character while it encodes, so a 50 MB
message would need GBs. With byte-level BPE (the same condition as above) a text longer than
PIECE_CHARS is encoded in pieces cut where every regex pre-tokenizer of that family (GPT-2,
Llama 3, Qwen) starts a pre-token (before " word", " (", or after a line break): BPE never
merges across pre-tokens, so the ids are those of the whole text, and memory is bounded by
the piece, not the row. The self-check compares the two on the first rows too.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import numpy as np

from vtcore.data import Conversation
from vtcore.errors import VTError
from vtcore.template import make_renderer, slow_renderer
from vtcore.tokens import chat_template, end_of_turn_id, special_token_pattern

MODES = ("template", "content")
SELF_CHECK_ROWS = 32
SELF_CHECK_MAX_CHARS = 1 << 17   # longer rows are left out of the self-check (it encodes them twice more)
PIECE_CHARS = 1 << 18            # texts longer than this are encoded in pieces of about this size
PIECE_GROUP = 4                  # pieces encoded per tokenizer call (in parallel, inside the tokenizer)


@dataclass
class MaskStats:
    turns: int = 0                 # assistant turns counted
    turns_unlocated: int = 0       # turns the template altered beyond recognition: counted content-only
    rows_full_path: int = 0        # rows encoded whole (special tokens inside an assistant span)
    spans_reencoded: int = 0       # spans whose first token straddles the header: encoded again with offsets
    texts_in_pieces: int = 0       # texts longer than PIECE_CHARS, encoded piece by piece
    cuts_inside_words: int = 0     # pieces cut where no pre-token boundary was near (a run without spaces)
    path: str = "segment"          # "segment" (fast) or "full" after a failed self-check
    warnings: list[str] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """The additive fields: what another process's counting adds to this one."""
        return {"turns": self.turns, "turns_unlocated": self.turns_unlocated,
                "rows_full_path": self.rows_full_path, "spans_reencoded": self.spans_reencoded}

    def add(self, counters: dict[str, int]) -> None:
        for name, n in counters.items():
            setattr(self, name, getattr(self, name) + int(n))


@dataclass(frozen=True)
class MaskCheck:
    """What the self-check on a run's first rows decided. Other processes (Ray actors) adopt
    it instead of checking their own first rows, so every row is encoded the same way."""
    path: str           # "segment" or "full"
    slow_render: bool   # the fast renderer differed from apply_chat_template: use the latter


def _think_parts(content: str) -> tuple[str, str] | None:
    """(reasoning, final answer) of a content that carries an inline <think> block."""
    if "</think>" not in content:
        return None
    head, _, tail = content.rpartition("</think>")
    return head.rstrip("\n").split("<think>")[-1].lstrip("\n"), tail.lstrip("\n")


class AssistantTokens:
    """Turns conversations into the assistant-only token ids of each one."""

    def __init__(self, tok, mode: str = "template"):
        if mode not in MODES:
            raise VTError(f"mask mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.tok = tok
        self.bt = tok.backend_tokenizer
        self.stats = MaskStats()
        self.eot = end_of_turn_id(tok)
        if mode == "template" and chat_template(tok) is None:
            self.stats.warnings.append(f"tokenizer {getattr(tok, 'vtcore_name', tok.name_or_path)} has no chat "
                                       "template: counting content-only (assistant contents + one end-of-turn)")
            mode = "content"
        self.mode = mode
        if self.eot is None:
            self.stats.warnings.append("tokenizer has no EOS / end-of-turn token: none counted per turn")
        self.special_re = special_token_pattern(tok)
        self.special_ids = {t.content: i for i, t in self.bt.get_added_tokens_decoder().items()}
        self.render = make_renderer(tok, chat_template(tok)) if mode == "template" else None
        self._checked = mode != "template"
        # byte-level BPE (Qwen, Llama 3, GPT-2 style): token bytes concatenate to the input
        # (after at most NFC, which moves no text), which lets spans be cut without
        # character offsets (see _span_ids)
        self._prefix_ok = (type(self.bt.normalizer).__name__ in ("NoneType", "NFC")
                           and "ByteLevel" in repr(self.bt.pre_tokenizer) and "ByteLevel" in repr(self.bt.decoder))
        # pieces need the same and no prefix space added to each piece (see the module docstring)
        self._pieces_ok = self._prefix_ok and "add_prefix_space=True" not in repr(self.bt.pre_tokenizer)
        self._longest_added = max((len(t) for t in self.special_ids), default=0)
        self._header_ids: dict[str, list[int]] = {}

    # ------------------------------------------------------------ public

    def encode(self, convs: list[Conversation]) -> list[list[int]]:
        """Assistant-only ids of each conversation (preformatted text rows: all their ids)."""
        return self.run(self.plan(convs))

    def check(self, convs: list[Conversation]) -> MaskCheck:
        """Run the self-check on these rows (a run's first rows: the first batch's first
        SELF_CHECK_ROWS) unless it has run, and say what it decided."""
        if not self._checked:
            self._self_check(convs[:SELF_CHECK_ROWS])
        return MaskCheck(path=self.stats.path, slow_render=self.mode == "template" and
                         not getattr(self.render, "is_fast", False))

    def adopt(self, decided: MaskCheck) -> None:
        """Encode as another instance's check decided, without checking rows here."""
        self._checked = True
        self.stats.path = decided.path
        if decided.slow_render and self.mode == "template":
            self.render = slow_renderer(self.tok)

    def plan(self, convs: list[Conversation]) -> "_Plan":
        """The pure-Python half (render, locate): what to encode. Split from run() so a
        caller can plan the next batch while the tokenizer (which releases the GIL) encodes."""
        if not self._checked:
            self._self_check(convs[:SELF_CHECK_ROWS])
        plan = _Plan(n=len(convs))
        for i, c in enumerate(convs):
            if c.text is not None:
                plan.add(i, c.text, "all")
            elif self.mode == "content":
                for m in c.messages:
                    if m["role"] == "assistant":
                        plan.add(i, m["content"], "turn")
            elif self.stats.path == "segment":
                self._plan_segments(i, c, plan)
            else:
                text = self.render(c.messages)
                plan.whole.append((i, text, self._locate(text, c.messages)))
        return plan

    def run(self, plan: "_Plan") -> list[list[int]]:
        """Encode what plan() chose and keep the assistant tokens of each conversation."""
        return self.collect(plan, self.encode_texts(plan))

    def encode_texts(self, plan: "_Plan") -> list:
        """The tokenizer's part alone (Rust, GIL released, both cores): a caller can run it
        in a thread while this thread plans the next batch and collects the previous one.
        A text longer than PIECE_CHARS is encoded in pieces (bounded memory)."""
        if not plan.texts:
            return []
        fast = (self.mode == "content" or self._prefix_ok) and hasattr(self.bt, "encode_batch_fast")
        encode = self.bt.encode_batch_fast if fast else self.bt.encode_batch
        long = [i for i, t in enumerate(plan.texts) if len(t) > PIECE_CHARS and self._pieces_ok]
        if not long:
            return encode(plan.texts, add_special_tokens=False)
        short = [i for i in range(len(plan.texts)) if len(plan.texts[i]) <= PIECE_CHARS or not self._pieces_ok]
        encs: list = [None] * len(plan.texts)
        for i, enc in zip(short, encode([plan.texts[i] for i in short], add_special_tokens=False)):
            encs[i] = enc
        for i in long:
            encs[i] = _Ids(self.encode_long(plan.texts[i])[0].tolist())
        return encs

    def encode_long(self, text: str, offsets: bool = False,
                    size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """ids (and character offsets) of `text`, encoded in pieces of about `size` characters
        (default PIECE_CHARS) when it is longer and the tokenizer allows it (see the module
        docstring), else whole."""
        size = size or PIECE_CHARS
        if len(text) <= size or not self._pieces_ok:
            enc = self.bt.encode(text, add_special_tokens=False)
            return (np.asarray(enc.ids, dtype=np.int64),
                    np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) if offsets else None)
        self.stats.texts_in_pieces += 1
        ids, offs = [], []
        cuts = self._cuts(text, size)
        for g in range(0, len(cuts) - 1, PIECE_GROUP):
            bounds = cuts[g:g + PIECE_GROUP + 1]
            pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
            encode = self.bt.encode_batch if offsets else self.bt.encode_batch_fast
            for a, enc in zip(bounds, encode(pieces, add_special_tokens=False)):
                ids.append(np.asarray(enc.ids, dtype=np.int64))
                if offsets:
                    offs.append(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) + a)
            del pieces
        return np.concatenate(ids), (np.concatenate(offs) if offsets else None)

    def _cuts(self, text: str, size: int) -> list[int]:
        """Piece boundaries 0 = c0 < c1 < ... = len(text), each piece at most `size` long,
        cut where a pre-token starts in the whole text too: before a space followed by a
        non-space (" word", " (", " 1": whitespace before it ends there, as the lookahead
        in \\s+(?!\\S) makes it), else after a line break followed by a non-space; never inside
        an added token. Without either in the second half of a piece, it is cut there anyway
        (counted: a run that long without a space is no language)."""
        cuts, start, n = [0], 0, len(text)
        while n - start > size:
            lo, hi = start + size // 2, start + size
            p = self._cut_before(text, lo, hi)
            if p is None:
                p = hi
                self.stats.cuts_inside_words += 1
            cuts.append(p)
            start = p
        cuts.append(n)
        return cuts

    def _cut_before(self, text: str, lo: int, hi: int) -> int | None:
        p = text.rfind(" ", lo, hi - 1)
        while p > lo:
            if not text[p + 1].isspace() and not self._in_added_token(text, p):
                return p
            p = text.rfind(" ", lo, p)
        p = text.rfind("\n", lo, hi - 1)
        while p > lo:
            if not text[p + 1].isspace() and not self._in_added_token(text, p + 1):
                return p + 1
            p = text.rfind("\n", lo, p)
        return None

    def _in_added_token(self, text: str, p: int) -> bool:
        L = self._longest_added
        return L > 0 and any(m.start() < p < m.end() for m in self.special_re.finditer(text, max(0, p - L), p + L))

    def collect(self, plan: "_Plan", encs: list) -> list[list[int]]:
        """The assistant tokens of each conversation, from plan() and its encodings."""
        out: list[list[int]] = [[] for _ in range(plan.n)]
        eot = [] if self.eot is None else [self.eot]
        for n, ((i, kind, cs, ce, mt), enc) in enumerate(zip(plan.meta, encs)):
            if kind == "all":
                out[i].extend(enc.ids)
                continue
            self.stats.turns += 1
            if kind == "turn":  # content-only, or a turn the template changed beyond recognition
                self.stats.turns_unlocated += self.mode == "template"
                out[i].extend(enc.ids)
                out[i].extend(eot)
            else:
                out[i].extend(self._span_ids(plan.texts[n], enc, cs, ce))
                if mt is not None:
                    out[i].append(mt)
        for i, text, spans in plan.whole:
            self.stats.rows_full_path += self.stats.path == "segment"
            out[i].extend(self._full_one(text, spans))
        return out

    # ------------------------------------------------------------ template-exact

    def _span_ids(self, segment: str, enc, cs: int, ce: int) -> list[int]:
        """Ids of the tokens of `segment` overlapping [cs, ce).

        Without offsets (byte-level BPE, no normalizer): a token is a byte string and the
        tokens of a segment concatenate to its bytes, so when the segment's first tokens
        are exactly the tokens of its header (the text before the content, alone), they
        end exactly where the content starts and every later token overlaps the content.
        Otherwise (a token merging across the boundary, e.g. "\n" + "\n...") the segment
        is encoded again with offsets."""
        if not self._prefix_ok:
            return _overlapping(enc, cs, ce)
        ids = enc.ids
        head = self._header_ids.get(segment[:cs])
        if head is None:
            head = self._header_ids[segment[:cs]] = self.bt.encode(segment[:cs], add_special_tokens=False).ids
        if ce == len(segment) and ids[:len(head)] == head:
            return ids[len(head):]
        self.stats.spans_reencoded += 1
        if len(segment) > PIECE_CHARS:
            seg_ids, offs = self.encode_long(segment, offsets=True)
            return seg_ids[(offs[:, 1] > cs) & (offs[:, 0] < ce)].tolist()
        return _overlapping(self.bt.encode(segment, add_special_tokens=False), cs, ce)

    def _locate(self, text: str, messages: list[dict]) -> list[tuple[int, int, re.Match | None] | str]:
        """For each assistant message, (start, end, end-of-turn match) of its text in the
        rendering, or its raw content when the template changed it beyond recognition."""
        spans, cursor = [], 0
        for mi, m in enumerate(messages):
            content = m["content"]
            if m["role"] != "assistant":
                j = text.find(content, cursor) if content else -1
                if j >= 0:
                    cursor = j + len(content)
                continue
            think = _think_parts(content)
            body = think[1] if think else content
            found = self._find_closed(text, body, cursor)
            if found is None:  # the template trimmed it
                for cand in dict.fromkeys((body.strip(), body.lstrip("\n"), body.lstrip(), body.rstrip())):
                    found = self._find_closed(text, cand, cursor)
                    if found:
                        break
            elif body[:1].isspace() and not think:
                # Leading whitespace may be the template's own: Qwen3 renders the last answer
                # as "</think>\n\n" + content.lstrip("\n"), so a content "\nfoo" matches one
                # character early. The template, rendered with this content empty, says
                # where its header ends.
                head_end = self._header_end(text, messages, mi, cursor, found[0])
                lead = len(body) - len(body.lstrip())
                if head_end is not None and found[0] < head_end <= found[0] + lead:
                    found = (head_end, found[1], found[2])
            if found is None:
                spans.append(content)
                continue
            start, end, eot = found
            if think and think[0]:
                # a rendered reasoning block is generated text: start the span at its <think>
                r = text.rfind(think[0], cursor, start)
                if r >= 0:
                    t = text.rfind("<think>", cursor, r)
                    start = t if t >= 0 else r
            spans.append((start, end, eot))
            cursor = end
        return spans

    def _header_end(self, text: str, messages: list[dict], index: int, cursor: int, before: int) -> int | None:
        """Where the content of messages[index] starts: the template rendered with that
        content empty puts the turn's end-of-turn right there. `before` bounds the header:
        the end-of-turn tokens between cursor and it (closing earlier turns) are skipped."""
        emptied = list(messages)
        emptied[index] = {**messages[index], "content": ""}
        try:
            t0 = self.render(emptied)
        except Exception:
            return None
        eots = [mt for mt in self.special_re.finditer(text, cursor, before) if self._is_eot(mt)]
        for mt in self.special_re.finditer(t0, cursor):
            if self._is_eot(mt):
                if not eots:
                    return mt.start()
                eots.pop()
        return None

    def _is_eot(self, mt) -> bool:
        return self.eot is None or self.special_ids.get(mt.group(0)) == self.eot

    def _find_closed(self, text: str, cand: str, cursor: int):
        """First occurrence of `cand` at/after cursor that only whitespace separates from
        the next added token (the end-of-turn)."""
        j = text.find(cand, cursor)
        while j >= 0:
            end = j + len(cand)
            mt = self.special_re.search(text, end)
            # the turn must close right after: whitespace, then the end-of-turn token (not,
            # say, the <think> that follows the word "assistant" in a header)
            if mt is not None and not text[end:mt.start()].strip() and self._is_eot(mt):
                return j, end, mt
            if mt is None and not text[end:].strip():
                return j, end, None
            j = text.find(cand, j + 1)
        return None

    def _plan_segments(self, i: int, c: Conversation, plan: "_Plan") -> None:
        text = self.render(c.messages)
        spans = self._locate(text, c.messages)
        marks = [m.span() for m in self.special_re.finditer(text)]
        starts = [a for a, _ in marks]
        if any(not isinstance(s, str) and bisect.bisect_left(starts, s[0]) < bisect.bisect_left(starts, s[1])
               for s in spans):
            plan.whole.append((i, text, spans))  # added tokens inside a span: encode the row whole
            return
        for s in spans:
            if isinstance(s, str):
                plan.add(i, s, "turn")
                continue
            start, end, mt = s
            # the segment runs from the last added token before the span to the end-of-turn
            j = bisect.bisect_right(starts, start) - 1
            seg_start = marks[j][1] if j >= 0 else 0
            seg_end = mt.start() if mt is not None else len(text)
            plan.add(i, text[seg_start:seg_end], "span", start - seg_start, end - seg_start,
                     None if mt is None else self.special_ids[mt.group(0)])

    def _full_one(self, text: str, spans) -> list[int]:
        """Encode the whole rendering and keep the tokens overlapping each span + its end-of-turn."""
        ids, offs = self.encode_long(text, offsets=True)
        keep = np.zeros(len(ids), dtype=bool)
        extra: list[int] = []
        for s in spans:
            self.stats.turns += 1
            if isinstance(s, str):
                self.stats.turns_unlocated += 1
                extra.extend(self.bt.encode(s, add_special_tokens=False).ids)
                extra.extend([] if self.eot is None else [self.eot])
                continue
            start, end, mt = s
            keep |= (offs[:, 1] > start) & (offs[:, 0] < end)
            if mt is not None:
                keep |= (offs[:, 0] == mt.start()) & (offs[:, 1] == mt.end())
        return ids[keep].tolist() + extra

    def _self_check(self, convs: list[Conversation]) -> None:
        """Compare the segment path with whole-conversation encoding on the first rows."""
        self._checked = True
        saved = dict(self.stats.__dict__)
        slow = slow_renderer(self.tok)
        for c in convs:
            if c.text is not None or sum(len(m["content"]) for m in c.messages) > SELF_CHECK_MAX_CHARS:
                continue
            if getattr(self.render, "is_fast", False) and self.render(c.messages) != slow(c.messages):
                self.render = slow
            plan = _Plan(n=1)
            self._plan_segments(0, c, plan)
            fast = self.run(plan)[0]
            text = self.render(c.messages)
            if sorted(self._full_one(text, self._locate(text, c.messages))) != sorted(fast):
                saved["path"] = "full"
                saved["warnings"].append("segment-wise encoding differs from whole-conversation encoding for "
                                         "this tokenizer: encoding whole conversations (exact, slower)")
                break
        if self._pieces_ok:   # pieces against the whole text, on these rows' own contents
            sample = "\n".join(m["content"] for c in convs if c.text is None for m in c.messages)[:1 << 15]
            if len(sample) > 1024 and not np.array_equal(self.encode_long(sample, size=512)[0],
                                                         self.encode_long(sample, size=len(sample))[0]):
                self._pieces_ok = False
                saved["warnings"].append("encoding long texts in pieces differs from whole-text encoding for this "
                                         "tokenizer: long texts are encoded whole (memory grows with the longest row)")
        self.stats.__dict__.update(saved)  # the check's own counting is discarded


class _Ids:
    """Stands for an Encoding where only its ids are used (a text encoded in pieces)."""

    __slots__ = ("ids",)

    def __init__(self, ids: list[int]):
        self.ids = ids


@dataclass
class _Plan:
    n: int
    texts: list[str] = field(default_factory=list)
    meta: list[tuple] = field(default_factory=list)    # (row, kind, span start, span end, eot id)
    whole: list[tuple] = field(default_factory=list)   # (row, rendered text, spans): encode whole

    def add(self, row: int, text: str, kind: str, cs: int = 0, ce: int = 0, eot: int | None = None) -> None:
        self.texts.append(text)
        self.meta.append((row, kind, cs, ce, eot))


def _overlapping(enc, cs: int, ce: int) -> list[int]:
    """Ids of the tokens whose character span overlaps [cs, ce)."""
    if ce <= cs:
        return []
    a, b = enc.char_to_token(cs), enc.char_to_token(ce - 1)
    if a is not None and b is not None:
        return enc.ids[a:b + 1]
    offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    keep = (offs[:, 1] > cs) & (offs[:, 0] < ce)
    return np.asarray(enc.ids, dtype=np.int64)[keep].tolist()
