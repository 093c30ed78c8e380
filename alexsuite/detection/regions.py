"""pool5 features of image regions, in the two test modes:

- `rcnn_pool5`: R-CNN (R-CNN §2.1): every proposal, grown by 16 px of context (at 227 px),
  warped to the network's input size and passed through the whole conv body.
- `fast_pool5`: SPPnet / Fast R-CNN: the conv body runs once per image scale, and each
  proposal's context window is RoI-pooled (torchvision's roi_align) from the conv5 map to the
  grid a warped crop would give, then max-pooled by the network's own pool5. Each proposal is
  read at the pyramid scale where it is nearest the size its warp would give it (SPPnet's
  multi-scale testing, with x and y scaled apart as the warp does), so the same fc6/fc7, SVMs
  and regressors apply.

Both read each proposal's `Framing` window (framing.py: the box, or its tightest square,
with context). A framing of several views (warp+square) reads one window per view and puts
their pool5 vectors side by side; `head_features` runs fc6/fc7 on each and joins them the
same way.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..data import transforms
from .framing import Framing, warp_regions

# Pyramid levels 1, 1/sqrt(2), 1/2, ... in each direction: a box is read at most 2**0.25 off its
# warped size (step 2's coarser levels cost mAP; CHANGELOG.md).
FAST_SCALE_STEP = 2**0.5
MODES = ("rcnn", "fast")  # every proposal warped (R-CNN §2.2), or RoI-pooled from conv5 (SPPnet)
FAST_MAX_SCALE = 1.0  # never enlarge the image: tiny proposals are read at full resolution


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 (the decoder's output) -> 3xHxW uint8 tensor."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


@torch.no_grad()
def rcnn_pool5(
    model,
    image: torch.Tensor,
    boxes: torch.Tensor,
    pre: transforms.Preprocess,
    batch_size: int = 256,
    framing: Framing = Framing(),
) -> torch.Tensor:
    views = framing.views
    if len(views) > 1:
        return torch.cat([rcnn_pool5(model, image, boxes, pre, batch_size, v) for v in views], 1)
    device = next(model.parameters()).device
    image = image.to(device)
    channels_last = device.type == "cpu"  # faster CPU convolutions on batches of crops
    if channels_last:
        model.to(memory_format=torch.channels_last)
    out = []
    for chunk in boxes.float().split(batch_size):
        x = warp_regions(image, chunk.to(device), pre, framing)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model.pool5(model.conv5(x)))
    return torch.cat(out) if out else torch.empty(0, crop_shapes(model, pre)[1], device=device)


@torch.no_grad()
def crop_shapes(model, pre) -> tuple[int, int]:
    """(conv5 grid side, pool5 size) of one warped crop: what RoI pooling must reproduce."""
    x = torch.zeros(1, 3, pre.crop_size, pre.crop_size, device=next(model.parameters()).device)
    c5 = model.conv5(x)
    return c5.shape[-1], model.pool5(c5).shape[1]


def pyramid_levels(
    boxes: torch.Tensor,
    pre: transforms.Preprocess,
    step: float = FAST_SCALE_STEP,
    max_scale: float = FAST_MAX_SCALE,
    framing: Framing = Framing(),
) -> torch.Tensor:
    """Per box, the pyramid level (kx, ky) at which its window (`framing`) is nearest the
    crop's size in each direction: the image is scaled by step**-kx across and step**-ky
    down, as R-CNN's warp scales each window anisotropically."""
    return _window_levels(framing.windows(boxes.float(), pre.crop_size), pre.crop_size, step, max_scale)


def _window_levels(windows: torch.Tensor, crop: int, step: float, max_scale: float) -> torch.Tensor:
    sides = torch.stack([windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]], 1).clamp_min(1)
    k = torch.round(torch.log(sides / crop) / math.log(step))
    lowest = math.ceil(-math.log(max_scale) / math.log(step) - 1e-9)
    return k.clamp_min(lowest).long()


@torch.no_grad()
def fast_pool5(
    model,
    image: torch.Tensor,
    boxes: torch.Tensor,
    pre: transforms.Preprocess,
    step: float = FAST_SCALE_STEP,
    max_scale: float = FAST_MAX_SCALE,
    framing: Framing = Framing(),
) -> torch.Tensor:
    device = next(model.parameters()).device
    boxes = boxes.float().to(device)
    grid, dim = crop_shapes(model, pre)
    views = framing.views
    out = torch.empty(len(views) * len(boxes), dim, device=device)
    if not len(boxes):
        return out.reshape(0, len(views) * dim)
    x = transforms.normalize(image.to(device)[None], pre)  # the mean colour is 0: conv padding matches the warp's fill
    # every view's windows at once: views that share a pyramid level share its conv5 map
    windows = torch.cat([v.windows(boxes, pre.crop_size) for v in views])
    levels = _window_levels(windows, pre.crop_size, step, max_scale)
    for kx, ky in torch.unique(levels, dim=0).tolist():
        mine = torch.nonzero((levels[:, 0] == kx) & (levels[:, 1] == ky)).flatten()
        out[mine] = level_pool5(model, x, windows[mine], (kx, ky), grid, step)
    return out.view(len(views), len(boxes), dim).transpose(0, 1).reshape(len(boxes), -1)


def level_pool5(
    model, x: torch.Tensor, windows: torch.Tensor, level: tuple[int, int], grid: int, step: float = FAST_SCALE_STEP
) -> torch.Tensor:
    """pool5 of `windows` (image pixels) RoI-pooled from the conv5 map of the normalised image
    `x` (1, 3, H, W) scaled to pyramid `level` (kx, ky): fast mode's read of one level, and
    differentiable, so fine-tuning can train on exactly what fast mode reads (finetune.py)."""
    from torchvision.ops import roi_align

    h, w = x.shape[-2:]
    kx, ky = level
    size = (max(1, round(h * step**-ky)), max(1, round(w * step**-kx)))
    # no antialiasing, as SPPnet's pyramid and R-CNN's warp (imresize 'antialiasing', false)
    scaled_image = (
        x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", antialias=False, align_corners=False)
    )
    sy, sx = size[0] / h, size[1] / w
    scaled = windows * torch.tensor([sx, sy, sx, sy], device=windows.device, dtype=windows.dtype)
    scaled_image, shift = _pad_to_cover(scaled_image, scaled, model.feature_stride)
    if x.device.type == "cpu":
        scaled_image = scaled_image.contiguous(memory_format=torch.channels_last)
    with without_cudnn(x.device):  # every level is a new shape
        fmap = model.conv5(scaled_image)
        pooled = roi_align(
            fmap,
            [scaled + shift],
            output_size=grid,
            spatial_scale=1.0 / model.feature_stride,
            sampling_ratio=2,
            aligned=True,
        )
        return model.pool5(pooled.contiguous())


def _pad_to_cover(level: torch.Tensor, windows: torch.Tensor, stride: int):
    """The level grown with zeros (the mean colour, as the warp fills what lies outside the
    image) until it holds every window, so a window's cells beyond the image are convolved
    from that fill, as a warped crop's are, not read as roi_align's zeros. Left and top grow
    by whole conv5 cells, so the cells over the image stay where they were (what it changed:
    CHANGELOG.md)."""
    h, w = level.shape[-2:]
    left = math.ceil(max(0.0, -float(windows[:, 0].min())) / stride) * stride
    top = math.ceil(max(0.0, -float(windows[:, 1].min())) / stride) * stride
    right = math.ceil(max(0.0, float(windows[:, 2].max()) - w))
    bottom = math.ceil(max(0.0, float(windows[:, 3].max()) - h))
    if not (left or top or right or bottom):
        return level, 0.0
    shift = torch.tensor([left, top, left, top], dtype=windows.dtype, device=windows.device)
    return F.pad(level, (left, right, top, bottom)), shift


def without_cudnn(device: torch.device):
    """cuDNN builds an execution plan for every new input shape, and every image brings its own
    pyramid-level shapes, so on new images PyTorch's own convolutions are faster here
    (benchmarks/gpu_fast_mode.py; docs/benchmarks.md). The user's other cuDNN settings are kept."""
    if device.type != "cuda":
        return nullcontext()
    c = torch.backends.cudnn
    return c.flags(enabled=False, benchmark=c.benchmark, deterministic=c.deterministic, allow_tf32=c.allow_tf32)


def fast_margin(crop: int) -> int:
    """Pixels of image added around a window to read it as fast mode does: 0.4 of the crop,
    about half the conv5 receptive field's radius at 28 px (11 of 21) and half the field at
    227 (91 of 195): what a border cell sees beyond the window."""
    return round(0.4 * crop)


def context_crop_pool5(model, crops: torch.Tensor, pre: transforms.Preprocess, margin: int) -> torch.Tensor:
    """Fast mode's pool5 of windows warped with `margin` px of image around them
    (warp_regions(..., margin=)): the conv body runs on the whole crop, so the window's
    border cells see the image beyond it, as in a whole-image conv5 map, and the window is
    RoI-pooled from the middle. Differentiable: fine-tuning trains on it (finetune.py)."""
    from torchvision.ops import roi_align

    crop = pre.crop_size
    grid = crop_shapes(model, pre)[0]
    fmap = model.conv5(crops)
    rois = torch.tensor([[margin, margin, margin + crop, margin + crop]], dtype=fmap.dtype, device=fmap.device)
    rois = torch.cat(
        [torch.arange(len(crops), device=fmap.device, dtype=fmap.dtype)[:, None], rois.expand(len(crops), 4)], 1
    )
    pooled = roi_align(
        fmap, rois, output_size=grid, spatial_scale=1.0 / model.feature_stride, sampling_ratio=2, aligned=True
    )
    return model.pool5(pooled.contiguous())


def region_pool5(
    model,
    image: torch.Tensor,
    boxes: torch.Tensor,
    pre: transforms.Preprocess,
    mode: str = "rcnn",
    framing: Framing = Framing(),
) -> torch.Tensor:
    if mode == "rcnn":
        return rcnn_pool5(model, image, boxes, pre, framing=framing)
    if mode == "fast":
        return fast_pool5(model, image, boxes, pre, framing=framing)
    raise ValueError(f"unknown mode {mode!r}")


@torch.no_grad()
def head_features(model, pool5: torch.Tensor, layer: str) -> torch.Tensor:
    """`layer` features of pool5 rows; a row of several views' pool5 side by side (rcnn_pool5,
    fast_pool5) gives their `layer` features side by side, in the same order."""
    if layer == "pool5":
        return pool5
    views = pool5.shape[1] // model.pool5_dim
    out = model.head(pool5.reshape(len(pool5) * views, model.pool5_dim), layer)
    return out.reshape(len(pool5), views * out.shape[1])  # explicit sizes: an image may have no boxes
