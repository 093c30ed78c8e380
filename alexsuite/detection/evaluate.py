"""Scoring a detector on a labelled set: run it over every image, then the VOC metrics
(evaluation/detection.py) with and without box regression, proposal recall and seconds per image."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from ..boxes import Truth
from ..errors import DataError
from ..evaluation.detection import average_precision, proposal_recall
from ..settings import setting
from .inference import DetectSettings, run_detector


@dataclass(frozen=True)
class EvalDetectorSettings:
    split: str = setting("val", "Pascal VOC: the split to measure on.")


def evaluate_detector(
    det, data, opts: DetectSettings = DetectSettings(), cache_dir=None, settings=None, on_proposals=None, on_image=None
) -> dict:
    """Run `det` over a DetectionSet in `opts.mode` and score it: AP with and without box
    regression, proposal recall, and seconds per image (proposals, network, and the two
    together). Every box is scored, whatever `opts.threshold`, so the precision-recall curve
    runs to full recall, and both with and without box regression, whatever `opts.regress`."""
    start = time.perf_counter()
    marks = {}

    def proposals_done(n):
        marks["proposals"] = time.perf_counter()
        if on_proposals:
            on_proposals(n)

    everything = replace(opts, threshold=-float("inf"), regress=True)
    results = run_detector(
        det,
        [a.image for a in data.items],
        everything,
        settings=settings,
        cache_dir=cache_dir,
        on_proposals=proposals_done,
        unregressed=True,
    )
    run = _collect(det.classes, data.items, results, on_image)
    if data.items and not run["found"]:
        raise DataError(f"{data.source}: none of its {len(data.items)} images could be read, e.g. {run['failed'][0]}")
    n = max(len(run["found"]), 1)
    seconds = {
        "proposals": (marks.get("proposals", start) - start) / n,
        "network": run["network"] / n,
        "total": (time.perf_counter() - start) / n,
    }
    return {"mode": opts.mode, "mirror": opts.mirror, **_score(det.classes, run), "seconds_per_image": seconds}


def _collect(classes: list[str], items, results, on_image) -> dict:
    """Each readable image's ground truth (classes the detector knows), detections with and
    without box regression, and proposals; the failures; the network's seconds."""
    index = {c: i for i, c in enumerate(classes)}
    run = {"truths": [], "found": [], "plain": [], "proposals": [], "failed": [], "network": 0.0, "unknown": {}}
    for item, r in zip(items, results):
        if on_image:
            on_image(1)
        if r.error is not None:
            run["failed"].append(str(r.error))
            continue
        known = torch.tensor([lab in index for lab in item.labels], dtype=torch.bool)
        for lab in item.labels:
            if lab not in index:  # not scored: the detector cannot find what it was never taught
                run["unknown"][lab] = run["unknown"].get(lab, 0) + 1
        labels = torch.tensor([index.get(lab, -1) for lab in item.labels], dtype=torch.long)
        run["truths"].append(Truth(item.boxes[known], labels[known], item.difficult[known]))
        run["found"].append(r.detections)
        run["plain"].append(r.unregressed)
        run["proposals"].append(r.proposals)
        run["network"] += r.seconds
    return run


def _score(classes: list[str], run: dict) -> dict:
    with_reg = average_precision(run["found"], run["truths"], classes)
    without = average_precision(run["plain"], run["truths"], classes)
    return {
        "images": len(run["found"]),
        "failed": run["failed"],
        "unknown_classes": run["unknown"],
        "map": with_reg["map"],
        "map_voc07": with_reg["map_voc07"],
        "map_no_regression": without["map"],
        "map_voc07_no_regression": without["map_voc07"],
        "per_class": with_reg["per_class"],
        "per_class_no_regression": without["per_class"],
        "proposal_recall": proposal_recall(run["proposals"], run["truths"]),
    }
