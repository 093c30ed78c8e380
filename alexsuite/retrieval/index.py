"""FAISS indexes made from an `index_factory` string, wrapped in an id map so ids stay stable.

The paper (AlexNet §6.1) compares fc7 vectors by Euclidean distance and suggests short codes
for speed; FAISS provides both (Flat, IVF-PQ, HNSW, ITQ+LSH binary codes). What we add is the
choice of metric, optional PCA whitening, training on the user's own vectors, and the GPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from ..errors import ConfigError
from ..settings import from_dict, require, setting

METRICS = ("l2", "cosine")
GPU_MAX_K = 2048  # FAISS GPU indexes return at most this many neighbours; beyond, search on the CPU copy


@dataclass(frozen=True)
class IndexSpec:
    """How vectors become a searchable index; saved in every index's manifest."""

    dim: int = setting(help="Length of the model's feature vectors.")
    factory: str = setting(
        "Flat",
        "FAISS index_factory string: Flat (exact), HNSW32, IVF1024,PQ64, ITQ256,LSHt "
        "(binary codes)...; training is done for you.",
        "FAISS index factory",
    )
    metric: str = setting(
        "l2", "l2: Euclidean distance, as the paper; cosine: the angle between vectors.", "AlexNet §6.1"
    )
    pca: int | None = setting(None, "Reduce vectors to N dimensions with PCA first.")
    whiten: bool = setting(True, "With --pca: whiten the components (PCAW).", "Jégou & Chum 2012")
    search_params: str = setting("", "FAISS ParameterSpace string applied at search, e.g. nprobe=16.")
    on_disk: bool = setting(
        False,
        "IVF factories: keep the inverted lists in a memory-mapped file beside index.faiss, so searching "
        "needs memory for the coarse quantizer and the lists it probes, not for every vector.",
        "FAISS wiki, Indexes that do not fit in RAM",
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest.json: spec") -> IndexSpec:
        spec = from_dict(cls, d, where)
        require(spec.dim >= 1 and (spec.pca is None or spec.pca >= 1), f"{where}: dim {spec.dim}, pca {spec.pca}: odd")
        require(spec.metric in METRICS, f"{where}: metric {spec.metric!r}: not one of {', '.join(METRICS)}")
        require(not spec.on_disk or spec.is_ivf, f"{where}: on_disk with {spec.factory}: only IVF indexes keep lists")
        return spec

    @property
    def is_ivf(self) -> bool:
        return any(p.startswith("IVF") for p in self.factory.split(","))

    @property
    def full_factory(self) -> str:
        """The factory string FAISS builds: optional PCA(W), re-normalisation for cosine, then ours."""
        parts = []
        if self.pca:
            parts.append(f"PCA{'W' if self.whiten else ''}{self.pca}")
            if self.metric == "cosine":
                parts.append("L2norm")  # whitening changes norms; cosine needs unit vectors again
        own = self.factory.split(",")
        if self.metric == "cosine" and "L2norm" not in own:
            pcas = [i for i, p in enumerate(own) if p.startswith("PCA")]
            if pcas:  # a PCA inside the factory string shortens vectors too
                own.insert(pcas[-1] + 1, "L2norm")
        parts += own
        return ",".join(parts)

    @property
    def faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2


def unfit(index: faiss.Index, spec: IndexSpec) -> str | None:
    """What makes a loaded index unusable as `spec`'s (None: nothing): another vector size, no
    id map, or vectors in an index that was never trained."""
    if index.d != spec.dim:
        return f"holds {index.d}-d vectors, the manifest says {spec.dim}"
    top = faiss.downcast_index(index)
    if not (isinstance(top, faiss.IndexIDMap | faiss.IndexIDMap2) or _takes_ids(index)):
        return "has no ids of its own (not an index alexsuite wrote)"
    if index.ntotal and not index.is_trained:
        return "holds vectors but was never trained"
    return None


def default_search_params(factory: str) -> str:
    """Search-time settings that give high recall for common factories (FAISS' defaults,
    nprobe=1, efSearch=16 and no re-ranking, favour speed); users override with --params."""
    parts, params = factory.split(","), []
    if any(p.startswith("IVF") for p in parts):
        params.append("nprobe=16")
    if any(p.startswith("HNSW") for p in parts):
        params.append("efSearch=128")
    if any(p.startswith(("RFlat", "Refine")) for p in parts):
        params.append("k_factor_rf=16")  # re-rank 16k candidates with exact distances
    return ",".join(params)


def create(spec: IndexSpec) -> faiss.Index:
    """A fresh, empty index for `spec` that takes our ids. IVF indexes store ids in their
    lists; the others are wrapped in IndexIDMap2. (Wrapping IVF in an id map would be wrong:
    IndexIDMap.remove_ids assumes the inner index renumbers after a removal, as Flat does,
    and IVF does not, so every later id would shift.)"""
    if spec.metric not in METRICS:
        raise ConfigError(f"unknown metric {spec.metric!r}: use l2 or cosine")
    if spec.pca is not None and not 0 < spec.pca <= spec.dim:
        raise ConfigError(f"--pca {spec.pca}: must be between 1 and the feature size {spec.dim}")
    _check_factory_numbers(spec.factory)
    if spec.on_disk and not spec.is_ivf:
        raise ConfigError(
            f"--on-disk keeps an IVF index's inverted lists on disk; --factory {spec.factory} has none: "
            "use an IVF factory (e.g. IVF4096,Flat or IVF4096,PQ32), or leave out --on-disk"
        )
    if "IDMap" in spec.factory:
        raise ConfigError(f"--factory {spec.factory!r}: leave out IDMap, alexsuite adds the id map itself")
    try:
        inner = faiss.index_factory(spec.dim, spec.full_factory, spec.faiss_metric)
    except RuntimeError as e:
        raise ConfigError(
            f"FAISS cannot build --factory {spec.full_factory!r} for {spec.dim}-d "
            f"vectors ({_faiss_reason(e)}); see the FAISS wiki 'The index factory'"
        ) from None
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        # The factory turns on polysemous training for IVF-PQ: minutes of extra training
        # (over 5 min for PQ64 on 2 cores) for a code order only Hamming pre-filtering
        # (--params ht=N) uses. Codes and default search are the same without it.
        faiss.downcast_index(ivf).do_polysemous_training = False
    return inner if _takes_ids(inner) else faiss.IndexIDMap2(inner)


# The least each factory component's number may be: FAISS aborts or crashes the process on
# smaller ones (HNSW1, HNSW0, SQ0, IVF0 that no search can probe) instead of raising an error.
_LEAST = {
    "HNSW": 2,
    "NSG": 2,
    "IVF": 1,
    "IMI2x": 1,
    "PQ": 1,
    "OPQ": 1,
    "PCA": 1,
    "PCAW": 1,
    "PCAR": 1,
    "PCAWR": 1,
    "ITQ": 1,
    "RR": 1,
    "LSH": 1,
    "RFlat": 0,
}
_SQ_BITS = {"4", "6", "8", "fp16", "bf16"}


def _check_factory_numbers(factory: str) -> None:
    for part in factory.split(","):
        match = re.match(r"^([A-Za-z]+?x?)(\d+)", part)
        if part.startswith("SQ") and part[2:].split("_")[0] not in _SQ_BITS:
            raise ConfigError(f"--factory {factory!r}: {part} takes SQ4, SQ6, SQ8, SQfp16 or SQbf16")
        if match and match.group(1) in _LEAST and int(match.group(2)) < _LEAST[match.group(1)]:
            raise ConfigError(f"--factory {factory!r}: {part} needs {match.group(1)}{_LEAST[match.group(1)]} or more")


def _takes_ids(index: faiss.Index) -> bool:
    """IVF indexes (optionally behind PCA/normalisation) store the ids they are given."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexPreTransform):
        top = faiss.downcast_index(top.index)
    return isinstance(top, faiss.IndexIVF)


def _faiss_reason(e: Exception) -> str:
    """FAISS errors carry a C++ location; keep the sentence that says what is wrong."""
    text = " ".join(str(e).split())
    for marker in ("failed: ", "Error: ", "Error in "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text[:240]


def prepare(vectors: np.ndarray, spec: IndexSpec) -> np.ndarray:
    """float32 C-contiguous; unit length for cosine (inner product of unit vectors = cosine)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if spec.metric == "cosine":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


def train(index: faiss.Index, vectors: np.ndarray, spec: IndexSpec, device=None) -> list[str]:
    """Train quantisers / PCA on the user's own vectors, with a clear error when there are
    too few and one warning line (instead of FAISS's one per sub-quantiser) when there are
    fewer than FAISS advises. With faiss-gpu and --device cuda, IVF k-means runs on the GPU
    (FAISS's `clustering_index` hook) while the index itself stays a CPU index."""
    if index.is_trained:
        return []
    advice = _quieten_clustering(index, len(vectors), spec)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and getattr(device, "type", "") == "cuda" and gpu_available():
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlat(ivf.d, ivf.metric_type))
    try:
        index.train(prepare(vectors, spec))
    except RuntimeError as e:
        raise ConfigError(
            f"--factory {spec.full_factory!r} could not be trained on {len(vectors):,} vectors "
            f"({_faiss_reason(e)}). IVFn needs at least n vectors (39n is better), PQ at least 256, "
            "PCA at least its output size: use Flat or HNSW32 for small collections"
        ) from None
    finally:
        if ivf is not None:
            ivf.clustering_index = None
    return advice


def _quieten_clustering(index: faiss.Index, n: int, spec: IndexSpec) -> list[str]:
    """FAISS prints a warning per k-means run (64 for PQ64) when n < 39 points per centroid;
    say it once, in our words, and turn FAISS's off."""
    wanted = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        wanted[f"IVF{ivf.nlist}"] = 39 * ivf.nlist
        ivf.cp.min_points_per_centroid = 0
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            wanted["PQ"] = 39 * (1 << pq.nbits)
            pq.cp.min_points_per_centroid = 0
    short = [f"{name} wants {count:,}" for name, count in wanted.items() if n < count]
    if not short:
        return []
    return [
        f"{spec.full_factory} trained on {n:,} vectors ({', '.join(short)}): recall may suffer; "
        "Flat or HNSW32 suit small collections"
    ]


def set_search_params(index: faiss.Index, params: str) -> None:
    """Apply a FAISS ParameterSpace string such as 'nprobe=32' or 'efSearch=256'."""
    if not params:
        return
    top = faiss.downcast_index(index)
    if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        top = faiss.downcast_index(top.index)  # ParameterSpace does not look inside id maps for k_factor
    try:
        faiss.ParameterSpace().set_index_parameters(top, params)
    except RuntimeError as e:
        raise ConfigError(f"--params {params!r} does not apply to this index ({_faiss_reason(e)})") from None


def search(index: faiss.Index, queries: np.ndarray, k: int, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids), both (Q, k); ids are -1 where fewer than k were found.
    Distances: Euclidean for l2 (FAISS returns squares), 1 - cosine similarity for cosine."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    try:
        scores, ids = index.search(prepare(queries, spec), k)
    except RuntimeError as e:
        raise ConfigError(f"FAISS cannot search this {spec.full_factory} index ({_faiss_reason(e)})") from None
    if spec.metric == "cosine":
        return (1.0 - scores).astype(np.float32), ids
    return np.sqrt(np.maximum(scores, 0.0)), ids


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> None:
    """Add `vectors` under `ids`; FAISS's refusal as one line."""
    try:
        index.add_with_ids(prepare(vectors, spec), ids)
    except RuntimeError as e:
        raise ConfigError(f"FAISS cannot add to this {spec.full_factory} index ({_faiss_reason(e)})") from None


def stored_ids(index: faiss.Index) -> np.ndarray:
    """The ids an index made by `create` holds."""
    if not index.ntotal:
        return np.empty(0, np.int64)
    if not _takes_ids(index):
        return faiss.vector_to_array(faiss.downcast_index(index).id_map)
    ivf = faiss.try_extract_index_ivf(index)
    lists = ivf.invlists
    return np.concatenate(
        [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
    )


def remove(index: faiss.Index, ids) -> bool:
    """Remove ids if this index type can (HNSW cannot); False leaves them to be filtered out."""
    ids = np.asarray(list(ids), dtype=np.int64)
    if not len(ids):
        return True
    try:
        index.remove_ids(ids)
        return True
    except RuntimeError:
        return False


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index, device_index: int = 0) -> faiss.Index:
    """A GPU copy for searching (faiss-gpu only)."""
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, device_index, index)
    gpu.referenced_resources = resources  # keep the resources alive as long as the index
    return gpu


def reconstruct(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of `ids` (float32 (n, d), in the index's input space: exact for Flat
    and IVF-Flat, the codes' approximation for PQ/SQ). IVF indexes get a hash map from id to
    list position first (kept in memory only, never written)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    try:
        return index.reconstruct_batch(ids) if len(ids) else np.empty((0, index.d), np.float32)
    except RuntimeError as e:
        raise ConfigError(f"this index cannot give back its vectors ({_faiss_reason(e)})") from None
