"""Retrieval quality, the standard protocol: queries from one split, the database from
another, an image relevant when it has the query's class. mAP over the whole ranking the
index returns (a relevant image it never returns counts as missed) and precision@k."""
from __future__ import annotations

import time

import numpy as np

from ..retrieval import index as faiss_index


def average_precision(ranked_ids: np.ndarray, db_labels: np.ndarray, q_labels: np.ndarray,
                      ks=(10,)) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-query AP and precision@k from ranked database positions (Q, K), -1 = nothing."""
    valid = ranked_ids >= 0
    relevant = (db_labels[np.where(valid, ranked_ids, 0)] == q_labels[:, None]) & valid
    n_relevant = np.bincount(db_labels, minlength=int(max(db_labels.max(), q_labels.max())) + 1)[q_labels]
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, ranked_ids.shape[1] + 1)
    ap = (relevant * hits / ranks).sum(1) / np.maximum(n_relevant, 1)
    precision = {k: relevant[:, :k].sum(1) / k for k in ks}
    return ap, precision


def evaluate_retrieval(db_vectors: np.ndarray, db_labels: np.ndarray, q_vectors: np.ndarray,
                       q_labels: np.ndarray, spec: faiss_index.IndexSpec, ks=(1, 10, 100),
                       chunk: int = 250, params: str | None = None, device=None) -> dict:
    """Build `spec`'s index over the database (trained on it when needed), rank the whole
    database for every query, and return mAP and precision@k."""
    t0 = time.perf_counter()
    index = faiss_index.create(spec)
    advice = faiss_index.train(index, db_vectors, spec, device)
    index.add_with_ids(faiss_index.prepare(db_vectors, spec), np.arange(len(db_vectors), dtype=np.int64))
    faiss_index.set_search_params(index, faiss_index.default_search_params(spec.factory) if params is None else params)
    build_s = time.perf_counter() - t0
    aps, precisions = [], {k: [] for k in ks}
    t0 = time.perf_counter()
    for start in range(0, len(q_vectors), chunk):
        _, ids = faiss_index.search(index, q_vectors[start:start + chunk], len(db_vectors), spec)
        ap, prec = average_precision(ids, db_labels, q_labels[start:start + chunk], ks)
        aps.append(ap)
        for k in ks:
            precisions[k].append(prec[k])
    return {"factory": spec.full_factory, "metric": spec.metric, "dim": spec.dim,
            "queries": int(len(q_vectors)), "database": int(len(db_vectors)),
            "mAP": float(np.concatenate(aps).mean()) if aps else 0.0,
            **{f"precision@{k}": float(np.concatenate(precisions[k]).mean()) if aps else 0.0 for k in ks},
            "build_seconds": round(build_s, 3), "rank_seconds": round(time.perf_counter() - t0, 3),
            "warnings": advice}


def evaluate_model_retrieval(loaded, data: str, spec_options: dict, layer: str = "fc7", ks=(1, 10, 100),
                             params: str | None = None, device="cpu", batch_size: int = 256, workers: int = 2,
                             progress=None, warn=lambda message: None) -> dict:
    """`alexsuite eval-retrieval`: embed DATA's training split as the database and its test
    (or val/) split as the queries with `loaded` (a LoadedModel), then evaluate_retrieval.
    spec_options: IndexSpec's factory, metric, pca, whiten. `progress(total, name)` returns a
    callable taking a number of images done, with .close()."""
    from ..data.datasets import resolve_classification
    from ..embedding import embed_labelled

    database, queries = resolve_classification(data, loaded.preprocess.base_size)
    vectors = {}
    for name, dataset in (("database", database), ("queries", queries)):
        bar = progress(len(dataset), f"embed {name}") if progress else None
        vectors[name] = embed_labelled(loaded.model, dataset, loaded.preprocess, layer, device, batch_size,
                                       workers, on_batch=bar)
        if bar:
            bar.close()
        if vectors[name][2]:
            warn(f"skipped {len(vectors[name][2])} unreadable {name} image(s), e.g. {vectors[name][2][0]}")
    (db, db_labels, _), (q, q_labels, _) = vectors["database"], vectors["queries"]
    spec = faiss_index.IndexSpec(db.shape[1], **spec_options)
    result = evaluate_retrieval(db, db_labels, q, q_labels, spec, tuple(sorted(set(ks))), params=params,
                                device=device)
    return {"model": str(loaded.source), "layer": layer, "data": data, **result}
