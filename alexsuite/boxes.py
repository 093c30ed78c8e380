"""Box arithmetic for detection. Boxes are float (N, 4) tensors of 0-based pixel corners
[x1, y1, x2, y2] with x2/y2 exclusive, so width = x2 - x1; VOC's 1-based inclusive boxes are
converted once, where annotations are read (data/detection_sets.py). IoU and NMS are torchvision's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, box_iou

__all__ = [
    "Detections",
    "Truth",
    "box_iou",
    "clip",
    "nms_per_class",
    "select_per_class",
    "encode",
    "decode",
    "context_window",
    "tightest_square",
    "valid",
]

NMS_IOU = 0.3  # greedy NMS per class at this overlap (rcnn_test.m)
MAX_PER_CLASS = 100  # at most 100 boxes per class and image before NMS (rcnn_test.m)
CONTEXT_PADDING = 16  # px of image around each warped region, at a 227 px crop (R-CNN §2.1)

# R-CNN's bounding-box regression targets (R-CNN appendix C; docs/references.md).


def _centre_size(boxes: torch.Tensor):
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """t = ((Gx - Px) / Pw, (Gy - Py) / Ph, log(Gw / Pw), log(Gh / Ph)) per row."""
    px, py, pw, ph = _centre_size(proposals)
    gx, gy, gw, gh = _centre_size(targets)
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], 1)


def decode(proposals: torch.Tensor, deltas: torch.Tensor, max_log_scale: float = 4.0) -> torch.Tensor:
    """The inverse of encode; log-scales are capped so a wild regressor cannot overflow."""
    px, py, pw, ph = _centre_size(proposals)
    dw, dh = deltas[:, 2].clamp(max=max_log_scale), deltas[:, 3].clamp(max=max_log_scale)
    cx, cy = px + deltas[:, 0] * pw, py + deltas[:, 1] * ph
    w, h = pw * torch.exp(dw), ph * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)


def clip(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def mirror(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """The boxes of an image `width` px wide, mirrored left to right with it (x -> width - x)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def valid(boxes: torch.Tensor, min_size: float = 1.0) -> torch.Tensor:
    """Boxes with at least `min_size` pixels of width and height."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


def nms_per_class(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float = NMS_IOU
) -> torch.Tensor:
    """Indices kept by greedy NMS run separately for each class (rcnn_test.m: overlap 0.3)."""
    return batched_nms(boxes.float(), scores.float(), labels, iou)


def select_per_class(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    keep: torch.Tensor,
    width: int,
    height: int,
    nms: float = NMS_IOU,
    max_per_class: int = MAX_PER_CLASS,
    deltas=None,
):
    """R-CNN's test-time selection (R-CNN §2.2, rcnn_test.m) from one image's boxes (N, 4) and
    their scores (N, K): per class, the boxes `keep` (N, K) marks, at most max_per_class of them,
    best first, moved by `deltas(c, rows)` (box regression) when given, then NMS per class.
    Returns (rows into `boxes`, class indices, the boxes moved) of those kept, best first."""
    rows, labels, moved = [], [], []
    for c in range(scores.shape[1]):
        s = scores[:, c]
        r = torch.nonzero(keep[:, c]).flatten()
        r = r[torch.argsort(s[r], descending=True)][:max_per_class]
        if not len(r):
            continue
        b = boxes[r]
        if deltas is not None:
            b = clip(decode(b, deltas(c, r)), width, height)
        rows.append(r)
        labels.append(torch.full((len(r),), c, dtype=torch.long, device=r.device))
        moved.append(b)
    if not rows:
        none = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return none, none, torch.zeros(0, 4, device=boxes.device)
    r, lab, b = torch.cat(rows), torch.cat(labels), torch.cat(moved)
    ok = valid(b)
    r, lab, b = r[ok], lab[ok], b[ok]
    kept = nms_per_class(b, scores[r, lab], lab, nms)
    return r[kept], lab[kept], b[kept]


def context_window(boxes: torch.Tensor, crop: int, padding: int = CONTEXT_PADDING) -> torch.Tensor:
    """The image region R-CNN warps for each box (R-CNN §2.1, appendix A; docs/references.md): the box grown so
    that, once warped to crop x crop, it is surrounded by `padding` pixels of context, i.e.
    scaled by crop / (crop - 2 * padding) about its centre. The region may leave the image;
    the warp fills the outside with the mean colour (zero after normalisation)."""
    cx, cy, w, h = _centre_size(boxes)
    scale = crop / (crop - 2.0 * padding)
    half_w, half_h = 0.5 * w * scale, 0.5 * h * scale
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)


def tightest_square(boxes: torch.Tensor) -> torch.Tensor:
    """The smallest square about each box's centre that holds the box (R-CNN appendix A, B)."""
    cx, cy, w, h = _centre_size(boxes)
    half = 0.5 * torch.maximum(w, h)
    return torch.stack([cx - half, cy - half, cx + half, cy + half], 1)


@dataclass
class Truth:
    """One image's ground truth: boxes (N, 4), class indices (N,), difficult flags (N,)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor


@dataclass
class Detections:
    """One image's detections: boxes (M, 4), scores (M,), class indices (M,), and the raw
    SVM scores (M,) behind `scores` when a detector made them (its scores are then their
    calibrated probabilities, or the same raw scores when it has no calibration)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    svm_scores: torch.Tensor | None = None
