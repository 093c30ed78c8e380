"""What the HTTP API runs on: the model, the live index, the query batcher and the detector,
loaded once when the server starts."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

from ..api.index import index_model
from ..data.inputs import ImageInput
from ..devices import resolve_device
from ..errors import ConfigError
from ..models.checkpoint import load_model
from ..retrieval.backend import locate
from ..retrieval.dedup import DedupSettings, find_duplicates
from .app import Busy, UnknownImage, thumbnail_bytes
from .batching import Batcher
from .live import LiveIndex, last_commit
from .settings import ServeSettings

THUMB_CACHE = 2048  # thumbnails kept in memory
SEARCH_TIMEOUT = 60.0  # seconds a search may wait for the batcher before a 503
# Search parameters a request may set, with their largest values: each costs time or memory in
# proportion, and only those the index itself uses (so the index's own setting resets them).
PARAM_LIMITS = {"nprobe": 65536, "efSearch": 32768, "k_factor_rf": 1024, "k_factor": 1024}


def check_params(params: str, default: str) -> None:
    """A request's FAISS parameters: only names the index's own parameters set, within limits."""
    own = {part.split("=")[0] for part in default.split(",") if "=" in part}
    for part in params.split(","):
        name, _, value = part.partition("=")
        if name not in own or name not in PARAM_LIMITS:
            raise ConfigError(f"params {part!r}: this index takes {', '.join(sorted(own)) or 'no search parameters'}")
        if not value.isdigit() or not 1 <= int(value) <= PARAM_LIMITS[name]:
            raise ConfigError(f"params {part!r}: {name} must be a whole number from 1 to {PARAM_LIMITS[name]}")


class Service:
    def __init__(self, settings: ServeSettings, warn=print):
        settings.check()
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.root = locate(settings.index)
        self.loaded = load_model(index_model(self.root, settings.model), self.device)
        self.live = LiveIndex(self.root, self.loaded, self.device, settings.reload_seconds, warn)
        self.batcher = Batcher(self.live, settings.max_batch, settings.batch_ms)
        self.detector = None
        if settings.detector:
            from ..api.detector import Detector

            self.detector = Detector(settings.detector, settings.device)
            if not self.detector.calibrated():
                warn(self.detector.uncalibrated_note())
        self._detecting = threading.Lock()
        self._groups: dict = {}  # (index version, threshold) -> duplicate groups

    def start(self) -> Service:
        self.live.start()
        self.batcher.start()
        return self

    def stop(self) -> None:
        self.batcher.stop()
        self.live.stop()

    async def search(self, image: ImageInput, k: int, params: str | None) -> dict:
        if params is not None:
            check_params(params, self.live.current.default_params)
        future = self.batcher.submit(image, k, params)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), SEARCH_TIMEOUT)
        except TimeoutError:
            raise Busy(f"no answer within {SEARCH_TIMEOUT:.0f} s: the server is overloaded; try again") from None
        if result.failure is not None:
            raise result.failure
        return result.to_dict()

    def row(self, id: int):
        """The indexed row with this id (the only way a request names a file)."""
        with self.live.snapshot() as snap:
            row = snap.store.rows_by_id([id]).get(id)
        if row is None:
            raise UnknownImage(f"no image with id {id} in {getattr(self.root, 'name', self.root)}")
        return row

    def indexed(self, id: int) -> ImageInput:
        row = self.row(id)
        return ImageInput(row.path, path=Path(row.path))

    def detect(self, image: ImageInput, threshold: float | None, mode: str | None) -> dict:
        overrides = {k: v for k, v in (("threshold", threshold), ("mode", mode)) if v is not None}
        with self._detecting:  # one at a time: memory, and selective search's process-wide C rand() seed
            (found,) = self.detector.detect(image, workers=0, **overrides)
        return found.to_dict()

    def duplicates(self, threshold: float | None, limit: int) -> dict:
        """Near-duplicate groups of the served index (as `alexsuite dedup --index`), largest first;
        found once per index version and threshold, then answered from memory."""
        with self.live.snapshot() as snap:
            key = (snap.sig, threshold)
            if key not in self._groups:
                found = find_duplicates(snap.store, DedupSettings(threshold=threshold))
                kept = [(k, v) for k, v in self._groups.items() if k[0] == snap.sig][-7:]  # at most 8 answers held
                self._groups = dict(kept) | {key: found}
            groups = self._groups[key]
        return {"groups": [g.to_dict() for g in groups[:limit]], "total": len(groups)}

    def thumbnail(self, id: int, size: int) -> bytes:
        row = self.row(id)
        return self._thumbnail(row.path, row.sha256, size)  # keyed by content: a rebuilt index reuses ids

    @staticmethod
    @functools.lru_cache(THUMB_CACHE)
    def _thumbnail(path: str, sha256: str, size: int) -> bytes:
        return thumbnail_bytes(path, size)

    def health(self) -> dict:
        ok = self.batcher.alive
        return {"status": "ok" if ok else "broken", "reload_problem": self.live.problem}

    def stats(self) -> dict:
        with self.live.snapshot() as snap:
            images, manifest = snap.store.count(), snap.store.manifest
        b = self.batcher
        return {
            "images": images,
            "index": str(self.root),
            "model": {"source": str(self.loaded.source), "fingerprint": self.loaded.fingerprint},
            "layer": manifest.get("layer"),
            "factory": manifest.get("spec", {}).get("factory"),
            "metric": manifest.get("spec", {}).get("metric"),
            "last_commit": last_commit(self.root),
            "reloads": self.live.reloads,
            "queries": b.queries,
            "batches": b.batches,
            "largest_batch": b.largest,
            "detector": str(self.settings.detector) if self.detector else None,
        }
