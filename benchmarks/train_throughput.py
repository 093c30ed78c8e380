"""Training images/s of alexsuite's loop against a plain PyTorch loop on
the same model, batch and data, measured in the same run, for alexnet-small and alexnet.

    python benchmarks/train_throughput.py [--steps 30] [--paper-steps 8] [--repeats 2]

One paper-net step takes 9-11 s on 2 CPU cores (+-10% step to step), so its ratio needs 8+ steps.

The plain loop is the floor any loop must pay: per step it indexes its batch from the same
uint8 storage, centre-crops and normalises it, then forward/backward/step. Ours draws and
applies the paper's random augmentation (crop, flip, PCA lighting) instead, with its keyed RNG
and bookkeeping, so ratio >= 0.97 means all that costs under 3%. Also measured: decoding a JPEG folder at the model's
base size with DataLoader workers, against the model's training step.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import write_result
from PIL import Image

from alexsuite.data import batching, transforms
from alexsuite.data.datasets import ArrayDataset, folder_dataset
from alexsuite.models.alexnet import create_model
from alexsuite.training.config import INPUT_SIZES, TrainConfig
from alexsuite.training.engine import TrainingParts, train_one_epoch

BATCH = 128


def _pre(arch):
    base, crop = INPUT_SIZES[arch]
    return transforms.Preprocess(base, crop, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (0.02, 0.01, 0.005))


def _optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)


def plain_loop(arch, images, labels, steps):
    torch.manual_seed(0)
    model = create_model(arch, 10).train()
    opt = _optimizer(model)
    pre = _pre(arch)
    F.cross_entropy(model(transforms.center_crop(images[:BATCH], pre)), labels[:BATCH]).backward()
    opt.zero_grad()  # the untimed warm-up step
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(labels))[:BATCH]
        x, y = transforms.center_crop(images[idx], pre), labels[idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - start)


def our_loop(arch, images, labels):
    torch.manual_seed(0)
    model = create_model(arch, 10)
    opt = _optimizer(model)
    data = ArrayDataset(images, labels, [str(i) for i in range(10)], "synthetic")
    warm = ArrayDataset(images[:BATCH], labels[:BATCH], data.classes, "warm")
    parts, cfg = TrainingParts.plain(model, opt, _pre(arch)), TrainConfig(batch_size=BATCH, seed=0, workers=0)
    train_one_epoch(parts, warm, cfg, epoch=0)
    stats = train_one_epoch(parts, data, cfg, epoch=1)
    return stats["images_per_s"]


def jpeg_decode_rate(base, n, workers):
    """Images/s that DataLoader workers decode + resize a folder of real-size JPEG photos."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        root = Path(tmp) / "c0"
        root.mkdir()
        (Path(tmp) / "c1").mkdir()
        y, x = np.mgrid[0:375, 0:500]
        for i in range(n):  # photo-like: smooth gradients + noise, 500x375 like a VOC image
            img = np.stack([x * 0.5 + i, y * 0.6, (x + y) * 0.3], -1) + rng.normal(0, 12, (375, 500, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i}.jpg", quality=90)
            if i < 2:
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(Path(tmp) / "c1" / f"{i}.jpg")
        ds = folder_dataset(Path(tmp), base)
        plan = batching.epoch_batches(len(ds), 32, 0, 0, shuffle=False, drop_last=False)
        start = time.perf_counter()
        count = sum(len(b.labels) for b in batching.iterate(ds, plan, workers=workers))
        return count / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps for alexnet-small")
    ap.add_argument("--paper-steps", type=int, default=8, help="timed steps for alexnet (227 px)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    results = {}
    for arch, steps in (("alexnet-small", a.steps), ("alexnet", a.paper_steps)):
        base = INPUT_SIZES[arch][0]
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (steps * BATCH, 3, base, base), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (steps * BATCH,), generator=g)
        plain, ours = [], []
        for _ in range(a.repeats):  # interleaved, best of N: the fairest CPU comparison
            plain.append(plain_loop(arch, images, labels, steps))
            ours.append(our_loop(arch, images, labels))
        results[arch] = {
            "plain_images_per_s": round(max(plain), 1),
            "ours_images_per_s": round(max(ours), 1),
            "ratio": round(max(ours) / max(plain), 3),
            "batch": BATCH,
            "steps": steps,
            "all_plain": [round(v, 1) for v in plain],
            "all_ours": [round(v, 1) for v in ours],
        }
        print(
            f"{arch:14s} plain {max(plain):7.1f} img/s  ours {max(ours):7.1f} img/s  "
            f"ratio {max(ours) / max(plain):.3f}",
            flush=True,
        )
    decode = jpeg_decode_rate(base=256, n=192, workers=2)
    step = results["alexnet"]["ours_images_per_s"]
    results["jpeg_decode_256"] = {
        "images_per_s": round(decode, 1),
        "workers": 2,
        "alexnet_train_images_per_s": step,
        "keeps_up": decode >= step,
        "ratio": round(decode / step, 2),
    }
    print(
        f"JPEG 500x375 -> 256 decode, 2 workers: {decode:.0f} img/s = {decode / step:.1f}x "
        f"alexnet's training step ({step:.1f} img/s)"
    )
    path = write_result("train_throughput", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
