"""Shared test data: small generated image folders (real PNG/JPEG files, decoded by the real code)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "stripes")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A coloured shape on a random background: easy to learn, but not by colour alone."""
    bg = tuple(int(v) for v in rng.integers(0, 120, 3))
    fg = tuple(int(v) for v in rng.integers(140, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 4, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        for x in range(0, size, 6):
            d.rectangle([x, 0, x + 2, size], fill=fg)
    return img


def make_class_folders(root: Path, per_class: int, seed: int, fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, rng).save(root / kind / f"{kind}_{i:03d}.{fmt.lower()}", fmt)
    return root


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """shapes/{train,val}/{circle,square,stripes}/*.png: 24 training and 8 validation images a class."""
    root = tmp_path_factory.mktemp("shapes")
    make_class_folders(root / "train", 24, seed=1)
    make_class_folders(root / "val", 8, seed=2)
    return root


@pytest.fixture(scope="session")
def trained_run(shapes_dir, tmp_path_factory) -> Path:
    """A real 8-epoch alexnet-small run on the shapes, shared by the tests that need a model
    (about 5 s; it reached 0.75 validation accuracy with seeds 0 and 1)."""
    from alexsuite.training.config import TrainConfig
    from alexsuite.training.run import train

    run_dir = tmp_path_factory.mktemp("runs") / "shapes"
    train(TrainConfig(data=str(shapes_dir), epochs=8, batch_size=8, lr=0.01, workers=0,
                      schedule="cosine"), run_dir=run_dir)
    return run_dir
