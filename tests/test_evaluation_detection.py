"""VOC average precision and proposal recall, checked against hand-worked cases."""

import numpy as np
import pytest
import torch

from alexsuite.boxes import Detections, Truth
from alexsuite.evaluation.detection import area_ap, average_precision, proposal_recall, voc07_ap


def truth(boxes, labels, difficult=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Truth(
        boxes,
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(difficult or [False] * len(labels), dtype=torch.bool),
    )


def dets(boxes, scores, labels):
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores),
        torch.tensor(labels, dtype=torch.long),
    )


def test_ap_definitions_on_a_hand_worked_curve():
    # ranks: TP, FP, TP; 2 positives -> recall .5 .5 1, precision 1 .5 .667
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert area_ap(recall, precision) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # 11 points: t = 0..0.5 -> 1.0 (6 points), t = 0.6..1.0 -> 2/3 (5 points)
    assert voc07_ap(recall, precision) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)


def test_matching_counts_duplicates_as_false_positives_and_ignores_difficult_objects():
    truths = [truth([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 0], [False, False, True])]
    found = [
        dets(
            [
                [0, 0, 10, 10],  # TP
                [1, 0, 10, 10],  # duplicate of the same object: FP
                [40, 40, 50, 50],  # on a difficult object: ignored
                [20, 20, 30, 31],
            ],  # TP
            [0.9, 0.8, 0.7, 0.6],
            [0, 0, 0, 0],
        )
    ]
    result = average_precision(found, truths, ["a"])
    row = result["per_class"]["a"]
    assert row["positives"] == 2 and row["detections"] == 3 and row["max_recall"] == 1.0
    assert row["ap"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert result["map"] == pytest.approx(row["ap"])


def test_classes_are_scored_separately_and_a_class_without_objects_is_left_out():
    truths = [truth([[0, 0, 10, 10]], [1])]
    found = [dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.95], [0, 1])]
    result = average_precision(found, truths, ["a", "b"])
    assert list(result["per_class"]) == ["b"] and result["map"] == pytest.approx(1.0)


def test_perfect_and_empty_detections():
    truths = [truth([[0, 0, 10, 10]], [0]), truth([[5, 5, 25, 25]], [0])]
    perfect = [dets([[0, 0, 10, 10]], [1.0], [0]), dets([[5, 5, 25, 25]], [0.5], [0])]
    assert average_precision(perfect, truths, ["a"])["map"] == pytest.approx(1.0)
    empty = [dets([], [], []), dets([], [], [])]
    assert average_precision(empty, truths, ["a"])["map"] == 0.0


def test_proposal_recall_needs_iou_half():
    truths = [truth([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0])]
    props = [torch.tensor([[0, 0, 10, 12], [50, 50, 55, 55]], dtype=torch.float32)]  # IoU .83 and .25
    r = proposal_recall(props, truths)
    assert r["recall"] == 0.5 and r["objects"] == 2 and r["boxes_per_image"] == 2
