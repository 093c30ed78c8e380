"""Which Fashion-MNIST training articles a scenes-dev split shows, found by their pixels.

    python benchmarks/scenes_articles.py [--data ../shared/data/scenes-dev] [--split val] [--top 3]

../shared/tools/make_scenes.py draws scenes-dev's articles, train and val alike, from
Fashion-MNIST's *training* split, the split the detection backbone is pre-trained on: without
this list the backbone has seen every val article, labelled, before the detector is measured.
Writes results/scenes_dev_<split>_articles.json with, per annotated object, the `--top`
best-matching training articles of its class, and their union as `indices`, the list that
`train_fashion_mnist.py --leave-out` (alexsuite train --leave-out) keeps out of pre-training.

Matching replays the script's rendering: each article is enlarged with cubic interpolation,
cut to its > 12 mask, and compared at 32 x 32 with the object's box, after fitting the
per-channel tint by least squares on the article's bright pixels. A self-check renders
--check articles of known index the same way (tint, paste on a photo, JPEG quality 92) and
reports how often the right one comes first.
"""

import argparse
import json
import random
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from _common import SCENES_DEV, write_result

from alexsuite.data import fashion_mnist
from alexsuite.data.decode import decode_image
from alexsuite.data.detection_sets import read_voc

SIDE = 32  # comparison grid
CANONICAL = 112  # the articles are enlarged to this before cutting to their mask (scenes: 56-160 px)
MASK = 12  # make_scenes.py: an article pixel is > 12
BRIGHT = 60  # tint is fitted and residuals read on these pixels: clear of the mask's edge


def article_grids(images: np.ndarray) -> torch.Tensor:
    """(N, SIDE*SIDE): each article enlarged, cut to its mask's box, resampled to the grid."""
    out = []
    for im in images:
        big = cv2.resize(im, (CANONICAL, CANONICAL), interpolation=cv2.INTER_CUBIC)
        ys, xs = np.nonzero(big > MASK)
        cut = big[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(xs) else big
        out.append(grid(torch.from_numpy(cut.astype(np.float32))[None])[0])
    return torch.stack(out)


def grid(crop: torch.Tensor) -> torch.Tensor:
    """(C, h, w) float -> (C, SIDE*SIDE)."""
    return F.interpolate(crop[None], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[0].flatten(1)


def rank(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Relative residual of `query` (3, D) against each candidate (n, D) under its best tint."""
    bright = (candidates > BRIGHT).float()
    weighted = candidates * bright
    tint = (query[None] * weighted[:, None]).sum(2) / (weighted * candidates).sum(1, keepdim=True).clamp_min(1)
    err = ((query[None] - tint[:, :, None] * candidates[:, None]) ** 2 * bright[:, None]).sum((1, 2))
    return err / ((query[None] ** 2) * bright[:, None]).sum((1, 2)).clamp_min(1)


def self_check(images, labels, grids, n: int, photo: Path) -> float:
    rng = random.Random(0)
    ground = cv2.resize(cv2.imread(str(photo)), (200, 200))
    right = 0
    for _ in range(n):
        j = rng.randrange(len(images))
        size = rng.randint(56, 160)
        obj = cv2.resize(images[j], (size, size), interpolation=cv2.INTER_CUBIC)
        mask = (obj > MASK).astype(np.float32)[..., None]
        tint = np.array([rng.uniform(0.3, 1.0) for _ in range(3)], np.float32)
        scene = (mask * obj[..., None] * tint + (1 - mask) * ground[:size, :size]).clip(0, 255).astype(np.uint8)
        scene = cv2.imdecode(cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 92])[1], cv2.IMREAD_COLOR)
        ys, xs = np.nonzero(mask[..., 0])
        crop = torch.from_numpy(scene[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)).permute(
            2, 0, 1
        )
        pool = np.flatnonzero(labels == labels[j])
        right += int(pool[int(rank(grid(crop), grids[pool]).argmin())]) == j
    return right / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--top", type=int, default=3, help="articles left out per object (the best matches)")
    ap.add_argument("--check", type=int, default=200)
    args = ap.parse_args()
    images, labels = fashion_mnist.load_split("train")
    grids = article_grids(images)
    data = read_voc(args.data, args.split)
    objects, indices = [], set()
    for a in data.items:
        rgb = torch.from_numpy(decode_image(a.image).astype(np.float32)).permute(2, 0, 1)
        for box, name in zip(a.boxes.round().long().tolist(), a.labels):
            pool = np.flatnonzero(labels == fashion_mnist.CLASSES.index(name))
            res = rank(grid(rgb[:, box[1] : box[3], box[0] : box[2]]), grids[pool])
            order = torch.argsort(res)[: max(args.top, 2)]
            best = [int(pool[i]) for i in order[: args.top]]
            indices.update(best)
            objects.append(
                {
                    "image": Path(a.image).name,
                    "label": name,
                    "best": best,
                    "residual": round(float(res[order[0]]), 5),
                    "runner_up": round(float(res[order[1]]), 5),
                }
            )
    residual = np.array([o["residual"] for o in objects])
    margin = np.array([o["runner_up"] / max(o["residual"], 1e-9) for o in objects])
    check = self_check(
        images, labels, grids, args.check, Path(__file__).parents[1] / "alexsuite/data/bundled/photos/brick.jpg"
    )
    summary = {
        "split": args.split,
        "objects": len(objects),
        "indices_left_out": len(indices),
        "distinct_best": len({o["best"][0] for o in objects}),
        "median_residual": float(np.median(residual)),
        "median_runner_up_ratio": float(np.median(margin)),
        "objects_runner_up_within_1.5x": int((margin < 1.5).sum()),
        "self_check_top1": check,
    }
    print(json.dumps(summary))
    write_result(f"scenes_dev_{args.split}_articles", {**summary, "indices": sorted(indices), "objects": objects})


if __name__ == "__main__":
    main()
