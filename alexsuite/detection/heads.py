"""The detector's heads, trained on cached features (features.py): one linear SVM per class with
hard-negative mining (R-CNN §2.3, rcnn_train.m) and one ridge box regressor per class on pool5
(R-CNN appendix C); docs/references.md."""

from __future__ import annotations

import torch

from ..boxes import box_iou
from . import bbox_regression, svm


def train_svms(
    loads, n: int, truths, num_classes: int, scale: float, settings: svm.SVMSettings, negative_iou: float, on_class=None
):
    """One SVM per class, one pass of hard-negative mining over the training images.
    `loads`: one feature loader per test mode; each image's boxes count once per mode."""
    weights, biases, stats = [], [], []
    for c in range(num_classes):
        positives = (
            torch.cat(
                [load(i)["layer"][: int(load(i)["gt"])][truths[i][1] == c].float() for load in loads for i in range(n)]
            )
            * scale
        )

        def negatives(c=c):
            for i in range(n):
                gt_c = truths[i][0][truths[i][1] == c].float()
                chunks = []
                for load in loads:
                    f = load(i)
                    g = int(f["gt"])
                    props, feats = f["boxes"][g:], f["layer"][g:]
                    if len(gt_c) and len(props):
                        feats = feats[box_iou(props, gt_c).max(1).values < negative_iou]
                    chunks.append(feats.float() * scale)
                yield torch.cat(chunks)

        if not len(positives):
            weights.append(torch.zeros(positives.shape[1]))
            biases.append(-10.0)  # a class with no training objects never fires
            stats.append({"positives": 0})
        else:
            model, st = svm.train_with_hard_negatives(positives, negatives(), settings)
            weights.append(model.weight)
            biases.append(model.bias)
            stats.append({"positives": len(positives), **st})
        if on_class:
            on_class(1)
    return torch.stack(weights), torch.tensor(biases), stats


def train_regressors(loads, n: int, truths, num_classes: int, scale: float, min_iou: float, ridge: float):
    """Per class, ridge regression from pool5 to the box targets."""
    weights, biases, pairs = [], [], []
    dim = int(loads[0](0)["pool5"].shape[1])
    for c in range(num_classes):
        xs, ts = [], []
        for load in loads:
            for i in range(n):
                f = load(i)
                gt_c = truths[i][0][truths[i][1] == c].float()
                if not len(gt_c) or not len(f["pool5_rows"]):
                    continue
                keep, targets = bbox_regression.training_pairs(f["boxes"][f["pool5_rows"]], gt_c, min_iou)
                xs.append(f["pool5"][keep].float() * scale)
                ts.append(targets)
        x = torch.cat(xs) if xs else torch.empty(0, dim)
        if len(x) < 2:
            weights.append(torch.zeros(dim, 4))
            biases.append(torch.zeros(4))
        else:
            r = bbox_regression.fit(x, torch.cat(ts), ridge)
            weights.append(r.weight)
            biases.append(r.bias)
        pairs.append(len(x))
    return torch.stack(weights), torch.stack(biases), pairs
