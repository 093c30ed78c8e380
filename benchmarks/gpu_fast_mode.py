"""Fast mode's conv passes on a GPU: PyTorch's own CUDA convolutions (what regions.fast_pool5
uses on CUDA) against cuDNN (the plain reference), on images the process has not seen before.

    python benchmarks/gpu_fast_mode.py [--detector runs/bench/scenes-det] [--data ../shared/data/scenes-dev]

Every image brings its own pyramid-level shapes, and cuDNN builds an execution plan for each
new shape. Per backbone (the recorded detector's fine-tuned alexnet-small, and the paper's
227 px AlexNet with random weights, which only times), on --images val images:
fast_pool5 seconds per image with PyTorch's convolutions, then with cuDNN on the same images
(new shapes to it), then with cuDNN again (its plans built: a stream of same-sized images),
the largest feature difference, and rcnn_pool5 for scale. Then the recorded detector's
val mAP and network seconds per image in both modes on this GPU, against the 2-core CPU's
recorded in results/detection.json. Needs a CUDA GPU.
"""

import argparse
import sys
import time
from contextlib import nullcontext

import torch
from _common import SCENES_DEV, write_result

from alexsuite.data.detection_sets import DetectionSet, read_voc
from alexsuite.data.transforms import Preprocess
from alexsuite.detection import regions
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import evaluate_detector
from alexsuite.detection.features import image_loader
from alexsuite.detection.inference import DetectSettings
from alexsuite.models.alexnet import build_paper
from alexsuite.proposals import ProposalSettings, propose


def timed(fn, model, pre, load, boxes, images):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = [fn(model, load(i), boxes[i], pre) for i in images]
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(images), out


def compare(name, model, pre, load, boxes, images):
    ours_fn = regions.without_cudnn
    ours, a = timed(regions.fast_pool5, model, pre, load, boxes, images)
    regions.without_cudnn = lambda device: nullcontext()  # the reference: cuDNN as PyTorch sets it
    try:
        cold, b = timed(regions.fast_pool5, model, pre, load, boxes, images)
        warm, _ = timed(regions.fast_pool5, model, pre, load, boxes, images)
    finally:
        regions.without_cudnn = ours_fn
    rcnn, _ = timed(regions.rcnn_pool5, model, pre, load, boxes, images)
    diff = max(float((x - y).abs().max()) / max(float(y.abs().max()), 1e-6) for x, y in zip(a, b) if len(x))
    row = {
        "fast_seconds_per_image": round(ours, 4),
        "fast_cudnn_new_shapes": round(cold, 4),
        "fast_cudnn_plans_built": round(warm, 4),
        "speedup_vs_cudnn_new_shapes": round(cold / ours, 2),
        "max_relative_feature_difference": diff,
        "rcnn_seconds_per_image": round(rcnn, 4),
    }
    print(
        f"{name}: fast {ours:.3f} s/img against cuDNN {cold:.3f} on new shapes ({cold / ours:.1f}x), "
        f"{warm:.3f} with its plans built; rcnn {rcnn:.3f}; features differ by {diff:.1e} (relative)"
    )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--detector", default="runs/bench/scenes-det")
    ap.add_argument("--cache", default="runs/bench/proposals-cache")
    ap.add_argument("--images", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_fast_mode.py measures CUDA paths: run it on a machine with a CUDA GPU")
    val = read_voc(args.data, "val")
    n = min(args.images, len(val) // 2)
    boxes = [
        torch.from_numpy(b) for b in propose([a.image for a in val.items[: 2 * n]], ProposalSettings(), args.cache)
    ]
    load = image_loader(val.items[: 2 * n])
    det = load_detector(args.detector, device="cuda")
    small = compare("alexnet-small (recorded detector)", det.model, det.preprocess, load, boxes, range(n))
    paper_pre = Preprocess(256, 227, det.preprocess.mean, det.preprocess.std)
    paper = compare(
        "alexnet (227 px, random weights)", build_paper().cuda().eval(), paper_pre, load, boxes, range(n, 2 * n)
    )
    rows = {}
    for mode in ("rcnn", "fast"):
        r = evaluate_detector(
            det, DetectionSet(val.items, val.classes, val.source), DetectSettings(mode=mode), cache_dir=args.cache
        )
        rows[mode] = {
            "map": round(r["map"], 4),
            "map_no_regression": round(r["map_no_regression"], 4),
            "network_seconds_per_image": round(r["seconds_per_image"]["network"], 4),
        }
        print(
            f"{mode} on the GPU: mAP {r['map']:.4f} ({r['map_no_regression']:.4f} without regression), "
            f"network {r['seconds_per_image']['network']:.3f} s/img"
        )
    path = write_result(
        "gpu_fast_mode",
        {
            "gpu": torch.cuda.get_device_name(),
            "images": n,
            "alexnet_small": small,
            "alexnet_227": paper,
            "detector_on_gpu": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
