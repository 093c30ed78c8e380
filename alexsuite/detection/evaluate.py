"""Scoring a detector on a labelled set: run it over every image, then the VOC metrics
(evaluation/detection.py) with and without box regression, proposal recall and seconds per image."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from ..boxes import Truth
from ..evaluation.detection import average_precision, proposal_recall
from ..settings import setting
from .inference import DetectSettings, run_detector


@dataclass(frozen=True)
class EvalDetectorSettings:
    split: str = setting("val", "Pascal VOC: the split to measure on.")


def evaluate_detector(det, data, opts: DetectSettings = DetectSettings(), cache_dir=None, settings=None,
                      on_proposals=None, on_image=None) -> dict:
    """Run `det` over a DetectionSet in `opts.mode` and score it: AP with and without box
    regression, proposal recall, and seconds per image (proposals, network, and the two
    together). Every box is scored, whatever `opts.threshold`, so the precision-recall curve
    runs to full recall."""
    index = {c: i for i, c in enumerate(det.classes)}
    truths, found, plain, proposals, failed = [], [], [], [], []
    network = 0.0
    start = time.perf_counter()
    marks = {}

    def proposals_done(n):
        marks["proposals"] = time.perf_counter()
        if on_proposals:
            on_proposals(n)
    results = run_detector(det, [a.image for a in data.items], replace(opts, threshold=-float("inf"), regress=True),
                           settings=settings, cache_dir=cache_dir, on_proposals=proposals_done, unregressed=True)
    for item, r in zip(data.items, results):
        if on_image:
            on_image(1)
        if r.error is not None:
            failed.append(str(r.error))
            continue
        known = torch.tensor([lab in index for lab in item.labels], dtype=torch.bool)
        labels = torch.tensor([index.get(lab, -1) for lab in item.labels], dtype=torch.long)
        truths.append(Truth(item.boxes[known], labels[known], item.difficult[known]))
        found.append(r.detections)
        plain.append(r.unregressed)
        proposals.append(r.proposals)
        network += r.seconds
    total = time.perf_counter() - start
    n = max(len(found), 1)
    with_reg = average_precision(found, truths, det.classes)
    without = average_precision(plain, truths, det.classes)
    proposal_seconds = marks.get("proposals", start) - start
    return {"mode": opts.mode, "mirror": opts.mirror, "images": len(found), "failed": failed,
            "map": with_reg["map"], "map_voc07": with_reg["map_voc07"],
            "map_no_regression": without["map"], "map_voc07_no_regression": without["map_voc07"],
            "per_class": with_reg["per_class"], "per_class_no_regression": without["per_class"],
            "proposal_recall": proposal_recall(proposals, truths),
            "seconds_per_image": {"proposals": proposal_seconds / n, "network": network / n, "total": total / n}}
