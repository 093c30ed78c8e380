"""Pascal VOC detection scoring: per-class average precision at IoU 0.5, by the VOC2007
11-point definition and by the area under the interpolated precision-recall curve (VOC2010
on), and the recall of region proposals.

Matching follows the VOC devkit: detections of a class, highest score first, each takes the
unmatched ground-truth box it overlaps most if that IoU >= 0.5 (a true positive), else it is
a false positive; a detection whose best box is 'difficult' counts as neither, and difficult
boxes are not among the positives. Boxes are 0-based, x2/y2 exclusive, so areas need no +1.
"""

from __future__ import annotations

import numpy as np
import torch

from ..boxes import Detections, Truth, box_iou

IOU_THRESHOLD = 0.5  # VOC's overlap criterion


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007: mean of the best precision at recall >= 0, 0.1, ..., 1."""
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010 on: area under the precision envelope (precision made non-increasing)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def match_class(
    detections: list[Detections], truths: list[Truth], cls: int, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, is_true_positive) of every counted detection of class `cls`, best first,
    and the number of positives (non-difficult boxes)."""
    scores, image_of, boxes = [], [], []
    for i, d in enumerate(detections):
        keep = d.labels == cls
        scores.append(d.scores[keep].float())
        boxes.append(d.boxes[keep].float())
        image_of += [i] * int(keep.sum())
    if not image_of:
        positives = sum(int(((t.labels == cls) & ~t.difficult).sum()) for t in truths)
        return np.empty(0), np.empty(0, bool), positives
    scores, boxes = torch.cat(scores), torch.cat(boxes)
    order = torch.argsort(scores, descending=True, stable=True)
    gt = [(t.boxes[t.labels == cls].float(), t.difficult[t.labels == cls]) for t in truths]
    taken = [torch.zeros(len(b), dtype=torch.bool) for b, _ in gt]
    positives = sum(int((~hard).sum()) for _, hard in gt)
    kept_scores, tp = [], []
    for j in order.tolist():
        img = image_of[j]
        g, hard = gt[img]
        if len(g):
            overlap, best = box_iou(boxes[j : j + 1], g)[0].max(0)
            overlap, best = float(overlap), int(best)
        else:
            overlap, best = 0.0, -1
        if overlap >= iou_threshold and hard[best]:
            continue  # a difficult object: neither found nor missed
        hit = overlap >= iou_threshold and not taken[img][best]
        if hit:
            taken[img][best] = True
        kept_scores.append(float(scores[j]))
        tp.append(hit)
    return np.array(kept_scores), np.array(tp, bool), positives


def average_precision(
    detections: list[Detections], truths: list[Truth], classes: list[str], iou_threshold: float = IOU_THRESHOLD
) -> dict:
    """Per-class AP (both definitions) and their means over the classes with positives."""
    per_class = {}
    for c, name in enumerate(classes):
        _, tp, positives = match_class(detections, truths, c, iou_threshold)
        if positives == 0:
            continue  # VOC leaves a class without objects out of the mean
        hits = np.cumsum(tp)
        recall = hits / positives
        precision = hits / np.maximum(np.arange(1, len(tp) + 1), 1)
        per_class[name] = {
            "ap": area_ap(recall, precision),
            "ap_voc07": voc07_ap(recall, precision),
            "positives": positives,
            "detections": int(len(tp)),
            "max_recall": float(recall[-1]) if len(recall) else 0.0,
        }
    aps = [v["ap"] for v in per_class.values()]
    aps07 = [v["ap_voc07"] for v in per_class.values()]
    return {
        "map": float(np.mean(aps)) if aps else 0.0,
        "map_voc07": float(np.mean(aps07)) if aps07 else 0.0,
        "per_class": per_class,
    }


def proposal_recall(proposals: list[torch.Tensor], truths: list[Truth], iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Share of non-difficult objects that some proposal covers with IoU >= the threshold."""
    covered = total = boxes = 0
    for p, t in zip(proposals, truths):
        g = t.boxes[~t.difficult].float()
        boxes += len(p)
        total += len(g)
        if len(g) and len(p):
            covered += int((box_iou(g, torch.as_tensor(p).float()).max(1).values >= iou_threshold).sum())
    return {
        "recall": covered / total if total else 0.0,
        "objects": total,
        "boxes_per_image": boxes / max(len(proposals), 1),
    }
