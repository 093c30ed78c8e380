"""The Python API's batching: `Model.predict` and `Model.embed` on 1,000 image files in one call,
against the same API called once per image (what a loop in a notebook does), measured in the
same run. Goal: the batched call at least 3x faster.

    python benchmarks/api_batching.py [--images 1000] [--model runs/demo/train]

Images: PNG files of the bundled Fashion-MNIST subset's test split (28 px, read at the model's
own size). Model: --model (default: the demo's runs/demo/train), else an untrained alexnet-small
(speed does not depend on the weights).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import write_result
from PIL import Image

import alexsuite
from alexsuite.data.fashion_mnist import load_mini
from alexsuite.data.transforms import Preprocess
from alexsuite.models.alexnet import create_model
from alexsuite.models.checkpoint import FORMAT


def write_images(folder: Path, n: int) -> list[Path]:
    images, _ = load_mini("test")
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.png"
        Image.fromarray(images[i % len(images)]).save(p)
        paths.append(p)
    return paths


def untrained(folder: Path) -> Path:
    model = create_model("alexnet-small", 10)
    pre = Preprocess(32, 28, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    path = folder / "model.pt"
    payload = {"format": FORMAT, "arch": "alexnet-small", "classes": [str(i) for i in range(10)]}
    payload |= {"preprocess": json.dumps(pre.to_dict()), "model": model.state_dict()}
    torch.save(payload, path)
    return path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    demo = Path("runs/demo/train")
    ap.add_argument("--model", default=str(demo) if demo.is_dir() else None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_images(tmp, args.images)
        model = alexsuite.Model(args.model or untrained(tmp), device="cpu")
        model.predict(paths[:8])  # warm-up: threads, allocator
        rows = {
            "predict_batched_s": timed(lambda: model.predict(paths)),
            "predict_per_image_s": timed(lambda: [model.predict(p) for p in paths]),
            "embed_batched_s": timed(lambda: model.embed(paths)),
            "embed_per_image_s": timed(lambda: [model.embed(p) for p in paths]),
        }
    result = {
        "images": args.images,
        "model": str(args.model or "untrained alexnet-small"),
        **{k: round(v, 3) for k, v in rows.items()},
        "predict_speedup": round(rows["predict_per_image_s"] / rows["predict_batched_s"], 2),
        "embed_speedup": round(rows["embed_per_image_s"] / rows["embed_batched_s"], 2),
        "images_per_s_batched": round(args.images / rows["predict_batched_s"], 1),
    }
    print(
        f"predict: {result['images_per_s_batched']} img/s batched, {result['predict_speedup']}x the per-image loop; "
        f"embed {result['embed_speedup']}x"
    )
    print(f"results: {write_result('api_batching', result)}")


if __name__ == "__main__":
    main()
