"""The feature cache of `train-detector` (R-CNN §2.3): per training image, the SVMs' features of
every box and the regressors' pool5 features of the boxes near an object, read in each test
mode, stored as float16 files named by image content and boxes, so an interrupted run skips
what is done and an edited annotation never meets stale features."""

from __future__ import annotations

import hashlib
import shutil
from functools import lru_cache
from pathlib import Path

import torch

from ..boxes import box_iou
from ..data.decode import decode_image
from ..fileio import atomic_write_bytes, file_sha256, open_regular
from .framing import Framing
from .regions import head_features, image_tensor, region_pool5

FEATURE_STAT_IMAGES = 200  # mean feature norm over this many images (rcnn_feature_stats.m; docs/references.md)
IMAGE_MEMORY = 4 << 30  # decoded training images (and features, when they fit) kept in memory
FEATURE_FILE_OVERHEAD = 4096  # torch.save's zip headers per feature file
DISK_HEADROOM = 1.1  # room asked for beyond the estimate (float16 sizes are exact; headers vary)
FEATURES_VERSION = "v4"  # how features are read (CHANGELOG.md); a new version never meets old caches
FREE_SPACE_FIX = (
    "free some (older detectors' cache/features folders can go) and run the same "
    "command again: the finished stages are kept"
)


def image_loader(items, budget: int = IMAGE_MEMORY):
    """uint8 (3, H, W) tensors by image index, the most recent ones kept in memory."""
    per_image = max(1, sum(a.width * a.height * 3 for a in items) // max(len(items), 1))

    @lru_cache(maxsize=max(16, budget // per_image))
    def load(i: int) -> torch.Tensor:
        return image_tensor(decode_image(items[i].image))

    return load


def drop_stale_features(root: Path, keep: set[str]) -> None:
    """Features of earlier fine-tuned weights are never read again."""
    if root.is_dir():
        for d in root.iterdir():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def features_folder(root: Path, weights: str, layer: str, framing: Framing, mode: str) -> Path:
    """Where one mode's features of one fine-tuned network go (`weights`: its digest, or "*"
    to find any network's)."""
    return root / f"{weights}-{layer}-{FEATURES_VERSION}-{framing.name}-{mode}"


def _feature_file(folder: Path, item, boxes: torch.Tensor) -> Path:
    """Named by the image's content and the boxes read from it: an edited annotation or other
    proposal settings never meet stale features."""
    digest = hashlib.sha256(boxes.float().contiguous().numpy().tobytes()).hexdigest()[:12]
    return folder / f"{file_sha256(item.image)[:20]}-{digest}.pt"


def extract_features(
    model,
    pre,
    items,
    proposals,
    truths,
    layer: str,
    regression_iou: float,
    folder: Path,
    load_image,
    on_image=None,
    mode: str = "rcnn",
    framing: Framing = Framing(),
) -> list[Path]:
    """Per image, `layer` features of every box (ground truth first, then proposals)
    and pool5 features of the boxes near an object (the only ones a regressor trains on),
    read in `mode` (regions.py), stored as float16. Images already done are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, item in enumerate(items):
        gt, _ = truths[i]
        boxes = torch.cat([gt.float(), torch.as_tensor(proposals[i]).float()])
        file = _feature_file(folder, item, boxes)
        files.append(file)
        if not _readable(file):
            pool5 = region_pool5(model, load_image(i), boxes, pre, mode, framing)
            feats = head_features(model, pool5, layer)
            rows = _near_rows(boxes, gt, regression_iou)
            payload = {
                "boxes": boxes,
                "gt": torch.tensor(len(gt)),
                "layer": feats.half().cpu(),
                "pool5_rows": rows,
                "pool5": pool5[rows.to(pool5.device)].half().cpu(),
            }
            atomic_write_bytes(file, lambda f, payload=payload: torch.save(payload, f))
        if on_image:
            on_image(1)
    return files


def _readable(file: Path) -> bool:
    """Whether a cached feature file is there and loads (a damaged one is computed again)."""
    if not file.exists():
        return False
    try:
        with open_regular(file) as f:
            return isinstance(torch.load(f, map_location="cpu", weights_only=True), dict)
    except Exception:  # truncated, empty, foreign: torch raises several types
        return False


def _near_rows(boxes: torch.Tensor, gt: torch.Tensor, min_iou: float) -> torch.Tensor:
    """Rows of the boxes a regressor may train on: IoU >= min_iou with some object."""
    if not len(gt):
        return torch.zeros(0, dtype=torch.long)
    return torch.nonzero(box_iou(boxes, gt.float()).max(1).values >= min_iou).flatten()


def feature_disk_bytes(
    items, proposals, truths, regression_iou: float, layer_dim: int, pool5_dim: int, folders: list[Path | None]
) -> int:
    """Bytes extract_features will still write into `folders` (one per mode; None: one not
    begun): float16 `layer` rows for every box, pool5 rows for the boxes near an object, for
    each image whose file is not there yet."""
    total = 0
    for i, item in enumerate(items):
        gt = truths[i][0]
        boxes = torch.cat([gt.float(), torch.as_tensor(proposals[i]).float()])
        missing = sum(f is None or not _feature_file(f, item, boxes).exists() for f in folders)
        if missing:
            near = len(_near_rows(boxes, gt, regression_iou))
            per_file = len(boxes) * (2 * layer_dim + 16) + near * (2 * pool5_dim + 8) + FEATURE_FILE_OVERHEAD
            total += missing * per_file
    return total


def feature_dims(model, layer: str, framing: Framing) -> tuple[int, int]:
    """(`layer` width, pool5 width) of one box's cached features, all views side by side."""
    views = len(framing.views)
    with torch.no_grad():
        x = torch.zeros(1, model.pool5_dim, device=next(model.parameters()).device)
        return model.head(x, layer).shape[1] * views, model.pool5_dim * views


def feature_loader(files: list[Path]):
    """Feature files by image index, all held in memory when they fit (the SVMs read them once per class)."""
    total = sum(f.stat().st_size for f in files)
    keep_all = total < IMAGE_MEMORY  # a second pass per class: hold them when they fit

    @lru_cache(maxsize=len(files) if keep_all else 8)
    def load(i: int) -> dict:
        return torch.load(files[i], map_location="cpu", weights_only=True)

    return load


def mean_norm(load, n: int, key: str) -> float:
    """Mean L2 norm of `key` features over the first images: R-CNN scales features to a fixed norm."""
    norms = [load(i)[key].float().norm(dim=1) for i in range(min(n, FEATURE_STAT_IMAGES))]
    norms = torch.cat([x for x in norms if len(x)]) if any(len(x) for x in norms) else torch.ones(1)
    return float(norms.mean().clamp_min(1e-6))
