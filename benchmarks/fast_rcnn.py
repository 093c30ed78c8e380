"""Fast R-CNN on scenes-dev (train on `train`, measure on `val`), against R-CNN on the same
backbone where its detector is given.

    python benchmarks/fast_rcnn.py --train --seed 0 --detector runs/bench/scenes-fast-rcnn \
        [--rcnn-detector runs/bench/scenes-det-leaveout] [--data ../shared/data/scenes-dev]

--train runs `train-detector --method fast-rcnn` with its defaults (the paper's schedule
scaled to the 400 training images) on --backbone, the copy-paste backbone pre-trained without
val's articles (train_fashion_mnist.py --paste-on ... --leave-out ...; docs/benchmarks.md).
Then val mAP@0.5 (area and VOC07 11-point, with and without box regression) and network seconds
per image, whole and with fc6/fc7 through truncated SVD at the paper's ranks scaled to the
net (`--svd auto`), and the R-CNN detector's rcnn-mode mAP in the same run when
--rcnn-detector is given. Results: benchmarks/results/RESULT.json.
"""

import argparse
import json
from pathlib import Path

from _common import detector_arguments, run_main, write_result

from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.config import DetectorConfig
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import evaluate_detector
from alexsuite.detection.fast_rcnn import FastRCNNSettings
from alexsuite.detection.inference import DetectSettings
from alexsuite.detection.training import train_detector

KEYS = ("map", "map_voc07", "map_no_regression", "map_voc07_no_regression")


def scored(det, val, cache, **settings) -> dict:
    r = evaluate_detector(det, val, DetectSettings(**settings), cache_dir=cache)
    row = {k: round(r[k], 4) for k in KEYS}
    row["network_seconds_per_image"] = round(r["seconds_per_image"]["network"], 4)
    row["per_class_ap"] = {c: round(v["ap"], 4) for c, v in r["per_class"].items()}
    print(
        f"{json.dumps(settings) if settings else 'plain':>22}: mAP {row['map']:.4f} (VOC07 {row['map_voc07']:.4f}), "
        f"without box regression {row['map_no_regression']:.4f}; network {row['network_seconds_per_image']:.3f} s/img",
        flush=True,
    )
    return row


def given(args) -> dict:
    """The Fast R-CNN settings given on the command line; the rest keep FastRCNNSettings' defaults."""
    out = {"lr": args.lr, "max_size": args.max_size}
    if args.scales:
        out["scales"] = tuple(int(v) for v in args.scales.split(","))
    return {k: v for k, v in out.items() if v is not None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    detector_arguments(ap, "runs/bench/scenes-fast-rcnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="train-detector --lr (default: the paper's 0.001)")
    ap.add_argument("--scales", default=None, help="train-detector --scales (default: the paper's 600)")
    ap.add_argument("--max-size", type=int, default=None, help="train-detector --max-size (default: the paper's 1000)")
    ap.add_argument("--recolour", action="store_true", help="train-detector --recolour")
    ap.add_argument("--rcnn-detector", default=None, help="an R-CNN detector on the same backbone, to compare")
    ap.add_argument("--result", default="fast_rcnn", help="writes benchmarks/results/RESULT.json")
    args = ap.parse_args()
    if args.train:
        cfg = DetectorConfig(
            data=args.data,
            backbone=args.backbone,
            method="fast-rcnn",
            proposal_cache=args.cache,
            fast_rcnn=FastRCNNSettings(seed=args.seed, recolour=args.recolour, **given(args)),
        )
        train_detector(cfg, Path(args.detector))
    val = read_voc(args.data, "val")
    det = load_detector(args.detector)
    rows = {"fast-rcnn": scored(det, val, args.cache), "fast-rcnn+svd": scored(det, val, args.cache, svd="auto")}
    if args.rcnn_detector:
        rows["rcnn"] = scored(load_detector(args.rcnn_detector), val, args.cache, mode="rcnn")
    fast, small = rows["fast-rcnn"], rows["fast-rcnn+svd"]
    info = json.loads((Path(args.detector) / "detector.json").read_text())
    result = {
        "data": args.data,
        "detector": args.detector,
        "backbone": args.backbone,
        "rcnn_detector": args.rcnn_detector,
        "config": info.get("config", {}),
        "training": info.get("metrics", {}),
        "methods": rows,
        "svd_map_cost": round(fast["map"] - small["map"], 4),
        "svd_network_ratio": round(small["network_seconds_per_image"] / fast["network_seconds_per_image"], 3),
    }
    if "rcnn" in rows:
        result["fast_rcnn_minus_rcnn_map"] = round(fast["map"] - rows["rcnn"]["map"], 4)
    print(f"SVD: mAP {-result['svd_map_cost']:+.4f}, network time x{result['svd_network_ratio']}")
    print(f"wrote {write_result(args.result, result)}")


if __name__ == "__main__":
    run_main(main)
