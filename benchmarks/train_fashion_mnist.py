"""Train alexnet-small on the full Fashion-MNIST training set on this
CPU, then measure the official test set (centre crop and the paper's 10-crop).

    python benchmarks/train_fashion_mnist.py [--epochs 14] [--lr 0.04] [--seed 0] [--amp] [--val-every 1]

Reference (measured once on the same machine): an untuned one-file paper-style small AlexNet;
its result is in docs/benchmarks.md. Goal: >= 0.93 within 30 minutes.
The one setting that differs from `alexsuite train`'s paper defaults: a one-cycle lr schedule
(peak 0.04), because the budget is a fixed 30 minutes. With --amp (bf16, where the CPU has it
natively) and --val-every 7 (validation is only watched here: see below) 28 epochs fit in that
budget instead of 14 (docs/benchmarks.md). Other settings tried are in
docs/benchmarks.md (e.g. dropout 0.25 with 13 epochs, results/train_fashion_mnist_dropout025_13ep.json).
The reported model is the *last* epoch's: the test split also served as the per-epoch
validation set, so picking the best epoch by it would leak the test set into the result.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from _common import machine

from alexsuite.data.datasets import resolve_eval
from alexsuite.devices import native_bf16
from alexsuite.models.checkpoint import load_model
from alexsuite.training import speed
from alexsuite.training.config import TrainConfig
from alexsuite.training.evaluate import evaluate
from alexsuite.training.run import train

REFERENCE = {"top1": 0.903, "images_per_s": 350.0, "epochs": 8, "seconds": 22 * 60}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", action="store_true", help="alexsuite train --amp: bf16 where the CPU has it natively")
    ap.add_argument("--compile", default="lrn", choices=["lrn", "model", "off"], help="alexsuite train --compile")
    ap.add_argument("--val-every", type=int, default=1, help="alexsuite train --val-every")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=0.04)
    ap.add_argument("--schedule", default="onecycle")
    ap.add_argument(
        "--paste-on",
        default=None,
        help="copy-paste pre-training onto these photos (alexsuite train --paste-on), e.g. "
        "alexsuite/data/bundled/photos for the detection backbone",
    )
    ap.add_argument(
        "--leave-out",
        default=None,
        help="never train on these Fashion-MNIST training images (alexsuite train --leave-out), e.g. "
        "benchmarks/results/scenes_dev_val_articles.json: the articles of scenes-dev val",
    )
    ap.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="alexnet-small's input (alexsuite train --input-size; default 28); the reference is 28 px",
    )
    ap.add_argument("--out", default="runs/bench/fashion-mnist")
    ap.add_argument("--json", default="benchmarks/results/train_fashion_mnist.json")
    a = ap.parse_args()
    start = time.perf_counter()
    cfg = TrainConfig(
        data="fashion-mnist",
        arch="alexnet-small",
        epochs=a.epochs,
        lr=a.lr,
        schedule=a.schedule,
        val_every=a.val_every,
        dropout=a.dropout,
        workers=0,
        seed=a.seed,
        amp=a.amp,
        compile=a.compile,
        paste_on=a.paste_on,
        leave_out=a.leave_out,
        input_size=a.input_size,
    )
    result = train(cfg, run_dir=Path(a.out))
    train_seconds = time.perf_counter() - start
    loaded = load_model(Path(a.out) / "last.pt")
    # as training validated it: channels-last and the LRN kernel already compiled for it
    loaded.model.to(memory_format=torch.channels_last)
    speed.compiled(loaded.model, loaded.model, "off" if a.compile == "off" else "lrn")
    test = resolve_eval("fashion-mnist", loaded.preprocess.base_size)
    ten = evaluate(loaded.model, test, loaded.preprocess, torch.device("cpu"), ten_crop=True)
    centre = {"top1": ten["centre_top1"], "top5": ten["centre_top5"]}  # the same pass's centre crop
    seconds = time.perf_counter() - start
    ips = sum(r["images_per_s"] for r in result.history) / len(result.history)
    out = {
        "top1": ten["top1"],
        "top5": ten["top5"],
        "seconds": round(seconds, 1),
        "epochs": a.epochs,
        "top1_centre_crop": centre["top1"],
        "top5_centre_crop": centre["top5"],
        "train_seconds": round(train_seconds, 1),
        "train_images_per_s": round(ips, 1),
        "config": json.loads(cfg.to_json()),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "reference": REFERENCE,
        "ratio_top1_vs_reference": round(ten["top1"] / REFERENCE["top1"], 4),
        "ratio_images_per_s_vs_reference": round(ips / REFERENCE["images_per_s"], 2),
        "history": result.history,
        "machine": machine(),
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(
        f"test top-1 {ten['top1']:.4f} (10-crop), {centre['top1']:.4f} (centre); "
        f"{seconds / 60:.1f} min; {ips:.0f} train img/s = {ips / REFERENCE['images_per_s']:.2f}x reference"
    )


if __name__ == "__main__":
    main()
