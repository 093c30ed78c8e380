"""Retrieval quality of a model's features, the standard protocol (evaluation/retrieval.py holds
the metric): build an index over one split and rank it for every image of another, optionally
with the database augmented (DBA) and the queries expanded (aQE) as rerank.py does."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..data.datasets import DEFAULT_DATASET, resolve_classification
from ..embedding import DEFAULT_LAYER, embed_labelled, feature_dim
from ..errors import ConfigError
from ..evaluation.retrieval import average_precision
from ..settings import default_of, field_of, help_of, setting
from . import index as faiss_index
from .index import IndexSpec
from .rerank import Rerank, augment_arrays, expand_arrays, parse_dba, parse_rerank
from .search import SearchSettings


@dataclass(frozen=True)
class RetrievalEvalSettings:
    """What `alexsuite eval-retrieval` measures: one model's features, one kind of index."""

    data: str = setting(DEFAULT_DATASET, "A dataset name, or a folder with train/ and val/ class folders.")
    model: str | None = setting(None, "Run directory or checkpoint (default: the newest runs/train/ run).")
    layer: str = setting(
        DEFAULT_LAYER,
        "Which activations describe an image: fc7, fc6, pool5, conv5-gem or conv5-rmac (see index --layer).",
        "AlexNet §6.1",
    )
    factory: str = setting(
        default_of(IndexSpec, "factory"), "FAISS index_factory string to evaluate.", "FAISS index factory"
    )
    metric: str = setting(default_of(IndexSpec, "metric"), help_of(IndexSpec, "metric"))
    pca: int | None = setting(None, help_of(IndexSpec, "pca"))
    whiten: bool = setting(default_of(IndexSpec, "whiten"), help_of(IndexSpec, "whiten"))
    params: str | None = setting(None, "FAISS search parameters, e.g. nprobe=32.")
    ks: tuple[int, ...] = setting((1, 10, 100), "Report precision@k (repeatable).")
    rerank: str = setting(
        default_of(SearchSettings, "rerank"), field_of(SearchSettings, "rerank").metadata["help"], "Radenović 2018"
    )
    dba: str = setting(
        "none",
        "Augment the database first, e.g. n=5,alpha=3: each database vector becomes the weighted mean of "
        "itself and its n nearest database neighbours, as `alexsuite index --dba` stores them. none: off.",
        "Radenović 2018",
    )
    index: str | None = setting(
        None,
        "Evaluate in a Milvus collection instead of an in-memory FAISS index: milvus://HOST:PORT/COLLECTION or "
        "milvus-lite:PATH.db/COLLECTION (replaced by the database's vectors; --factory maps as for `index`). "
        "mAP then ranks each query's top 16,384, Milvus's limit.",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    batch_size: int = setting(256, "Images per forward pass.")
    workers: int = setting(2, "Decoding processes.")


def evaluate_retrieval(
    db_vectors: np.ndarray,
    db_labels: np.ndarray,
    q_vectors: np.ndarray,
    q_labels: np.ndarray,
    spec: faiss_index.IndexSpec,
    ks=default_of(RetrievalEvalSettings, "ks"),
    chunk: int = 250,
    params: str | None = None,
    device=None,
    rerank: str | Rerank = "none",
    dba=None,
    store: str | None = None,
) -> dict:
    """Build `spec`'s index over the database (augmented first with `dba`, e.g. "n=5,alpha=3";
    trained on it when needed), rank the whole database for every query (expanded first with
    `rerank`, e.g. "aqe:n=5,alpha=3"), and return mAP and precision@k, and the queries per second
    of one batched top-k search of all queries, re-ranking included."""
    rerank, dba = parse_rerank(rerank), parse_dba(dba)
    if store:
        _check_for_milvus(rerank, dba, spec.pca)
        return _evaluate_in_milvus(db_vectors, db_labels, q_vectors, q_labels, spec, ks, chunk, params, store)
    t0 = time.perf_counter()
    db = augment_arrays(db_vectors, dba, spec.metric) if dba else db_vectors
    index = faiss_index.create(spec)
    advice = faiss_index.train(index, db, spec, device)
    faiss_index.add(index, db, np.arange(len(db), dtype=np.int64), spec)
    faiss_index.set_search_params(index, faiss_index.default_search_params(spec.factory) if params is None else params)
    build_s = time.perf_counter() - t0
    qps = _queries_per_second(index, db, q_vectors, max(ks), spec, rerank)
    t0 = time.perf_counter()
    ranked = _rank(_faiss_search(index, db, spec, rerank), q_vectors, db_labels, q_labels, ks, chunk)
    seconds = (qps, build_s, time.perf_counter() - t0)
    return _result(spec, spec.full_factory, (len(q_vectors), len(db_vectors)), ranked, seconds, rerank, dba, advice)


def _check_for_milvus(rerank: Rerank, dba, pca) -> None:
    if rerank.on or dba or pca:
        raise ConfigError(
            "--rerank, --dba and --pca are measured on FAISS indexes: leave them out with a Milvus --index"
        )


def _evaluate_in_milvus(db, db_labels, queries, q_labels, spec, ks, chunk, params, address) -> dict:
    """evaluate_retrieval's measurements, the database in a Milvus collection (replaced)."""
    from .milvus_store import TOPK_MAX, MilvusStore

    t0 = time.perf_counter()
    MilvusStore.drop(address)
    model = {"source": "eval-retrieval", "fingerprint": "none", "arch": "none"}
    store = MilvusStore.create(address, model, "eval-retrieval", {}, spec)
    try:
        for start in range(0, len(db), 10_000):
            part = np.arange(start, min(start + 10_000, len(db)))
            rows = [(f"database/{i}", 0, 0, "", str(db_labels[i]), 0.0) for i in part]
            store.upsert(part, db[part], rows)
        store.flush()
        store.use(params)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.search(queries, max(ks))
        qps = len(queries) / max(time.perf_counter() - t0, 1e-9)
        t0 = time.perf_counter()
        top = min(len(db), TOPK_MAX)
        ranked = _rank(lambda q: store.search(q, top)[1], queries, db_labels, q_labels, ks, chunk)
    finally:
        store.close()
    result = _result(spec, spec.factory, (len(queries), len(db)), ranked, (qps, build_s, time.perf_counter() - t0))
    return {"index": address, **result}


def _faiss_search(index, db, spec, rerank: Rerank):
    """search(queries) -> ids of the whole database ranked for each, the queries expanded first
    under `rerank`."""

    def search(q):
        q = expand_arrays(index, db, q, rerank, spec.metric) if rerank.on else q
        return faiss_index.search(index, q, len(db), spec)[1]

    return search


def _rank(search, queries, db_labels, q_labels, ks, chunk: int) -> tuple[float, dict]:
    """mAP and mean precision@k of the rankings `search(queries) -> ids` makes, `chunk` queries at a time."""
    aps, precisions = [], {k: [] for k in ks}
    for start in range(0, len(queries), chunk):
        ids = search(queries[start : start + chunk])
        ap, prec = average_precision(ids, db_labels, q_labels[start : start + chunk], ks)
        aps.append(ap)
        for k in ks:
            precisions[k].append(prec[k])
    if not aps:
        return 0.0, {k: 0.0 for k in ks}
    return float(np.concatenate(aps).mean()), {k: float(np.concatenate(precisions[k]).mean()) for k in ks}


def _result(spec, factory: str, counts, ranked, seconds, rerank="none", dba=None, warnings=()) -> dict:
    """evaluate_retrieval's answer: counts (queries, database), ranked (mAP, precision by k),
    seconds (queries per second, build, rank)."""
    (queries, database), (ap, precision), (qps, build_s, rank_s) = counts, ranked, seconds
    return {
        "factory": factory,
        "metric": spec.metric,
        "dim": spec.dim,
        "rerank": str(rerank),
        "dba": str(dba) if dba else "none",
        "queries": int(queries),
        "database": int(database),
        "mAP": ap,
        **{f"precision@{k}": p for k, p in precision.items()},
        "queries_per_second": round(qps, 1),
        "build_seconds": round(build_s, 3),
        "rank_seconds": round(rank_s, 3),
        "warnings": list(warnings),
    }


def _queries_per_second(index, db, queries, k: int, spec, rerank: Rerank) -> float:
    """All queries in one batch: the top-k search, with re-ranking's search and expansion."""
    if not len(queries):
        return 0.0
    t0 = time.perf_counter()
    q = expand_arrays(index, db, queries, rerank, spec.metric) if rerank.on else queries
    faiss_index.search(index, q, k, spec)
    return len(queries) / max(time.perf_counter() - t0, 1e-9)


def evaluate_model_retrieval(
    loaded, opts: RetrievalEvalSettings, device, progress=None, warn=lambda message: None
) -> dict:
    """`alexsuite eval-retrieval`: embed the training split of `opts.data` as the database and
    its test (or val/) split as the queries with `loaded` (a LoadedModel), then
    evaluate_retrieval. `progress(total, name)` returns a callable taking a number of images
    done, with .close()."""
    rerank, dba = parse_rerank(opts.rerank), parse_dba(opts.dba)  # bad settings fail before any embedding
    if opts.index:
        _check_for_milvus(rerank, dba, opts.pca)
        from .milvus_store import milvus_index, parse_address

        milvus_index(IndexSpec(8, opts.factory, opts.metric), parse_address(opts.index)[0])  # fails before embedding
    dim = feature_dim(loaded.model, loaded.preprocess, opts.layer)
    faiss_index.create(IndexSpec(dim, opts.factory, opts.metric, opts.pca, opts.whiten))  # a bad spec fails now
    database, queries = resolve_classification(opts.data, loaded.preprocess.base_size, command="eval-retrieval")
    vectors = {}
    for name, dataset in (("database", database), ("queries", queries)):
        bar = progress(len(dataset), f"embed {name}") if progress else None
        vectors[name] = embed_labelled(
            loaded.model,
            dataset,
            loaded.preprocess,
            opts.layer,
            device,
            opts.batch_size,
            opts.workers,
            on_batch=bar,
            model_name=str(loaded.source),
        )
        if bar:
            bar.close()
        if vectors[name][2]:
            warn(f"skipped {len(vectors[name][2])} unreadable {name} image(s), e.g. {vectors[name][2][0]}")
    (db, db_labels, _), (q, q_labels, _) = vectors["database"], vectors["queries"]
    spec = IndexSpec(db.shape[1], opts.factory, opts.metric, opts.pca, opts.whiten)
    ks = tuple(sorted(set(opts.ks)))
    result = evaluate_retrieval(
        db,
        db_labels,
        q,
        q_labels,
        spec,
        ks,
        params=opts.params,
        device=device,
        rerank=rerank,
        dba=dba,
        store=opts.index,
    )
    return {"model": str(loaded.source), "layer": opts.layer, "data": opts.data, **result}
