"""How much of a detection set a backbone already recognises before R-CNN fine-tuning: top-1 of
its own classifier on the warped ground-truth windows (16 px context at 227, as R-CNN warps)
of scenes-dev train, for the copy-paste backbone against the plain one, in the same run.

    python benchmarks/backbone_transfer.py [--backbone runs/bench/fashion-mnist-paste-leaveout/last.pt]
                                           [--reference runs/bench/fashion-mnist/last.pt]
    python benchmarks/backbone_transfer.py --split val --backbone runs/bench/fashion-mnist-paste-leaveout/last.pt \
        --reference runs/bench/fashion-mnist-paste/last.pt --result backbone_transfer_val_leak

The second measures what pre-training on val's own articles is worth: scenes-dev's articles
come from Fashion-MNIST's training split (scenes_articles.py), so a backbone pre-trained on
all of it has seen val's objects; the first backbone left them out (--leave-out).

Both come from train_fashion_mnist.py (the first with --paste-on alexsuite/data/bundled/photos).
The backbone's classes must be the detection set's (Fashion-MNIST's ten, as in scenes-dev).
"""
import argparse

import torch

from _common import write_result
from alexsuite.data.decode import decode_image
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.regions import image_tensor
from alexsuite.embedding import warp_regions
from alexsuite.training.checkpoint import load_model


@torch.no_grad()
def window_top1(checkpoint: str, items) -> float:
    loaded = load_model(checkpoint)
    model = loaded.model.eval()
    right = total = 0
    for item in items:
        crops = warp_regions(image_tensor(decode_image(item.image)), item.boxes.float(), loaded.preprocess)
        truth = torch.tensor([loaded.classes.index(label) for label in item.labels])
        right += int((model(crops).argmax(1) == truth).sum())
        total += len(truth)
    return right / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/scenes-dev")
    ap.add_argument("--backbone", default="runs/bench/fashion-mnist-paste-leaveout/last.pt")
    ap.add_argument("--reference", default="runs/bench/fashion-mnist/last.pt")
    ap.add_argument("--split", default="train")
    ap.add_argument("--result", default="backbone_transfer_leaveout", help="writes benchmarks/results/RESULT.json")
    args = ap.parse_args()
    items = read_voc(args.data, args.split).items
    top1 = {name: window_top1(path, items) for name, path in (("backbone", args.backbone),
                                                                ("reference", args.reference))}
    objects = sum(len(a.labels) for a in items)
    print(f"top-1 on {objects} warped ground-truth windows: {top1['backbone']:.3f} ({args.backbone}) vs "
          f"{top1['reference']:.3f} ({args.reference}): {top1['backbone'] / top1['reference']:.2f}x; chance 0.10")
    path = write_result(args.result, {"data": args.data, "split": args.split, "objects": objects,
                                              "backbone": args.backbone, "reference": args.reference,
                                              "top1": top1["backbone"], "reference_top1": top1["reference"],
                                              "ratio": top1["backbone"] / top1["reference"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
