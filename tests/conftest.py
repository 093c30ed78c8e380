"""Shared test data: small generated image folders (real PNG/JPEG files, decoded by the real code)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
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
    # cpu: the accuracy above was measured there; a GPU's cuDNN draws other rounding (0.58 on an H100)
    train(
        TrainConfig(
            data=str(shapes_dir),
            epochs=8,
            batch_size=8,
            lr=0.01,
            workers=0,
            schedule="cosine",
            device="cpu",
            channels_last=False,  # the NCHW trajectory the dedup tests' thresholds were set on
        ),
        run_dir=run_dir,
    )
    return run_dir


@pytest.fixture(scope="session")
def val_photos(shapes_dir, tmp_path_factory) -> Path:
    """A copy of the shapes' validation images (24 PNGs in class folders) that tests index and
    query, never change."""
    root = tmp_path_factory.mktemp("val-photos") / "photos"
    shutil.copytree(shapes_dir / "val", root)
    return root


@pytest.fixture(scope="session")
def val_index(trained_run, val_photos) -> Path:
    """val_photos indexed by trained_run (fc7, exact L2), read-only for the tests that use it."""
    import alexsuite

    root = val_photos.parent / "idx"
    (report,) = alexsuite.Index(root, model=trained_run, device="cpu").add(val_photos, workers=0)
    assert (report.added, report.total) == (24, 24)
    return root


def make_voc_scenes(root: Path, split: str, n: int, seed: int, size=(128, 104), classes=CLASSES) -> Path:
    """A Pascal VOC split: n smooth random backgrounds, each with 1-2 shape tiles (conftest's
    shapes of `classes`, 30-44 px) pasted apart; the tiles are the objects. Boxes 1-based
    inclusive, as VOC."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        w, h = size
        coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        scene = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        objects, placed = [], []
        for _ in range(int(rng.integers(1, 3))):
            kind = classes[int(rng.integers(len(classes)))]
            s = int(rng.integers(30, 45))
            for _try in range(20):
                x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                if all(x + s <= a or a + b <= x or y + s <= c or c + b <= y for a, c, b in placed):
                    break
            else:
                continue
            scene.paste(draw_shape(kind, rng).resize((s, s)), (x, y))
            placed.append((x, y, s))
            objects.append(
                f"<object><name>{kind}</name><difficult>0</difficult><bndbox><xmin>{x + 1}</xmin>"
                f"<ymin>{y + 1}</ymin><xmax>{x + s}</xmax><ymax>{y + s}</ymax></bndbox></object>"
            )
        name = f"{split}_{i:03d}"
        scene.save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
        names.append(name)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def voc_scenes(tmp_path_factory) -> Path:
    """A tiny Pascal VOC set of shape tiles on random backgrounds: 14 train, 8 val images."""
    root = tmp_path_factory.mktemp("voc")
    make_voc_scenes(root, "train", 14, seed=3)
    make_voc_scenes(root, "val", 8, seed=4)
    return root


@pytest.fixture(scope="session")
def trained_detector(voc_scenes, trained_run, tmp_path_factory) -> Path:
    """A real R-CNN detector trained on voc_scenes from the shapes backbone (short fine-tuning)."""

    from alexsuite.detection.config import DetectorConfig
    from alexsuite.detection.finetune import FinetuneSettings
    from alexsuite.detection.training import train_detector
    from alexsuite.proposals import ProposalSettings

    out = tmp_path_factory.mktemp("detectors") / "shapes"
    cfg = DetectorConfig(
        data=str(voc_scenes),
        backbone=str(trained_run),
        finetune=FinetuneSettings(iterations=60, batch_size=64, lr=0.01, checkpoint_every=20),
        proposals=ProposalSettings(size=256, max_boxes=300),
        workers=2,
    )
    train_detector(cfg, out)
    return out


@contextmanager
def serving(*args):
    """A real `alexsuite serve` process with these arguments on a free port, its URL once /health
    answers; terminated afterwards."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "alexsuite.cli", "serve", *map(str, args), "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
