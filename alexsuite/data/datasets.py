"""Classification datasets: in-memory arrays and image folders, resolved from a name or a path.

Both yield uint8 images at the model's *base* size (the paper's 256 for 224/227 crops); the
random crop, flip and colour augmentation happen per batch in transforms.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, ImageDecodeError
from ..fileio import display_path, open_regular
from . import fashion_mnist
from .decode import load_square, load_warped
from .folders import scan_images


@dataclass
class ArrayDataset:
    """Images held in memory as one uint8 tensor (N, C, H, W), C = 1 or 3."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, indices) -> tuple[torch.Tensor, torch.Tensor, list]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx], []


@dataclass
class FolderDataset:
    """Image files listed with class indices; decoded on demand (in DataLoader workers)."""

    paths: list[Path]
    labels: torch.Tensor
    classes: list[str]
    source: str
    base_size: int
    skipped_files: list[str] = field(default_factory=list)  # non-image files found while scanning
    whole: bool = False  # decode the whole image warped to base_size, not its central square

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        """(CHW uint8 tensor, label) or (None, ImageDecodeError) for a file that won't decode."""
        try:
            load = load_warped if self.whole else load_square
            arr = load(self.paths[i], self.base_size)
        except ImageDecodeError as e:
            return None, e
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), int(self.labels[i])


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, H, W) images to size x size. Fashion-MNIST's black background makes this
    the faithful way to get the paper's 'random crops of a larger image' from 28 px articles."""
    h, w = images.shape[1:3]
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left)))


def _fashion(split: str, base_size: int, mini: bool) -> ArrayDataset:
    file_split = "train" if split == "train" else "test"
    images, labels = (fashion_mnist.load_mini if mini else fashion_mnist.load_split)(file_split)
    tensor = torch.from_numpy(np.ascontiguousarray(images[:, None]))
    if base_size < 28:
        raise DataError(f"base size {base_size} is smaller than Fashion-MNIST's 28 px")
    if base_size <= 40:
        tensor = torch.from_numpy(pad_to(images, base_size)[:, None])
    else:  # the 227 px nets: scale the articles up (16 MB per 256 images at 256 px)
        tensor = torch.cat(
            [
                torch.nn.functional.interpolate(
                    chunk.float(), size=(base_size, base_size), mode="bilinear", align_corners=False
                )
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
                for chunk in tensor.split(1024)
            ]
        )
    name = "fashion-mnist-mini" if mini else "fashion-mnist"
    return ArrayDataset(tensor, torch.from_numpy(labels), list(fashion_mnist.CLASSES), f"{name}:{file_split}")


NAMED = {
    "fashion-mnist-mini": lambda split, base: _fashion(split, base, mini=True),
    "fashion-mnist": lambda split, base: _fashion(split, base, mini=False),
}
DEFAULT_DATASET = "fashion-mnist-mini"


def scan_class_folders(root: Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """Class subfolders of `root` (sorted names = class indices), images found recursively
    (folders.scan_images: regular files only, each folder and file once); returns the paths,
    their labels, the classes and what was skipped, one line per file or kind."""
    if not root.is_dir():
        raise DataError(f"{display_path(root)}: no such folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{display_path(root)}: no class subfolders (expected {display_path(root)}/<class>/<image files>)"
        )
    paths, labels, skipped, empty = [], [], [], []
    for index, name in enumerate(classes):
        scan = scan_images(root / name)
        paths += scan.images
        labels += [index] * len(scan.images)
        skipped += scan.others + scan.special + scan.loops + scan.duplicates + scan.unreadable
        if not scan.images:
            empty.append(name)
    if empty:
        raise DataError(
            f"{display_path(root)}: class folder(s) with no images: {', '.join(empty)} "
            "(add images or remove the folder)"
        )
    return paths, labels, classes, skipped


def folder_dataset(root: Path, base_size: int) -> FolderDataset:
    paths, labels, classes, skipped = scan_class_folders(root)
    return FolderDataset(paths, torch.tensor(labels), classes, str(root), base_size, skipped)


def split_holdout(dataset: FolderDataset, fraction: float, seed: int) -> tuple[FolderDataset, FolderDataset]:
    """Stratified hold-out: `fraction` of each class, chosen with `seed`, becomes validation."""
    if not 0 < fraction < 1:
        raise DataError(f"--val-split must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    labels = dataset.labels.numpy()
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        val[rng.choice(members, max(1, round(len(members) * fraction)), replace=False)] = True

    if val.all():
        raise DataError(
            f"{dataset.source}: the training split is empty: {len(labels)} image(s) in {len(np.unique(labels))} "
            f"class(es), and --val-split {fraction} holds out at least one of each class; "
            "add images or drop --val-split"
        )

    def subset(mask, tag):
        keep = np.flatnonzero(mask)
        return FolderDataset(
            [dataset.paths[i] for i in keep],
            dataset.labels[keep],
            dataset.classes,
            f"{dataset.source}[{tag}]",
            dataset.base_size,
        )

    return subset(~val, "train"), subset(val, "val")


def leave_out(dataset: ArrayDataset | FolderDataset, listing: str | Path) -> ArrayDataset | FolderDataset:
    """`dataset` without the images a JSON file lists: positions in the dataset (Fashion-MNIST:
    the idx file's order) or, for image folders, file paths; a list, or an object holding it
    under "indices". For keeping a benchmark's test objects out of pre-training."""
    import json

    try:
        with open_regular(listing) as f:
            entries = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise DataError(f"--leave-out {listing}: not a readable JSON list ({e})") from None
    if isinstance(entries, dict):  # a report that carries its list, as benchmarks/scenes_articles.py writes
        entries = entries.get("indices")
    if not isinstance(entries, list):
        raise DataError(
            f"--leave-out {listing}: expected a JSON list of positions or file paths "
            '(or an object with one under "indices")'
        )
    drop = np.zeros(len(dataset), dtype=bool)
    paths = (
        {str(Path(p).resolve()): i for i, p in enumerate(dataset.paths)} if isinstance(dataset, FolderDataset) else {}
    )
    for e in entries:
        i = (
            e
            if isinstance(e, int) and not isinstance(e, bool)
            else paths.get(str(Path(e).resolve()))
            if isinstance(e, str)
            else None
        )
        if i is None or not 0 <= i < len(dataset):
            raise DataError(
                f"--leave-out {listing}: {e!r} is not an image of {dataset.source} "
                f"(positions 0-{len(dataset) - 1}{', or file paths' if paths else ''})"
            )
        drop[i] = True
    keep = np.flatnonzero(~drop)
    tag = f"{dataset.source} without {int(drop.sum())} left out"
    if isinstance(dataset, ArrayDataset):
        idx = torch.from_numpy(keep)
        return ArrayDataset(dataset.images[idx], dataset.labels[idx], dataset.classes, tag)
    return FolderDataset(
        [dataset.paths[i] for i in keep],
        dataset.labels[keep],
        dataset.classes,
        tag,
        dataset.base_size,
        dataset.skipped_files,
    )


def resolve_classification(
    data: str, base_size: int, val_split: float | None = None, seed: int = 0, command: str = "train"
) -> tuple[ArrayDataset | FolderDataset, ArrayDataset | FolderDataset]:
    """(train, val) for a dataset name, a folder with train/ and val/, or one folder + val_split
    (only `train` has --val-split: other commands' errors do not suggest it)."""
    if data in NAMED:
        return NAMED[data]("train", base_size), NAMED[data]("test", base_size)
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{data}: no such folder or dataset name (names: {', '.join(NAMED)})")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = folder_dataset(root / "train", base_size), folder_dataset(root / "val", base_size)
        if train.classes != val.classes:
            raise DataError(f"{root}: train/ and val/ have different class folders")
    elif val_split:
        train, val = split_holdout(folder_dataset(root, base_size), val_split, seed)
    else:
        hint = "; for one folder of class subfolders pass --val-split 0.1" if command == "train" else ""
        raise DataError(f"{root}: expected train/ and val/ class folders{hint}")
    if len(train.classes) < 2:
        raise DataError(f"{root}: only one class ({train.classes[0]}); classification needs two or more")
    return train, val


def resolve_eval(data: str, base_size: int, split: str | None = None) -> ArrayDataset | FolderDataset:
    """The labelled set `alexsuite eval` measures: a name's test split, a folder's val/
    (or `split`), or a folder of class subfolders itself."""
    if data in NAMED:
        if split not in (None, "train", "test"):
            raise DataError(f"{data} has the splits train and test, not {split!r}")
        return NAMED[data](split or "test", base_size)
    root = Path(data).expanduser()
    if split:
        root = root / split
    elif (root / "val").is_dir():
        root = root / "val"
    return folder_dataset(root, base_size)
