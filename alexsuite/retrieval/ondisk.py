"""IVF indexes larger than memory: the inverted lists in a memory-mapped file beside index.faiss
(FAISS OnDiskInvertedLists), so a search holds the coarse quantizer and the pages of the lists it
probes, not every vector [source: FAISS wiki, "Indexes that do not fit in RAM"; demos/demo_ondisk_ivf.py].

- Readers open the lists read-only (IO_FLAG_READ_ONLY) and by their file name in the index's own
  folder (IO_FLAG_ONDISK_SAME_DIR), so a folder can be moved or swapped in whole.
- A list file is never changed once written: every commit writes a new `lists-<random>.ivfdata`
  (the old lists, plus the new vectors' shard, less what was removed: FAISS's merge_from_multiple),
  then index.faiss, which names it, is replaced atomically; then the unreferenced files go. A
  reader still mapping an old file keeps reading it until it reopens; a kill leaves the old pair.
- Under torchrun every process adds its slice to a shard (an empty copy of the trained index),
  writes it, and process 0 merges the shards into the lists (FAISS's merge_ondisk recipe), so no
  process gathers every vector.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

LISTS_GLOB = "lists-*.ivfdata"
READ_FLAGS = faiss.IO_FLAG_READ_ONLY | faiss.IO_FLAG_ONDISK_SAME_DIR


def is_on_disk(index: faiss.Index) -> bool:
    return _on_disk_lists(index) is not None


@contextmanager
def _quiet():
    """FAISS prints each list file it maps or resizes on the C stdout, which would break --json."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def read(path: Path) -> faiss.Index:
    """An index file, its on-disk lists (if any) mapped read-only from its own folder. A list file
    shorter than the index says (truncated, or another one of its name) is refused: reading past
    its end would kill the process (SIGBUS), not raise."""
    with _quiet():
        index = faiss.read_index(str(path), READ_FLAGS)
    lists = _on_disk_lists(index)
    if lists is not None and os.stat(lists.filename).st_size < lists.totsize:
        raise RuntimeError(f"{Path(lists.filename).name}: truncated ivfdata file ({lists.totsize:,} bytes expected)")
    return index


def _on_disk_lists(index: faiss.Index):
    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def lists_file(index: faiss.Index) -> Path | None:
    lists = _on_disk_lists(index)
    return Path(lists.filename) if lists is not None else None


def empty_copy(index: faiss.Index) -> faiss.Index:
    """The trained index without vectors, its lists in memory: a shard to add vectors to."""
    ivf = faiss.extract_index_ivf(index)
    lists, owned = ivf.invlists, ivf.own_invlists
    ivf.own_invlists = False  # lend the lists out while the copy is made without them
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, False)
    try:
        copy = faiss.clone_index(index)
    finally:
        ivf.replace_invlists(lists, owned)
    copy.ntotal = faiss.extract_index_ivf(copy).ntotal = 0
    return copy


def rewrite(index: faiss.Index, folder: Path, shards=(), remove=()) -> Path | None:
    """Give `index` a new list file in `folder`: its current lists and the shards' (indexes made
    by empty_copy, or read from shard files), less the ids in `remove`. Returns the new file
    (None for an index left empty, whose lists stay in index.faiss: an empty file cannot be mapped)."""
    ivf = faiss.extract_index_ivf(index)
    sources = [faiss.extract_index_ivf(s).invlists for s in [index, *shards]]
    if not sum(lists.compute_ntotal() for lists in sources):
        empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(empty, True)
        empty.this.disown()
        ivf.ntotal = index.ntotal = 0
        return None
    target = folder / f"lists-{os.urandom(6).hex()}.ivfdata"
    with _quiet():
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(target))
        pointers = faiss.InvertedListsPtrVector()
        for source in sources:
            pointers.push_back(source)
        total = lists.merge_from_multiple(pointers.data(), pointers.size(), False)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns it now
        ivf.ntotal = index.ntotal = total
        ids = np.asarray(list(remove), np.int64)
        if len(ids):
            index.remove_ids(ids)
    _fsync(target)  # on disk before any index.faiss names it
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # also writes back pages dirtied through FAISS's shared mapping
    finally:
        os.close(fd)


def to_disk(index: faiss.Index, folder: Path) -> Path | None:
    """Move an in-memory IVF index's lists into a new list file."""
    return rewrite(index, folder)


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, folder: Path, remove=()) -> Path | None:
    """Add prepared vectors (and remove ids) by writing a new list file: the old one is never touched."""
    shard = empty_copy(index)
    if len(ids):
        shard.add_with_ids(vectors, ids)
    return rewrite(index, folder, [shard], remove)


def write_shard(shard: faiss.Index, path: Path) -> None:
    faiss.write_index(shard, str(path))


def read_shard(path: Path) -> faiss.Index:
    """Mapped, not read: the shards together may be larger than memory (as merge_ondisk reads them)."""
    with _quiet():
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)


def remove_unreferenced(folder: Path, keep: Path | None) -> None:
    """List files no index.faiss names any more (replaced by a commit, or left by a killed one)."""
    for path in folder.glob(LISTS_GLOB):
        if keep is None or path.name != keep.name:
            path.unlink(missing_ok=True)
