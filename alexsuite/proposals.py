"""Selective search region proposals (Selective search; docs/references.md) from OpenCV contrib, as R-CNN
used them: images resized before segmenting, fast mode by default (quality as an option),
boxes returned in the original image's 0-based corners. Results are cached on disk per
image content and settings, and computed in parallel over images.

OpenCV's implementation has known troubles (Selective search; docs/references.md): a crash on very elongated
images, slowness on huge ones, no size filter. So images are resized to a working size,
padded to an aspect ratio of at most MAX_ASPECT, and boxes are filtered afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data.decode import decode_image
from .data.inputs import ImageInput
from .errors import ConfigError, DataError, ImageDecodeError
from .fileio import atomic_write_bytes, file_sha256, open_regular
from .settings import setting

MODES = ("fast", "quality")
WORKERS = 2  # processes running selective search, one image each
MAX_ASPECT = 2.0  # OpenCV's selective search has crashed above about 2.4


@dataclass(frozen=True)
class ProposalSettings:
    mode: str = setting(
        "fast",
        "Selective search strategy: fast (~2,000 boxes on a VOC image) or quality (~10,000, slower).",
        "Selective search",
    )
    size: int = setting(500, "Longer side, in px, the image is resized to before segmenting.", "Selective search")
    min_size: int = setting(10, "Drop boxes narrower or shorter than this (original pixels).")
    max_boxes: int = setting(2000, "Proposals kept per image, in selective search's ranking.", "R-CNN §2.2")

    def key(self) -> str:
        # "seeded" keeps cache entries apart from those of the unseeded ranking (CHANGELOG.md)
        return hashlib.sha256((repr(sorted(asdict(self).items())) + "seeded").encode()).hexdigest()[:12]

    def check(self) -> ProposalSettings:
        if self.mode not in MODES:
            raise ConfigError(f"proposal mode {self.mode!r}: use fast or quality")
        return self


@dataclass(frozen=True)
class ProposeSettings:
    """How `alexsuite proposals` runs selective search over many images."""

    workers: int = setting(WORKERS, "Processes, one image each.")
    cache: str | None = setting(None, "Keep results here, keyed by image content and settings (default: no cache).")
    draw: int = setting(50, "With --out: how many of each image's first boxes are drawn.")


def _working_image(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize so the longer side is `size` and pad (replicating edges) to a safe aspect ratio;
    returns the BGR image and the scale from original to working pixels."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    img = cv2.resize(
        rgb,
        (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    hh, ww = img.shape[:2]
    pad_h = max(0, int(np.ceil(ww / MAX_ASPECT)) - hh)
    pad_w = max(0, int(np.ceil(hh / MAX_ASPECT)) - ww)
    if pad_h or pad_w:
        img = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(img[:, :, ::-1]), scale


def _seed_c_rand(seed: int = 0) -> None:
    """OpenCV ranks selective search's boxes by level times C's rand(), a process-wide state: seeded
    here, the same image gives the same ranked list whichever worker process or call order."""
    with contextlib.suppress(OSError, AttributeError):  # no C library to reach (e.g. Windows): order may vary
        ctypes.CDLL(None).srand(seed)


def selective_search(rgb: np.ndarray, settings: ProposalSettings = ProposalSettings()) -> np.ndarray:
    """float32 (N, 4) boxes [x1, y1, x2, y2] in `rgb`'s pixels (0-based, x2/y2 exclusive)."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from running images in separate processes
    h, w = rgb.shape[:2]
    bgr, scale = _working_image(rgb, settings.size)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    if settings.mode == "quality":
        search.switchToSelectiveSearchQuality()
    else:
        search.switchToSelectiveSearchFast()
    _seed_c_rand()
    rects = search.process().astype(np.float32)  # x, y, w, h in working pixels
    if not len(rects):
        return np.zeros((0, 4), np.float32)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1) / scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)  # padding is not image: cut it off
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= settings.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= settings.min_size)
    boxes = np.round(boxes[keep])
    _, first = np.unique(boxes, axis=0, return_index=True)  # clipping can make duplicates
    return boxes[np.sort(first)][: settings.max_boxes].astype(np.float32)


def _compute(item, settings: ProposalSettings, cache: str | None) -> np.ndarray | ImageDecodeError:
    """One image (a path, or an ImageInput), in a worker process: from the cache, or computed and
    cached. An unreadable image is returned as its ImageDecodeError, so one bad file does not
    stop the others. Pixels held in memory are never cached."""
    try:
        if isinstance(item, ImageInput):
            if item.path is None:
                return selective_search(item.pixels, settings)
            item = str(item.path)
        return _cached_boxes(item, settings, cache)
    except ImageDecodeError as e:
        return e


def _cached_boxes(path: str, settings: ProposalSettings, cache: str | None) -> np.ndarray:
    file = None
    if cache:
        try:
            file = Path(cache) / f"{file_sha256(path)[:24]}-{settings.key()}.npy"
        except OSError as e:  # the decoder's own wording for a missing or unreadable file
            raise ImageDecodeError(path, (e.strerror or str(e)).lower()) from None
    cached = _read_cached(file) if file is not None else None
    if cached is not None:
        return cached
    boxes = selective_search(decode_image(path), settings)
    if file is not None:
        buffer = io.BytesIO()
        np.save(buffer, boxes)
        with contextlib.suppress(OSError):  # a cache that cannot be written is only a cache
            atomic_write_bytes(file, lambda f: f.write(buffer.getvalue()))
    return boxes


def _read_cached(file: Path) -> np.ndarray | None:
    """A cache entry's boxes, or None when there is none or it is not one this code wrote
    (damaged, empty, a pipe or folder in its place, boxes of the wrong shape or not finite):
    such an entry is computed again."""
    try:
        with open_regular(file) as f:
            boxes = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.dtype == np.float32 and np.isfinite(boxes).all()
    return boxes if ok else None


def propose(
    paths, settings: ProposalSettings = ProposalSettings(), cache_dir=None, workers: int = WORKERS, on_image=None
) -> list[np.ndarray | ImageDecodeError]:
    """Boxes for every image (paths or ImageInputs), in order; an unreadable image gives its
    ImageDecodeError."""
    settings.check()
    jobs = (
        [p if isinstance(p, ImageInput) else str(p) for p in paths],
        [settings] * len(paths),
        [str(cache_dir) if cache_dir else None] * len(paths),
    )
    if workers <= 1 or len(paths) <= 1:
        return _in_order(map(_compute, *jobs), on_image)
    try:
        with ProcessPoolExecutor(workers) as pool:
            return _in_order(pool.map(_compute, *jobs), on_image)
    except BrokenProcessPool:
        raise DataError(
            "selective search crashed in OpenCV on one of the images; run with --workers 0 "
            "to find which, and report it with the image"
        ) from None


def _in_order(results, on_image) -> list:
    out = []
    for result in results:
        out.append(result)
        if on_image:
            on_image(1)
    return out
