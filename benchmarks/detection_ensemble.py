"""Diagnostic, not R-CNN's recipe: how far two framings are from each other's errors. Scores
every scenes-dev val proposal with two detectors (by default the warp one and the square one,
each with its own fine-tuned network) and ranks by the mean of their SVM scores, in rcnn mode;
boxes are regressed by the first. Each detector alone is measured in the same run.

    python benchmarks/detection_ensemble.py [--a runs/bench/scenes-det-leaveout] [--b runs/bench/scenes-det-square]
"""

import argparse

import torch
from _common import SCENES_DEV, write_result

from alexsuite.boxes import Truth
from alexsuite.data.decode import decode_image
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.detector import load_detector
from alexsuite.detection.inference import proposal_settings
from alexsuite.detection.regions import image_tensor
from alexsuite.evaluation.detection import average_precision
from alexsuite.proposals import propose


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--a", default="runs/bench/scenes-det-leaveout")
    ap.add_argument("--b", default="runs/bench/scenes-det-square")
    ap.add_argument("--cache", default="runs/bench/proposals-cache")
    ap.add_argument("--result", default="detection_ensemble")
    args = ap.parse_args()
    a, b = load_detector(args.a), load_detector(args.b)
    assert a.classes == b.classes, "the two detectors must share their classes"
    val = read_voc(args.data, "val")
    index = {c: i for i, c in enumerate(a.classes)}
    truths = [Truth(t.boxes, torch.tensor([index[lab] for lab in t.labels]), t.difficult) for t in val.items]
    found = {"a": [], "b": [], "mean": []}
    props = propose([t.image for t in val.items], proposal_settings(a), cache_dir=args.cache, workers=2)
    for item, p in zip(val.items, props):
        image = image_tensor(decode_image(item.image))
        boxes, sa, pa = a.score(image, torch.from_numpy(p))
        boxes_b, sb, pb = b.score(image, torch.from_numpy(p))
        assert torch.equal(boxes, boxes_b)
        w, h = image.shape[-1], image.shape[-2]
        found["a"].append(a.select(boxes, sa, pa, w, h, -float("inf")))
        found["b"].append(b.select(boxes, sb, pb, w, h, -float("inf")))
        found["mean"].append(a.select(boxes, (sa + sb) / 2, pa, w, h, -float("inf")))
    rows = {}
    for name, dets in found.items():
        r = average_precision(dets, truths, a.classes)
        rows[name] = {
            "map": r["map"],
            "map_voc07": r["map_voc07"],
            "per_class_ap": {c: round(v["ap"], 4) for c, v in r["per_class"].items()},
        }
        print(f"{name:>5}: rcnn mAP {r['map']:.4f} (VOC07 {r['map_voc07']:.4f})")
    print(f"mean of the two vs the better alone: {rows['mean']['map'] / max(rows['a']['map'], rows['b']['map']):.3f}x")
    print(f"wrote {write_result(args.result, {'data': args.data, 'a': args.a, 'b': args.b, 'modes': rows})}")


if __name__ == "__main__":
    main()
