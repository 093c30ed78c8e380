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
from . import index as faiss_index
from .store import DEFAULT_INDEX, IndexStore, check_model

GPU_MAX_K = 2048  # FAISS GPU indexes return at most this many neighbours; beyond, search on the CPU copy


@dataclass(frozen=True)
class SearchSettings:
    """How `alexsuite search` looks images up."""

    k: int = setting(10, "Results per query.")
    index: str = setting(DEFAULT_INDEX, "Index name (kept under indexes/) or a path containing a /.")
    model: str | None = setting(None, "Default: the model recorded in the index (any other is refused).")
    params: str | None = setting(
        None,
        "FAISS search parameters, e.g. nprobe=32 or efSearch=256 (default: what the index was built with).",
        "FAISS index factory",
    )
    device: str = setting("auto", "auto, cpu or cuda[:N] (a GPU copy of the index where FAISS has one).")
    workers: int = setting(0, "Decoding processes for many queries.")


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


def expand_queries(queries, store: IndexStore, ids=()) -> list[Path]:
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
    """An open index plus the model that made it, ready for many queries."""

    def __init__(self, store: IndexStore, loaded, device, params: str | None = None):
        check_model(store.manifest, loaded)
        store.check_vectors_present()
        if store.index is None or store.count() == 0:
            raise DataError(
                f"{store.root}: the index is empty; add images with `alexsuite index IMAGES --index {store.root}`"
            )
        self.store, self.loaded, self.device = store, loaded, device
        self.index = store.index
        faiss_index.set_search_params(self.index, store.spec.search_params if params is None else params)
        if getattr(device, "type", "") == "cuda" and faiss_index.gpu_available():
            with contextlib.suppress(RuntimeError):  # FAISS has no GPU version of this index type (e.g. HNSW)
                self.index = faiss_index.to_gpu(self.index, device.index or 0)

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
    ) -> list[QueryResult]:
        """One QueryResult per input, in order; unreadable queries carry an error, not results.
        An indexed file is left out of its own results. `guard()`: a context held around each
        batch's FAISS search and row lookups, not its forward pass (the server's lock)."""
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
                    for n, hits in zip(which, self.search_vectors(batch.vectors, k, self_ids)):
                        results[n].results = hits
        return results

    def _own_id(self, path: Path | None) -> int | None:
        if path is None:
            return None
        row = self.store.row_by_path(path.expanduser().resolve())
        return row.id if row else None

    def search_vectors(self, vectors: np.ndarray, k: int, exclude=None) -> list[list[Hit]]:
        """Top-k per vector. Over-fetches by the number of vectors without a row (removed
        from an index type that cannot delete, or left by a killed writer) and drops them."""
        extra = self.store.dead_vectors() + 1  # +1: the query itself, when it is indexed
        index = self.index if k + extra <= GPU_MAX_K else self.store.index
        distances, ids = faiss_index.search(index, vectors, k + extra, self.store.spec)
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
