"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence): the idx reader and where to find it.

The full set is read, in this order, from $ALEXSUITE_DATA, from Debian's package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), or through torchvision's download
into ~/.cache/alexsuite when online. A small subset ships inside the package (`fashion-mnist-mini`).
"""

from __future__ import annotations

import gzip
import os
import struct
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alexsuite"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (gzipped or not): ubyte images (N, rows, cols) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic, n = struct.unpack(">II", f.read(8))
            if magic == 2049:  # labels
                dims = ()
            elif magic == 2051:  # images: rows, cols follow
                dims = struct.unpack(">II", f.read(8))
            else:
                raise DataError(f"{path}: not an idx ubyte file (magic number {magic})")
            data = np.frombuffer(bytearray(f.read()), dtype=np.uint8)  # writable, for torch
    except (OSError, EOFError, struct.error) as e:
        raise DataError(f"{path}: unreadable idx file ({e})") from None
    if data.size != n * int(np.prod(dims or (1,))):
        raise DataError(f"{path}: truncated idx file ({data.size} bytes for {n} items)")
    return data.reshape((n, *dims))


def _find_in(directory: Path, name: str) -> Path | None:
    for sub in (directory, directory / "fashion-mnist", directory / "FashionMNIST" / "raw"):
        for candidate in (sub / f"{name}.gz", sub / name):
            if candidate.is_file():
                return candidate
    return None


def _complete(directory: Path) -> bool:
    return all(_find_in(directory, f) for pair in _FILES.values() for f in pair)


def locate() -> Path:
    """The directory holding the four idx files, or a DataError that names all three sources."""
    tried = []
    env = os.environ.get("ALEXSUITE_DATA")
    for directory in ([Path(env)] if env else []) + [DEBIAN_DIR, CACHE_DIR]:
        if _complete(directory):
            return directory
        tried.append(str(directory))
    try:  # last resort: torchvision's downloader (fails fast offline)
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(CACHE_DIR), train=train, download=True)
        if _complete(CACHE_DIR):
            return CACHE_DIR
    except Exception as e:  # network errors come in many types; all mean "not available"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        reason = "download produced no idx files"
    raise DataError(
        "Fashion-MNIST not found (looked in " + ", ".join(tried) + f"; download failed: {reason}). "
        "Fix: `apt-get install dataset-fashion-mnist`, or set ALEXSUITE_DATA to a folder with the "
        "four idx files, or go online once; `fashion-mnist-mini` (bundled) needs none of these."
    )


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the full set's `train` or `test` split."""
    directory = locate()
    images_name, labels_name = _FILES[split]
    images = read_idx(_find_in(directory, images_name))
    labels = read_idx(_find_in(directory, labels_name)).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{directory}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels


def load_mini(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundled subset: 500 training and 100 test images per class, drawn with seed 0."""
    with resources.files("alexsuite.data").joinpath("bundled/fashion-mnist-mini.npz").open("rb") as f:
        bundle = np.load(f)
        return bundle[f"{split}_images"], bundle[f"{split}_labels"].astype(np.int64)
