"""R-CNN's class-specific bounding-box regression (R-CNN appendix C; docs/references.md): from the
pool5 features of a proposal, predict the shift and log-scale (boxes.encode) that take it to
its ground-truth box. Ridge regression, lambda = 1000, trained on proposals with IoU >= 0.6,
solved in closed form per class."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..boxes import box_iou, decode, encode

RIDGE_LAMBDA = 1000.0  # R-CNN appendix C
MIN_IOU = 0.6  # R-CNN appendix C: proposals this close to a ground-truth box train the regressor


@dataclass
class BoxRegressor:
    weight: torch.Tensor  # (D, 4)
    bias: torch.Tensor  # (4,)

    def predict(self, features: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Refined boxes for proposals from their pool5 features."""
        return decode(proposals.float(), features.float() @ self.weight + self.bias)


def training_pairs(proposals: torch.Tensor, truth: torch.Tensor, min_iou: float = MIN_IOU):
    """(indices of proposals, their encoded targets): each proposal with IoU >= min_iou to a
    ground-truth box of the class, paired with the box it overlaps most."""
    if not len(proposals) or not len(truth):
        return torch.empty(0, dtype=torch.long), torch.empty(0, 4)
    best, which = box_iou(proposals.float(), truth.float()).max(1)
    keep = torch.nonzero(best >= min_iou).flatten()
    return keep, encode(proposals[keep].float(), truth[which[keep]].float())


def fit(features: torch.Tensor, targets: torch.Tensor, ridge: float = RIDGE_LAMBDA) -> BoxRegressor:
    """min |X W + b - T|^2 + ridge |W|^2 (the bias unpenalised), in closed form."""
    x = features.double()
    t = targets.double()
    mean_x, mean_t = x.mean(0), t.mean(0)
    xc, tc = x - mean_x, t - mean_t  # centring leaves the bias out of the penalty
    gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    weight = torch.linalg.solve(gram, xc.T @ tc)
    bias = mean_t - mean_x @ weight
    return BoxRegressor(weight.float(), bias.float())
