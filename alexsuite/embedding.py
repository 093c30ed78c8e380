"""Batched feature extraction: the one place that turns many images into vectors.

Files decode in DataLoader workers through the same batch plans and collate as training
(data/batching.py); the network runs on whole batches of centre crops and returns one
layer's activations (paper Section 6.1: fc7 as an image descriptor).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .data import batching, transforms
from .data.datasets import ArrayDataset, FolderDataset
from .errors import ConfigError

LAYERS = ("fc7", "fc6", "pool5")


def file_dataset(paths, base_size: int) -> FolderDataset:
    """Files to embed. Each file's 'label' is its position in `paths`, so the files that
    survive decoding in a batch are matched back to their vectors."""
    return FolderDataset(list(paths), torch.arange(len(paths)), [], "files", base_size)


def array_dataset(images: torch.Tensor) -> ArrayDataset:
    """uint8 (N, C, H, W) images at base size, labelled by position as in file_dataset."""
    return ArrayDataset(images, torch.arange(len(images)), [], "arrays")


def check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise ConfigError(f"unknown layer {layer!r}: choose one of {', '.join(LAYERS)}")
    return layer


def feature_dim(model, pre: transforms.Preprocess, layer: str) -> int:
    with torch.no_grad():
        x = torch.zeros(1, 3, pre.crop_size, pre.crop_size, device=next(model.parameters()).device)
        return int(model.eval().features(x, layer).flatten(1).shape[1])


@dataclass
class EmbeddedBatch:
    positions: torch.Tensor     # int64 (B,): which inputs these vectors belong to
    vectors: np.ndarray         # float32 (B, D), C-contiguous (what FAISS takes)
    failures: list = field(default_factory=list)   # ImageDecodeError for inputs that did not decode


@torch.no_grad()
def embed_batches(model, dataset, pre: transforms.Preprocess, layer: str = "fc7",
                  device: torch.device | str = "cpu", batch_size: int = 128, workers: int = 0,
                  strict: bool = False, rank: int = 0, world: int = 1):
    """Yield an EmbeddedBatch per batch of `dataset` (from file_dataset / array_dataset), in
    order; with world > 1 this process embeds its slice rank::world of every batch."""
    check_layer(layer)
    device = torch.device(device)
    model.eval()
    channels_last = device.type == "cpu"  # ~1.4x faster CPU convolutions at batch size 128
    if channels_last:
        model.to(memory_format=torch.channels_last)
    plan = batching.epoch_batches(len(dataset), batch_size, 0, 0, shuffle=False, drop_last=False)
    for batch in batching.iterate(dataset, plan, rank, world, workers, strict):
        if len(batch.labels) == 0:
            yield EmbeddedBatch(batch.labels, np.empty((0, 0), np.float32), batch.failures)
            continue
        x = transforms.center_crop(batch.images.to(device, non_blocking=True), pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        vectors = model.features(x, layer).flatten(1).float().cpu().numpy()
        yield EmbeddedBatch(batch.labels, np.ascontiguousarray(vectors), batch.failures)


def embed_labelled(model, dataset, pre: transforms.Preprocess, layer: str = "fc7",
                   device: torch.device | str = "cpu", batch_size: int = 128, workers: int = 0,
                   on_batch=None) -> tuple[np.ndarray, np.ndarray, list]:
    """All vectors of a labelled ArrayDataset / FolderDataset: (vectors (N, D), labels (N,),
    failures). Unreadable files are left out (and returned as failures)."""
    if isinstance(dataset, ArrayDataset):
        source = array_dataset(dataset.images)
    else:
        source = file_dataset(dataset.paths, dataset.base_size)
    chunks, positions, failures = [], [], []
    for batch in embed_batches(model, source, pre, layer, device, batch_size, workers):
        failures += batch.failures
        if len(batch.positions):
            chunks.append(batch.vectors)
            positions.append(batch.positions.numpy())
        if on_batch:
            on_batch(len(batch.positions) + len(batch.failures))
    if not chunks:
        return np.empty((0, 0), np.float32), np.empty(0, np.int64), failures
    labels = dataset.labels.numpy()[np.concatenate(positions)]
    return np.concatenate(chunks), labels, failures


def context_padding(crop_size: int, padding_at_227: int = 16) -> int:
    """R-CNN's 16 px of context at 227 px crops, kept as the same fraction at other sizes."""
    return round(padding_at_227 * crop_size / 227)


REGION_SHAPES = ("warp", "square")          # one window per box
FRAMING_CHOICES = (*REGION_SHAPES, "warp+square")   # "+": each box read in both, features side by side


@dataclass(frozen=True)
class Framing:
    """Which image region a box is read from: R-CNN's appendix A (Figure 7) compares them.
    "warp" (D, the paper's choice): the box itself, stretched anisotropically to the square
    crop. "square" (B, "tightest square with context"): the smallest square around the box,
    scaled isotropically, so an object keeps its proportions and the short side shows the
    image beside it. Either grows by `padding` px of context at a 227 px crop (p = 16).
    Shapes joined by "+" (not the paper's) read every box once per shape, its `views`, and
    join their features; `padding` is then one number for all or one per view."""
    shape: str = "warp"
    padding: int | tuple[int, ...] = 16

    def __post_init__(self):
        if isinstance(self.padding, list):   # as it comes back from JSON
            object.__setattr__(self, "padding", tuple(self.padding))

    @property
    def views(self) -> tuple["Framing", ...]:
        shapes = self.shape.split("+")
        pads = self.padding if isinstance(self.padding, tuple) else (self.padding,) * len(shapes)
        return tuple(Framing(s, p) for s, p in zip(shapes, pads))

    @property
    def name(self) -> str:
        """"warp16", "warp16+square0": names cached features."""
        return "+".join(f"{v.shape}{v.padding}" for v in self.views)

    def check(self) -> "Framing":
        shapes = self.shape.split("+")
        for s in shapes:
            if s not in REGION_SHAPES:
                raise ConfigError(f"region shape {self.shape!r}: choose one of {', '.join(FRAMING_CHOICES)}")
        if len(set(shapes)) < len(shapes):
            raise ConfigError(f"region shape {self.shape!r}: each shape once")
        if isinstance(self.padding, tuple) and len(self.padding) != len(shapes):
            raise ConfigError(f"context padding {','.join(map(str, self.padding))}: give one number, or one per "
                              f"shape of {self.shape!r}")
        for v in self.views:
            if not isinstance(v.padding, int) or not 0 <= v.padding < 113:
                raise ConfigError(f"context padding {v.padding}: give 0-112 px (at a 227 px crop; the paper's is 16)")
        return self

    def windows(self, boxes: torch.Tensor, crop: int) -> torch.Tensor:
        """The image region (x1, y1, x2, y2) that is resampled to crop x crop for each box
        (one view: a joined framing reads each of its `views` apart)."""
        from .detection.boxes import context_window, tightest_square
        if "+" in self.shape:
            raise ValueError(f"{self.shape!r} reads several windows per box: take them from .views")
        if self.shape == "square":
            boxes = tightest_square(boxes)
        return context_window(boxes, crop, context_padding(crop, self.padding))


def parse_padding(text: str) -> int | tuple[int, ...]:
    """`--context-padding`: "16", or "16,0" for one per view of a joined framing."""
    try:
        pads = tuple(int(t) for t in str(text).split(","))
    except ValueError:
        raise ConfigError(f"context padding {text!r}: give whole pixels, e.g. 16 or 16,0") from None
    return pads[0] if len(pads) == 1 else pads


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, pre: transforms.Preprocess,
                 framing: Framing = Framing(), margin: int = 0) -> torch.Tensor:
    """R-CNN's region warping (Section 2.1, appendix A): each box's `framing` window
    warped to crop x crop with bilinear sampling (2x2 samples per pixel)
    and no antialiasing filter, as rcnn_im_crop.m does (imresize(..., 'bilinear',
    'antialiasing', false), to match Caffe's window layer). `image` is a uint8 (3, H, W)
    tensor; it is normalised first, so whatever lies outside the image samples as 0, the
    mean colour, as in R-CNN. `margin` > 0 adds that many pixels of image around each crop
    (crop + 2 * margin square, the window still crop x crop in the middle)."""
    # torchvision only when regions are warped: `alexsuite search` starts without it
    from torchvision.ops import roi_align

    from .detection.boxes import context_window
    crop = pre.crop_size
    x = transforms.normalize(image[None], pre)
    windows = framing.windows(boxes.to(x.device, torch.float32), crop)
    if margin:
        windows = context_window(windows, crop + 2 * margin, margin)
    return roi_align(x, [windows], output_size=crop + 2 * margin, spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)
