"""Near-duplicate groups in an index: exact copies by content hash (the sha256 every row keeps),
near copies by the index's own k-NN search over its stored vectors, kept when their cosine
distance is at most a threshold. The k-NN bounds the work at n x k distances, never n x n.

Groups are stars, not chains: images are taken largest file first, and each one not yet in a
group keeps every near copy of *itself* that is not yet in one. Joining pairs transitively
(union-find) chains look-alikes into one group of thousands (a whole class of articles at
cosine 0.05), where every member of a star is within the threshold of the image it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..settings import finite, require, setting
from .backend import Store

CHUNK = 1024  # stored vectors searched per FAISS call (and (CHUNK, k, d) floats compared)


# The cosine distance below which two images count as copies, per descriptor: a threshold near
# the best F1 for both models on benchmarks/dedup.py's tune set (real photos, known near-copies).
THRESHOLDS = {"fc7": 0.02, "fc6": 0.02, "pool5": 0.02, "conv5-gem": 0.0075, "conv5-rmac": 0.01}
FLAT_UP_TO = 20_000  # a temporary index of more images is HNSW32: no all-pairs search


@dataclass(frozen=True)
class DedupSettings:
    """How `alexsuite dedup` (and Index.duplicates) find near-duplicates."""

    threshold: float | None = setting(
        None,
        "Largest cosine distance (1 - cos) between two near-copies' vectors, whatever the index's metric; "
        "0 finds byte-identical copies only. Default: the value measured best for the index's layer "
        f"({', '.join(f'{k} {v}' for k, v in THRESHOLDS.items() if k not in ('fc6', 'pool5'))}). "
        "Lower: fewer, surer groups.",
        "benchmarks/dedup.py",
    )
    neighbours: int = setting(20, "Nearest images looked at per image (bounds the work: no all-pairs step).")
    index: str | None = setting(
        None, "Find duplicates among an existing index's images (name, path or Milvus collection, as `index --index`)."
    )
    layer: str = setting(
        "conv5-rmac",
        "Descriptor for the temporary index of FOLDERS: conv5 of the whole image (conv5-rmac, conv5-gem; "
        "they match mirrored and cropped copies) or fc7 of its centre.",
        "benchmarks/dedup.py",
    )
    model: str | None = setting(None, "Run directory or checkpoint (default: the index's model, else the newest run).")
    device: str = setting("auto", "auto, cpu or cuda[:N].")
    workers: int = setting(0, "Decoding processes while embedding FOLDERS.")

    def check(self) -> DedupSettings:
        require(
            self.threshold is None or finite(self.threshold, 0, 2),
            f"--threshold must be a number from 0 to 2, got {self.threshold}",
        )
        require(
            isinstance(self.neighbours, int) and self.neighbours >= 1,
            f"--neighbours must be 1 or more, got {self.neighbours}",
        )
        return self

    def threshold_for(self, layer: str) -> float:
        return self.threshold if self.threshold is not None else THRESHOLDS.get(layer, THRESHOLDS["fc7"])


@dataclass
class Group:
    """One image to keep (the largest file) and its copies, nearest first: {"path", "distance",
    "exact"}; distance 0 and exact true for byte-identical files."""

    keep: str
    duplicates: list[dict] = field(default_factory=list)  # {"path", "distance", "exact", "id"}
    keep_id: int | None = None

    def to_dict(self) -> dict:
        """Exactly what `alexsuite dedup --json` prints for this group (one line); ids are the
        index's (those of a temporary index mean nothing after it)."""
        return {"keep": self.keep, "keep_id": self.keep_id, "duplicates": self.duplicates}

    @property
    def paths(self) -> list[str]:
        return [self.keep, *(d["path"] for d in self.duplicates)]

    def save(self, path) -> bool:
        """The group as a picture row (the kept image, then its copies with their distances), a
        PNG; returns whether copies were left out of a very large group."""
        from .. import viz

        return viz.duplicates_sheet(self, path)


def find_duplicates(store: Store, opts: DedupSettings = DedupSettings()) -> list[Group]:
    """Groups of two or more indexed images, largest group first."""
    opts.check()
    threshold = opts.threshold_for(store.manifest["layer"])
    rows = {i: (r.id, r.path, r.size, r.sha256) for i, r in store.all_rows().items()}
    near = _exact_pairs(rows)
    if threshold > 0 and not store.is_empty():
        store.use()  # the index's own search parameters, e.g. efSearch: recall over speed
        for a, links in _near_pairs(store, set(rows), threshold, opts.neighbours).items():
            near.setdefault(a, {}).update({b: d for b, d in links.items() if b not in near.get(a, {})})
    groups = [_group(rows, keep, members) for keep, members in star_groups(rows, near)]
    groups.sort(key=lambda g: (-len(g.duplicates), g.keep))
    return groups


def _exact_pairs(rows: dict) -> dict[int, dict[int, float]]:
    """Byte-identical files, each linked to every other at distance 0."""
    by_hash: dict[str, list[int]] = {}
    for id_, _, _, sha in rows.values():
        by_hash.setdefault(sha, []).append(id_)
    links: dict[int, dict[int, float]] = {}
    for ids in by_hash.values():
        for a in ids if len(ids) > 1 else ():
            links[a] = {b: 0.0 for b in ids if b != a}
    return links


def _near_pairs(store: Store, known: set, threshold: float, neighbours: int) -> dict[int, dict[int, float]]:
    """Each image's neighbours within the threshold (both directions), by cosine distance of
    the stored vectors; a vector without a row (removed, or left by a killed writer) is skipped."""
    ids = np.array(sorted(set(store.stored_ids().tolist()) & known), np.int64)
    k = min(neighbours + 1, len(ids))  # +1: each image finds itself
    links: dict[int, dict[int, float]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        vectors = store.reconstruct(chunk)
        _, found = store.search(vectors, k)
        distances = _cosine_distances(store, _unit(vectors), found)
        found[(found == chunk[:, None]) | ~np.isin(found, ids) | (distances > threshold)] = -1
        for row, col in zip(*np.nonzero(found >= 0)):
            a, b, d = int(chunk[row]), int(found[row, col]), max(0.0, float(distances[row, col]))
            links.setdefault(a, {})[b] = d
            links.setdefault(b, {})[a] = d
    return links


def _cosine_distances(store: Store, unit: np.ndarray, found: np.ndarray) -> np.ndarray:
    """1 - cos between each query (row of `unit`) and each image it found ((Q, k); inf where none)."""
    near = np.unique(found[found >= 0])
    others = _unit(store.reconstruct(near))
    where = np.searchsorted(near, np.where(found >= 0, found, near[0] if len(near) else 0))
    out = 1.0 - np.einsum("qkd,qd->qk", others[where], unit) if len(near) else np.ones(found.shape)
    return np.where(found >= 0, out, np.inf)


def star_groups(rows: dict, near: dict[int, dict[int, float]]):
    """(keep id, {member id: distance}) for each group, from `near` (id -> {id: distance}, both
    directions): images taken largest file first (rows: id -> (id, path, size, ...)), then
    shortest name; each keeps its own near copies not yet in a group."""
    order = sorted(near, key=lambda i: (-rows[i][2], len(rows[i][1]), i))
    taken: set[int] = set()
    for keep in order:
        if keep in taken:
            continue
        members = {b: d for b, d in near[keep].items() if b not in taken}
        if members:
            taken.add(keep)
            taken.update(members)
            yield keep, members


def _group(rows: dict, keep: int, members: dict[int, float]) -> Group:
    out = []
    for i, distance in members.items():
        exact = rows[i][3] == rows[keep][3]
        out.append({"path": rows[i][1], "distance": 0.0 if exact else round(distance, 6), "exact": exact, "id": i})
    out.sort(key=lambda d: (d["distance"], d["path"]))
    return Group(rows[keep][1], out, keep)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
