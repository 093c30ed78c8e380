"""Queries/s and recall@10 of FAISS factories against exact search.

    python benchmarks/search_speed.py [--only fm|random] [--n 1000000]

(a) fc7 vectors of Fashion-MNIST (runs/bench/fashion-mnist): 69,000 database vectors and
    1,000 held-out test images as queries (all 70,000 images, none on both sides);
(b) 1,000,000 random 256-d Gaussian vectors and 1,000 random queries (no structure to
    exploit: the hardest case for approximate search; the relative contrast printed for
    each case says how much the true neighbours stand out).
The reference in the same run is exact search (Flat, BLAS over a batch of 1,000 queries).
Each approximate index is built with alexsuite's own create/train (a 200,000-vector training
sample), then swept over its search parameter; queries are timed as one batch, best of 2.
Goal: a factory with recall@10 >= 0.95 at >= 10x the exact QPS on (b).
"""

import argparse
import time

import numpy as np
from _common import write_result

from alexsuite.errors import ConfigError
from alexsuite.retrieval import index as faiss_index
from alexsuite.retrieval.indexer import TRAIN_CAP

SWEEPS = {
    "HNSW32": ("efSearch", [16, 32, 64, 128, 256, 512]),
    "IVF{nlist},Flat": ("nprobe", [1, 4, 8, 16, 32, 64, 128]),
    "IVF{nlist},PQ{m}": ("nprobe", [4, 16, 64]),
    "IVF{nlist},PQ{m2}x4fs,RFlat": ("nprobe,k_factor_rf", [(8, 4), (16, 8), (32, 8), (32, 16), (64, 16)]),
}


def timed_search(index, q, k, spec, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = faiss_index.search(index, q, k, spec)
        best = min(best, time.perf_counter() - t0)
    return len(q) / best, ids


def recall_at(ids, truth, k=10):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, truth)]))


def relative_contrast(db, q, exact, spec, n=200) -> float:
    """Mean distance from a query to the database over its distance to the 10th neighbour
    (He, Kumar & Chang, ICML 2012). Near 1, neighbours hardly stand out and no index can find
    them without looking at most of the database; real features sit far above."""
    rng = np.random.default_rng(2)
    sample = db[rng.choice(len(db), 2000, replace=False)]
    dist10, _ = faiss_index.search(exact, q[:n], 10, spec)
    mean = np.sqrt(((q[:n, None, :] - sample[None]) ** 2).sum(-1)).mean(1)
    return float(np.mean(mean / np.maximum(dist10[:, -1], 1e-12)))


def run_case(name, db, q, nlist, m):
    d = db.shape[1]
    rows = []
    exact_spec = faiss_index.IndexSpec(d)
    exact = faiss_index.create(exact_spec)
    exact.add_with_ids(db, np.arange(len(db), dtype=np.int64))
    exact_qps, truth = timed_search(exact, q, 10, exact_spec)
    contrast = relative_contrast(db, q, exact, exact_spec)
    print(f"[{name}] exact Flat: {exact_qps:,.0f} QPS; relative contrast {contrast:.2f}", flush=True)
    rows.append(
        {"factory": "Flat", "param": "", "qps": round(exact_qps, 1), "recall@10": 1.0, "speedup": 1.0, "build_s": 0.0}
    )
    sample = db[np.random.default_rng(1).permutation(len(db))[:TRAIN_CAP]]
    for template, (param, values) in SWEEPS.items():
        factory = template.format(nlist=nlist, m=m, m2=m * 2 if d % (m * 2) == 0 else m)
        spec = faiss_index.IndexSpec(d, factory)
        t0 = time.perf_counter()
        index = faiss_index.create(spec)
        faiss_index.train(index, sample, spec)
        index.add_with_ids(db, np.arange(len(db), dtype=np.int64))
        build_s = time.perf_counter() - t0
        print(f"[{name}] {factory}: built in {build_s:.0f}s", flush=True)
        for v in values:
            params = ",".join(f"{p}={x}" for p, x in zip(param.split(","), v if isinstance(v, tuple) else (v,)))
            try:
                faiss_index.set_search_params(index, params)
            except ConfigError as e:  # record it and go on: one bad sweep must not lose the run
                rows.append({"factory": factory, "param": params, "error": str(e)})
                print(f"[{name}]   {params}: {e}", flush=True)
                continue
            qps, ids = timed_search(index, q, 10, spec)
            r = recall_at(ids, truth)
            rows.append(
                {
                    "factory": factory,
                    "param": params,
                    "qps": round(qps, 1),
                    "recall@10": round(r, 4),
                    "speedup": round(qps / exact_qps, 2),
                    "build_s": round(build_s, 1),
                }
            )
            print(
                f"[{name}]   {params:22s} {qps:10,.0f} QPS  recall@10 {r:.4f}  {qps / exact_qps:6.1f}x exact",
                flush=True,
            )
        del index
    good = [r for r in rows if r.get("recall@10", 0) >= 0.95 and r["factory"] != "Flat"]
    best = max(good, key=lambda r: r["qps"]) if good else None
    if best:
        print(
            f"[{name}] fastest with recall@10 >= 0.95: {best['factory']} {best['param']}: {best['speedup']}x exact",
            flush=True,
        )
    return {
        "case": name,
        "database": len(db),
        "queries": len(q),
        "dim": d,
        "relative_contrast_10": round(contrast, 3),
        "rows": rows,
        "best_at_0.95": best,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["fm", "random"], default=None)
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    cases = []
    if args.only in (None, "fm"):
        from fm_features import fm_fc7

        feats = fm_fc7()
        everything = np.concatenate([feats["train"][0], feats["test"][0]])
        held = 60_000 + np.random.default_rng(0).permutation(10_000)[:1000]
        keep = np.setdiff1d(np.arange(len(everything)), held)
        cases.append(
            run_case(
                "fashion-mnist fc7",
                np.ascontiguousarray(everything[keep]),
                np.ascontiguousarray(everything[held]),
                nlist=1024,
                m=64,
            )
        )
    if args.only in (None, "random"):
        rng = np.random.default_rng(0)
        db = rng.standard_normal((args.n, 256), dtype=np.float32)
        q = rng.standard_normal((1000, 256), dtype=np.float32)
        cases.append(run_case(f"{args.n:,} random 256-d", db, q, nlist=4096, m=32))
    name = "search_speed" if args.only is None else f"search_speed_{args.only}"
    path = write_result(name, {"cases": cases, "goal": "recall@10 >= 0.95 at >= 10x exact QPS on 1M random 256-d"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
