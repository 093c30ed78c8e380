"""Global descriptors from a conv5 feature map of a whole image: GeM and R-MAC.

A convolutional map keeps the image's layout at its own resolution, so a copy that is
rescaled, cropped or shifted still lights up the same units; pooling it into one vector
describes photos better than fc7 of a small centre crop (Tolias et al. 2016, Radenović et al.
2018; docs/references.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GEM_P = 3.0  # Radenović 2018: p = 3 works well without learning it
RMAC_LEVELS = 3  # Tolias 2016: regions at L = 1..3 scales
EPS = 1e-6


def gem(fmap: torch.Tensor, p: float = GEM_P) -> torch.Tensor:
    """Generalised mean over each channel's map (p = 1: average, p -> inf: max), unit length.
    (B, C, H, W) -> (B, C). [source: Radenović 2018]"""
    pooled = fmap.clamp(min=EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return F.normalize(pooled, dim=1)


def rmac(fmap: torch.Tensor, levels: int = RMAC_LEVELS) -> torch.Tensor:
    """Regional maximum activations: max-pool square regions at `levels` scales (about 40%
    overlap), unit-normalise each, sum, unit-normalise. (B, C, H, W) -> (B, C). The learned
    per-region PCA-whitening of the paper is left out: it needs a training set of photos.
    [source: Tolias 2016]"""
    total = torch.zeros(fmap.shape[:2], dtype=fmap.dtype, device=fmap.device)
    for top, left, size in regions(fmap.shape[2], fmap.shape[3], levels):
        region = fmap[:, :, top : top + size, left : left + size].amax(dim=(2, 3))
        total += F.normalize(region, dim=1)
    return F.normalize(total, dim=1)


def regions(h: int, w: int, levels: int = RMAC_LEVELS) -> list[tuple[int, int, int]]:
    """(top, left, side) of R-MAC's square regions on an h x w map: at level l, side
    2*min(h, w)/(l+1), placed uniformly with at least 40% overlap along the longer side."""
    out = []
    short = min(h, w)
    for level in range(1, levels + 1):
        side = max(1, min(short, round(2 * short / (level + 1))))
        for top in _starts(h, side, level):
            for left in _starts(w, side, level):
                out.append((top, left, side))
    return sorted(set(out))


def _starts(length: int, side: int, level: int) -> list[int]:
    """Evenly spaced region starts covering [0, length): `level` of them along the shorter
    side, more along a longer side so neighbours still overlap by at least 40%."""
    if side >= length:
        return [0]
    count = max(level, 1 + -(-(length - side) // max(1, int(side * 0.6))))
    step = (length - side) / (count - 1)
    return [round(i * step) for i in range(count)]


POOLS = {"gem": gem, "rmac": rmac}
