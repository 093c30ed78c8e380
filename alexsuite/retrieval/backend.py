"""What every index store offers, and which store an `--index` value names.

Two stores implement `Store`:
- `store.IndexStore`: a folder with index.faiss (FAISS, in memory or with its inverted lists
  memory-mapped from disk) and meta.sqlite; `--index NAME` or `--index path/to/folder`;
- `milvus_store.MilvusStore`: a Milvus collection, on a server or cluster
  (`--index milvus://HOST:PORT/COLLECTION`, token from $MILVUS_TOKEN) or embedded in this process
  (`--index milvus-lite:PATH.db/COLLECTION`, Milvus Lite).
`index`, `search`, `eval-retrieval`, `dedup`, `serve` and `alexsuite.Index` go through this
interface only, so they work unchanged on either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from . import store as store_module
from .index import IndexSpec
from .store import IndexStore, Row, resolve_dir

MILVUS_SCHEMES = ("milvus://", "milvus-lite:")


class Store(Protocol):
    """An opened index: rows (id, path, size, mtime_ns, sha256, label) with one vector each, and
    the manifest that says how the vectors were made. Ids are stable and never reused."""

    root: Path | str  # where it is, as the user would pass it to --index (messages name it)
    manifest: dict  # model, layer, preprocess, spec, dba
    spec: IndexSpec

    def count(self) -> int: ...
    def rows_by_id(self, ids) -> dict[int, Row]: ...
    def row_by_path(self, path: Path) -> Row | None: ...
    def rows_under(self, folder: Path) -> dict[str, Row]: ...
    def all_rows(self) -> dict[int, Row]: ...
    def check_vectors_present(self, images: str = "IMAGES") -> None: ...
    def is_empty(self) -> bool: ...
    def use(self, params: str | None = None, device=None) -> None:
        """Search parameters (None: the index's own) and device for the searches that follow."""

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (Q, k'), k' >= k where a store over-fetches; ids -1 where none;
        distances Euclidean for l2 and 1 - cosine for cosine. Ids without a row may appear:
        callers look rows up and skip those."""

    def reconstruct(self, ids: np.ndarray) -> np.ndarray: ...
    def stored_ids(self) -> np.ndarray: ...
    def dead_vectors(self) -> int: ...
    def close(self) -> None: ...


def is_milvus(name: str | os.PathLike) -> bool:
    return str(name).startswith(MILVUS_SCHEMES)


def _milvus(where):
    """MilvusStore when `where` is a Milvus address (pymilvus is imported only then), else None."""
    if isinstance(where, str) and is_milvus(where):
        from .milvus_store import MilvusStore

        return MilvusStore
    return None


def locate(name: str | os.PathLike) -> Path | str:
    """An index folder (a bare name means indexes/NAME), or a Milvus address kept as text."""
    if is_milvus(name):
        from .milvus_store import parse_address

        parse_address(str(name))  # fails early, in one line, on a malformed address
        return str(name)
    return resolve_dir(name)


def _call(where: Path | str, method: str):
    """The store class's `method` for `where`, bound to it (the address, or the folder as a Path)."""
    milvus = _milvus(where)
    bound = getattr(milvus or IndexStore, method)
    return lambda *args: bound(where if milvus else Path(where), *args)


def exists(where: Path | str) -> bool:
    return _call(where, "exists")()


def manifest_of(where: Path | str) -> dict:
    return _call(where, "manifest_of")()


def open_read(where: Path | str) -> Store:
    """Open for searching (read-only)."""
    return _call(where, "open_read")()


# ---- writing (the indexer) ----------------------------------------------------------------------
def open_write(where: Path | str) -> Store:
    return _call(where, "open_write")()


def create(where: Path | str, model: dict, layer: str, preprocess: dict, spec: IndexSpec, dba=None) -> Store:
    """A new, empty index's manifest written (replacing an empty one left by a failed first run)."""
    milvus = _milvus(where)
    if not milvus:
        return IndexStore.create(Path(where), model, layer, preprocess, spec, dba)
    if dba or spec.on_disk or spec.pca:
        asked = "--dba" if dba else "--on-disk" if spec.on_disk else "--pca"
        raise ConfigError(f"{asked} is for FAISS indexes; Milvus collections keep vectors as given: leave it out")
    return milvus.create(where, model, layer, preprocess, spec)


def writer_lock(where: Path | str, wait: float = 0.0):
    """One writer at a time (see each store's writer_lock)."""
    milvus = _milvus(where)
    return milvus.writer_lock(where, wait) if milvus else store_module.writer_lock(Path(where), wait)


def staging(where: Path | str) -> Path | str:
    """Where a --rebuild is made before it replaces the index (emptied first)."""
    milvus = _milvus(where)
    if milvus:
        place = milvus.staging(where)
        milvus.drop(place)
        return place
    place = store_module.staging_dir(Path(where))
    shutil.rmtree(place, ignore_errors=True)
    return place


def swap_in(built: Path | str, where: Path | str) -> None:
    milvus = _milvus(where)
    return milvus.swap_in(built, where) if milvus else store_module.swap_in(Path(built), Path(where))


def write_errors(where: Path | str, report=None):
    """Disk-full and permission errors as one line (a Milvus store reports its own)."""
    return contextlib.nullcontext() if _milvus(where) else store_module.write_errors(Path(where), report)
