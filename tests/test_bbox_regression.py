"""Bounding-box regression: the pairs R-CNN trains on, and a regressor that learns a real shift."""

import torch

from alexsuite.boxes import box_iou
from alexsuite.detection import bbox_regression


def test_training_pairs_take_proposals_close_to_a_box():
    truth = torch.tensor([[10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 140.0, 160.0]])
    proposals = torch.tensor(
        [
            [12.0, 10.0, 52.0, 50.0],  # IoU 0.9 with box 0
            [30.0, 30.0, 70.0, 70.0],  # IoU 0.14: too far
            [100.0, 104.0, 140.0, 164.0],
        ]
    )  # IoU 0.88 with box 1
    keep, targets = bbox_regression.training_pairs(proposals, truth)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(targets[0], torch.tensor([-2 / 40, 0.0, 0.0, 0.0]))


def test_regressor_learns_to_undo_a_shift_that_the_features_reveal():
    g = torch.Generator().manual_seed(0)
    truth = torch.tensor([[40.0, 40.0, 120.0, 100.0]]).repeat(500, 1)
    shift = torch.rand(500, 2, generator=g) * 16 - 8  # proposals off by up to 8 px
    proposals = truth.clone()
    proposals[:, 0::2] += shift[:, :1]
    proposals[:, 1::2] += shift[:, 1:]
    features = torch.cat([shift, torch.randn(500, 30, generator=g)], 1) * 100  # 'pool5' sees the shift
    keep, targets = bbox_regression.training_pairs(proposals, truth[:1])
    reg = bbox_regression.fit(features[keep], targets)
    refined = reg.predict(features[keep], proposals[keep])
    before = box_iou(proposals[keep], truth[:1]).mean()
    after = box_iou(refined, truth[:1]).mean()
    assert before < 0.85 and after > 0.97
