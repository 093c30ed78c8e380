"""Queries that arrive together share one forward pass and one FAISS call: each request puts
its image on a queue and waits; one worker thread takes what has gathered within a few
milliseconds (up to a batch), embeds it all at once and searches it all at once."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..data.inputs import ImageInput


@dataclass
class Query:
    image: ImageInput
    k: int
    params: str | None
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs `search(snapshot_params, inputs, k)` for batches of Queries in its own thread."""

    def __init__(self, live, max_batch: int = 64, wait_ms: float = 5.0):
        self.live, self.max_batch, self.wait = live, max_batch, wait_ms / 1000
        self.queries = self.batches = self.largest = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="alexsuite-batcher", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)

    def submit(self, image: ImageInput, k: int, params: str | None = None) -> Future:
        """A Future of the image's QueryResult."""
        q = Query(image, k, params)
        self._queue.put(q)
        return q.future

    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            try:
                self._search(batch)
            except BaseException as e:  # never leave a request waiting on a dead thread
                for q in batch:
                    _answer(q, error=e)
                if not isinstance(e, Exception):
                    raise

    def _gather(self) -> list[Query] | None:
        """The first waiting query and whatever arrives within the wait (up to a batch)."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                more = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(more)
        return batch

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _search(self, batch: list[Query]) -> None:
        batch = [q for q in batch if q.future.set_running_or_notify_cancel()]  # the caller may have gone
        self.queries += len(batch)
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        groups: dict = {}
        for q in batch:  # one FAISS call per distinct search-parameter setting (usually one)
            groups.setdefault(q.params, []).append(q)
        for params, queries in groups.items():
            try:
                # the forward pass runs unlocked; the lock covers only FAISS and the row lookups
                with self.live.snapshot(lock=False) as snap:
                    found = snap.search.search_inputs(
                        [q.image for q in queries],
                        max(q.k for q in queries),
                        batch_size=self.max_batch,
                        guard=lambda snap=snap, params=params: snap.using(params),
                    )
            except Exception as e:  # a bad parameter or a failed read answers these queries, not the server
                for q in queries:
                    _answer(q, error=e)
                continue
            for q, result in zip(queries, found):
                result.results = result.results[: q.k]
                _answer(q, result)


def _answer(q: Query, result=None, error: BaseException | None = None) -> None:
    if q.future.done():
        return
    if error is not None:
        q.future.set_exception(error)
    else:
        q.future.set_result(result)
