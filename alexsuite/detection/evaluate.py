"""Scoring a detector on a labelled set: run it over every image, then the VOC metrics
(evaluation/detection.py) with and without box regression, proposal recall and seconds per image;
on a COCO set also COCO's AP@[.50:.95] by pycocotools (evaluation/coco.py), when installed."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from ..boxes import Detections, Truth
from ..errors import DataError, MissingExtra
from ..evaluation.coco import coco_ap, coco_mapping, coco_results, image_id, load_coco
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
    runs to full recall, and both with and without box regression, whatever `opts.regress`.
    On a COCO set, "coco" holds COCO's numbers (evaluation/coco.py) for the boxes with
    regression, or is None with the reason in "warnings" when pycocotools is missing."""
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
    mode = getattr(det, "method", opts.mode)  # a fast-rcnn detector has one mode, its own
    out = {
        "mode": mode,
        "mirror": opts.mirror,
        "svd": opts.svd or None,
        **_score(det.classes, run),
        "seconds_per_image": seconds,
    }
    if data.coco_file is not None:
        out["coco"], out["warnings"] = _coco_score(det.classes, data, run)
    return out


def _coco_score(classes: list[str], data, run: dict) -> tuple[dict | None, list[str]]:
    """pycocotools' numbers on the images scored above, over the categories the detector knows
    (as the VOC AP leaves out classes it was never taught), and any warning."""
    truth = load_coco(data.coco_file)
    image_ids, category_ids = coco_mapping(truth, data.image_root)
    known = {c: category_ids[c] for c in classes if c in category_ids}
    records = [_record(path, d, classes, known) for path, d in zip(run["images"], run["found"])]
    evaluated = [image_id(path, image_ids) for path in run["images"]]
    try:
        return coco_ap(truth, coco_results(records, image_ids, known), evaluated, list(known.values())), []
    except MissingExtra as e:
        return None, [f"{e}; the VOC AP is reported without it"]


def _record(path, d, classes: list[str], known: dict) -> dict:
    """One image's detections as detect prints them, unrounded, of the classes the file has."""
    found = [
        {"label": classes[int(c)], "score": float(s), "box": b.tolist()}
        for b, s, c in zip(d.boxes, d.scores, d.labels)
        if classes[int(c)] in known
    ]
    return {"image": str(path), "detections": found}


def _collect(classes: list[str], items, results, on_image) -> dict:
    """Each readable image's ground truth (classes the detector knows), detections with and
    without box regression, and proposals; the failures; the network's seconds."""
    index = {c: i for i, c in enumerate(classes)}
    run = {"truths": [], "found": [], "plain": [], "proposals": [], "failed": [], "network": 0.0, "unknown": {}}
    run["images"] = []  # the path of each readable image, in step with "found"
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
        run["images"].append(item.image)
        run["found"].append(_ranked(r.detections))
        run["plain"].append(_ranked(r.unregressed))
        run["proposals"].append(r.proposals)
        run["network"] += r.seconds
    return run


def _ranked(d: Detections) -> Detections:
    """Boxes scored by their raw SVM scores where they have them: calibration keeps their order,
    but float32 probabilities tie where the sigmoid saturates, and ties would reorder AP's list."""
    return d if d.svm_scores is None else replace(d, scores=d.svm_scores)


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
