"""Detection scenes composed from articles and photographs (data/scenes.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexsuite.boxes import box_iou
from alexsuite.data import fashion_mnist
from alexsuite.data.detection_sets import read_detection_set
from alexsuite.data.scenes import TEST_PHOTOS, TRAIN_PHOTOS, SceneSettings, bundled_photos, compose_scenes
from alexsuite.errors import DataError


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    colour = tmp_path / "colour.jpg"
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(colour)
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (240, 180), dtype=np.uint8)).save(grey)
    return [colour, grey]


def test_scenes_are_a_readable_voc_split_with_tight_apart_boxes(tmp_path, photos):
    articles, labels = fashion_mnist.load_mini("train")
    names = compose_scenes(
        tmp_path / "voc",
        "train",
        photos,
        articles[:40],
        labels[:40],
        fashion_mnist.CLASSES,
        count=12,
        seed=3,
        settings=SceneSettings(size=(40, 90)),
    )
    data = read_detection_set(tmp_path / "voc", "train")
    assert [a.image.stem for a in data.items] == names and len(names) == 12
    assert data.clipped == 0 and data.dropped == 0
    assert set(data.classes) <= set(fashion_mnist.CLASSES)
    for item in data.items:
        scene = np.asarray(Image.open(item.image))
        assert scene.shape == (item.height, item.width, 3)
        assert 320 <= item.width <= 420 and 260 <= item.height <= 340
        assert 1 <= len(item.labels) <= 3
        b = item.boxes
        assert (b[:, 2] <= item.width).all() and (b[:, 3] <= item.height).all() and (b[:, :2] >= 0).all()
        assert ((b[:, 2:] - b[:, :2]) <= 90).all()  # never larger than the pasted square
        overlaps = box_iou(b, b) - torch.eye(len(b))
        assert float(overlaps.max()) <= 0.05


def test_the_same_arguments_give_the_same_files(tmp_path, photos):
    articles, labels = fashion_mnist.load_mini("test")
    for out in ("a", "b"):
        compose_scenes(tmp_path / out, "test", photos, articles[:20], labels[:20], fashion_mnist.CLASSES, 3, seed=7)
    for sub in ("JPEGImages/test_0002.jpg", "Annotations/test_0002.xml", "ImageSets/Main/test.txt"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()


def test_bundled_photos_are_real_and_the_test_ones_are_held_out():
    paths = bundled_photos(TRAIN_PHOTOS + TEST_PHOTOS)
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    for p in paths:
        with Image.open(p) as im:
            im.verify()
    credits = (paths[0].parent / "README.md").read_text()
    assert all(f"| {p.name} |" in credits for p in paths)  # every photo has its author and licence


def test_no_photos_or_no_articles_is_a_clear_error(tmp_path, photos):
    articles, labels = fashion_mnist.load_mini("test")
    with pytest.raises(DataError, match="photograph"):
        compose_scenes(tmp_path, "x", [], articles, labels, fashion_mnist.CLASSES, 1, 0)
    with pytest.raises(DataError, match="articles"):
        compose_scenes(tmp_path, "x", photos, articles[:0], labels[:0], fashion_mnist.CLASSES, 1, 0)
