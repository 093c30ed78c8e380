"""What the Python API and the commands take as images: paths (files, folders, globs), PIL
images, HxWx3 uint8 RGB arrays and CxHxW tensors, each made an ImageInput that the batched
embedders, classifier and detector read the same way."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError, ImageDecodeError
from .decode import (
    _to_rgb,
    center_square,
    decode_image,
    is_image_path,
    load_square,
    load_warped,
    resize_shorter_side,
    warp_whole,
)
from .folders import scan_images

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ImageInput:
    """One image: a file (decoded when needed, in worker processes) or pixels held in memory."""

    name: str  # what results call it: the path as given, a PIL image's filename, or "<image N>"
    path: Path | None = None
    pixels: np.ndarray | None = None  # HxWx3 uint8 RGB

    def rgb(self) -> np.ndarray:
        """The whole image, HxWx3 uint8 RGB."""
        return decode_image(self.path) if self.path is not None else self.pixels

    def square(self, size: int) -> np.ndarray:
        """AlexNet §2's input: shorter side rescaled to `size`, central square."""
        if self.path is not None:
            return load_square(self.path, size)
        return center_square(resize_shorter_side(self.pixels, size), size)

    def warped(self, size: int) -> np.ndarray:
        """The whole image warped to size x size (for whole-image descriptors)."""
        if self.path is not None:
            return load_warped(self.path, size)
        return warp_whole(Image.fromarray(self.pixels), size)


class InputDataset:
    """ImageInputs at a model's base size (their central square, or with `whole` the whole
    image warped), labelled by position (as embedding.file_dataset), so the images that decode
    in a batch are matched back to their inputs."""

    def __init__(self, inputs: list[ImageInput], base_size: int, whole: bool = False):
        self.inputs, self.base_size, self.whole = list(inputs), base_size, whole
        self.labels = torch.arange(len(self.inputs))

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        """(CHW uint8 tensor, position) or (None, ImageDecodeError)."""
        try:
            item = self.inputs[i]
            arr = item.warped(self.base_size) if self.whole else item.square(self.base_size)
        except ImageDecodeError as e:
            return None, e
        except (MemoryError, ValueError, OverflowError) as e:  # a shape Pillow cannot scale: this input only
            return None, ImageDecodeError(self.inputs[i].name, f"cannot be scaled ({type(e).__name__}: {e})")
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), i


def failed_input(err: ImageDecodeError, inputs: list[ImageInput], open_positions) -> int | None:
    """Which input an InputDataset failure belongs to: the first of `open_positions` (inputs not
    answered yet) that the error names; batches keep the inputs' order, so a path given twice
    is matched to the right one."""
    return next((n for n in open_positions if str(_named(inputs[n])) == err.path), None)


def _named(item: ImageInput):
    return item.path if item.path is not None else item.name


def expand_paths(args, what: str = "image", missing_ok: bool = False, warn=None) -> list[Path]:
    """Files as given; folders as their image files (recursive, sorted); quoted globs
    (`'photos/*.jpg'`, `'**/*.png'`) as their matching image files. A name that is none of
    these: DataError, or with `missing_ok` kept as a file (its reading then fails as that
    image's error, skipped and counted like any unreadable image). `warn(line)`: what a folder
    walk left out (pipes, link loops, dangling links), as `index` reports it."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            scan = scan_images(p)
            for line in scan.problems() if warn else ():
                warn(line)
            found = scan.images
            if not found:
                raise DataError(f"{arg}: no {what} files in this folder")
            out += found
        elif os.path.lexists(p):
            out.append(p)
        elif GLOB_CHARS & set(str(arg)):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(str(arg)), recursive=True))
            found = [m for m in matches if m.is_file() and is_image_path(m)]
            if not found:
                raise DataError(f"{arg}: no {what} files match this pattern")
            out += found
        elif missing_ok:
            out.append(p)
        else:
            raise DataError(f"{arg}: no such file or folder")
    return out


def as_inputs(images) -> list[ImageInput]:
    """One or a list of: a path (file, folder or glob), a PIL image, an HxWx3 uint8 RGB array
    (HxW is read as greyscale), a CxHxW tensor (uint8, or float in [0, 1])."""
    if isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor, ImageInput)) or _is_pil(images):
        images = [images]
    out: list[ImageInput] = []
    for item in images:
        if isinstance(item, ImageInput):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out += [ImageInput(str(p), path=p) for p in expand_paths([item], missing_ok=True)]
        else:
            out.append(_in_memory(item, len(out)))
    return out


def _is_pil(item) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image)


def _in_memory(item, position: int) -> ImageInput:
    name = f"<image {position}>"
    if _is_pil(item):
        item.load()
        return ImageInput(getattr(item, "filename", "") or name, pixels=np.asarray(_to_rgb(item), dtype=np.uint8))
    if isinstance(item, torch.Tensor):
        return ImageInput(name, pixels=_from_tensor(item, name))
    if isinstance(item, np.ndarray):
        return ImageInput(name, pixels=_from_array(item, name))
    raise DataError(
        f"{name}: a {type(item).__name__} is not an image; give a path, a PIL image, an HxWx3 uint8 array "
        "or a CxHxW tensor"
    )


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(
            f"{name}: expected an HxWx3 uint8 RGB array, got {arr.dtype} of shape {tuple(arr.shape)} "
            "(convert with np.asarray(pil_image.convert('RGB')))"
        )
    if min(arr.shape[:2]) == 0:
        raise DataError(f"{name}: empty image of shape {tuple(arr.shape)}")
    rgb = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
    return np.ascontiguousarray(rgb)


def _from_tensor(t: torch.Tensor, name: str) -> np.ndarray:
    t = t.detach().cpu()
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise DataError(f"{name}: expected a CxHxW tensor with C = 1 or 3, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or t.min() < 0 or t.max() > 1:
            raise DataError(f"{name}: a float tensor must hold values in [0, 1] (as torchvision's to_tensor gives)")
        t = (t * 255).round().to(torch.uint8)
    elif t.dtype != torch.uint8:
        raise DataError(f"{name}: expected a uint8 or float tensor, got {t.dtype}")
    return _from_array(t.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy(), name)
