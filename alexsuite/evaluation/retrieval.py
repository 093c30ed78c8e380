"""Retrieval quality, the standard protocol: queries from one split, the database from
another, an image relevant when it has the query's class. mAP over the whole ranking the
index returns (a relevant image it never returns counts as missed) and precision@k."""

from __future__ import annotations

import numpy as np


def average_precision(
    ranked_ids: np.ndarray, db_labels: np.ndarray, q_labels: np.ndarray, ks=(10,)
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-query AP and precision@k from ranked database positions (Q, K), -1 = nothing."""
    valid = ranked_ids >= 0
    relevant = (db_labels[np.where(valid, ranked_ids, 0)] == q_labels[:, None]) & valid
    n_relevant = np.bincount(db_labels, minlength=int(max(db_labels.max(), q_labels.max())) + 1)[q_labels]
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, ranked_ids.shape[1] + 1)
    ap = (relevant * hits / ranks).sum(1) / np.maximum(n_relevant, 1)
    precision = {k: relevant[:, :k].sum(1) / k for k in ks}
    return ap, precision
