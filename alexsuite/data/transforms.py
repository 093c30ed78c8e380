"""The paper's augmentation and test-time crops, applied to whole uint8 batches as tensor ops
(on the training device), so one code path serves in-memory arrays and decoded folders.

AlexNet §4.1: random crop_size crops of base_size images and their horizontal
reflections; PCA colour augmentation with alpha ~ N(0, 0.1). AlexNet §2: mean subtraction (docs/references.md).
Test: the centre crop, or the ten crops (four corners + centre, and their reflections).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..settings import finite

MAX_BASE_SIZE = 4096  # px: far beyond AlexNet's 256, small enough to allocate
PCA_ALPHA_STD = 0.1  # AlexNet §4.1


@dataclass(frozen=True)
class Preprocess:
    """Everything that turns stored pixels into network input; saved with every model."""

    base_size: int  # images are stored / resized to base x base
    crop_size: int  # network input
    mean: tuple[float, float, float]  # per channel, on the 0-1 scale
    std: tuple[float, float, float]
    eigval: tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGB covariance PCA (0-1 scale)
    eigvec: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """A saved Preprocess, checked (ValueError when a field is missing or odd)."""
        try:
            pre = cls(
                d["base_size"],
                d["crop_size"],
                tuple(d["mean"]),
                tuple(d["std"]),
                tuple(d.get("eigval", (0.0, 0.0, 0.0))),
                tuple(tuple(r) for r in d.get("eigvec", ((1, 0, 0), (0, 1, 0), (0, 0, 1)))),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"preprocessing: a field is missing or odd ({type(e).__name__}: {e})") from None
        return pre.check()

    def check(self) -> Preprocess:
        """Sizes a network can take and finite statistics, else ValueError."""
        sizes_ok = all(isinstance(s, int) and not isinstance(s, bool) for s in (self.base_size, self.crop_size))
        if not (sizes_ok and 8 <= self.crop_size <= self.base_size <= MAX_BASE_SIZE):
            raise ValueError(f"preprocessing: sizes {self.base_size}/{self.crop_size} (base/crop) are not usable")
        rows = (self.mean, self.std, self.eigval, *self.eigvec)
        if len(self.eigvec) != 3 or not all(len(r) == 3 and all(finite(v) for v in r) for r in rows):
            raise ValueError("preprocessing: mean, std and colour PCA must be three finite numbers each")
        if min(self.std) <= 0:
            raise ValueError("preprocessing: a standard deviation is not above 0")
        return self


# torchvision's ImageNet statistics and fb.resnet.torch's ImageNet RGB PCA (0-1 scale).
IMAGENET = dict(
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    eigval=(0.2175, 0.0188, 0.0045),
    eigvec=((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203)),
)


def rgb(images: torch.Tensor) -> torch.Tensor:
    """Greyscale batches (C=1) are stored once and seen by the network as three equal channels."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def pixel_statistics(images: torch.Tensor, max_pixels: int = 2_000_000, seed: int = 0) -> dict:
    """Per-channel mean/std and the eigen-decomposition of the RGB covariance (AlexNet §4.1 used
    the whole training set; a uniform sample of pixels estimates it to about 3 digits)."""
    flat = rgb(images).permute(0, 2, 3, 1).reshape(-1, 3)
    if len(flat) > max_pixels:
        g = torch.Generator().manual_seed(seed)
        flat = flat[torch.randint(len(flat), (max_pixels,), generator=g)]
    x = flat.double() / 255.0
    mean = x.mean(0)
    cov = torch.cov(x.T)
    eigval, eigvec = torch.linalg.eigh(cov)
    std = x.std(0).clamp_min(1e-3)
    return dict(
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        eigval=tuple(eigval.clamp_min(0).tolist()),
        eigvec=tuple(tuple(r) for r in eigvec.tolist()),
    )  # columns are eigenvectors


def _to_input(x: torch.Tensor, pre: Preprocess, shift: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B,3,H,W) -> ((x / 255 + shift) - mean) / std in one fused pass (x * scale + offset);
    `shift` (B,3) is the per-image colour offset of PCA lighting."""
    mean = torch.tensor(pre.mean, device=x.device)
    std = torch.tensor(pre.std, device=x.device)
    offset = -mean / std if shift is None else (shift - mean) / std
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    return torch.addcmul(offset.view(-1, 3, 1, 1), x.float(), scale)


def normalize(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    return _to_input(rgb(images), pre)


def _crop_at(images: torch.Tensor, top: list[int], left: list[int], size: int) -> torch.Tensor:
    """Per-sample crops: images (B,C,H,W) -> (B,C,size,size). Stacking B views copies each crop
    once, where 4-D advanced indexing was a large share of the paper net's CPU training step."""
    return torch.stack([img[:, t : t + size, x : x + size] for img, t, x in zip(images, top, left)])


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one *global* batch's random draws, keyed by (seed, epoch, step), so DDP
    ranks and resumed runs draw exactly what an uninterrupted single process would."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + step) % 2**63)


def augment_params(batch_size: int, pre: Preprocess, generator: torch.Generator) -> dict:
    """The crops, flips and PCA lighting draws of one global batch (AlexNet §4.1)."""
    span = pre.base_size - pre.crop_size + 1
    return dict(
        top=torch.randint(span, (batch_size,), generator=generator),
        left=torch.randint(span, (batch_size,), generator=generator),
        flip=torch.rand(batch_size, generator=generator) < 0.5,
        alpha=torch.randn(batch_size, 3, generator=generator) * PCA_ALPHA_STD,
    )


def augment(images: torch.Tensor, pre: Preprocess, params: dict, pca: bool = True) -> torch.Tensor:
    """Random crop + horizontal flip + PCA lighting + normalisation of a uint8 batch."""
    dev = images.device
    x = _crop_at(rgb(images), params["top"].tolist(), params["left"].tolist(), pre.crop_size)
    flip = params["flip"].to(dev)
    if flip.any():
        x[flip] = x[flip].flip(3)
    shift = None
    if pca:
        # I += [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, one draw of alpha per image (AlexNet §4.1).
        eigvec = torch.tensor(pre.eigvec, device=dev)  # 3x3, columns = p_i
        eigval = torch.tensor(pre.eigval, device=dev)
        shift = (params["alpha"].to(dev) * eigval) @ eigvec.T  # B x 3
    return _to_input(x, pre, shift)


def center_crop(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    o = (pre.base_size - pre.crop_size) // 2
    return normalize(images[:, :, o : o + pre.crop_size, o : o + pre.crop_size], pre)


def ten_crops(images: torch.Tensor, pre: Preprocess):
    """Yield the ten (B, 3, crop, crop) crops, one at a time to bound memory: corners and
    centre, then their reflections (AlexNet §4.1)."""
    s, c = pre.base_size, pre.crop_size
    o = (s - c) // 2
    corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), (o, o)]
    for flip in (False, True):
        for t, left in corners:
            crop = normalize(images[:, :, t : t + c, left : left + c], pre)
            yield crop.flip(3) if flip else crop
