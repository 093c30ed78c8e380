"""Selective-search recall at IoU 0.5 on scenes-dev val, and seconds per
image, fast and quality modes measured in the same run.

    python benchmarks/proposals_recall.py [--data ../shared/data/scenes-dev] [--split val]

Goal: recall >= 0.95 (selective search reports ~98% on VOC 2007). No cache: every image is
segmented. Seconds per image are wall time over the split with 2 worker processes and per
image of CPU in one process (the first 20 images).
"""

import argparse
import time

import numpy as np
import torch
from _common import SCENES_DEV, write_result

from alexsuite.boxes import box_iou
from alexsuite.data.detection_sets import read_voc
from alexsuite.proposals import ProposalSettings, propose


def measure(items, mode):
    settings = ProposalSettings(mode=mode)
    t0 = time.perf_counter()
    props = propose([a.image for a in items], settings, workers=2)
    wall = (time.perf_counter() - t0) / len(items)
    t0 = time.perf_counter()
    propose([a.image for a in items[:20]], settings, workers=0)
    single = (time.perf_counter() - t0) / 20
    hits = total = 0
    for a, p in zip(items, props):
        if len(a.boxes):
            best = box_iou(a.boxes, torch.from_numpy(p)).max(1).values if len(p) else torch.zeros(len(a.boxes))
            hits += int((best >= 0.5).sum())
            total += len(a.boxes)
    return {
        "mode": mode,
        "recall@0.5": round(hits / total, 4),
        "objects": total,
        "boxes_per_image": round(float(np.mean([len(p) for p in props])), 1),
        "seconds_per_image_2_workers": round(wall, 3),
        "seconds_per_image_1_process": round(single, 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    items = read_voc(args.data, args.split).items
    rows = []
    for mode in ("fast", "quality"):
        r = measure(items, mode)
        rows.append(r)
        print(
            f"{mode:8s} recall@0.5 {r['recall@0.5']:.4f} ({r['objects']} objects)  "
            f"{r['boxes_per_image']:.0f} boxes/img  {r['seconds_per_image_2_workers']:.2f} s/img (2 workers), "
            f"{r['seconds_per_image_1_process']:.2f} s/img (1 process)",
            flush=True,
        )
    path = write_result(
        "proposals_recall",
        {
            "data": f"{args.data}:{args.split}",
            "rows": rows,
            "goal_recall": 0.95,
            "reference": "selective search fast mode: ~2 s/img on a CPU, ~98% recall on VOC07",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
