"""How much of a detection set a backbone already recognises before R-CNN fine-tuning: top-1 of
its own classifier on the warped ground-truth windows (16 px context at 227, as R-CNN warps)
of scenes-dev train, for the copy-paste backbone against the plain one, in the same run.

    python benchmarks/backbone_transfer.py [--backbone runs/bench/fashion-mnist-paste-leaveout/last.pt]
                                           [--reference runs/bench/fashion-mnist/last.pt]
    python benchmarks/backbone_transfer.py --split val --backbone runs/bench/fashion-mnist-paste-leaveout/last.pt \
        --reference runs/bench/fashion-mnist-paste/last.pt --result backbone_transfer_val_leak
    python benchmarks/backbone_transfer.py --split val --compare-framings --result backbone_transfer_framing

The second measures what pre-training on val's own articles is worth: scenes-dev's articles
come from Fashion-MNIST's training split (scenes_articles.py), so a backbone pre-trained on
all of it has seen val's objects; the first backbone left them out (--leave-out).

The third also reads the backbone's val windows each way R-CNN's appendix A compares
(train-detector --region-shape, --context-padding): warp or tightest square, with 16 or 0 px
of context, against the paper's warp with 16 px in the same run.

Both come from train_fashion_mnist.py (the first with --paste-on alexsuite/data/bundled/photos).
The backbone's classes must be the detection set's (Fashion-MNIST's ten, as in scenes-dev).
"""

import argparse

import torch
from _common import SCENES_DEV, write_result

from alexsuite.data.decode import decode_image
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.framing import REGION_SHAPES, Framing, warp_regions
from alexsuite.detection.regions import image_tensor
from alexsuite.models.checkpoint import load_model


@torch.no_grad()
def window_top1(checkpoint: str, items, framing: Framing = Framing()) -> float:
    loaded = load_model(checkpoint)
    model = loaded.model.eval()
    right = total = 0
    for item in items:
        crops = warp_regions(image_tensor(decode_image(item.image)), item.boxes.float(), loaded.preprocess, framing)
        truth = torch.tensor([loaded.classes.index(label) for label in item.labels])
        right += int((model(crops).argmax(1) == truth).sum())
        total += len(truth)
    return right / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--backbone", default="runs/bench/fashion-mnist-paste-leaveout/last.pt")
    ap.add_argument("--reference", default="runs/bench/fashion-mnist/last.pt")
    ap.add_argument("--split", default="train")
    ap.add_argument("--region-shape", choices=REGION_SHAPES, default="warp")
    ap.add_argument("--context-padding", type=int, default=16, help="px at a 227 px crop (R-CNN: 16)")
    ap.add_argument(
        "--compare-framings",
        action="store_true",
        help="also read the backbone's windows as warp and square, with 16 and 0 px of context",
    )
    ap.add_argument("--result", default="backbone_transfer_leaveout", help="writes benchmarks/results/RESULT.json")
    args = ap.parse_args()
    items = read_voc(args.data, args.split).items
    framing = Framing(args.region_shape, args.context_padding).check()
    top1 = {
        name: window_top1(path, items, framing)
        for name, path in (("backbone", args.backbone), ("reference", args.reference))
    }
    objects = sum(len(a.labels) for a in items)
    by_framing = {}
    if args.compare_framings:
        for shape in REGION_SHAPES:
            for pad in (16, 0):
                by_framing[f"{shape}-{pad}"] = window_top1(args.backbone, items, Framing(shape, pad))
        paper = by_framing["warp-16"]
        for name, v in by_framing.items():
            print(f"  {name:>10}: top-1 {v:.3f} ({v / paper:.2f}x the paper's warp-16)")
    print(
        f"top-1 on {objects} ground-truth windows ({framing.shape}, {framing.padding} px): "
        f"{top1['backbone']:.3f} ({args.backbone}) vs "
        f"{top1['reference']:.3f} ({args.reference}): {top1['backbone'] / top1['reference']:.2f}x; chance 0.10"
    )
    path = write_result(
        args.result,
        {
            "data": args.data,
            "split": args.split,
            "objects": objects,
            "backbone": args.backbone,
            "reference": args.reference,
            "top1": top1["backbone"],
            "reference_top1": top1["reference"],
            "ratio": top1["backbone"] / top1["reference"],
            "framing": {"shape": framing.shape, "padding": framing.padding},
            **({"by_framing": by_framing} if by_framing else {}),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
