"""Objectives over the draft vocabulary k and their exact solution (the TPE studies: vtcore.studies).

- Utility (the seed paper): U(k) = alpha * C(k) + (1 - alpha) * R(k), s.t. C(k) >= min_coverage and
  k_min <= k <= k_max.
- Speed-up (Leviathan et al. 2023): a(k) = a0 * C(k), c(k) = t_draft(k) / t_target =
  c_full * (1 - R(k)), S = (1 - a^(gamma+1)) / ((1 - a) * (gamma * c(k) + 1)); space (k, gamma).
- Pareto: maximise C and R together.
- Speed-up per serving engine (`engine` sglang | vllm | chain; vtcore.enginecost prices the
  round): chain and vLLM over (k, gamma), vLLM adding its full-vocabulary scatter per drafted
  token; SGLang over (k, s, t, n), the tree's acceptance length from per-depth rank
  probabilities (a replay's, or a0 * C(k) with geometric ranks) and "gamma" standing for the
  tree's depth s, the best (t, n) taken at each (k, s).

Every objective is solved exactly by one vectorised sweep over every integer k (and every
gamma); that is the ground truth each TPE result (vtcore.studies) is compared with (regret). TPE samples k on a
log scale by default: C(k) changes over orders of magnitude of k (token frequencies are
Zipf-like), so uniform sampling of 151,936 values would spend almost every trial on the flat
tail.

Arrays indexed by k have length V + 1 (k = 0..V), V the draft's own vocabulary; a coverage
curve made with a smaller tokenizer is padded with 1.0 (ids past the tokenizer are never used).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vtcore.errors import VTError
from vtcore.files import array_limit

OBJECTIVES = ("utility", "speedup", "pareto")


# ---------------------------------------------------------------------------------------------
# Objective functions (vectorised)

def utility(coverage: np.ndarray, reduction: np.ndarray, alpha: float) -> np.ndarray:
    return alpha * np.asarray(coverage) + (1.0 - alpha) * np.asarray(reduction)


def predicted_speedup(a: np.ndarray | float, gamma: np.ndarray | int,
                      cost_ratio: np.ndarray | float, verify_cost: float = 1.0) -> np.ndarray:
    """Expected speed-up of speculative decoding over target-only decoding (Leviathan et al.
    2023, eq. for walltime improvement): per-token acceptance a, draft length gamma, cost ratio
    c = t_draft / t_target. Broadcasts over its arguments; a = 1 gives (gamma + 1) / (gamma c + 1).
    verify_cost: a (gamma+1)-token target forward in one-token target steps; the paper takes 1
    (true on a GPU), a CPU pays more (the benchmark measures it)."""
    a, g, c = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(gamma, dtype=np.float64),
                                  np.asarray(cost_ratio, dtype=np.float64))
    one = np.isclose(a, 1.0)
    safe = np.where(one, 0.5, a)
    tokens = np.where(one, g + 1.0, (1.0 - safe ** (g + 1.0)) / (1.0 - safe))
    return tokens / (g * c + verify_cost)


def pareto_mask(coverage: np.ndarray, reduction: np.ndarray) -> np.ndarray:
    """True where (C, R) is not dominated (both maximised). Of identical points the first is kept.
    O(n log n): sorted by R descending, a point is on the front iff its C beats every point
    before it."""
    C = np.asarray(coverage, dtype=np.float64)
    R = np.asarray(reduction, dtype=np.float64)
    idx = np.arange(C.shape[0])
    order = np.lexsort((idx, -C, -R))
    Cs = C[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(Cs)[:-1]])
    mask = np.zeros(C.shape[0], dtype=bool)
    mask[order[Cs > best_before]] = True
    return mask


def hypervolume_2d(coverage: np.ndarray, reduction: np.ndarray, ref: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area dominated by the (C, R) points above the reference point (both maximised)."""
    C = np.asarray(coverage, dtype=np.float64)
    R = np.asarray(reduction, dtype=np.float64)
    keep = (C > ref[0]) & (R > ref[1])
    C, R = C[keep], R[keep]
    if C.size == 0:
        return 0.0
    m = pareto_mask(C, R)
    C, R = C[m], R[m]
    o = np.argsort(C)
    C, R = C[o], R[o]     # C ascending, so R descending along a front
    widths = np.diff(np.concatenate([[ref[0]], C]))
    return float(np.sum(widths * (R - ref[1])))


def pad_curve(curve: np.ndarray, vocab: int) -> np.ndarray:
    """A coverage curve (length V_tok + 1) extended to the draft's vocabulary (length vocab + 1)."""
    curve = np.asarray(curve, dtype=np.float64)
    n = curve.shape[0] - 1
    if n > vocab:
        raise VTError(f"the coverage curve has {n:,} token ids but the draft has only {vocab:,} vocabulary rows")
    if n == vocab:
        return curve
    return np.concatenate([curve, np.full(vocab - n, curve[-1])])


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The problem and its exact solution

@dataclass
class Problem:
    coverage: np.ndarray            # C(k), k = 0..V
    reduction: np.ndarray           # R(k), k = 0..V
    objective: str = "utility"
    alpha: float = 0.5
    min_coverage: float = 0.0
    k_min: int = 1
    k_max: int | None = None        # None: V
    k_log: bool = True
    a0: float = 0.7                 # acceptance of the draft with its full vocabulary
    cost_ratio_full: float | None = None   # t_draft(V) / t_target (speed-up objective)
    verify_costs: tuple[float, ...] | None = None   # verify of gamma+1 tokens / one target step, for
                                                    # gamma = 1, 2, ... (None: 1, a GPU's cost)
    gamma_min: int = 1
    gamma_max: int = 8
    coverage_source: str = "heldout"
    latency_source: str = "flops"
    counts_sha256: str | None = None   # the counts C(k) came from (countsfile.counts_sha256)
    accepted: np.ndarray | None = field(default=None, repr=False)   # [G, V+1]: replayed accepted draft
    # tokens per step of order[:k] at gamma = 1..G (vtcore.acceptance); None: the a0 * C(k) model
    acceptance_source: str | None = None   # where `accepted` came from (an acceptance file)
    engine: str | None = None       # sglang | vllm | chain (vtcore.enginecost); None: the formula above
    batch: int = 1                  # requests per batch (engine models)
    parallel_tokens: float = 128.0  # tokens one forward runs at the cost of one (1: linear, a CPU)
    scatter_cost: float = 0.0       # vLLM: one full-vocabulary scatter / one target step at batch 1
    topk_max: int = 4               # SGLang: t = 1..topk_max
    tokens_max: int = 16            # SGLang: n = 2..tokens_max
    ranks: np.ndarray | None = field(default=None, repr=False)   # [D, topk_max, V+1] replayed rank
    # probabilities of the target's token among the kept rows (enginecost.replay_ranks); None: geometric
    tree_tables: dict = field(default_factory=dict, repr=False, compare=False)   # cache of tree_accepted_at

    def __post_init__(self) -> None:
        self.coverage = np.asarray(self.coverage, dtype=np.float64)
        self.reduction = np.asarray(self.reduction, dtype=np.float64)
        if self.k_max is None:
            self.k_max = self.vocab
        self.validate()

    @property
    def vocab(self) -> int:
        return int(self.coverage.shape[0] - 1)

    def validate(self) -> None:
        V = self.vocab
        if self.objective not in OBJECTIVES:
            raise VTError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.reduction.shape != self.coverage.shape:
            raise VTError(f"latency reduction covers {self.reduction.shape[0] - 1:,} k values, coverage {V:,}")
        if not 0.0 <= self.alpha <= 1.0 or math.isnan(self.alpha):
            raise VTError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise VTError(f"--min-coverage must be in [0, 1], got {self.min_coverage}")
        if self.k_min < 1:
            raise VTError(f"--k-min must be >= 1, got {self.k_min}")
        if self.k_max > V:
            raise VTError(f"--k-max {self.k_max:,} exceeds the draft's vocabulary ({V:,})")
        if self.k_min > self.k_max:
            raise VTError(f"--k-min {self.k_min:,} is larger than --k-max {self.k_max:,}")
        reachable = float(self.coverage[self.k_min:self.k_max + 1].max())
        if reachable < self.min_coverage:
            raise VTError(f"no k in [{self.k_min:,}, {self.k_max:,}] reaches coverage {self.min_coverage} "
                          f"({self.coverage_source}); the best reachable is {reachable:.4f} at k={self.k_max:,}")
        if self.objective == "speedup":
            if not 0.0 < self.a0 <= 1.0:
                raise VTError(f"--a0 (acceptance with the full vocabulary) must be in (0, 1], got {self.a0}")
            if self.cost_ratio_full is None or not self.cost_ratio_full > 0:
                raise VTError("the speed-up objective needs the draft/target cost ratio: give --cost-ratio, or "
                              "--t-target-ms with a latency profile, or a draft preset that names its target")
            if not 1 <= self.gamma_min <= self.gamma_max:
                raise VTError(f"gamma range must satisfy 1 <= gamma_min <= gamma_max, got "
                              f"{self.gamma_min}..{self.gamma_max}")
            cells = (self.k_max - self.k_min + 1) * (self.gamma_max - self.gamma_min + 1)
            if cells * 32 > array_limit():   # solve_exact holds a few float64 [gamma, k] arrays at once
                raise VTError(f"the exact sweep over {self.k_max - self.k_min + 1:,} k values x "
                              f"{self.gamma_max - self.gamma_min + 1} gamma values needs {cells * 32 / 2**20:,.0f} MB, "
                              f"over the limit of {array_limit() / 2**20:,.0f} MB (VTCORE_MAX_ARRAY_MB): lower "
                              "--gamma-max or --k-max")
            if self.accepted is not None:
                self.accepted = np.asarray(self.accepted, dtype=np.float64)
                if self.accepted.ndim != 2 or self.accepted.shape[0] < self.gamma_max or self.accepted.shape[1] != V + 1:
                    raise VTError(f"the acceptance table is {list(self.accepted.shape)}, need [>= {self.gamma_max}, "
                                  f"{V + 1}] (gamma 1..gamma_max, k 0..{V})")
            if self.verify_costs is not None and len(self.verify_costs) < self.gamma_max:
                raise VTError(f"verify costs are known up to gamma {len(self.verify_costs)}, not {self.gamma_max}")
            self._validate_engine()
        elif self.engine is not None:
            raise VTError("--engine-model prices the speed-up objective: give --objective speedup")

    def _validate_engine(self) -> None:
        from vtcore.enginecost import ENGINES

        if self.engine is None:
            return
        if self.engine not in ENGINES:
            raise VTError(f"engine model must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if int(self.batch) < 1:
            raise VTError(f"--batch-size must be >= 1, got {self.batch}")
        if not self.parallel_tokens >= 1:
            raise VTError(f"--parallel-tokens must be >= 1, got {self.parallel_tokens}")
        if not self.scatter_cost >= 0:
            raise VTError(f"--scatter-cost must be >= 0, got {self.scatter_cost}")
        if self.engine == "sglang":
            if self.topk_max < 1 or self.tokens_max < 2:
                raise VTError(f"--topk-max must be >= 1 and --tokens-max >= 2, got {self.topk_max} and "
                              f"{self.tokens_max}")
            if self.ranks is not None:
                self.ranks = np.asarray(self.ranks, dtype=np.float64)
                if self.ranks.ndim != 3 or self.ranks.shape[0] < self.gamma_max or \
                        self.ranks.shape[1] < self.topk_max or self.ranks.shape[2] != self.vocab + 1:
                    raise VTError(f"the rank table is {list(self.ranks.shape)}, need [>= {self.gamma_max}, "
                                  f">= {self.topk_max}, {self.vocab + 1}]")

    @property
    def acceptance_model(self) -> str:
        if self.engine == "sglang":
            return "geometric ranks, a0*C(k)" if self.ranks is None else "replayed ranks"
        return "a0*C(k)" if self.accepted is None else "replay"

    def tokens_per_step(self, k: np.ndarray | int, gamma: np.ndarray | int) -> np.ndarray:
        """Expected new tokens per target step: 1 + the replayed accepted tokens of order[:k] at
        gamma when an acceptance table is given, else (1 - a^(g+1)) / (1 - a) with a = a0 C(k)."""
        if self.accepted is None:
            return predicted_speedup(self.a0 * self.coverage[k], gamma, 0.0, 1.0)
        return 1.0 + self.accepted[np.asarray(gamma) - 1, k]

    def speedup(self, k: np.ndarray | int, gamma: np.ndarray | int) -> np.ndarray:
        """The speed-up model at (k, gamma): tokens per step / (gamma c(k) + verify cost); with an
        engine model, that engine's round (for SGLang gamma is the tree's depth s, at the best
        (t, n) for it)."""
        if self.engine == "sglang":
            return self.tree_speedup(k, gamma)[0]
        g = np.asarray(gamma)
        draft = self.cost_ratio(k)
        if self.engine == "vllm":
            draft = draft + self.scatter_per_token()
        return self.tokens_per_step(k, gamma) / (g * draft + self.verify_cost(gamma))

    def verify_cost(self, gamma: np.ndarray | int) -> np.ndarray | float:
        if self.verify_costs is None:
            if self.engine is None:
                return 1.0
            return np.vectorize(self._roofline, otypes=[np.float64])(np.asarray(gamma) + 1)
        return np.asarray(self.verify_costs, dtype=np.float64)[np.asarray(gamma) - 1]

    def _roofline(self, tokens) -> float:
        from vtcore.enginecost import roofline

        return roofline(tokens, int(self.batch), self.parallel_tokens)

    def scatter_per_token(self) -> float:
        """vLLM's scatter of the batch's rows per drafted token, in target steps at this batch."""
        return self.scatter_cost * self.batch / max(1.0, self.batch / self.parallel_tokens)

    def tree_accepted_at(self, ks: np.ndarray, t: int, ns: np.ndarray | None = None) -> np.ndarray:
        """[gamma_max, len(ns), len(ks)]: enginecost.tree_accepted at these k for top-t and the
        token budgets `ns` (None: n = 0..tokens_max).
        Geometric ranks depend on k only through a = a0 C(k): the table is made on 4,097 values
        of a in [0, 1] and interpolated. Replayed ranks: at every k when V <= 20,000, else at
        2,048 small k and 8,192 log-spaced ones, each k taking the table of the largest grid k
        at or below it."""
        from vtcore import enginecost

        S, N = self.gamma_max, self.tokens_max
        key = (t, S, N, self.a0, None if self.ranks is None else id(self.ranks))
        if key not in self.tree_tables:
            if self.ranks is None:
                support = np.linspace(0.0, 1.0, 4097)
                ranks = enginecost.geometric_ranks(support, t, S)
            else:
                V = self.vocab
                support = np.arange(V + 1) if V <= 20000 else np.unique(np.concatenate(
                    [np.arange(2048), np.round(np.geomspace(2048, V, 8192)).astype(np.int64), [V]]))
                ranks = self.ranks[:S, :t][:, :, support]
            self.tree_tables = {k: v for k, v in self.tree_tables.items() if k[1:] == key[1:]}
            self.tree_tables[key] = (support, enginecost.tree_accepted(ranks, t, S, N))
        support, table = self.tree_tables[key]
        if ns is not None:
            table = table[:, ns]
        if self.ranks is None:
            a = self.a0 * self.coverage[ks]
            i = np.clip(np.searchsorted(support, a, side="right") - 1, 0, support.size - 2)
            w = (a - support[i]) / (support[i + 1] - support[i])
            return table[:, :, i] * (1 - w) + table[:, :, i + 1] * w
        return table[:, :, np.searchsorted(support, ks, side="right") - 1]

    def tree_speedup(self, k: np.ndarray | int, steps: np.ndarray | int,
                     chunk: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SGLang's speed-up at (k, s), maximised over t = 1..topk_max and n = 2..tokens_max
        (n <= 1 + t + (s - 1) t^2): (speed-up, best t, best n), broadcast over k and s. A round
        costs c(k) (1 + (s - 1) roofline(t)) + roofline(n) target steps (vtcore.enginecost)."""
        k, steps = np.broadcast_arrays(np.asarray(k, dtype=np.int64), np.asarray(steps, dtype=np.int64))
        uk, inv = np.unique(k, return_inverse=True)
        S, N = self.gamma_max, self.tokens_max
        best = np.full((S, uk.size), -np.inf)
        best_t = np.ones((S, uk.size), dtype=np.int64)
        best_n = np.full((S, uk.size), 2, dtype=np.int64)
        s_ax = np.arange(1, S + 1)[:, None]
        n_ax = np.arange(N + 1)[None, :]
        verify = np.array([self._roofline(max(n, 1)) for n in range(N + 2)])
        for lo in range(0, uk.size, chunk):
            ks = uk[lo: lo + chunk]
            c = self.cost_ratio(ks)
            for t in range(1, self.topk_max + 1):
                fit = np.minimum(1 + t + (s_ax - 1) * t * t, N)                  # [S, 1]
                fits = (n_ax >= 2) & (n_ax <= fit)                                # [S, N+1]
                # acceptance never falls with n: where n + 1 verifies at the same cost, n + 1 is
                # at least as good, so only the n before a costlier verify (or the last) can win
                fits &= (verify[1:][None, :] > verify[:-1][None, :]) | (n_ax == fit)
                ns = np.flatnonzero(fits.any(axis=0))
                acc = self.tree_accepted_at(ks, t, ns)                            # [S, len(ns), K]
                draft = c[None, None, :] * (1 + (s_ax - 1) * self._roofline(t))[:, :, None]
                sp = (1.0 + acc) / (draft + verify[ns][None, :, None])
                sp = np.where(fits[:, ns][:, :, None], sp, -np.inf)
                ni = ns[np.argmax(sp, axis=1)]                                    # [S, K]
                v = sp.max(axis=1)
                better = v > best[:, lo: lo + chunk]
                best[:, lo: lo + chunk] = np.where(better, v, best[:, lo: lo + chunk])
                best_t[:, lo: lo + chunk] = np.where(better, t, best_t[:, lo: lo + chunk])
                best_n[:, lo: lo + chunk] = np.where(better, ni, best_n[:, lo: lo + chunk])
        ki = inv.reshape(k.shape)
        si = steps - 1
        return best[si, ki], best_t[si, ki], best_n[si, ki]

    def cost_ratio(self, k: np.ndarray | int) -> np.ndarray:
        """c(k) = t_draft(k) / t_target = c_full * (1 - R(k))."""
        return self.cost_ratio_full * (1.0 - self.reduction[k])

    def evaluate(self, k: int, gamma: int | None = None) -> dict[str, Any]:
        """Metrics of one (k, gamma) point, as a trial records them."""
        c, r = float(self.coverage[k]), float(self.reduction[k])
        out = {"coverage": c, "latency_reduction": r, "utility": float(utility(c, r, self.alpha)),
               "feasible": c >= self.min_coverage}
        if self.objective == "speedup":
            g = int(gamma if gamma is not None else self.gamma_min)
            out["gamma"] = g
            if self.engine == "sglang":
                sp, t, n = self.tree_speedup(k, g)
                out.update(speedup=float(sp), tree=[g, int(t), int(n)])
            else:
                out["speedup"] = float(self.speedup(k, g))
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What a stored study was made for: resuming with anything else would mix two problems."""
        fp = {"objective": self.objective, "alpha": self.alpha, "min_coverage": self.min_coverage,
              "k_min": int(self.k_min), "k_max": int(self.k_max), "k_log": self.k_log,
              "coverage_sha": _sha(self.coverage), "reduction_sha": _sha(self.reduction),
              "coverage_source": self.coverage_source, "latency_source": self.latency_source}
        if self.objective == "speedup":
            if self.verify_costs is not None:
                fp["verify_costs"] = list(self.verify_costs)
            fp.update(a0=self.a0, cost_ratio_full=self.cost_ratio_full,
                      gamma_min=self.gamma_min, gamma_max=self.gamma_max)
            if self.accepted is not None:
                fp.update(acceptance_model="replay", accepted_sha=_sha(self.accepted))
            if self.engine is not None:
                fp.update(engine=self.engine, batch=int(self.batch), parallel_tokens=self.parallel_tokens,
                          scatter_cost=self.scatter_cost)
                if self.engine == "sglang":
                    fp.update(topk_max=self.topk_max, tokens_max=self.tokens_max)
                    if self.ranks is not None:
                        fp["ranks_sha"] = _sha(self.ranks)
        if self.counts_sha256 is not None:   # export and the Frontier compare it with the counts in use
            fp["counts_sha256"] = self.counts_sha256
        return fp


@dataclass
class ExactResult:
    best_k: int
    best_gamma: int | None
    best_value: float           # utility, or speed-up
    coverage: float
    latency_reduction: float
    utility: float
    frontier_k: np.ndarray      # feasible Pareto-optimal k (ascending)
    n_evaluated: int
    seconds: float
    speedup: float | None = None
    best_gamma_by_k: np.ndarray | None = field(default=None, repr=False)   # speed-up: argmax gamma per k
    best_tree: tuple[int, int, int] | None = None   # SGLang engine model: (s, t, n) at best_k


def solve_exact(p: Problem) -> ExactResult:
    """Every integer k in [k_min, k_max] (and every gamma) in one vectorised pass."""
    t0 = time.perf_counter()
    ks = np.arange(p.k_min, p.k_max + 1)
    C, R = p.coverage[ks], p.reduction[ks]
    feasible = C >= p.min_coverage
    U = utility(C, R, p.alpha)
    best_gamma = None
    gamma_by_k = None
    speedup = None
    n = ks.size
    if p.objective == "speedup":
        gammas = np.arange(p.gamma_min, p.gamma_max + 1)[:, None]
        S = p.speedup(ks[None, :], gammas)   # [G, K]
        gi = np.argmax(S, axis=0)
        value = S[gi, np.arange(n)]
        gamma_by_k = gammas[gi, 0]
        n *= gammas.shape[0]
    else:
        value = U   # the Pareto objective's pick is its utility optimum (always on the front)
    i = int(np.argmax(np.where(feasible, value, -np.inf)))
    best_tree = None
    if p.objective == "speedup":
        best_gamma = int(gamma_by_k[i])
        speedup = float(value[i])
        if p.engine == "sglang":
            _, t, nn = p.tree_speedup(int(ks[i]), best_gamma)
            best_tree = (best_gamma, int(t), int(nn))
    front = ks[feasible][pareto_mask(C[feasible], R[feasible])]
    return ExactResult(best_k=int(ks[i]), best_gamma=best_gamma, best_value=float(value[i]),
                       coverage=float(C[i]), latency_reduction=float(R[i]), utility=float(U[i]),
                       frontier_k=np.sort(front), n_evaluated=int(n), seconds=time.perf_counter() - t0,
                       speedup=speedup, best_gamma_by_k=gamma_by_k, best_tree=best_tree)


def thin_frontier(front_k: np.ndarray, n: int = 200, must: tuple[int, ...] = ()) -> np.ndarray:
    """At most about n frontier points, log-spaced in k, always keeping both ends and `must`."""
    front_k = np.sort(np.asarray(front_k, dtype=np.int64))
    if front_k.size <= n:
        return front_k
    targets = np.geomspace(front_k[0], front_k[-1], n)
    idx = np.clip(np.searchsorted(front_k, targets), 0, front_k.size - 1)
    keep = set(front_k[idx].tolist()) | {int(front_k[0]), int(front_k[-1])}
    on_front = set(front_k.tolist())
    keep |= {int(k) for k in must if int(k) in on_front}
    return np.array(sorted(keep), dtype=np.int64)
