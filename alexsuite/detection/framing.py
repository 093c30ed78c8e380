"""Which image region each box is read from, and R-CNN's warp of it to the network's input
(R-CNN §2.1 and appendix A; docs/references.md). Shared by fine-tuning, feature extraction
and both test modes (regions.py), so a box is read the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..boxes import CONTEXT_PADDING, context_window, tightest_square
from ..data import transforms
from ..errors import ConfigError
from ..settings import setting


def context_padding(crop_size: int, padding_at_227: int = CONTEXT_PADDING) -> int:
    """R-CNN's 16 px of context at 227 px crops, kept as the same fraction at other sizes."""
    return round(padding_at_227 * crop_size / 227)


REGION_SHAPES = ("warp", "square")  # one window per box
FRAMING_CHOICES = (*REGION_SHAPES, "warp+square")  # "+": each box read in both, features side by side


@dataclass(frozen=True)
class Framing:
    """Which image region a box is read from: R-CNN's appendix A (Figure 7) compares them.
    "warp" (D, the paper's choice): the box itself, stretched anisotropically to the square
    crop. "square" (B, "tightest square with context"): the smallest square around the box,
    scaled isotropically, so an object keeps its proportions and the short side shows the
    image beside it. Either grows by `padding` px of context at a 227 px crop (p = 16).
    Shapes joined by "+" (not the paper's) read every box once per shape, its `views`, and
    join their features; `padding` is then one number for all or one per view."""

    shape: str = setting(
        "warp",
        "The region read for each box: warp stretches the box to the square input, "
        "the paper's choice; square takes the tightest square around it and keeps the object's "
        "proportions; warp+square reads every box both ways and joins their features "
        "(twice the network time).",
        "R-CNN appendix A",
    )
    padding: int | tuple[int, ...] = setting(
        CONTEXT_PADDING,
        "Pixels of image around the region, at a 227 px input (kept as "
        "the same fraction at other sizes); with warp+square one number for "
        "both or one each, e.g. 16,0.",
        "R-CNN §2.1",
    )

    def __post_init__(self):
        if isinstance(self.padding, list):  # as it comes back from JSON
            object.__setattr__(self, "padding", tuple(self.padding))

    @property
    def views(self) -> tuple[Framing, ...]:
        shapes = self.shape.split("+")
        pads = self.padding if isinstance(self.padding, tuple) else (self.padding,) * len(shapes)
        return tuple(Framing(s, p) for s, p in zip(shapes, pads))

    @property
    def name(self) -> str:
        """ "warp16", "warp16+square0": names cached features."""
        return "+".join(f"{v.shape}{v.padding}" for v in self.views)

    def check(self) -> Framing:
        shapes = self.shape.split("+")
        for s in shapes:
            if s not in REGION_SHAPES:
                raise ConfigError(f"region shape {self.shape!r}: choose one of {', '.join(FRAMING_CHOICES)}")
        if len(set(shapes)) < len(shapes):
            raise ConfigError(f"region shape {self.shape!r}: each shape once")
        if isinstance(self.padding, tuple) and len(self.padding) != len(shapes):
            raise ConfigError(
                f"context padding {','.join(map(str, self.padding))}: give one number, or one per "
                f"shape of {self.shape!r}"
            )
        for v in self.views:
            if not isinstance(v.padding, int) or not 0 <= v.padding < 113:
                raise ConfigError(f"context padding {v.padding}: give 0-112 px (at a 227 px crop; the paper's is 16)")
        return self

    def windows(self, boxes: torch.Tensor, crop: int) -> torch.Tensor:
        """The image region (x1, y1, x2, y2) that is resampled to crop x crop for each box
        (one view: a joined framing reads each of its `views` apart)."""
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


def warp_regions(
    image: torch.Tensor, boxes: torch.Tensor, pre: transforms.Preprocess, framing: Framing = Framing(), margin: int = 0
) -> torch.Tensor:
    """R-CNN's region warping (R-CNN §2.1, appendix A): each box's `framing` window
    warped to crop x crop with bilinear sampling (2x2 samples per pixel)
    and no antialiasing filter, as rcnn_im_crop.m does (imresize(..., 'bilinear',
    'antialiasing', false), to match Caffe's window layer). `image` is a uint8 (3, H, W)
    tensor; it is normalised first, so whatever lies outside the image samples as 0, the
    mean colour, as in R-CNN. `margin` > 0 adds that many pixels of image around each crop
    (crop + 2 * margin square, the window still crop x crop in the middle)."""
    # torchvision only when regions are warped: `alexsuite search` starts without it
    from torchvision.ops import roi_align

    crop = pre.crop_size
    x = transforms.normalize(image[None], pre)
    windows = framing.windows(boxes.to(x.device, torch.float32), crop)
    if margin:
        windows = context_window(windows, crop + 2 * margin, margin)
    return roi_align(x, [windows], output_size=crop + 2 * margin, spatial_scale=1.0, sampling_ratio=2, aligned=True)
