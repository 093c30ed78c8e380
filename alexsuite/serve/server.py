"""What the HTTP API runs on: the model, the live index, the query batcher and the detector,
loaded once when the server starts."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from ..api.index import index_model
from ..data.inputs import ImageInput
from ..devices import resolve_device
from ..errors import DataError
from ..models.checkpoint import load_model
from ..retrieval.store import resolve_dir
from .app import UnknownImage, thumbnail_bytes
from .batching import Batcher
from .live import LiveIndex, last_commit
from .settings import ServeSettings

THUMB_CACHE = 2048  # thumbnails kept in memory


class Service:
    def __init__(self, settings: ServeSettings, warn=print):
        settings.check()
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.root = resolve_dir(settings.index)
        self.loaded = load_model(index_model(self.root, settings.model), self.device)
        self.live = LiveIndex(self.root, self.loaded, self.device, settings.reload_seconds, warn)
        self.batcher = Batcher(self.live, settings.max_batch, settings.batch_ms)
        self.detector = None
        if settings.detector:
            from ..api.detector import Detector

            self.detector = Detector(settings.detector, settings.device)
        self.thumbnail = functools.lru_cache(THUMB_CACHE)(self._thumbnail)

    def start(self) -> Service:
        self.live.start()
        self.batcher.start()
        return self

    def stop(self) -> None:
        self.batcher.stop()
        self.live.stop()

    async def search(self, image: ImageInput, k: int, params: str | None) -> dict:
        result = await asyncio.wrap_future(self.batcher.submit(image, k, params))
        if result.error:
            raise DataError(result.error)
        return result.to_dict()

    def indexed(self, id: int) -> ImageInput:
        """The indexed image with this id (the only way a request names a file)."""
        with self.live.snapshot() as snap:
            row = snap.store.rows_by_id([id]).get(id)
        if row is None:
            raise UnknownImage(f"no image with id {id} in {self.root.name}")
        return ImageInput(row.path, path=Path(row.path))

    def detect(self, image: ImageInput, threshold: float | None, mode: str | None) -> dict:
        overrides = {k: v for k, v in (("threshold", threshold), ("mode", mode)) if v is not None}
        (found,) = self.detector.detect(image, workers=0, **overrides)
        return found.to_dict()

    def _thumbnail(self, id: int, size: int) -> bytes:
        return thumbnail_bytes(str(self.indexed(id).path), size)

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
