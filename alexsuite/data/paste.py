"""Copy-paste pre-training (`alexsuite train --paste-on PHOTOS`): images of objects on a plain
black ground (Fashion-MNIST, cut-outs) are pasted, tinted, onto random crops of photographs,
so a backbone meant for R-CNN learns its classes in clutter before it meets proposals
(Copy-paste augmentation; docs/references.md; R-CNN's pre-training data, ImageNet, already shows
objects in scenes). Every draw comes from the keyed augmentation generator
(transforms.batch_generator), so resumed and torchrun runs paste what one process would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError, ImageDecodeError
from .decode import decode_image
from .transforms import rgb

MASK_LEVEL = 12  # object pixels are brighter than this grey level, the rest black ground
BANK_SIZE = 4096  # background crops made once per run; each batch draws from them
BANK_BYTES = 256 << 20  # fewer for large images (256 px: 1,365 crops in 256 MB)
ZOOM = (2.0, 6.0)  # a crop spans this many image sides of photo: a 28 px article stands for 56-168 px
TINT = (0.3, 1.0)  # per-channel gain of the pasted object
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def photo_paths(folder) -> list[Path]:
    """The photo files of `folder`, by name (a clear error when the folder is gone)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"--paste-on {folder}: no such folder; give the folder of photographs "
            "(a resumed run reads the one it began with)"
        )
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def photos_fingerprint(folder) -> str:
    """sha256 of the photos' names and bytes: a resumed run checks it pastes onto what it began
    with (the bank is drawn from them, so other photos would silently change the run)."""
    digest = hashlib.sha256()
    for p in photo_paths(folder):
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    return digest.hexdigest()


def background_bank(folder, size: int, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """n random square crops (uint8 (n, 3, size, size)) of the photos in `folder`, each
    resized from ZOOM x size photo pixels, with colour channels shuffled and scaled per crop
    so that a handful of photos gives many backgrounds."""
    photos = []
    for p in photo_paths(folder):
        try:
            photos.append(decode_image(p))
        except ImageDecodeError:
            continue
    photos = [ph for ph in photos if min(ph.shape[:2]) >= size]
    if not photos:
        raise DataError(f"--paste-on {folder}: no readable photo of at least {size} px; give a folder of photographs")
    if n is None:
        n = max(64, min(BANK_SIZE, BANK_BYTES // (3 * size * size)))
    rng = np.random.default_rng(seed)
    bank = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(min(h, w, round(size * rng.uniform(*ZOOM))))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
        gains = rng.uniform(0.5, 1.3, 3)
        bank[i] = (np.asarray(crop)[..., rng.permutation(3)] * gains).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(bank).permute(0, 3, 1, 2).contiguous()


def paste_params(batch_size: int, bank_size: int, generator: torch.Generator) -> dict:
    """Which background and which tint each image of a batch gets."""
    return dict(
        background=torch.randint(bank_size, (batch_size,), generator=generator),
        tint=TINT[0] + (TINT[1] - TINT[0]) * torch.rand(batch_size, 3, generator=generator),
    )


def paste(images: torch.Tensor, bank: torch.Tensor, params: dict) -> torch.Tensor:
    """uint8 (B, C, S, S) objects on black -> uint8 (B, 3, S, S): pixels brighter than
    MASK_LEVEL are the object (tinted), the rest shows the image's background crop."""
    x = rgb(images).float()
    mask = x.mean(1, keepdim=True) > MASK_LEVEL
    tint = params["tint"].to(x.device)[:, :, None, None]
    ground = bank[params["background"].to(bank.device)].to(x.device).float()
    return torch.where(mask, x * tint, ground).round().clamp(0, 255).to(torch.uint8)
