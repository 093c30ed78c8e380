import gzip
import struct

import numpy as np
import pytest
import torch

from alexsuite.data import batching, fashion_mnist, transforms
from alexsuite.data.datasets import ArrayDataset, folder_dataset, leave_out, resolve_classification, split_holdout
from alexsuite.errors import DataError

from .conftest import make_class_folders


def _write_idx(path, arr):
    with gzip.open(path, "wb") as f:
        if arr.ndim == 3:
            f.write(struct.pack(">IIII", 2051, *arr.shape))
        else:
            f.write(struct.pack(">II", 2049, len(arr)))
        f.write(arr.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_truncation(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    _write_idx(tmp_path / "x.gz", images)
    _write_idx(tmp_path / "y.gz", np.array([1, 2, 3]))
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "x.gz"), images)
    assert fashion_mnist.read_idx(tmp_path / "y.gz").tolist() == [1, 2, 3]
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 5, 28, 28) + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_found_through_alexsuite_data(tmp_path, monkeypatch):
    for split, n in (("train", 4), ("t10k", 2)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.full((n, 28, 28), 7))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n))
    monkeypatch.setenv("ALEXSUITE_DATA", str(tmp_path))
    images, labels = fashion_mnist.load_split("test")
    assert images.shape == (2, 28, 28) and labels.tolist() == [0, 1]


def test_missing_fashion_mnist_names_all_three_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXSUITE_DATA", str(tmp_path / "none"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "no-cache")
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as e:
        fashion_mnist.locate()
    message = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in message and "ALEXSUITE_DATA" in message
    assert "network unreachable" in message and "fashion-mnist-mini" in message


def test_bundled_subset_is_balanced():
    train, val = resolve_classification("fashion-mnist-mini", base_size=32)
    assert len(train) == 5000 and len(val) == 1000
    assert train.images.shape == (5000, 1, 32, 32)
    assert torch.bincount(train.labels).tolist() == [500] * 10
    # zero padding keeps the 28 px article centred
    assert train.images[:, :, :2].max() == 0 and train.images[:, :, 2:30, 2:30].max() > 0


def test_folder_scan_errors_and_skips(tmp_path):
    make_class_folders(tmp_path / "d", 3, seed=0)
    (tmp_path / "d" / "circle" / "readme.txt").write_text("not an image")
    ds = folder_dataset(tmp_path / "d", 32)
    assert ds.classes == ["circle", "square", "stripes"] and len(ds) == 9
    assert len(ds.skipped_files) == 1
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(DataError, match="no images: empty"):
        folder_dataset(tmp_path / "d", 32)
    make_class_folders(tmp_path / "one" / "train", 2, seed=0)
    for extra in ("square", "stripes"):
        for p in (tmp_path / "one" / "train" / extra).iterdir():
            p.unlink()
        (tmp_path / "one" / "train" / extra).rmdir()
    with pytest.raises(DataError, match="only one class"):
        resolve_classification(str(tmp_path / "one" / "train"), 32, val_split=0.5)
    with pytest.raises(DataError, match="no such folder"):
        resolve_classification(str(tmp_path / "missing"), 32)
    with pytest.raises(DataError, match="--val-split"):
        resolve_classification(str(tmp_path / "d"), 32)


def test_holdout_is_stratified_and_disjoint(tmp_path):
    make_class_folders(tmp_path, 10, seed=0)
    train, val = split_holdout(folder_dataset(tmp_path, 32), 0.2, seed=0)
    assert torch.bincount(val.labels).tolist() == [2, 2, 2]
    assert not set(train.paths) & set(val.paths)


def test_rank_slices_cover_each_global_batch_once():
    plan = batching.epoch_batches(100, 16, epoch=3, seed=7)
    assert len(plan) == 6 and all(len(b) == 16 for b in plan)
    assert plan[0].tolist() == batching.epoch_batches(100, 16, epoch=3, seed=7)[0].tolist()
    assert plan[0].tolist() != batching.epoch_batches(100, 16, epoch=4, seed=7)[0].tolist()
    data = ArrayDataset(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100), ["x"], "ids")
    for rank in (0, 1):  # each rank's batches are its interleaved half of the same global batch
        shards = [b.labels.tolist() for b in batching.iterate(data, plan, rank=rank, world=2)]
        assert shards == [b[rank::2].tolist() for b in plan]
    both = [
        sorted(a.labels.tolist() + b.labels.tolist())
        for a, b in zip(batching.iterate(data, plan, 0, 2), batching.iterate(data, plan, 1, 2))
    ]
    assert both == [sorted(b.tolist()) for b in plan]


def test_augmentation_crops_flips_and_lighting():
    pre = transforms.Preprocess(
        8, 6, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.1, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    params = {
        "top": torch.tensor([0, 2]),
        "left": torch.tensor([1, 0]),
        "flip": torch.tensor([False, True]),
        "alpha": torch.tensor([[1.0, 0, 0], [0, 0, 0]]),
    }
    out = transforms.augment(images, pre, params, pca=True)
    assert out.shape == (2, 3, 6, 6)
    expected0 = images[0, :, 0:6, 1:7].float() / 255
    expected0[0] += 0.1  # alpha_1 * lambda_1 along the first eigenvector (the red axis here)
    assert torch.allclose(out[0], expected0)
    assert torch.allclose(out[1], (images[1, :, 2:8, 0:6].float() / 255).flip(2))
    ten = torch.stack(list(transforms.ten_crops(images, pre)))
    assert ten.shape == (10, 2, 3, 6, 6) and torch.allclose(ten[5], ten[0].flip(3))
    assert torch.allclose(ten[4], transforms.center_crop(images, pre))


def test_pixel_statistics_recover_the_covariance():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (50, 3, 16, 16), dtype=np.uint8))
    stats = transforms.pixel_statistics(images)
    x = images.permute(0, 2, 3, 1).reshape(-1, 3).double() / 255
    vecs = torch.tensor(stats["eigvec"], dtype=torch.float64)
    rebuilt = vecs @ torch.diag(torch.tensor(stats["eigval"], dtype=torch.float64)) @ vecs.T
    assert torch.allclose(rebuilt, torch.cov(x.T), atol=1e-6)
    assert np.allclose(stats["mean"], x.mean(0).numpy(), atol=1e-6)


def test_leave_out_drops_listed_positions_or_files_and_names_what_it_cannot_find(tmp_path):
    import json

    arrays = ArrayDataset(
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).clone(),
        torch.arange(10) % 3,
        ["a", "b", "c"],
        "toy",
    )
    listing = tmp_path / "out.json"
    listing.write_text(json.dumps([0, 3, 3]))
    kept = leave_out(arrays, listing)
    assert kept.images[:, 0, 0, 0].tolist() == [1, 2, 4, 5, 6, 7, 8, 9] and kept.labels.tolist() == [
        1,
        2,
        1,
        2,
        0,
        1,
        2,
        0,
    ]
    listing.write_text(json.dumps({"indices": [9]}))  # benchmarks/scenes_articles.py's report
    assert len(leave_out(arrays, listing)) == 9
    folder = folder_dataset(make_class_folders(tmp_path / "f", 4, seed=0), 32)
    listing.write_text(json.dumps([str(folder.paths[1]), 0]))
    kept = leave_out(folder, listing)
    assert len(kept) == 10 and folder.paths[1] not in kept.paths and folder.paths[0] not in kept.paths
    for bad, words in (([10], "positions 0-9"), (["x.png"], "not an image"), ({"a": 1}, "JSON list")):
        listing.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=words):
            leave_out(arrays, listing)
    listing.write_text("[1, 2")
    with pytest.raises(DataError, match="not a readable JSON list"):
        leave_out(arrays, listing)
