"""`alexsuite index` throughput on a folder of real photos against a
naive per-image loop measured in the same run.

    python benchmarks/index_build.py [--images 600] [--archs alexnet-small alexnet-tv]

The folder: JPEG (4/5) and PNG (1/5) files, 500x375 crops of the real photos in
../shared/data/scenes-dev and OpenCV's sample data. The naive loop is what most scripts do:
PIL open, torchvision Resize/CenterCrop/ToTensor/Normalize, model forward on one image, fc7,
`index.add` of one vector. Ours is the whole `alexsuite index` path: scan, decode in 2 worker
processes (JPEG DCT scaling), batched channels-last forward, FAISS add, SQLite rows with
content hashes and an atomic index write. Goal: >= 3x images/s.
Models: the Fashion-MNIST alexnet-small (runs/bench/fashion-mnist) and alexnet-tv at 224 px
with random weights (the torchvision-weights path; speed does not depend on the weights).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from _common import write_result
from PIL import Image
from torchvision import transforms as T

from alexsuite.data.transforms import IMAGENET, Preprocess
from alexsuite.models.alexnet import create_model
from alexsuite.models.checkpoint import LoadedModel, load_model
from alexsuite.retrieval.indexer import IndexOptions, update_index

SOURCES = [Path("../shared/data/scenes-dev/JPEGImages"), Path("/usr/share/doc/opencv-doc/examples/data")]


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    photos = [
        p
        for src in SOURCES
        if src.is_dir()
        for p in sorted(src.iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    rng = np.random.default_rng(seed)
    made = 0
    for p in photos:
        if made >= n:
            break
        with Image.open(p) as img:
            img = img.convert("RGB")
        if img.width < 500 or img.height < 375:
            continue
        x, y = int(rng.integers(0, img.width - 499)), int(rng.integers(0, img.height - 374))
        crop = img.crop((x, y, x + 500, y + 375))
        sub = root / f"group{made % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        if made % 5 == 4:
            crop.save(sub / f"img{made:05d}.png")
        else:
            crop.save(sub / f"img{made:05d}.jpg", quality=90)
        made += 1
    while made < n:  # more images than photos: reuse them, flipped, so every file differs
        src = sorted(root.rglob("img*"))[made % max(1, made)]
        with Image.open(src) as img:
            flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT if made % 2 else Image.Transpose.FLIP_TOP_BOTTOM)
            flipped.save(src.with_name(f"img{made:05d}{src.suffix}"))
        made += 1
    return root


def naive_loop(loaded, paths, layer="fc7") -> float:
    pre = loaded.preprocess
    tf = T.Compose([T.Resize(pre.base_size), T.CenterCrop(pre.crop_size), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    model = loaded.model.eval().to(memory_format=torch.contiguous_format)
    index = None
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            x = tf(Image.open(p).convert("RGB"))[None]
            v = model.features(x, layer).numpy()
            if index is None:
                index = faiss.IndexFlatL2(v.shape[1])
            index.add(v)
    return len(paths) / (time.perf_counter() - t0)


def ours(loaded, folder, workdir) -> tuple[float, int]:
    index_dir = workdir / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    report = update_index(index_dir, loaded, folder, IndexOptions(workers=2, batch_size=128), torch.device("cpu"))
    return report.added / (time.perf_counter() - t0), report.added


def tv_model() -> LoadedModel:
    torch.manual_seed(0)
    pre = Preprocess(256, 224, IMAGENET["mean"], IMAGENET["std"])
    return LoadedModel(
        create_model("alexnet-tv", 1000).eval(),
        pre,
        [str(i) for i in range(1000)],
        "alexnet-tv",
        Path("random-alexnet-tv"),
        {},
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--archs", nargs="+", default=["alexnet-small", "alexnet-tv"])
    ap.add_argument("--model", default="runs/bench/fashion-mnist/last.pt")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_folder(work / "photos", args.images)
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        for arch in args.archs:
            if arch == "alexnet-small":
                loaded = load_model(args.model)
                loaded.source = work / "model.pt"  # an index records its model's file; keep the benchmark's apart
                shutil.copy(args.model, loaded.source)
            else:
                loaded = tv_model()
                loaded.source = work / "tv.pt"
                torch.save(loaded.model.state_dict(), loaded.source)
            naive_paths = paths if arch == "alexnet-small" else paths[:200]
            naive = naive_loop(loaded, naive_paths)
            fast, n = ours(loaded, folder, work)
            naive2 = naive_loop(loaded, naive_paths)  # before and after: a fair share of any drift
            ref = max(naive, naive2)
            rows.append(
                {
                    "arch": arch,
                    "images": n,
                    "naive_images_per_s": round(ref, 1),
                    "alexsuite_images_per_s": round(fast, 1),
                    "ratio": round(fast / ref, 2),
                }
            )
            print(
                f"{arch:14s} naive {ref:7.1f} img/s   alexsuite index {fast:7.1f} img/s   ratio {fast / ref:.2f}x",
                flush=True,
            )
    path = write_result(
        "index_build",
        {
            "images": args.images,
            "folder": "500x375 crops of real photos, 80% JPEG / 20% PNG",
            "rows": rows,
            "goal_ratio": 3.0,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
