"""Detection scenes made from classification data: small grey articles (Fashion-MNIST) pasted,
tinted, onto random crops of real photographs, written as a Pascal VOC directory whose ground
truth is the tight box around each pasted article. `alexsuite scenes` and the demo build their
detection sets this way from the bundled data (make_scene_set)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch
from PIL import Image

from ..boxes import box_iou
from ..errors import DataError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..settings import setting
from . import fashion_mnist
from .decode import decode_image
from .detection_sets import DetectionSet, read_detection_set
from .paste import MASK_LEVEL

MAX_OVERLAP = 0.05  # articles in one scene barely touch, so every box is a fair target


@dataclass(frozen=True)
class SceneSettings:
    width: tuple[int, int] = (320, 420)  # scene size range, pixels
    height: tuple[int, int] = (260, 340)
    objects: tuple[int, int] = (1, 3)  # articles per scene
    size: tuple[int, int] = (56, 120)  # pasted article side, pixels (the 28 px article scaled up)
    recolour: bool = False  # per scene, shuffle and scale the photo's colour channels: few photos look like many


def _background(photo: np.ndarray, w: int, h: int, rng: np.random.Generator, recolour: bool) -> np.ndarray:
    """A random w x h crop of the photo, enlarged by up to 1.5x first so crops vary."""
    ph, pw = photo.shape[:2]
    scale = max(w / pw, h / ph) * rng.uniform(1.0, 1.5)
    big = np.asarray(Image.fromarray(photo).resize((int(pw * scale) + 1, int(ph * scale) + 1), Image.BILINEAR))
    y0 = int(rng.integers(0, big.shape[0] - h + 1))
    x0 = int(rng.integers(0, big.shape[1] - w + 1))
    crop = big[y0 : y0 + h, x0 : x0 + w]
    if recolour:
        gains = rng.uniform(0.5, 1.3, 3).astype(np.float32)
        crop = (crop[..., rng.permutation(3)].astype(np.float32) * gains).clip(0, 255).astype(np.uint8)
    return crop.copy()


def _paste(scene: np.ndarray, article: np.ndarray, boxes: list, rng: np.random.Generator, settings: SceneSettings):
    """Paste one tinted article where it barely overlaps the others; its tight box, or None."""
    h, w = scene.shape[:2]
    for _ in range(30):
        side = int(rng.integers(settings.size[0], min(settings.size[1], h - 2, w - 2) + 1))
        obj = np.asarray(Image.fromarray(article).resize((side, side), Image.BICUBIC)).astype(np.float32)
        mask = obj > MASK_LEVEL
        ys, xs = np.nonzero(mask)
        if not len(xs):
            return None
        px, py = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (px + int(xs.min()), py + int(ys.min()), px + int(xs.max()) + 1, py + int(ys.max()) + 1)
        if boxes and float(box_iou(torch.tensor([box]), torch.tensor(boxes)).max()) > MAX_OVERLAP:
            continue
        tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        m = mask[..., None].astype(np.float32)
        roi = scene[py : py + side, px : px + side].astype(np.float32)
        scene[py : py + side, px : px + side] = (
            (m * obj[..., None] * tint + (1 - m) * roi).clip(0, 255).astype(np.uint8)
        )
        return box
    return None


def _annotation(name: str, w: int, h: int, objects: list[tuple[str, tuple]]) -> str:
    """VOC XML; boxes 1-based and inclusive, as VOC writes them."""
    parts = [
        f"<annotation><filename>{escape(name)}.jpg</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    ]
    for label, (x1, y1, x2, y2) in objects:
        parts.append(
            f"<object><name>{escape(label)}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            f"</bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def compose_scenes(
    out: Path,
    split: str,
    photos: list[Path],
    articles: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    count: int,
    seed: int,
    settings: SceneSettings = SceneSettings(),
) -> list[str]:
    """Write `count` scenes into the VOC directory `out` as split `split` (JPEGImages/,
    Annotations/, ImageSets/Main/<split>.txt) and return their names. `articles` (N, H, W)
    uint8 on black with `labels` (N,) indexing `classes`. The same arguments give the same files."""
    if not photos:
        raise DataError("no background photographs to compose scenes on")
    if len(articles) != len(labels) or not len(articles):
        raise DataError(f"{len(articles)} articles with {len(labels)} labels: need the same, and some")
    rng = np.random.default_rng(seed)
    backgrounds = [decode_image(p) for p in photos]
    out = Path(out)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        w, h = int(rng.integers(*settings.width, endpoint=True)), int(rng.integers(*settings.height, endpoint=True))
        scene = _background(backgrounds[int(rng.integers(len(backgrounds)))], w, h, rng, settings.recolour)
        objects: list[tuple[str, tuple]] = []
        for _ in range(int(rng.integers(settings.objects[0], settings.objects[1] + 1))):
            j = int(rng.integers(len(articles)))
            box = _paste(scene, articles[j], [b for _, b in objects], rng, settings)
            if box is not None:
                objects.append((classes[int(labels[j])], box))
        name = f"{split}_{i:04d}"
        names.append(name)
        atomic_write_bytes(
            out / "JPEGImages" / f"{name}.jpg",
            lambda f, scene=scene: Image.fromarray(scene).save(f, format="JPEG", quality=92),
        )
        atomic_write_text(out / "Annotations" / f"{name}.xml", _annotation(name, w, h, objects))
    atomic_write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(n + "\n" for n in names))
    return names


TRAIN_PHOTOS = ("astronaut", "chelsea", "hubble", "camera", "brick", "gravel")
TEST_PHOTOS = ("coffee", "rocket")  # never seen in training: a detector is tested on new photos


@dataclass(frozen=True)
class SceneSetSettings:
    """A Pascal VOC set with a train and a test split from the bundled data: articles of the
    bundled Fashion-MNIST subset (test-split articles for the test scenes) pasted onto six
    bundled photographs for training and two others for testing."""

    train: int = setting(120, "Training scenes.")
    test: int = setting(30, "Test scenes.")
    seed: int = setting(0, "Seed of the scenes: the same seed writes the same files.")


def bundled_photos(names) -> list[Path]:
    folder = resources.files("alexsuite.data").joinpath("bundled/photos")
    return [Path(str(folder.joinpath(f"{n}.jpg"))) for n in names]


def make_scene_set(out: Path, settings: SceneSetSettings = SceneSetSettings()) -> DetectionSet:
    """Write the train and test splits into the VOC directory `out` and return the test split.
    Training scenes get their photo's colours shuffled, so six photos look like many."""
    for split, photos, count, seed in (
        ("train", TRAIN_PHOTOS, settings.train, settings.seed + 1),
        ("test", TEST_PHOTOS, settings.test, settings.seed + 2),
    ):
        articles, labels = fashion_mnist.load_mini(split)
        compose_scenes(
            out,
            split,
            bundled_photos(photos),
            articles,
            labels,
            fashion_mnist.CLASSES,
            count,
            seed,
            SceneSettings(recolour=split == "train"),
        )
    return read_detection_set(out, "test")
