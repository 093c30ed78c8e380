"""`alexsuite search`: embed query images with the index's own model and look them up."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.decode import is_image_path
from ..data.inputs import ImageInput, InputDataset, expand_paths, failed_input
from ..embedding import embed_batches, input_size, is_whole_image
from ..errors import ConfigError, DataError, ImageDecodeError
from ..settings import default_of, setting
from .backend import Store
from .rerank import Rerank, mean_of_neighbours
from .store import DEFAULT_INDEX, check_model


@dataclass(frozen=True)
class SearchSettings:
    """How `alexsuite search` looks images up."""

    k: int = setting(10, "Results per query.")
    index: str = setting(
        DEFAULT_INDEX,
        "Index name (kept under indexes/), a path containing a /, or a Milvus collection: "
        "milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db/COLLECTION.",
    )
    model: str | None = setting(None, "Default: the model recorded in the index (any other is refused).")
    params: str | None = setting(
        None,
        "FAISS search parameters, e.g. nprobe=32 or efSearch=256 (default: what the index was built with).",
        "FAISS index factory",
    )
    device: str = setting("auto", "auto, cpu or cuda[:N] (a GPU copy of the index where FAISS has one).")
    workers: int = setting(0, "Decoding processes for many queries.")
    rerank: str = setting(
        "none",
        "Query expansion, e.g. aqe:n=5,alpha=3: search once, replace the query by the weighted mean of "
        "itself (weight 1) and its top n results (weights cosine^alpha; alpha 0: plain average), "
        "re-normalised for cosine indexes, and search again; about twice the search time. l2 indexes "
        "weigh by the cosine too and search the mean in their own space. none: off.",
        "Radenović 2018; Chum 2007",
    )


@dataclass
class Hit:
    rank: int
    id: int
    path: str
    distance: float
    label: str | None = None

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "path": self.path,
            "distance": round(float(self.distance), 6),
            "id": self.id,
            "label": self.label,
        }


@dataclass
class QueryResult:
    """One query's nearest indexed images; `error` instead when the query could not be read."""

    query: str
    results: list[Hit] = field(default_factory=list)
    failure: ImageDecodeError | None = field(default=None, repr=False)  # why it could not be read
    source: ImageInput | None = field(default=None, repr=False, compare=False)

    @property
    def error(self) -> str | None:
        return None if self.failure is None else str(self.failure)

    def to_dict(self) -> dict:
        """Exactly what `alexsuite search --json` prints for this query."""
        out = {"query": self.query, "results": [h.to_dict() for h in self.results]}
        if self.error:
            out["error"] = self.error
        return out

    def save(self, path) -> None:
        """The query and its results as a picture row (the --sheet picture), a PNG."""
        from .. import viz

        viz.search_sheet([self], path)

    def plot(self):
        """The picture save() writes, as a PIL image (for notebooks)."""
        from .. import viz

        return viz.to_pil(self.save)


def expand_queries(queries, store: Store, ids=()) -> list[Path]:
    """Files as given, folders as their image files (recursive), quoted globs as their
    matches, --id as the indexed file."""
    out = expand_paths(queries)
    for i in ids:
        row = store.rows_by_id([i]).get(int(i)) if 0 <= i < 2**63 else None
        if row is None:
            raise DataError(
                f"--id {i}: no image with this id in {store.root} "
                f"(ids run from 0; `alexsuite search --json` shows them)"
            )
        out.append(Path(row.path))
    return out


class Searcher:
    """An open index (any store: FAISS folder or Milvus collection) plus the model that made it,
    ready for many queries."""

    def __init__(self, store: Store, loaded, device, params: str | None = None):
        check_model(store.manifest, loaded)
        store.check_vectors_present()
        if store.is_empty():
            raise DataError(
                f"{store.root}: the index is empty; add images with `alexsuite index IMAGES --index {store.root}`"
            )
        self.store, self.loaded, self.device = store, loaded, device
        store.use(params, device)

    def set_params(self, params: str | None) -> None:
        """Search parameters for the queries that follow (None: the index's own)."""
        self.store.use(params, self.device)

    def search_files(self, paths: list[Path], k: int = default_of(SearchSettings, "k"), **kw) -> list[QueryResult]:
        """One QueryResult per path, in order (see search_inputs)."""
        return self.search_inputs([ImageInput(str(p), path=Path(p)) for p in paths], k, **kw)

    def search_inputs(
        self,
        inputs: list[ImageInput],
        k: int = default_of(SearchSettings, "k"),
        batch_size: int = 64,
        workers: int = default_of(SearchSettings, "workers"),
        exclude_self: bool = True,
        guard=contextlib.nullcontext,
        rerank: Rerank | list[Rerank] = Rerank(),
    ) -> list[QueryResult]:
        """One QueryResult per input, in order; unreadable queries carry an error, not results.
        An indexed file is left out of its own results. `guard()`: a context held around each
        batch's FAISS search and row lookups, not its forward pass (the server's lock).
        `rerank`: one for all inputs, or one per input."""
        reranks = list(rerank) if isinstance(rerank, (list, tuple)) else [rerank] * len(inputs)
        results = [QueryResult(i.name, source=i) for i in inputs]
        for r, i in zip(results, inputs):
            if i.path is not None and not is_image_path(i.path):
                r.failure = ImageDecodeError(i.path, "not an image file (by its extension)")
        todo = [n for n, r in enumerate(results) if r.error is None]
        layer = self.store.manifest["layer"]
        size, whole = input_size(self.loaded.preprocess, layer), is_whole_image(layer)
        dataset = InputDataset([inputs[n] for n in todo], size, whole)
        for batch in embed_batches(
            self.loaded.model,
            dataset,
            self.loaded.preprocess,
            layer,
            self.device,
            batch_size,
            workers,
            source=str(self.loaded.source),
        ):
            for err in batch.failures:
                n = failed_input(
                    err, inputs, (n for n in todo if results[n].failure is None and not results[n].results)
                )
                if n is not None:
                    results[n].failure = err
            if len(batch.positions):
                which = [todo[int(p)] for p in batch.positions]
                with guard():
                    self_ids = [self._own_id(inputs[n].path) if exclude_self else None for n in which]
                    found = self._search_each(batch.vectors, k, self_ids, [reranks[n] for n in which])
                    for n, hits in zip(which, found):
                        results[n].results = hits
        return results

    def _search_each(self, vectors: np.ndarray, k: int, exclude: list, reranks: list) -> list[list[Hit]]:
        """search_vectors once per distinct re-ranking the queries ask for (usually one)."""
        out: list = [None] * len(vectors)
        for rerank in dict.fromkeys(reranks):
            rows = [i for i, r in enumerate(reranks) if r == rerank]
            for i, hits in zip(rows, self.search_vectors(vectors[rows], k, [exclude[i] for i in rows], rerank)):
                out[i] = hits
        return out

    def _own_id(self, path: Path | None) -> int | None:
        if path is None:
            return None
        row = self.store.row_by_path(path.expanduser().resolve())
        return row.id if row else None

    def search_vectors(self, vectors: np.ndarray, k: int, exclude=None, rerank: Rerank = Rerank()) -> list[list[Hit]]:
        """Top-k per vector (`exclude`: an id per vector to leave out, its own), after query
        expansion when `rerank` asks for it."""
        if rerank.on:
            vectors = self._expanded(vectors, rerank, exclude)
        return self._nearest(vectors, k, exclude)

    def _expanded(self, vectors: np.ndarray, rerank: Rerank, exclude) -> np.ndarray:
        """aQE: each query replaced by the weighted mean of itself and its top n results' stored
        (searchable) vectors [source: Radenović 2018]; the query's own image is no result of it."""
        first = self._nearest(vectors, rerank.n, exclude)
        ids = np.full((len(vectors), rerank.n), -1, np.int64)
        for q, hits in enumerate(first):
            ids[q, : len(hits)] = [h.id for h in hits]
        return mean_of_neighbours(vectors, ids, self._stored, rerank.alpha, self.store.spec.metric)

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        try:
            return self.store.reconstruct(ids)
        except ConfigError:
            raise ConfigError(
                f"--rerank: this {self.store.spec.full_factory} index cannot give back its vectors for query "
                "expansion; use --rerank none, or an index built with another --factory (Flat, IVF, HNSW, PQ)"
            ) from None

    def _nearest(self, vectors: np.ndarray, k: int, exclude=None) -> list[list[Hit]]:
        """Top-k per vector; ids without a row (see Store.search) are skipped."""
        distances, ids = self.store.search(vectors, k + 1)  # +1: the query itself, when it is indexed
        rows = self.store.rows_by_id(np.unique(ids[ids >= 0]))
        out = []
        for qi in range(len(vectors)):
            skip = exclude[qi] if exclude else None
            hits = []
            for d, i in zip(distances[qi], ids[qi]):
                row = rows.get(int(i))
                if row is None or row.id == skip:
                    continue
                hits.append(Hit(len(hits) + 1, row.id, row.path, float(d), row.label))
                if len(hits) == k:
                    break
            out.append(hits)
        return out
