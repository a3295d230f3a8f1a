"""Tree drafting and one-forward tree verification, the way SGLang's EAGLE worker drafts (greedy,
lossless).

The tree's shape is SGLang's three flags (`--speculative-num-steps` s, `--speculative-eagle-topk`
t, `--speculative-num-draft-tokens` n), with SGLang's conventions (speculative/eagle_worker.py
`draft_forward`, the top-k selection in spec_utils / eagle_utils `select_top_k_tokens` and
`organize_draft_results`, sglang main 2026):

- the root is the last committed token (SGLang's `verified_id`): the draft's forward over the
  newly committed positions gives its logits, whose top-t rows are the t depth-1 children;
- each of the s - 1 further draft forwards feeds the t frontier nodes at once (their tokens at
  the position of their depth, each attending the committed prefix, its ancestors and itself),
  each node's top-t rows give t children scored by cumulative log-probability (SGLang multiplies
  probabilities: the same order), and the best t of those t^2 children are the next frontier;
- every child ever scored is a candidate (t + (s - 1) t^2 of them); the n - 1 best by score form
  the tree, so n counts the root: the target verifies n tokens per round. A child never scores
  above its parent, so the chosen set holds every chosen node's parent;
- the head runs 1 + (s - 1) t rows per round (per request: bs times that in a batch), and each
  draft forward but the first carries t tokens.

The head is the draft's own, trimmed or not: the top-t children come from its rows only and map
to target ids through the kept ids (an EAGLE-3 head's d2t, SGLang's `hot_token_id`), so a
trimmed head also decides which children exist at all.

Verify: the target scores the uncommitted tail (the root last) and the n - 1 nodes in ONE forward
with a 4-D attention mask (a node sees the committed prefix, its ancestors and itself) and each
node at its depth's position. Greedy: walking down from the root, a child is accepted when its
token is the target's argmax at its parent; the longest accepted path is committed plus the
target's argmax after it (the bonus token), so the output is the target's greedy output token
for token. The target's KV cache is then compacted to the accepted path (gather, then crop) and
the draft's cropped to its committed positions (the tree's entries dropped), which keeps the
invariant of vtcore.speculative: each cache holds a prefix of the committed sequence.

Sampling: lossless tree verification (SpecInfer-style multi-draft rejection) is not implemented,
so a tree with t > 1 in sample mode is refused (VTError); t = 1 with n = s + 1 is the chain and
runs the chain's lossless sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from vtcore import eagle3, models, speculative
from vtcore.errors import VTError
from vtcore.speculative import Clock, GenResult, RunStats, SpecConfig


# ---------------------------------------------------------------- the tree's shape


@dataclass(frozen=True)
class TreeShape:
    steps: int    # s: draft steps, the tree's depth
    topk: int     # t: children per expanded node, nodes expanded per step
    tokens: int   # n: tokens the target verifies per round, the root included

    def __post_init__(self):
        if self.steps < 1 or self.topk < 1:
            raise VTError(f"tree {self.label}: steps and top-k must be >= 1")
        if not 2 <= self.tokens <= 1 + self.candidates:
            raise VTError(f"tree {self.label}: draft tokens n must be 2..{1 + self.candidates} (the root plus at "
                          f"most t + (s-1)*t^2 = {self.candidates} scored children)")

    @property
    def label(self) -> str:
        return f"{self.steps},{self.topk},{self.tokens}"

    @property
    def candidates(self) -> int:
        """Children scored per round: t at depth 1, t^2 at each further depth."""
        return self.topk + (self.steps - 1) * self.topk ** 2

    def head_rows(self, batch: int = 1) -> int:
        """Rows the draft's head computes per round (SGLang): bs * (1 + (s - 1) * t)."""
        return batch * (1 + (self.steps - 1) * self.topk)

    @property
    def is_chain(self) -> bool:
        return self.topk == 1 and self.tokens == self.steps + 1


def parse_tree(text: str) -> TreeShape:
    """'s,t,n' -> TreeShape (VTError naming the text otherwise)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        s, t, n = (int(p) for p in parts)
    except ValueError:
        raise VTError(f"tree {text!r}: expected s,t,n (steps, top-k, draft tokens), e.g. 5,4,8") from None
    return TreeShape(s, t, n)


@dataclass
class TreeStats(RunStats):
    tree: str = ""
    head_rows: list[int] = field(default_factory=list)        # head rows computed per round
    draft_forwards: list[int] = field(default_factory=list)   # draft forwards per round

    @property
    def acceptance_length(self) -> float:
        """New tokens per verify, the bonus token included (SGLang's accept length)."""
        return self.tokens_per_step

    def accepted_by_depth(self, depth: int) -> list[float]:
        """For d = 1..depth: the share of rounds whose accepted path reached depth d."""
        r = max(self.steps, 1)
        return [sum(a >= d for a in self.accepted) / r for d in range(1, depth + 1)]


# ---------------------------------------------------------------- the drafts, tree-wise


def _float_mask(visible: torch.Tensor, dtype) -> torch.Tensor:
    """A HF 4-D additive mask [1, 1, Q, K] from a bool one (True = visible): transformers uses
    a 4-D mask as given, and an additive one suits its eager and SDPA attention alike."""
    m = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    m.masked_fill_(~visible, torch.finfo(dtype).min)
    return m[None, None]


class StandaloneTree:
    """A standalone draft LM drafting a tree through its own KV cache."""

    aux_ids = None

    def __init__(self, draft: speculative.Draft):
        self.chain = speculative.StandaloneProposer(draft)
        self.draft = draft
        self.runner = self.chain.runner
        self.kept = draft.kept
        self.cache = self.runner.cache

    def head(self, h: torch.Tensor) -> torch.Tensor:
        z = h @ self.chain.head_t                # only the kept rows are computed
        if self.draft.bias is not None:
            z = z + self.draft.bias
        return speculative.postprocess_logits(self.draft.model, z).float()

    def prefill(self, seq, n_seq, aux) -> None:
        self.chain.prefill(seq, n_seq, aux)

    def root(self, seq: torch.Tensor, n_seq: int):
        """Feed the committed tail: (the root's head input [H], its state for its children), or
        None when there is nothing to draft from."""
        return self.runner.hidden(seq[self.runner.cached: n_seq][None])[-1], None

    def expand(self, tokens, hidden, positions, visible):
        """Feed frontier nodes (tokens [T] at `positions`, `visible` [T, cache after]): (head
        inputs [T, H], their states for their children)."""
        r = self.runner
        out = r.decoder(input_ids=tokens[None], position_ids=positions[None], use_cache=True,
                        attention_mask=_float_mask(visible, self.draft.head.dtype), **{r.kw: r.cache})
        return out.last_hidden_state[0], None

    @property
    def length(self) -> int:
        return self.runner.cached

    def commit(self, n_seq: int, aux) -> None:
        self.chain.commit(n_seq, aux)


class Eagle3Tree:
    """An EAGLE-3 head drafting a tree: each node is fed its token with its parent's output state
    (vtcore.eagle3's alignment), into the head's own cache under a tree mask."""

    def __init__(self, draft: eagle3.Eagle3Draft):
        self.chain = speculative.Eagle3Proposer(draft)
        self.draft = draft
        self.aux_ids = self.chain.aux_ids
        self.kept = self.chain.kept

    @property
    def cache(self):
        return self.chain.cache

    def prefill(self, seq, n_seq, aux) -> None:
        self.chain.prefill(seq, n_seq, aux)

    def root(self, seq: torch.Tensor, n_seq: int):
        c, d = self.chain, self.draft
        if c.aux is None or c.aux.shape[0] < n_seq - 1 or n_seq < 2:
            return None   # nothing the target has seen yet to draft from (a one-token prompt)
        base = c.cache.length
        h = d(seq[base + 1: n_seq], d.fuse(c.aux[base: n_seq - 1]), c.cache)[-1:]
        c.from_target = c.cache.length
        return h[0], h[0]

    def expand(self, tokens, hidden, positions, visible):
        h = self.draft(tokens, hidden, self.chain.cache, positions=positions, attn_mask=visible)
        return h, h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.draft.logits(h).float()

    @property
    def length(self) -> int:
        return self.chain.cache.length

    def commit(self, n_seq: int, aux) -> None:
        self.chain.commit(n_seq, aux)


def make_tree_proposer(draft) -> StandaloneTree | Eagle3Tree:
    return Eagle3Tree(draft) if isinstance(draft, eagle3.Eagle3Draft) else StandaloneTree(draft)


@dataclass
class Tree:
    """One round's draft tree: every scored child (candidate) in creation order (depth-major)."""

    token: list[int] = field(default_factory=list)     # target id
    parent: list[int] = field(default_factory=list)    # candidate index, -1: the root
    depth: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)   # cumulative log-probability
    head_rows: int = 0
    forwards: int = 0
    draft_iv: list = field(default_factory=list)
    head_iv: list = field(default_factory=list)

    def ancestors(self, i: int) -> list[int]:
        out = []
        while self.parent[i] >= 0:
            i = self.parent[i]
            out.append(i)
        return out

    def choose(self, m: int) -> list[int]:
        """The m best candidates by score (a parent before its child on ties: it is shallower),
        returned in creation order, so every parent comes before its children."""
        order = sorted(range(len(self.token)), key=lambda i: (-self.score[i], self.depth[i], i))[:m]
        return sorted(order)


def draft_tree(prop, seq: torch.Tensor, n_seq: int, shape: TreeShape, depth: int, clock: Clock) -> Tree:
    """Draft one round's tree of at most `depth` levels (see the module doc)."""
    tree = Tree()
    if depth < 1:
        return tree
    a = clock.now()
    r = prop.root(seq, n_seq)
    if r is None:
        return tree
    x, h = r
    ha = clock.now()
    z = prop.head(x)
    hb = clock.now()
    kept = prop.kept
    L0 = prop.length   # the draft's cache: the committed prefix; depth-d nodes at position L0 - 1 + d
    t = min(shape.topk, z.shape[-1])
    v, rows = torch.log_softmax(z, -1).topk(t)
    ids = (kept[rows] if kept is not None else rows).tolist()
    tree.token, tree.parent, tree.depth, tree.score = ids, [-1] * t, [1] * t, v.tolist()
    tree.head_rows, tree.forwards = 1, 1
    src = [h] * t if h is not None else None          # EAGLE-3: the state each node is fed with
    fed: dict[int, int] = {}                           # candidate -> its draft cache index
    frontier = list(range(t))
    tree.draft_iv.append((a, clock.now()))
    tree.head_iv.append((ha, hb))
    dev = seq.device
    for step in range(1, depth):
        a = clock.now()
        L = prop.length
        T = len(frontier)
        visible = torch.zeros(T, L + T, dtype=torch.bool, device=dev)
        visible[:, :L0] = True
        for j, i in enumerate(frontier):
            for anc in tree.ancestors(i):
                visible[j, fed[anc]] = True
            visible[j, L + j] = True
            fed[i] = L + j
        tokens = torch.tensor([tree.token[i] for i in frontier], device=dev)
        positions = torch.full((T,), L0 - 1 + step, device=dev)
        hidden = torch.stack([src[i] for i in frontier]) if src is not None else None
        x, hs = prop.expand(tokens, hidden, positions, visible)
        ha = clock.now()
        z = prop.head(x)
        hb = clock.now()
        tree.head_rows += T
        tree.forwards += 1
        t = min(shape.topk, z.shape[-1])
        v, rows = torch.log_softmax(z, -1).topk(t)                     # [T, t]
        scores = (torch.tensor([tree.score[i] for i in frontier], device=v.device)[:, None] + v).flatten()
        child_ids = (kept[rows] if kept is not None else rows).flatten().tolist()
        first = len(tree.token)
        for c, (tok, sc) in enumerate(zip(child_ids, scores.tolist())):
            tree.token.append(tok)
            tree.parent.append(frontier[c // t])
            tree.depth.append(step + 1)
            tree.score.append(sc)
            if src is not None:
                src.append(hs[c // t])
        best = scores.topk(min(shape.topk, scores.numel())).indices.tolist()   # the best t of the t^2
        frontier = [first + c for c in sorted(best)]
        tree.draft_iv.append((a, clock.now()))
        tree.head_iv.append((ha, hb))
    return tree


# ---------------------------------------------------------------- verify and compaction


def tree_mask(tree: Tree, chosen: list[int], cached: int, tail: int) -> torch.Tensor:
    """bool [tail + m, cached + tail + m]: the committed prefix visible to all, the tail causal,
    each node its ancestors and itself after the tail."""
    m = len(chosen)
    Q = tail + m
    vis = torch.zeros(Q, cached + Q, dtype=torch.bool)
    vis[:, :cached] = True
    vis[:tail, cached: cached + tail] = torch.ones(tail, tail, dtype=torch.bool).tril()
    vis[tail:, cached: cached + tail] = True
    at = {c: j for j, c in enumerate(chosen)}
    for j, c in enumerate(chosen):
        vis[tail + j, cached + tail + j] = True
        for anc in tree.ancestors(c):
            vis[tail + j, cached + tail + at[anc]] = True
    return vis


def gather_cache(cache, index: torch.Tensor) -> None:
    """Keep only the positions `index` (ascending, a path through the tree) of a HF cache."""
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if keys is None or getattr(layer, "sliding_window", None):
            raise VTError(f"tree verification needs a plain dynamic KV cache, not {type(layer).__name__}")
        idx = index.to(keys.device)
        layer.keys = keys.index_select(-2, idx)
        layer.values = layer.values.index_select(-2, idx)


def greedy_path(argmax: list[int], tree: Tree, chosen: list[int]) -> tuple[list[int], int]:
    """(the accepted path as positions in `chosen`, the target's bonus token). argmax[0] is the
    target's choice after the root, argmax[1 + j] after chosen[j]."""
    children: dict[int, dict[int, int]] = {}
    at = {c: j for j, c in enumerate(chosen)}
    for j, c in enumerate(chosen):
        p = tree.parent[c]
        children.setdefault(-1 if p < 0 else at[p], {})[tree.token[c]] = j
    path, cur = [], -1
    while True:
        want = argmax[cur + 1]
        nxt = children.get(cur, {}).get(want)
        if nxt is None:
            return path, want
        path.append(nxt)
        cur = nxt


def _check_vocab(prop, V: int) -> None:
    kept = prop.kept
    if kept is not None and int(kept.max()) >= V:
        raise VTError(f"the draft keeps token id {int(kept.max())}, beyond the target's vocabulary ({V})")
    if kept is None and prop.draft.k > V:
        raise VTError(f"the draft's head has {prop.draft.k} rows but the target's vocabulary has {V}")


@torch.inference_mode()
def tree_generate(target, draft, prompt_ids, cfg: SpecConfig, shape: TreeShape,
                  should_stop: Callable[[], bool] | None = None) -> GenResult:
    """Generate with tree drafting and tree verification (module doc). `cfg.gamma` is unused."""
    if cfg.mode != "greedy":
        if shape.is_chain:
            c = SpecConfig(gamma=shape.steps, max_new_tokens=cfg.max_new_tokens, mode=cfg.mode,
                           temperature=cfg.temperature, seed=cfg.seed, eos_ids=cfg.eos_ids)
            return speculative.speculative_generate(target, draft, prompt_ids, c, should_stop)
        raise VTError(f"tree {shape.label}: sampling with a tree (top-k > 1) needs lossless multi-draft "
                      "verification (SpecInfer-style), which is not implemented; use --mode greedy, or a chain "
                      f"(t = 1, n = s + 1)")
    out_emb = target.get_output_embeddings()
    device = out_emb.weight.device
    clock = Clock(device)
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).flatten().to(device)
    if prompt.numel() == 0:
        raise VTError("empty prompt")
    prop = make_tree_proposer(draft)
    _check_vocab(prop, int(out_emb.weight.shape[0]))
    dec = models.decoder_of(target)
    kw = models.cache_kwarg(dec)
    cache = models.new_cache(target)
    stats = TreeStats(prompt_tokens=int(prompt.numel()), gamma=shape.steps, tree=shape.label)
    seq = torch.empty(prompt.numel() + cfg.max_new_tokens + shape.steps + 1, dtype=torch.long, device=device)
    seq[: prompt.numel()] = prompt
    n_seq = int(prompt.numel())

    def forward(ids, positions=None, mask=None):
        if prop.aux_ids is not None:
            return eagle3.target_forward(target, ids[0], prop.aux_ids, cache=cache, attention_mask=mask,
                                         position_ids=positions)
        extra = {} if positions is None else {"position_ids": positions, "attention_mask": mask}
        return dec(input_ids=ids, use_cache=True, **{kw: cache}, **extra).last_hidden_state[0], None

    clock.sync()
    t_start = time.perf_counter()
    marks = []
    prefill = None
    if n_seq > 1:
        a = clock.now()
        _, aux = forward(seq[None, : n_seq - 1])
        prop.prefill(seq, n_seq, aux)
        prefill = (a, clock.now())
    out: list[int] = []
    while len(out) < cfg.max_new_tokens:
        if should_stop is not None and should_stop():
            break
        depth = min(shape.steps, cfg.max_new_tokens - len(out) - 1)   # a round always yields >= 1 token
        tree = draft_tree(prop, seq, n_seq, shape, depth, clock)
        chosen = tree.choose(shape.tokens - 1)
        a = clock.now()
        cached = cache.get_seq_length()
        tail = n_seq - cached
        ids = torch.cat([seq[cached: n_seq], torch.tensor([tree.token[c] for c in chosen], dtype=torch.long,
                                                           device=device)])
        pos = torch.cat([torch.arange(cached, n_seq, device=device),
                         torch.tensor([n_seq - 1 + tree.depth[c] for c in chosen], dtype=torch.long, device=device)])
        mask = _float_mask(tree_mask(tree, chosen, cached, tail).to(device), out_emb.weight.dtype)
        h, aux = forward(ids[None], pos[None], mask)
        logits = speculative.postprocess_logits(target, out_emb(h[tail - 1:])).float()
        marks.append((tree.draft_iv, tree.head_iv, (a, clock.now())))
        path, bonus = greedy_path(logits.argmax(-1).tolist(), tree, chosen)
        stats.accepted.append(len(path))
        stats.drafted.append(len(chosen))
        stats.head_rows.append(tree.head_rows)
        stats.draft_forwards.append(tree.forwards)
        new = [tree.token[chosen[j]] for j in path] + [bonus]
        new = new[: cfg.max_new_tokens - len(out)]
        stop = next((i for i, x in enumerate(new) if x in cfg.eos_ids), None)
        if stop is not None:
            new = new[: stop + 1]
        # compact the target's cache (and the aux states) to the committed tail and the accepted path
        keep = torch.cat([torch.arange(n_seq, device=device),
                          torch.tensor([n_seq + j for j in path], dtype=torch.long, device=device)])
        gather_cache(cache, keep)
        if aux is not None:
            aux = aux[torch.cat([torch.arange(tail), torch.tensor([tail + j for j in path], dtype=torch.long)
                                 ]).to(aux.device)]
        seq[n_seq: n_seq + len(new)] = torch.tensor(new, dtype=torch.long, device=device)
        n_seq += len(new)
        out.extend(new)
        models.crop_cache(cache, n_seq - 1)
        prop.commit(n_seq, aux)
        if stop is not None:
            break

    speculative.finish_stats(stats, clock, t_start, prefill, marks, len(out))
    return GenResult(out, stats, cache, prop.cache)


def summarize(stats_list: list[TreeStats], depth: int) -> dict[str, Any]:
    """A tree run's figures over runs: acceptance length (tokens per verify), accepted tokens by
    depth, head rows and draft forwards per round, the head's share of draft time."""
    rounds = sum(s.steps for s in stats_list)
    acc = [a for s in stats_list for a in s.accepted]
    draft = sum(sum(s.draft_s) for s in stats_list)
    head = sum(sum(s.head_s) for s in stats_list)
    return {
        "acceptance_length": sum(s.new_tokens for s in stats_list) / max(rounds, 1),
        "accepted_per_round": sum(acc) / max(rounds, 1),
        "accepted_by_depth": [sum(a >= d for a in acc) / max(rounds, 1) for d in range(1, depth + 1)],
        "head_rows_per_round": sum(sum(s.head_rows) for s in stats_list) / max(rounds, 1),
        "draft_forwards_per_round": sum(sum(s.draft_forwards) for s in stats_list) / max(rounds, 1),
        "verified_per_round": 1 + sum(sum(s.drafted) for s in stats_list) / max(rounds, 1),
        "head_share": head / draft if draft > 0 else None,
        "draft_ms_per_round": 1000 * draft / max(rounds, 1),
        "target_ms_per_round": 1000 * sum(sum(s.target_s) for s in stats_list) / max(rounds, 1),
    }
