"""Which truncated-SVD ranks of fc6/fc7 a trained detector can afford: val mAP@0.5 and the
fc6 + fc7 time on the same RoIs, for each rank pair, against the whole layers in the same run.

    python benchmarks/svd_ranks.py --detector runs/bench/scenes-fast-rcnn-lr01-s1800-m3000 \
        [--ranks auto 384,256 512,256] [--data ../shared/data/scenes-dev]

The paper keeps 1024 of fc6's and 256 of fc7's 4096 singular values (Fast R-CNN §3.1);
`auto` is that scaled to the net's width (alexnet-small: 256,64); a rank that would not
save work keeps its layer whole (alexnet-small's fc6, 576 -> 1024, above 368). fc time is measured on as
many pool5 rows as val has proposals per image (the best of 30 runs), beside the multiply-adds, so it is the time the
SVD can save; the rest of the network (the conv body, RoI pooling) does not change with it.
Results: benchmarks/results/RESULT.json.
"""

import argparse
import json
from pathlib import Path

from _common import SCENES_DEV, fc_seconds, run_main, write_result
from torch import nn

from alexsuite.data.detection_sets import read_voc
from alexsuite.detection import svd
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import evaluate_detector
from alexsuite.detection.inference import DetectSettings

DEFAULT_RANKS = ("auto", "256,128", "320,128", "320,256", "1024,128", "1024,256")


def row(det, val, cache, spec: str) -> dict:
    """mAP with `spec`'s ranks ('' keeps the layers whole) and the fc time they take on as many
    RoIs as val has proposals per image."""
    r = evaluate_detector(det, val, DetectSettings(svd=spec), cache_dir=cache)
    rois = round(r["proposal_recall"]["boxes_per_image"])
    model = svd.compressed(det.model, svd.parse_ranks(spec, svd.fc_width(det.model))) if spec else det.model
    out = {"map": round(r["map"], 4), "map_voc07": round(r["map_voc07"], 4)}
    out["fc_seconds_per_image"] = round(fc_seconds(model, rois, repeat=30), 5)
    out["fc_multiply_adds_per_roi"] = multiply_adds(model)
    out["network_seconds_per_image"] = round(r["seconds_per_image"]["network"], 4)
    out["rois_per_image"] = rois
    return out


def multiply_adds(model) -> int:
    """fc6's and fc7's multiply-adds for one RoI, as factored (or not)."""
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][:-1]  # not the head
    return sum(m.in_features * m.out_features for m in linears)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="runs/bench/scenes-fast-rcnn-lr01-s1800-m3000")
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set with a val split")
    ap.add_argument("--ranks", nargs="+", default=list(DEFAULT_RANKS), help="'auto' or R6,R7 pairs")
    ap.add_argument("--cache", default="runs/bench/proposals-cache", help="proposal cache")
    ap.add_argument("--result", default="svd_ranks", help="writes benchmarks/results/RESULT.json")
    args = ap.parse_args()
    det, val = load_detector(args.detector), read_voc(args.data, "val")
    whole = row(det, val, args.cache, "")
    rows = {"whole": whole}
    width = svd.fc_width(det.model)
    print(f"{'whole':>10}: mAP {whole['map']:.4f}, fc {whole['fc_seconds_per_image'] * 1000:.1f} ms/img", flush=True)
    for spec in args.ranks:
        r = row(det, val, args.cache, spec)
        r["ranks"] = list(svd.parse_ranks(spec, width))
        r["map_cost"] = round(whole["map"] - r["map"], 4)
        r["fc_time_cut"] = round(1 - r["fc_seconds_per_image"] / whole["fc_seconds_per_image"], 3)
        r["fc_multiply_adds_cut"] = round(1 - r["fc_multiply_adds_per_roi"] / whole["fc_multiply_adds_per_roi"], 3)
        rows[spec] = r
        cost, cut = r["map_cost"], r["fc_time_cut"]
        adds = r["fc_multiply_adds_cut"]
        print(
            f"{spec:>10}: mAP {r['map']:.4f} (cost {cost:+.4f}), fc time cut {cut:.0%} ({adds:.0%} of the work)",
            flush=True,
        )
    info = json.loads((Path(args.detector) / "detector.json").read_text())
    result = {"data": args.data, "detector": args.detector, "method": info.get("method", "rcnn"), "fc_width": width}
    result["rows"] = rows
    print(f"wrote {write_result(args.result, result)}")


if __name__ == "__main__":
    run_main(main)
