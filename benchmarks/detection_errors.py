"""What a detector's val mistakes are: per class, its top N detections (N = the class's object
count, where AP is mostly decided) sorted into right, class confusion (IoU >= 0.5 with an object
of another class), localisation (0.1 <= IoU < 0.5 with an object of its class), duplicate,
near another object (0.1 <= IoU < 0.5 with one of another class) and background (Hoiem et
al.'s diagnosis, simplified).

    python benchmarks/detection_errors.py [--detector runs/bench/scenes-det-leaveout] [--mode rcnn]
"""

import argparse
from collections import Counter

import torch
from _common import SCENES_DEV, write_result

from alexsuite.boxes import box_iou
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.detector import load_detector
from alexsuite.detection.inference import DetectSettings, run_detector


def kind(box, cls, item, index, matched, k) -> str:
    labels = torch.tensor([index[lab] for lab in item.labels])
    iou = box_iou(box[None].float(), item.boxes.float())[0] if len(item.boxes) else torch.zeros(0)
    same = labels == cls
    if same.any() and iou[same].max() >= 0.5:
        j = int(torch.nonzero(same)[int(iou[same].argmax())])
        if (k, j) in matched:
            return "duplicate"
        matched.add((k, j))
        return "right"
    if (~same).any() and iou[~same].max() >= 0.5:
        return "as " + item.labels[int(torch.nonzero(~same)[int(iou[~same].argmax())])]
    if same.any() and iou[same].max() >= 0.1:
        return "localisation"
    if len(iou) and iou.max() >= 0.1:
        return "near another object"
    return "background"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--detector", default="runs/bench/scenes-det-leaveout")
    ap.add_argument("--mode", default="rcnn", choices=("rcnn", "fast"))
    ap.add_argument("--cache", default="runs/bench/proposals-cache")
    args = ap.parse_args()
    det = load_detector(args.detector)
    val = read_voc(args.data, "val")
    opts = DetectSettings(mode=args.mode, threshold=-float("inf"))
    results = list(run_detector(det, [a.image for a in val.items], opts, cache_dir=args.cache))
    index = {c: i for i, c in enumerate(det.classes)}
    table = {}
    for c, name in enumerate(det.classes):
        found = sorted(
            (
                (float(s), k, b)
                for k, r in enumerate(results)
                for b, s in zip(
                    r.detections.boxes[r.detections.labels == c], r.detections.scores[r.detections.labels == c]
                )
            ),
            key=lambda t: -t[0],
        )
        objects = sum(lab == name for a in val.items for lab in a.labels)
        matched = set()
        counts = Counter(kind(b, c, val.items[k], index, matched, k) for _, k, b in found[:objects])
        table[name] = {"objects": objects, **dict(counts.most_common())}
        confused = sum(v for key, v in counts.items() if key.startswith("as "))
        print(
            f"{name:>9}: {counts['right']:3d} right of {objects:3d}; {confused:3d} confused "
            f"({', '.join(f'{k} {v}' for k, v in counts.most_common() if k.startswith('as '))}); "
            f"{counts['localisation']} localisation, {counts['duplicate']} duplicate, "
            f"{counts['near another object']} near another object, {counts['background']} background"
        )
    path = write_result(
        f"detection_errors_{args.mode}", {"detector": args.detector, "mode": args.mode, "classes": table}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
