"""Selective search proposals: original-pixel boxes, odd shapes survive, cache, errors."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from alexsuite.boxes import box_iou
from alexsuite.errors import ConfigError, ImageDecodeError
from alexsuite.proposals import ProposalSettings, propose, selective_search


def scene(width, height, box, seed=0):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(90, 110, (height, width, 3), dtype=np.uint8))
    ImageDraw.Draw(img).rectangle(box, fill=(230, 40, 40))
    return img


def test_a_clear_object_is_proposed_in_original_pixels():
    img = scene(320, 240, (100, 60, 180, 160))
    boxes = selective_search(np.asarray(img), ProposalSettings())
    truth = torch.tensor([[100.0, 60.0, 181.0, 161.0]])
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) > 5
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all() and (boxes[:, :2] >= 0).all()
    assert box_iou(torch.from_numpy(boxes), truth).max() > 0.8


@pytest.mark.parametrize("size", [(1200, 60), (60, 1200), (24, 20), (3000, 2000)])
def test_elongated_tiny_and_huge_images_do_not_crash(size):
    w, h = size
    img = scene(w, h, (w // 4, h // 4, w // 2, h // 2))
    boxes = selective_search(np.asarray(img), ProposalSettings(min_size=2))
    assert len(boxes) >= 1 and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_cache_parallel_and_unreadable_images(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        scene(200, 150, (40 + 10 * i, 30, 120, 110), seed=i).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.append(tmp_path / "bad.png")
    cache = tmp_path / "cache"
    first = propose(paths, cache_dir=cache, workers=2)
    assert isinstance(first[3], ImageDecodeError)
    assert len(list(cache.glob("*.npy"))) == 3
    again = propose(paths[:3], cache_dir=cache, workers=0)
    assert all(np.array_equal(a, b) for a, b in zip(first[:3], again))
    missing = propose([tmp_path / "gone.png"], cache_dir=cache, workers=0)[0]
    assert isinstance(missing, ImageDecodeError) and "gone.png" in str(missing)
    with pytest.raises(ConfigError):
        propose(paths, ProposalSettings(mode="slow"))


def test_the_same_image_gets_the_same_ranked_boxes_every_time(tmp_path):
    """OpenCV ranks boxes with C's rand(): unseeded, the order (and so which boxes survive
    --max-boxes, and R-CNN's fine-tuning batches) changed from call to call and process to process."""
    rng = np.random.default_rng(3)
    img = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((320, 240)))
    first = selective_search(img)
    assert len(first) > 20
    assert np.array_equal(first, selective_search(img))
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    (pooled,) = propose([path], workers=1)  # in a worker process
    assert np.array_equal(first, pooled)
