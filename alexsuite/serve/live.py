"""The served index, opened read-only and reopened when a writer commits: a new FAISS file is
read beside the one in use and swapped in whole, so a search never sees half a commit, and the
old one is closed when its last search ends.

The writer's commit order makes any reader consistent: new vectors reach index.faiss before
their rows reach SQLite, and rows leave SQLite before their vectors leave index.faiss, so a
search keeps only hits with a row (retrieval/indexer.py `_Writer.commit`)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from ..data.inputs import ImageInput
from ..retrieval.backend import is_milvus, open_read
from ..retrieval.rerank import Rerank
from ..retrieval.search import Searcher
from ..retrieval.store import INDEX_FILE, MANIFEST_FILE, META_FILE


def signature(root: Path | str) -> tuple:
    """What changes when a writer commits or a --rebuild swaps the folder. A Milvus collection is
    searched live by the engine: nothing to reopen."""
    if is_milvus(root):
        return ()
    out = []
    for p in (root, root / INDEX_FILE, root / MANIFEST_FILE):
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def last_commit(root: Path | str) -> float | None:
    if is_milvus(root):
        return None
    times = []
    for name in (INDEX_FILE, META_FILE, META_FILE + "-wal"):
        with suppress(OSError):
            times.append(os.stat(root / name).st_mtime)
    return max(times) if times else None


@dataclass(frozen=True)
class Reranked(ImageInput):
    """A query with the re-ranking its request asked for (`rerank=aqe:...`): it travels with the
    image through the batcher, so queries that share a forward pass may each ask their own."""

    rerank: Rerank = Rerank()


class ServedSearcher(Searcher):
    """The server's Searcher: each query is re-ranked as its own request asked (Reranked)."""

    def search_inputs(self, inputs, *args, **kwargs):
        kwargs.setdefault("rerank", [getattr(i, "rerank", Rerank()) for i in inputs])
        return super().search_inputs(inputs, *args, **kwargs)


class Snapshot:
    """One opened state of the index: its store (SQLite rows) and a Searcher per FAISS params."""

    def __init__(self, root: Path | str, loaded, device):
        self.sig = signature(root)
        self.store = open_read(root)
        self.search = ServedSearcher(self.store, loaded, device)
        self.users, self.retired = 0, False
        self.lock = threading.Lock()  # one SQLite connection and one FAISS index: one user at a time

    @contextmanager
    def using(self, params: str | None):
        """The lock, with `params` (default: the index's own) set on the FAISS index every query
        shares: set again for each use, so one request's nprobe never reaches the next one's."""
        with self.lock:
            self.search.set_params(self.default_params if params is None else params)
            yield self.search

    @property
    def default_params(self) -> str:
        return self.store.spec.search_params or ""

    def close(self) -> None:
        self.store.close()


class LiveIndex:
    """The current Snapshot, swapped for a new one when the index's files change."""

    def __init__(self, root: Path | str, loaded, device, poll_seconds: float = 0.5, warn=print):
        self.root, self.loaded, self.device, self.poll, self.warn = root, loaded, device, poll_seconds, warn
        self.current = Snapshot(root, loaded, device)
        self.reloads = 0
        self.failed, self.problem = None, None  # the files' signature that failed to open, and why
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="alexsuite-index-watch", daemon=True)

    def start(self) -> LiveIndex:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._retire(self.current)

    @contextmanager
    def snapshot(self, lock: bool = True):
        """The current Snapshot, held open (and, unless `lock` is False, locked) for one use."""
        with self._swap:
            snap = self.current
            snap.users += 1
        try:
            with snap.lock if lock else nullcontext():
                yield snap
        finally:
            with self._swap:
                snap.users -= 1
                done = snap.retired and snap.users == 0
            if done:
                snap.close()

    def check(self) -> bool:
        """Reopen if a commit landed; True when it did."""
        sig = signature(self.root)
        if sig in (self.current.sig, self.failed):
            return False
        try:
            fresh = Snapshot(self.root, self.loaded, self.device)
        except Exception as e:  # mid-swap of a --rebuild, or a damaged commit: keep serving the old one
            self.failed, self.problem = sig, f"index reload failed, still serving the previous state: {e}"
            self.warn(self.problem)
            return False  # tried again when the files change again, not every poll
        self.failed = self.problem = None
        with self._swap:
            old, self.current = self.current, fresh
            self.reloads += 1
        self._retire(old)
        return True

    def _retire(self, snap: Snapshot) -> None:
        with self._swap:
            snap.retired = True
            done = snap.users == 0
        if done:
            snap.close()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()
