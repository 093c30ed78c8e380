"""Re-ranking over arrays: alpha-weighted query expansion (aQE) at query time and database-side
augmentation (DBA) at index time (Radenović 2018; average query expansion: Chum 2007).

Both replace a vector by the weighted mean of itself (weight 1) and its n nearest stored
vectors (weights: cosine similarity^alpha, negative similarities count as 0), re-normalised for
cosine indexes; l2 indexes keep the weighted mean in their own space. Pure numpy + FAISS: the
searcher, the index writer and eval-retrieval call these (see docs/references.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np

from ..errors import ConfigError
from ..settings import finite, from_dict, require, setting

METHODS = ("none", "aqe")
MAX_N = 1000  # neighbours per vector; more only averages the query away and costs memory
BLOCK = 256 * 2**20  # bytes of gathered neighbour vectors held at once
RERANK_EXAMPLE = "aqe:n=5,alpha=3"
DBA_EXAMPLE = "n=5,alpha=3"


@dataclass(frozen=True)
class Rerank:
    """Query-side re-ranking (`--rerank`): none, or aqe with its n and alpha."""

    method: str = setting("none", "none, or aqe: search again with the expanded query.", "Radenović 2018")
    n: int = setting(5, "Top results averaged into the query.", "Chum 2007")
    alpha: float = setting(
        3.0, "Each result weighs its cosine similarity to the query ^ alpha (0: a plain average).", "Radenović 2018"
    )

    def __post_init__(self):
        require(self.method in METHODS, f"--rerank {self.method!r}: use none or {RERANK_EXAMPLE}")
        _check_n_alpha(self.n, self.alpha, "--rerank", RERANK_EXAMPLE)

    @property
    def on(self) -> bool:
        return self.method != "none"

    def __str__(self) -> str:
        return "none" if self.method == "none" else f"{self.method}:n={self.n},alpha={self.alpha:g}"


@dataclass(frozen=True)
class Dba:
    """Database-side augmentation (`--dba`): each stored vector's n and alpha."""

    n: int = setting(5, "Nearest indexed neighbours averaged into each stored vector.", "Radenović 2018")
    alpha: float = setting(
        3.0, "Each neighbour weighs its cosine similarity ^ alpha (0: a plain average).", "Radenović 2018"
    )

    def __post_init__(self):
        _check_n_alpha(self.n, self.alpha, "--dba", DBA_EXAMPLE)

    def __str__(self) -> str:
        return f"n={self.n},alpha={self.alpha:g}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, value, where: str) -> Dba | None:
        """The manifest's `dba` (absent or null: off), read strictly."""
        if value is None:
            return None
        try:
            return from_dict(cls, value, where)
        except ConfigError as e:
            text = str(e) if str(e).startswith(where) else f"{where}: {e}"
            raise ConfigError(f"{text}; or rebuild the index with --rebuild") from None


def _check_n_alpha(n, alpha, option: str, example: str) -> None:
    text = f"n={n!r},alpha={alpha!r}"
    ok_n = isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_N
    require(ok_n, f"{option} {text}: n must be a whole number from 1 to {MAX_N}, e.g. {option} {example}")
    require(finite(alpha, 0), f"{option} {text}: alpha must be a number 0 or more, e.g. {option} {example}")


def parse_rerank(value) -> Rerank:
    """`--rerank` text (none, aqe, aqe:n=5,alpha=3), a Rerank, or None (none)."""
    if isinstance(value, Rerank):
        return value
    text = "none" if value is None else str(value).strip()
    method, _, rest = text.partition(":")
    method = method.strip().lower()
    if method in ("none", "off"):
        require(not rest.strip(), f"--rerank {text!r}: none takes no settings; use none or {RERANK_EXAMPLE}")
        return Rerank()
    require(method in METHODS, f"--rerank {text!r}: unknown method {method!r}; use none or {RERANK_EXAMPLE}")
    return Rerank(method, **_keys(rest, "--rerank", text, RERANK_EXAMPLE))


def parse_dba(value) -> Dba | None:
    """`--dba` text (none, off, n=5, n=5,alpha=3), a Dba, or None (off)."""
    if value is None or isinstance(value, Dba):
        return value
    text = str(value).strip()
    if text.lower() in ("none", "off"):
        return None
    require(bool(text), f"--dba {text!r}: give none or {DBA_EXAMPLE}")
    return Dba(**_keys(text, "--dba", text, DBA_EXAMPLE))


def _keys(rest: str, option: str, text: str, example: str) -> dict:
    """n=N and alpha=A from 'n=5,alpha=3' (either may be left out: its default), checked."""
    out = {}
    for part in rest.split(",") if rest.strip() else []:
        key, eq, val = (s.strip() for s in part.partition("="))
        key = key.lower()
        require(
            bool(eq) and key in ("n", "alpha"),
            f"{option} {text!r}: {part.strip()!r} is not n=N or alpha=A; e.g. {option} {example}",
        )
        require(key not in out, f"{option} {text!r}: {key} is given twice; e.g. {option} {example}")
        out[key] = val
    n, alpha = out.get("n", "1"), out.get("alpha", "0")  # left out: the defaults, valid
    require(
        n.isdigit() and 1 <= int(n) <= MAX_N,
        f"{option} {text!r}: n must be a whole number from 1 to {MAX_N}, e.g. {option} {example}",
    )
    try:
        ok = finite(float(alpha), 0)
    except ValueError:
        ok = False
    require(ok, f"{option} {text!r}: alpha must be a number 0 or more, e.g. {option} {example}")
    return {key: int(val) if key == "n" else float(val) for key, val in out.items()}


# ---- arrays ----------------------------------------------------------------------------------
def unit(x: np.ndarray) -> np.ndarray:
    """float32 rows of length 1 (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def weighted_mean(anchors: np.ndarray, neighbours: np.ndarray, valid: np.ndarray, alpha: float, metric: str):
    """Each anchor (Q, d) replaced by the mean of itself (weight 1) and its valid neighbours
    (Q, n, d), each weighing max(cosine similarity, 0)^alpha [source: Radenović 2018]: unit length
    for cosine; for l2 the weighted mean of the vectors as they are, so it stays in their space."""
    a, b = unit(anchors), unit(neighbours)
    sims = np.matmul(b, a[:, :, None])[:, :, 0]  # (Q, n) cosine similarities
    weights = np.where(valid, np.clip(sims, 0, None) ** alpha, 0).astype(np.float32)
    if metric == "cosine":
        return unit(a + np.matmul(weights[:, None, :], b)[:, 0])
    x = np.asarray(anchors, np.float32)
    total = x + np.matmul(weights[:, None, :], np.asarray(neighbours, np.float32))[:, 0]
    return (total / (1.0 + weights.sum(1, keepdims=True))).astype(np.float32)


def as_distance(scores: np.ndarray, metric: str) -> np.ndarray:
    """FAISS's scores as distances, smaller = nearer: 1 - cosine, or squared L2."""
    return (1.0 - scores) if metric == "cosine" else scores


def neighbours(index: faiss.Index, vectors: np.ndarray, n: int, own=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of the n stored vectors nearest each row of `vectors` (as stored:
    unit for cosine), leaving out the row's own id (`own`, one per row); -1 / inf past the end."""
    q = len(vectors)
    if not q or not index.ntotal:
        return np.full((q, n), -1, np.int64), np.full((q, n), np.inf, np.float32)
    scores, ids = index.search(np.ascontiguousarray(vectors, np.float32), min(n + 1, index.ntotal))
    own = np.full(q, -2, np.int64) if own is None else np.asarray(own, np.int64)
    keep = np.argsort((ids == own[:, None]) | (ids < 0), axis=1, kind="stable")[:, :n]  # own id and gaps last
    ids, scores = np.take_along_axis(ids, keep, 1), np.take_along_axis(scores, keep, 1)
    ids = np.where(ids == own[:, None], -1, ids)
    pad = n - ids.shape[1]
    ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    dist = np.pad(as_distance(scores, _metric_of(index)), ((0, 0), (0, pad)), constant_values=np.inf)
    return ids, np.where(ids >= 0, dist, np.inf).astype(np.float32)


def _metric_of(index: faiss.Index) -> str:
    return "cosine" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"


def raw_index(dim: int, metric: str) -> faiss.Index:
    """Exact vectors under ids: what DBA's neighbours are found in (unit vectors for cosine)."""
    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    return faiss.IndexIDMap2(faiss.IndexFlat(dim, kind))


def stored(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """The vectors of `ids` in an id-mapped flat index."""
    ids = np.ascontiguousarray(ids, np.int64)
    return index.reconstruct_batch(ids) if len(ids) else np.empty((0, index.d), np.float32)


def mean_of_neighbours(anchors: np.ndarray, nb_ids: np.ndarray, vectors_of, alpha: float, metric: str):
    """weighted_mean with the neighbours given by id (-1: none) and looked up by
    `vectors_of(ids) -> (m, d)`, in steps that hold at most BLOCK bytes of them."""
    anchors = np.asarray(anchors, np.float32)
    out = np.empty_like(anchors)
    step = max(1, BLOCK // max(1, 4 * nb_ids.shape[1] * anchors.shape[1]))
    for s in range(0, len(anchors), step):
        ids = nb_ids[s : s + step]
        valid = ids >= 0
        nb = np.zeros((*ids.shape, anchors.shape[1]), np.float32)
        nb[valid] = vectors_of(ids[valid])
        out[s : s + step] = weighted_mean(anchors[s : s + step], nb, valid, alpha, metric)
    return out


def augment(raw: faiss.Index, ids: np.ndarray, dba: Dba) -> tuple[np.ndarray, np.ndarray]:
    """DBA vectors of the stored `ids` of `raw` (raw_index) and each one's distance to its n-th
    neighbour (inf when it has fewer: any addition reaches it)."""
    ids = np.asarray(ids, np.int64)
    x = stored(raw, ids)
    nb_ids, nb_dist = neighbours(raw, x, dba.n, own=ids)
    vectors = mean_of_neighbours(x, nb_ids, lambda i: stored(raw, i), dba.alpha, _metric_of(raw))
    return vectors, nb_dist[:, -1].copy() if len(ids) else np.empty(0, np.float32)


def reached(raw: faiss.Index, changed: np.ndarray, radius_ids: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Ids of stored vectors whose n-neighbourhood a changed (added or removed) vector enters or
    leaves: those no farther from it than their own n-th neighbour. One range search up to the
    largest such distance, then each candidate's own. `radius_ids` sorted; an id without a
    radius (one added in this update) counts as reached when the search finds it."""
    if not len(changed) or not raw.ntotal:
        return np.empty(0, np.int64)
    if not len(radii) or not np.isfinite(radii).all():
        return ids_of(raw)  # a vector with fewer than n neighbours takes any addition in
    metric, top = _metric_of(raw), float(radii.max())
    slack = 1e-5 * max(top, 1.0)  # float rounding: recomputing one vector too many changes nothing
    bound = (1.0 - top - slack) if metric == "cosine" else (top + slack)
    out = []
    for s in range(0, len(changed), 256):
        _, scores, ids = raw.range_search(np.ascontiguousarray(changed[s : s + 256], np.float32), bound)
        pos = np.searchsorted(radius_ids, ids).clip(max=max(len(radius_ids) - 1, 0))
        known = radius_ids[pos] == ids
        own = np.where(known, radii[pos], np.inf)
        out.append(ids[as_distance(scores, metric) <= own + slack])
    return np.unique(np.concatenate(out))


def augment_arrays(vectors: np.ndarray, dba: Dba, metric: str) -> np.ndarray:
    """DBA of a whole database given as an array (row i keeps id i), as eval-retrieval needs."""
    raw = raw_index(vectors.shape[1], metric)
    raw.add_with_ids(unit(vectors) if metric == "cosine" else np.ascontiguousarray(vectors, np.float32), _ids(vectors))
    return augment(raw, _ids(vectors), dba)[0]


def expand_arrays(index: faiss.Index, db: np.ndarray, queries: np.ndarray, rerank: Rerank, metric: str):
    """aQE of `queries` against `index`, which holds the rows of `db` under their positions:
    the top n found by one search, their vectors taken from `db`."""
    q = unit(queries) if metric == "cosine" else np.ascontiguousarray(queries, np.float32)
    ids, _ = neighbours(index, q, rerank.n)
    return mean_of_neighbours(queries, ids, lambda i: db[i], rerank.alpha, metric)


def _ids(vectors: np.ndarray) -> np.ndarray:
    return np.arange(len(vectors), dtype=np.int64)


def ids_of(raw: faiss.Index) -> np.ndarray:
    """The ids an id-mapped index holds."""
    return faiss.vector_to_array(raw.id_map) if raw.ntotal else np.empty(0, np.int64)


class Augmented:
    """A DBA index's raw vectors (raw_index) and each one's n-th neighbour distance, by id: what
    an update needs to recompute only the augmented vectors whose neighbourhood it changes.
    Anything that does not match the index's rows (a writer killed mid-commit) makes it `stale`:
    the next update recomputes every vector."""

    def __init__(self, raw: faiss.Index, radii: dict, dba: Dba, rows: np.ndarray):
        self.raw, self.dba = raw, dba
        held, rows = ids_of(raw), np.asarray(rows, np.int64)
        orphans = np.setdiff1d(held, rows)
        if len(orphans):
            raw.remove_ids(orphans)
        self.radii = {int(i): float(r) for i, r in radii.items()}
        self.stale = (
            bool(len(orphans)) or set(self.radii) != set(rows.tolist()) or len(held) - len(orphans) != len(rows)
        )

    def update(self, vectors: np.ndarray, ids: np.ndarray, deleted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add `vectors` (as stored: unit for cosine) under `ids` and remove `deleted`; returns the
        ids whose augmented vector is new or changed, those vectors and their radii."""
        deleted = np.intersect1d(np.asarray(list(deleted), np.int64), ids_of(self.raw))
        gone = stored(self.raw, deleted)
        if len(ids):
            self.raw.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        if len(deleted):
            self.raw.remove_ids(deleted)
        for i in deleted.tolist():
            self.radii.pop(i, None)
        if self.stale:
            todo = np.sort(ids_of(self.raw))
        else:
            known = np.array(sorted(self.radii), np.int64)
            radii = np.array([self.radii[i] for i in known.tolist()], np.float32)
            changed = np.concatenate([np.asarray(vectors, np.float32).reshape(-1, self.raw.d), gone])
            todo = np.union1d(np.asarray(ids, np.int64), reached(self.raw, changed, known, radii))
        vectors, radii = augment(self.raw, todo, self.dba)
        self.radii.update(zip(todo.tolist(), radii.tolist()))
        self.stale = False
        return todo, vectors, radii
