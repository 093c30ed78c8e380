"""Detection speed on the CPU: R-CNN mode, SPPnet's fast mode and Fast R-CNN, each with and
without truncated SVD of fc6/fc7, for the paper's 227 px AlexNet and alexnet-small (28 px), on
the same images and proposals, in one run.

    python benchmarks/detection_speed.py [--data ../shared/data/scenes-dev] [--images 3]

Random weights: the network's cost does not depend on them, so this times the 227 px net
without ImageNet weights. Per net and method, per image: network seconds (scoring and box
selection: detect's network stage), end to end (decode, proposals read from their cache,
network; plus selective search's seconds, measured once and the same for every method),
fc6 + fc7 seconds on the image's RoIs, and the pixels the conv body reads, against rcnn mode
without SVD measured in the same run. Results: benchmarks/results/detection_speed.json.
"""

import argparse
import tempfile
import time

import torch
from _common import SCENES_DEV, fc_seconds, write_result

from alexsuite.data.decode import decode_image
from alexsuite.data.detection_sets import read_voc
from alexsuite.data.transforms import Preprocess
from alexsuite.detection import fast_rcnn, regions, svd
from alexsuite.detection.detector import Detector
from alexsuite.detection.fast_rcnn_detector import FastRCNNDetector
from alexsuite.detection.inference import DetectSettings, run_detector
from alexsuite.models.alexnet import build_paper, build_small
from alexsuite.proposals import ProposalSettings, propose

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NETS = {  # name -> (builder, preprocess)
    "alexnet": (build_paper, Preprocess(256, 227, MEAN, STD)),
    "alexnet-small": (build_small, Preprocess(32, 28, MEAN, STD)),
}
# name -> (detector method, test mode)
METHODS = {"rcnn": ("rcnn", "rcnn"), "fast": ("rcnn", "fast"), "fast-rcnn": ("fast-rcnn", "rcnn")}


def detectors(build, pre, classes):
    """R-CNN's detector (SVMs and regressors on random weights) and Fast R-CNN's on one net."""
    torch.manual_seed(0)
    k = len(classes)
    model = build(num_classes=k + 1).eval()
    fc, d5 = svd.fc_width(model), model.pool5_dim
    svm, regressors = (torch.randn(k, fc) * 0.01, torch.zeros(k)), (torch.randn(k, d5, 4) * 1e-3, torch.zeros(k, 4))
    rcnn = Detector(model, pre, classes, "fc7", 1.0, 1.0, *svm, *regressors)
    fast = FastRCNNDetector(model, pre, classes, torch.randn(4 * (k + 1), fc) * 1e-3, torch.zeros(4 * (k + 1)))
    return {"rcnn": rcnn, "fast-rcnn": fast}


def factoring_seconds(model) -> float:
    """What factoring fc6/fc7 at the paper's ranks costs once (detect pays it per process)."""
    start = time.perf_counter()
    svd.compressed(model, svd.default_ranks(svd.fc_width(model)))
    return time.perf_counter() - start


def timed_run(det, mode, paths, cache, boxes):
    """(network s/img, loop s/img) of run_detector over `paths`, proposals from `cache`;
    first a warm-up on a few of the first image's boxes."""
    load = image_loader_for(paths)
    det.score(load(0), torch.from_numpy(boxes[0][:16]).float(), mode)
    opts = DetectSettings(mode=mode, workers=0)
    start = time.perf_counter()
    found = list(run_detector(det, paths, opts, settings=ProposalSettings(), cache_dir=cache))
    loop = time.perf_counter() - start
    assert not [r.error for r in found if r.error], "an image failed"
    return sum(r.seconds for r in found) / len(found), loop / len(found)


def image_loader_for(paths):
    return lambda i: regions.image_tensor(decode_image(paths[i]))


def conv_pixels(det, mode, method, image, boxes) -> float:
    """Input pixels the conv body reads for one image: rcnn mode one crop per box; fast mode
    the image at each pyramid level its boxes use; Fast R-CNN the image at its one scale."""
    pre, (h, w) = det.preprocess, image.shape[-2:]
    if method == "fast-rcnn":
        f = fast_rcnn.image_scale(h, w, det.settings.scales[0], det.settings.max_size, pre.crop_size)
        return h * w * f * f
    if mode == "rcnn":
        return len(boxes) * pre.crop_size**2
    levels = torch.unique(regions.pyramid_levels(boxes, pre), dim=0).tolist()
    return sum(h * w * regions.FAST_SCALE_STEP ** -(kx + ky) for kx, ky in levels)


def pyramid_levels(det, boxes) -> int:
    return len(torch.unique(regions.pyramid_levels(boxes, det.preprocess), dim=0))


def measure(det, method, mode, paths, cache, boxes, proposals_s) -> dict:
    """One row: network, end-to-end and fc seconds per image, and conv input megapixels."""
    network, loop = timed_run(det, mode, paths, cache, boxes)
    load = image_loader_for(paths)
    pixels = [conv_pixels(det, mode, method, load(i), torch.from_numpy(b).float()) for i, b in enumerate(boxes)]
    return {
        "network_seconds_per_image": round(network, 4),
        "end_to_end_seconds_per_image": round(loop + proposals_s, 4),
        "fc_seconds_per_image": round(fc_seconds(det.model, round(sum(map(len, boxes)) / len(boxes))), 4),
        "conv_megapixels_per_image": round(sum(pixels) / len(pixels) / 1e6, 3),
    }


def measure_net(name, classes, paths, cache, boxes, proposals_s) -> dict:
    build, pre = NETS[name]
    dets = detectors(build, pre, classes)
    rows = {}
    svd_seconds = factoring_seconds(dets["rcnn"].model)
    for label, (method, mode) in METHODS.items():
        for key, det in ((label, dets[method]), (f"{label}+svd", svd.with_svd(dets[method], "auto"))):
            rows[key] = measure(det, method, mode, paths, cache, boxes, proposals_s)
            print(f"  {name} {key:14} network {rows[key]['network_seconds_per_image']:7.3f} s/img", flush=True)
    base = rows["rcnn"]["network_seconds_per_image"]
    for row in rows.values():
        row["network_ratio_vs_rcnn"] = round(row["network_seconds_per_image"] / base, 4)
    for key in METHODS:
        cut = 1 - rows[f"{key}+svd"]["fc_seconds_per_image"] / rows[key]["fc_seconds_per_image"]
        rows[f"{key}+svd"]["fc_time_cut_by_svd"] = round(cut, 3)
    levels = [pyramid_levels(dets["rcnn"], torch.from_numpy(b).float()) for b in boxes]
    width = svd.fc_width(dets["rcnn"].model)
    return {
        "crop": pre.crop_size,
        "fc_width": width,
        "svd_ranks": list(svd.default_ranks(width)),
        "svd_factoring_seconds": round(svd_seconds, 3),
        "fast_mode_pyramid_levels_per_image": sum(levels) / len(levels),
        "methods": rows,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--nets", default="alexnet-small,alexnet")
    args = ap.parse_args()
    data = read_voc(args.data, args.split)
    paths = [a.image for a in data.items[: args.images]]
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        boxes = propose(paths, ProposalSettings(), cache_dir=cache, workers=0)
        proposals_s = (time.perf_counter() - start) / len(paths)
        print(
            f"{len(paths)} images, {sum(len(b) for b in boxes) / len(boxes):.0f} proposals each, "
            f"selective search {proposals_s:.2f} s/img",
            flush=True,
        )
        nets = {
            name: measure_net(name, data.classes, paths, cache, boxes, proposals_s) for name in args.nets.split(",")
        }
    result = {
        "data": args.data,
        "split": args.split,
        "images": len(paths),
        "proposals_per_image": sum(len(b) for b in boxes) / len(boxes),
        "selective_search_seconds_per_image": round(proposals_s, 4),
        "nets": nets,
    }
    for name, r in nets.items():
        m = {k: row["network_seconds_per_image"] for k, row in r["methods"].items()}
        print(
            f"{name}: network s/img rcnn {m['rcnn']:.3f}, fast {m['fast']:.3f}, fast-rcnn {m['fast-rcnn']:.3f} "
            f"({m['fast-rcnn'] / m['rcnn']:.3f} of rcnn); SVD cuts fast-rcnn's fc time by "
            f"{r['methods']['fast-rcnn+svd']['fc_time_cut_by_svd']:.0%}"
        )
    print(f"wrote {write_result('detection_speed', result)}")


if __name__ == "__main__":
    main()
